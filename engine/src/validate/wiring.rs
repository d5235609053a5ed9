//! References between nodes: each input port's producers, the types they
//! give and whether the port takes them.

use std::collections::HashMap;

use petgraph::graph::NodeIndex;

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::ids::{did_you_mean, NodeId, PortName, PortRef};
use crate::kind::{InputTypes, KindSpec, OutputTypes};
use crate::load::NodeDecl;
use crate::plan::Outlet;
use crate::yaml::Pos;

/// Input types, wiring, and whether every producer's outputs were known.
pub(super) type Wired = (InputTypes, Vec<(PortName, Vec<Outlet>)>, bool);

pub(super) fn check_inputs(
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
pub(super) fn resolve_port(
    r: &PortRef,
    produced: &OutputTypes,
    node: &NodeId,
) -> Result<(PortName, crate::types::ValueType), String> {
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

pub(super) fn missing_node(pos: Pos, r: &PortRef, what: &str, ids: &[&str]) -> Diagnostic {
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
