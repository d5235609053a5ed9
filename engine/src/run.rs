//! Running a plan: a ready-set scheduler on a rayon pool.
//!
//! The coordinating thread keeps, for each node, how many of its producers
//! are still unfinished; a node whose count reaches zero is spawned at once,
//! so it never waits on an unrelated node. Each node's result is looked up in
//! the cache by fingerprint before it runs. A failure skips the node's
//! descendants only; independent branches finish.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use petgraph::graph::NodeIndex;
use petgraph::Direction;

use crate::cache::{Cache, CacheError, Entry, Out};
use crate::context::{CancelToken, Observer};
use crate::device::device_name;
use crate::error::{EngineError, NodeError};
use crate::fingerprint::{fingerprint, hash_path, node_seed, FingerprintInput};
use crate::ids::PortName;
use crate::invoke::{invoke, Invocation};
use crate::plan::{Outlet, Plan, PlanNode};
use crate::report::{NodeReport, Status};
use crate::settings::SettingType;
use crate::store::Store;
use crate::value::Value;

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

/// Results by fingerprint, kept in memory for the runs that share it: a
/// value one trial of a sweep computed or loaded is the next trial's
/// without reading the cache again.
#[derive(Default)]
pub struct Memo(Mutex<std::collections::HashMap<String, NodeOutputs>>);

impl Memo {
    fn get(&self, fingerprint: &str) -> Option<NodeOutputs> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(fingerprint)
            .cloned()
    }

    fn keep(&self, fingerprint: &str, outputs: &NodeOutputs) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fingerprint.to_string(), outputs.clone());
    }
}

/// An output value: in memory, or in a cache entry and loaded on first use.
pub struct Handle {
    hash: String,
    value: OnceLock<Value>,
    source: Option<(Arc<Entry>, PortName)>,
}

impl Handle {
    fn memory(value: Value) -> Self {
        Handle {
            hash: value.content_hash().to_string(),
            value: OnceLock::from(value),
            source: None,
        }
    }

    /// The value's content hash (known without loading it).
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The value, loaded from the cache if needed.
    pub fn get(&self) -> Result<&Value, NodeError> {
        if let Some(v) = self.value.get() {
            return Ok(v);
        }
        let (entry, port) = self
            .source
            .as_ref()
            .ok_or_else(|| NodeError::new("value is neither in memory nor in the cache"))?;
        let loaded = entry
            .load(port)
            .map_err(|e| NodeError::caused_by(e.to_string(), e))?;
        Ok(self.value.get_or_init(|| loaded))
    }
}

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

type NodeOutputs = Vec<(PortName, Arc<Handle>)>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    CacheOnly,
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
            execute(plan, node, inputs, mode, shared)
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

/// A report for `node`, nothing measured yet.
fn report_of(node: &PlanNode, status: Status) -> NodeReport {
    NodeReport::new(
        node.id.as_str(),
        node.spec.name,
        node.device.to_string(),
        status,
    )
}

/// A node that did not run, and why.
fn left_out(node: &PlanNode, status: Status, why: &str) -> NodeReport {
    NodeReport {
        error: Some(why.to_string()),
        ..report_of(node, status)
    }
}

fn execute(
    plan: &Plan,
    node: &PlanNode,
    inputs: Vec<(PortName, Vec<Arc<Handle>>)>,
    mode: Mode,
    shared: &Shared<'_>,
) -> (NodeReport, Option<NodeOutputs>) {
    let t0 = Instant::now();
    let mut report = report_of(node, Status::Failed);
    let result = execute_inner(plan, node, inputs, mode, shared, &mut report);
    report.seconds = t0.elapsed().as_secs_f64();
    match result {
        Ok((status, outs)) => {
            report.status = status;
            (report, Some(outs))
        }
        Err(e) => {
            report.error = Some(e.to_string());
            (report, None)
        }
    }
}

fn execute_inner(
    plan: &Plan,
    node: &PlanNode,
    inputs: Vec<(PortName, Vec<Arc<Handle>>)>,
    mode: Mode,
    shared: &Shared<'_>,
    report: &mut NodeReport,
) -> Result<(Status, NodeOutputs), NodeError> {
    let (cache, out, opts) = (&shared.cache, &shared.out, shared.opts);
    let store_failed = |e: CacheError| NodeError::caused_by(e.to_string(), e);
    let device = node
        .device
        .resolve()
        .map_err(|e| NodeError::caused_by(e.to_string(), e))?;
    report.device = device_name(&device);
    let seed = node_seed(plan.seed, node.id.as_str());
    let read: Vec<(PathBuf, String)> = node
        .files
        .iter()
        .map(|p| Ok((p.clone(), hash_path(p)?)))
        .collect::<Result<_, crate::fingerprint::HashError>>()
        .map_err(|e| NodeError::caused_by(e.to_string(), e))?;
    let files: Vec<String> = read.iter().map(|(_, h)| h.clone()).collect();
    let input_hashes: Vec<(String, Vec<String>)> = inputs
        .iter()
        .map(|(p, hs)| {
            (
                p.to_string(),
                hs.iter().map(|h| h.hash().to_string()).collect(),
            )
        })
        .collect();
    // Written paths enter the fingerprint as written (relative to whichever
    // output folder the run has), so a result is the same on every machine.
    let write_names: Vec<String> = node
        .spec
        .settings
        .iter()
        .filter(|s| s.ty == SettingType::OutputPath)
        .filter_map(|s| node.settings.get(s.name).and_then(|v| v.as_str()))
        .map(str::to_string)
        .collect();
    let writes: Vec<PathBuf> = write_names.iter().map(|p| opts.out_dir.join(p)).collect();
    let fp = fingerprint(&FingerprintInput {
        kind: node.spec.name,
        version: node.spec.version,
        settings: &node.written_settings,
        seed,
        device: &report.device,
        inputs: &input_hashes,
        files: &files,
        writes: &write_names,
    });
    report.fingerprint = Some(fp.clone());
    let cacheable = node.cache && !node.spec.side_effects;
    // `--only` with `--no-cache` re-runs the one node; what it depends on still comes from the cache.
    let may_reuse = match opts.cache {
        CacheMode::Use | CacheMode::Probe => true,
        CacheMode::Refresh => mode == Mode::CacheOnly,
        CacheMode::Off => false,
    };
    // Not a node that writes files: each run's output folder must get them.
    let memo = opts
        .memo
        .as_deref()
        .filter(|_| cacheable && may_reuse && write_names.is_empty());
    let found = |cache: &Cache| -> Result<Option<(Status, NodeOutputs)>, NodeError> {
        if let Some(outs) = memo.and_then(|m| m.get(&fp)) {
            return Ok(Some((Status::Cached, outs)));
        }
        let Some(entry) = cache.lookup(&fp, out).map_err(store_failed)? else {
            return Ok(None);
        };
        let entry = Arc::new(entry);
        let outs = entry
            .outputs()
            .map(|(port, hash)| {
                let handle = Handle {
                    hash: hash.to_string(),
                    value: OnceLock::new(),
                    source: Some((entry.clone(), port.clone())),
                };
                (port, Arc::new(handle))
            })
            .collect();
        if let Some(m) = memo {
            m.keep(&fp, &outs);
        }
        Ok(Some((Status::Cached, outs)))
    };
    if cacheable && may_reuse {
        if let Some(hit) = found(cache)? {
            return Ok(hit);
        }
    }
    if opts.cache == CacheMode::Probe {
        return Err(NodeError::new("its result is not in the cache"));
    }
    if mode == Mode::CacheOnly {
        return Err(NodeError::new(
            "its result is not in the cache, and `--only` runs one node: run with `--until` to compute what it needs",
        ));
    }
    // Another run in this process computing the same result (a sweep's
    // trials sharing a prefix): wait for it, then take it from the cache.
    let _claim = if cacheable && may_reuse && opts.cache != CacheMode::Off {
        loop {
            if let Some(claim) = cache.claim(&fp) {
                // It may have been stored between the lookup and the claim.
                if let Some(hit) = found(cache)? {
                    return Ok(hit);
                }
                break Some(claim);
            }
            if let Some(hit) = found(cache)? {
                return Ok(hit);
            }
        }
    } else {
        None
    };
    if opts.cancel.is_cancelled() {
        return Err(NodeError::new("cancelled"));
    }
    let mut values = Vec::with_capacity(inputs.len());
    for (port, handles) in &inputs {
        let mut vs = Vec::with_capacity(handles.len());
        for h in handles {
            vs.push(h.get()?.to_device(&device)?);
        }
        values.push((port.clone(), vs));
    }
    opts.observer.node_started(&node.id, node.spec.name);
    let produced = invoke(
        plan,
        node,
        values,
        Invocation {
            device,
            seed,
            files: &read,
            out_dir: &opts.out_dir,
            cancel: &opts.cancel,
            observer: opts.observer.as_ref(),
        },
    )?;
    let written: Vec<PathBuf> = writes.into_iter().filter(|p| p.exists()).collect();
    for file in &written {
        out.publish(file).map_err(store_failed)?;
    }
    if cacheable && opts.cache != CacheMode::Off {
        let stored = cache.store(&fp, node.spec.name, &produced, &written, out);
        match stored {
            // A store the user named that fails is the run's failure, not a warning.
            Err(e @ CacheError::Store(_)) if opts.stores.cache.is_some() => {
                return Err(store_failed(e))
            }
            Err(e) => tracing::warn!("node `{}`: result not cached: {e}", node.id),
            Ok(()) => {}
        }
    }
    let outs: NodeOutputs = produced
        .into_iter()
        .map(|(port, value)| (port, Arc::new(Handle::memory(value))))
        .collect();
    if let Some(m) = memo {
        m.keep(&fp, &outs);
    }
    Ok((Status::Ran, outs))
}
