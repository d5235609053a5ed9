//! What a node sees while it runs: its settings, its inputs (already on its
//! device), its seed, where to write, progress reporting and cancellation.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::Device;

use crate::error::NodeError;
use crate::ids::{NodeId, PortName};
use crate::settings::Settings;
use crate::value::Value;

/// A flag that asks running work to stop at its next boundary.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        CancelToken::default()
    }

    /// Asks everything watching this token to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether cancellation was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Progress of long work inside a node.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// Units done.
    pub done: u64,
    /// Units in all (0 when unknown).
    pub total: u64,
    /// A short line: `epoch 3/20 loss 0.41`.
    pub message: String,
    /// The same figures by name (`train_loss`, `valid_accuracy`, …), for
    /// what draws them (the live view's curves).
    pub values: Vec<(String, f64)>,
}

/// Receives what happens during a run (the CLI draws progress bars from it).
pub trait Observer: Send + Sync {
    /// A node started executing (not called for cached nodes).
    fn node_started(&self, node: &NodeId, kind: &str) {
        let _ = (node, kind);
    }
    /// A node reported progress.
    fn progress(&self, node: &NodeId, progress: &Progress) {
        let _ = (node, progress);
    }
    /// A node finished, whatever its status.
    fn node_finished(&self, report: &crate::report::NodeReport) {
        let _ = report;
    }
}

/// An observer that ignores everything.
pub struct Quiet;

impl Observer for Quiet {}

/// The context a node runs in.
pub struct RunContext<'a> {
    pub(crate) node_id: &'a NodeId,
    /// Input port -> where its values come from, as `node.port`.
    pub(crate) sources: &'a [(PortName, Vec<String>)],
    pub(crate) settings: &'a Settings,
    pub(crate) inputs: Vec<(PortName, Vec<Value>)>,
    pub(crate) device: Device,
    pub(crate) seed: u64,
    pub(crate) base_dir: &'a Path,
    /// The files the node reads and their content hashes, as fingerprinted.
    pub(crate) files: &'a [(PathBuf, String)],
    pub(crate) out_dir: &'a Path,
    pub(crate) cancel: &'a CancelToken,
    pub(crate) observer: &'a dyn Observer,
}

impl<'a> RunContext<'a> {
    /// The node's id.
    pub fn node_id(&self) -> &NodeId {
        self.node_id
    }

    /// The node's checked settings.
    pub fn settings(&self) -> &Settings {
        self.settings
    }

    /// The values connected to `port`, in the order written.
    pub fn inputs(&self, port: &str) -> &[Value] {
        self.inputs
            .iter()
            .find(|(p, _)| p.as_str() == port)
            .map_or(&[], |(_, v)| v.as_slice())
    }

    /// Where the values connected to `port` come from, as `node.port`, in
    /// the order written (for reports that name what they compare).
    pub fn input_sources(&self, port: &str) -> Vec<String> {
        self.sources
            .iter()
            .find(|(p, _)| p.as_str() == port)
            .map(|(_, names)| names.clone())
            .unwrap_or_default()
    }

    /// The one value connected to a required port.
    pub fn input(&self, port: &str) -> Result<&Value, NodeError> {
        self.inputs(port)
            .first()
            .ok_or_else(|| NodeError::new(format!("input `{port}` is not connected")))
    }

    /// The value connected to an optional port, if any.
    pub fn opt_input(&self, port: &str) -> Option<&Value> {
        self.inputs(port).first()
    }

    /// The device the node runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The node's own seed (from the pipeline seed and the node id).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The pipeline file's folder.
    pub fn base_dir(&self) -> &Path {
        self.base_dir
    }

    /// The content hash of a file or folder the node reads (an input path
    /// setting): the one its fingerprint was made of, so a value that stands
    /// for files can carry their content, never just their path.
    pub fn content_hash(&self, path: &Path) -> Result<String, NodeError> {
        match self.files.iter().find(|(p, _)| p == path) {
            Some((_, hash)) => Ok(hash.clone()),
            None => crate::fingerprint::hash_path(path)
                .map_err(|e| NodeError::caused_by(e.to_string(), e)),
        }
    }

    /// Where a sink writes `path`: the run's output folder unless absolute.
    pub fn output_path(&self, path: impl AsRef<Path>) -> PathBuf {
        self.out_dir.join(path)
    }

    /// [`output_path`](Self::output_path), with its folder created.
    pub fn output_file(&self, path: impl AsRef<Path>) -> Result<PathBuf, NodeError> {
        let file = self.output_path(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                NodeError::new(format!("cannot create `{}`: {e}", parent.display()))
            })?;
        }
        Ok(file)
    }

    /// Whether the run was cancelled; long work checks this between batches.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// `Err` when the run was cancelled, for `?` between batches.
    pub fn check_cancelled(&self) -> Result<(), NodeError> {
        if self.is_cancelled() {
            Err(NodeError::new("cancelled"))
        } else {
            Ok(())
        }
    }

    /// Reports progress of long work.
    pub fn progress(&self, done: u64, total: u64, message: impl Into<String>) {
        self.progress_with(done, total, message, &[]);
    }

    /// Reports progress with its figures by name, e.g. an epoch's
    /// `("train_loss", 0.41)`; `values` with no finite value are left out.
    pub fn progress_with(
        &self,
        done: u64,
        total: u64,
        message: impl Into<String>,
        values: &[(&str, Option<f64>)],
    ) {
        self.observer.progress(
            self.node_id,
            &Progress {
                done,
                total,
                message: message.into(),
                values: values
                    .iter()
                    .filter_map(|(k, v)| Some((k.to_string(), v.filter(|v| v.is_finite())?)))
                    .collect(),
            },
        );
    }
}
