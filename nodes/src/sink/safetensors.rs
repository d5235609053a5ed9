//! `sink.safetensors`: saves a model (or any tensor value) as a `.safetensors` file.

use kiln_engine::{
    Config, InputSpec, KindSpec, NodeError, NodeKind, OutputPath, Outputs, RunContext, ValueType,
};
use serde::Deserialize;

/// Writes a value's tensors, with its type and metadata (a model's architecture).
pub struct SafetensorsSink;

/// What `sink.safetensors` reads from `with:`.
#[derive(Config, Deserialize)]
struct SafetensorsSettings {
    /// the file to write, e.g. `model.safetensors`
    path: OutputPath,
}

impl NodeKind for SafetensorsSink {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "sink.safetensors",
            version: 1,
            doc: "Saves a model (or any value holding tensors) as a .safetensors file: the tensors under their layer names, and the architecture, sizes and label names as JSON in the header's `kiln` entry.
`model.load` reads it back bit for bit; other safetensors readers see the weights.",
            inputs: vec![InputSpec::required("data", ValueType::Any, "the model or tensors to save")],
            outputs: vec![],
            settings: SafetensorsSettings::specs(),
            side_effects: false,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let value = ctx.input("data")?;
        let path = ctx.output_file(ctx.settings().read::<SafetensorsSettings>()?.path)?;
        std::fs::write(&path, value.to_bytes()?)
            .map_err(|e| NodeError::new(format!("cannot write `{}`: {e}", path.display())))?;
        Ok(vec![])
    }
}
