//! A validated pipeline, ready to run: its nodes with checked settings, the
//! graph between them, what to report and what to serve. Made only by
//! [`crate::validate`]; read by the scheduler, `serve` and the drawings.

use std::path::PathBuf;
use std::sync::Arc;

use indexmap::IndexMap;
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::Value as Json;

use crate::device::DeviceSpec;
use crate::ids::{NodeId, PipelineName, PortName};
use crate::kind::{KindRef, KindSpec, OutputTypes};
use crate::settings::Settings;

/// One output port of one node: where a value comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Outlet {
    /// The producing node.
    pub node: NodeIndex,
    /// Its port.
    pub port: PortName,
}

/// A node ready to run.
#[derive(Clone)]
pub struct PlanNode {
    /// The user's id.
    pub id: NodeId,
    /// The implementation.
    pub kind: KindRef,
    /// What the kind declares.
    pub spec: Arc<KindSpec>,
    /// Checked settings with defaults, paths to read resolved.
    pub settings: Settings,
    /// The settings as written (after substitution and defaults): part of the fingerprint.
    pub written_settings: Json,
    /// Input port -> the outlets feeding it, in order.
    pub inputs: Vec<(PortName, Vec<Outlet>)>,
    /// The node's output ports and their types.
    pub outputs: OutputTypes,
    /// Where it runs.
    pub device: DeviceSpec,
    /// Whether its results may come from the cache.
    pub cache: bool,
    /// Files and folders it reads (absolute): hashed into the fingerprint, watched by `kiln watch`.
    pub files: Vec<PathBuf>,
    /// Input port -> where its values come from, as `node.port` (what
    /// `RunContext::input_sources` answers).
    pub sources: Vec<(PortName, Vec<String>)>,
}

/// A validated pipeline: nodes, the graph between them and what to report.
#[derive(Clone)]
pub struct Plan {
    /// The pipeline's name.
    pub name: PipelineName,
    /// Its description.
    pub description: Option<String>,
    /// The pipeline file.
    pub file: PathBuf,
    /// The folder relative paths are read from.
    pub base_dir: PathBuf,
    /// The seed.
    pub seed: u64,
    /// Params after overrides.
    pub params: IndexMap<String, Json>,
    /// Nodes; a node's position is its index in `graph`.
    pub nodes: Vec<PlanNode>,
    /// Edges carry (output port, input port).
    pub graph: DiGraph<NodeId, (PortName, PortName)>,
    /// The `outputs:` outlets.
    pub outputs: Vec<Outlet>,
    /// The `serve:` block, if any.
    pub serve: Option<ServeSpec>,
    /// The `sweep:` block, if any.
    pub sweep: Option<crate::sweep::SweepSpec>,
}

impl Plan {
    /// The index of the node with this id.
    pub fn index_of(&self, id: &str) -> Option<NodeIndex> {
        self.nodes
            .iter()
            .position(|n| n.id.as_str() == id)
            .map(NodeIndex::new)
    }

    /// The node at `idx`.
    pub fn node(&self, idx: NodeIndex) -> &PlanNode {
        &self.nodes[idx.index()]
    }

    /// `node.port` text for an outlet.
    pub fn outlet_name(&self, outlet: &Outlet) -> String {
        format!("{}.{}", self.node(outlet.node).id, outlet.port)
    }
}

/// The validated `serve:` block.
#[derive(Clone, Debug)]
pub struct ServeSpec {
    /// The node that takes requests.
    pub input: NodeIndex,
    /// The answer.
    pub output: Outlet,
    /// Most rows run together in one pass.
    pub max_batch: usize,
    /// How long the first request of a batch waits for others, in ms.
    pub max_wait_ms: u64,
    /// Most rows one request may send.
    pub max_rows: usize,
    /// Most rows waiting for a batch (prompts, for a language model).
    pub max_queue: usize,
    /// How long a request may wait for its answer, in ms.
    pub timeout_ms: u64,
}
