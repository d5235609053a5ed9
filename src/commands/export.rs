//! `kiln export argo`: a pipeline as an Argo Workflows manifest.

use std::collections::HashSet;
use std::sync::Arc;

use kiln_engine::{CacheMode, Plan, Quiet, Registry, RunOptions, Selection, Status};
use petgraph::Direction;

use crate::argo::{Profile, Target, Task};
use crate::cli::{ArgoArgs, ManifestFormat};
use crate::failure::Failure;

/// Prints the manifest of `args.file` on stdout.
pub fn argo(args: &ArgoArgs, registry: &Registry) -> Result<(), Failure> {
    let invalid = |msg: String| Failure::Invalid(format!("error: {msg}"));
    let place = super::place::resolve(&args.file, Some(&args.cache), None)?;
    let store = place
        .stores
        .cache
        .clone()
        .ok_or_else(|| invalid("--cache is required".into()))?;
    if store.local_dir().is_some() {
        eprintln!(
            "warning: `--cache {}` is a local folder: pods see it only if every one mounts it at that path; an object store (s3://, gs://, az://) is what a cluster shares",
            args.cache
        );
    }
    // The cluster's machines provide the devices, not this one.
    kiln_engine::device::check_devices_elsewhere();
    let plan = super::load::load(&place.file, &args.set, registry)?;
    let mut profile = match &args.profile {
        Some(file) => Profile::read(file).map_err(invalid)?,
        None => Profile::default(),
    };
    for sel in &args.gpu_node_selector {
        profile.select_gpu_nodes(sel).map_err(invalid)?;
    }
    for t in &args.gpu_toleration {
        profile.tolerate_on_gpu(t).map_err(invalid)?;
    }
    if let Some(secret) = &args.secret {
        profile.secret = Some(secret.clone());
    }
    if let Some(ns) = &args.namespace {
        profile.namespace = Some(ns.clone());
    }

    let out = args
        .out
        .clone()
        .unwrap_or_else(|| format!("{}/runs/{}", store.url(), plan.name.as_str()));
    let out_store = super::place::open("--out", &out)?;
    let bundle = kiln_engine::bundle::upload(&plan, &store).map_err(|e| match e {
        kiln_engine::bundle::BundleError::Outside { .. } => invalid(e.to_string()),
        other => Failure::Run(format!("error: {other}")),
    })?;

    // The pipeline, or one variant per sweep trial (its params baked in);
    // a node equal in several trials is one task they share.
    let mut variants = vec![(plan.clone(), Vec::new())];
    if let Some(spec) = &plan.sweep {
        variants.clear();
        for trial in spec.trials(plan.seed) {
            let trial_sets: Vec<String> = trial
                .params
                .iter()
                .map(|(k, v)| format!("params.{k}={}", kiln_engine::yaml::show(v)))
                .collect();
            let all: Vec<String> = args.set.iter().chain(&trial_sets).cloned().collect();
            variants.push((super::load::load(&place.file, &all, registry)?, trial_sets));
        }
    }
    let mut per_variant = Vec::new();
    for (variant, _) in &variants {
        check_passed_through_cache(variant).map_err(invalid)?;
        let cached = if args.skip_cached {
            cached_nodes(variant, &place.stores.cache, out_store.clone())?
        } else {
            HashSet::new()
        };
        per_variant.push((identities(variant), tasks(variant, &cached), cached.len()));
    }
    let tasks = merge(&variants, per_variant.iter().map(|(i, t, _)| (i, t)));
    let cached: usize = per_variant.iter().map(|(_, _, c)| c).sum();
    if tasks.is_empty() {
        // No manifest: Argo refuses a DAG without tasks, and there is nothing to submit.
        eprintln!(
            "every node of `{}` is already in the cache: there is no work to export",
            plan.name
        );
        return Ok(());
    }
    if cached > 0 {
        eprintln!(
            "{cached} node{} already in the cache left out; {} task{} to run",
            if cached == 1 { "" } else { "s" },
            tasks.len(),
            if tasks.len() == 1 { "" } else { "s" }
        );
    }
    let target = Target {
        pipeline: plan.name.as_str(),
        bundle: &bundle,
        image: &args.image,
        cache: store.url(),
        out: &out,
        sets: &args.set,
        parallelism: args
            .jobs
            .map(usize::from)
            .or(plan.sweep.as_ref().map(|s| s.parallel)),
        retries: args.retries,
        template: args.workflow_template,
    };
    let manifest = crate::argo::workflow(&tasks, &target, &profile);
    match args.format {
        ManifestFormat::Yaml => print!("{}", crate::argo::yaml::render(&manifest)),
        ManifestFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&manifest).unwrap_or_default()
        ),
    }
    Ok(())
}

/// Pods pass values through the cache: a node kept out of it (`cache: false`)
/// cannot feed another pod.
fn check_passed_through_cache(plan: &Plan) -> Result<(), String> {
    for (i, node) in plan.nodes.iter().enumerate() {
        let idx = petgraph::graph::NodeIndex::new(i);
        let feeds = plan
            .graph
            .neighbors_directed(idx, Direction::Outgoing)
            .next()
            .is_some();
        if !node.cache && feeds {
            return Err(format!(
                "node `{}` has `cache: false`, but on the cluster the nodes it feeds read its result from the cache: remove `cache: false` to export",
                node.id
            ));
        }
    }
    Ok(())
}

/// The nodes whose results (and written files) are already in the stores.
fn cached_nodes(
    plan: &Plan,
    cache: &Option<kiln_engine::Store>,
    out: kiln_engine::Store,
) -> Result<HashSet<usize>, Failure> {
    let staging = tempfile::tempdir()
        .map_err(|e| Failure::Run(format!("error: cannot create a temporary folder: {e}")))?;
    let opts = RunOptions {
        memo: None,
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cache: CacheMode::Probe,
        out_dir: staging.path().to_path_buf(),
        stores: kiln_engine::Stores {
            cache: cache.clone(),
            out: Some(out),
        },
        selection: Selection::All,
        cancel: Default::default(),
        observer: Arc::new(Quiet),
    };
    let report = kiln_engine::run(plan, &opts)?;
    // Only what was found is left out. A node not found for any reason
    // (not stored, a device this machine lacks, the store failing mid-probe
    // after the upload just reached it) stays a task; a pod that finds its
    // result in the cache runs nothing.
    Ok(report
        .nodes
        .iter()
        .filter(|n| n.status == Status::Cached)
        .filter_map(|n| plan.index_of(&n.id).map(|i| i.index()))
        .collect())
}

/// One task per node that runs on the cluster: not serve-only, not cached;
/// dependencies on tasks only (a cached producer is read from the store).
fn tasks(plan: &Plan, cached: &HashSet<usize>) -> Vec<(usize, Task)> {
    let n = plan.nodes.len();
    let mut serve_only = vec![false; n];
    let order = petgraph::algo::toposort(&plan.graph, None).unwrap_or_default();
    for idx in &order {
        let node = &plan.nodes[idx.index()];
        serve_only[idx.index()] = node.kind.serve_only(&node.settings)
            || plan
                .graph
                .neighbors_directed(*idx, Direction::Incoming)
                .any(|p| serve_only[p.index()]);
    }
    let runs: Vec<bool> = (0..n)
        .map(|i| !serve_only[i] && !cached.contains(&i))
        .collect();
    let mut position = vec![None; n];
    let mut tasks = Vec::new();
    for &idx in &order {
        let i = idx.index();
        if !runs[i] {
            continue;
        }
        let mut after: Vec<usize> = plan
            .graph
            .neighbors_directed(idx, Direction::Incoming)
            .filter_map(|p| position[p.index()])
            .collect();
        after.sort();
        after.dedup();
        let node = &plan.nodes[i];
        position[i] = Some(tasks.len());
        tasks.push((
            i,
            Task {
                name: node.id.to_string(),
                id: node.id.to_string(),
                after,
                gpu: node.device.to_string().starts_with("cuda"),
                sets: Vec::new(),
                out_below: None,
            },
        ));
    }
    tasks
}

/// Each node's identity before anything runs: its kind, settings, device,
/// seed, the content of the files it reads and its inputs' identities. Two
/// trials' nodes with one identity compute the same result.
fn identities(plan: &Plan) -> Vec<String> {
    let mut ids = vec![String::new(); plan.nodes.len()];
    for idx in petgraph::algo::toposort(&plan.graph, None).unwrap_or_default() {
        let node = &plan.nodes[idx.index()];
        let mut h = blake3::Hasher::new();
        for part in [
            node.spec.name.to_string(),
            node.spec.version.to_string(),
            node.written_settings.to_string(),
            node.device.to_string(),
            node.id.to_string(),
            plan.seed.to_string(),
        ] {
            h.update(part.as_bytes()).update(b"\0");
        }
        for file in &node.files {
            let hash = kiln_engine::fingerprint::hash_path(file)
                .unwrap_or_else(|_| file.display().to_string());
            h.update(hash.as_bytes()).update(b"\0");
        }
        for (port, outlets) in &node.inputs {
            h.update(port.as_str().as_bytes());
            for o in outlets {
                h.update(ids[o.node.index()].as_bytes())
                    .update(o.port.as_str().as_bytes());
            }
        }
        ids[idx.index()] = h.finalize().to_hex().to_string();
    }
    ids
}

/// The variants' tasks as one list: one task per distinct node identity,
/// named after the node when every variant shares it, else after the node
/// and the first trial that has it (`fit_t3`), running with that trial's
/// params and writing under `sweep/trial-N` of the output.
fn merge<'a>(
    variants: &[(Plan, Vec<String>)],
    per_variant: impl Iterator<Item = (&'a Vec<String>, &'a Vec<(usize, Task)>)> + Clone,
) -> Vec<Task> {
    let mut shared: std::collections::HashMap<&str, usize> = Default::default();
    for (ids, tasks) in per_variant.clone() {
        for (node, _) in tasks {
            *shared.entry(ids[*node].as_str()).or_default() += 1;
        }
    }
    let mut merged: Vec<Task> = Vec::new();
    let mut by_identity: std::collections::HashMap<&str, usize> = Default::default();
    for (v, (ids, tasks)) in per_variant.enumerate() {
        let mut local = Vec::with_capacity(tasks.len());
        for (node, task) in tasks {
            let key = ids[*node].as_str();
            if let Some(&at) = by_identity.get(key) {
                local.push(at);
                continue;
            }
            let own = variants.len() > 1 && shared[key] < variants.len();
            let name = if own {
                format!("{}_t{}", task.id, v + 1)
            } else {
                task.id.clone()
            };
            by_identity.insert(key, merged.len());
            local.push(merged.len());
            merged.push(Task {
                name,
                id: task.id.clone(),
                after: task.after.iter().map(|&a| local[a]).collect(),
                gpu: task.gpu,
                // A node every trial shares needs none of their params.
                sets: if shared[key] == variants.len() {
                    Vec::new()
                } else {
                    variants[v].1.clone()
                },
                // As `kiln sweep` lays its output out.
                out_below: own.then(|| format!("sweep/trial-{}", v + 1)),
            });
        }
    }
    merged
}
