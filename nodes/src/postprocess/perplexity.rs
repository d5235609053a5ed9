//! `postprocess.perplexity`: how well a language model predicts a text.

use kiln_engine::{
    Config, InputSpec, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext,
    Value, ValueType,
};
use serde::Deserialize;
use serde_json::json;

use crate::infer::generate::language_model;
use crate::text::Texts;

/// Scores a language model on a text.
pub struct Perplexity;

/// What `postprocess.perplexity` reads from `with:`.
#[derive(Config, Deserialize)]
struct PerplexitySettings {
    /// tokens per window; each window is scored on its second half
    #[setting(default = 512, min = 4, max = 32768)]
    window: usize,
    /// score the first this many tokens of the text (0: all)
    #[setting(default = 4096)]
    max_tokens: usize,
}

impl NodeKind for Perplexity {
    fn computes_on_device(&self) -> bool {
        true
    }

    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "postprocess.perplexity",
            version: 1,
            doc: "The perplexity of a language model (`model.pretrained`, a GGUF file) over a text: the documents joined by newlines and tokenized, cut to `max_tokens`, then split into windows of `window` tokens, each scored on the tokens of its second half, as llama.cpp's perplexity tool scores them: exp of the mean negative log-probability of each token given the ones before it in its window.",
            inputs: vec![
                InputSpec::required("model", ValueType::Model, "a language model from `model.pretrained`"),
                InputSpec::required("data", ValueType::Text, "the text, one or more documents"),
            ],
            outputs: vec![OutputSpec::new("metrics", ValueType::Metrics, "perplexity, tokens scored, mean negative log-likelihood")],
            settings: PerplexitySettings::specs(),
            side_effects: false,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let s: PerplexitySettings = ctx.settings().read()?;
        let lm = language_model(ctx.input("model")?, ctx.device())?;
        let texts = Texts::from_value(ctx.input("data")?)?;
        let mut tokens = lm.tokenizer.encode(&texts.texts.join("\n"))?;
        if s.max_tokens > 0 {
            tokens.truncate(s.max_tokens);
        }
        if s.window > lm.context() {
            return Err(NodeError::new(format!(
                "setting `window` is {}, more than the model's context of {}",
                s.window,
                lm.context()
            )));
        }
        if tokens.len() < s.window {
            return Err(NodeError::new(format!(
                "the text is {} tokens, less than one window of {}; give more text or a smaller `window`",
                tokens.len(),
                s.window
            )));
        }
        ctx.progress(0, 1, "scoring");
        let (nll, count) = lm.score(&tokens, s.window)?;
        let mean = nll / count.max(1) as f64;
        let metrics = json!({
            "perplexity": mean.exp(),
            "mean_nll": mean,
            "tokens_scored": count,
            "tokens": tokens.len(),
            "window": s.window,
        });
        Ok(vec![(
            PortName::new_static("metrics"),
            Value::from_json(ValueType::Metrics, metrics),
        )])
    }
}
