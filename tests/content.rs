//! A value that stands for files carries their content: new weights in the
//! same model folder re-run every node that used the old ones, in `run`,
//! `watch` and `serve --watch` alike (the reproduction of a stale-cache bug).

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::common::{assert_exit, data, kiln, statuses, Running};

const TEXTS: &str = "text,label\n\
    \"The new movie is awesome\",fresh\n\
    \"A dull, lifeless film\",rotten\n\
    \"The cat sits outside\",fresh\n\
    \"I want those two hours back\",rotten\n";

/// A workspace with a copy of MiniLM in `model/` and a pipeline that embeds
/// four texts with it and writes the embeddings to `embeddings.csv`.
pub fn workspace_with_model() -> tempfile::TempDir {
    let ws = tempfile::tempdir().unwrap();
    let minilm = data(&["minilm"]).join("models/all-MiniLM-L6-v2");
    fs::create_dir(ws.path().join("model")).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        fs::copy(minilm.join(f), ws.path().join("model").join(f)).unwrap();
    }
    fs::write(ws.path().join("texts.csv"), TEXTS).unwrap();
    fs::write(
        ws.path().join("embed.yaml"),
        "pipeline: embed\nnodes:\n  \
         texts: { kind: source.text, with: { path: texts.csv, column: text, target: label } }\n  \
         encoder: { kind: model.pretrained, with: { path: model } }\n  \
         embed: { kind: infer.embed, inputs: { model: encoder, data: texts } }\n  \
         save: { kind: sink.csv, inputs: { data: embed }, with: { path: embeddings.csv } }\n",
    )
    .unwrap();
    ws
}

/// Halves `embeddings.word_embeddings.weight` in `model/model.safetensors`.
pub fn halve_word_embeddings(dir: &Path) {
    let file = dir.join("model/model.safetensors");
    let mut tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    let name = "embeddings.word_embeddings.weight";
    let halved = (tensors[name].clone() * 0.5).unwrap();
    tensors.insert(name.to_string(), halved);
    // Written beside the folder and renamed in, as an editor or a copy
    // tool would: a watcher never sees a half-written file.
    let staged = dir.join("model.safetensors.new");
    candle_core::safetensors::save(&tensors, &staged).unwrap();
    fs::rename(&staged, &file).unwrap();
}

fn embeddings(out: &Path) -> String {
    fs::read_to_string(out.join("embeddings.csv")).unwrap()
}

#[test]
fn new_weights_in_the_same_folder_rerun_the_embedding() {
    let ws = workspace_with_model();
    assert_exit(&kiln(ws.path(), &["run", "embed.yaml", "--out", "out"]), 0);
    let before = embeddings(&ws.path().join("out"));

    halve_word_embeddings(ws.path());
    assert_exit(&kiln(ws.path(), &["run", "embed.yaml", "--out", "out"]), 0);
    let s = statuses(&ws.path().join("out/run.json"));
    for node in ["encoder", "embed", "save"] {
        assert_eq!(s[node].0, "ran", "{node}: {s:?}");
    }
    assert_eq!(s["texts"].0, "cached");
    assert_ne!(embeddings(&ws.path().join("out")), before);
}

#[test]
fn watch_reruns_the_embedding_when_the_weights_change() {
    let ws = workspace_with_model();
    let mut w = Running::start(ws.path(), &["watch", "embed.yaml", "--out", "out"]);
    let first = w.wait_for("ran ");
    assert!(first.starts_with("ran 4, reused 0, failed 0"), "{first}");
    let before = embeddings(&ws.path().join("out"));

    halve_word_embeddings(ws.path());
    let line = w.wait_for("ran ");
    assert!(line.starts_with("ran 3, reused 1, failed 0"), "{line}");
    assert!(line.ends_with("(encoder, embed, save)"), "{line}");
    assert_ne!(embeddings(&ws.path().join("out")), before);
}
