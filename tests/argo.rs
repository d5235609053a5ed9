//! Exported Argo manifests checked as Argo would: against the JSON Schema
//! Argo publishes and the rules its controller adds (`tests/pods.rs` runs
//! their pods).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value as Json;

use crate::common::{assert_exit, kiln, root, text, workspace};
use crate::s3::S3Server;

/// `kiln` in `dir` with the server's environment.
pub(crate) fn kiln_s3(dir: &Path, s3: &S3Server, args: &[&str]) -> Output {
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
pub(crate) fn workflow_validator() -> jsonschema::Validator {
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

pub(crate) fn schema_errors(v: &jsonschema::Validator, manifest: &Json) -> Vec<String> {
    v.iter_errors(manifest)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// What Argo's controller checks beyond the schema
/// (`workflow/validate/validate.go`): template names are unique DNS labels
/// of at most 63 characters, DAG task names unique, every template and
/// dependency reference exists, and the dependencies have no cycle.
pub(crate) fn controller_problems(w: &Json) -> Vec<String> {
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
pub(crate) fn export(dir: &Path, s3: &S3Server, file: &str, extra: &[&str]) -> (Json, String) {
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
pub(crate) fn tasks_of(w: &Json) -> Vec<(String, Vec<String>, Vec<String>)> {
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

#[test]
fn every_example_exports_a_valid_workflow_and_template() {
    // Every example validates as it is exported: their data must be there.
    crate::common::data(&["mnist", "minilm", "smollm2"]);
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
  net: {{ kind: model.mlp, with: {{ hidden: [4] }}, device: cuda }}
  fit: {{ kind: train.supervised, inputs: {{ model: net, train: {long}_2.fit }}, device: cuda }}
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
    assert_eq!(tasks.len(), 7);
    let names: BTreeSet<&String> = tasks.iter().map(|t| &t.0).collect();
    assert_eq!(names.len(), 7);
    // Each pod runs the node it is named for, with the overrides baked in.
    for (_, args, _) in &tasks {
        assert!(args.windows(2).any(|p| p == ["--set", "params.unused=1"]));
    }
    let nodes: BTreeSet<&str> = tasks
        .iter()
        .map(|(_, args, _)| args[args.iter().position(|a| a == "--only").unwrap() + 1].as_str())
        .collect();
    assert_eq!(nodes.len(), 7);
    let templates = w["spec"]["templates"].as_array().unwrap();
    let gpu: Vec<&Json> = templates
        .iter()
        .filter(|t| !t["container"]["resources"]["limits"]["nvidia.com/gpu"].is_null())
        .collect();
    // Only training computes on a device: the standardisation and the
    // model's description run on the CPU whatever `device:` says, so their
    // pods ask for no GPU.
    assert_eq!(gpu.len(), 1);
    let gpu_node = &gpu[0]["container"]["args"];
    assert!(
        gpu_node
            .as_array()
            .unwrap()
            .windows(2)
            .any(|p| p[0] == "--only" && p[1] == "fit"),
        "{gpu_node}"
    );
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
