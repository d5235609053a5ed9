//! The `kiln` command: parses arguments, registers the node kinds, calls the
//! engine, and maps outcomes to exit codes (0 success, 1 run failure, 2
//! invalid pipeline or usage). This is the only place that knows exit codes.

mod argo;
mod cli;
mod commands;
mod failure;
mod progress;
mod serve;
mod ui;

use std::process::ExitCode;

use clap::Parser;

use failure::Failure;

/// mimalloc keeps freed pages for reuse. candle allocates a fresh buffer for
/// every tensor op; with glibc's allocator the batch-sized ones are mapped
/// and unmapped each time, and page faults took a fifth of a CNN's training
/// time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Thread settings for candle, set once before any thread exists (the user's
/// own values win):
/// - `RAYON_NUM_THREADS`: without it candle re-reads `/proc/cpuinfo` before
///   every matrix product (half of an LSTM's run time went to it).
/// - `CANDLE_NUM_THREADS=1`: candle's pool for element-wise ops spins its
///   workers between ops; on batch-sized tensors that costs more than it
///   gains (MNIST MLP training 20.6 s -> 14.4 s, digits CNN -15%). Matrix
///   products still run on all of the node's threads.
fn pin_thread_count() {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (name, value) in [("RAYON_NUM_THREADS", n), ("CANDLE_NUM_THREADS", 1)] {
        if std::env::var_os(name).is_none() {
            // Safe: called first thing in `main`, while the process has one thread.
            std::env::set_var(name, value.to_string());
        }
    }
}

/// `kiln nodes | head`: a command that only prints ends quietly, as Unix
/// tools do, when its reader stops reading, instead of failing on the
/// closed pipe. Commands that serve or run keep the signal ignored (Rust's
/// default): their sockets' writes must never kill the process.
fn quiet_when_the_reader_leaves() {
    #[cfg(unix)]
    // SAFETY: restores the default action of one signal before any thread
    // that writes has started; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    pin_thread_count();
    if std::env::var_os("KILN_DEBUG").is_none() {
        // Panics inside nodes are caught and reported as the node's failure;
        // the default hook would print a raw panic message first.
        std::panic::set_hook(Box::new(|_| {}));
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .init();
    let args = cli::Cli::parse();
    if args.command.only_prints() {
        quiet_when_the_reader_leaves();
    }
    let outcome = std::panic::catch_unwind(|| commands::dispatch(args));
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(Failure::Run(msg))) => {
            eprintln!("{msg}");
            ExitCode::from(1)
        }
        Ok(Err(Failure::Invalid(msg))) => {
            eprintln!("{msg}");
            ExitCode::from(2)
        }
        Err(_) => {
            eprintln!("error: kiln hit an internal error; please report it with the pipeline file (rerun with KILN_DEBUG=1 for details)");
            ExitCode::from(1)
        }
    }
}
