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
//!     memo: None,
//!     jobs: 2,
//!     cache: kiln_engine::CacheMode::Use,
//!     out_dir: "runs/iris".into(),
//!     stores: Default::default(),
//!     selection: kiln_engine::Selection::All,
//!     cancel: Default::default(),
//!     observer: std::sync::Arc::new(kiln_engine::Quiet),
//! })?;
//! assert!(report.succeeded());
//! # Ok(()) }
//! ```

// The derive macros name `::kiln_engine`; inside this crate too.
extern crate self as kiln_engine;

pub mod bundle;
pub mod cache;
pub mod config;
pub mod context;
pub mod data;
pub mod device;
pub mod diagnostic;
pub mod error;
pub mod execute;
pub mod file;
pub mod fingerprint;
pub mod format;
pub mod handle;
pub mod ids;
mod invoke;
pub mod kind;
pub mod load;
pub mod located;
pub mod options;
pub mod params;
pub mod plan;
pub mod registry;
pub mod render;
pub mod report;
pub mod run;
pub mod schema;
pub mod serve;
pub mod settings;
pub mod store;
pub mod sweep;
pub mod sweep_decl;
pub mod trials;
pub mod types;
pub mod validate;
pub mod value;
pub mod watch;
pub mod yaml;

pub use config::{Config, InputPath, OutputPath, Setting};
pub use context::{CancelToken, Observer, Progress, Quiet, RunContext};
pub use device::DeviceSpec;
pub use diagnostic::{Diagnostic, Diagnostics};
pub use error::{EngineError, NodeError, RequestError};
pub use file::{load_file, load_str, read_pipeline, MAX_FILE_BYTES};
pub use ids::{NodeId, PipelineName, PortName, PortRef};
pub use kind::{
    InputSpec, InputTypes, KindSpec, NodeKind, NumberRows, OutputSpec, OutputTypes, Outputs,
};
pub use plan::{Outlet, Plan, PlanNode, ServeSpec};
pub use registry::Registry;
pub use report::{NodeReport, Status};
pub use run::{run, CacheMode, Memo, RunOptions, RunReport, Selection, Stores};
pub use serve::{ServeError, Service};
pub use settings::{SettingDefault, SettingSpec, SettingType, Settings};
pub use store::{Store, StoreError};
pub use types::ValueType;
pub use value::Value;

/// What the derive macros' expansions name; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use serde_json::json;
}
