//! The cache survives damage: corrupt, truncated or half-written entries are
//! detected, recomputed and replaced, never trusted.

use std::fs;
use std::path::Path;

use crate::common::{assert_exit, kiln, statuses, with_status, workspace};

/// Every object of the cache: records and value blobs.
fn cache_files(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for kind in ["entries", "blobs"] {
        for shard in fs::read_dir(root.join(".kiln").join(kind))
            .unwrap()
            .flatten()
        {
            for f in fs::read_dir(shard.path()).unwrap().flatten() {
                out.push(f.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn damaged_entries_are_recomputed_with_the_same_results() {
    let ws = workspace();
    assert_exit(&kiln(ws.path(), &["run", "iris-prep.yaml"]), 0);
    let run_json = ws.path().join("runs/iris-prep/run.json");
    let first = statuses(&run_json);
    let train = fs::read(ws.path().join("runs/iris-prep/train.csv")).unwrap();

    for (i, file) in cache_files(ws.path()).iter().enumerate() {
        let bytes = fs::read(file).unwrap();
        match i % 3 {
            0 => fs::write(file, &bytes[..bytes.len() / 2]).unwrap(),
            1 => {
                let mut b = bytes.clone();
                let mid = b.len() / 2;
                b[mid] ^= 0x55;
                fs::write(file, b).unwrap();
            }
            _ => fs::remove_file(file).unwrap(),
        }
    }

    let out = kiln(ws.path(), &["run", "iris-prep.yaml"]);
    assert_exit(&out, 0);
    let second = statuses(&run_json);
    assert!(with_status(&run_json, "ran").len() >= 3, "{second:?}");
    for (id, (_, fp)) in &first {
        assert_eq!(&second[id].1, fp, "node {id} changed after recomputation");
    }
    assert_eq!(
        fs::read(ws.path().join("runs/iris-prep/train.csv")).unwrap(),
        train
    );

    assert_exit(&kiln(ws.path(), &["run", "iris-prep.yaml"]), 0);
    assert_eq!(with_status(&run_json, "cached").len(), 5);
}

#[test]
fn editing_a_data_file_reruns_its_source_and_descendants() {
    let ws = workspace();
    assert_exit(&kiln(ws.path(), &["run", "iris-prep.yaml"]), 0);
    let data = ws.path().join("data/iris.csv");
    let text = fs::read_to_string(&data)
        .unwrap()
        .replacen("5.1,3.5", "5.2,3.5", 1);
    fs::write(&data, text).unwrap();
    assert_exit(&kiln(ws.path(), &["run", "iris-prep.yaml"]), 0);
    let run_json = ws.path().join("runs/iris-prep/run.json");
    assert_eq!(with_status(&run_json, "ran").len(), 5);
}

#[test]
fn a_rerun_node_with_an_unchanged_output_leaves_its_descendants_cached() {
    let ws = workspace();
    assert_exit(&kiln(ws.path(), &["run", "iris-prep.yaml"]), 0);
    // Naming the default columns explicitly changes the source's settings
    // (it re-runs) but not the table it reads, so nothing downstream re-runs.
    let path = ws.path().join("iris-prep.yaml");
    let text = fs::read_to_string(&path).unwrap().replace(
        "with: { path: data/iris.csv, target: species }",
        "with: { path: data/iris.csv, target: species, columns: [sepal_length, sepal_width, petal_length, petal_width] }",
    );
    fs::write(&path, text).unwrap();
    assert_exit(&kiln(ws.path(), &["run", "iris-prep.yaml"]), 0);
    let run_json = ws.path().join("runs/iris-prep/run.json");
    assert_eq!(with_status(&run_json, "ran"), vec!["iris"]);
    assert_eq!(with_status(&run_json, "cached").len(), 4);
}
