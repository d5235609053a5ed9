//! Training on real data: accuracy reached, repeatability, and the errors
//! a user meets (diverging loss, data shaped unlike the training data).

use std::fs;

use crate::common::{assert_exit, kiln, text, with_status, workspace};

fn metrics(dir: &std::path::Path, out: &str) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dir.join(out).join("metrics.json")).unwrap()).unwrap()
}

#[test]
fn iris_mlp_classifies_held_out_flowers() {
    let ws = workspace();
    let pipeline = fs::read_to_string(ws.path().join("iris-mlp.yaml")).unwrap();
    // Iris has 30 test flowers: one split's accuracy moves in steps of 0.033,
    // so the model is judged over several seeds (several splits and inits).
    let mut accuracies = Vec::new();
    for seed in [1, 2, 3, 7, 42, 100] {
        let name = format!("iris-{seed}.yaml");
        fs::write(
            ws.path().join(&name),
            pipeline.replace("seed: 42", &format!("seed: {seed}")),
        )
        .unwrap();
        let out = format!("out-{seed}");
        assert_exit(&kiln(ws.path(), &["run", &name, "--out", &out]), 0);
        let m = metrics(ws.path(), &out);
        let acc = m["eval.metrics"]["accuracy"].as_f64().unwrap();
        assert!(acc >= 0.86, "seed {seed}: accuracy {acc}");
        assert_eq!(m["eval.metrics"]["examples"], 30);
        accuracies.push(acc);
    }
    let mean = accuracies.iter().sum::<f64>() / accuracies.len() as f64;
    assert!(
        mean >= 0.93,
        "mean test accuracy {mean:.3} over seeds: {accuracies:?}"
    );
}

#[test]
fn training_is_bit_identical_across_runs_and_jobs() {
    let ws = workspace();
    for (jobs, out) in [("1", "a"), ("2", "b"), ("2", "c")] {
        assert_exit(
            &kiln(
                ws.path(),
                &[
                    "run",
                    "iris-mlp.yaml",
                    "--no-cache",
                    "--jobs",
                    jobs,
                    "--out",
                    out,
                ],
            ),
            0,
        );
    }
    let a = fs::read(ws.path().join("a/metrics.json")).unwrap();
    assert_eq!(a, fs::read(ws.path().join("b/metrics.json")).unwrap());
    assert_eq!(a, fs::read(ws.path().join("c/metrics.json")).unwrap());
}

#[test]
fn a_diverging_loss_stops_training_with_a_clear_message() {
    let ws = workspace();
    let out = kiln(
        ws.path(),
        &[
            "run",
            "iris-mlp.yaml",
            "--set",
            "params.lr=1e12",
            "--out",
            "diverged",
        ],
    );
    assert_exit(&out, 1);
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("node `fit` (train.supervised) failed: training diverged: the loss became"),
        "{stderr}"
    );
    assert!(stderr.contains("lower `lr` or set `clip_norm`"), "{stderr}");
    assert!(stderr.contains("6 nodes not run because of it"), "{stderr}");
}

#[test]
fn scoring_data_shaped_unlike_the_training_data_is_a_clear_error() {
    let ws = workspace();
    let text_in = fs::read_to_string(ws.path().join("iris-mlp.yaml")).unwrap().replace(
        "outputs: [eval.metrics, fit.metrics]",
        "  narrow:\n    kind: source.csv\n    with: { path: data/iris.csv, target: species, columns: [sepal_length, sepal_width] }\n  bad_eval:\n    kind: postprocess.metrics\n    inputs: { model: fit.model, data: narrow }\n",
    );
    fs::write(ws.path().join("narrow.yaml"), text_in).unwrap();
    let out = kiln(ws.path(), &["run", "narrow.yaml"]);
    assert_exit(&out, 1);
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("the model takes examples of shape [4], but the data's are [2]"),
        "{stderr}"
    );
}

#[test]
fn digits_cnn_reaches_97_percent() {
    let ws = workspace();
    assert_exit(
        &kiln(ws.path(), &["run", "digits-cnn.yaml", "--out", "out"]),
        0,
    );
    let m = metrics(ws.path(), "out");
    let acc = m["eval.metrics"]["accuracy"].as_f64().unwrap();
    assert!(acc >= 0.97, "digits CNN test accuracy {acc}");
    assert_eq!(m["eval.metrics"]["examples"], 359);

    // The curves and the confusion matrix are drawn: real PNG and SVG files.
    for png in ["training.png", "confusion.png"] {
        let bytes = fs::read(ws.path().join("out").join(png)).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{png} is not a PNG"
        );
        let (w, h) = (
            u32::from_be_bytes(bytes[16..20].try_into().unwrap()),
            u32::from_be_bytes(bytes[20..24].try_into().unwrap()),
        );
        assert!(w >= 600 && h >= 400, "{png} is {w}×{h}");
        assert!(bytes.len() > 10_000, "{png} looks empty");
    }
    let svg = fs::read_to_string(ws.path().join("out/training.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("epoch") && svg.contains("validation accuracy"));
}

#[test]
fn mnist_lenet_300_100_reaches_98_percent() {
    // Reads MNIST from the kiln data folder, in place.
    crate::common::data(&["mnist"]);
    let dir = crate::common::root().join("pipelines");
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().to_str().unwrap();
    assert_exit(&kiln(&dir, &["run", "mnist-mlp.yaml", "--out", out_dir]), 0);
    let m = metrics(out.path(), "");
    let acc = m["eval.metrics"]["accuracy"].as_f64().unwrap();
    assert!(acc >= 0.98, "MNIST test accuracy {acc}");
    assert_eq!(m["eval.metrics"]["examples"], 10_000);
}

#[test]
fn a_saved_model_loads_back_with_identical_predictions() {
    let ws = workspace();
    assert_exit(
        &kiln(ws.path(), &["run", "iris-mlp.yaml", "--out", "trained"]),
        0,
    );
    let saved = ws.path().join("trained/iris-mlp.safetensors");
    assert!(fs::metadata(&saved).unwrap().len() > 1000);
    fs::write(
        ws.path().join("reload.yaml"),
        format!(
            "pipeline: reload
seed: 42
nodes:
  iris: {{ kind: source.csv, with: {{ path: data/iris.csv, target: species }} }}
  split: {{ kind: preprocess.split, inputs: {{ data: iris }}, with: {{ test: 0.2, shuffle: true, stratify: true }} }}
  scale: {{ kind: preprocess.standardize, inputs: {{ fit: split.train, apply: split.test }} }}
  model: {{ kind: model.load, with: {{ path: {} }} }}
  predict: {{ kind: infer.predict, inputs: {{ model: model, data: scale.apply }} }}
  save_predictions: {{ kind: sink.csv, inputs: {{ data: predict }}, with: {{ path: test-predictions.csv }} }}
",
            saved.display()
        ),
    )
    .unwrap();
    assert_exit(
        &kiln(ws.path(), &["run", "reload.yaml", "--out", "reloaded"]),
        0,
    );
    let before = fs::read_to_string(ws.path().join("trained/test-predictions.csv")).unwrap();
    let after = fs::read_to_string(ws.path().join("reloaded/test-predictions.csv")).unwrap();
    assert_eq!(before.lines().count(), 31);
    assert_eq!(before, after, "predictions differ after save and load");

    fs::write(&saved, b"not a model").unwrap();
    let out = kiln(ws.path(), &["run", "reload.yaml", "--out", "reloaded"]);
    assert_exit(&out, 1);
    assert!(
        text(&out).1.contains("is not a model saved by kiln"),
        "{}",
        text(&out).1
    );
}

#[test]
fn the_shipped_iris_model_still_loads_and_predicts() {
    // pipelines/data/iris-mlp.safetensors was saved by an earlier build:
    // the checkpoint format must stay readable.
    let ws = workspace();
    assert_exit(
        &kiln(ws.path(), &["run", "iris-predict.yaml", "--out", "out"]),
        0,
    );
    let m = metrics(ws.path(), "out");
    assert_eq!(m["eval.metrics"]["examples"], 150);
    assert!(m["eval.metrics"]["accuracy"].as_f64().unwrap() >= 0.95);
    let rows = fs::read_to_string(ws.path().join("out/predictions.csv")).unwrap();
    assert!(
        rows.starts_with("setosa,versicolor,virginica,species\n"),
        "{rows}"
    );
}

#[test]
fn an_lstm_solves_the_adding_problem() {
    let ws = workspace();
    assert_exit(
        &kiln(ws.path(), &["run", "sequence-lstm.yaml", "--out", "out"]),
        0,
    );
    let m = metrics(ws.path(), "out");
    let mse = m["eval.metrics"]["mse"].as_f64().unwrap();
    // Always answering the mean scores about 0.167.
    assert!(mse < 0.01, "adding-problem test MSE {mse}");
    assert!(m["eval.metrics"]["r2"].as_f64().unwrap() > 0.9);
}

#[test]
fn penguins_with_text_columns_and_missing_values_are_classified() {
    let ws = workspace();
    assert_exit(
        &kiln(ws.path(), &["run", "penguins-mlp.yaml", "--out", "out"]),
        0,
    );
    let m = metrics(ws.path(), "out");
    let acc = m["eval.metrics"]["accuracy"].as_f64().unwrap();
    assert!(acc >= 0.95, "penguins test accuracy {acc}");
    let encoded = fs::read_to_string(ws.path().join("out/test-encoded.csv")).unwrap();
    let header = encoded.lines().next().unwrap();
    assert!(
        header.starts_with("island=Biscoe,island=Dream,island=Torgersen,"),
        "{header}"
    );
    assert!(
        header.contains("sex=female,sex=male,species") && !header.contains("sex=NA"),
        "{header}"
    );
    // Every missing measurement was filled: no NaN reaches the model.
    assert!(!encoded.contains("NaN"));
}

#[test]
fn early_stopping_ends_training_and_keeps_the_best_epoch() {
    let ws = workspace();
    let text = fs::read_to_string(ws.path().join("iris-mlp.yaml"))
        .unwrap()
        .replace(
            "epochs: 100, batch_size: 16 }",
            "epochs: 100, batch_size: 16, patience: 5 }",
        );
    fs::write(ws.path().join("patient.yaml"), text).unwrap();
    assert_exit(
        &kiln(ws.path(), &["run", "patient.yaml", "--out", "out"]),
        0,
    );
    let fit = &metrics(ws.path(), "out")["fit.metrics"];
    assert_eq!(fit["stopped_early"], true);
    let (best, run) = (
        fit["best_epoch"].as_u64().unwrap(),
        fit["epochs_run"].as_u64().unwrap(),
    );
    assert_eq!(run, best + 5, "stops 5 epochs after the best one");
    assert!(run < 100);
}

#[test]
fn the_serving_peers_mlp_learns_digits() {
    // digits-mlp.yaml: 64-128-128-10, the size of the FastAPI peer's model.
    let ws = workspace();
    assert_exit(
        &kiln(ws.path(), &["run", "digits-mlp.yaml", "--out", "out"]),
        0,
    );
    let m = metrics(&ws.path().join("out"), "");
    let acc = m["eval.metrics"]["accuracy"].as_f64().unwrap();
    assert!(acc >= 0.97, "accuracy {acc}");
    let serve_only = with_status(&ws.path().join("out/run.json"), "serve-only");
    assert_eq!(serve_only, ["request", "request_scaled", "scores"]);
}
