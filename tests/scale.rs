//! Generated pipelines of 10 000 nodes validate and run: a chain, and a wide
//! fan-out joined by one fan-in node.

use std::fs;

use crate::common::{assert_exit, kiln, root, text, with_status};

const N: usize = 10_000;

fn setup(name: &str, body: String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::copy(
        root().join("pipelines/data/iris.csv"),
        dir.path().join("iris.csv"),
    )
    .unwrap();
    fs::write(dir.path().join(name), body).unwrap();
    dir
}

#[test]
fn a_chain_of_10k_nodes_runs_and_then_is_fully_cached() {
    let mut body = String::from("pipeline: chain\nnodes:\n  n0: { kind: source.csv, with: { path: iris.csv, target: species } }\n");
    for i in 1..N {
        body.push_str(&format!(
            "  n{i}: {{ kind: preprocess.standardize, inputs: {{ fit: n{} }} }}\n",
            i - 1
        ));
    }
    let dir = setup("chain.yaml", body);
    let out = kiln(dir.path(), &["validate", "chain.yaml"]);
    assert_exit(&out, 0);
    assert!(text(&out).0.contains("valid (10000 nodes)"));
    assert_exit(&kiln(dir.path(), &["run", "chain.yaml"]), 0);
    let run_json = dir.path().join("runs/chain/run.json");
    assert_eq!(with_status(&run_json, "ran").len(), N);
    assert_exit(&kiln(dir.path(), &["run", "chain.yaml"]), 0);
    assert_eq!(with_status(&run_json, "cached").len(), N);
}

#[test]
fn a_fan_out_of_10k_nodes_joins_into_one() {
    let mut body = String::from("pipeline: fan\nnodes:\n  src: { kind: source.csv, with: { path: iris.csv, target: species } }\n");
    let width = N - 3;
    for i in 0..width {
        body.push_str(&format!(
            "  b{i}: {{ kind: preprocess.standardize, inputs: {{ fit: src }} }}\n"
        ));
    }
    let parts: Vec<String> = (0..width).map(|i| format!("b{i}.fit")).collect();
    body.push_str(&format!(
        "  all: {{ kind: preprocess.concat, inputs: {{ parts: [{}] }} }}\n",
        parts.join(", ")
    ));
    body.push_str("  rows: { kind: sink.json, inputs: { data: all }, with: { path: all.json } }\n");
    let dir = setup("fan.yaml", body);
    assert_exit(&kiln(dir.path(), &["run", "fan.yaml", "--jobs", "2"]), 0);
    let run_json = dir.path().join("runs/fan/run.json");
    assert_eq!(with_status(&run_json, "ran").len(), N);
    let rows: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("runs/fan/all.json")).unwrap()).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), width * 150);
}
