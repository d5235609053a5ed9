//! `sink.json`: writes any value as JSON.

use kiln_engine::{
    Config, InputSpec, KindSpec, NodeError, NodeKind, OutputPath, Outputs, RunContext, ValueType,
};
use serde::Deserialize;

/// Writes a value as pretty JSON in the run's output folder.
pub struct JsonSink;

/// What `sink.json` reads from `with:`.
#[derive(Config, Deserialize)]
struct JsonSettings {
    /// the file to write, e.g. `metrics.json`
    path: OutputPath,
}

impl NodeKind for JsonSink {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "sink.json",
            version: 2,
            doc: "Writes a value as JSON: metrics and reports as they are, tables as a list of records, other values as their metadata and tensor shapes.
The path is relative to the run's output folder (`--out`) unless absolute.",
            inputs: vec![InputSpec::required("data", ValueType::Any, "the value to write")],
            outputs: vec![],
            settings: JsonSettings::specs(),
            side_effects: false,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let json = crate::show::to_json(ctx.input("data")?)?;
        let path = ctx.output_file(ctx.settings().read::<JsonSettings>()?.path)?;
        let text =
            serde_json::to_string_pretty(&json).map_err(|e| NodeError::new(e.to_string()))?;
        std::fs::write(&path, text + "\n")
            .map_err(|e| NodeError::new(format!("cannot write `{}`: {e}", path.display())))
            .map(|()| vec![])
    }
}
