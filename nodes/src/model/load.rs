//! `model.load`: a model saved by `sink.safetensors`.

use kiln_engine::{
    Config, InputPath, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext,
    Value, ValueType,
};
use serde::Deserialize;

use crate::model::ModelValue;

/// Loads a saved model.
pub struct Load;

/// What `model.load` reads from `with:`.
#[derive(Config, Deserialize)]
struct LoadSettings {
    /// the .safetensors file, relative to the pipeline file
    path: InputPath,
}

impl NodeKind for Load {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "model.load",
            version: 1,
            doc: "Loads a model saved by `sink.safetensors`: architecture, sizes, label names and weights, bit for bit.
The file's content is part of the node's fingerprint, so replacing it re-runs what depends on it.",
            inputs: vec![],
            outputs: vec![OutputSpec::new("model", ValueType::Model, "the saved model")],
            settings: LoadSettings::specs(),
            side_effects: false,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let LoadSettings { path } = ctx.settings().read()?;
        let bytes = std::fs::read(&path)
            .map_err(|e| NodeError::new(format!("cannot read `{}`: {e}", path.display())))?;
        let value = Value::from_bytes(&bytes).map_err(|e| {
            NodeError::new(format!(
                "`{}` is not a model saved by kiln ({e}); save models with `sink.safetensors`",
                path.display()
            ))
        })?;
        // Checks it is a model with an architecture.
        let model = ModelValue::from_value(&value)?;
        if model.dims.is_none() {
            return Err(NodeError::new(format!(
                "`{}` holds an untrained model",
                path.display()
            )));
        }
        Ok(vec![(PortName::new_static("model"), value)])
    }
}
