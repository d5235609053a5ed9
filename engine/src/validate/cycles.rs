//! Cycles, each reported as a full path (`a -> b -> a`).

use std::collections::HashMap;

use petgraph::graph::{DiGraph, NodeIndex};

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::ids::NodeId;
use crate::load::Declaration;

/// Reports every cycle as a full path; returns whether there was one.
pub(super) fn report_cycles(
    graph: &DiGraph<NodeId, ()>,
    decl: &Declaration,
    diags: &mut Diagnostics,
) -> bool {
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
