//! The command line end to end: caching across runs, param overrides,
//! determinism across `--jobs`, failures, partial runs and the other commands.

use std::fs;

use crate::common::{assert_exit, kiln, statuses, text, with_status, workspace};

#[test]
fn a_second_run_reuses_every_node() {
    let ws = workspace();
    let out = kiln(ws.path(), &["run", "iris-prep.yaml"]);
    assert_exit(&out, 0);
    let run_json = ws.path().join("runs/iris-prep/run.json");
    assert_eq!(with_status(&run_json, "ran").len(), 5);

    let out = kiln(ws.path(), &["run", "iris-prep.yaml"]);
    assert_exit(&out, 0);
    assert_eq!(
        with_status(&run_json, "cached").len(),
        5,
        "{:?}",
        statuses(&run_json)
    );
    assert!(text(&out).0.contains("ran 0, reused 5, failed 0"));
}

#[test]
fn setting_a_param_reruns_only_the_nodes_it_reaches() {
    let ws = workspace();
    assert_exit(&kiln(ws.path(), &["run", "iris-prep.yaml"]), 0);
    let out = kiln(
        ws.path(),
        &["run", "iris-prep.yaml", "--set", "params.test_fraction=0.3"],
    );
    assert_exit(&out, 0);
    let run_json = ws.path().join("runs/iris-prep/run.json");
    assert_eq!(with_status(&run_json, "cached"), vec!["iris"]);
    assert_eq!(
        with_status(&run_json, "ran"),
        vec!["scale", "split", "stats", "train_csv"]
    );
    // 150 rows, 30% held out per class: 105 training rows + header.
    let train = fs::read_to_string(ws.path().join("runs/iris-prep/train.csv")).unwrap();
    assert_eq!(train.lines().count(), 106);
}

#[test]
fn no_cache_runs_everything_and_deleted_outputs_are_rewritten() {
    let ws = workspace();
    assert_exit(&kiln(ws.path(), &["run", "iris-prep.yaml"]), 0);
    let run_json = ws.path().join("runs/iris-prep/run.json");
    assert_exit(
        &kiln(ws.path(), &["run", "iris-prep.yaml", "--no-cache"]),
        0,
    );
    assert_eq!(with_status(&run_json, "ran").len(), 5);

    fs::remove_file(ws.path().join("runs/iris-prep/train.csv")).unwrap();
    assert_exit(&kiln(ws.path(), &["run", "iris-prep.yaml"]), 0);
    assert_eq!(with_status(&run_json, "ran"), vec!["train_csv"]);
    assert!(ws.path().join("runs/iris-prep/train.csv").exists());
}

#[test]
fn results_do_not_depend_on_jobs() {
    let (one, two) = (workspace(), workspace());
    assert_exit(
        &kiln(one.path(), &["run", "iris-prep.yaml", "--jobs", "1"]),
        0,
    );
    assert_exit(
        &kiln(two.path(), &["run", "iris-prep.yaml", "--jobs", "2"]),
        0,
    );
    // Fingerprints cover every input's content hash, so equal fingerprints mean equal values.
    let a = statuses(&one.path().join("runs/iris-prep/run.json"));
    let b = statuses(&two.path().join("runs/iris-prep/run.json"));
    assert_eq!(a, b);
    for file in ["train.csv", "transform.json"] {
        let x = fs::read(one.path().join("runs/iris-prep").join(file)).unwrap();
        let y = fs::read(two.path().join("runs/iris-prep").join(file)).unwrap();
        assert_eq!(x, y, "{file} differs between --jobs 1 and 2");
    }
}

#[test]
fn a_failing_node_stops_its_descendants_only() {
    let ws = workspace();
    fs::write(
        ws.path().join("data/broken.csv"),
        "a,b,label\n1,2,x\n3,oops,y\n",
    )
    .unwrap();
    fs::write(
        ws.path().join("two-branches.yaml"),
        "pipeline: two-branches
nodes:
  good: { kind: source.csv, with: { path: data/iris.csv, target: species } }
  good_split: { kind: preprocess.split, inputs: { data: good } }
  bad: { kind: source.csv, with: { path: data/broken.csv, target: label } }
  bad_split: { kind: preprocess.split, inputs: { data: bad } }
  bad_scale: { kind: preprocess.standardize, inputs: { fit: bad_split.train } }
",
    )
    .unwrap();
    let out = kiln(ws.path(), &["run", "two-branches.yaml"]);
    assert_exit(&out, 1);
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("node `bad` (source.csv) failed")
            && stderr.contains("line 3, column 2 (`b`): `oops` is not a number"),
        "{stderr}"
    );
    assert!(stderr.contains("2 nodes not run because of it"), "{stderr}");
    let run_json = ws.path().join("runs/two-branches/run.json");
    assert_eq!(with_status(&run_json, "ran"), vec!["good", "good_split"]);
    assert_eq!(with_status(&run_json, "failed"), vec!["bad"]);
    assert_eq!(
        with_status(&run_json, "skipped"),
        vec!["bad_scale", "bad_split"]
    );
}

#[test]
fn until_runs_a_prefix_and_only_needs_the_cache() {
    let ws = workspace();
    let out = kiln(ws.path(), &["run", "iris-prep.yaml", "--only", "scale"]);
    assert_exit(&out, 1);
    assert!(
        text(&out).1.contains("run with `--until`"),
        "{}",
        text(&out).1
    );

    assert_exit(
        &kiln(ws.path(), &["run", "iris-prep.yaml", "--until", "split"]),
        0,
    );
    let run_json = ws.path().join("runs/iris-prep/run.json");
    assert_eq!(with_status(&run_json, "ran"), vec!["iris", "split"]);

    assert_exit(
        &kiln(ws.path(), &["run", "iris-prep.yaml", "--only", "scale"]),
        0,
    );
    assert_eq!(with_status(&run_json, "ran"), vec!["scale"]);
    assert_eq!(with_status(&run_json, "cached"), vec!["iris", "split"]);

    let out = kiln(ws.path(), &["run", "iris-prep.yaml", "--only", "scael"]);
    assert_exit(&out, 2);
    assert!(text(&out).1.contains("did you mean `scale`"));
}

#[test]
fn bad_overrides_are_usage_errors() {
    let ws = workspace();
    for (arg, expect) in [
        ("params.test_fractoin=0.3", "did you mean `test_fraction`"),
        ("test_fraction=0.3", "write `--set params.NAME=VALUE`"),
        ("params.test_fraction", "write `--set params.NAME=VALUE`"),
        ("params.test_fraction=[1,", "not valid YAML"),
        ("params.test_fraction=2", "out of range"),
    ] {
        let out = kiln(ws.path(), &["run", "iris-prep.yaml", "--set", arg]);
        assert_exit(&out, 2);
        assert!(
            text(&out).1.contains(expect),
            "--set {arg}: {}",
            text(&out).1
        );
    }
    assert!(!ws.path().join(".kiln").exists());
}

#[test]
fn graph_is_drawn_in_three_formats() {
    let ws = workspace();
    let out = kiln(ws.path(), &["graph", "iris-prep.yaml", "--format", "dot"]);
    assert_exit(&out, 0);
    let dot = text(&out).0;
    assert!(dot.starts_with("digraph \"iris-prep\""));
    assert!(
        dot.contains("\"split\" -> \"scale\" [label=\"train -> fit\""),
        "{dot}"
    );
    assert_eq!(dot.matches(" -> \"").count(), 5, "five edges:\n{dot}");
    if std::process::Command::new("dot").arg("-V").output().is_ok() {
        let path = ws.path().join("graph.dot");
        fs::write(&path, &dot).unwrap();
        let svg = std::process::Command::new("dot")
            .args(["-Tsvg"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            svg.status.success(),
            "{}",
            String::from_utf8_lossy(&svg.stderr)
        );
        assert!(String::from_utf8_lossy(&svg.stdout).contains("<svg"));
    }

    let out = kiln(
        ws.path(),
        &["graph", "iris-prep.yaml", "--format", "mermaid"],
    );
    assert!(text(&out).0.contains("split -->|train -> fit| scale"));

    let out = kiln(ws.path(), &["graph", "iris-prep.yaml", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&text(&out).0).unwrap();
    assert_eq!(json["nodes"].as_array().unwrap().len(), 5);
    assert_eq!(json["edges"].as_array().unwrap().len(), 5);
}

#[test]
fn nodes_and_schema_come_from_the_registry() {
    let dir = crate::common::root();
    let out = kiln(&dir, &["nodes"]);
    assert_exit(&out, 0);
    let registry = kiln_nodes::registry();
    for name in registry.names() {
        assert!(
            text(&out).0.contains(name),
            "{name} missing from `kiln nodes`"
        );
    }
    // Which kinds compute on a GPU: those that train, run or score a model.
    let listed = text(&out).0;
    let gpu: Vec<&str> = listed
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next()?;
            (words.next()? == "gpu").then_some(name)
        })
        .collect();
    assert_eq!(
        gpu,
        [
            "infer.embed",
            "infer.generate",
            "infer.predict",
            "postprocess.compare",
            "postprocess.metrics",
            "postprocess.perplexity",
            "train.supervised"
        ]
    );
    let shown = text(&kiln(&dir, &["nodes", "infer.predict"])).0;
    assert!(
        shown.contains("device: computes on the node's `device:`"),
        "{shown}"
    );
    let shown = text(&kiln(&dir, &["nodes", "preprocess.tfidf"])).0;
    assert!(
        shown.contains("device: runs on the CPU whatever `device:` says"),
        "{shown}"
    );
    let out = kiln(&dir, &["nodes", "preprocess.split"]);
    assert_exit(&out, 0);
    let shown = text(&out).0;
    assert!(
        shown.contains("test") && shown.contains("a number in (0, 1); default 0.2"),
        "{shown}"
    );
    assert!(
        shown.contains("data") && shown.contains("dataset"),
        "{shown}"
    );

    let out = kiln(&dir, &["nodes", "preprocess.spilt"]);
    assert_exit(&out, 2);
    assert!(text(&out).1.contains("did you mean `preprocess.split`"));

    let out = kiln(&dir, &["schema"]);
    assert_exit(&out, 0);
    let schema: serde_json::Value = serde_json::from_str(&text(&out).0).unwrap();
    let kinds = &schema["$defs"]["NodeFile"]["properties"]["kind"]["enum"];
    assert_eq!(kinds.as_array().unwrap().len(), registry.len());
    let branch = schema["$defs"]["NodeFile"]["allOf"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["if"]["properties"]["kind"]["const"] == "preprocess.split")
        .expect("a branch per kind");
    assert_eq!(
        branch["then"]["properties"]["with"]["properties"]["test"]["exclusiveMaximum"],
        1.0
    );
}

#[test]
fn a_reader_that_leaves_early_ends_a_listing_quietly() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    // The schema (over 100 KB) outgrows the pipe: the reader takes the
    // first bytes and leaves, as `kiln schema | head` does.
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("schema")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(first.starts_with(b"{"));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!said.contains("internal error"), "{said}");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(13),
            "ended by SIGPIPE: {:?}",
            out.status
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    let dir = crate::common::root();
    assert_exit(&kiln(&dir, &["frobnicate"]), 2);
    assert_exit(&kiln(&dir, &["run"]), 2);
    assert_exit(&kiln(&dir, &["run", "x.yaml", "--jobs", "0"]), 2);
    assert_exit(&kiln(&dir, &["--help"]), 0);
}

#[test]
fn standardizing_other_columns_than_fitted_is_a_clear_error() {
    let ws = workspace();
    fs::write(
        ws.path().join("mismatch.yaml"),
        "pipeline: mismatch
nodes:
  iris: { kind: source.csv, with: { path: data/iris.csv, target: species } }
  fewer: { kind: source.csv, with: { path: data/iris.csv, target: species, columns: [sepal_length, petal_width] } }
  scale: { kind: preprocess.standardize, inputs: { fit: iris, apply: fewer } }
",
    )
    .unwrap();
    let out = kiln(ws.path(), &["run", "mismatch.yaml"]);
    assert_exit(&out, 1);
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("node `scale` (preprocess.standardize) failed: `apply` has features of shape [2] per example, but `fit` has [4]"),
        "{stderr}"
    );
}

#[test]
fn every_fitted_step_applies_to_a_list_with_one_output_each() {
    let ws = workspace();
    fs::write(
        ws.path().join("lists.yaml"),
        "pipeline: lists
nodes:
  iris: { kind: source.csv, with: { path: data/iris.csv, target: species } }
  split: { kind: preprocess.split, inputs: { data: iris }, with: { test: 0.2 } }
  halves: { kind: preprocess.split, inputs: { data: split.test }, with: { test: 0.5 } }
  range: { kind: preprocess.normalize, inputs: { fit: split.train, apply: [halves.train, halves.test] } }
  fill: { kind: preprocess.impute, inputs: { fit: range.fit, apply: [range.apply_0, range.apply_1] } }
  both: { kind: preprocess.concat, inputs: { parts: [fill.apply_0, fill.apply_1] } }
  out: { kind: sink.csv, inputs: { data: both }, with: { path: both.csv } }
",
    )
    .unwrap();
    assert_exit(&kiln(ws.path(), &["run", "lists.yaml"]), 0);
    let rows = fs::read_to_string(ws.path().join("runs/lists/both.csv")).unwrap();
    assert_eq!(
        rows.lines().count(),
        31,
        "the two halves of the 30 test rows, and a header"
    );
    let out = kiln(ws.path(), &["graph", "lists.yaml", "--format", "json"]);
    assert!(text(&out).0.contains("\"port\": \"apply_1\""));
}
