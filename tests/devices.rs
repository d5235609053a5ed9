//! Placement on devices, driven through the binary: a pipeline whose
//! training runs on a GPU and the rest on the CPU gives the all-CPU run's
//! metrics and reuses exactly its CPU results. Needs a CUDA build and a GPU
//! (`scripts/gpu-check.sh` runs it so); elsewhere it checks what it can and
//! says what it skipped (`KILN_REQUIRE_GPU=1` makes that a failure).

use std::fs;

use serde_json::Value;

use crate::common::{assert_exit, kiln, text, workspace};

/// `(node, device)` for every node of a run, from its `run.json`.
fn devices(run_json: &std::path::Path) -> Vec<(String, String)> {
    let run: Value = serde_json::from_str(&fs::read_to_string(run_json).unwrap()).unwrap();
    run["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_string(),
                n["device"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn accuracy(metrics: &std::path::Path) -> f64 {
    let m: Value = serde_json::from_str(&fs::read_to_string(metrics).unwrap()).unwrap();
    m["eval.metrics"]["accuracy"].as_f64().unwrap()
}

#[test]
fn training_on_a_gpu_beside_cpu_preprocessing_matches_the_cpu_run() {
    let ws = workspace();
    let dir = ws.path();
    let cpu = kiln(dir, &["run", "digits-mlp.yaml", "--out", "on-cpu"]);
    assert_exit(&cpu, 0);
    // Everything on the CPU, whatever `auto` could have picked.
    assert!(devices(&dir.join("on-cpu/run.json"))
        .iter()
        .all(|(_, d)| d == "cpu"));
    let cpu_accuracy = accuracy(&dir.join("on-cpu/metrics.json"));

    // The same file with the whole pipeline on `cuda`: only training and
    // scoring compute there; the rest runs on the CPU, so its cached
    // results are the CPU run's.
    let text_of = fs::read_to_string(dir.join("digits-mlp.yaml")).unwrap();
    fs::write(
        dir.join("digits-mlp-gpu.yaml"),
        text_of.replacen("seed: 11\n", "seed: 11\ndevice: cuda\n", 1),
    )
    .unwrap();
    let gpu = kiln(dir, &["run", "digits-mlp-gpu.yaml", "--out", "on-gpu"]);
    if gpu.status.code() == Some(2) && text(&gpu).1.contains("cuda") {
        let why = text(&gpu).1;
        assert!(
            std::env::var_os("KILN_REQUIRE_GPU").is_none(),
            "KILN_REQUIRE_GPU is set, but: {why}"
        );
        // Said plainly, naming the device and the fix.
        assert!(why.contains("device `cuda:0`"), "{why}");
        eprintln!("mixed-device run skipped: {}", why.trim());
        return;
    }
    assert_exit(&gpu, 0);
    let placed = devices(&dir.join("on-gpu/run.json"));
    for (node, device) in &placed {
        let on_gpu = matches!(node.as_str(), "fit" | "eval");
        assert_eq!(device == "cuda:0", on_gpu, "{node} ran on {device}");
    }
    // Reused: the source, both splits, the scaling, the model's
    // description (5); ran: training and scoring.
    let said = text(&gpu).0;
    assert!(said.contains("ran 2, reused 5"), "{said}");
    let gpu_accuracy = accuracy(&dir.join("on-gpu/metrics.json"));
    assert!(
        (gpu_accuracy - cpu_accuracy).abs() <= 0.005,
        "GPU {gpu_accuracy} against CPU {cpu_accuracy}"
    );
    // And the CPU run reads none of the GPU's training back: it reuses all.
    let again = kiln(dir, &["run", "digits-mlp.yaml", "--out", "on-cpu"]);
    assert_exit(&again, 0);
    assert!(
        text(&again).0.contains("ran 0, reused 7"),
        "{}",
        text(&again).0
    );
}
