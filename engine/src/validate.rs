//! Whole-pipeline validation: kinds, settings, references, port types,
//! cycles and devices, every problem collected. The result is a [`Plan`]
//! ready to run. Reads no data file, allocates no tensor, never panics.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::Value as Json;

use crate::device::DeviceSpec;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::ids::{did_you_mean, NodeId, PipelineName, PortName, PortRef};
use crate::kind::{InputTypes, KindRef, KindSpec, OutputTypes};
use crate::load::{Declaration, NodeDecl};
use crate::params::substitute;
use crate::registry::{Registered, Registry};
use crate::serve::ServeSpec;
use crate::settings::{SettingDefault, SettingType, Settings};
use crate::yaml::Pos;

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

/// Validates a declaration against the registry. `overrides` are
/// `--set params.NAME=VALUE` values. Returns a plan when no problem was found.
pub fn validate(
    decl: &Declaration,
    registry: &Registry,
    overrides: &[(String, Json)],
    file: &Path,
    diags: &mut Diagnostics,
) -> Option<Plan> {
    let base_dir = file
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let params = params(decl, overrides, diags);
    let default_device = decl.device.as_ref().map_or(DeviceSpec::Cpu, |d| d.value);
    let mut devices_checked: HashMap<DeviceSpec, Option<String>> = HashMap::new();
    if let Some(d) = &decl.device {
        if let Err(e) = d.value.check_available() {
            diags.push(Diagnostic::at(d.pos, e.clone()));
            devices_checked.insert(d.value, Some(e));
        }
    }

    let ids: Vec<&str> = decl.nodes.iter().map(|n| n.id.as_str()).collect();
    let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    // Which node depends on which, before ports are resolved (they need the
    // producers' output types, computed in topological order below).
    let mut deps: DiGraph<NodeId, ()> = DiGraph::new();
    for n in &decl.nodes {
        deps.add_node(n.id.clone());
    }

    // Kinds and settings, node by node.
    let mut kinds: Vec<Option<&Registered>> = Vec::new();
    let mut checked: Vec<Option<CheckedNode>> = Vec::new();
    for n in &decl.nodes {
        kinds.push(n.kind.as_ref().and_then(|k| registry.get(&k.value)));
        checked.push(check_node(n, registry, &params, &base_dir, diags));
        if let Some(d) = &n.device {
            let problem = devices_checked
                .entry(d.value)
                .or_insert_with(|| d.value.check_available().err());
            if let Some(e) = problem {
                diags.push(Diagnostic::at(d.pos, e.clone()).in_node(n.id.as_str()));
            }
        }
    }

    // References become edges.
    for (i, n) in decl.nodes.iter().enumerate() {
        for input in &n.inputs {
            for r in &input.refs {
                match index.get(r.value.node.as_str()) {
                    Some(&from) => {
                        deps.add_edge(NodeIndex::new(from), NodeIndex::new(i), ());
                    }
                    None => diags.push(
                        missing_node(r.pos, &r.value, &input.port.value, &ids)
                            .in_node(n.id.as_str()),
                    ),
                }
            }
        }
    }

    let cyclic = report_cycles(&deps, decl, diags);
    let mut outs: Vec<Option<OutputTypes>> = vec![None; decl.nodes.len()];
    let mut inputs: Vec<Vec<(PortName, Vec<Outlet>)>> = vec![Vec::new(); decl.nodes.len()];
    if !cyclic {
        let order = petgraph::algo::toposort(&deps, None).unwrap_or_default();
        for idx in order {
            let i = idx.index();
            // A node whose settings are invalid still has its inputs checked and
            // its declared ports known, so problems downstream are reported too.
            let Some(reg) = kinds[i] else {
                continue;
            };
            let n = &decl.nodes[i];
            let Some((types, wired, complete)) = check_inputs(n, &reg.spec, &index, &outs, diags)
            else {
                continue;
            };
            let computed = match &checked[i] {
                Some((kind, spec, settings, _, _)) if complete => {
                    kind.output_types(spec, &types, settings)
                }
                _ => Ok(reg
                    .spec
                    .outputs
                    .iter()
                    .map(|o| (o.name.clone(), o.ty))
                    .collect()),
            };
            match computed {
                Ok(o) => outs[i] = Some(o),
                Err(e) => diags.push(Diagnostic::at(n.pos, e).in_node(n.id.as_str())),
            }
            inputs[i] = wired;
        }
    }

    let mut outputs = Vec::new();
    for r in &decl.outputs {
        let Some(&from) = index.get(r.value.node.as_str()) else {
            diags.push(missing_node(r.pos, &r.value, "outputs", &ids));
            continue;
        };
        if let Some(o) = &outs[from] {
            match resolve_port(&r.value, o, &decl.nodes[from].id) {
                Ok((port, _)) => outputs.push(Outlet {
                    node: NodeIndex::new(from),
                    port,
                }),
                Err(e) => diags.push(Diagnostic::at(r.pos, format!("`outputs`: {e}"))),
            }
        }
    }

    let serve = decl
        .serve
        .as_ref()
        .and_then(|s| serve_spec(s, decl, &kinds, registry, &index, &ids, &outs, &deps, diags));

    if !diags.is_empty() {
        diags.sort();
        return None;
    }
    let name = decl.name.as_ref()?.value.clone();
    let mut nodes = Vec::new();
    for (i, n) in decl.nodes.iter().enumerate() {
        let (kind, spec, settings, written, files) = checked[i].clone()?;
        nodes.push(PlanNode {
            id: n.id.clone(),
            kind,
            spec,
            settings,
            written_settings: written,
            inputs: std::mem::take(&mut inputs[i]),
            outputs: outs[i].clone()?,
            device: n.device.as_ref().map_or(default_device, |d| d.value),
            cache: n.cache,
            files,
        });
    }
    // The plan's graph: edges carry the resolved ports.
    let mut graph = DiGraph::new();
    for n in &nodes {
        graph.add_node(n.id.clone());
    }
    for (i, n) in nodes.iter().enumerate() {
        for (port, outlets) in &n.inputs {
            for o in outlets {
                graph.add_edge(o.node, NodeIndex::new(i), (o.port.clone(), port.clone()));
            }
        }
    }
    Some(Plan {
        name,
        description: decl.description.clone(),
        file: file.to_path_buf(),
        base_dir,
        seed: decl.seed,
        params,
        nodes,
        graph,
        outputs,
        serve,
    })
}

/// Checks the `serve:` block: the input takes requests, the output exists
/// and depends on the input.
#[allow(clippy::too_many_arguments)]
fn serve_spec(
    s: &crate::load::ServeDecl,
    decl: &Declaration,
    kinds: &[Option<&Registered>],
    registry: &Registry,
    index: &HashMap<&str, usize>,
    ids: &[&str],
    outs: &[Option<OutputTypes>],
    deps: &DiGraph<NodeId, ()>,
    diags: &mut Diagnostics,
) -> Option<ServeSpec> {
    let takers: Vec<&str> = registry
        .iter()
        .filter(|r| r.kind.takes_requests())
        .map(|r| r.spec.name)
        .collect();
    let input = s.input.as_ref().and_then(|i| {
        let Some(&at) = index.get(i.value.as_str()) else {
            let hint = did_you_mean(i.value.as_str(), ids.iter().copied())
                .map(|m| format!(" (did you mean `{m}`?)"))
                .unwrap_or_default();
            diags.push(Diagnostic::at(
                i.pos,
                format!(
                    "`serve.input` refers to `{}`, but there is no node `{}`{hint}",
                    i.value, i.value
                ),
            ));
            return None;
        };
        match kinds[at] {
            Some(reg) if !reg.kind.takes_requests() => {
                diags.push(Diagnostic::at(
                    i.pos,
                    format!(
                        "`serve.input` must be a node that takes requests ({}), but `{}` is a `{}`",
                        takers.join(", "),
                        i.value,
                        reg.spec.name
                    ),
                ));
                None
            }
            Some(_) => Some(at),
            None => None,
        }
    });
    let output = s.output.as_ref().and_then(|r| {
        let Some(&at) = index.get(r.value.node.as_str()) else {
            diags.push(missing_node(r.pos, &r.value, "serve.output", ids));
            return None;
        };
        let produced = outs[at].as_ref()?;
        match resolve_port(&r.value, produced, &decl.nodes[at].id) {
            Ok((port, _)) => Some((
                r.pos,
                Outlet {
                    node: NodeIndex::new(at),
                    port,
                },
            )),
            Err(e) => {
                diags.push(Diagnostic::at(r.pos, format!("`serve.output`: {e}")));
                None
            }
        }
    });
    let (input, (pos, output)) = (input?, output?);
    if !petgraph::algo::has_path_connecting(deps, NodeIndex::new(input), output.node, None) {
        diags.push(Diagnostic::at(
            pos,
            format!(
                "`serve.output` `{}` does not depend on `serve.input` `{}`: name a node downstream of it",
                decl.nodes[output.node.index()].id,
                decl.nodes[input].id
            ),
        ));
        return None;
    }
    Some(ServeSpec {
        input: NodeIndex::new(input),
        output,
        max_batch: s.max_batch,
        max_wait_ms: s.max_wait_ms,
        max_rows: s.max_rows,
    })
}

fn params(
    decl: &Declaration,
    overrides: &[(String, Json)],
    diags: &mut Diagnostics,
) -> IndexMap<String, Json> {
    let mut params: IndexMap<String, Json> = decl
        .params
        .iter()
        .map(|(k, v)| (k.value.clone(), v.to_json()))
        .collect();
    for (name, value) in overrides {
        match params.get_mut(name) {
            Some(slot) => *slot = value.clone(),
            None => {
                let hint = did_you_mean(name, decl.params.iter().map(|(k, _)| k.value.as_str()))
                    .map(|m| format!(" (did you mean `{m}`?)"))
                    .unwrap_or_default();
                diags.push(Diagnostic {
                    pos: None,
                    node: None,
                    message: format!(
                        "`--set params.{name}`: the pipeline has no param `{name}`{hint}"
                    ),
                });
            }
        }
    }
    params
}

type CheckedNode = (KindRef, Arc<KindSpec>, Settings, Json, Vec<PathBuf>);

fn check_node(
    n: &NodeDecl,
    registry: &Registry,
    params: &IndexMap<String, Json>,
    base_dir: &Path,
    diags: &mut Diagnostics,
) -> Option<CheckedNode> {
    let node = n.id.as_str();
    let kind_name = n.kind.as_ref()?;
    let Some(reg) = registry.get(&kind_name.value) else {
        let hint = did_you_mean(&kind_name.value, registry.names())
            .map(|m| format!(" (did you mean `{m}`?)"))
            .unwrap_or_else(|| " (run `kiln nodes` for the list)".to_string());
        diags.push(
            Diagnostic::at(
                kind_name.pos,
                format!("unknown kind `{}`{hint}", kind_name.value),
            )
            .in_node(node),
        );
        return None;
    };
    let spec = &reg.spec;
    let mut values: BTreeMap<String, Json> = BTreeMap::new();
    let mut ok = true;
    for (key, doc) in &n.settings {
        let Some(setting) = spec.setting(&key.value) else {
            let hint = did_you_mean(&key.value, spec.settings.iter().map(|s| s.name))
                .map(|m| format!(" (did you mean `{m}`?)"))
                .unwrap_or_else(|| {
                    if spec.settings.is_empty() {
                        format!(" (`{}` has no settings)", spec.name)
                    } else {
                        format!(
                            " (`{}` takes: {})",
                            spec.name,
                            spec.settings
                                .iter()
                                .map(|s| s.name)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                });
            diags.push(
                Diagnostic::at(key.pos, format!("unknown setting `{}`{hint}", key.value))
                    .in_node(node),
            );
            ok = false;
            continue;
        };
        let mut problems = Vec::new();
        let value = substitute(doc, params, &mut problems);
        if !problems.is_empty() {
            for p in problems {
                diags.push(
                    Diagnostic::at(p.pos, format!("setting `{}`: {}", key.value, p.message))
                        .in_node(node),
                );
            }
            ok = false;
            continue;
        }
        if let Err(e) = setting.ty.check(&value) {
            diags.push(
                Diagnostic::at(doc.pos, format!("setting `{}`: {e}", key.value)).in_node(node),
            );
            ok = false;
            continue;
        }
        values.insert(key.value.clone(), value);
    }
    for setting in &spec.settings {
        if values.contains_key(setting.name)
            || n.settings.iter().any(|(k, _)| k.value == setting.name)
        {
            continue;
        }
        match &setting.default {
            SettingDefault::Required => {
                diags.push(
                    Diagnostic::at(
                        n.pos,
                        format!(
                            "the required setting `{}` is missing ({}: {})",
                            setting.name, setting.ty, setting.doc
                        ),
                    )
                    .in_node(node),
                );
                ok = false;
            }
            SettingDefault::Optional => {
                values.insert(setting.name.to_string(), Json::Null);
            }
            SettingDefault::Value(v) => {
                values.insert(setting.name.to_string(), v.clone());
            }
        }
    }
    // Settings that passed are checked against each other even when others
    // failed, so every problem shows at once.
    let written = Json::Object(values.clone().into_iter().collect());
    let mut settings = Settings::from_map(values);
    let mut files = Vec::new();
    for setting in spec
        .settings
        .iter()
        .filter(|s| s.ty == SettingType::InputPath)
    {
        let Some(Json::String(p)) = settings.get(setting.name) else {
            continue;
        };
        let path = crate::data::resolve(base_dir, p);
        if !path.exists() {
            let pos = n
                .settings
                .iter()
                .find(|(k, _)| k.value == setting.name)
                .map_or(n.pos, |(_, d)| d.pos);
            let hint = if crate::data::in_folder(p).is_some() {
                format!(
                    "it is in the kiln data folder: fetch it with `{}`, or set KILN_DATA to a folder that has it",
                    crate::data::FETCH_COMMAND
                )
            } else {
                "paths are relative to the pipeline file".to_string()
            };
            diags.push(
                Diagnostic::at(
                    pos,
                    format!(
                        "setting `{}`: `{p}` does not exist (looked for `{}`; {hint})",
                        setting.name,
                        path.display()
                    ),
                )
                .in_node(node),
            );
            ok = false;
        }
        files.push(path);
    }
    settings.resolve_paths(&spec.settings, base_dir);
    for (setting, problem) in reg.kind.check(&settings) {
        let pos = n
            .settings
            .iter()
            .find(|(k, _)| k.value == setting)
            .map_or(n.pos, |(_, d)| d.pos);
        diags.push(Diagnostic::at(pos, format!("setting `{setting}`: {problem}")).in_node(node));
        ok = false;
    }
    ok.then(|| (reg.kind.clone(), reg.spec.clone(), settings, written, files))
}

/// Input types, wiring, and whether every producer's outputs were known.
type Wired = (InputTypes, Vec<(PortName, Vec<Outlet>)>, bool);

fn check_inputs(
    n: &NodeDecl,
    spec: &KindSpec,
    index: &HashMap<&str, usize>,
    outs: &[Option<OutputTypes>],
    diags: &mut Diagnostics,
) -> Option<Wired> {
    let node = n.id.as_str();
    let mut ok = true;
    let mut complete = true;
    let mut types = InputTypes::new();
    let mut wired = Vec::new();
    for input in &n.inputs {
        let Some(port) = spec.input(&input.port.value) else {
            let hint = did_you_mean(
                &input.port.value,
                spec.inputs.iter().map(|p| p.name.as_str()),
            )
            .map(|m| format!(" (did you mean `{m}`?)"))
            .unwrap_or_else(|| {
                let names: Vec<&str> = spec.inputs.iter().map(|p| p.name.as_str()).collect();
                if names.is_empty() {
                    format!(" (`{}` takes no inputs)", spec.name)
                } else {
                    format!(" (`{}` takes: {})", spec.name, names.join(", "))
                }
            });
            diags.push(
                Diagnostic::at(
                    input.port.pos,
                    format!("unknown input `{}`{hint}", input.port.value),
                )
                .in_node(node),
            );
            ok = false;
            continue;
        };
        if input.refs.len() > 1 && !port.multiple {
            diags.push(
                Diagnostic::at(
                    input.port.pos,
                    format!(
                        "input `{}` takes one reference, but {} are given",
                        port.name,
                        input.refs.len()
                    ),
                )
                .in_node(node),
            );
            ok = false;
            continue;
        }
        let mut port_types = Vec::new();
        let mut outlets = Vec::new();
        for r in &input.refs {
            let Some(&from) = index.get(r.value.node.as_str()) else {
                continue;
            };
            let Some(produced) = &outs[from] else {
                // The producer has problems of its own, reported there.
                complete = false;
                continue;
            };
            match resolve_port(&r.value, produced, &r.value.node) {
                Ok((out_port, ty)) => {
                    if !port.takes(ty) {
                        diags.push(
                            Diagnostic::at(
                                r.pos,
                                format!(
                                    "input `{}` takes a {}, but `{}` gives a {ty}",
                                    port.name,
                                    port.types_shown(),
                                    r.value
                                ),
                            )
                            .in_node(node),
                        );
                        ok = false;
                    }
                    port_types.push(ty);
                    outlets.push(Outlet {
                        node: NodeIndex::new(from),
                        port: out_port,
                    });
                }
                Err(e) => {
                    diags.push(
                        Diagnostic::at(r.pos, format!("input `{}`: {e}", port.name)).in_node(node),
                    );
                    ok = false;
                }
            }
        }
        if !input.refs.is_empty() {
            types.insert(port.name.clone(), port_types);
            wired.push((port.name.clone(), outlets));
        }
    }
    for port in spec.inputs.iter().filter(|p| p.required) {
        if !n
            .inputs
            .iter()
            .any(|i| i.port.value == port.name.as_str() && !i.refs.is_empty())
        {
            diags.push(
                Diagnostic::at(
                    n.pos,
                    format!("the required input `{}` ({}) is not connected: add `inputs: {{ {}: <node> }}`", port.name, port.ty, port.name),
                )
                .in_node(node),
            );
            ok = false;
        }
    }
    ok.then_some((types, wired, complete))
}

/// Finds the output port a reference names (or the default one).
fn resolve_port(
    r: &PortRef,
    produced: &OutputTypes,
    node: &NodeId,
) -> Result<(PortName, crate::kind::ValueType), String> {
    match &r.port {
        None => produced
            .first()
            .cloned()
            .ok_or_else(|| format!("`{node}` has no outputs")),
        Some(port) => match produced.iter().find(|(p, _)| p == port) {
            Some(found) => Ok(found.clone()),
            None => {
                let names: Vec<&str> = produced.iter().map(|(p, _)| p.as_str()).collect();
                let hint = match did_you_mean(port.as_str(), names.iter().copied()) {
                    Some(m) => format!(" (did you mean `{node}.{m}`?)"),
                    None => format!(" (its outputs: {})", names.join(", ")),
                };
                Err(format!(
                    "`{r}` refers to a port `{port}` that `{node}` does not have{hint}"
                ))
            }
        },
    }
}

fn missing_node(pos: Pos, r: &PortRef, what: &str, ids: &[&str]) -> Diagnostic {
    let hint = did_you_mean(r.node.as_str(), ids.iter().copied())
        .map(|m| {
            let suggestion = match &r.port {
                Some(p) => format!("{m}.{p}"),
                None => m.to_string(),
            };
            format!(" (did you mean `{suggestion}`?)")
        })
        .unwrap_or_default();
    let place = if what == "outputs" || what == "serve.output" {
        format!("`{what}`")
    } else {
        format!("input `{what}`")
    };
    Diagnostic::at(
        pos,
        format!(
            "{place} refers to `{r}`, but there is no node `{}`{hint}",
            r.node
        ),
    )
}

/// Reports every cycle as a full path; returns whether there was one.
fn report_cycles(graph: &DiGraph<NodeId, ()>, decl: &Declaration, diags: &mut Diagnostics) -> bool {
    let mut found = false;
    for scc in petgraph::algo::tarjan_scc(graph) {
        let self_loop = scc.len() == 1 && graph.contains_edge(scc[0], scc[0]);
        if scc.len() < 2 && !self_loop {
            continue;
        }
        found = true;
        let start = *scc.iter().min().unwrap_or(&scc[0]);
        let path = cycle_path(graph, start, &scc);
        let names: Vec<&str> = path.iter().map(|i| graph[*i].as_str()).collect();
        let pos = decl.nodes[start.index()].pos;
        let mut message = format!("cycle: {}", names.join(" -> "));
        if scc.len() + 1 > path.len() {
            let mut others: Vec<&str> = scc
                .iter()
                .filter(|i| !path.contains(i))
                .map(|i| graph[*i].as_str())
                .collect();
            others.sort();
            if !others.is_empty() {
                message.push_str(&format!(" (also caught in it: {})", others.join(", ")));
            }
        }
        message.push_str("; a pipeline must be acyclic: remove one of these inputs");
        diags.push(Diagnostic::at(pos, message).in_node(graph[start].as_str()));
    }
    found
}

/// A path start -> … -> start inside one strongly connected component.
fn cycle_path(graph: &DiGraph<NodeId, ()>, start: NodeIndex, scc: &[NodeIndex]) -> Vec<NodeIndex> {
    // Breadth-first search from start's successors back to start, within the component.
    let mut prev: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let mut seen = std::collections::HashSet::from([start]);
    while let Some(at) = queue.pop_front() {
        let mut next: Vec<NodeIndex> = graph.neighbors(at).filter(|n| scc.contains(n)).collect();
        next.sort();
        for n in next {
            if n == start {
                let mut path = vec![start];
                let mut cur = at;
                while cur != start {
                    path.push(cur);
                    cur = prev[&cur];
                }
                path.push(start);
                let last = path.len() - 1;
                path[1..last].reverse();
                return path;
            }
            if seen.insert(n) {
                prev.insert(n, at);
                queue.push_back(n);
            }
        }
    }
    vec![start, start]
}
