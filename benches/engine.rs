//! Engine overhead: parsing and validating 10k-node pipelines, scheduling
//! overhead per node, and wall time of two independent branches of real work
//! with `--jobs 1` versus `--jobs 2`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput};
use kiln_engine::{
    CacheMode, Config, InputSpec, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName,
    Quiet, Registry, RunContext, RunOptions, Selection, Value, ValueType,
};
use serde_json::json;

const N: usize = 10_000;

/// A node that does nothing but pass a tiny value on: what is left is engine overhead.
struct Noop;

impl NodeKind for Noop {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "bench.noop",
            version: 1,
            doc: "passes a tiny value on",
            inputs: vec![InputSpec::optional("in", ValueType::Metrics, "anything").many()],
            outputs: vec![OutputSpec::new("out", ValueType::Metrics, "a tiny value")],
            settings: vec![],
            side_effects: false,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let n = ctx.inputs("in").len();
        Ok(vec![(
            PortName::new_static("out"),
            Value::from_json(ValueType::Metrics, json!({ "n": n })),
        )])
    }
}

/// Real work: `rounds` 256×256 matrix products, on the node's thread.
struct Burn;

#[derive(Config, serde::Deserialize)]
struct BurnSettings {
    /// products
    #[setting(default = 100, min = 1)]
    rounds: usize,
}

impl NodeKind for Burn {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "bench.burn",
            version: 1,
            doc: "multiplies matrices",
            inputs: vec![],
            outputs: vec![OutputSpec::new("out", ValueType::Tensor, "the product")],
            settings: BurnSettings::specs(),
            side_effects: false,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let rounds = ctx.settings().read::<BurnSettings>()?.rounds;
        let a = Tensor::ones((256, 256), candle_core::DType::F32, &Device::Cpu)?;
        let mut x = a.clone();
        for _ in 0..rounds {
            x = (x.matmul(&a)? * (1.0 / 256.0))?;
        }
        let value = Value::new(
            ValueType::Tensor,
            BTreeMap::from([("x".to_string(), x)]),
            json!({}),
        );
        Ok(vec![(PortName::new_static("out"), value)])
    }
}

fn registry() -> Registry {
    let mut reg = kiln_nodes::registry();
    reg.register(Noop);
    reg.register(Burn);
    reg
}

fn chain(n: usize) -> String {
    let mut s = String::from("pipeline: chain\nnodes:\n  n0: { kind: bench.noop }\n");
    for i in 1..n {
        s.push_str(&format!(
            "  n{i}: {{ kind: bench.noop, inputs: {{ in: n{} }} }}\n",
            i - 1
        ));
    }
    s
}

fn fan(n: usize) -> String {
    let mut s = String::from("pipeline: fan\nnodes:\n  src: { kind: bench.noop }\n");
    for i in 0..n - 2 {
        s.push_str(&format!(
            "  b{i}: {{ kind: bench.noop, inputs: {{ in: src }} }}\n"
        ));
    }
    let refs: Vec<String> = (0..n - 2).map(|i| format!("b{i}")).collect();
    s.push_str(&format!(
        "  join: {{ kind: bench.noop, inputs: {{ in: [{}] }} }}\n",
        refs.join(", ")
    ));
    s
}

fn options(jobs: usize, out: &Path) -> RunOptions {
    RunOptions {
        memo: None,
        jobs,
        cache: CacheMode::Off,
        out_dir: out.to_path_buf(),
        stores: Default::default(),
        selection: Selection::All,
        cancel: Default::default(),
        observer: Arc::new(Quiet),
    }
}

/// Parse + validate of 10k-node pipelines (target: under 100 ms).
pub fn parse_and_validate(c: &mut Criterion) {
    let reg = registry();
    let mut group = c.benchmark_group("engine/validate");
    group.throughput(Throughput::Elements(N as u64));
    for (name, text) in [("chain", chain(N)), ("fan", fan(N))] {
        group.bench_with_input(BenchmarkId::new("10k", name), &text, |b, text| {
            b.iter(|| {
                kiln_engine::load_str(text, Path::new("bench.yaml"), &reg, &[]).expect("valid")
            })
        });
    }
    group.finish();
}

/// Scheduling overhead per node: running 10k no-op nodes, cache off (target: under 20 µs per node).
pub fn scheduling_overhead(c: &mut Criterion) {
    let reg = registry();
    let out = tempfile::tempdir().expect("temp dir");
    let mut group = c.benchmark_group("engine/run");
    group.throughput(Throughput::Elements(N as u64));
    for (name, text) in [("chain", chain(N)), ("fan", fan(N))] {
        let plan =
            kiln_engine::load_str(&text, &out.path().join("bench.yaml"), &reg, &[]).expect("valid");
        for jobs in [1, 2] {
            group.bench_function(
                BenchmarkId::new(format!("10k-{name}"), format!("jobs{jobs}")),
                |b| {
                    b.iter(|| {
                        let report =
                            kiln_engine::run(&plan, &options(jobs, out.path())).expect("runs");
                        assert!(report.succeeded());
                    })
                },
            );
        }
    }
    group.finish();
}

/// A run that changes nothing: 10k cache hits (lookup and verification per node).
pub fn cached_rerun(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine/cached");
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("10k-chain/jobs2", |b| {
        // Filling the cache writes 10k entries: done only when this
        // benchmark is chosen, so it can't slow the others down.
        let reg = registry();
        let dir = tempfile::tempdir().expect("temp dir");
        let plan = kiln_engine::load_str(&chain(N), &dir.path().join("bench.yaml"), &reg, &[])
            .expect("valid");
        let opts = RunOptions {
            cache: CacheMode::Use,
            ..options(2, &dir.path().join("out"))
        };
        assert!(kiln_engine::run(&plan, &opts).expect("runs").succeeded());
        b.iter(|| {
            let report = kiln_engine::run(&plan, &opts).expect("runs");
            assert_eq!(report.count(kiln_engine::Status::Cached), N);
        })
    });
    group.finish();
}

/// Two independent branches of real work: `--jobs 2` should take about half the wall time of `--jobs 1`.
pub fn parallel_branches(c: &mut Criterion) {
    let reg = registry();
    let out = tempfile::tempdir().expect("temp dir");
    let text = "pipeline: branches\nnodes:\n  left: { kind: bench.burn, with: { rounds: 150 } }\n  right: { kind: bench.burn, with: { rounds: 150 } }\n";
    let plan =
        kiln_engine::load_str(text, &out.path().join("bench.yaml"), &reg, &[]).expect("valid");
    let mut group = c.benchmark_group("engine/branches");
    for jobs in [1, 2] {
        group.bench_function(BenchmarkId::new("two-burns", format!("jobs{jobs}")), |b| {
            b.iter(|| {
                let report = kiln_engine::run(&plan, &options(jobs, out.path())).expect("runs");
                assert!(report.succeeded());
            })
        });
    }
    group.finish();
}
