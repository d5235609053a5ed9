//! The `serve:` block: the input takes requests, the output exists and
//! depends on the input.

use std::collections::HashMap;

use petgraph::graph::{DiGraph, NodeIndex};

use super::wiring::{missing_node, resolve_port};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::ids::{did_you_mean, NodeId};
use crate::kind::OutputTypes;
use crate::load::{Declaration, ServeDecl};
use crate::plan::{Outlet, ServeSpec};
use crate::registry::{Registered, Registry};

/// Checks the `serve:` block: the input takes requests, the output exists
/// and depends on the input.
#[allow(clippy::too_many_arguments)]
pub(super) fn serve_spec(
    s: &ServeDecl,
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
        max_queue: s
            .max_queue
            .unwrap_or_else(|| crate::format::default_max_queue(s.max_batch as u64) as usize),
        timeout_ms: s.timeout_ms,
    })
}
