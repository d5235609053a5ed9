//! `preprocess.tokenize`: documents → fixed-length rows of token ids, with a
//! word vocabulary fitted on `fit` or a `tokenizer.json` read from disk.

use std::collections::{BTreeMap, HashMap};

use candle_core::{Device, Tensor};
use kiln_engine::{
    Config, InputPath, InputSpec, InputTypes, KindSpec, NodeError, NodeKind, OutputSpec,
    OutputTypes, Outputs, RunContext, Settings, Value, ValueType,
};
use serde::Deserialize;
use serde_json::{json, Value as Json};
use tokenizers::{Tokenizer, TruncationParams};

use crate::data::{Dataset, TOKENS};
use crate::text::Texts;

/// Turns documents into token ids.
pub struct Tokenize;

const DOC: &str = "Turns documents into rows of `length` token ids, padded with 0 (which models read as \"no token\") and truncated.
Without `tokenizer`, a word vocabulary is fitted on `fit`: lower-cased words (letters, digits, apostrophes) seen at least `min_count` times, the `max_size` most frequent, after `[PAD]` (0) and `[UNK]` (1) for words it hasn't seen. With `tokenizer`, a `tokenizer.json` (the tokenizers library's format, e.g. a BERT WordPiece vocabulary) splits the text instead.
The vocabulary travels in `transform` and in every output (as the token names), so `apply` data and served text are split exactly as `fit` was.";

const PAD: &str = "[PAD]";
const UNK: &str = "[UNK]";

/// What `preprocess.tokenize` reads from `with:`.
#[derive(Config, Deserialize)]
struct TokenizeSettings {
    /// tokens per document, after padding and truncation
    #[setting(default = 64, min = 1, max = 8192)]
    length: usize,
    /// word vocabulary: a word needs this many occurrences in `fit`
    #[setting(default = 2, min = 1)]
    min_count: usize,
    /// word vocabulary: at most this many entries, `[PAD]` and `[UNK]` included
    #[setting(default = 20000, min = 3)]
    max_size: usize,
    /// word vocabulary: lower-case before splitting
    #[setting(default = true)]
    lowercase: bool,
    /// a `tokenizer.json` to split with, instead of fitting words
    tokenizer: Option<InputPath>,
}

impl NodeKind for Tokenize {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "preprocess.tokenize",
            version: 1,
            doc: DOC,
            inputs: vec![
                InputSpec::required("fit", ValueType::Text, "documents the vocabulary is fitted on"),
                InputSpec::optional("apply", ValueType::Text, "more documents (one reference or a list), split with `fit`'s vocabulary").many(),
            ],
            outputs: vec![
                OutputSpec::new("fit", ValueType::Dataset, "`fit` as token ids `[documents, length]`, target kept"),
                OutputSpec::new("apply", ValueType::Dataset, "`apply` as token ids (the first, when a list is given; then also `apply_0`, `apply_1`, …)"),
                OutputSpec::new("transform", ValueType::Transform, "the vocabulary (or tokenizer) and length"),
            ],
            settings: TokenizeSettings::specs(),
            side_effects: false,
        }
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
        let s: TokenizeSettings = ctx.settings().read()?;
        let fit = Texts::from_value(ctx.input("fit")?)?;
        let transform = match &s.tokenizer {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    NodeError::new(format!("cannot read `{}`: {e}", path.display()))
                })?;
                json!({ "transform": "tokenize", "length": s.length, "tokenizer": text })
            }
            None => json!({
                "transform": "tokenize",
                "length": s.length,
                "lowercase": s.lowercase,
                "vocab": fit_words(&fit.texts, s.lowercase, s.min_count, s.max_size),
            }),
        };
        let transform = Value::from_json(ValueType::Transform, transform);
        super::fitted::encode_all(ctx, &fit, transform, encode)
    }
}

/// Words of `text`: runs of letters, digits and apostrophes.
fn words(text: &str, lowercase: bool) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\''))
        .filter(|w| !w.is_empty())
        .map(move |w| {
            if lowercase {
                w.to_lowercase()
            } else {
                w.to_string()
            }
        })
}

/// `[PAD]`, `[UNK]`, then the most frequent words (ties alphabetical).
fn fit_words(texts: &[String], lowercase: bool, min: usize, max_size: usize) -> Vec<String> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in texts {
        for w in words(t, lowercase) {
            *counts.entry(w).or_default() += 1;
        }
    }
    let mut frequent: Vec<(String, usize)> =
        counts.into_iter().filter(|(_, c)| *c >= min).collect();
    frequent.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut vocab = vec![PAD.to_string(), UNK.to_string()];
    vocab.extend(
        frequent
            .into_iter()
            .take(max_size.saturating_sub(2))
            .map(|(w, _)| w),
    );
    vocab
}

/// Splits `texts` as the fitted `transform` says: the one code path for
/// `fit`, `apply` and served text.
pub fn encode(transform: &Value, texts: &Texts) -> Result<Dataset, NodeError> {
    let meta = transform.meta();
    let length = meta.get("length").and_then(Json::as_u64).unwrap_or(64) as usize;
    let (rows, vocab) = match meta.get("tokenizer").and_then(Json::as_str) {
        Some(json) => with_tokenizer(json, &texts.texts, length)?,
        None => {
            let vocab: Vec<String> = meta
                .get("vocab")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .ok_or_else(|| NodeError::new("the tokenize transform holds no vocabulary"))?;
            let lowercase = meta
                .get("lowercase")
                .and_then(Json::as_bool)
                .unwrap_or(true);
            let index: HashMap<&str, u32> = vocab
                .iter()
                .enumerate()
                .map(|(i, w)| (w.as_str(), i as u32))
                .collect();
            let rows = texts
                .texts
                .iter()
                .map(|t| {
                    words(t, lowercase)
                        .take(length)
                        .map(|w| index.get(w.as_str()).copied().unwrap_or(1))
                        .collect()
                })
                .collect();
            (rows, vocab)
        }
    };
    let n = rows.len();
    let mut ids = vec![0f32; n * length];
    for (i, row) in rows.iter().enumerate() {
        for (j, &id) in row.iter().take(length).enumerate() {
            ids[i * length + j] = id as f32;
        }
    }
    Ok(Dataset {
        features: Tensor::from_vec(ids, (n, length), &Device::Cpu)?.into(),
        columns: None,
        target: texts.target.clone(),
        categories: BTreeMap::from([(TOKENS.to_string(), vocab)]),
    })
}

/// Ids from a `tokenizer.json`, truncated to `length`; its padding token
/// must be id 0, as kiln's token models read 0 as padding.
fn with_tokenizer(
    json: &str,
    texts: &[String],
    length: usize,
) -> Result<(Vec<Vec<u32>>, Vec<String>), NodeError> {
    let mut tokenizer: Tokenizer = json
        .parse()
        .map_err(|e| NodeError::new(format!("setting `tokenizer`: not a tokenizer.json: {e}")))?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: length,
            ..Default::default()
        }))
        .map_err(|e| NodeError::new(format!("tokenizer: {e}")))?;
    for pad in ["[PAD]", "<pad>"] {
        if let Some(id) = tokenizer.token_to_id(pad) {
            if id != 0 {
                return Err(NodeError::new(format!(
                    "setting `tokenizer`: its padding token `{pad}` is id {id}; kiln's token models read id 0 as padding"
                )));
            }
        }
    }
    let size = tokenizer.get_vocab_size(true);
    let mut vocab = vec![String::new(); size];
    for (token, id) in tokenizer.get_vocab(true) {
        if let Some(slot) = vocab.get_mut(id as usize) {
            *slot = token;
        }
    }
    let rows = tokenizer
        .encode_batch(texts.to_vec(), true)
        .map_err(|e| NodeError::new(format!("tokenizer: {e}")))?
        .iter()
        .map(|e| e.get_ids().to_vec())
        .collect();
    Ok((rows, vocab))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(docs: &[&str]) -> Texts {
        Texts {
            texts: docs.iter().map(|d| d.to_string()).collect(),
            target: None,
        }
    }

    fn word_transform(docs: &[&str], min_count: usize, length: usize) -> Value {
        let docs: Vec<String> = docs.iter().map(|d| d.to_string()).collect();
        let vocab = fit_words(&docs, true, min_count, 100);
        Value::from_json(
            ValueType::Transform,
            json!({"transform": "tokenize", "length": length, "lowercase": true, "vocab": vocab}),
        )
    }

    #[test]
    fn words_are_padded_truncated_and_unknowns_marked() {
        let fit = ["The film, the film!", "A film's end"];
        let t = word_transform(&fit, 2, 4);
        // film ×3, the ×2; "a", "film's", "end" once (below min_count).
        assert_eq!(t.meta()["vocab"], json!(["[PAD]", "[UNK]", "film", "the"]));
        let d = encode(&t, &texts(&["the FILM was fine film the film", "film"])).unwrap();
        let ids: Vec<Vec<f32>> = d.features.tensor().unwrap().to_vec2().unwrap();
        assert_eq!(
            ids,
            vec![vec![3.0, 2.0, 1.0, 1.0], vec![2.0, 0.0, 0.0, 0.0]]
        );
        assert_eq!(d.categories[TOKENS].len(), 4);
    }

    #[test]
    fn a_bert_tokenizer_splits_into_its_word_pieces() {
        let path = crate::test_data(&["minilm"]).join("models/all-MiniLM-L6-v2/tokenizer.json");
        let json = std::fs::read_to_string(path).unwrap();
        let t = Value::from_json(
            ValueType::Transform,
            json!({"transform": "tokenize", "length": 8, "tokenizer": json}),
        );
        let d = encode(&t, &texts(&["The cat sits outside", "hello"])).unwrap();
        let ids: Vec<Vec<f32>> = d.features.tensor().unwrap().to_vec2().unwrap();
        // [CLS] the cat sits outside [SEP], then padding.
        assert_eq!(
            ids[0],
            [101.0, 1996.0, 4937.0, 7719.0, 2648.0, 102.0, 0.0, 0.0]
        );
        assert_eq!(ids[1][..3], [101.0, 7592.0, 102.0]);
        assert_eq!(d.categories[TOKENS].len(), 30522);
        assert_eq!(d.categories[TOKENS][4937], "cat");
    }
}
