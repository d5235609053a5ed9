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

/// After layer `removed` left a model, renames the weights and masks of the
/// layers after it (`layers.5.weight` -> `layers.4.weight`).
fn renumber(model: &mut crate::nn::ModelValue, removed: usize) {
    let rename = |name: String| -> String {
        let index = name
            .strip_prefix("layers.")
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(i, rest)| Some((i.parse::<usize>().ok()?, rest)));
        match index {
            Some((i, rest)) if i > removed => format!("layers.{}.{rest}", i - 1),
            _ => name,
        }
    };
    model.weights = std::mem::take(&mut model.weights)
        .into_iter()
        .map(|(k, t)| (rename(k), t))
        .collect();
    model.masks = std::mem::take(&mut model.masks)
        .into_iter()
        .map(|(k, t)| (rename(k), t))
        .collect();
}
