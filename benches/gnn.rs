//! GCN training time on a generated 10 000-node graph (a stochastic block
//! model: 4 communities, features drawn around each community's centre),
//! at three edge counts, so time per epoch can be read against edges.
//! Message passing is sparse: nothing of size nodes² is ever built.

use std::fmt::Write as _;
use std::path::Path;

use criterion::{Criterion, Throughput};
use rand::{Rng, SeedableRng};

const NODES: usize = 10_000;
const FEATURES: usize = 32;
const EPOCHS: usize = 10;

/// Writes `nodes.csv` (id, community, features) and `edges.csv` with about
/// `degree` undirected edges per node, 80% of them inside the community.
fn write_graph(dir: &Path, degree: usize) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let community = |i: usize| i % 4;
    let mut nodes = String::from("node,community");
    for f in 0..FEATURES {
        write!(nodes, ",f{f}").unwrap();
    }
    nodes.push('\n');
    for i in 0..NODES {
        write!(nodes, "{i},c{}", community(i)).unwrap();
        for f in 0..FEATURES {
            let centre = if f % 4 == community(i) { 0.5 } else { 0.0 };
            write!(nodes, ",{:.3}", centre + rng.random_range(-1.0..1.0f32)).unwrap();
        }
        nodes.push('\n');
    }
    let mut edges = String::from("source,target\n");
    for i in 0..NODES {
        for _ in 0..degree / 2 {
            let j = if rng.random_bool(0.8) {
                4 * rng.random_range(0..NODES / 4) + community(i)
            } else {
                rng.random_range(0..NODES)
            };
            writeln!(edges, "{i},{j}").unwrap();
        }
    }
    std::fs::write(dir.join("nodes.csv"), nodes).unwrap();
    std::fs::write(dir.join("edges.csv"), edges).unwrap();
}

/// Full-batch GCN epochs (2 layers, 16 hidden units) at average degree 5,
/// 10 and 20 (50k, 100k and 200k directed edges).
pub fn gcn_epochs(c: &mut Criterion) {
    crate::training::pin_threads();
    let mut group = c.benchmark_group("gnn");
    for degree in [5, 10, 20] {
        let dir = tempfile::tempdir().expect("temp dir");
        write_graph(dir.path(), degree);
        let text = format!(
            "pipeline: bench-gcn\nseed: 1\nnodes:\n  \
             g: {{ kind: source.graph, with: {{ nodes: {nodes}, edges: {edges}, target: community }} }}\n  \
             split: {{ kind: preprocess.graph_split, inputs: {{ graph: g }}, with: {{ train: 0.1, valid: 0.1 }} }}\n  \
             net: {{ kind: model.gnn, with: {{ conv: gcn, hidden: [16] }} }}\n  \
             fit: {{ kind: train.supervised, inputs: {{ model: net, train: split.graph }}, \
             with: {{ optimizer: adam, lr: 0.01, epochs: {EPOCHS}, batch_size: 100000 }} }}\n",
            nodes = dir.path().join("nodes.csv").display(),
            edges = dir.path().join("edges.csv").display(),
        );
        group.throughput(Throughput::Elements(EPOCHS as u64));
        group.bench_function(format!("gcn-10k-nodes-degree-{degree}"), |b| {
            b.iter_custom(|iters| crate::training::time_fit(&text, iters))
        });
    }
    group.finish();
}
