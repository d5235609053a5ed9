//! Text through a pre-trained encoder: a classifier on MiniLM embeddings.

use crate::common::{assert_exit, kiln};

#[test]
fn a_head_on_frozen_minilm_embeddings_tells_fresh_from_rotten() {
    // Reads the encoder from the kiln data folder, in place.
    crate::common::data(&["minilm"]);
    let dir = crate::common::root().join("pipelines");
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().to_str().unwrap();
    assert_exit(
        &kiln(&dir, &["run", "reviews-minilm.yaml", "--out", out_dir]),
        0,
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("metrics.json")).unwrap())
            .unwrap();
    let acc = m["eval.metrics"]["accuracy"].as_f64().unwrap();
    assert!(acc >= 0.75, "test accuracy {acc}");
    // fresh 2455 + rotten 2411 reviews, 20% held out.
    assert_eq!(m["eval.metrics"]["examples"], 973);
    // One report: the from-scratch Transformer and the MiniLM head, each
    // scored on the same 973 reviews as it reads them.
    let rows = m["compare.report"]["models"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(names, ["fit_transformer.model", "fit.model"]);
    assert_eq!(rows[1]["metric"].as_f64().unwrap(), acc);
    assert!(
        rows[0]["metric"].as_f64().unwrap() < acc,
        "pre-trained beats from scratch"
    );
}

#[test]
fn reviews_learned_from_scratch_beat_chance_on_the_same_split() {
    let ws = crate::common::workspace();
    assert_exit(
        &kiln(
            ws.path(),
            &["run", "reviews-transformer.yaml", "--out", "out"],
        ),
        0,
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ws.path().join("out/metrics.json")).unwrap())
            .unwrap();
    // The same 973 held-out reviews as reviews-minilm.yaml.
    assert_eq!(m["eval.metrics"]["examples"], 973);
    let transformer = m["eval.metrics"]["accuracy"].as_f64().unwrap();
    let bag = m["eval_bag.metrics"]["accuracy"].as_f64().unwrap();
    assert!(
        transformer >= 0.65,
        "transformer from scratch: {transformer}"
    );
    assert!(bag >= 0.69, "bag of embeddings: {bag}");
    // One table, both models, scored on the same reviews.
    let report = std::fs::read_to_string(ws.path().join("out/compare.md")).unwrap();
    assert!(report.contains("| fit_bag.model |") && report.contains("| fit_transformer.model |"));
}

#[test]
fn a_folder_of_files_labelled_by_subfolder_trains_a_classifier() {
    let ws = crate::common::workspace();
    let words = [
        ("pos", ["good", "great", "fine", "lovely"]),
        ("neg", ["bad", "awful", "poor", "dull"]),
    ];
    for (label, vocab) in words {
        let dir = ws.path().join("notes").join(label);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..40 {
            let text = format!("the film was {} and {}", vocab[i % 4], vocab[(i / 4) % 4]);
            std::fs::write(dir.join(format!("{i:02}.txt")), text).unwrap();
        }
    }
    std::fs::write(ws.path().join("notes/.hidden"), "ignored").unwrap();
    let pipeline = "pipeline: notes\nseed: 1\nnodes:\n  \
        notes: { kind: source.text, with: { path: notes, keep: [neg, pos] } }\n  \
        split: { kind: preprocess.split, inputs: { data: notes }, with: { test: 0.25, stratify: true } }\n  \
        tokens: { kind: preprocess.tokenize, inputs: { fit: split.train, apply: split.test }, with: { length: 8 } }\n  \
        bag: { kind: model.transformer, with: { dim: 8, layers: 0, dropout: 0.0 } }\n  \
        fit: { kind: train.supervised, inputs: { model: bag, train: tokens.fit }, with: { lr: 0.05, epochs: 30, batch_size: 8 } }\n  \
        eval: { kind: postprocess.metrics, inputs: { model: fit.model, data: tokens.apply } }\n\
        outputs: [eval.metrics]\n";
    std::fs::write(ws.path().join("notes.yaml"), pipeline).unwrap();
    assert_exit(&kiln(ws.path(), &["run", "notes.yaml", "--out", "out"]), 0);
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ws.path().join("out/metrics.json")).unwrap())
            .unwrap();
    assert_eq!(m["eval.metrics"]["examples"], 20);
    assert_eq!(
        m["eval.metrics"]["labels"],
        serde_json::json!(["neg", "pos"])
    );
    assert_eq!(m["eval.metrics"]["accuracy"], 1.0);

    // A document outside the label folders is a clear error.
    std::fs::write(ws.path().join("notes/stray.txt"), "no label").unwrap();
    let out = kiln(ws.path(), &["run", "notes.yaml", "--out", "out"]);
    assert_exit(&out, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("mixes files in subfolders"), "{stderr}");
}
