//! One module per command; shared helpers for loading a pipeline.

mod export;
mod graph;
mod load;
mod nodes;
mod place;
mod run;
mod serve;
mod sweep;
mod watch;

use kiln_engine::Registry;

use crate::cli::{Cli, Command};
use crate::failure::Failure;
use load::load;

/// Runs the command the user asked for.
pub fn dispatch(cli: Cli) -> Result<(), Failure> {
    let registry = kiln_nodes::registry();
    match cli.command {
        Command::Run(args) => run::run(&args, &registry),
        Command::Watch(args) => watch::watch(&args, &registry),
        Command::Serve(args) => serve::serve(&args, registry),
        Command::Validate { files, set } => validate(&files, &set, &registry),
        Command::Graph { file, format, set } => graph::graph(&file, format, &set, &registry),
        Command::Sweep(args) => sweep::sweep(&args, &registry),
        Command::Export(crate::cli::Export::Argo(args)) => export::argo(&args, &registry),
        Command::Nodes { kind } => nodes::nodes(kind.as_deref(), &registry),
        Command::Schema => {
            let schema = kiln_engine::schema::pipeline_schema(&registry);
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            Ok(())
        }
    }
}

fn validate(
    files: &[std::path::PathBuf],
    sets: &[String],
    registry: &Registry,
) -> Result<(), Failure> {
    let mut failures = Vec::new();
    for file in files {
        match load(file, sets, registry) {
            Ok(plan) => println!("{}: valid ({} nodes)", file.display(), plan.nodes.len()),
            Err(Failure::Invalid(msg) | Failure::Run(msg)) => failures.push(msg),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Failure::Invalid(failures.join("\n")))
    }
}
