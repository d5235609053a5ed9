//! What the cache's store costs per node: a fully cached 1 000-node
//! pipeline re-run against a local folder and against an S3 server on
//! loopback (s3s-fs, the one the tests use), in µs per node; then the MNIST
//! pipeline run as pods against that server, in bytes each pod reads.
//!
//! `cargo bench --bench store`

#[path = "../tests/s3.rs"]
#[allow(dead_code)]
mod s3;

use std::sync::Arc;
use std::time::Instant;

use kiln_engine::{CacheMode, Quiet, RunOptions, Selection, Status, Store, Stores};

const NODES: usize = 1000;

fn main() {
    let server = s3::S3Server::start();
    for (k, v) in server.env() {
        std::env::set_var(k, v);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(
        root.join("pipelines/data/iris.csv"),
        dir.path().join("iris.csv"),
    )
    .expect("iris.csv");
    // One source and 999 splits of it: small values, every node its own result.
    let mut yaml = String::from(
        "pipeline: wide\nseed: 1\nnodes:\n  iris: { kind: source.csv, with: { path: iris.csv, target: species } }\n",
    );
    for i in 1..NODES {
        yaml.push_str(&format!(
            "  s{i}: {{ kind: preprocess.split, inputs: {{ data: iris }}, with: {{ test: 0.2 }} }}\n"
        ));
    }
    let file = dir.path().join("wide.yaml");
    std::fs::write(&file, &yaml).expect("write");
    let registry = kiln_nodes::registry();
    let plan = kiln_engine::load_str(&yaml, &file, &registry, &[]).expect("valid");
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{NODES} nodes, all cached, --jobs {jobs}; µs per node (best and median of 5 re-runs)"
    );
    for (name, store) in [
        ("local folder", Store::local(&dir.path().join(".kiln"))),
        (
            "S3 on loopback",
            Store::open(&server.url("bench")).expect("store"),
        ),
    ] {
        let opts = RunOptions {
            memo: None,
            jobs,
            cache: CacheMode::Use,
            out_dir: dir.path().join("out"),
            stores: Stores {
                cache: Some(store),
                out: None,
            },
            selection: Selection::All,
            cancel: Default::default(),
            observer: Arc::new(Quiet),
        };
        let first = kiln_engine::run(&plan, &opts).expect("runs");
        assert!(first.succeeded());
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let report = kiln_engine::run(&plan, &opts).expect("runs");
            times.push(t.elapsed().as_secs_f64() * 1e6 / NODES as f64);
            assert_eq!(report.count(Status::Cached), NODES);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{name:>16}: best {:.0} µs/node, median {:.0} µs/node",
            times[0], times[2]
        );
    }
    mnist_pods(&server);
}

/// The MNIST pipeline as pods, one after another, each in an empty folder
/// against the loopback S3 server: bytes each pod read from the store.
fn mnist_pods(server: &s3::S3Server) {
    let data = kiln_engine::data::folder().join("mnist");
    if !data.is_dir() {
        println!(
            "MNIST pods: skipped ({} missing; scripts/fetch-data.sh mnist)",
            data.display()
        );
        return;
    }
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let cache = server.url("mnist");
    let out = std::process::Command::new(kiln)
        .args([
            "export",
            "argo",
            "pipelines/mnist-mlp.yaml",
            "--image",
            "kiln",
            "--format",
            "json",
        ])
        .args(["--cache", &cache])
        .current_dir(root)
        .output()
        .expect("kiln runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let templates = w["spec"]["templates"].as_array().expect("templates");
    println!("MNIST (mnist-mlp.yaml) as pods, one at a time: bytes read from the store per pod");
    let mut total = 0;
    // The DAG lists tasks in an order their dependencies allow.
    for t in templates.iter().filter(|t| t["container"].is_object()) {
        let args: Vec<&str> = t["container"]["args"]
            .as_array()
            .expect("args")
            .iter()
            .filter_map(|a| a.as_str())
            .collect();
        let pod = tempfile::tempdir().expect("temp dir");
        server.take_bytes_served();
        let t0 = Instant::now();
        let run = std::process::Command::new(kiln)
            .args(&args)
            .current_dir(pod.path())
            .output()
            .expect("pod runs");
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let bytes = server.take_bytes_served();
        total += bytes;
        println!(
            "{:>24}: {:>10} bytes, {:.2} s",
            t["metadata"]["annotations"]["kiln.dev/node"]
                .as_str()
                .unwrap_or("?"),
            bytes,
            t0.elapsed().as_secs_f64()
        );
    }
    println!("{:>24}: {total:>10} bytes", "all pods");
}
