//! Executing one node: its fingerprint, then its result from memory, the
//! cache or another run computing it, else running it (`invoke`) and
//! storing what it produced and wrote.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::cache::{Cache, CacheError, Out};
use crate::device::device_name;
use crate::error::NodeError;
use crate::fingerprint::{fingerprint, hash_path, node_seed, FingerprintInput};
use crate::handle::{Handle, NodeOutputs};
use crate::ids::PortName;
use crate::invoke::{invoke, Invocation};
use crate::options::{CacheMode, RunOptions};
use crate::plan::{Plan, PlanNode};
use crate::report::{NodeReport, Status};
use crate::settings::SettingType;

/// How a node in a run's selection is executed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Normal,
    CacheOnly,
}

/// Where a node executes: the run's cache, output folder and options.
pub(crate) struct Site<'a> {
    pub cache: &'a Cache,
    pub out: &'a Out,
    pub opts: &'a RunOptions,
}

/// A report for `node`, nothing measured yet.
pub(crate) fn report_of(node: &PlanNode, status: Status) -> NodeReport {
    NodeReport::new(
        node.id.as_str(),
        node.spec.name,
        node.device.to_string(),
        status,
    )
}

/// Executes `node`: its report, and its outputs unless it failed.
pub(crate) fn execute(
    plan: &Plan,
    node: &PlanNode,
    inputs: Vec<(PortName, Vec<Arc<Handle>>)>,
    mode: Mode,
    site: &Site<'_>,
) -> (NodeReport, Option<NodeOutputs>) {
    let t0 = Instant::now();
    let mut report = report_of(node, Status::Failed);
    let result = execute_inner(plan, node, inputs, mode, site, &mut report);
    report.seconds = t0.elapsed().as_secs_f64();
    match result {
        Ok((status, outs)) => {
            report.status = status;
            (report, Some(outs))
        }
        Err(e) => {
            report.error = Some(e.to_string());
            (report, None)
        }
    }
}

fn execute_inner(
    plan: &Plan,
    node: &PlanNode,
    inputs: Vec<(PortName, Vec<Arc<Handle>>)>,
    mode: Mode,
    site: &Site<'_>,
    report: &mut NodeReport,
) -> Result<(Status, NodeOutputs), NodeError> {
    let (cache, out, opts) = (site.cache, site.out, site.opts);
    let store_failed = |e: CacheError| NodeError::caused_by(e.to_string(), e);
    let device = node
        .device
        .resolve()
        .map_err(|e| NodeError::caused_by(e.to_string(), e))?;
    report.device = device_name(&device);
    let seed = node_seed(plan.seed, node.id.as_str());
    let read: Vec<(PathBuf, String)> = node
        .files
        .iter()
        .map(|p| Ok((p.clone(), hash_path(p)?)))
        .collect::<Result<_, crate::fingerprint::HashError>>()
        .map_err(|e| NodeError::caused_by(e.to_string(), e))?;
    let files: Vec<String> = read.iter().map(|(_, h)| h.clone()).collect();
    let input_hashes: Vec<(String, Vec<String>)> = inputs
        .iter()
        .map(|(p, hs)| {
            (
                p.to_string(),
                hs.iter().map(|h| h.hash().to_string()).collect(),
            )
        })
        .collect();
    // Written paths enter the fingerprint as written (relative to whichever
    // output folder the run has), so a result is the same on every machine.
    let write_names: Vec<String> = node
        .spec
        .settings
        .iter()
        .filter(|s| s.ty == SettingType::OutputPath)
        .filter_map(|s| node.settings.get(s.name).and_then(|v| v.as_str()))
        .map(str::to_string)
        .collect();
    let writes: Vec<PathBuf> = write_names.iter().map(|p| opts.out_dir.join(p)).collect();
    let fp = fingerprint(&FingerprintInput {
        kind: node.spec.name,
        version: node.spec.version,
        settings: &node.written_settings,
        seed,
        device: &report.device,
        inputs: &input_hashes,
        files: &files,
        writes: &write_names,
    });
    report.fingerprint = Some(fp.clone());
    let cacheable = node.cache && !node.spec.side_effects;
    // `--only` with `--no-cache` re-runs the one node; what it depends on still comes from the cache.
    let may_reuse = match opts.cache {
        CacheMode::Use | CacheMode::Probe => true,
        CacheMode::Refresh => mode == Mode::CacheOnly,
        CacheMode::Off => false,
    };
    // Not a node that writes files: each run's output folder must get them.
    let memo = opts
        .memo
        .as_deref()
        .filter(|_| cacheable && may_reuse && write_names.is_empty());
    let found = |cache: &Cache| -> Result<Option<(Status, NodeOutputs)>, NodeError> {
        if let Some(outs) = memo.and_then(|m| m.get(&fp)) {
            return Ok(Some((Status::Cached, outs)));
        }
        let Some(entry) = cache.lookup(&fp, out).map_err(store_failed)? else {
            return Ok(None);
        };
        let entry = Arc::new(entry);
        let outs = entry
            .outputs()
            .map(|(port, hash)| {
                let handle = Handle::cached(entry.clone(), port.clone(), hash);
                (port, Arc::new(handle))
            })
            .collect();
        if let Some(m) = memo {
            m.keep(&fp, &outs);
        }
        Ok(Some((Status::Cached, outs)))
    };
    if cacheable && may_reuse {
        if let Some(hit) = found(cache)? {
            return Ok(hit);
        }
    }
    if opts.cache == CacheMode::Probe {
        return Err(NodeError::new("its result is not in the cache"));
    }
    if mode == Mode::CacheOnly {
        return Err(NodeError::new(
            "its result is not in the cache, and `--only` runs one node: run with `--until` to compute what it needs",
        ));
    }
    // Another run in this process computing the same result (a sweep's
    // trials sharing a prefix): wait for it, then take it from the cache.
    let _claim = if cacheable && may_reuse && opts.cache != CacheMode::Off {
        loop {
            if let Some(claim) = cache.claim(&fp) {
                // It may have been stored between the lookup and the claim.
                if let Some(hit) = found(cache)? {
                    return Ok(hit);
                }
                break Some(claim);
            }
            if let Some(hit) = found(cache)? {
                return Ok(hit);
            }
        }
    } else {
        None
    };
    if opts.cancel.is_cancelled() {
        return Err(NodeError::new("cancelled"));
    }
    let mut values = Vec::with_capacity(inputs.len());
    for (port, handles) in &inputs {
        let mut vs = Vec::with_capacity(handles.len());
        for h in handles {
            vs.push(h.get()?.to_device(&device)?);
        }
        values.push((port.clone(), vs));
    }
    opts.observer.node_started(&node.id, node.spec.name);
    let produced = invoke(
        plan,
        node,
        values,
        Invocation {
            device,
            seed,
            files: &read,
            out_dir: &opts.out_dir,
            cancel: &opts.cancel,
            observer: opts.observer.as_ref(),
        },
    )?;
    let written: Vec<PathBuf> = writes.into_iter().filter(|p| p.exists()).collect();
    for file in &written {
        out.publish(file).map_err(store_failed)?;
    }
    if cacheable && opts.cache != CacheMode::Off {
        let stored = cache.store(&fp, node.spec.name, &produced, &written, out);
        match stored {
            // A store the user named that fails is the run's failure, not a warning.
            Err(e @ CacheError::Store(_)) if opts.stores.cache.is_some() => {
                return Err(store_failed(e))
            }
            Err(e) => tracing::warn!("node `{}`: result not cached: {e}", node.id),
            Ok(()) => {}
        }
    }
    let outs: NodeOutputs = produced
        .into_iter()
        .map(|(port, value)| (port, Arc::new(Handle::memory(value))))
        .collect();
    if let Some(m) = memo {
        m.keep(&fp, &outs);
    }
    Ok((Status::Ran, outs))
}
