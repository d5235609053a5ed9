//! Postprocessing kinds: turning model outputs into answers and scores.

mod compare;
mod decide;
mod metrics;
mod perplexity;

/// Registers every postprocessing kind.
pub fn register_all(reg: &mut kiln_engine::Registry) {
    reg.register(metrics::Metrics);
    reg.register(decide::Softmax);
    reg.register(decide::Argmax);
    reg.register(decide::Threshold);
    reg.register(decide::TopK);
    reg.register(decide::Decode);
    reg.register(compare::Compare);
    reg.register(perplexity::Perplexity);
}
