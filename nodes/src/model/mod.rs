//! Model kinds: each declares an architecture (its settings) and outputs an
//! untrained `model` value; `train.supervised` builds it for the data's
//! sizes. [`build`] maps an architecture's `type` to its network.

mod arch;
mod cnn;
mod gnn;
mod linear;
mod load;
pub mod mlp;
#[cfg(test)]
mod on_devices;
mod prepared;
mod pretrained;
mod rnn;
mod trained;
mod transformer;
mod value;

pub use arch::{build, dense_weights, layer_shapes, unit_groups, Arch};
pub use linear::{LinearConfig, NaiveBayesConfig};
pub use prepared::{prepared, Prepared};
pub use trained::Trained;
pub use value::ModelValue;

/// Registers every model kind.
pub fn register_all(reg: &mut kiln_engine::Registry) {
    reg.register(mlp::MlpKind);
    reg.register(cnn::CnnKind);
    reg.register(load::Load);
    reg.register(rnn::RnnKind);
    reg.register(pretrained::Pretrained);
    reg.register(gnn::GnnKind);
    reg.register(transformer::TransformerKind);
    reg.register(linear::LinearKind);
    reg.register(linear::NaiveBayesKind);
}
