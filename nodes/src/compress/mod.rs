//! Compression kinds: nodes that take a trained model and give a smaller one.

mod cut;
mod fuse;
pub(crate) mod prune;
mod quantize;

/// Registers every compression kind.
pub fn register_all(reg: &mut kiln_engine::Registry) {
    reg.register(prune::Prune);
    reg.register(fuse::Fuse);
    reg.register(cut::Cut);
    reg.register(quantize::Quantize);
}
