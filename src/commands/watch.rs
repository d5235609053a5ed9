//! `kiln watch`: run, then re-run what a change affects, until Ctrl-C.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kiln_engine::watch::{WatchEvents, WatchOptions};
use kiln_engine::{CancelToken, EngineError, Observer, Plan, Registry, RunReport, Status};

use crate::cli::WatchArgs;
use crate::failure::Failure;
use crate::progress::Bars;
use crate::ui::{Board, BoardObserver, Tee};

struct Printer {
    observer: Arc<dyn Observer>,
    jobs: usize,
    /// The live view, with `--ui`.
    board: Option<Arc<Board>>,
    /// `--out`, if given.
    out: Option<PathBuf>,
}

impl WatchEvents for Printer {
    fn invalid(&self, error: &EngineError) {
        eprintln!("{error}");
        eprintln!("keeping the last good pipeline; waiting for the next change");
        if let Some(board) = &self.board {
            board.invalid(error);
        }
    }

    fn started(&self, plan: &Plan, changed: &[PathBuf]) {
        if let Some(board) = &self.board {
            let out_dir = self
                .out
                .clone()
                .unwrap_or_else(|| plan.base_dir.join("runs").join(plan.name.as_str()));
            board.started(plan, changed, &out_dir);
        }
        if !changed.is_empty() {
            let names: Vec<String> = changed.iter().map(|p| p.display().to_string()).collect();
            println!("changed: {}", names.join(", "));
        }
    }

    fn finished(&self, plan: &Plan, report: &RunReport, out_dir: &Path, cancelled: bool) {
        if cancelled {
            let line = format!("cancelled by a newer change after {:.2}s", report.seconds);
            if let Some(board) = &self.board {
                board.finished(plan, report, line.clone(), true);
            }
            println!("{line}");
            return;
        }
        if let Some(board) = &self.board {
            board.finished(plan, report, super::run::summary(report), false);
        }
        let outputs = super::run::outputs_json(plan, report);
        if let Err(Failure::Run(e) | Failure::Invalid(e)) =
            super::run::write_results(plan, report, &outputs, out_dir, self.jobs)
        {
            eprintln!("{e}");
        }
        let ran: Vec<&str> = report
            .nodes
            .iter()
            .filter(|n| n.status == Status::Ran)
            .map(|n| n.id.as_str())
            .collect();
        let detail = if ran.is_empty() {
            String::new()
        } else {
            format!(" ({})", ran.join(", "))
        };
        println!("{}{detail}", super::run::summary(report));
        for n in report.nodes.iter().filter(|n| n.status == Status::Failed) {
            eprintln!(
                "error: node `{}` ({}) failed: {}",
                n.id,
                n.kind,
                n.error.as_deref().unwrap_or("unknown cause")
            );
        }
    }

    fn observer(&self) -> Arc<dyn Observer> {
        self.observer.clone()
    }
}

/// Watches a pipeline until interrupted; exits 0 on Ctrl-C.
pub fn watch(args: &WatchArgs, registry: &Registry) -> Result<(), Failure> {
    let overrides = super::load::parse_sets(&args.set)?;
    if !args.file.is_file() {
        return Err(Failure::Invalid(format!(
            "error: cannot watch `{}`: no such file",
            args.file.display()
        )));
    }
    let stop = CancelToken::new();
    let on_signal = stop.clone();
    ctrlc::set_handler(move || on_signal.cancel())
        .map_err(|e| Failure::Run(format!("error: cannot catch Ctrl-C: {e}")))?;
    let jobs = args.jobs.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    );
    let opts = WatchOptions {
        jobs,
        out_dir: args.out.clone(),
        stores: super::place::cache_only(args.cache.as_deref())?,
        overrides,
        debounce: Duration::from_millis(args.debounce_ms),
        stop,
    };
    let bars: Arc<dyn Observer> = Arc::new(Bars::for_stderr());
    let (observer, board) = match &args.ui {
        Some(addr) => {
            let board = Board::new();
            let local = crate::ui::start(addr, board.clone()).map_err(Failure::Invalid)?;
            println!("live view on http://{local}");
            let tee = Tee(vec![bars, Arc::new(BoardObserver(board.clone()))]);
            (Arc::new(tee) as Arc<dyn Observer>, Some(board))
        }
        None => (bars, None),
    };
    let printer = Printer {
        observer,
        jobs,
        board,
        out: args.out.clone(),
    };
    println!("watching {} (Ctrl-C to stop)", args.file.display());
    kiln_engine::watch::watch(&args.file, registry, &opts, &printer)
        .map_err(|e| Failure::Run(format!("error: {e}")))
}
