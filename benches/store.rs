//! What the cache's store costs per node: a fully cached 1 000-node
//! pipeline re-run against a local folder and against an S3 server on
//! loopback (s3s-fs, the one the tests use). Prints µs per node.
//!
//! `cargo bench --bench store`

#[path = "../tests/s3.rs"]
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
    println!("{NODES} nodes, all cached, --jobs {jobs}; µs per node (best and median of 5 re-runs)");
    for (name, store) in [
        ("local folder", Store::local(&dir.path().join(".kiln"))),
        ("S3 on loopback", Store::open(&server.url("bench")).expect("store")),
    ] {
        let opts = RunOptions {
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
        println!("{name:>16}: best {:.0} µs/node, median {:.0} µs/node", times[0], times[2]);
    }
}
