//! What the live view shows, kept up to date from the engine's `Observer`
//! (the same events the terminal's bars draw from) and watch mode's events:
//! the graph and its layout, each node's status, time, settings,
//! fingerprint, why it re-ran and its outputs; the curves of training
//! nodes; validation problems; the plots a run wrote. Every change is also
//! sent as one JSON event to the pages watching.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use kiln_engine::{EngineError, NodeId, NodeReport, Observer, Plan, Progress, RunReport, Status};
use serde_json::{json, Value as Json};
use tokio::sync::broadcast;

/// Points kept per curve (a long run keeps its first and latest ones).
const MAX_POINTS: usize = 5_000;

/// The live state and the stream of its changes.
pub struct Board {
    state: Mutex<State>,
    events: broadcast::Sender<Json>,
}

#[derive(Default)]
struct State {
    pipeline: String,
    file: String,
    layout: Json,
    /// What the layout was computed for: node ids and edges.
    shape: String,
    /// Node id → its view (`kind`, `status`, `seconds`, `settings`, …).
    nodes: BTreeMap<String, Json>,
    /// Node id → points `{step, <name>: value}`.
    curves: BTreeMap<String, Vec<Json>>,
    /// Validation problems of the last save (empty when it was valid).
    problems: Vec<String>,
    run: u64,
    running: bool,
    summary: String,
    changed: Vec<String>,
    /// Plots written under the output folder, relative to it.
    images: Vec<String>,
    out_dir: PathBuf,
    /// The last finished run's settings and fingerprint per node, to say
    /// why a node re-ran.
    before: BTreeMap<String, (Json, Option<String>)>,
    /// Producers of each node, by id.
    producers: BTreeMap<String, Vec<String>>,
}

impl Board {
    /// An empty board.
    pub fn new() -> Arc<Board> {
        Arc::new(Board {
            state: Mutex::new(State::default()),
            events: broadcast::channel(4096).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, event: Json) {
        // No page watching is fine.
        let _ = self.events.send(event);
    }

    /// A receiver of every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Json> {
        self.events.subscribe()
    }

    /// The whole state, as a page loads it.
    pub fn snapshot(&self) -> Json {
        self.lock().to_json()
    }

    /// The folder plots are served from.
    pub fn out_dir(&self) -> PathBuf {
        self.lock().out_dir.clone()
    }

    /// A run of `plan` starts (after `changed` files; none for the first).
    pub fn started(&self, plan: &Plan, changed: &[PathBuf], out_dir: &Path) {
        let snapshot = {
            let mut s = self.lock();
            // Laid out again only when the graph's shape changed.
            let shape = graph_shape(plan);
            if s.shape != shape {
                s.layout = super::layout::layout(plan);
                s.shape = shape;
            }
            s.pipeline = plan.name.to_string();
            s.file = plan.file.display().to_string();
            s.out_dir = out_dir.to_path_buf();
            s.run += 1;
            s.running = true;
            s.problems.clear();
            s.summary.clear();
            s.changed = changed.iter().map(|p| p.display().to_string()).collect();
            s.producers = plan
                .nodes
                .iter()
                .map(|n| {
                    let mut producers: Vec<String> = n
                        .inputs
                        .iter()
                        .flat_map(|(_, outlets)| outlets)
                        .map(|o| plan.node(o.node).id.to_string())
                        .collect();
                    producers.dedup();
                    (n.id.to_string(), producers)
                })
                .collect();
            let previous = std::mem::take(&mut s.nodes);
            s.nodes = plan
                .nodes
                .iter()
                .map(|n| {
                    let id = n.id.to_string();
                    let settings = n.written_settings.clone();
                    let mut view = json!({
                        "id": id, "kind": n.spec.name, "status": "pending",
                        "settings": settings, "device": n.device.to_string(),
                    });
                    // Keep the last outputs until new ones come.
                    if let Some(old) = previous.get(&id) {
                        view["outputs"] = old["outputs"].clone();
                    }
                    (id, view)
                })
                .collect();
            s.to_json()
        };
        self.send(json!({ "type": "state", "state": snapshot }));
    }

    /// The saved file is invalid: its problems, one line each with
    /// `file:line:col`; the last good graph stays.
    pub fn invalid(&self, error: &EngineError) {
        let problems: Vec<String> = error
            .to_string()
            .lines()
            .map(str::to_string)
            .filter(|l| !l.trim().is_empty())
            .collect();
        self.lock().problems = problems.clone();
        self.send(json!({ "type": "invalid", "problems": problems }));
    }

    /// A run ended, with `summary` (the line the terminal prints).
    pub fn finished(&self, plan: &Plan, report: &RunReport, summary: String, cancelled: bool) {
        let (summary, images) = {
            let mut s = self.lock();
            s.running = false;
            s.summary = summary;
            for n in &plan.nodes {
                let outputs = outputs_of(plan, report, n.id.as_str());
                if let Some(view) = s.nodes.get_mut(n.id.as_str()) {
                    view["outputs"] = outputs;
                }
                // A training node taken from the cache reported nothing:
                // its curves come from the history it recorded.
                if !s.curves.contains_key(n.id.as_str()) {
                    if let Some(points) = history_points(plan, report, n.id.as_str()) {
                        s.curves.insert(n.id.to_string(), points);
                    }
                }
            }
            if !cancelled {
                s.before = report
                    .nodes
                    .iter()
                    .map(|r| {
                        let settings = s
                            .nodes
                            .get(&r.id)
                            .map_or(Json::Null, |v| v["settings"].clone());
                        (r.id.clone(), (settings, r.fingerprint.clone()))
                    })
                    .collect();
            }
            s.images = plots(&s.out_dir);
            (s.summary.clone(), s.images.clone())
        };
        let (outputs, curves) = {
            let s = self.lock();
            let outputs: serde_json::Map<String, Json> = s
                .nodes
                .iter()
                .map(|(id, v)| (id.clone(), v["outputs"].clone()))
                .collect();
            (outputs, json!(s.curves))
        };
        self.send(json!({
            "type": "finished", "summary": summary, "images": images,
            "outputs": outputs, "curves": curves,
        }));
    }
}

impl State {
    fn to_json(&self) -> Json {
        json!({
            "pipeline": self.pipeline, "file": self.file, "layout": self.layout,
            "nodes": self.nodes, "curves": self.curves, "problems": self.problems,
            "run": self.run, "running": self.running, "summary": self.summary,
            "changed": self.changed, "images": self.images,
        })
    }

    /// Why `id` ran: a setting that changed, a producer that ran, or no
    /// earlier result.
    fn reason(&self, id: &str, ran: &[String]) -> String {
        let Some((settings, fingerprint)) = self.before.get(id) else {
            return "first run of this node here: its result was not in the cache".into();
        };
        let now = self.nodes.get(id).map_or(&Json::Null, |v| &v["settings"]);
        if let (Some(old), Some(new)) = (settings.as_object(), now.as_object()) {
            let changed: Vec<String> = new
                .iter()
                .filter(|(k, v)| old.get(*k) != Some(*v))
                .map(|(k, v)| match old.get(k) {
                    Some(o) => format!("setting `{k}` changed: {o} → {v}"),
                    None => format!("setting `{k}` added: {v}"),
                })
                .chain(
                    old.keys()
                        .filter(|k| !new.contains_key(*k))
                        .map(|k| format!("setting `{k}` removed")),
                )
                .collect();
            if !changed.is_empty() {
                return changed.join("; ");
            }
        }
        let inputs: Vec<&String> = self
            .producers
            .get(id)
            .into_iter()
            .flatten()
            .filter(|p| ran.contains(p))
            .collect();
        if !inputs.is_empty() {
            let names: Vec<String> = inputs.iter().map(|p| format!("`{p}`")).collect();
            return format!(
                "its input changed: {} ran again and gave a new value",
                names.join(", ")
            );
        }
        if fingerprint.is_some() {
            "a file it reads changed, or its cache entry was missing".into()
        } else {
            "it had no result before".into()
        }
    }
}

/// The graph's nodes and edges, as one string to compare.
fn graph_shape(plan: &Plan) -> String {
    let mut shape = plan.name.to_string();
    for n in &plan.nodes {
        shape.push('\n');
        shape.push_str(n.id.as_str());
        for (_, outlets) in &n.inputs {
            for o in outlets {
                shape.push(' ');
                shape.push_str(plan.node(o.node).id.as_str());
            }
        }
    }
    shape
}

/// Output summaries of node `id`: type and content hash of each output,
/// and the figures of metrics.
fn outputs_of(plan: &Plan, report: &RunReport, id: &str) -> Json {
    let Some(idx) = plan.index_of(id) else {
        return Json::Null;
    };
    let node = plan.node(idx);
    let mut out = serde_json::Map::new();
    for (port, ty) in &node.outputs {
        let outlet = kiln_engine::Outlet {
            node: idx,
            port: port.clone(),
        };
        let Some(handle) = report.value(&outlet) else {
            continue;
        };
        let mut summary =
            json!({ "type": ty.name(), "hash": &handle.hash()[..16.min(handle.hash().len())] });
        if matches!(ty.name(), "metrics") {
            if let Ok(value) = handle.get() {
                summary["value"] = value.meta().clone();
            }
        }
        out.insert(port.to_string(), summary);
    }
    Json::Object(out)
}

/// The points of a `history` output (per-epoch lists by name, as
/// `train.supervised` records them), if node `id` has one.
fn history_points(plan: &Plan, report: &RunReport, id: &str) -> Option<Vec<Json>> {
    let idx = plan.index_of(id)?;
    let port = plan
        .node(idx)
        .outputs
        .iter()
        .find(|(p, _)| p.as_str() == "history")?
        .0
        .clone();
    let history = report
        .value(&kiln_engine::Outlet { node: idx, port })?
        .get()
        .ok()?
        .meta()
        .clone();
    let steps = history.get("epoch")?.as_array()?;
    let points = steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let mut point = serde_json::Map::new();
            point.insert("step".into(), step.clone());
            for name in ["train_loss", "valid_loss", "valid_accuracy"] {
                if let Some(v) = history
                    .get(name)
                    .and_then(|l| l.get(i))
                    .filter(|v| v.is_number())
                {
                    point.insert(name.into(), v.clone());
                }
            }
            Json::Object(point)
        })
        .collect::<Vec<_>>();
    (!points.is_empty()).then_some(points)
}

/// `.png` and `.svg` files under `dir`, relative to it.
fn plots(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".png") || name.ends_with(".svg") {
            found.push(name);
        }
    }
    found.sort();
    found
}

/// The board as an engine observer.
pub struct BoardObserver(pub Arc<Board>);

impl Observer for BoardObserver {
    fn node_started(&self, node: &NodeId, _: &str) {
        let id = node.to_string();
        // When it started (Unix milliseconds), for the time shown while it runs.
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        {
            let mut s = self.0.lock();
            s.curves.remove(&id);
            if let Some(view) = s.nodes.get_mut(&id) {
                view["status"] = json!("running");
                view["since"] = json!(since);
            }
        }
        self.0
            .send(json!({ "type": "node", "id": id, "status": "running", "since": since }));
    }

    fn progress(&self, node: &NodeId, p: &Progress) {
        let id = node.to_string();
        let mut point = serde_json::Map::new();
        point.insert("step".into(), json!(p.done));
        for (k, v) in &p.values {
            point.insert(k.clone(), json!(v));
        }
        let point = Json::Object(point);
        if !p.values.is_empty() {
            let mut s = self.0.lock();
            let curve = s.curves.entry(id.clone()).or_default();
            if curve.len() >= MAX_POINTS {
                curve.remove(1);
            }
            curve.push(point.clone());
        }
        self.0.send(json!({
            "type": "progress", "id": id, "done": p.done, "total": p.total,
            "message": p.message, "point": if p.values.is_empty() { Json::Null } else { point },
        }));
    }

    fn node_finished(&self, r: &NodeReport) {
        let event = {
            let mut s = self.0.lock();
            let ran: Vec<String> = s
                .nodes
                .values()
                .filter(|v| v["status"] == "ran")
                .filter_map(|v| v["id"].as_str().map(String::from))
                .collect();
            let reason = (r.status == Status::Ran).then(|| s.reason(&r.id, &ran));
            let event = json!({
                "type": "node", "id": r.id, "status": r.status.as_str(), "seconds": r.seconds,
                "fingerprint": r.fingerprint, "error": r.error, "reason": reason,
            });
            if let Some(view) = s.nodes.get_mut(&r.id) {
                for key in ["status", "seconds", "fingerprint", "error", "reason"] {
                    view[key] = event[key].clone();
                }
            }
            event
        };
        self.0.send(event);
    }
}
