//! A pipeline named on the command line: `--set` overrides parsed, the file
//! loaded and validated, problems as the user sees them.

use std::path::Path;

use kiln_engine::{Plan, Registry};
use serde_json::Value as Json;

use crate::failure::Failure;

/// Parses `--set params.NAME=VALUE` arguments; VALUE is read as YAML.
pub fn parse_sets(sets: &[String]) -> Result<Vec<(String, Json)>, Failure> {
    sets.iter()
        .map(|s| {
            let usage = || Failure::Invalid(format!("error: `--set {s}`: write `--set params.NAME=VALUE`, e.g. `--set params.lr=0.01`"));
            let (key, value) = s.split_once('=').ok_or_else(usage)?;
            let name = key.trim().strip_prefix("params.").ok_or_else(usage)?;
            if name.is_empty() {
                return Err(usage());
            }
            let value = kiln_engine::yaml::parse_value(value)
                .map_err(|e| Failure::Invalid(format!("error: `--set {s}`: the value is not valid YAML: {}", e.message)))?;
            Ok((name.to_string(), value.to_json()))
        })
        .collect()
}

/// Loads and validates a pipeline file.
pub fn load(file: &Path, sets: &[String], registry: &Registry) -> Result<Plan, Failure> {
    let overrides = parse_sets(sets)?;
    kiln_engine::load_file(file, registry, &overrides).map_err(|e| match e {
        kiln_engine::EngineError::Invalid(d) => Failure::Invalid(d.to_string()),
        other => Failure::Invalid(format!("error: {other}")),
    })
}
