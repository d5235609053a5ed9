//! `kiln graph`: the DAG as DOT, Mermaid or JSON.

use std::path::Path;

use kiln_engine::{render, Registry};

use crate::cli::GraphFormat;
use crate::failure::Failure;

/// Prints the graph of a valid pipeline.
pub fn graph(
    file: &Path,
    format: GraphFormat,
    sets: &[String],
    registry: &Registry,
) -> Result<(), Failure> {
    let plan = super::load::load(file, sets, registry)?;
    match format {
        GraphFormat::Dot => print!("{}", render::dot(&plan)),
        GraphFormat::Mermaid => print!("{}", render::mermaid(&plan)),
        GraphFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&render::json(&plan)).unwrap_or_default()
        ),
    }
    Ok(())
}
