//! Argo Workflows manifests: one DAG task per node, each a pod running the
//! kiln image on exactly that node against the shared store.
//!
//! The pipeline itself travels by content (see `kiln_engine::bundle`): every
//! pod runs `kiln run <bundle hash> --only <node> --cache <store>`, reads its
//! inputs' values from the store, and leaves its result there for the tasks
//! that depend on it. A pod that dies is retried; its half-written result
//! was never visible.

pub mod names;
mod profile;
pub mod yaml;

pub use profile::Profile;

use serde_json::{json, Map, Value as Json};

/// The entry template's name (no node's template takes it).
const ENTRY: &str = "pipeline";

/// One node to run.
pub struct Task {
    /// What the task is called (the node's id, or with its trial: `fit_t3`).
    pub name: String,
    /// The node's id.
    pub id: String,
    /// The tasks (indices) whose results it reads.
    pub after: Vec<usize>,
    /// It asks for a GPU.
    pub gpu: bool,
    /// Its own `--set` arguments (a sweep trial's params), after the shared ones.
    pub sets: Vec<String>,
    /// Where below the output URL its files go (a sweep trial's `sweep/trial-N`).
    pub out_below: Option<String>,
}

/// What every pod runs against.
pub struct Target<'a> {
    /// The pipeline's name.
    pub pipeline: &'a str,
    /// The bundle's content hash.
    pub bundle: &'a str,
    /// The kiln image.
    pub image: &'a str,
    /// The cache's URL.
    pub cache: &'a str,
    /// The output URL.
    pub out: &'a str,
    /// `--set` arguments, baked into every pod.
    pub sets: &'a [String],
    /// Tasks running at once (`spec.parallelism`).
    pub parallelism: Option<usize>,
    /// Retries per pod.
    pub retries: u32,
    /// Emit a `WorkflowTemplate` instead of a `Workflow`.
    pub template: bool,
}

/// The manifest.
pub fn workflow(tasks: &[Task], target: &Target<'_>, profile: &Profile) -> Json {
    let ids: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    let labels = names::labels(&ids, &[ENTRY]);
    let dag_tasks: Vec<Json> = tasks
        .iter()
        .zip(&labels)
        .map(|(task, label)| {
            let mut t = json!({ "name": label, "template": label });
            if !task.after.is_empty() {
                let deps: Vec<&String> = task.after.iter().map(|&i| &labels[i]).collect();
                t["dependencies"] = json!(deps);
            }
            t
        })
        .collect();
    let mut templates = vec![json!({ "name": ENTRY, "dag": { "tasks": dag_tasks } })];
    for (task, label) in tasks.iter().zip(&labels) {
        templates.push(node_template(task, label, target, profile));
    }
    let pipeline = names::labels(&[target.pipeline], &[])[0].clone();
    let mut metadata = json!({
        "labels": { "app.kubernetes.io/managed-by": "kiln", "kiln.dev/pipeline": pipeline },
        "annotations": { "kiln.dev/bundle": target.bundle, "kiln.dev/cache": target.cache },
    });
    let cut = pipeline.len().min(names::MAX_LEN - 6);
    if target.template {
        metadata["name"] = json!(pipeline);
    } else {
        metadata["generateName"] = json!(format!("{}-", &pipeline[..cut]));
    }
    if let Some(ns) = &profile.namespace {
        metadata["namespace"] = json!(ns);
    }
    let mut spec = json!({ "entrypoint": ENTRY, "templates": templates });
    if let Some(n) = target.parallelism {
        spec["parallelism"] = json!(n);
    }
    if let Some(sa) = &profile.service_account_name {
        spec["serviceAccountName"] = json!(sa);
    }
    json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": if target.template { "WorkflowTemplate" } else { "Workflow" },
        "metadata": metadata,
        "spec": spec,
    })
}

fn node_template(task: &Task, label: &str, target: &Target<'_>, profile: &Profile) -> Json {
    let mut args = vec![
        "run".to_string(),
        target.bundle.to_string(),
        "--only".into(),
        task.id.clone(),
        "--cache".into(),
        target.cache.to_string(),
        "--out".into(),
        match &task.out_below {
            Some(sub) => format!("{}/{sub}", target.out),
            None => target.out.to_string(),
        },
    ];
    for set in target.sets.iter().chain(&task.sets) {
        args.push("--set".into());
        args.push(set.clone());
    }
    let mut container = json!({ "image": target.image, "command": ["kiln"], "args": args });
    if let Some(policy) = &profile.image_pull_policy {
        container["imagePullPolicy"] = json!(policy);
    }
    if let Some(secret) = &profile.secret {
        container["envFrom"] = json!([{ "secretRef": { "name": secret } }]);
    }
    if !profile.env.is_empty() {
        let env: Vec<Json> = profile
            .env
            .iter()
            .map(|(name, value)| json!({ "name": name, "value": value }))
            .collect();
        container["env"] = json!(env);
    }
    let mut resources = profile.resources.clone().unwrap_or_else(|| json!({}));
    if task.gpu {
        let limits = resources
            .as_object_mut()
            .map(|r| r.entry("limits").or_insert_with(|| json!({})));
        if let Some(Json::Object(limits)) = limits {
            limits.insert(
                profile.gpu.resource.clone(),
                json!(profile.gpu.count.to_string()),
            );
        }
    }
    if resources.as_object().is_some_and(|r| !r.is_empty()) {
        container["resources"] = resources;
    }
    let mut template = Map::new();
    template.insert("name".into(), json!(label));
    template.insert(
        "metadata".into(),
        json!({ "annotations": { "kiln.dev/node": task.id } }),
    );
    if target.retries > 0 {
        template.insert(
            "retryStrategy".into(),
            json!({
                "limit": target.retries.to_string(),
                "retryPolicy": "Always",
                "backoff": { "duration": "10s", "factor": "2" },
            }),
        );
    }
    if task.gpu {
        if let Some(sel) = &profile.gpu.node_selector {
            template.insert("nodeSelector".into(), json!(sel));
        }
        if !profile.gpu.tolerations.is_empty() {
            template.insert("tolerations".into(), json!(profile.gpu.tolerations));
        }
    } else if let Some(sel) = &profile.node_selector {
        template.insert("nodeSelector".into(), json!(sel));
    }
    template.insert("container".into(), container);
    Json::Object(template)
}
