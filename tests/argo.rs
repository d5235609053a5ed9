//! The cluster without a cluster: exported Argo manifests checked against
//! Argo's published schema and its controller's rules, and their pods run as
//! separate kiln processes, each in an empty folder, sharing nothing but a
//! real S3-protocol server.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value as Json;

use crate::common::{assert_exit, kiln, root, text, workspace};
use crate::s3::S3Server;

/// `kiln` in `dir` with the server's environment.
fn kiln_s3(dir: &Path, s3: &S3Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(dir)
        .envs(s3.env())
        .env_remove("KILN_DEBUG")
        .output()
        .expect("the kiln binary runs")
}

fn yaml_file(path: &Path) -> Json {
    let text = std::fs::read_to_string(path).unwrap();
    kiln_engine::yaml::parse_value(&text).unwrap().to_json()
}

/// A validator for Argo's `Workflow` from the schema Argo publishes.
fn workflow_validator() -> jsonschema::Validator {
    validator("io.argoproj.workflow.v1alpha1.Workflow")
}

/// A validator for one of the schema's definitions.
fn validator(definition: &str) -> jsonschema::Validator {
    let schema: Json = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/argo/workflow-schema.json")).unwrap(),
    )
    .unwrap();
    let wrapper = serde_json::json!({
        "$schema": schema["$schema"],
        "definitions": schema["definitions"],
        "$ref": format!("#/definitions/{definition}"),
    });
    jsonschema::validator_for(&wrapper).unwrap()
}

fn schema_errors(v: &jsonschema::Validator, manifest: &Json) -> Vec<String> {
    v.iter_errors(manifest)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// What Argo's controller checks beyond the schema
/// (`workflow/validate/validate.go`): template names are unique DNS labels
/// of at most 63 characters, DAG task names unique, every template and
/// dependency reference exists, and the dependencies have no cycle.
fn controller_problems(w: &Json) -> Vec<String> {
    let mut problems = Vec::new();
    let label = regex::Regex::new("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").unwrap();
    let task_name = regex::Regex::new("^[a-zA-Z0-9][-a-zA-Z0-9]*$").unwrap();
    let templates = w["spec"]["templates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut names = BTreeSet::new();
    for t in &templates {
        let name = t["name"].as_str().unwrap_or_default();
        if !label.is_match(name) || name.len() > 63 {
            problems.push(format!("template name `{name}` is not a DNS label"));
        }
        if !names.insert(name.to_string()) {
            problems.push(format!("template `{name}` is defined twice"));
        }
    }
    let entry = w["spec"]["entrypoint"].as_str().unwrap_or_default();
    if !names.contains(entry) {
        problems.push(format!("entrypoint `{entry}` is no template"));
    }
    for t in &templates {
        let Some(tasks) = t["dag"]["tasks"].as_array() else {
            continue;
        };
        let mut deps: HashMap<String, Vec<String>> = HashMap::new();
        for task in tasks {
            let name = task["name"].as_str().unwrap_or_default().to_string();
            if !task_name.is_match(&name) {
                problems.push(format!("task name `{name}` is not allowed"));
            }
            let template = task["template"].as_str().unwrap_or_default();
            if !names.contains(template) {
                problems.push(format!("task `{name}` uses missing template `{template}`"));
            }
            let mut d: Vec<String> = task["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect();
            if let Some(expr) = task["depends"].as_str() {
                d.extend(
                    expr.split(|c: char| "&|!() ".contains(c))
                        .filter(|s| !s.is_empty())
                        .map(|s| s.split('.').next().unwrap_or(s).to_string()),
                );
            }
            if deps.insert(name.clone(), d).is_some() {
                problems.push(format!("task `{name}` is defined twice"));
            }
        }
        for (name, ds) in &deps {
            for d in ds {
                if !deps.contains_key(d) {
                    problems.push(format!("task `{name}` depends on missing task `{d}`"));
                }
            }
        }
        // Kahn: every task must come out.
        let mut indeg: HashMap<&str, usize> =
            deps.iter().map(|(k, v)| (k.as_str(), v.len())).collect();
        let mut ready: Vec<&str> = indeg
            .iter()
            .filter(|(_, &n)| n == 0)
            .map(|(k, _)| *k)
            .collect();
        let mut seen = 0;
        while let Some(at) = ready.pop() {
            seen += 1;
            for (k, v) in &deps {
                if v.iter().any(|d| d == at) {
                    let n = indeg.get_mut(k.as_str()).unwrap();
                    *n -= 1;
                    if *n == 0 {
                        ready.push(k);
                    }
                }
            }
        }
        if seen != deps.len() {
            problems.push("the DAG has a cycle".into());
        }
    }
    problems
}

#[test]
fn argos_own_examples_pass_the_checks_and_broken_manifests_do_not() {
    let v = workflow_validator();
    let mut examples = 0;
    for entry in std::fs::read_dir(root().join("tests/argo/examples")).unwrap() {
        let path = entry.unwrap().path();
        let w = yaml_file(&path);
        assert_eq!(
            schema_errors(&v, &w),
            Vec::<String>::new(),
            "{}",
            path.display()
        );
        assert_eq!(
            controller_problems(&w),
            Vec::<String>::new(),
            "{}",
            path.display()
        );
        examples += 1;
    }
    assert_eq!(examples, 5);
    // The checks can fail: a container without an image, a wrongly typed
    // retry limit, a dependency on a missing task, a cycle.
    let mut w = yaml_file(&root().join("tests/argo/examples/dag-diamond.yaml"));
    w["spec"]["templates"][1]["container"]
        .as_object_mut()
        .unwrap()
        .remove("image");
    w["spec"]["templates"][1]["retryStrategy"] = serde_json::json!({ "limit": [1] });
    let errors = schema_errors(&v, &w);
    assert!(errors.iter().any(|e| e.contains("image")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("limit")), "{errors:?}");
    let mut w = yaml_file(&root().join("tests/argo/examples/dag-diamond.yaml"));
    w["spec"]["templates"][0]["dag"]["tasks"][0]["depends"] = "D".into();
    w["spec"]["templates"][0]["dag"]["tasks"][1]["depends"] = "Z".into();
    let problems = controller_problems(&w);
    assert!(
        problems.contains(&"the DAG has a cycle".to_string()),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("missing task `Z`")),
        "{problems:?}"
    );
}

/// Exports `file` (in `dir`) as JSON and checks it like Argo would.
fn export(dir: &Path, s3: &S3Server, file: &str, extra: &[&str]) -> (Json, String) {
    let cache = s3.url("cache");
    let mut args = vec!["export", "argo", file, "--image", "ghcr.io/kiln/kiln:test"];
    args.extend(["--cache", &cache, "--format", "json", "-j", "2"]);
    args.extend(extra);
    let out = kiln_s3(dir, s3, &args);
    assert_exit(&out, 0);
    let (stdout, stderr) = text(&out);
    if stdout.trim().is_empty() {
        return (Json::Null, stderr);
    }
    let w: Json = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        schema_errors(&workflow_validator(), &w),
        Vec::<String>::new()
    );
    assert_eq!(controller_problems(&w), Vec::<String>::new());
    (w, stderr)
}

/// (task name, the pod's arguments, its dependencies), in manifest order.
fn tasks_of(w: &Json) -> Vec<(String, Vec<String>, Vec<String>)> {
    let templates = w["spec"]["templates"].as_array().unwrap();
    let by_name: HashMap<&str, &Json> = templates
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t))
        .collect();
    let entry = by_name[w["spec"]["entrypoint"].as_str().unwrap()];
    entry["dag"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let template = by_name[t["template"].as_str().unwrap()];
            assert_eq!(
                template["container"]["command"],
                serde_json::json!(["kiln"])
            );
            let args = template["container"]["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect();
            let deps = t["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| d.as_str().unwrap().to_string())
                .collect();
            (t["name"].as_str().unwrap().to_string(), args, deps)
        })
        .collect()
}

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
fn every_example_exports_a_valid_workflow_and_template() {
    crate::common::data(&["mnist", "minilm"]);
    let ws = workspace();
    let store = tempfile::tempdir().unwrap();
    let cache = format!("file://{}", store.path().display());
    let (workflow, template) = (
        workflow_validator(),
        validator("io.argoproj.workflow.v1alpha1.WorkflowTemplate"),
    );
    let mut exported = 0;
    for entry in std::fs::read_dir(ws.path()).unwrap() {
        let file = entry.unwrap().path();
        if file.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let name = file.file_name().unwrap().to_str().unwrap();
        for (kind, validator) in [("--format", &workflow), ("--workflow-template", &template)] {
            let mut args = vec!["export", "argo", name, "--image", "kiln", "--cache", &cache];
            args.extend(["--format", "json"]);
            if kind == "--workflow-template" {
                args.push(kind);
            }
            let out = kiln(ws.path(), &args);
            assert_exit(&out, 0);
            let w: Json = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(schema_errors(validator, &w), Vec::<String>::new(), "{name}");
            assert_eq!(controller_problems(&w), Vec::<String>::new(), "{name}");
        }
        exported += 1;
    }
    assert!(exported >= 17, "{exported}");
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

#[test]
fn names_map_one_to_one_and_gpu_nodes_ask_for_gpus() {
    let s3 = S3Server::start();
    let ws = workspace();
    let long =
        "a_very_long_node_id_that_goes_well_past_the_sixty_three_characters_kubernetes_allows";
    let yaml = format!(
        r#"pipeline: names_and_gpus
seed: 1
params: {{ unused: 0 }}
nodes:
  iris: {{ kind: source.csv, with: {{ path: data/iris.csv, target: species }} }}
  split_data: {{ kind: preprocess.split, inputs: {{ data: iris }}, with: {{ test: 0.2 }} }}
  split: {{ kind: preprocess.split, inputs: {{ data: iris }}, with: {{ test: 0.3 }} }}
  {long}_1: {{ kind: preprocess.standardize, inputs: {{ fit: split_data.train }} }}
  {long}_2: {{ kind: preprocess.standardize, inputs: {{ fit: split.train }}, device: cuda }}
"#
    );
    std::fs::write(ws.path().join("names.yaml"), yaml).unwrap();
    let (w, _) = export(
        ws.path(),
        &s3,
        "names.yaml",
        &[
            "--gpu-node-selector",
            "gpu=h200",
            "--gpu-toleration",
            "nvidia.com/gpu:NoSchedule",
            "--set",
            "params.unused=1",
        ],
    );
    let tasks = tasks_of(&w);
    assert_eq!(tasks.len(), 5);
    let names: BTreeSet<&String> = tasks.iter().map(|t| &t.0).collect();
    assert_eq!(names.len(), 5);
    // Each pod runs the node it is named for, with the overrides baked in.
    for (_, args, _) in &tasks {
        assert!(args.windows(2).any(|p| p == ["--set", "params.unused=1"]));
    }
    let nodes: BTreeSet<&str> = tasks
        .iter()
        .map(|(_, args, _)| args[args.iter().position(|a| a == "--only").unwrap() + 1].as_str())
        .collect();
    assert_eq!(nodes.len(), 5);
    let templates = w["spec"]["templates"].as_array().unwrap();
    let gpu: Vec<&Json> = templates
        .iter()
        .filter(|t| !t["container"]["resources"]["limits"]["nvidia.com/gpu"].is_null())
        .collect();
    assert_eq!(gpu.len(), 1);
    assert_eq!(
        gpu[0]["container"]["resources"]["limits"]["nvidia.com/gpu"],
        "1"
    );
    assert_eq!(gpu[0]["nodeSelector"]["gpu"], "h200");
    assert_eq!(gpu[0]["tolerations"][0]["key"], "nvidia.com/gpu");
    assert!(templates
        .iter()
        .filter(|t| t["container"].is_object())
        .all(|t| t["retryStrategy"]["limit"] == "2"));
    // The pipeline's name is no label either: it is written as one.
    let generated = w["metadata"]["generateName"].as_str().unwrap();
    assert!(
        generated.starts_with("names-and-gpus-") && generated.len() == 22,
        "{generated}"
    );
}

#[test]
fn bad_export_arguments_are_usage_errors() {
    let ws = workspace();
    let export = |extra: &[&str]| {
        let mut args = vec!["export", "argo", "iris-mlp.yaml", "--image", "x"];
        args.extend(extra);
        kiln(ws.path(), &args)
    };
    let out = export(&["--cache", "ftp://h/x"]);
    assert_exit(&out, 2);
    assert!(text(&out).1.contains("ftp://"), "{}", text(&out).1);
    let out = export(&["--cache", "file:///tmp/x", "--gpu-toleration", "k:Often"]);
    assert_exit(&out, 2);
    assert!(text(&out).1.contains("NoSchedule"), "{}", text(&out).1);
    // A pipeline reading a file outside its folder cannot be shipped.
    let outside = tempfile::tempdir().unwrap();
    std::fs::copy(
        ws.path().join("data/iris.csv"),
        outside.path().join("iris.csv"),
    )
    .unwrap();
    let yaml = format!(
        "pipeline: away\nnodes:\n  iris: {{ kind: source.csv, with: {{ path: {}/iris.csv, target: species }} }}\n",
        outside.path().display()
    );
    std::fs::write(ws.path().join("away.yaml"), yaml).unwrap();
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store.path().display());
    let out = kiln(
        ws.path(),
        &[
            "export",
            "argo",
            "away.yaml",
            "--image",
            "x",
            "--cache",
            &url,
        ],
    );
    assert_exit(&out, 2);
    assert!(
        text(&out).1.contains("outside the pipeline's folder"),
        "{}",
        text(&out).1
    );
    // A content hash with no store to fetch it from.
    let out = kiln(ws.path(), &["run", &"ab".repeat(32)]);
    assert_exit(&out, 2);
    assert!(text(&out).1.contains("--cache"), "{}", text(&out).1);
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

fn pod(s3: &S3Server, args: &[String]) -> std::process::Child {
    let dir = tempfile::tempdir().unwrap().keep();
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
    let entries = objects(&s3, "entries");

    s3.stall_value_uploads(true);
    let mut child = pod(&s3, &fit);
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
    let out = pod(&s3, &fit).wait_with_output().unwrap();
    assert_exit(&out, 0);
    assert!(text(&out).0.contains("ran 1, reused"), "{}", text(&out).0);
    assert_eq!(objects(&s3, "entries").len(), entries.len() + 1);
}

#[test]
fn two_pods_computing_the_same_node_leave_one_entry_and_both_succeed() {
    let s3 = S3Server::start();
    let ws = workspace();
    let (_, fit) = up_to_fit(&s3, ws.path());
    let entries = objects(&s3, "entries");
    let (a, b) = (pod(&s3, &fit), pod(&s3, &fit));
    for out in [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()] {
        assert_exit(&out, 0);
    }
    assert_eq!(objects(&s3, "entries").len(), entries.len() + 1);
    // What is there reads back: the node is found, not run, by a third pod.
    let out = pod(&s3, &fit).wait_with_output().unwrap();
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
