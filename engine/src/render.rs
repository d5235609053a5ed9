//! Drawings of a plan's graph: Graphviz DOT, Mermaid and JSON.

use serde_json::json;

use crate::plan::Plan;

/// Graphviz DOT: one box per node (id and kind), edges labelled `out -> in`.
pub fn dot(plan: &Plan) -> String {
    let mut out = format!("digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n", plan.name);
    for n in &plan.nodes {
        out.push_str(&format!(
            "  \"{}\" [label=\"{}\\n{}\"];\n",
            n.id, n.id, n.spec.name
        ));
    }
    for e in plan.graph.edge_indices() {
        if let (Some((a, b)), Some((from, to))) =
            (plan.graph.edge_endpoints(e), plan.graph.edge_weight(e))
        {
            out.push_str(&format!(
                "  \"{}\" -> \"{}\" [label=\"{} -> {}\", fontsize=10];\n",
                plan.graph[a], plan.graph[b], from, to
            ));
        }
    }
    out.push_str("}\n");
    out
}

/// A Mermaid flowchart.
pub fn mermaid(plan: &Plan) -> String {
    let mut out = String::from("flowchart LR\n");
    for n in &plan.nodes {
        out.push_str(&format!(
            "  {}[\"{}<br/><small>{}</small>\"]\n",
            n.id, n.id, n.spec.name
        ));
    }
    for e in plan.graph.edge_indices() {
        if let (Some((a, b)), Some((from, to))) =
            (plan.graph.edge_endpoints(e), plan.graph.edge_weight(e))
        {
            out.push_str(&format!(
                "  {} -->|{} -> {}| {}\n",
                plan.graph[a], from, to, plan.graph[b]
            ));
        }
    }
    out
}

/// JSON: nodes (id, kind, device, outputs with types) and edges.
pub fn json(plan: &Plan) -> serde_json::Value {
    let nodes: Vec<_> = plan
        .nodes
        .iter()
        .map(|n| {
            json!({
                "id": n.id.as_str(),
                "kind": n.spec.name,
                "device": n.device.to_string(),
                "outputs": n.outputs.iter().map(|(p, t)| json!({"port": p.as_str(), "type": t.name()})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let edges: Vec<_> = plan
        .graph
        .edge_indices()
        .filter_map(|e| {
            let (a, b) = plan.graph.edge_endpoints(e)?;
            let (from, to) = plan.graph.edge_weight(e)?;
            Some(json!({
                "from": plan.graph[a].as_str(), "from_port": from.as_str(),
                "to": plan.graph[b].as_str(), "to_port": to.as_str(),
            }))
        })
        .collect();
    json!({ "pipeline": plan.name.as_str(), "nodes": nodes, "edges": edges })
}
