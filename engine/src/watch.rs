//! Watch mode: run, then re-run on every change to the pipeline file or to a
//! file its nodes read.
//!
//! The folders holding those files are watched (not the files), so editors
//! that save by writing a temporary file and renaming it, or by deleting and
//! re-creating, are seen. Events are debounced. A change re-validates the
//! file: an invalid one is reported and the last good pipeline and results
//! stay; a valid one starts a new run, which re-runs only nodes whose
//! fingerprint changed (the rest come from the cache, and a node whose output
//! did not change leaves its descendants alone). A change that lands while a
//! run is in flight cancels it at the next node or batch boundary first.
//!
//! A file with a `sweep:` block runs as its trials, one after another over
//! one in-memory `Memo`, each into `sweep/trial-N/`; a save re-runs what it
//! reaches in each trial, so an edited param value re-runs only its trials.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use notify_debouncer_full::notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult};

use crate::context::{CancelToken, Observer};
use crate::error::EngineError;
use crate::plan::Plan;
use crate::registry::Registry;
use crate::run::{CacheMode, RunOptions, RunReport, Selection};

/// How to watch.
pub struct WatchOptions {
    /// Nodes running at once.
    pub jobs: usize,
    /// Where sinks write (default: `runs/<pipeline>/` beside the file).
    pub out_dir: Option<PathBuf>,
    /// The cache's and the output's stores (`--cache URL`, `--out URL`).
    pub stores: crate::run::Stores,
    /// `--set params.NAME=VALUE` overrides.
    pub overrides: Vec<(String, serde_json::Value)>,
    /// How long events settle before a re-run.
    pub debounce: Duration,
    /// Cancelled to stop watching (Ctrl-C).
    pub stop: CancelToken,
}

/// What watch mode tells its user.
pub trait WatchEvents: Send + Sync {
    /// The file is invalid (or unreadable); the last good run stays.
    fn invalid(&self, error: &EngineError);
    /// A run starts, after `changed` (files, empty for the first run).
    fn started(&self, plan: &Plan, changed: &[PathBuf]);
    /// A run ended; `cancelled` when a newer change stopped it.
    fn finished(&self, plan: &Plan, report: &RunReport, out_dir: &Path, cancelled: bool);
    /// Receives node starts, progress and ends during runs.
    fn observer(&self) -> Arc<dyn Observer>;
}

struct InFlight {
    cancel: CancelToken,
    handle: thread::JoinHandle<(Plan, Result<RunReport, EngineError>)>,
    out_dir: PathBuf,
}

/// Watches until `opts.stop` is cancelled. `Err` only when watching itself
/// can't start (the folder can't be watched).
pub fn watch(
    file: &Path,
    registry: &Registry,
    opts: &WatchOptions,
    events: &dyn WatchEvents,
) -> Result<(), EngineError> {
    let (tx, rx) = mpsc::channel::<DebounceEventResult>();
    let mut debouncer = new_debouncer(opts.debounce, None, tx)
        .map_err(|e| EngineError::Usage(format!("cannot watch files: {e}")))?;
    let mut watched_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    let mut watched_files: BTreeSet<PathBuf> = BTreeSet::new();
    let mut watched_folders: BTreeSet<PathBuf> = BTreeSet::new();
    let mut in_flight: Option<InFlight> = None;
    let mut changed: Vec<PathBuf> = Vec::new();
    let mut reload = true;
    while !opts.stop.is_cancelled() {
        if reload {
            reload = false;
            let plan = crate::load_file(file, registry, &opts.overrides);
            let mut files = vec![absolute(file)];
            if let Ok(plan) = &plan {
                files.extend(
                    plan.nodes
                        .iter()
                        .flat_map(|n| n.files.iter().map(|f| absolute(f))),
                );
            }
            for f in &files {
                // A folder a node reads (a model folder) is watched whole: a
                // change to any file in it is a change to what the node reads.
                let (dir, mode) = if f.is_dir() {
                    watched_folders.insert(f.clone());
                    (Some(f.as_path()), RecursiveMode::Recursive)
                } else {
                    (f.parent(), RecursiveMode::NonRecursive)
                };
                if let Some(dir) = dir {
                    if watched_dirs.insert(dir.to_path_buf()) {
                        debouncer.watch(dir, mode).map_err(|e| {
                            EngineError::Usage(format!("cannot watch `{}`: {e}", dir.display()))
                        })?;
                    }
                }
            }
            watched_files.extend(files);
            match plan {
                Err(e) => events.invalid(&e),
                Ok(plan) => {
                    let trials = trial_plans(&plan, registry, opts);
                    in_flight = Some(start(
                        plan,
                        trials,
                        opts,
                        events,
                        &std::mem::take(&mut changed),
                    ))
                }
            }
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Ok(batch)) => {
                // Reading a file is an event too (inotify's access events):
                // only creations, writes, renames and removals count.
                let hits: Vec<PathBuf> = batch
                    .iter()
                    .filter(|ev| {
                        use notify_debouncer_full::notify::event::{EventKind, ModifyKind};
                        matches!(
                            ev.kind,
                            EventKind::Create(_)
                                | EventKind::Remove(_)
                                | EventKind::Modify(
                                    ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any
                                )
                        )
                    })
                    .flat_map(|ev| ev.paths.iter())
                    .map(|p| absolute(p))
                    .filter(|p| {
                        watched_files.contains(p)
                            || watched_folders.iter().any(|d| p.starts_with(d))
                    })
                    .collect();
                if !hits.is_empty() {
                    if let Some(run) = in_flight.take() {
                        finish(run, events, true);
                    }
                    changed.extend(hits);
                    changed.sort();
                    changed.dedup();
                    reload = true;
                }
            }
            Ok(Err(errors)) => {
                for e in errors {
                    tracing::warn!("watching files: {e}");
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if in_flight.as_ref().is_some_and(|r| r.handle.is_finished()) {
                    if let Some(run) = in_flight.take() {
                        finish(run, events, false);
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if let Some(run) = in_flight.take() {
        finish(run, events, true);
    }
    Ok(())
}

/// The path made absolute and its folder resolved, so events match however the file was named.
fn absolute(path: &Path) -> PathBuf {
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    match (full.parent(), full.file_name()) {
        (Some(dir), Some(name)) => dir.canonicalize().map(|d| d.join(name)).unwrap_or(full),
        _ => full,
    }
}

/// A file with a `sweep:` block runs as its trials: the valid ones, each
/// with its number (from 1).
fn trial_plans(plan: &Plan, registry: &Registry, opts: &WatchOptions) -> Vec<(usize, Plan)> {
    crate::trials::plans(plan, registry, &opts.overrides)
        .into_iter()
        .enumerate()
        .filter_map(|(i, (_, loaded))| {
            let loaded =
                loaded.inspect_err(|e| tracing::warn!("sweep trial {} is invalid: {e}", i + 1));
            Some((i + 1, loaded.ok()?))
        })
        .collect()
}

/// Runs the trials one after another over one `Memo`, each into
/// `sweep/trial-N/`; one report of them all, node ids as `trial-N.id`.
fn run_trials(trials: &[(usize, Plan)], opts: &RunOptions) -> Result<RunReport, EngineError> {
    let started = std::time::Instant::now();
    let memo = Arc::new(crate::run::Memo::default());
    let mut all = RunReport {
        nodes: Vec::new(),
        seconds: 0.0,
        values: Vec::new(),
    };
    for (number, trial) in trials {
        if opts.cancel.is_cancelled() {
            break;
        }
        let trial_opts = crate::trials::options(opts, &opts.out_dir.join("sweep"), *number, &memo);
        let report = crate::run::run(trial, &trial_opts)?;
        all.nodes.extend(report.nodes.into_iter().map(|mut n| {
            n.id = format!("trial-{number}.{}", n.id);
            n
        }));
    }
    all.seconds = started.elapsed().as_secs_f64();
    Ok(all)
}

fn start(
    plan: Plan,
    trials: Vec<(usize, Plan)>,
    opts: &WatchOptions,
    events: &dyn WatchEvents,
    changed: &[PathBuf],
) -> InFlight {
    events.started(&plan, changed);
    let cancel = CancelToken::new();
    let out_dir = opts
        .out_dir
        .clone()
        .unwrap_or_else(|| plan.base_dir.join("runs").join(plan.name.as_str()));
    let run_opts = RunOptions {
        memo: None,
        jobs: opts.jobs,
        cache: CacheMode::Use,
        out_dir: out_dir.clone(),
        stores: opts.stores.clone(),
        selection: Selection::All,
        cancel: cancel.clone(),
        observer: events.observer(),
    };
    let handle = thread::spawn(move || {
        let report = if trials.is_empty() {
            crate::run::run(&plan, &run_opts)
        } else {
            run_trials(&trials, &run_opts)
        };
        (plan, report)
    });
    InFlight {
        cancel,
        handle,
        out_dir,
    }
}

fn finish(run: InFlight, events: &dyn WatchEvents, cancel: bool) {
    // A run that ended on its own before the change is reported as complete.
    let cancelled = cancel && !run.handle.is_finished();
    if cancelled {
        run.cancel.cancel();
    }
    match run.handle.join() {
        Ok((plan, Ok(report))) => events.finished(&plan, &report, &run.out_dir, cancelled),
        Ok((_, Err(e))) => events.invalid(&e),
        Err(_) => tracing::error!("a run stopped with an internal error"),
    }
}
