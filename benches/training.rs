//! Training throughput on the workloads of `shared/peers/torch_train.py`
//! (same models, data, optimizer and batch size), and the engine's cost over
//! the same MLP loop written by hand in plain candle.
//!
//! Each benchmark times only the `train.supervised` node (criterion's
//! `iter_custom` with the node's own wall time), as the peer times only its
//! training loop. Samples/s = examples × epochs / time.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Module, Optimizer, VarBuilder, VarMap};
use criterion::{Criterion, Throughput};
use kiln_engine::{
    CacheMode, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, Quiet, Registry,
    RunContext, RunOptions, Selection, Value, ValueType,
};
use rand::{Rng, SeedableRng};
use serde_json::json;

/// The peer's LSTM data: 2048 sequences of 32 steps × 16 features; the class is
/// the argmax over the first 10 features of the time-mean.
struct LstmData;

impl NodeKind for LstmData {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "bench.lstm_data",
            version: 1,
            doc: "the peer's synthetic LSTM task",
            inputs: vec![],
            outputs: vec![OutputSpec::new("data", ValueType::Dataset, "sequences")],
            settings: vec![],
            side_effects: false,
        }
    }

    fn run(&self, _: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let (n, t, f) = (2048usize, 32usize, 16usize);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let x: Vec<f32> = (0..n * t * f)
            .map(|_| rng.random::<f32>() * 2.0 - 1.0)
            .collect();
        let xt = Tensor::from_vec(x, (n, t, f), &Device::Cpu)?;
        let y = xt
            .mean(1)?
            .narrow(1, 0, 10)?
            .argmax(D::Minus1)?
            .to_dtype(DType::U32)?;
        let labels: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        let value = Value::new(
            ValueType::Dataset,
            BTreeMap::from([("features".to_string(), xt), ("target".to_string(), y)]),
            json!({ "columns": null, "target": "class", "labels": labels }),
        );
        Ok(vec![(PortName::new_static("data"), value)])
    }
}

fn registry() -> Registry {
    let mut reg = kiln_nodes::registry();
    reg.register(LstmData);
    reg
}

fn digits_path() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("pipelines/data/digits.csv.gz")
        .display()
        .to_string()
}

fn pipeline(name: &str, model: &str, epochs: usize) -> String {
    let data = if name == "lstm" {
        "  data: { kind: bench.lstm_data }\n".to_string()
    } else {
        format!(
            "  raw: {{ kind: source.csv, with: {{ path: {}, header: false, target: -1 }} }}\n  \
             data: {{ kind: preprocess.normalize, inputs: {{ fit: raw }}, with: {{ per_feature: false }} }}\n",
            digits_path()
        )
    };
    let train = if name == "lstm" { "data" } else { "data.fit" };
    format!(
        "pipeline: bench-{name}\nnodes:\n{data}  net: {model}\n  \
         fit: {{ kind: train.supervised, inputs: {{ model: net, train: {train} }}, \
         with: {{ optimizer: adamw, lr: 0.001, weight_decay: 0.01, epochs: {epochs}, batch_size: 64 }} }}\n"
    )
}

/// Times the training node alone, `iters` times.
pub fn time_fit(text: &str, iters: u64) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let plan = kiln_engine::load_str(text, &dir.path().join("bench.yaml"), &registry(), &[])
        .expect("valid");
    let opts = RunOptions {
        memo: None,
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cache: CacheMode::Off,
        out_dir: dir.path().join("out"),
        stores: Default::default(),
        selection: Selection::All,
        cancel: Default::default(),
        observer: Arc::new(Quiet),
    };
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let report = kiln_engine::run(&plan, &opts).expect("runs");
        assert!(report.succeeded(), "{:?}", report.nodes);
        let fit = report
            .nodes
            .iter()
            .find(|n| n.id == "fit")
            .expect("fit node");
        total += Duration::from_secs_f64(fit.seconds);
    }
    total
}

/// MLP, CNN and LSTM training as in the PyTorch peer.
pub fn peer_workloads(c: &mut Criterion) {
    pin_threads();
    let mut group = c.benchmark_group("training");
    let cases = [
        ("mlp", "{ kind: model.mlp, with: { hidden: [128, 128] } }", 20, 1797),
        (
            "cnn",
            "{ kind: model.cnn, with: { input_shape: [1, 8, 8], layers: [{ conv: 16, kernel: 3, padding: 1 }, { conv: 32, kernel: 3, padding: 1 }, { pool: 2 }] } }",
            10,
            1797,
        ),
        ("lstm", "{ kind: model.rnn, with: { cell: lstm, hidden: 64 } }", 5, 2048),
    ];
    for (name, model, epochs, n) in cases {
        group.throughput(Throughput::Elements((n * epochs) as u64));
        let text = pipeline(name, model, epochs);
        group.bench_function(name, |b| b.iter_custom(|iters| time_fit(&text, iters)));
    }
    group.finish();
}

/// The thread settings `kiln` itself uses (see `src/main.rs`).
pub fn pin_threads() {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    std::env::set_var("CANDLE_NUM_THREADS", "1");
}

/// The MLP loop by hand in plain candle (candle-nn's AdamW), same data and
/// shapes: what the engine's training node costs on top.
pub fn plain_candle_mlp(c: &mut Criterion) {
    pin_threads();
    let dev = Device::Cpu;
    let (x, y) = digits_tensors(&dev);
    let n = x.dim(0).expect("rows");
    let mut group = c.benchmark_group("training");
    group.throughput(Throughput::Elements((n * 20) as u64));
    group.bench_function("mlp-plain-candle", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t0 = Instant::now();
                train_plain(&x, &y, 20).expect("trains");
                total += t0.elapsed();
            }
            total
        })
    });
    group.finish();
}

fn digits_tensors(dev: &Device) -> (Tensor, Tensor) {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(digits_path()).expect("digits"))
        .read_to_string(&mut text)
        .expect("gzip");
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let cells: Vec<f32> = line
            .split(',')
            .map(|c| c.parse().expect("number"))
            .collect();
        xs.extend(cells[..64].iter().map(|v| v / 16.0));
        ys.push(cells[64] as u32);
    }
    let n = ys.len();
    (
        Tensor::from_vec(xs, (n, 64), dev).expect("x"),
        Tensor::from_vec(ys, n, dev).expect("y"),
    )
}

fn train_plain(x: &Tensor, y: &Tensor, epochs: usize) -> candle_core::Result<()> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, x.device());
    let l1 = candle_nn::linear(64, 128, vb.pp("l1"))?;
    let l2 = candle_nn::linear(128, 128, vb.pp("l2"))?;
    let l3 = candle_nn::linear(128, 10, vb.pp("l3"))?;
    let params = candle_nn::ParamsAdamW {
        lr: 1e-3,
        weight_decay: 0.01,
        ..Default::default()
    };
    let mut opt = candle_nn::AdamW::new(varmap.all_vars(), params)?;
    let n = x.dim(0)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut order: Vec<u32> = (0..n as u32).collect();
    for _ in 0..epochs {
        use rand::seq::SliceRandom;
        order.shuffle(&mut rng);
        for rows in order.chunks(64) {
            let idx = Tensor::from_slice(rows, rows.len(), x.device())?;
            let (xb, yb) = (x.index_select(&idx, 0)?, y.index_select(&idx, 0)?);
            let h = l2.forward(&l1.forward(&xb)?.relu()?)?.relu()?;
            let loss = candle_nn::loss::cross_entropy(&l3.forward(&h)?, &yb)?;
            let _ = loss.to_scalar::<f32>()?;
            opt.backward_step(&loss)?;
        }
    }
    Ok(())
}
