//! The cluster without a cluster: the pods of exported manifests run as
//! separate kiln processes, each in an empty folder, sharing nothing but a
//! real S3-protocol server; and what goes wrong on a cluster (a pod killed
//! mid-write, two pods on one node, the store dying).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value as Json;

use crate::argo::{export, kiln_s3, tasks_of};
use crate::common::{assert_exit, kiln, text, workspace};
use crate::s3::S3Server;

/// Runs every task's pod as its own process in its own empty folder, two
/// at a time, each once its dependencies finished; returns each pod's output.
fn run_pods(w: &Json, s3: &S3Server) -> BTreeMap<String, Output> {
    run_pods_by(w, s3, 2).0
}

/// As [`run_pods`], `at_once` pods at a time; also the bytes each pod read
/// from the store (exact when one runs at a time).
fn run_pods_by(
    w: &Json,
    s3: &S3Server,
    at_once: usize,
) -> (BTreeMap<String, Output>, BTreeMap<String, u64>) {
    let mut bytes = BTreeMap::new();
    let tasks = tasks_of(w);
    let mut done: BTreeMap<String, Output> = BTreeMap::new();
    while done.len() < tasks.len() {
        let ready: Vec<_> = tasks
            .iter()
            .filter(|(name, _, deps)| {
                !done.contains_key(name) && deps.iter().all(|d| done.contains_key(d))
            })
            .take(at_once)
            .collect();
        s3.take_bytes_served();
        assert!(!ready.is_empty(), "no task can start");
        let outputs: Vec<(String, Output)> = std::thread::scope(|scope| {
            let handles: Vec<_> = ready
                .iter()
                .map(|(name, args, _)| {
                    scope.spawn(move || {
                        let pod = tempfile::tempdir().unwrap();
                        let args: Vec<&str> = args.iter().map(String::as_str).collect();
                        (name.clone(), kiln_s3(pod.path(), s3, &args))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let served = s3.take_bytes_served();
        for (name, out) in outputs {
            assert_exit(&out, 0);
            bytes.insert(name.clone(), served);
            done.insert(name, out);
        }
    }
    (done, bytes)
}

fn files_below(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if entry.file_type().is_file() {
            let rel = entry.path().strip_prefix(dir).unwrap();
            out.insert(
                rel.display().to_string(),
                std::fs::read(entry.path()).unwrap(),
            );
        }
    }
    out
}

#[test]
fn pods_sharing_only_the_store_compute_what_a_local_run_does() {
    let s3 = S3Server::start();
    for (file, name) in [
        ("iris-mlp.yaml", "iris-mlp"),
        ("digits-cnn.yaml", "digits-cnn"),
    ] {
        let ws = workspace();
        let (w, _) = export(ws.path(), &s3, file, &[]);
        assert_eq!(w["spec"]["parallelism"], 2);
        let pods = run_pods(&w, &s3);
        // Every node ran once, each in its own pod, everything else read from the store.
        for (task, out) in &pods {
            let (stdout, stderr) = text(out);
            assert!(stdout.contains("ran 1, reused"), "{task}: {stdout}{stderr}");
        }

        // The same pipeline run locally, with a local cache.
        let local = workspace();
        assert_exit(&kiln(local.path(), &["run", file]), 0);
        let local_out = local.path().join("runs").join(name);

        // Against the store nothing runs, and what it reports and wrote is
        // bit for bit what the local run did.
        let fresh = tempfile::tempdir().unwrap();
        let check = workspace();
        let remote_out = s3.url(&format!("cache/runs/{name}"));
        let out = kiln_s3(
            check.path(),
            &s3,
            &[
                "run",
                file,
                "--cache",
                &s3.url("cache"),
                "--out",
                &remote_out,
            ],
        );
        assert_exit(&out, 0);
        assert!(text(&out).0.contains("ran 0, reused"), "{}", text(&out).0);
        drop(fresh);
        let bucket_out = s3.bucket_dir().join("kiln/cache/runs").join(name);
        let remote_files = files_below(&bucket_out);
        let local_files = files_below(&local_out);
        let names: Vec<&String> = local_files.keys().filter(|n| *n != "run.json").collect();
        assert!(names.len() >= 2, "{names:?}");
        for n in names {
            assert!(
                remote_files.get(n) == local_files.get(n),
                "{name}: {n} differs"
            );
        }

        // Exported again, only what is not in the store is left: nothing.
        let (w, stderr) = export(ws.path(), &s3, file, &["--skip-cached"]);
        assert!(w.is_null(), "{w}");
        assert!(stderr.contains("already in the cache"), "{stderr}");
    }
}

#[test]
fn a_pod_fetches_only_what_its_node_reads() {
    let s3 = S3Server::start();
    let ws = workspace();
    let (w, _) = export(ws.path(), &s3, "digits-cnn.yaml", &[]);
    let (_, bytes) = run_pods_by(&w, &s3, 1);
    let data = std::fs::metadata(ws.path().join("data/digits.csv.gz"))
        .unwrap()
        .len();
    let store = |kind: &str| -> BTreeMap<String, u64> {
        files_below(&s3.bucket_dir().join("kiln/cache").join(kind))
            .into_iter()
            .map(|(k, v)| (k, v.len() as u64))
            .collect()
    };
    let blobs: u64 = store("blobs").values().sum();
    // The source reads the data file; the network's definition reads nothing
    // but the pipeline and its record; training reads its inputs, not the
    // file nor every value in the store.
    assert!(bytes["digits"] >= data, "{bytes:?}");
    assert!(
        bytes["net"] < data / 4,
        "{bytes:?} (data file: {data} bytes)"
    );
    assert!(
        bytes["fit"] < blobs,
        "{bytes:?} (all values: {blobs} bytes)"
    );
}

#[test]
fn serve_answers_from_what_the_cluster_trained_without_training() {
    let s3 = S3Server::start();
    let ws = workspace();
    let (w, _) = export(ws.path(), &s3, "iris-mlp.yaml", &[]);
    run_pods(&w, &s3);
    let row = serde_json::json!([{ "sepal_length": 6.3, "sepal_width": 2.5, "petal_length": 5.0, "petal_width": 1.9 }]);
    let ask = |cache: Option<String>| {
        let dir = workspace();
        let mut args = vec!["iris-mlp.yaml".to_string()];
        args.extend(cache.into_iter().flat_map(|c| ["--cache".to_string(), c]));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = crate::serve::Server::start_env(dir.path(), &args, &s3.env());
        (server.log(), server.infer(row.clone()))
    };
    let (log, remote) = ask(Some(s3.url("cache")));
    assert!(log.contains("ran 0,"), "{log}");
    let (_, local) = ask(None);
    assert_eq!(remote.0, 200);
    assert_eq!(remote, local);
}

fn objects(s3: &S3Server, kind: &str) -> BTreeSet<String> {
    files_below(&s3.bucket_dir().join("kiln/cache").join(kind))
        .into_keys()
        .collect()
}

/// Exports iris-mlp and runs its pods up to (not including) `fit`; returns
/// the manifest's tasks and fit's pod arguments.
fn up_to_fit(s3: &S3Server, ws: &Path) -> (Json, Vec<String>) {
    let (w, _) = export(ws, s3, "iris-mlp.yaml", &[]);
    let tasks = tasks_of(&w);
    let fit = tasks.iter().find(|t| t.0 == "fit").unwrap().clone();
    let mut before = w.clone();
    let keep: BTreeSet<String> = fit.2.iter().cloned().collect();
    let dag = &mut before["spec"]["templates"][0]["dag"]["tasks"];
    let upstream: Vec<Json> = dag
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            keep.contains(t["name"].as_str().unwrap())
                || t["name"] == "iris"
                || t["name"] == "split"
        })
        .cloned()
        .collect();
    *dag = Json::Array(upstream);
    run_pods(&before, s3);
    (w, fit.1)
}

/// A pod: `kiln args…` in a fresh empty folder below `under` (removed with it).
fn pod(s3: &S3Server, args: &[String], under: &Path) -> std::process::Child {
    let dir = tempfile::tempdir_in(under).unwrap().keep();
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(dir)
        .envs(s3.env())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_pod_killed_while_writing_leaves_nothing_and_its_retry_completes() {
    let s3 = S3Server::start();
    let ws = workspace();
    let (_, fit) = up_to_fit(&s3, ws.path());
    let pods = tempfile::tempdir().unwrap();
    let entries = objects(&s3, "entries");

    s3.stall_value_uploads(true);
    let mut child = pod(&s3, &fit, pods.path());
    s3.wait_for_held_upload();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    s3.stall_value_uploads(false);
    assert_eq!(
        objects(&s3, "entries"),
        entries,
        "a killed pod left a record"
    );

    // The retry: the same pod again.
    let out = pod(&s3, &fit, pods.path()).wait_with_output().unwrap();
    assert_exit(&out, 0);
    assert!(text(&out).0.contains("ran 1, reused"), "{}", text(&out).0);
    assert_eq!(objects(&s3, "entries").len(), entries.len() + 1);
}

#[test]
fn two_pods_computing_the_same_node_leave_one_entry_and_both_succeed() {
    let s3 = S3Server::start();
    let ws = workspace();
    let (_, fit) = up_to_fit(&s3, ws.path());
    let pods = tempfile::tempdir().unwrap();
    let entries = objects(&s3, "entries");
    let (a, b) = (pod(&s3, &fit, pods.path()), pod(&s3, &fit, pods.path()));
    for out in [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()] {
        assert_exit(&out, 0);
    }
    assert_eq!(objects(&s3, "entries").len(), entries.len() + 1);
    // What is there reads back: the node is found, not run, by a third pod.
    let out = pod(&s3, &fit, pods.path()).wait_with_output().unwrap();
    assert!(text(&out).0.contains("ran 0, reused"), "{}", text(&out).0);
}

#[test]
fn a_store_that_dies_mid_run_is_an_error_naming_it_and_caches_nothing_wrong() {
    let mut s3 = S3Server::start();
    let ws = workspace();
    let cache = s3.url("cache");
    s3.stall_value_uploads(true);
    let child = {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.args(["run", "iris-mlp.yaml", "--cache", &cache])
            .current_dir(ws.path())
            .envs(s3.env())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    s3.wait_for_held_upload();
    s3.stop();
    let started = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let (_, stderr) = text(&out);
    assert!(stderr.contains("s3://kiln/cache"), "{stderr}");
    assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());

    // Back up: the run completes, with what a local run computes.
    let s3 = s3.restart();
    let out = kiln_s3(ws.path(), &s3, &["run", "iris-mlp.yaml", "--cache", &cache]);
    assert_exit(&out, 0);
    let remote = std::fs::read(ws.path().join("runs/iris-mlp/metrics.json")).unwrap();
    let local = workspace();
    assert_exit(&kiln(local.path(), &["run", "iris-mlp.yaml"]), 0);
    let expected = std::fs::read(local.path().join("runs/iris-mlp/metrics.json")).unwrap();
    assert!(
        remote == expected,
        "the store's results differ from a local run"
    );
}

#[test]
fn a_sweep_exports_one_task_per_distinct_node_and_its_pods_complete_it() {
    let s3 = S3Server::start();
    let ws = workspace();
    let file = ws.path().join("iris-mlp.yaml");
    let pipeline = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        format!("{pipeline}sweep:\n  params: {{ lr: [0.003, 0.03], hidden: [[16], [32], [64, 64]] }}\n  metric: eval.metrics.accuracy\n  parallel: 3\n"),
    )
    .unwrap();
    let (w, _) = export(ws.path(), &s3, "iris-mlp.yaml", &[]);
    let tasks = tasks_of(&w);
    // Shared by all six trials: iris, split, scale, request, request_scaled;
    // `net` by the two trials of each width; the rest once per trial.
    assert_eq!(
        tasks.len(),
        5 + 3 + 6 * 7,
        "{:?}",
        tasks.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    for shared in ["iris", "split", "scale"] {
        let (_, args, _) = tasks.iter().find(|t| t.0 == shared).unwrap();
        assert!(!args.iter().any(|a| a.starts_with("params.")), "{args:?}");
    }
    let fits: Vec<_> = tasks.iter().filter(|t| t.0.starts_with("fit")).collect();
    assert_eq!(fits.len(), 6);
    assert!(fits
        .iter()
        .all(|t| t.1.iter().any(|a| a.starts_with("params.lr="))));
    run_pods(&w, &s3);
    // Each trial's files are under its own folder of the output.
    let runs = s3.bucket_dir().join("kiln/cache/runs/iris-mlp/sweep");
    for trial in 1..=6 {
        assert!(runs
            .join(format!("trial-{trial}/iris-mlp.safetensors"))
            .is_file());
    }
    // Every result the sweep needs is in the store: run here, it computes
    // nothing but its sinks' files in its local output folder (two per trial).
    let out = kiln_s3(
        ws.path(),
        &s3,
        &["sweep", "iris-mlp.yaml", "--cache", &s3.url("cache")],
    );
    assert_exit(&out, 0);
    assert!(
        text(&out).0.contains("12 node runs over 6 trials"),
        "{}",
        text(&out).0
    );
}
