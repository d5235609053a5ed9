//! A sweep's trials as plans and runs: what `kiln sweep` and watch mode on a
//! file with a `sweep:` block share.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value as Json;

use crate::error::EngineError;
use crate::plan::Plan;
use crate::registry::Registry;
use crate::run::{Memo, RunOptions};
use crate::sweep::Trial;

/// Each trial of `plan`'s sweep (none without one) with its plan: the
/// pipeline file loaded again with `overrides` and then the trial's params.
/// A trial whose values make the pipeline invalid carries the error.
pub fn plans(
    plan: &Plan,
    registry: &Registry,
    overrides: &[(String, Json)],
) -> Vec<(Trial, Result<Plan, EngineError>)> {
    let Some(spec) = &plan.sweep else {
        return Vec::new();
    };
    spec.trials(plan.seed)
        .into_iter()
        .map(|trial| {
            let mut all = overrides.to_vec();
            all.extend(trial.params.iter().cloned());
            let loaded = crate::file::load_file(&plan.file, registry, &all);
            (trial, loaded)
        })
        .collect()
}

/// How trial `number` (from 1) runs: as `base`, into `<sweep_dir>/trial-N`,
/// over `memo` (what one trial computed or loaded, the next takes from memory).
pub fn options(base: &RunOptions, sweep_dir: &Path, number: usize, memo: &Arc<Memo>) -> RunOptions {
    RunOptions {
        out_dir: sweep_dir.join(format!("trial-{number}")),
        memo: Some(memo.clone()),
        ..base.clone()
    }
}
