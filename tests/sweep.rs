//! `kiln sweep`: trials of one pipeline sharing every node they have in
//! common, ranked by a metric, each equal to a plain run of that trial.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value as Json;

use crate::common::{assert_exit, kiln, text, with_status, workspace};

fn with_sweep(dir: &Path, block: &str) {
    let file = dir.join("iris-mlp.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}{block}")).unwrap();
}

fn results(dir: &Path) -> Json {
    let text = std::fs::read_to_string(dir.join("runs/iris-mlp/sweep/sweep.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

const GRID: &str = "sweep:
  method: grid
  params: { lr: [0.003, 0.03], hidden: [[16], [32], [64, 64]] }
  metric: eval.metrics.accuracy
  goal: maximize
  parallel: 2
";

#[test]
fn a_grid_runs_shared_nodes_once_and_each_trial_equals_its_plain_run() {
    let ws = workspace();
    with_sweep(ws.path(), GRID);
    let out = kiln(ws.path(), &["sweep", "iris-mlp.yaml"]);
    assert_exit(&out, 0);
    let sweep = ws.path().join("runs/iris-mlp/sweep");
    for name in ["sweep.md", "sweep.csv", "sweep-lr.png", "sweep-hidden.png"] {
        assert!(sweep.join(name).is_file(), "{name}");
    }

    // How many trials ran each node: the shared prefix once, training six times.
    let mut ran: BTreeMap<String, usize> = BTreeMap::new();
    for trial in 1..=6 {
        for id in with_status(&sweep.join(format!("trial-{trial}/run.json")), "ran") {
            *ran.entry(id).or_default() += 1;
        }
    }
    for shared in ["iris", "split", "scale"] {
        assert_eq!(ran[shared], 1, "{shared}: {ran:?}");
    }
    assert_eq!(ran["net"], 3, "{ran:?}");
    assert_eq!(ran["fit"], 6, "{ran:?}");

    // Six rows, best first, each the metric of a plain run of that trial.
    let table = results(ws.path());
    let rows = table["trials"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    let metrics: Vec<f64> = rows.iter().map(|r| r["metric"].as_f64().unwrap()).collect();
    assert!(metrics.windows(2).all(|w| w[0] >= w[1]), "{metrics:?}");
    for row in rows {
        let plain = workspace();
        let lr = format!("params.lr={}", row["params"]["lr"]);
        let hidden = format!("params.hidden={}", row["params"]["hidden"]);
        let out = kiln(
            plain.path(),
            &["run", "iris-mlp.yaml", "--set", &lr, "--set", &hidden],
        );
        assert_exit(&out, 0);
        let m: Json = serde_json::from_str(
            &std::fs::read_to_string(plain.path().join("runs/iris-mlp/metrics.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            m["eval.metrics"]["accuracy"].as_f64(),
            row["metric"].as_f64(),
            "{lr} {hidden}"
        );
    }
    let md = std::fs::read_to_string(sweep.join("sweep.md")).unwrap();
    assert_eq!(md.lines().count(), 8, "{md}");

    // Again: everything is in the cache, nothing runs.
    let out = kiln(ws.path(), &["sweep", "iris-mlp.yaml"]);
    assert_exit(&out, 0);
    assert!(
        text(&out).0.contains("0 node runs over 6 trials"),
        "{}",
        text(&out).0
    );
}

#[test]
fn a_random_sweep_follows_the_seed() {
    let block = "sweep:
  method: random
  trials: 4
  params: { lr: { min: 0.0001, max: 0.1, log: true }, hidden: [[8], [16]] }
  metric: eval.metrics.accuracy
";
    let drawn = |seed: &str| {
        let ws = workspace();
        with_sweep(ws.path(), block);
        let file = ws.path().join("iris-mlp.yaml");
        let text = std::fs::read_to_string(&file)
            .unwrap()
            .replace("seed: 42", seed);
        std::fs::write(&file, text).unwrap();
        assert_exit(&kiln(ws.path(), &["sweep", "iris-mlp.yaml"]), 0);
        let mut params: Vec<String> = results(ws.path())["trials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["params"].to_string())
            .collect();
        params.sort();
        params
    };
    let first = drawn("seed: 42");
    assert_eq!(first.len(), 4);
    assert_eq!(first, drawn("seed: 42"));
    assert_ne!(first, drawn("seed: 43"));
    for p in &first {
        let lr = serde_json::from_str::<Json>(p).unwrap()["lr"]
            .as_f64()
            .unwrap();
        assert!((1e-4..=0.1).contains(&lr), "{lr}");
    }
}

#[test]
fn a_failing_trial_is_reported_and_the_others_finish() {
    let ws = workspace();
    with_sweep(
        ws.path(),
        "sweep:\n  params: { hidden: [[16], [0]] }\n  metric: eval.metrics.accuracy\n",
    );
    let out = kiln(ws.path(), &["sweep", "iris-mlp.yaml"]);
    assert_exit(&out, 1);
    let rows = results(ws.path())["trials"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["status"], "ok");
    assert!(rows[0]["metric"].as_f64().unwrap() > 0.8);
    assert!(
        rows[1]["status"].as_str().unwrap().starts_with("invalid"),
        "{rows:?}"
    );
    assert!(
        text(&out).1.contains("1 of 2 trials failed"),
        "{}",
        text(&out).1
    );
}

#[test]
fn bad_sweep_blocks_are_reported_with_their_place() {
    let cases = [
        (
            "sweep:\n  params: { lr: [0.1], widht: [1] }\n  metric: eval.metrics.accuracy\n",
            "`sweep.params.widht` is not a param",
        ),
        (
            "sweep:\n  params: { lr: [] }\n  metric: eval.metrics.accuracy\n",
            "`sweep.params.lr` is an empty list",
        ),
        (
            "sweep:\n  params: { lr: [0.1] }\n  metric: evl.metrics.accuracy\n",
            "evl",
        ),
        (
            "sweep:\n  params: { lr: [0.1] }\n  metric: fit.model.accuracy\n",
            "not metrics",
        ),
        (
            "sweep:\n  params: { lr: { min: 0.1, max: 1 } }\n  metric: eval.metrics.accuracy\n",
            "a range has no grid",
        ),
        (
            "sweep:\n  method: random\n  params: { lr: [0.1] }\n  metric: eval.metrics.accuracy\n",
            "needs `trials: N`",
        ),
        (
            "sweep:\n  params: { lr: [0.1] }\n  metric: eval.metrics.accuracy\n  goal: best\n",
            "`sweep.goal` should be",
        ),
    ];
    for (block, expected) in cases {
        let ws = workspace();
        with_sweep(ws.path(), block);
        for command in ["sweep", "validate"] {
            let out = kiln(ws.path(), &[command, "iris-mlp.yaml"]);
            assert_exit(&out, 2);
            let stderr = text(&out).1;
            assert!(stderr.contains(expected), "{block}\n{stderr}");
            // The place: a line in the appended block (after iris-mlp's own lines).
            let line: usize = stderr
                .split("iris-mlp.yaml:")
                .nth(1)
                .and_then(|s| s.split(':').next())
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no line in {stderr}"));
            assert!(line > 58, "{stderr}");
        }
    }
    let ws = workspace();
    let out = kiln(ws.path(), &["sweep", "iris-mlp.yaml"]);
    assert_exit(&out, 2);
    assert!(
        text(&out).1.contains("no `sweep:` block"),
        "{}",
        text(&out).1
    );
}
