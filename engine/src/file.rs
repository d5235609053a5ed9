//! Reading a pipeline file: its text, parsed and validated into a [`Plan`].

use std::path::Path;

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::error::EngineError;
use crate::plan::Plan;
use crate::registry::Registry;
use crate::{load, validate, yaml};

/// Largest pipeline file accepted, in bytes.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Reads, parses and validates a pipeline file. `overrides` are
/// `--set params.NAME=VALUE` pairs (already parsed as YAML values).
pub fn load_file(
    path: &Path,
    registry: &Registry,
    overrides: &[(String, serde_json::Value)],
) -> Result<Plan, EngineError> {
    let text = read_pipeline(path)?;
    load_str(&text, path, registry, overrides)
}

/// Parses and validates pipeline text as if read from `path`.
pub fn load_str(
    text: &str,
    path: &Path,
    registry: &Registry,
    overrides: &[(String, serde_json::Value)],
) -> Result<Plan, EngineError> {
    let mut diags = Diagnostics::new(path.display().to_string());
    let doc = match yaml::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            diags.push(Diagnostic::at(
                e.pos,
                format!("invalid YAML: {}", e.message),
            ));
            return Err(EngineError::Invalid(diags));
        }
    };
    let decl = load::declaration(&doc, &mut diags);
    match validate::validate(&decl, registry, overrides, path, &mut diags) {
        Some(plan) if diags.is_empty() => Ok(plan),
        _ => {
            diags.sort();
            Err(EngineError::Invalid(diags))
        }
    }
}

/// Reads a pipeline file as text, with plain errors for the usual mistakes.
pub fn read_pipeline(path: &Path) -> Result<String, EngineError> {
    let read_err = |reason: String| EngineError::Read {
        path: path.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| read_err(io_reason(&e)))?;
    if meta.is_dir() {
        return Err(read_err("it is a folder, not a pipeline file".into()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(read_err(format!(
            "it is {} MB; a pipeline file is at most {} MB",
            meta.len() / 1_000_000,
            MAX_FILE_BYTES / 1_000_000
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| read_err(io_reason(&e)))?;
    String::from_utf8(bytes).map_err(|e| {
        read_err(format!(
            "it is not UTF-8 text (invalid byte at offset {}); is it a pipeline file?",
            e.utf8_error().valid_up_to()
        ))
    })
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}
