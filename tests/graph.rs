//! Graph networks on real and generated graphs: node classification on the
//! karate club, graph classification with pooling, and the errors a bad
//! graph file gets.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::common::{assert_exit, kiln, text, workspace};

fn metrics(dir: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(dir.join("out/metrics.json")).unwrap()).unwrap()
}

#[test]
fn a_gcn_learns_the_karate_clubs_from_their_two_leaders() {
    let ws = workspace();
    assert_exit(
        &kiln(ws.path(), &["run", "karate-gcn.yaml", "--out", "out"]),
        0,
    );
    let m = metrics(ws.path());
    assert_eq!(
        m["split.report"],
        serde_json::json!({"train": 2, "valid": 0, "test": 32, "unlabelled": 0})
    );
    let eval = &m["eval.metrics"];
    assert_eq!(eval["examples"], 32);
    let acc = eval["accuracy"].as_f64().unwrap();
    assert!(acc >= 0.85, "karate test accuracy {acc}");
    // One prediction per member, both leaders included.
    let members = fs::read_to_string(ws.path().join("out/members.csv")).unwrap();
    assert_eq!(members.lines().count(), 35);

    // GraphSAGE on the same split also separates the clubs.
    let sage = fs::read_to_string(ws.path().join("karate-gcn.yaml"))
        .unwrap()
        .replace("conv: gcn", "conv: sage");
    fs::write(ws.path().join("karate-sage.yaml"), sage).unwrap();
    assert_exit(
        &kiln(ws.path(), &["run", "karate-sage.yaml", "--out", "out"]),
        0,
    );
    let acc = metrics(ws.path())["eval.metrics"]["accuracy"]
        .as_f64()
        .unwrap();
    assert!(acc >= 0.85, "karate SAGE accuracy {acc}");
}

/// Writes `count` small graphs, half rings and half stars of 5 to 12
/// nodes, as nodes.csv (node, graph), edges.csv and graphs.csv (graph, shape).
fn rings_and_stars(dir: &Path, count: usize) {
    let (mut nodes, mut edges, mut graphs) = (
        String::from("node,graph\n"),
        String::from("source,target\n"),
        String::from("graph,shape\n"),
    );
    let mut next = 0;
    for g in 0..count {
        let size = 5 + (g * 7) % 8;
        let star = g % 2 == 1;
        writeln!(graphs, "g{g},{}", if star { "star" } else { "ring" }).unwrap();
        for k in 0..size {
            writeln!(nodes, "{},g{g}", next + k).unwrap();
        }
        for k in 1..size {
            let from = if star { next } else { next + k - 1 };
            writeln!(edges, "{from},{}", next + k).unwrap();
        }
        if !star {
            writeln!(edges, "{},{next}", next + size - 1).unwrap();
        }
        next += size;
    }
    fs::write(dir.join("nodes.csv"), nodes).unwrap();
    fs::write(dir.join("edges.csv"), edges).unwrap();
    fs::write(dir.join("graphs.csv"), graphs).unwrap();
}

#[test]
fn pooled_graph_networks_tell_rings_from_stars() {
    let ws = workspace();
    rings_and_stars(ws.path(), 120);
    // GraphSAGE keeps a node's own features apart from its neighbours' mean
    // and separates the shapes every time; GCN's symmetric normalisation
    // blurs degrees (Xu et al., "How powerful are graph neural networks?"),
    // so it is held to less.
    for (conv, readout, least) in [
        ("sage", "max", 0.95),
        ("sage", "mean", 0.95),
        ("gcn", "sum", 0.8),
    ] {
        let pipeline = format!(
            "pipeline: shapes\nseed: 3\nnodes:\n  \
             shapes: {{ kind: source.graph, with: {{ nodes: nodes.csv, edges: edges.csv, graph: graph, graphs: graphs.csv, target: shape, features: degree }} }}\n  \
             split: {{ kind: preprocess.graph_split, inputs: {{ graph: shapes }}, with: {{ train: 0.5, valid: 0.2 }} }}\n  \
             net: {{ kind: model.gnn, with: {{ conv: {conv}, hidden: [32, 32], dropout: 0.0, readout: {readout} }} }}\n  \
             fit: {{ kind: train.supervised, inputs: {{ model: net, train: split.graph }}, with: {{ optimizer: adam, lr: 0.01, epochs: 100, batch_size: 16 }} }}\n  \
             eval: {{ kind: postprocess.metrics, inputs: {{ model: fit.model, data: split.graph }} }}\n\
             outputs: [split.report, fit.metrics, eval.metrics]\n"
        );
        fs::write(ws.path().join("shapes.yaml"), pipeline).unwrap();
        assert_exit(&kiln(ws.path(), &["run", "shapes.yaml", "--out", "out"]), 0);
        let m = metrics(ws.path());
        // 60 rings and 60 stars: 30 + 12 of each to train and validate.
        assert_eq!(
            m["split.report"],
            serde_json::json!({"train": 60, "valid": 24, "test": 36, "unlabelled": 0})
        );
        assert!(m["fit.metrics"]["valid_accuracy"].as_f64().is_some());
        assert_eq!(m["eval.metrics"]["examples"], 36);
        let acc = m["eval.metrics"]["accuracy"].as_f64().unwrap();
        assert!(acc >= least, "{conv}/{readout}: test accuracy {acc}");
    }
}

#[test]
fn graph_mistakes_are_named_with_their_fix() {
    let ws = workspace();
    let dir = ws.path().join("data/karate");
    let run = |name: &str, yaml: String| {
        fs::write(ws.path().join(name), yaml).unwrap();
        kiln(ws.path(), &["run", name, "--out", "out"])
    };
    let karate = fs::read_to_string(ws.path().join("karate-gcn.yaml")).unwrap();

    // An edge to a member the nodes file doesn't list: file and line.
    let mut edges = fs::read_to_string(dir.join("edges.csv")).unwrap();
    edges.push_str("33,34,1\n");
    fs::write(dir.join("edges2.csv"), &edges).unwrap();
    let out = run(
        "e1.yaml",
        karate.replace("karate/edges.csv", "karate/edges2.csv"),
    );
    assert_exit(&out, 1);
    let (_, err) = text(&out);
    assert!(
        err.contains("edges2.csv` line 80: node `34` is not in the nodes file"),
        "{err}"
    );

    // A weight that isn't a number.
    fs::write(
        dir.join("edges3.csv"),
        edges.replace("33,34,1", "32,33,heavy"),
    )
    .unwrap();
    let out = run(
        "e2.yaml",
        karate
            .replace("karate/edges.csv", "karate/edges3.csv")
            .replace(
                "features: identity",
                "features: identity\n      weight: weight",
            ),
    );
    assert_exit(&out, 1);
    assert!(
        text(&out)
            .1
            .contains("line 80: weight `heavy` is not a number"),
        "{}",
        text(&out).1
    );

    // A misspelt column gets a suggestion.
    let out = run("e3.yaml", karate.replace("target: club", "target: clubs"));
    assert_exit(&out, 1);
    assert!(
        text(&out)
            .1
            .contains("has no column `clubs` (did you mean `club`?)"),
        "{}",
        text(&out).1
    );

    // Graph classification needs both settings: caught before running.
    let out = run(
        "e4.yaml",
        karate.replace(
            "features: identity",
            "features: identity\n      graph: club",
        ),
    );
    assert_exit(&out, 2);
    assert!(text(&out).1.contains("`graphs`"), "{}", text(&out).1);

    // More labelled examples per class than a class has.
    let out = run(
        "e5.yaml",
        karate.replace("train_ids: [\"0\", \"33\"]", "per_class: 40"),
    );
    assert_exit(&out, 1);
    assert!(
        text(&out)
            .1
            .contains("has only 17 labelled examples, 40 asked"),
        "{}",
        text(&out).1
    );

    // A graph given to a model that reads rows, and a table to a GNN.
    let out = run("e6.yaml", karate.replace("kind: model.gnn\n    with: { conv: gcn, hidden: [\"${params.hidden}\"], dropout: 0.5 }", "kind: model.mlp"));
    assert_exit(&out, 1);
    assert!(
        text(&out).1.contains("use `model.gnn` for a graph"),
        "{}",
        text(&out).1
    );
    let iris = fs::read_to_string(ws.path().join("iris-mlp.yaml"))
        .unwrap()
        .replace("kind: model.mlp", "kind: model.gnn");
    let out = run("e7.yaml", iris);
    assert_exit(&out, 1);
    assert!(
        text(&out).1.contains("a `gnn` model reads graphs"),
        "{}",
        text(&out).1
    );

    // A graph where a table is expected is a validation error naming both types.
    let out = run(
        "e8.yaml",
        karate.replace("kind: preprocess.graph_split\n    inputs: { graph: club }", "kind: preprocess.graph_split\n    inputs: { graph: club }\n  scaled:\n    kind: preprocess.standardize\n    inputs: { fit: club }"),
    );
    assert_exit(&out, 2);
    assert!(
        text(&out)
            .1
            .contains("takes a dataset, but `club` gives a graph"),
        "{}",
        text(&out).1
    );
}

/// The mushroom body's cell types over ten splits (seeds 1–10): accuracy
/// of each model, in `compare`'s order.
fn mushroom_body_means() -> Vec<f64> {
    let ws = workspace();
    let pipeline = std::fs::read_to_string(ws.path().join("mushroom-body.yaml")).unwrap();
    let mut sums = Vec::new();
    for seed in 1..=10 {
        let file = format!("mb{seed}.yaml");
        std::fs::write(
            ws.path().join(&file),
            pipeline.replace("\nseed: 1\n", &format!("\nseed: {seed}\n")),
        )
        .unwrap();
        let run = ws.path().join(format!("seed{seed}"));
        std::fs::create_dir_all(&run).unwrap();
        let out = run.join("out");
        assert_exit(
            &kiln(ws.path(), &["run", &file, "--out", out.to_str().unwrap()]),
            0,
        );
        let m = metrics(&run);
        let rows = m["compare.report"]["models"].as_array().unwrap().clone();
        sums.resize(rows.len(), 0.0);
        for (sum, row) in sums.iter_mut().zip(&rows) {
            *sum += row["metric"].as_f64().unwrap() / 10.0;
        }
    }
    sums
}

#[test]
fn structural_features_place_cell_types_that_identities_do_not() {
    // logistic regression on profiles, then GraphSAGE on identities,
    // spectral embedding, profiles, and both.
    let means = mushroom_body_means();
    let (logistic, identity, structural) = (means[0], means[1], &means[2..]);
    assert!(logistic >= 0.80, "{means:?}");
    for &s in structural {
        // The same network, given how cells connect: ≥ 15 points above
        // identities, and above logistic regression on the profiles.
        assert!(s >= identity + 0.15, "{means:?}");
        assert!(s >= logistic, "{means:?}");
    }
}
