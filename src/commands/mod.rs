//! One module per command; shared helpers for loading a pipeline.

mod graph;
mod nodes;
mod run;
mod serve;
mod watch;

use std::path::Path;

use kiln_engine::{Plan, Registry};
use serde_json::Value as Json;

use crate::cli::{Cli, Command};
use crate::Failure;

/// Runs the command the user asked for.
pub fn dispatch(cli: Cli) -> Result<(), Failure> {
    let registry = kiln_nodes::registry();
    match cli.command {
        Command::Run(args) => run::run(&args, &registry),
        Command::Watch(args) => watch::watch(&args, &registry),
        Command::Serve(args) => serve::serve(&args, registry),
        Command::Validate { files, set } => validate(&files, &set, &registry),
        Command::Graph { file, format, set } => graph::graph(&file, format, &set, &registry),
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

/// Parses `--set params.NAME=VALUE` arguments; VALUE is read as YAML.
pub fn parse_sets(sets: &[String]) -> Result<Vec<(String, Json)>, Failure> {
    sets.iter()
        .map(|s| {
            let usage = || Failure::Invalid(format!("error: `--set {s}`: write `--set params.NAME=VALUE`, e.g. `--set params.lr=0.01`"));
            let (key, value) = s.split_once('=').ok_or_else(usage)?;
            let name = key.trim().strip_prefix("params.").ok_or_else(usage)?;
            if name.is_empty() {
                return Err(usage());
            }
            let value = kiln_engine::yaml::parse_value(value)
                .map_err(|e| Failure::Invalid(format!("error: `--set {s}`: the value is not valid YAML: {}", e.message)))?;
            Ok((name.to_string(), value.to_json()))
        })
        .collect()
}

/// Loads and validates a pipeline file.
pub fn load(file: &Path, sets: &[String], registry: &Registry) -> Result<Plan, Failure> {
    let overrides = parse_sets(sets)?;
    kiln_engine::load_file(file, registry, &overrides).map_err(|e| match e {
        kiln_engine::EngineError::Invalid(d) => Failure::Invalid(d.to_string()),
        other => Failure::Invalid(format!("error: {other}")),
    })
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
