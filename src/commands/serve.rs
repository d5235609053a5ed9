//! `kiln serve`: build each pipeline, then answer requests over HTTP until
//! Ctrl-C or SIGTERM; with `--watch`, rebuild on change and swap atomically.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kiln_engine::watch::{WatchEvents, WatchOptions};
use kiln_engine::{
    CacheMode, CancelToken, EngineError, Observer, Plan, Quiet, Registry, RunOptions, RunReport,
    Selection, Service,
};

use crate::cli::ServeArgs;
use crate::failure::Failure;
use crate::serve::access::Keys;
use crate::serve::metrics::Metrics;
use crate::serve::{router, App, Pipeline};

/// Runs `kiln serve`.
pub fn serve(args: &ServeArgs, registry: Registry) -> Result<(), Failure> {
    let jobs = args
        .jobs
        .map(usize::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let keys = Keys::gather(
        &args.api_keys,
        args.api_keys_file.as_deref(),
        std::env::var("KILN_API_KEYS").ok().as_deref(),
    )
    .map_err(|e| Failure::Invalid(format!("error: {e}")))?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            crate::serve::tls::config(cert, key)
                .map_err(|e| Failure::Invalid(format!("error: {e}")))?,
        ),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut plans = Vec::new();
    for file in &args.files {
        let plan = super::load::load(file, &args.set, &registry)?;
        if plan.serve.is_none() {
            return Err(Failure::Invalid(format!(
                "error: {}: there is no `serve:` block to serve: add `serve: {{ input: <a source.request node>, output: <node> }}`",
                file.display()
            )));
        }
        if let Some((other, _)) = plans
            .iter()
            .find(|(_, p): &&(PathBuf, Plan)| p.name == plan.name)
        {
            return Err(Failure::Invalid(format!(
                "error: {} and {} are both named `{}`: one service needs distinct pipeline names",
                other.display(),
                file.display(),
                plan.name
            )));
        }
        plans.push((file.clone(), plan));
    }

    let stores = super::place::cache_only(args.cache.as_deref())?;
    let mut services = Vec::new();
    for (file, plan) in plans {
        let opts = RunOptions {
            memo: None,
            jobs,
            cache: CacheMode::Use,
            out_dir: plan.base_dir.join("runs").join(plan.name.as_str()),
            stores: stores.clone(),
            selection: Selection::All,
            cancel: CancelToken::new(),
            observer: Arc::new(Quiet),
        };
        let (service, report) = Service::start(Arc::new(plan), &opts)
            .map_err(|e| Failure::Run(format!("error: {}: {e}", file.display())))?;
        println!(
            "{}: {} (model {})",
            service.plan().name,
            super::run::summary(&report),
            service.fingerprint()
        );
        services.push((file, service));
    }

    // Half the cores read and answer HTTP, the others run forward passes
    // (the blocking pool; candle's products use several): on 2 cores, one
    // HTTP thread served digits-mlp at 46-54k req/s, two at 42k (the
    // second only took turns with the first and with the batches).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(http_threads(jobs))
        .thread_name("kiln-http")
        .enable_all()
        .build()
        .map_err(|e| Failure::Run(format!("error: cannot start the server's threads: {e}")))?;
    let metrics = Arc::new(
        Metrics::new().map_err(|e| Failure::Run(format!("error: cannot set up metrics: {e}")))?,
    );
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.addr)
            .await
            .map_err(|e| Failure::Run(format!("error: cannot listen on {}: {e}", args.addr)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Failure::Run(format!("error: cannot read the listening address: {e}")))?;
        let workers = Arc::new(tokio::sync::Semaphore::new(jobs));
        let mut pipelines = BTreeMap::new();
        let mut files = Vec::new();
        for (file, service) in services {
            let p = crate::serve::batch::start(service, metrics.clone(), workers.clone());
            println!(
                "serving {} at {scheme}://{addr}/v1/pipelines/{}/infer",
                p.name, p.name
            );
            if p.generator().is_some() {
                println!(
                    "  and as model \"{}\" at {scheme}://{addr}/v1/chat/completions and /v1/completions (OpenAI-compatible)",
                    p.name
                );
            }
            files.push((file, p.clone()));
            pipelines.insert(p.name.clone(), p);
        }
        small_pages_from_now();
        println!(
            "listening on {scheme}://{addr} (GET /v1/pipelines, /healthz, /metrics; Ctrl-C stops)"
        );
        if keys.is_open() {
            if !addr.ip().is_loopback() {
                eprintln!(
                    "warning: listening on {addr} without API keys: anyone who can reach it can use every pipeline; give `--api-key KEY` (or KILN_API_KEYS)"
                );
            }
        } else {
            println!(
                "the /v1 routes{} need `Authorization: Bearer <key>` ({} key{})",
                if args.protect_metrics { " and /metrics" } else { "" },
                keys.len(),
                if keys.len() == 1 { "" } else { "s" }
            );
        }
        let _ = std::io::stdout().flush();

        let stop = CancelToken::new();
        let watchers: Vec<_> = if args.watch {
            files
                .into_iter()
                .map(|(file, pipeline)| {
                    watch(file, pipeline, jobs, &args.set, &stores, stop.clone())
                })
                .collect()
        } else {
            Vec::new()
        };
        let connection_metrics = metrics.clone();
        let app = Arc::new(App {
            pipelines,
            metrics,
            keys,
            protect_metrics: args.protect_metrics,
            body_timeout: Duration::from_millis(args.header_timeout_ms),
        });
        let limits = crate::serve::listen::Limits {
            max_connections: args.max_connections as usize,
            header_timeout: Duration::from_millis(args.header_timeout_ms),
            tls,
        };
        crate::serve::listen::serve(listener, router(app), limits, connection_metrics, shutdown())
            .await;
        stop.cancel();
        for w in watchers {
            let _ = w.join();
        }
        println!("stopped");
        Ok(())
    })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Watches one pipeline's files on a thread of its own and swaps in each
/// valid rebuild.
fn watch(
    file: PathBuf,
    pipeline: Arc<Pipeline>,
    jobs: usize,
    sets: &[String],
    stores: &kiln_engine::Stores,
    stop: CancelToken,
) -> std::thread::JoinHandle<()> {
    let stores = stores.clone();
    let overrides = super::load::parse_sets(sets).unwrap_or_default();
    std::thread::spawn(move || {
        let registry = kiln_nodes::registry();
        let opts = WatchOptions {
            jobs,
            out_dir: None,
            stores,
            overrides,
            debounce: Duration::from_millis(50),
            stop,
        };
        let events = Swapper { pipeline };
        if let Err(e) = kiln_engine::watch::watch(&file, &registry, &opts, &events) {
            eprintln!("error: cannot watch {}: {e}", file.display());
        }
    })
}

/// Swaps each valid rebuild in; keeps the old version on any problem.
struct Swapper {
    pipeline: Arc<Pipeline>,
}

impl WatchEvents for Swapper {
    fn invalid(&self, error: &EngineError) {
        eprintln!("{error}");
        eprintln!(
            "{}: the change is invalid; still serving model {}",
            self.pipeline.name,
            self.pipeline.current().fingerprint()
        );
    }

    fn started(&self, _: &Plan, changed: &[PathBuf]) {
        if !changed.is_empty() {
            let names: Vec<String> = changed.iter().map(|p| p.display().to_string()).collect();
            println!(
                "{}: rebuilding after a change to {}",
                self.pipeline.name,
                names.join(", ")
            );
        }
    }

    fn finished(&self, plan: &Plan, report: &RunReport, _: &Path, cancelled: bool) {
        if cancelled {
            return;
        }
        let name = &self.pipeline.name;
        if plan.name.as_str() != name {
            eprintln!(
                "{name}: the file now names the pipeline `{}`; a running service keeps its name, so the change is not served (restart to rename)",
                plan.name
            );
            return;
        }
        match Service::from_report(Arc::new(plan.clone()), report) {
            Ok(service) => {
                let fingerprint = service.fingerprint().to_string();
                if self.pipeline.swap(service) {
                    println!("{name}: now serving model {fingerprint}");
                }
            }
            Err(e) => eprintln!(
                "{name}: {e}; still serving model {}",
                self.pipeline.current().fingerprint()
            ),
        }
        let _ = std::io::stdout().flush();
    }

    fn observer(&self) -> Arc<dyn Observer> {
        Arc::new(Quiet)
    }
}

/// Threads that read and answer HTTP for `jobs` cores: half of them, at
/// least one and at most four.
fn http_threads(jobs: usize) -> usize {
    (jobs / 2).clamp(1, 4)
}

/// Asks the kernel for no more transparent huge pages: what the models
/// hold is loaded by now (and keeps the huge pages it has, which its
/// products read faster); what serving allocates from here on (caches,
/// step buffers, request bodies) is many small, short-lived pieces, where a
/// 2 MiB page partly used counts whole in the resident set (measured,
/// SmolLM2 serving 8 chats: 287–293 MiB at the peak with huge pages after
/// loading, 254–257 MiB without, decoding as fast; see
/// BENCHMARKS.md "Serving memory").
fn small_pages_from_now() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes no pointers; it sets a flag of this
    // process that later page faults read.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
