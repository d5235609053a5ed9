//! # kiln-engine
//!
//! The engine of kiln, a declarative ML pipeline tool: the pipeline file
//! format ([`format`], [`load`]), whole-file validation ([`validate`]) into a
//! [`Plan`], the petgraph DAG and its drawings ([`render`]), the ready-set
//! scheduler on a rayon pool ([`run`]), the content-addressed cache
//! ([`cache`]), watch mode ([`watch`]) and devices ([`device`]).
//!
//! The engine knows no concrete node kind. Kinds implement [`NodeKind`] and
//! are added to a [`Registry`] by the `kiln-nodes` crate; everything the
//! engine needs to know about a kind is in its [`KindSpec`].
//!
//! ```no_run
//! # fn demo(registry: &kiln_engine::Registry) -> Result<(), kiln_engine::EngineError> {
//! let plan = kiln_engine::load_file("pipelines/iris.yaml".as_ref(), registry, &[])?;
//! let report = kiln_engine::run(&plan, &kiln_engine::RunOptions {
//!     jobs: 2,
//!     cache: kiln_engine::CacheMode::Use,
//!     out_dir: "runs/iris".into(),
//!     selection: kiln_engine::Selection::All,
//!     cancel: Default::default(),
//!     observer: std::sync::Arc::new(kiln_engine::Quiet),
//! })?;
//! assert!(report.succeeded());
//! # Ok(()) }
//! ```

pub mod cache;
pub mod context;
pub mod data;
pub mod device;
pub mod diagnostic;
pub mod error;
pub mod fingerprint;
pub mod format;
pub mod ids;
pub mod kind;
pub mod load;
pub mod params;
pub mod registry;
pub mod render;
pub mod run;
pub mod schema;
pub mod serve;
pub mod settings;
pub mod validate;
pub mod value;
pub mod watch;
pub mod yaml;

use std::path::Path;

pub use context::{CancelToken, Observer, Progress, Quiet, RunContext};
pub use device::DeviceSpec;
pub use diagnostic::{Diagnostic, Diagnostics};
pub use error::{EngineError, NodeError};
pub use ids::{NodeId, PipelineName, PortName, PortRef};
pub use kind::{
    InputSpec, InputTypes, KindSpec, NodeKind, OutputSpec, OutputTypes, Outputs, ValueType,
};
pub use registry::Registry;
pub use run::{run, CacheMode, NodeReport, RunOptions, RunReport, Selection, Status};
pub use serve::{RequestError, ServeError, ServeSpec, Service};
pub use settings::{SettingDefault, SettingSpec, SettingType, Settings};
pub use validate::{Outlet, Plan, PlanNode};
pub use value::Value;

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
