//! Running a plan: a ready-set scheduler on a rayon pool.
//!
//! The coordinating thread keeps, for each node, how many of its producers
//! are still unfinished; a node whose count reaches zero is spawned at once,
//! so it never waits on an unrelated node. Each node is executed by
//! `execute` (its result from memory or the cache, else run and stored). A
//! failure skips the node's descendants only; independent branches finish.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use petgraph::graph::NodeIndex;
use petgraph::Direction;

use crate::cache::{Cache, Out};
use crate::error::EngineError;
use crate::execute::{execute, report_of, Mode, Site};
use crate::handle::NodeOutputs;
pub use crate::handle::{Handle, Memo};
use crate::ids::PortName;
pub use crate::options::{CacheMode, RunOptions, Selection, Stores};
use crate::plan::{Outlet, Plan, PlanNode};
use crate::report::{NodeReport, Status};

/// The outcome of a run.
pub struct RunReport {
    /// Per node, in the pipeline's order (nodes outside the selection are left out).
    pub nodes: Vec<NodeReport>,
    /// Wall time of the whole run.
    pub seconds: f64,
    /// Every output that was produced or found, by outlet.
    pub values: Vec<(Outlet, Arc<Handle>)>,
}

impl RunReport {
    /// Nodes with this status.
    pub fn count(&self, status: Status) -> usize {
        self.nodes.iter().filter(|n| n.status == status).count()
    }

    /// Whether every node ran, came from the cache or is serve-only.
    pub fn succeeded(&self) -> bool {
        self.nodes
            .iter()
            .all(|n| matches!(n.status, Status::Ran | Status::Cached | Status::ServeOnly))
    }

    /// The value at an outlet, if the run produced it.
    pub fn value(&self, outlet: &Outlet) -> Option<&Arc<Handle>> {
        self.values
            .iter()
            .find(|(o, _)| o == outlet)
            .map(|(_, h)| h)
    }
}

/// What the workers share while a plan runs. The lock is held for
/// bookkeeping only, never while a node runs.
struct Shared<'a> {
    plan: &'a Plan,
    opts: &'a RunOptions,
    cache: Cache,
    out: Out,
    modes: Vec<Option<Mode>>,
    state: Mutex<State>,
}

struct State {
    /// Unfinished producers per node.
    waiting: Vec<usize>,
    outputs: Vec<Option<NodeOutputs>>,
    reports: Vec<Option<NodeReport>>,
}

/// Runs the plan. Node failures are in the report; `Err` is for problems
/// outside any node (the thread pool, the output folder).
///
/// A worker that finishes a node updates the shared counts itself and goes
/// straight on with one newly ready successor, spawning the others: a chain
/// runs on one thread without hand-offs, a fan-out spreads over the pool.
pub fn run(plan: &Plan, opts: &RunOptions) -> Result<RunReport, EngineError> {
    let cache = match &opts.stores.cache {
        Some(store) => Cache::at(store.clone()),
        None => Cache::new(plan.base_dir.join(".kiln")),
    };
    let started = Instant::now();
    let mut report = run_once(plan, opts, &cache)?;
    // A damaged cached value was found (and removed) while reading it: the
    // nodes that needed it failed, and run again they compute it afresh.
    for _ in 0..2 {
        if !cache.take_damaged() || opts.cancel.is_cancelled() {
            break;
        }
        tracing::warn!("the cache held a damaged value; running again to recompute it");
        report = run_once(plan, opts, &cache)?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn run_once(plan: &Plan, opts: &RunOptions, cache: &Cache) -> Result<RunReport, EngineError> {
    let started = Instant::now();
    let n = plan.nodes.len();
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| EngineError::Write {
        path: opts.out_dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs.max(1))
        .thread_name(|i| format!("kiln-worker-{i}"))
        .build()
        .map_err(|e| {
            EngineError::Usage(format!("cannot start {} worker threads: {e}", opts.jobs))
        })?;
    let waiting = (0..n)
        .map(|i| {
            let preds: HashSet<NodeIndex> = plan
                .graph
                .neighbors_directed(NodeIndex::new(i), Direction::Incoming)
                .collect();
            preds.len()
        })
        .collect();
    let out = match &opts.stores.out {
        Some(store) => Out::remote(store.clone(), &opts.out_dir),
        None => Out::local(&opts.out_dir),
    };
    let shared = Shared {
        plan,
        opts,
        cache: cache.clone(),
        out,
        modes: modes(plan, &opts.selection),
        state: Mutex::new(State {
            waiting,
            outputs: vec![None; n],
            reports: vec![None; n],
        }),
    };
    let roots: Vec<NodeIndex> = {
        let state = lock(&shared.state);
        (0..n)
            .filter(|&i| shared.modes[i].is_some() && state.waiting[i] == 0)
            .map(NodeIndex::new)
            .collect()
    };
    pool.in_place_scope(|scope| {
        for idx in roots {
            let shared = &shared;
            scope.spawn(move |scope| work(scope, shared, idx));
        }
    });
    let state = shared.state.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut reports = state.reports;
    // Whatever never became ready (cancelled before its producers finished).
    for (i, report) in reports.iter_mut().enumerate() {
        if shared.modes[i].is_some() && report.is_none() {
            *report = Some(skipped(&plan.nodes[i], "the run was cancelled"));
        }
    }
    let values = state
        .outputs
        .into_iter()
        .enumerate()
        .flat_map(|(i, outs)| {
            outs.unwrap_or_default().into_iter().map(move |(port, h)| {
                (
                    Outlet {
                        node: NodeIndex::new(i),
                        port,
                    },
                    h,
                )
            })
        })
        .collect();
    Ok(RunReport {
        nodes: reports.into_iter().flatten().collect(),
        seconds: started.elapsed().as_secs_f64(),
        values,
    })
}

fn lock<'a>(state: &'a Mutex<State>) -> std::sync::MutexGuard<'a, State> {
    // A panic never happens under this lock (nodes run outside it), but a
    // poisoned lock still holds consistent bookkeeping.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `idx`, then keeps going with one successor it made ready.
fn work<'s>(scope: &rayon::Scope<'s>, shared: &'s Shared<'s>, mut idx: NodeIndex) {
    let (plan, opts) = (shared.plan, shared.opts);
    loop {
        let node = plan.node(idx);
        if opts.cancel.is_cancelled() {
            let report = skipped(node, "the run was cancelled");
            opts.observer.node_finished(&report);
            lock(&shared.state).reports[idx.index()] = Some(report);
            return;
        }
        let inputs: Vec<(PortName, Vec<Arc<Handle>>)> = {
            let state = lock(&shared.state);
            node.inputs
                .iter()
                .map(|(port, outlets)| {
                    let handles = outlets
                        .iter()
                        .filter_map(|o| {
                            state.outputs[o.node.index()]
                                .as_ref()
                                .and_then(|outs| outs.iter().find(|(p, _)| *p == o.port))
                                .map(|(_, h)| h.clone())
                        })
                        .collect();
                    (port.clone(), handles)
                })
                .collect()
        };
        let mode = shared.modes[idx.index()].unwrap_or(Mode::Normal);
        let (report, outputs) = if node.kind.serve_only(&node.settings) {
            let why = "it takes its rows from requests: `kiln serve` answers through it";
            (left_out(node, Status::ServeOnly, why), None)
        } else {
            let site = Site {
                cache: &shared.cache,
                out: &shared.out,
                opts,
            };
            execute(plan, node, inputs, mode, &site)
        };
        opts.observer.node_finished(&report);
        let ready = finish(shared, idx, report, outputs);
        let Some((&next, rest)) = ready.split_first() else {
            return;
        };
        for &other in rest {
            scope.spawn(move |scope| work(scope, shared, other));
        }
        idx = next;
    }
}

/// Records a finished node; returns the successors it made ready. On
/// failure, marks every descendant skipped instead (serve-only below a
/// serve-only node).
fn finish(
    shared: &Shared<'_>,
    idx: NodeIndex,
    report: NodeReport,
    outputs: Option<NodeOutputs>,
) -> Vec<NodeIndex> {
    let plan = shared.plan;
    let mut state = lock(&shared.state);
    let failed = outputs.is_none();
    let cause = report.id.clone();
    let (status, why) = if report.status == Status::ServeOnly {
        (
            Status::ServeOnly,
            format!("it depends on `{cause}`, which is serve-only"),
        )
    } else {
        (Status::Skipped, format!("`{cause}` failed"))
    };
    state.reports[idx.index()] = Some(report);
    state.outputs[idx.index()] = outputs;
    if failed {
        for d in descendants(plan, idx) {
            if shared.modes[d.index()].is_some() && state.reports[d.index()].is_none() {
                let r = left_out(plan.node(d), status, &why);
                shared.opts.observer.node_finished(&r);
                state.reports[d.index()] = Some(r);
            }
        }
        return Vec::new();
    }
    let succs: HashSet<NodeIndex> = plan
        .graph
        .neighbors_directed(idx, Direction::Outgoing)
        .collect();
    let mut succs: Vec<NodeIndex> = succs.into_iter().collect();
    succs.sort();
    let mut ready = Vec::new();
    for s in succs {
        if shared.modes[s.index()].is_none() || state.reports[s.index()].is_some() {
            continue;
        }
        state.waiting[s.index()] -= 1;
        if state.waiting[s.index()] == 0 {
            ready.push(s);
        }
    }
    ready
}

fn modes(plan: &Plan, selection: &Selection) -> Vec<Option<Mode>> {
    let n = plan.nodes.len();
    match selection {
        Selection::All => vec![Some(Mode::Normal); n],
        Selection::Until(target) | Selection::Only(target) => {
            let ancestor_mode = if matches!(selection, Selection::Only(_)) {
                Mode::CacheOnly
            } else {
                Mode::Normal
            };
            with_ancestors(plan, &[*target], ancestor_mode)
        }
        Selection::Needed(targets) => with_ancestors(plan, targets, Mode::Normal),
    }
}

/// `targets` run normally, their ancestors in `ancestor_mode`, others not at all.
fn with_ancestors(plan: &Plan, targets: &[NodeIndex], ancestor_mode: Mode) -> Vec<Option<Mode>> {
    let mut modes = vec![None; plan.nodes.len()];
    let mut stack = targets.to_vec();
    while let Some(at) = stack.pop() {
        if modes[at.index()].is_some() {
            continue;
        }
        modes[at.index()] = Some(if targets.contains(&at) {
            Mode::Normal
        } else {
            ancestor_mode
        });
        stack.extend(plan.graph.neighbors_directed(at, Direction::Incoming));
    }
    modes
}

fn descendants(plan: &Plan, from: NodeIndex) -> Vec<NodeIndex> {
    let mut seen = HashSet::new();
    let mut stack: Vec<NodeIndex> = plan
        .graph
        .neighbors_directed(from, Direction::Outgoing)
        .collect();
    while let Some(at) = stack.pop() {
        if seen.insert(at) {
            stack.extend(plan.graph.neighbors_directed(at, Direction::Outgoing));
        }
    }
    let mut out: Vec<NodeIndex> = seen.into_iter().collect();
    out.sort();
    out
}

fn skipped(node: &PlanNode, why: &str) -> NodeReport {
    left_out(node, Status::Skipped, why)
}

/// A node that did not run, and why.
fn left_out(node: &PlanNode, status: Status, why: &str) -> NodeReport {
    NodeReport {
        error: Some(why.to_string()),
        ..report_of(node, status)
    }
}
