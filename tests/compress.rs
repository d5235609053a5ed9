//! Compression on real models: what pruning removes, what fine-tuning keeps,
//! and what the comparison table reports.

use std::fs;

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::common::{assert_exit, kiln, workspace};

fn zeros(t: &Tensor) -> usize {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .filter(|v| **v == 0.0)
        .count()
}

/// The saved iris model `out/pruned.safetensors` has exactly 922 of its
/// 1 152 hidden weights at zero, each marked in its mask, and a whole head.
fn assert_iris_pruned_to_922(dir: &std::path::Path) {
    let tensors =
        candle_core::safetensors::load(dir.join("out/pruned.safetensors"), &Device::Cpu).unwrap();
    let mut pruned = 0;
    for name in ["layers.0.weight", "layers.1.weight"] {
        let (w, mask) = (&tensors[name], &tensors[&format!("mask/{name}")]);
        assert_eq!(zeros(w), zeros(mask), "{name}");
        pruned += zeros(w);
    }
    assert_eq!(pruned, 922);
    assert_eq!(zeros(&tensors["head.weight"]), 0);
}

#[test]
fn fine_tuning_a_pruned_model_keeps_its_zeros() {
    let ws = workspace();
    let pipeline = fs::read_to_string(ws.path().join("iris-mlp.yaml"))
        .unwrap()
        .replace(
            "outputs: [eval.metrics, fit.metrics]",
            "  prune:\n    kind: compress.prune\n    inputs: { model: fit.model }\n    with: { sparsity: 0.8, exclude: [head.weight] }\n  \
             finetune:\n    kind: train.supervised\n    inputs: { model: prune.model, train: scale.fit, valid: scale.apply }\n    with: { lr: 0.01, epochs: 30, batch_size: 16 }\n  \
             save_pruned:\n    kind: sink.safetensors\n    inputs: { data: finetune.model }\n    with: { path: pruned.safetensors }\n  \
             eval_pruned:\n    kind: postprocess.metrics\n    inputs: { model: finetune.model, data: scale.apply }\n\
             outputs: [eval.metrics, prune.report, eval_pruned.metrics]",
        );
    fs::write(ws.path().join("pruned.yaml"), pipeline).unwrap();
    assert_exit(&kiln(ws.path(), &["run", "pruned.yaml", "--out", "out"]), 0);
    // 4·32 + 32·32 = 1152 prunable weights, 80% of them (922) held at zero
    // through 30 epochs of training.
    assert_iris_pruned_to_922(ws.path());
    let m: Value =
        serde_json::from_str(&fs::read_to_string(ws.path().join("out/metrics.json")).unwrap())
            .unwrap();
    assert_eq!(m["prune.report"]["method"], "magnitude");
    let acc = m["eval_pruned.metrics"]["accuracy"].as_f64().unwrap();
    assert!(acc >= 0.86, "pruned iris accuracy {acc}");
}

#[test]
fn structured_pruning_shrinks_the_digits_cnn_within_a_point() {
    let ws = workspace();
    assert_exit(
        &kiln(ws.path(), &["run", "digits-compress.yaml", "--out", "out"]),
        0,
    );
    let m: Value =
        serde_json::from_str(&fs::read_to_string(ws.path().join("out/metrics.json")).unwrap())
            .unwrap();
    let units: Vec<(u64, u64)> = m["prune.report"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["units_before"].as_u64().unwrap(),
                l["units_after"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(units, [(16, 6), (32, 13)]);
    let rows = m["compare.report"]["models"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(names, ["fit.model", "prune.model", "finetune.model"]);
    // conv 1→16→32 + head: 9930 parameters; 1→6→13 + head: 2865.
    assert_eq!(rows[0]["params"], 9930);
    assert_eq!(rows[2]["params"], 2865);
    let (before, after) = (
        rows[0]["metric"].as_f64().unwrap(),
        rows[2]["metric"].as_f64().unwrap(),
    );
    assert!(before >= 0.97, "original accuracy {before}");
    assert!(
        after >= before - 0.01,
        "fine-tuned {after} vs original {before}"
    );
    let table = fs::read_to_string(ws.path().join("out/compare.md")).unwrap();
    assert_eq!(table.lines().count(), 5, "{table}");
    assert!(table.contains("| finetune.model | 2865 |"), "{table}");
}

#[test]
fn lenet_300_100_compresses_40x_within_half_a_point() {
    // Reads MNIST from the kiln data folder, in place, and shares
    // mnist-mlp.yaml's cached training.
    let data = crate::common::data(&["mnist"]);
    let dir = crate::common::root().join("pipelines");
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().to_str().unwrap();
    assert_exit(
        &kiln(&dir, &["run", "mnist-compress.yaml", "--out", out_dir]),
        0,
    );
    let m: Value =
        serde_json::from_str(&fs::read_to_string(out.path().join("metrics.json")).unwrap())
            .unwrap();
    let rows = m["compare.report"]["models"].as_array().unwrap();
    let row = |name: &str| rows.iter().find(|r| r["model"] == name).unwrap();
    let (original, compressed) = (row("fit.model"), row("quantize.model"));
    // Half of LeNet's 266 200 weights pruned at once, then 94% exactly by
    // the end of the fine-tuning's ramp; its 410 biases kept.
    assert_eq!(row("prune.model")["nonzero_params"], 133_100 + 410);
    assert_eq!(row("finetune.model")["nonzero_params"], 15_972 + 410);
    // Bytes on disk: the f32 checkpoint against the saved compressed one.
    let saved = fs::metadata(out.path().join("lenet-compressed.safetensors"))
        .unwrap()
        .len();
    assert_eq!(saved, compressed["file_bytes"].as_u64().unwrap());
    let ratio = original["file_bytes"].as_f64().unwrap() / saved as f64;
    assert!(ratio >= 40.0, "{ratio:.1}× smaller");
    let (before, after) = (
        original["metric"].as_f64().unwrap(),
        compressed["metric"].as_f64().unwrap(),
    );
    assert!(before >= 0.98, "original accuracy {before}");
    assert!(
        after >= before - 0.005,
        "compressed {after} vs original {before}"
    );

    // The saved file loads back and scores exactly the same.
    let check = format!(
        "pipeline: reload\nparams:\n  mnist: {}\nnodes:\n  \
         train: {{ kind: source.idx, with: {{ images: \"${{params.mnist}}/train-images.idx3-ubyte\", labels: \"${{params.mnist}}/train-labels.idx1-ubyte\" }} }}\n  \
         test: {{ kind: source.idx, with: {{ images: \"${{params.mnist}}/t10k-images.idx3-ubyte\", labels: \"${{params.mnist}}/t10k-labels.idx1-ubyte\" }} }}\n  \
         holdout: {{ kind: preprocess.split, inputs: {{ data: train }}, with: {{ test: 0.0834, stratify: true }} }}\n  \
         scale: {{ kind: preprocess.normalize, inputs: {{ fit: holdout.train, apply: test }}, with: {{ per_feature: false }} }}\n  \
         model: {{ kind: model.load, with: {{ path: {} }} }}\n  \
         eval: {{ kind: postprocess.metrics, inputs: {{ model: model, data: scale.apply }} }}\n\
         outputs: [eval.metrics]\n",
        data.join("mnist").display(),
        out.path().join("lenet-compressed.safetensors").display(),
    );
    let ws = workspace();
    fs::write(ws.path().join("reload.yaml"), check).unwrap();
    assert_exit(&kiln(ws.path(), &["run", "reload.yaml", "--out", "out"]), 0);
    let r: Value =
        serde_json::from_str(&fs::read_to_string(ws.path().join("out/metrics.json")).unwrap())
            .unwrap();
    assert_eq!(r["eval.metrics"]["accuracy"], compressed["metric"]);
}

#[test]
fn a_gradual_ramp_raises_sparsity_during_fine_tuning() {
    let ws = workspace();
    let pipeline = fs::read_to_string(ws.path().join("iris-mlp.yaml"))
        .unwrap()
        .replace(
            "outputs: [eval.metrics, fit.metrics]",
            "  prune:\n    kind: compress.prune\n    inputs: { model: fit.model }\n    \
             with: { sparsity: 0.8, schedule: gradual, initial_sparsity: 0.2, ramp_epochs: 20, exclude: [head.weight] }\n  \
             finetune:\n    kind: train.supervised\n    inputs: { model: prune.model, train: scale.fit, valid: scale.apply }\n    with: { lr: 0.01, epochs: 30, batch_size: 16 }\n  \
             history:\n    kind: sink.json\n    inputs: { data: finetune.history }\n    with: { path: history.json }\n  \
             save_pruned:\n    kind: sink.safetensors\n    inputs: { data: finetune.model }\n    with: { path: pruned.safetensors }\n  \
             eval_pruned:\n    kind: postprocess.metrics\n    inputs: { model: finetune.model, data: scale.apply }\n  \
             structured:\n    kind: compress.prune\n    inputs: { model: fit.model }\n    with: { sparsity: 0.5, method: structured, schedule: gradual }\n  \
             backwards:\n    kind: compress.prune\n    inputs: { model: fit.model }\n    with: { sparsity: 0.5, schedule: gradual, initial_sparsity: 0.6 }\n\
             outputs: [eval.metrics, prune.report, eval_pruned.metrics]",
        );
    fs::write(ws.path().join("gradual.yaml"), pipeline).unwrap();
    let out = kiln(ws.path(), &["run", "gradual.yaml", "--out", "out"]);
    // The two misconfigured prunes fail, naming the fix; the ramp runs.
    assert_exit(&out, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`schedule: gradual` ramps magnitude pruning"),
        "{stderr}"
    );
    assert!(
        stderr.contains("`initial_sparsity` (0.6) is above `sparsity` (0.5)"),
        "{stderr}"
    );

    let m: Value =
        serde_json::from_str(&fs::read_to_string(ws.path().join("out/metrics.json")).unwrap())
            .unwrap();
    // The prune node itself removed 20%: 230 of the 1152 prunable weights.
    assert_eq!(m["prune.report"]["schedule"]["target"], 0.8);
    let layer_zeros: u64 = m["prune.report"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["zeros_after"].as_u64().unwrap())
        .sum();
    assert_eq!(layer_zeros, 230);
    // Then one step per epoch for 20 epochs, cubic, ending at 0.8.
    let history: Value =
        serde_json::from_str(&fs::read_to_string(ws.path().join("out/history.json")).unwrap())
            .unwrap();
    let ramp: Vec<f64> = serde_json::from_value(history["sparsity"].clone()).unwrap();
    assert_eq!(ramp.len(), 20);
    assert!(ramp.windows(2).all(|w| w[1] >= w[0]), "{ramp:?}");
    assert!((ramp[0] - (0.8 - 0.6 * 0.95f64.powi(3))).abs() < 1e-9);
    assert_eq!(ramp[19], 0.8);
    assert_iris_pruned_to_922(ws.path());
    let acc = m["eval_pruned.metrics"]["accuracy"].as_f64().unwrap();
    assert!(acc >= 0.86, "gradually pruned iris accuracy {acc}");
}
