//! The pipeline file format as typed descriptors.
//!
//! These types are the format's definition: the JSON Schema (`kiln schema`)
//! is generated from them, and [`crate::load`] accepts exactly their keys
//! (a test keeps the two in step). Loading itself walks the YAML tree by hand
//! so that it can report every problem with its position instead of stopping
//! at the first, as serde would.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// A pipeline file.
///
/// ```yaml
/// pipeline: iris-mlp
/// seed: 42
/// params: { lr: 0.01 }
/// nodes:
///   iris: { kind: source.csv, with: { path: data/iris.csv, target: species } }
///   split: { kind: preprocess.split, inputs: { data: iris }, with: { test: 0.2 } }
/// outputs: [split.test]
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// The pipeline's name: lowercase letters, digits, `_` and `-`.
    #[schemars(regex(pattern = r"^[a-z0-9_-]+$"))]
    pub pipeline: String,
    /// What the pipeline does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Every random choice (splits, shuffles, initial weights) derives from it.
    #[serde(default)]
    pub seed: u64,
    /// Where nodes run unless they say otherwise: `cpu`, `cuda`, `cuda:N` or `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Named values for `${params.NAME}`, overridable with `--set params.NAME=VALUE`.
    #[serde(default)]
    pub params: IndexMap<String, Json>,
    /// The nodes, by id (lowercase letters, digits and `_`).
    pub nodes: IndexMap<String, NodeFile>,
    /// References (`node` or `node.port`) printed at the end of a run and written to `metrics.json`.
    #[serde(default)]
    pub outputs: Vec<String>,
    /// What `kiln serve` answers requests with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve: Option<ServeFile>,
    /// Variants of the pipeline that `kiln sweep` runs and ranks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepFile>,
}

/// The `sweep:` block: trials that vary params, ranked by a metric.
///
/// ```yaml
/// sweep:
///   method: grid
///   params: { lr: [0.001, 0.01], hidden: [[32], [64, 64]] }
///   metric: eval.metrics.accuracy
///   goal: maximize
///   parallel: 2
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    /// `grid` (every combination) or `random` (`trials` draws from the pipeline seed).
    #[serde(default)]
    pub method: Option<String>,
    /// Param -> a list of values, or (random) a range `{ min, max, log, integer }`.
    pub params: IndexMap<String, SweepDomain>,
    /// How many trials a random sweep draws.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub trials: Option<u64>,
    /// The value to rank trials by: `node.port.key` (a key of a `metrics` output).
    pub metric: String,
    /// `maximize` or `minimize`.
    #[serde(default)]
    pub goal: Option<String>,
    /// Trials running at once.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub parallel: Option<u64>,
}

/// A swept param's values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SweepDomain {
    /// These values (grid: each; random: one drawn uniformly).
    Values(Vec<Json>),
    /// A range to draw from (random sweeps).
    Range {
        /// The smallest value.
        min: f64,
        /// The largest value.
        max: f64,
        /// Draw uniformly in log space (learning rates).
        #[serde(default)]
        log: bool,
        /// Draw integers.
        #[serde(default)]
        integer: bool,
    },
}

/// The `serve:` block: which node takes requests and which output answers them.
///
/// ```yaml
/// serve: { input: request, output: label, max_batch: 32, max_wait_ms: 2 }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServeFile {
    /// The node that takes each request's rows (a kind that takes requests, such as `source.request`).
    pub input: String,
    /// The answer: `node` or `node.port`, downstream of `input`.
    pub output: String,
    /// Most rows run together in one pass when requests arrive together.
    #[serde(default = "default_max_batch")]
    #[schemars(range(min = 1))]
    pub max_batch: u64,
    /// How long the first request of a batch waits for others even when a worker is free, in milliseconds (requests that arrive while every worker is busy batch anyway).
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
    /// Most rows one request may send.
    #[serde(default = "default_max_rows")]
    #[schemars(range(min = 1))]
    pub max_rows: u64,
    /// Most rows waiting for a batch (for a language model: prompts), so the wait a full queue means is bounded; beyond it a request gets `503` with `Retry-After` as soon as its head is read (its body is dropped unparsed; a client that sent `Expect: 100-continue` is not asked for it) (default: four full batches, `4 × max_batch` rows; a request larger than this is still taken when nothing waits).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_queue: Option<u64>,
    /// How long a request may wait for its answer, in milliseconds; past it the answer is `504` and the request's work is dropped if its batch has not started.
    #[serde(default = "default_timeout_ms")]
    #[schemars(range(min = 1))]
    pub timeout_ms: u64,
}

/// Default `serve.timeout_ms`: 30 s.
pub fn default_timeout_ms() -> u64 {
    30_000
}

/// Default `serve.max_queue` for a `max_batch`: four full batches' rows.
pub fn default_max_queue(max_batch: u64) -> u64 {
    max_batch.saturating_mul(4)
}

/// Default `serve.max_batch`.
pub fn default_max_batch() -> u64 {
    64
}

/// Default `serve.max_wait_ms`: none; requests that arrive while the
/// workers are busy still batch together.
pub fn default_max_wait_ms() -> u64 {
    0
}

/// Default `serve.max_rows`.
pub fn default_max_rows() -> u64 {
    1024
}

/// One node of a pipeline.
///
/// ```yaml
/// split:
///   kind: preprocess.split
///   inputs: { data: iris }
///   with: { test: 0.2, stratify: true }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// The node kind, `category.name` (see `kiln nodes`).
    pub kind: String,
    /// Input port -> `node`, `node.port`, or a list of them.
    #[serde(default)]
    pub inputs: IndexMap<String, Refs>,
    /// Settings of the kind; `${params.NAME}` is substituted.
    #[serde(default, rename = "with")]
    pub settings: IndexMap<String, Json>,
    /// Overrides the pipeline's device for this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// `false` runs the node every time instead of taking it from the cache.
    #[serde(default = "yes")]
    pub cache: bool,
}

fn yes() -> bool {
    true
}

/// One reference or a list of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Refs {
    /// `node` or `node.port`.
    One(String),
    /// Several, for ports that take a list.
    Many(Vec<String>),
}

/// Top-level keys, in the order the docs show them.
pub const PIPELINE_KEYS: [&str; 9] = [
    "pipeline",
    "description",
    "seed",
    "device",
    "params",
    "nodes",
    "outputs",
    "serve",
    "sweep",
];

/// Keys of the `sweep:` block.
pub const SWEEP_KEYS: [&str; 6] = ["method", "params", "trials", "metric", "goal", "parallel"];

/// Keys of a swept range.
pub const RANGE_KEYS: [&str; 4] = ["min", "max", "log", "integer"];

/// Keys of the `serve:` block.
pub const SERVE_KEYS: [&str; 7] = [
    "input",
    "output",
    "max_batch",
    "max_wait_ms",
    "max_rows",
    "max_queue",
    "timeout_ms",
];

/// Keys of a node.
pub const NODE_KEYS: [&str; 5] = ["kind", "inputs", "with", "device", "cache"];

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_of<T: JsonSchema>() -> Vec<String> {
        let schema = serde_json::to_value(schemars::schema_for!(T)).unwrap();
        let mut keys: Vec<String> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn key_lists_match_the_typed_descriptors() {
        let mut top: Vec<String> = PIPELINE_KEYS.iter().map(|s| s.to_string()).collect();
        top.sort();
        assert_eq!(keys_of::<PipelineFile>(), top);
        let mut node: Vec<String> = NODE_KEYS.iter().map(|s| s.to_string()).collect();
        node.sort();
        assert_eq!(keys_of::<NodeFile>(), node);
        let mut serve: Vec<String> = SERVE_KEYS.iter().map(|s| s.to_string()).collect();
        serve.sort();
        assert_eq!(keys_of::<ServeFile>(), serve);
        let mut sweep: Vec<String> = SWEEP_KEYS.iter().map(|s| s.to_string()).collect();
        sweep.sort();
        assert_eq!(keys_of::<SweepFile>(), sweep);
    }
}
