//! Model kinds: each declares an architecture (its settings) and outputs an
//! untrained `model` value; `train.supervised` builds it for the data's
//! sizes. [`build`] maps an architecture's `type` to its network.

mod mlp;

use candle_nn::VarBuilder;
use kiln_engine::NodeError;
use serde_json::Value as Json;

use crate::nn::{Dims, Network};

/// Registers every model kind.
pub fn register_all(reg: &mut kiln_engine::Registry) {
    reg.register(mlp::MlpKind);
}

/// Builds the network an architecture describes, for `dims`.
pub fn build(arch: &Json, dims: &Dims, vb: VarBuilder) -> Result<Box<dyn Network>, NodeError> {
    let bad = |e: serde_json::Error| {
        NodeError::new(format!("the model's architecture is malformed: {e}"))
    };
    match arch.get("type").and_then(Json::as_str) {
        Some("mlp") => Ok(Box::new(mlp::Mlp::new(
            &serde_json::from_value(arch.clone()).map_err(bad)?,
            dims,
            vb,
        )?)),
        other => Err(NodeError::new(format!(
            "unknown architecture {other:?}: this kiln builds `mlp`"
        ))),
    }
}
