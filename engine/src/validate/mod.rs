//! Whole-pipeline validation: kinds, settings, references, port types,
//! cycles and devices, every problem collected. The result is a [`Plan`]
//! ready to run. Reads no data file, allocates no tensor, never panics.
//!
//! This module orders the checks and builds the plan; each check lives in
//! its own file: [`node`] (a node's kind, settings and files), [`wiring`]
//! (references and port types), [`serve`] (the `serve:` block) and
//! [`cycles`].

mod cycles;
mod node;
mod serve;
mod wiring;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::Value as Json;

use crate::device::DeviceSpec;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::ids::{did_you_mean, NodeId, PortName};
use crate::kind::OutputTypes;
use crate::load::Declaration;
use crate::plan::{Outlet, Plan, PlanNode};
use crate::registry::{Registered, Registry};

use cycles::report_cycles;
use node::{check_node, CheckedNode};
use serve::serve_spec;
use wiring::{check_inputs, missing_node, resolve_port};

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

    let sweep = decl
        .sweep
        .as_ref()
        .and_then(|s| sweep_spec(s, decl, &index, &ids, &outs, diags));

    if !diags.is_empty() {
        diags.sort();
        return None;
    }
    let name = decl.name.as_ref()?.value.clone();
    let mut nodes = Vec::new();
    for (i, n) in decl.nodes.iter().enumerate() {
        let (kind, spec, settings, written, files) = checked[i].clone()?;
        let device = match kind.computes_on_device() {
            true => n.device.as_ref().map_or(default_device, |d| d.value),
            false => DeviceSpec::Cpu,
        };
        nodes.push(PlanNode {
            id: n.id.clone(),
            kind,
            spec,
            settings,
            written_settings: written,
            inputs: std::mem::take(&mut inputs[i]),
            outputs: outs[i].clone()?,
            device,
            cache: n.cache,
            files,
            sources: Vec::new(),
        });
    }
    let names: Vec<NodeId> = nodes.iter().map(|n| n.id.clone()).collect();
    for n in &mut nodes {
        n.sources = n
            .inputs
            .iter()
            .map(|(port, outlets)| {
                let from = outlets
                    .iter()
                    .map(|o| format!("{}.{}", names[o.node.index()], o.port))
                    .collect();
                (port.clone(), from)
            })
            .collect();
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
        sweep,
    })
}

/// Checks the `sweep:` block against the pipeline: each swept param is
/// defined, the metric is a `metrics` output of a node.
fn sweep_spec(
    s: &crate::sweep_decl::SweepDecl,
    decl: &Declaration,
    index: &HashMap<&str, usize>,
    ids: &[&str],
    outs: &[Option<OutputTypes>],
    diags: &mut Diagnostics,
) -> Option<crate::sweep::SweepSpec> {
    let mut ok = true;
    for (name, _) in &s.params {
        if !decl.params.iter().any(|(p, _)| p.value == name.value) {
            let known: Vec<&str> = decl.params.iter().map(|(p, _)| p.value.as_str()).collect();
            let hint = match crate::ids::did_you_mean(&name.value, known.iter().copied()) {
                Some(m) => format!(" (did you mean `{m}`?)"),
                None if known.is_empty() => " (the pipeline has no `params:`)".to_string(),
                None => format!(" (params: {})", known.join(", ")),
            };
            diags.push(Diagnostic::at(
                name.pos,
                format!(
                    "`sweep.params.{}` is not a param of the pipeline{hint}",
                    name.value
                ),
            ));
            ok = false;
        }
    }
    let (r, key) = s.metric.as_ref()?;
    let Some(&from) = index.get(r.value.node.as_str()) else {
        diags.push(missing_node(r.pos, &r.value, "sweep.metric", ids));
        return None;
    };
    let o = outs[from].as_ref()?;
    let (port, ty) = match resolve_port(&r.value, o, &decl.nodes[from].id) {
        Ok(found) => found,
        Err(e) => {
            diags.push(Diagnostic::at(r.pos, format!("`sweep.metric`: {e}")));
            return None;
        }
    };
    if ty != crate::types::ValueType::Metrics {
        diags.push(Diagnostic::at(
            r.pos,
            format!("`sweep.metric`: `{}` is {ty}, not metrics; rank by a key of a metrics output, e.g. `eval.metrics.accuracy`", r.value),
        ));
        return None;
    }
    ok.then(|| crate::sweep::SweepSpec {
        method: s.method,
        params: s
            .params
            .iter()
            .map(|(n, d)| (n.value.clone(), d.clone()))
            .collect(),
        trials: s.trials.unwrap_or(0),
        metric_output: (r.value.to_string(), NodeIndex::new(from), port),
        metric_key: key.clone(),
        goal: s.goal,
        parallel: s.parallel,
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
