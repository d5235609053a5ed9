//! `kiln watch` driven for real: a child process, edits on disk, its output read back.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::common::{workspace, Running};

/// `kiln watch FILE --jobs 2` in `dir`.
fn watch(dir: &Path, file: &str) -> Running {
    Running::start(dir, &["watch", file, "--jobs", "2"])
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn watch_reruns_what_each_change_reaches() {
    let ws = workspace();
    let file = ws.path().join("iris-mlp.yaml");
    let mut w = watch(ws.path(), "iris-mlp.yaml");
    let first = w.wait_for("ran ");
    assert!(first.starts_with("ran 13, reused 0, failed 0"), "{first}");

    // A training setting: training and what follows it only.
    edit(&file, "lr: \"${params.lr}\"", "lr: 0.02");
    let line = w.wait_for("ran ");
    assert!(line.starts_with("ran 7, reused 6"), "{line}");
    assert!(
        line.ends_with("(fit, eval, predict, save_predictions, save_model, request_scores, label)"),
        "{line}"
    );

    // An invalid edit: reported, the watcher lives on, the next valid edit runs.
    edit(&file, "kind: train.supervised", "kind: train.supervisd");
    w.wait_for("did you mean `train.supervised`");
    w.wait_for("keeping the last good pipeline");
    edit(&file, "kind: train.supervisd", "kind: train.supervised");
    let line = w.wait_for("ran ");
    assert!(line.starts_with("ran 0, reused 13"), "{line}");

    // An editor's save: write a temporary file, rename it over the pipeline.
    let text = fs::read_to_string(&file)
        .unwrap()
        .replace("lr: 0.02", "lr: 0.03");
    fs::write(ws.path().join(".iris-mlp.yaml.swp"), text).unwrap();
    fs::rename(ws.path().join(".iris-mlp.yaml.swp"), &file).unwrap();
    let line = w.wait_for("ran ");
    assert!(line.starts_with("ran 7, reused 6"), "{line}");

    // Truncate and write in place.
    let text = fs::read_to_string(&file)
        .unwrap()
        .replace("lr: 0.03", "lr: 0.04");
    fs::write(&file, "").unwrap();
    fs::write(&file, text).unwrap();
    let line = w.wait_for("ran 7, reused 6");
    assert!(line.contains("fit"), "{line}");

    // The data file: the source and everything below it.
    edit(
        &ws.path().join("data/iris.csv"),
        "5.1,3.5,1.4,0.2",
        "5.2,3.5,1.4,0.2",
    );
    let line = w.wait_for("ran ");
    assert!(
        line.starts_with("ran 11, reused 2"),
        "the model and request nodes alone are reused: {line}"
    );

    assert_eq!(w.signal("INT"), Some(0));
}

#[test]
fn a_change_during_training_cancels_it_and_starts_again() {
    let ws = workspace();
    let file = ws.path().join("iris-mlp.yaml");
    // Long enough never to finish within the test.
    edit(&file, "epochs: 100", "epochs: 100000");
    let mut w = watch(ws.path(), "iris-mlp.yaml");
    std::thread::sleep(Duration::from_millis(1500));
    edit(&file, "epochs: 100000", "epochs: 5");
    let cancelled = w.wait_for("cancelled by a newer change");
    assert!(cancelled.contains("after"), "{cancelled}");
    let line = w.wait_for("ran ");
    assert!(line.contains("fit"), "{line}");
    assert_eq!(w.signal("INT"), Some(0));

    // The cancelled run left nothing half-written: no temporary file, and a
    // plain run afterwards finds every result of the finished run intact.
    let tmp = ws.path().join(".kiln/tmp");
    assert!(!tmp.exists() || fs::read_dir(&tmp).unwrap().next().is_none());
    let out = crate::common::kiln(ws.path(), &["run", "iris-mlp.yaml"]);
    crate::common::assert_exit(&out, 0);
    assert!(crate::common::text(&out)
        .0
        .contains("ran 0, reused 13, failed 0"));
}

#[test]
fn watching_a_sweep_reruns_only_the_trials_a_save_reaches() {
    let ws = workspace();
    let file = ws.path().join("iris-mlp.yaml");
    let text = fs::read_to_string(&file).unwrap();
    fs::write(
        &file,
        format!("{text}sweep:\n  params: {{ lr: [0.003, 0.03], hidden: [[16], [32], [64, 64]] }}\n  metric: eval.metrics.accuracy\n"),
    )
    .unwrap();
    let mut w = watch(ws.path(), "iris-mlp.yaml");
    // Six trials of 13 nodes: the 5 shared ones once, `net` once per width,
    // the 7 below training once per trial.
    let first = w.wait_for("ran ");
    assert!(first.starts_with("ran 50, reused 28, failed 0"), "{first}");
    assert!(ws
        .path()
        .join("runs/iris-mlp/sweep/trial-6/iris-mlp.safetensors")
        .is_file());

    // One learning rate changes: its three trials train again, nothing else runs.
    edit(&file, "lr: [0.003, 0.03]", "lr: [0.003, 0.01]");
    let line = w.wait_for("ran ");
    assert!(line.starts_with("ran 21, reused 57, failed 0"), "{line}");
    assert!(
        line.contains("trial-4.fit") && !line.contains("trial-1.fit"),
        "{line}"
    );
    assert_eq!(w.signal("INT"), Some(0));
}
