//! Inference kinds: running trained models.

mod predict;

pub use predict::scores;

/// Registers every inference kind.
pub fn register_all(reg: &mut kiln_engine::Registry) {
    reg.register(predict::Predict);
}
