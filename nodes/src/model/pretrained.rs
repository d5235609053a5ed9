//! `model.pretrained`: a BERT-family encoder from a local folder.

use kiln_engine::{
    Config, InputPath, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext,
    ValueType,
};
use serde::Deserialize;
use serde_json::json;

use crate::model::ModelValue;
use crate::nn::encoder::{Encoder, FILES};

/// Names a pre-trained encoder.
pub struct Pretrained;

/// What `model.pretrained` reads from `with:`.
#[derive(Config, Deserialize)]
struct PretrainedSettings {
    /// the model folder, relative to the pipeline file
    path: InputPath,
}

impl NodeKind for Pretrained {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "model.pretrained",
            version: 2,
            doc: "A pre-trained BERT-family sentence encoder (e.g. all-MiniLM-L6-v2) read from a local folder holding `config.json`, `model.safetensors` and `tokenizer.json`; nothing is downloaded.
Its files are part of the node's fingerprint. Use it with `infer.embed`.",
            inputs: vec![],
            outputs: vec![OutputSpec::new("model", ValueType::Model, "the encoder (its folder and size)")],
            settings: PretrainedSettings::specs(),
            side_effects: false,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let PretrainedSettings { path: dir } = ctx.settings().read()?;
        // The value stands for the folder's files, so it carries their
        // content: new weights in the same folder make a new value, and every
        // node that used the old one runs again.
        let content = ctx.content_hash(&dir)?;
        // Loads it once here, so a wrong folder fails at this node.
        let encoder = Encoder::load(&dir, &content, ctx.device())?;
        let arch = json!({
            "type": "bert",
            "path": dir.display().to_string(),
            "content": content,
            "hidden": encoder.hidden,
            "files": FILES,
        });
        Ok(vec![(
            PortName::new_static("model"),
            ModelValue::untrained(arch).into_value(),
        )])
    }
}
