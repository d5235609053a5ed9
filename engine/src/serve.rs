//! Serving a pipeline (SPEC §7): the nodes between `serve.input` and
//! `serve.output` run once per request, on the values everything upstream
//! produced once (the fitted scaler, the trained model, label names).
//!
//! [`Service::start`] runs what the request path reads (through the cache)
//! and keeps those values; [`Service::infer`] turns a request's rows into
//! the input node's outputs (its kind's [`NodeKind::request`]) and runs the
//! request path on the calling thread. The HTTP side lives in the binary.
//!
//! [`NodeKind::request`]: crate::NodeKind::request

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use candle_core::Device;
use petgraph::graph::NodeIndex;
use petgraph::Direction;
use serde_json::Value as Json;

use crate::context::{CancelToken, Quiet};
use crate::error::{EngineError, NodeError, RequestError};
use crate::fingerprint::node_seed;
use crate::ids::PortName;
use crate::invoke::{invoke, Invocation};
use crate::kind::NumberRows;
use crate::plan::{Outlet, Plan, ServeSpec};
use crate::run::{run, RunOptions, RunReport, Selection};
use crate::value::Value;

/// Why a service could not start or a request could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The pipeline has no `serve:` block.
    #[error(
        "`{0}` has no `serve:` block: add `serve: {{ input: <request node>, output: <node> }}`"
    )]
    NotServed(String),
    /// The engine failed outside any node.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A node the request path reads failed while starting.
    #[error("cannot serve: node `{node}` failed: {reason}")]
    Start {
        /// The node.
        node: String,
        /// Its error.
        reason: String,
    },
    /// The client's input is wrong.
    #[error("{0}")]
    Request(RequestError),
    /// A node on the request path failed.
    #[error("node `{node}` failed: {error}")]
    Node {
        /// The node.
        node: String,
        /// Its error.
        error: NodeError,
    },
}

/// One node of the request path, ready to run.
struct Step {
    node: NodeIndex,
    device: Device,
    seed: u64,
}

/// A served pipeline: the request path and the values it reads.
pub struct Service {
    plan: Arc<Plan>,
    spec: ServeSpec,
    steps: Vec<Step>,
    fixed: HashMap<Outlet, Value>,
    fingerprint: String,
}

impl Service {
    /// Runs every node the request path reads (results come from the cache
    /// when they can) and keeps their values. Returns the run's report too.
    pub fn start(plan: Arc<Plan>, opts: &RunOptions) -> Result<(Service, RunReport), ServeError> {
        let spec = spec_of(&plan)?;
        let (_, needed) = request_path(&plan, &spec);
        let mut producers: Vec<NodeIndex> = needed.iter().map(|o| o.node).collect();
        producers.sort();
        producers.dedup();
        let report = run(
            &plan,
            &RunOptions {
                selection: Selection::Needed(producers),
                ..opts.clone()
            },
        )?;
        let service = Service::from_report(plan, &report)?;
        Ok((service, report))
    }

    /// A service from a finished run of the plan (watch mode runs the whole
    /// pipeline; this takes what the request path reads from it).
    pub fn from_report(plan: Arc<Plan>, report: &RunReport) -> Result<Service, ServeError> {
        let spec = spec_of(&plan)?;
        let (path, needed) = request_path(&plan, &spec);
        let failed = |node: NodeIndex| {
            let id = plan.node(node).id.to_string();
            let reason = report
                .nodes
                .iter()
                .find(|n| n.id == id)
                .and_then(|n| n.error.clone())
                .unwrap_or_else(|| "it did not run".into());
            ServeError::Start { node: id, reason }
        };
        let mut fixed = HashMap::new();
        let mut hasher = blake3::Hasher::new();
        for o in &needed {
            let handle = report.value(o).ok_or_else(|| failed(o.node))?;
            let value = handle.get().map_err(|e| ServeError::Start {
                node: plan.node(o.node).id.to_string(),
                reason: e.to_string(),
            })?;
            hasher.update(plan.outlet_name(o).as_bytes());
            hasher.update(handle.hash().as_bytes());
            fixed.insert(o.clone(), value.clone());
        }
        let mut steps = Vec::new();
        for idx in path {
            let node = plan.node(idx);
            hasher.update(node.spec.name.as_bytes());
            hasher.update(&node.spec.version.to_le_bytes());
            hasher.update(node.written_settings.to_string().as_bytes());
            let device = node.device.resolve().map_err(|e| ServeError::Start {
                node: node.id.to_string(),
                reason: e.to_string(),
            })?;
            let fixed_inputs: Vec<(PortName, Vec<Value>)> = node
                .inputs
                .iter()
                .map(|(port, outlets)| {
                    let values = outlets.iter().filter_map(|o| fixed.get(o).cloned());
                    (port.clone(), values.collect())
                })
                .collect();
            node.kind
                .prepare(&fixed_inputs, &device)
                .map_err(|e| ServeError::Start {
                    node: node.id.to_string(),
                    reason: e.to_string(),
                })?;
            steps.push(Step {
                node: idx,
                device,
                seed: node_seed(plan.seed, node.id.as_str()),
            });
        }
        let fingerprint = hasher.finalize().to_hex()[..16].to_string();
        Ok(Service {
            plan,
            spec,
            steps,
            fixed,
            fingerprint,
        })
    }

    /// The plan being served.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The `serve:` block.
    pub fn spec(&self) -> &ServeSpec {
        &self.spec
    }

    /// Identifies what answers requests: changes when the model, anything
    /// fitted upstream, or the request path's settings change.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The value that stays the same between requests at input `port` of
    /// the `serve.output` node (a model, a fitted transform), if one does.
    pub fn fixed_output_input(&self, port: &str) -> Option<&Value> {
        let node = self.plan.node(self.spec.output.node);
        let (_, outlets) = node.inputs.iter().find(|(p, _)| p.as_str() == port)?;
        outlets.iter().find_map(|o| self.fixed.get(o))
    }

    /// The input node's settings as written (they describe what a request holds).
    pub fn input_settings(&self) -> &Json {
        &self.plan.node(self.spec.input).written_settings
    }

    /// Answers one request: `rows` is what the client sent for the input node.
    pub fn infer(&self, rows: &Json) -> Result<Value, ServeError> {
        let input = self.plan.node(self.spec.input);
        let produced = input
            .kind
            .request(&input.settings, rows)
            .map_err(ServeError::Request)?;
        self.answer(produced)
    }

    /// How many numbers a request's row holds when the input node reads
    /// rows as plain numbers ([`Service::infer_numbers`]).
    pub fn number_rows(&self) -> Option<usize> {
        let input = self.plan.node(self.spec.input);
        input.kind.number_rows(&input.settings)
    }

    /// [`Service::infer`] for rows of plain numbers (the same answer as for
    /// the same rows as JSON lists). Rows the input node does not read as
    /// numbers (none, or not as wide as [`Service::number_rows`] says: a
    /// model swapped in since they were read) go the JSON way, which words
    /// what is wrong; so a kind's `request_numbers` sees only rows it reads.
    pub fn infer_numbers(&self, rows: NumberRows) -> Result<Value, ServeError> {
        let input = self.plan.node(self.spec.input);
        if rows.is_empty() || self.number_rows() != Some(rows.width) {
            return self.infer(&Json::Array(rows.to_json()));
        }
        let produced = input
            .kind
            .request_numbers(&input.settings, rows)
            .map_err(ServeError::Request)?;
        self.answer(produced)
    }

    /// Runs the request path from the input node's outputs.
    fn answer(&self, produced: crate::kind::Outputs) -> Result<Value, ServeError> {
        let plan = &self.plan;
        let mut values: HashMap<Outlet, Value> = produced
            .into_iter()
            .map(|(port, v)| {
                (
                    Outlet {
                        node: self.spec.input,
                        port,
                    },
                    v,
                )
            })
            .collect();
        let cancel = CancelToken::new();
        for step in &self.steps {
            let node = plan.node(step.node);
            let inputs: Vec<(PortName, Vec<Value>)> = node
                .inputs
                .iter()
                .map(|(port, outlets)| {
                    let vals = outlets
                        .iter()
                        .filter_map(|o| values.get(o).or_else(|| self.fixed.get(o)).cloned())
                        .collect();
                    (port.clone(), vals)
                })
                .collect();
            let ran = invoke(
                plan,
                node,
                inputs,
                Invocation {
                    device: step.device.clone(),
                    seed: step.seed,
                    files: &[],
                    out_dir: &plan.base_dir,
                    cancel: &cancel,
                    observer: &Quiet,
                },
            );
            let outputs = ran.map_err(|error| ServeError::Node {
                node: node.id.to_string(),
                error,
            })?;
            for (port, v) in outputs {
                values.insert(
                    Outlet {
                        node: step.node,
                        port,
                    },
                    v,
                );
            }
        }
        values
            .remove(&self.spec.output)
            .ok_or_else(|| ServeError::Node {
                node: plan.node(self.spec.output.node).id.to_string(),
                error: NodeError::new(format!("it gave no `{}`", self.spec.output.port)),
            })
    }
}

/// Checks rows for a plan's `serve.input` without running anything (before
/// a service exists, as `kiln run --input` does).
pub fn check_request(plan: &Plan, rows: &Json) -> Result<(), RequestError> {
    let spec = plan
        .serve
        .as_ref()
        .ok_or_else(|| RequestError::new("", "the pipeline has no `serve:` block"))?;
    let input = plan.node(spec.input);
    input.kind.request(&input.settings, rows).map(|_| ())
}

fn spec_of(plan: &Plan) -> Result<ServeSpec, ServeError> {
    plan.serve
        .clone()
        .ok_or_else(|| ServeError::NotServed(plan.name.to_string()))
}

/// The nodes a request flows through, in topological order (descendants of
/// the input that the output depends on, the input itself excluded), and
/// the outlets from outside that path they read.
fn request_path(plan: &Plan, spec: &ServeSpec) -> (Vec<NodeIndex>, Vec<Outlet>) {
    let downstream = reach(plan, spec.input, Direction::Outgoing);
    let upstream = reach(plan, spec.output.node, Direction::Incoming);
    let order = petgraph::algo::toposort(&plan.graph, None).unwrap_or_default();
    let path: Vec<NodeIndex> = order
        .into_iter()
        .filter(|n| *n != spec.input && downstream.contains(n) && upstream.contains(n))
        .collect();
    let mut needed: Vec<Outlet> = Vec::new();
    for &idx in &path {
        for (_, outlets) in &plan.node(idx).inputs {
            for o in outlets {
                if o.node != spec.input && !path.contains(&o.node) && !needed.contains(o) {
                    needed.push(o.clone());
                }
            }
        }
    }
    (path, needed)
}

/// `from` and every node reachable from it in `direction`.
fn reach(plan: &Plan, from: NodeIndex, direction: Direction) -> HashSet<NodeIndex> {
    let mut seen = HashSet::from([from]);
    let mut stack = vec![from];
    while let Some(at) = stack.pop() {
        for next in plan.graph.neighbors_directed(at, direction) {
            if seen.insert(next) {
                stack.push(next);
            }
        }
    }
    seen
}
