//! `model.pretrained`: a BERT-family encoder from a local folder, or a
//! decoder language model from a GGUF file.

use std::path::Path;

use kiln_engine::{
    Config, InputPath, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext,
    Settings, ValueType,
};
use serde::Deserialize;
use serde_json::json;

use crate::llm::{gguf, LanguageModel};
use crate::model::ModelValue;
use crate::nn::encoder::{Encoder, FILES};

/// Names a pre-trained model.
pub struct Pretrained;

/// What `model.pretrained` reads from `with:`.
#[derive(Config, Deserialize)]
struct PretrainedSettings {
    /// the model folder (an encoder) or `.gguf` file (a language model), relative to the pipeline file
    path: InputPath,
}

impl NodeKind for Pretrained {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "model.pretrained",
            version: 3,
            doc: "A pre-trained model read from local files; nothing is downloaded. Either a BERT-family sentence encoder (e.g. all-MiniLM-L6-v2): a folder holding `config.json`, `model.safetensors` and `tokenizer.json`, used with `infer.embed`; or a decoder language model of the llama family (e.g. SmolLM2): a `.gguf` file, with its tokenizer and chat template from the file's metadata (a `tokenizer.json` beside it wins), used with `infer.generate` and `postprocess.perplexity`.
Its files' content is part of the node's fingerprint, never their path.",
            inputs: vec![],
            outputs: vec![OutputSpec::new("model", ValueType::Model, "the model (its files, by content, and sizes)")],
            settings: PretrainedSettings::specs(),
            side_effects: false,
        }
    }

    fn check(&self, settings: &Settings) -> Vec<(String, String)> {
        // A GGUF names its architecture in its header: one kiln can't run is
        // refused before anything runs.
        let Ok(s) = settings.read::<PretrainedSettings>() else {
            return Vec::new();
        };
        let path: &Path = &s.path;
        if LanguageModel::is_gguf(path) && path.is_file() {
            if let Err(e) = gguf::check_architecture(path) {
                return vec![("path".into(), e.to_string())];
            }
        }
        Vec::new()
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let PretrainedSettings { path } = ctx.settings().read()?;
        // The value stands for the files, so it carries their content: new
        // weights under the same name make a new value, and every node that
        // used the old one runs again.
        let content = ctx.content_hash(&path)?;
        let arch = if LanguageModel::is_gguf(&path) {
            // Described from a load on the CPU (the node that runs it
            // loads it again on its own device).
            let lm = LanguageModel::load(&path, &content, &candle_core::Device::Cpu)?;
            let c = &lm.model.config;
            json!({
                "type": "llm",
                "path": path.display().to_string(),
                "content": content,
                "name": lm.name,
                "layers": c.layers,
                "hidden": c.hidden,
                "heads": c.heads,
                "kv_heads": c.kv_heads,
                "vocab": lm.model.vocab(),
                "context": c.context,
                "weight_bytes": lm.model.bytes(),
            })
        } else {
            // Loads it once here, so a wrong folder fails at this node.
            let encoder = Encoder::load(&path, &content, ctx.device())?;
            json!({
                "type": "bert",
                "path": path.display().to_string(),
                "content": content,
                "hidden": encoder.hidden,
                "files": FILES,
            })
        };
        Ok(vec![(
            PortName::new_static("model"),
            ModelValue::untrained(arch).into_value(),
        )])
    }
}
