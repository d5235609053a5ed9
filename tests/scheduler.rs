//! The scheduler through the engine's API, with test-only kinds: readiness
//! is per node, panics become failures, cancellation stops the run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_engine::{
    CacheMode, CancelToken, Config, InputSpec, KindSpec, NodeError, NodeKind, OutputSpec, Outputs,
    PortName, Quiet, Registry, RunContext, RunOptions, Selection, Status, Value, ValueType,
};
use serde_json::json;

static RELEASED: AtomicBool = AtomicBool::new(false);

/// `wait` blocks until `release` has run (or 20 s pass); `release` opens it;
/// `boom` panics; `seed` outputs its node seed.
struct Test;

kiln_engine::choices! {
    enum Act { Wait = "wait", Release = "release", Boom = "boom", Seed = "seed", Pass = "pass" }
}

#[derive(Config, serde::Deserialize)]
struct TestSettings {
    /// what to do
    #[setting(default = "pass")]
    act: Act,
}

impl NodeKind for Test {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "test.step",
            version: 1,
            doc: "test-only behaviours",
            inputs: vec![InputSpec::optional("in", ValueType::Metrics, "anything").many()],
            outputs: vec![OutputSpec::new("out", ValueType::Metrics, "a value")],
            settings: TestSettings::specs(),
            side_effects: false,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        match ctx.settings().read::<TestSettings>()?.act {
            Act::Wait => {
                let t0 = Instant::now();
                while !RELEASED.load(Ordering::SeqCst) {
                    if t0.elapsed() > Duration::from_secs(20) {
                        return Err(NodeError::new(
                            "never released: the other branch waited on this one",
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            Act::Release => RELEASED.store(true, Ordering::SeqCst),
            Act::Boom => panic!("kaboom"),
            _ => {}
        }
        let out = Value::from_json(
            ValueType::Metrics,
            json!({ "seed": ctx.seed().to_string() }),
        );
        Ok(vec![(PortName::new_static("out"), out)])
    }
}

fn registry() -> Registry {
    let mut reg = Registry::new();
    reg.register(Test);
    reg
}

fn run(text: &str, jobs: usize, cancel: CancelToken) -> kiln_engine::RunReport {
    let dir = tempfile::tempdir().unwrap();
    let plan = kiln_engine::load_str(text, &dir.path().join("p.yaml"), &registry(), &[]).unwrap();
    let opts = RunOptions {
        memo: None,
        jobs,
        cache: CacheMode::Off,
        out_dir: dir.path().join("out"),
        stores: Default::default(),
        selection: Selection::All,
        cancel,
        observer: Arc::new(Quiet),
    };
    kiln_engine::run(&plan, &opts).unwrap()
}

fn status(report: &kiln_engine::RunReport, id: &str) -> Status {
    report.nodes.iter().find(|n| n.id == id).unwrap().status
}

#[test]
fn a_ready_node_never_waits_on_an_unrelated_one() {
    // `blocked` is declared (and becomes ready) first, and blocks until
    // `opener`, two steps down another branch, has run.
    let report = run(
        "pipeline: p
nodes:
  blocked: { kind: test.step, with: { act: wait } }
  start: { kind: test.step }
  opener: { kind: test.step, inputs: { in: start }, with: { act: release } }
",
        2,
        CancelToken::new(),
    );
    assert!(report.succeeded(), "{:?}", report.nodes);
}

#[test]
fn a_panicking_node_fails_alone() {
    let report = run(
        "pipeline: p
nodes:
  a: { kind: test.step, with: { act: boom } }
  b: { kind: test.step, inputs: { in: a } }
  c: { kind: test.step }
",
        2,
        CancelToken::new(),
    );
    assert_eq!(status(&report, "a"), Status::Failed);
    let error = report.nodes[0].error.clone().unwrap();
    assert!(
        error.contains("internal error in `test.step`: kaboom"),
        "{error}"
    );
    assert_eq!(status(&report, "b"), Status::Skipped);
    assert_eq!(status(&report, "c"), Status::Ran);
}

#[test]
fn a_cancelled_run_starts_nothing() {
    let cancel = CancelToken::new();
    cancel.cancel();
    let report = run("pipeline: p\nnodes:\n  a: { kind: test.step }\n  b: { kind: test.step, inputs: { in: a } }\n", 1, cancel);
    assert_eq!(report.count(Status::Skipped), 2);
    assert_eq!(report.count(Status::Ran), 0);
}

#[test]
fn node_seeds_follow_the_node_not_the_schedule() {
    let text = "pipeline: p\nseed: 5\nnodes:\n  a: { kind: test.step, with: { act: seed } }\n  b: { kind: test.step, with: { act: seed } }\n";
    let seeds = |jobs| {
        let report = run(text, jobs, CancelToken::new());
        report
            .nodes
            .iter()
            .map(|n| n.fingerprint.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(seeds(1), seeds(2));
}
