//! Postprocessing kinds: turning model outputs into answers and scores.

mod metrics;

/// Registers every postprocessing kind.
pub fn register_all(reg: &mut kiln_engine::Registry) {
    reg.register(metrics::Metrics);
}
