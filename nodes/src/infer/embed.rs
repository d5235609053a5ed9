//! `infer.embed`: sentence embeddings from a pre-trained encoder.

use std::path::PathBuf;

use kiln_engine::{
    Config, InputSpec, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext,
    ValueType,
};
use serde::Deserialize;
use serde_json::Value as Json;

use crate::data::Dataset;
use crate::llm::LanguageModel;
use crate::model::ModelValue;
use crate::nn::encoder::Encoder;
use crate::text::Texts;

/// Embeds documents.
pub struct Embed;

/// What `infer.embed` reads from `with:`.
#[derive(Config, Deserialize)]
struct EmbedSettings {
    /// documents per forward pass
    #[setting(default = 32, min = 1, max = 4096)]
    batch_size: usize,
    /// longer documents are truncated
    #[setting(default = 256, min = 2, max = 512)]
    max_tokens: usize,
    /// scale each embedding to length 1
    #[setting(default = true)]
    normalize: bool,
}

impl NodeKind for Embed {
    fn computes_on_device(&self) -> bool {
        true
    }

    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "infer.embed",
            version: 2,
            doc: "Sentence embeddings of each document from a `model.pretrained` encoder: the mean of its last hidden states over the real tokens, L2-normalised (as sentence-transformers computes them), in batches; or from a `model.pretrained` language model (a GGUF file, on the CPU): the mean of its last hidden states after the final norm over the document's tokens, L2-normalised.
Gives a dataset with one row per document (features: the embedding) and the documents' target, so a classifier can be trained on it with `train.supervised`.",
            inputs: vec![
                InputSpec::required("model", ValueType::Model, "an encoder or a language model from `model.pretrained`"),
                InputSpec::required("data", ValueType::Text, "the documents"),
            ],
            outputs: vec![OutputSpec::new("embeddings", ValueType::Dataset, "one embedding per document, with the target")],
            settings: EmbedSettings::specs(),
            side_effects: false,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let s: EmbedSettings = ctx.settings().read()?;
        let model = ModelValue::from_value(ctx.input("model")?)?;
        let (kind, path, content) = match (
            model.arch_type(),
            model.arch.get("path").and_then(Json::as_str),
            model.arch.get("content").and_then(Json::as_str),
        ) {
            (kind @ ("bert" | "llm"), Some(p), Some(c)) => (kind, PathBuf::from(p), c),
            (other, _, _) => {
                return Err(NodeError::new(format!(
                    "`model` is a `{other}` model; embeddings come from a `model.pretrained` encoder or language model"
                )))
            }
        };
        let texts = Texts::from_value(ctx.input("data")?)?;
        let n = texts.texts.len();
        let progress = |done: usize| {
            ctx.check_cancelled()?;
            ctx.progress(done as u64, n as u64, "embedding");
            Ok(())
        };
        let features = if kind == "llm" {
            let lm = LanguageModel::load(&path, content, ctx.device())?;
            let values = lm.embed(
                &texts.texts,
                s.max_tokens,
                s.batch_size,
                s.normalize,
                progress,
            )?;
            let dims = (n, lm.model.config.hidden);
            candle_core::Tensor::from_vec(values, dims, &candle_core::Device::Cpu)
                .map_err(|e| NodeError::new(format!("embeddings: {e}")))?
        } else {
            let encoder = Encoder::load(&path, content, ctx.device())?;
            encoder.embed(
                &texts.texts,
                s.batch_size,
                s.max_tokens,
                s.normalize,
                progress,
            )?
        };
        let data = Dataset {
            features: features.into(),
            columns: None,
            target: texts.target,
            categories: Default::default(),
        };
        Ok(vec![(
            PortName::new_static("embeddings"),
            data.into_value(),
        )])
    }
}
