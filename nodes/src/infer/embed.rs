//! `infer.embed`: sentence embeddings from a pre-trained encoder.

use std::path::PathBuf;

use kiln_engine::{
    Config, InputSpec, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext,
    ValueType,
};
use serde::Deserialize;
use serde_json::Value as Json;

use crate::data::Dataset;
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
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "infer.embed",
            version: 2,
            doc: "Sentence embeddings of each document from a `model.pretrained` encoder: the mean of its last hidden states over the real tokens, L2-normalised (as sentence-transformers computes them), in batches.
Gives a dataset with one row per document (features: the embedding) and the documents' target, so a classifier can be trained on it with `train.supervised`.",
            inputs: vec![
                InputSpec::required("model", ValueType::Model, "an encoder from `model.pretrained`"),
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
        let (dir, content) = match (
            model.arch_type(),
            model.arch.get("path").and_then(Json::as_str),
            model.arch.get("content").and_then(Json::as_str),
        ) {
            ("bert", Some(p), Some(c)) => (PathBuf::from(p), c),
            (other, _, _) => {
                return Err(NodeError::new(format!(
                "`model` is a `{other}` model; embeddings come from a `model.pretrained` encoder"
            )))
            }
        };
        let encoder = Encoder::load(&dir, content, ctx.device())?;
        let texts = Texts::from_value(ctx.input("data")?)?;
        let n = texts.texts.len();
        let features = encoder.embed(
            &texts.texts,
            s.batch_size,
            s.max_tokens,
            s.normalize,
            |done| {
                ctx.check_cancelled()?;
                ctx.progress(done as u64, n as u64, "embedding");
                Ok(())
            },
        )?;
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
