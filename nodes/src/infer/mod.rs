//! Inference kinds: running trained models.

mod embed;
mod predict;

pub use predict::{graph_scores, scores};

/// Registers every inference kind.
pub fn register_all(reg: &mut kiln_engine::Registry) {
    reg.register(predict::Predict);
    reg.register(embed::Embed);
}
