//! Inference kinds: running trained models.

mod embed;
pub mod generate;
mod predict;

pub use predict::{graph_scores, scores};

/// Registers every inference kind.
pub fn register_all(reg: &mut kiln_engine::Registry) {
    reg.register(predict::Predict);
    reg.register(embed::Embed);
    reg.register(generate::Generate);
}
