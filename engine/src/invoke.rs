//! Invoking a kind on one node: the context it sees, a panic turned into the
//! node's failure, and the outputs checked against what the kind declares.
//! `run` (for every node it executes) and `serve` (for every node on a
//! request's path) both come through here, so a kind runs the same way in
//! both.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::context::{CancelToken, Observer, RunContext};
use crate::error::{panic_message, NodeError};
use crate::ids::PortName;
use crate::kind::Outputs;
use crate::plan::{Plan, PlanNode};
use crate::value::Value;

/// What one invocation needs besides the node and its input values.
pub(crate) struct Invocation<'a> {
    /// The device the node runs on.
    pub device: Device,
    /// The node's seed.
    pub seed: u64,
    /// The files it reads and their content hashes.
    pub files: &'a [(PathBuf, String)],
    /// Where sinks write.
    pub out_dir: &'a Path,
    /// Cancellation.
    pub cancel: &'a CancelToken,
    /// Told about progress.
    pub observer: &'a dyn Observer,
}

/// Runs `node`'s kind on `inputs`.
pub(crate) fn invoke(
    plan: &Plan,
    node: &PlanNode,
    inputs: Vec<(PortName, Vec<Value>)>,
    how: Invocation<'_>,
) -> Result<Outputs, NodeError> {
    let ctx = RunContext {
        node_id: &node.id,
        settings: &node.settings,
        sources: &node.sources,
        inputs,
        device: how.device,
        seed: how.seed,
        base_dir: &plan.base_dir,
        files: how.files,
        out_dir: how.out_dir,
        cancel: how.cancel,
        observer: how.observer,
    };
    let produced = match catch_unwind(AssertUnwindSafe(|| node.kind.run(&ctx))) {
        Ok(result) => result?,
        Err(panic) => {
            return Err(NodeError::new(format!(
                "internal error in `{}`: {}",
                node.spec.name,
                panic_message(panic.as_ref())
            )));
        }
    };
    check_outputs(node, &produced)?;
    Ok(produced)
}

fn check_outputs(node: &PlanNode, produced: &[(PortName, Value)]) -> Result<(), NodeError> {
    for (port, ty) in &node.outputs {
        match produced.iter().find(|(p, _)| p == port) {
            None => {
                return Err(NodeError::new(format!(
                    "`{}` produced no `{port}` output (a bug in the kind)",
                    node.spec.name
                )))
            }
            Some((_, v)) if !ty.accepts(v.ty()) => {
                return Err(NodeError::new(format!(
                    "`{}` produced a {} on `{port}`, declared {ty} (a bug in the kind)",
                    node.spec.name,
                    v.ty()
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}
