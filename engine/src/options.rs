//! How a plan runs: cache use, where the cache and outputs live, which
//! nodes, threads, cancellation, what is told about it.

use std::path::PathBuf;
use std::sync::Arc;

use petgraph::graph::NodeIndex;

use crate::context::{CancelToken, Observer};
use crate::handle::Memo;
use crate::store::Store;

/// How the cache is used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// Take results from the cache and store new ones.
    #[default]
    Use,
    /// Run everything, storing the new results (`--no-cache`).
    Refresh,
    /// Neither read nor write the cache.
    Off,
    /// Look every result up and run nothing: a node not in the cache fails
    /// (what `kiln export --skip-cached` asks).
    Probe,
}

/// Where the cache and the output folder live when not on this machine.
#[derive(Clone, Debug, Default)]
pub struct Stores {
    /// The cache (`--cache URL`); `None`: `.kiln/` beside the pipeline file.
    pub cache: Option<Store>,
    /// Where written files go (`--out URL`); `None`: they stay in `out_dir`.
    pub out: Option<Store>,
}

/// Which nodes a run covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Selection {
    /// Every node.
    #[default]
    All,
    /// This node and everything it depends on (`--until`).
    Until(NodeIndex),
    /// This node alone; what it depends on must come from the cache (`--only`).
    Only(NodeIndex),
    /// These nodes and everything they depend on (what a served pipeline reads).
    Needed(Vec<NodeIndex>),
}

/// How to run.
#[derive(Clone)]
pub struct RunOptions {
    /// Nodes running at once (and the pool's threads).
    pub jobs: usize,
    /// Cache use.
    pub cache: CacheMode,
    /// Where sinks write (a staging folder when `stores.out` is set).
    pub out_dir: PathBuf,
    /// The cache's and the output's stores.
    pub stores: Stores,
    /// Results kept in memory across runs (a sweep's trials): a node whose
    /// fingerprint is there takes its values from it, not from the cache.
    pub memo: Option<Arc<Memo>>,
    /// Which nodes to run.
    pub selection: Selection,
    /// Stops the run at the next node boundary (and batch, inside nodes that check).
    pub cancel: CancelToken,
    /// Told about starts, progress and ends.
    pub observer: Arc<dyn Observer>,
}
