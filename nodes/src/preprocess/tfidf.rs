//! `preprocess.tfidf`: documents → sparse rows of term weights (tf-idf, or
//! plain counts), with the vocabulary and idf fitted on `fit`.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use kiln_engine::{
    Config, InputSpec, InputTypes, KindSpec, NodeError, NodeKind, OutputSpec, OutputTypes, Outputs,
    RunContext, Settings, Value, ValueType,
};
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::data::Dataset;
use crate::nn::kept::Kept;
use crate::sparse::Csr;
use crate::text::Texts;

/// Weighs terms of documents.
pub struct Tfidf;

const DOC: &str = "Turns documents into sparse rows of term weights: word or character n-grams, counted, optionally scaled by inverse document frequency and normalised (scikit-learn's TfidfVectorizer and CountVectorizer, same definitions).
The vocabulary (terms seen in at least `min_df` and at most a fraction `max_df` of the `fit` documents, the `max_features` most frequent over all of them; columns in alphabetical order) and the idf are fitted on `fit` only and travel in `transform`, so `apply` data, `preprocess.apply` and served text are weighed exactly as `fit` was.
Rows stay sparse: linear models and naive Bayes read them as they are; other models read them a batch at a time.
tf-idf(t, d) = tf · idf with tf the count (1 + ln count with `sublinear_tf`, 1 with `binary`) and idf = ln((1 + n) / (1 + df)) + 1 (`smooth_idf`; else ln(n / df) + 1); `use_idf: false, norm: none` gives counts, for `model.naive_bayes`.";

kiln_engine::choices! {
    /// What a term is made of.
    pub enum Analyzer {
        /// Word n-grams: tokens matched by `token_pattern`, joined by a space.
        Word = "word",
        /// Character n-grams of the whole text (runs of white space read as one space).
        Char = "char",
        /// Character n-grams inside words, each word padded with a space.
        CharWb = "char_wb",
    }
}

kiln_engine::choices! {
    /// How each row is scaled.
    pub enum Norm {
        /// Unit Euclidean length.
        L2 = "l2",
        /// Absolute values summing to 1.
        L1 = "l1",
        /// Not scaled.
        None = "none",
    }
}

/// What `preprocess.tfidf` reads from `with:`; the transform records it.
#[derive(Clone, Config, Deserialize, Serialize)]
struct TfidfSettings {
    /// terms are `word` n-grams, or `char` / `char_wb` (inside words) n-grams
    #[setting(default = "word")]
    analyzer: Analyzer,
    /// the smallest and largest n of the n-grams, e.g. [1, 2] for words and word pairs
    #[setting(default = [1, 1], min = 1, max = 16)]
    ngrams: Vec<usize>,
    /// lower-case the text first
    #[setting(default = true)]
    lowercase: bool,
    /// `word`: the regular expression a token matches (scikit-learn's default: two or more word characters)
    #[setting(default = "(?u)\\b\\w\\w+\\b")]
    token_pattern: String,
    /// keep terms found in at least this many `fit` documents
    #[setting(default = 1, min = 1)]
    min_df: usize,
    /// keep terms found in at most this fraction of the `fit` documents
    #[setting(default = 1.0, gt = 0.0, max = 1.0)]
    max_df: f64,
    /// keep at most this many terms, the most frequent over `fit`
    #[setting(min = 1)]
    max_features: Option<usize>,
    /// term frequency as 1 + ln(count)
    #[setting(default = false)]
    sublinear_tf: bool,
    /// term frequency 1 for a term present, whatever its count
    #[setting(default = false)]
    binary: bool,
    /// scale by inverse document frequency
    #[setting(default = true)]
    use_idf: bool,
    /// idf as if one more document held every term (no division by zero)
    #[setting(default = true)]
    smooth_idf: bool,
    /// scale each row to unit `l2` or `l1` length, or not (`none`)
    #[setting(default = "l2")]
    norm: Norm,
}

impl TfidfSettings {
    fn ngram_range(&self) -> Result<(usize, usize), String> {
        match self.ngrams[..] {
            [lo, hi] if lo <= hi => Ok((lo, hi)),
            _ => Err(format!(
                "needs two sizes, smallest first, e.g. `[1, 2]`; got {:?}",
                self.ngrams
            )),
        }
    }

    fn pattern(&self) -> Result<Regex, String> {
        Regex::new(&self.token_pattern).map_err(|e| format!("not a regular expression: {e}"))
    }
}

impl NodeKind for Tfidf {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "preprocess.tfidf",
            version: 1,
            doc: DOC,
            inputs: vec![
                InputSpec::required("fit", ValueType::Text, "documents the vocabulary and idf are fitted on"),
                InputSpec::optional("apply", ValueType::Text, "more documents (one reference or a list), weighed with `fit`'s vocabulary and idf").many(),
            ],
            outputs: vec![
                OutputSpec::new("fit", ValueType::Dataset, "`fit` as sparse rows `[documents, terms]`, target kept"),
                OutputSpec::new("apply", ValueType::Dataset, "`apply` as sparse rows (the first, when a list is given; then also `apply_0`, `apply_1`, …)"),
                OutputSpec::new("transform", ValueType::Transform, "the vocabulary, idf and settings"),
            ],
            settings: TfidfSettings::specs(),
            side_effects: false,
        }
    }

    fn check(&self, settings: &Settings) -> Vec<(String, String)> {
        let s = match settings.read_checked::<TfidfSettings>() {
            Ok(s) => s,
            Err(problems) => return problems,
        };
        let mut problems = Vec::new();
        if let Err(e) = s.ngram_range() {
            problems.push(("ngrams".into(), e));
        }
        if let Err(e) = s.pattern() {
            problems.push(("token_pattern".into(), e));
        }
        problems
    }

    fn output_types(
        &self,
        _: &KindSpec,
        inputs: &InputTypes,
        _: &Settings,
    ) -> Result<OutputTypes, String> {
        super::fitted::text_output_types(inputs)
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let s: TfidfSettings = ctx.settings().read()?;
        let fit = Texts::from_value(ctx.input("fit")?)?;
        let transform = fit_vocabulary(&s, &fit.texts)?;
        super::fitted::encode_all(ctx, &fit, transform, encode)
    }
}

/// The terms of one document, in order, as the settings define them.
struct Terms {
    analyzer: Analyzer,
    range: (usize, usize),
    lowercase: bool,
    pattern: Regex,
}

impl Terms {
    fn new(s: &TfidfSettings) -> Result<Terms, NodeError> {
        fn setting(name: &'static str) -> impl Fn(String) -> NodeError {
            move |e| NodeError::new(format!("setting `{name}`: {e}"))
        }
        Ok(Terms {
            analyzer: s.analyzer,
            range: s.ngram_range().map_err(setting("ngrams"))?,
            lowercase: s.lowercase,
            pattern: s.pattern().map_err(setting("token_pattern"))?,
        })
    }

    /// Calls `each` on every term of `text`.
    fn each(&self, text: &str, mut each: impl FnMut(&str)) {
        let text = if self.lowercase {
            text.to_lowercase()
        } else {
            text.to_string()
        };
        let (lo, hi) = self.range;
        match self.analyzer {
            Analyzer::Word => {
                let tokens: Vec<&str> = self.pattern.find_iter(&text).map(|m| m.as_str()).collect();
                let mut term = String::new();
                for n in lo..=hi {
                    for gram in tokens.windows(n) {
                        term.clear();
                        for (i, t) in gram.iter().enumerate() {
                            if i > 0 {
                                term.push(' ');
                            }
                            term.push_str(t);
                        }
                        each(&term);
                    }
                }
            }
            Analyzer::Char => {
                let chars: Vec<char> = collapse_spaces(&text).chars().collect();
                char_grams(&chars, lo, hi, &mut each);
            }
            Analyzer::CharWb => {
                for word in collapse_spaces(&text).split_whitespace() {
                    let chars: Vec<char> = std::iter::once(' ')
                        .chain(word.chars())
                        .chain(std::iter::once(' '))
                        .collect();
                    for n in lo..=hi {
                        // As scikit-learn: a padded word shorter than n gives itself once.
                        if chars.len() < n {
                            if n == lo {
                                each(&chars.iter().collect::<String>());
                            }
                            break;
                        }
                        char_grams(&chars, n, n, &mut each);
                    }
                }
            }
        }
    }
}

/// Runs of two or more white-space characters as one space (as scikit-learn).
fn collapse_spaces(text: &str) -> std::borrow::Cow<'_, str> {
    static SPACES: std::sync::LazyLock<Regex> =
        std::sync::LazyLock::new(|| Regex::new(r"\s\s+").expect("a valid pattern"));
    SPACES.replace_all(text, " ")
}

fn char_grams(chars: &[char], lo: usize, hi: usize, each: &mut impl FnMut(&str)) {
    let mut term = String::new();
    for n in lo..=hi {
        for gram in chars.windows(n) {
            term.clear();
            term.extend(gram);
            each(&term);
        }
    }
}

/// Fits the vocabulary and idf on `texts`.
fn fit_vocabulary(s: &TfidfSettings, texts: &[String]) -> Result<Value, NodeError> {
    let terms = Terms::new(s)?;
    // Per term: documents holding it, and occurrences over all of them.
    let mut seen: HashMap<String, (usize, usize)> = HashMap::new();
    let mut in_this: HashMap<String, ()> = HashMap::new();
    for text in texts {
        in_this.clear();
        terms.each(text, |t| {
            if let Some(entry) = seen.get_mut(t) {
                entry.1 += 1;
            } else {
                seen.insert(t.to_string(), (0, 1));
            }
            if !in_this.contains_key(t) {
                in_this.insert(t.to_string(), ());
            }
        });
        for t in in_this.keys() {
            if let Some(entry) = seen.get_mut(t) {
                entry.0 += 1;
            }
        }
    }
    let n = texts.len();
    let max_df = (s.max_df * n as f64).floor() as usize;
    let mut kept: Vec<(String, usize, usize)> = seen
        .into_iter()
        .filter(|(_, (df, _))| *df >= s.min_df && (s.max_df >= 1.0 || *df <= max_df))
        .map(|(t, (df, count))| (t, df, count))
        .collect();
    if let Some(max) = s.max_features {
        // The most frequent over the corpus; ties alphabetical.
        kept.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        kept.truncate(max);
    }
    if kept.is_empty() {
        return Err(NodeError::new(format!(
            "no term of the {n} `fit` documents is left (min_df {}, max_df {}): lower `min_df` or check `token_pattern`",
            s.min_df, s.max_df
        )));
    }
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    let idf: Vec<f32> = kept
        .iter()
        .map(|(_, df, _)| {
            let (n, df) = (n as f64, *df as f64);
            let ratio = if s.smooth_idf {
                (1.0 + n) / (1.0 + df)
            } else {
                n / df
            };
            (ratio.ln() + 1.0) as f32
        })
        .collect();
    let vocabulary: Vec<String> = kept.into_iter().map(|(t, _, _)| t).collect();
    let mut tensors = std::collections::BTreeMap::new();
    tensors.insert(
        "idf".to_string(),
        Tensor::from_vec(idf, vocabulary.len(), &Device::Cpu)?,
    );
    Ok(Value::new(
        ValueType::Transform,
        tensors,
        json!({ "transform": "tfidf", "settings": s, "vocabulary": vocabulary }),
    ))
}

/// A fitted transform read for use: settings, term index, idf.
pub struct Fitted {
    settings: TfidfSettings,
    terms: Terms,
    index: HashMap<String, u32>,
    idf: Vec<f32>,
}

impl Fitted {
    fn read(transform: &Value) -> Result<Fitted, NodeError> {
        let meta = transform.meta();
        let malformed =
            |what: &str| NodeError::new(format!("the tfidf transform's {what} is malformed"));
        let settings: TfidfSettings =
            serde_json::from_value(meta["settings"].clone()).map_err(|_| malformed("settings"))?;
        let vocabulary: Vec<String> = serde_json::from_value(meta["vocabulary"].clone())
            .map_err(|_| malformed("vocabulary"))?;
        let idf: Vec<f32> = transform.tensor("idf")?.to_vec1()?;
        if idf.len() != vocabulary.len() {
            return Err(malformed("idf"));
        }
        Ok(Fitted {
            terms: Terms::new(&settings)?,
            settings,
            index: vocabulary
                .into_iter()
                .enumerate()
                .map(|(i, t)| (t, i as u32))
                .collect(),
            idf,
        })
    }

    /// The transform read once per content: a served request does not
    /// parse a vocabulary of 50 000 terms again.
    pub fn of(transform: &Value) -> Result<std::sync::Arc<Fitted>, NodeError> {
        static FITTED: Kept<Fitted> = Kept::new(16);
        FITTED.get_or_load(transform.content_hash(), &Device::Cpu, || {
            Fitted::read(transform)
        })
    }
}

/// Weighs `texts` as the fitted `transform` says: the one code path for
/// `fit`, `apply`, `preprocess.apply` and served text.
pub fn encode(transform: &Value, texts: &Texts) -> Result<Dataset, NodeError> {
    let fitted = Fitted::of(transform)?;
    let Fitted {
        settings: s,
        terms,
        index,
        idf,
    } = fitted.as_ref();
    let rows = texts
        .texts
        .iter()
        .map(|text| {
            let mut counts: HashMap<u32, f32> = HashMap::new();
            terms.each(text, |t| {
                if let Some(&c) = index.get(t) {
                    *counts.entry(c).or_default() += 1.0;
                }
            });
            let mut row: Vec<(u32, f32)> = counts
                .into_iter()
                .map(|(c, count)| {
                    let tf = if s.binary {
                        1.0
                    } else if s.sublinear_tf {
                        1.0 + count.ln()
                    } else {
                        count
                    };
                    (c, if s.use_idf { tf * idf[c as usize] } else { tf })
                })
                .collect();
            let length = match s.norm {
                Norm::L2 => row.iter().map(|(_, v)| v * v).sum::<f32>().sqrt(),
                Norm::L1 => row.iter().map(|(_, v)| v.abs()).sum::<f32>(),
                Norm::None => 1.0,
            };
            if length > 0.0 {
                for (_, v) in &mut row {
                    *v /= length;
                }
            }
            row
        })
        .collect();
    Ok(Dataset {
        features: Csr::from_rows(idf.len(), rows).into(),
        columns: None,
        target: texts.target.clone(),
        categories: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Features;

    fn settings(extra: serde_json::Value) -> TfidfSettings {
        let mut s = json!({
            "analyzer": "word", "ngrams": [1, 1], "lowercase": true,
            "token_pattern": "(?u)\\b\\w\\w+\\b", "min_df": 1, "max_df": 1.0,
            "max_features": null, "sublinear_tf": false, "binary": false,
            "use_idf": true, "smooth_idf": true, "norm": "l2",
        });
        for (k, v) in extra.as_object().unwrap() {
            s[k] = v.clone();
        }
        serde_json::from_value(s).unwrap()
    }

    fn texts(docs: &[&str]) -> Texts {
        Texts {
            texts: docs.iter().map(|d| d.to_string()).collect(),
            target: None,
        }
    }

    fn rows(d: &Dataset) -> Vec<Vec<f32>> {
        let Features::Sparse(csr) = &d.features else {
            panic!("dense")
        };
        csr.to_dense().unwrap().to_vec2().unwrap()
    }

    #[test]
    fn weights_match_scikit_learns_tfidf_vectorizer() {
        use std::f32::consts::FRAC_1_SQRT_2;
        // TfidfVectorizer().fit_transform(docs) in scikit-learn 1.9.1:
        let docs = ["the cat sat", "the cat sat on the mat", "dogs run"];
        let s = settings(json!({}));
        let t = fit_vocabulary(&s, &texts(&docs).texts).unwrap();
        assert_eq!(
            t.meta()["vocabulary"],
            json!(["cat", "dogs", "mat", "on", "run", "sat", "the"])
        );
        let out = rows(&encode(&t, &texts(&docs)).unwrap());
        let expected = [
            [0.57735026, 0.0, 0.0, 0.0, 0.0, 0.57735026, 0.57735026],
            [
                0.32516555, 0.0, 0.42755362, 0.42755362, 0.0, 0.32516555, 0.6503311,
            ],
            [0.0, FRAC_1_SQRT_2, 0.0, 0.0, FRAC_1_SQRT_2, 0.0, 0.0],
        ];
        for (row, want) in out.iter().zip(expected) {
            for (a, b) in row.iter().zip(want) {
                assert!((a - b).abs() < 1e-6, "{row:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn counts_ngrams_and_frequency_limits() {
        let docs = ["A b a b c", "a b", "c d"];
        let s = settings(json!({
            "ngrams": [1, 2], "token_pattern": "\\w+", "use_idf": false, "norm": "none",
            "min_df": 2,
        }));
        let t = fit_vocabulary(&s, &texts(&docs).texts).unwrap();
        // "a", "b", "a b" and "c" are in two documents; "b a", "b c", "d", "c d" in one.
        assert_eq!(t.meta()["vocabulary"], json!(["a", "a b", "b", "c"]));
        assert_eq!(
            rows(&encode(&t, &texts(&["a b a b c", "unseen words only"])).unwrap()),
            [[2.0, 2.0, 2.0, 1.0], [0.0, 0.0, 0.0, 0.0]]
        );
        let top = settings(
            json!({"token_pattern": "\\w+", "max_features": 2, "norm": "none", "use_idf": false}),
        );
        let t = fit_vocabulary(&top, &texts(&docs).texts).unwrap();
        // a ×3, b ×3, c ×2: the two most frequent.
        assert_eq!(t.meta()["vocabulary"], json!(["a", "b"]));
        let none = settings(json!({"min_df": 5}));
        let e = fit_vocabulary(&none, &texts(&docs).texts).unwrap_err();
        assert!(e.message().contains("lower `min_df`"), "{e}");
    }

    #[test]
    fn character_ngrams_as_scikit_learn_makes_them() {
        let mut grams = Vec::new();
        let s = settings(json!({"analyzer": "char_wb", "ngrams": [2, 3]}));
        Terms::new(&s)
            .unwrap()
            .each("Hi  yo", |t| grams.push(t.to_string()));
        assert_eq!(
            grams,
            [" h", "hi", "i ", " hi", "hi ", " y", "yo", "o ", " yo", "yo "]
        );
        let mut grams = Vec::new();
        let s = settings(json!({"analyzer": "char", "ngrams": [3, 3]}));
        Terms::new(&s)
            .unwrap()
            .each("ab  cd", |t| grams.push(t.to_string()));
        assert_eq!(grams, ["ab ", "b c", " cd"]);
    }

    #[test]
    fn fifty_thousand_terms_over_five_thousand_documents_stay_sparse() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let docs: Vec<String> = (0..5000)
            .map(|_| {
                (0..30)
                    .map(|_| format!("w{}", rng.random_range(0..60_000)))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let s = settings(json!({"max_features": 50_000}));
        let t = fit_vocabulary(&s, &docs).unwrap();
        let d = encode(
            &t,
            &texts(&docs.iter().map(String::as_str).collect::<Vec<_>>()),
        )
        .unwrap();
        assert_eq!(d.features.dims(), [5000, 50_000]);
        let bytes = d.into_value().to_bytes().unwrap().len();
        // Dense, the rows would be 5 000 × 50 000 × 4 bytes = 1 GB.
        let dense = 5000 * 50_000 * 4;
        assert!(bytes * 500 < dense, "{bytes} bytes");
    }
}
