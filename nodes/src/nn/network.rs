//! What every architecture is: the [`Network`] trait, how a pass runs
//! ([`Mode`]), what structured pruning removes together ([`UnitGroup`]),
//! activations, and small tensor helpers the kernels share.

use candle_core::{Result, Tensor};
use rand_chacha::ChaCha8Rng;

/// How a forward pass runs: training (dropout on, batch statistics) or not,
/// and the generator dropout draws from.
pub struct Mode<'a> {
    /// Whether this pass is for training.
    pub train: bool,
    /// The node's generator, for dropout masks.
    pub rng: Option<&'a mut ChaCha8Rng>,
}

impl Mode<'_> {
    /// Inference: no dropout, running statistics.
    pub fn eval() -> Mode<'static> {
        Mode {
            train: false,
            rng: None,
        }
    }
}

/// Units (neurons of a dense layer, channels of a conv layer) that
/// structured pruning removes together: keeping unit `u` keeps index `u`
/// along dimension 0 of every producer and columns `u·group..(u+1)·group`
/// along dimension 1 of every consumer.
#[derive(Clone, Debug)]
pub struct UnitGroup {
    /// The layer, for reports (`layers.0`).
    pub layer: String,
    /// How many units it has.
    pub units: usize,
    /// JSON pointer to the unit count in the architecture.
    pub arch_path: String,
    /// Tensors indexed by unit along dimension 0; the first is the weight
    /// whose rows' norms rank the units.
    pub producers: Vec<String>,
    /// Tensors that read the units along dimension 1, with how many
    /// consecutive columns each unit feeds (its spatial size when flattened).
    pub consumers: Vec<(String, usize)>,
}

/// A network: a forward pass from a batch of examples to outputs.
pub trait Network: Send + Sync {
    /// `x`: `[batch, ...input]`; returns `[batch, output]`.
    fn forward(&self, x: &Tensor, mode: &mut Mode<'_>) -> Result<Tensor>;

    /// Outputs for sparse rows `[batch, features]`: spelled out densely
    /// here; models with a sparse path (linear ones) read them as they are.
    fn forward_sparse(&self, x: &crate::sparse::Csr, mode: &mut Mode<'_>) -> Result<Tensor> {
        self.forward(&x.to_dense()?, mode)
    }

    /// Outputs for a graph: one row per node, or per graph when the batch
    /// pools. Only graph networks read graphs.
    fn forward_graph(
        &self,
        _batch: &crate::graph::GraphBatch,
        _mode: &mut Mode<'_>,
    ) -> Result<Tensor> {
        candle_core::bail!(
            "this model reads examples, not graphs: use `model.gnn` for a graph, or give it a table or dataset"
        )
    }
}

kiln_engine::choices! {
    /// An activation function, as an architecture names it (`relu`, …).
    pub enum Activation {
        /// max(x, 0).
        Relu = "relu",
        /// tanh(x).
        Tanh = "tanh",
        /// 1 / (1 + e^-x).
        Sigmoid = "sigmoid",
        /// x·Φ(x), exact.
        Gelu = "gelu",
        /// max(x, 0.01·x).
        LeakyRelu = "leaky_relu",
        /// x·sigmoid(x).
        Silu = "silu",
        /// x.
        Identity = "identity",
    }
}

/// Activation functions by name (the choices of every `activation` setting).
pub const ACTIVATIONS: &[&str] = Activation::NAMES;

impl Activation {
    /// The function applied to `x`.
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Relu => super::pointwise::relu(x),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => candle_nn::ops::sigmoid(x),
            Activation::Gelu => x.gelu_erf(),
            Activation::LeakyRelu => candle_nn::ops::leaky_relu(x, 0.01),
            Activation::Silu => x.silu(),
            Activation::Identity => Ok(x.clone()),
        }
    }
}

/// A learned table of `n` embeddings `dim` wide (`<vb>.weight`), drawn
/// with σ = 0.1. On the 3 504 reviews of reviews-transformer.yaml, σ = 0.02
/// (BERT's) left a Transformer slow to start (test accuracy 69.8–71.1% over
/// four seeds, against 70.3–71.9%), and σ = 1 (candle's and PyTorch's
/// default) kept it near 63% and an LSTM at 63.0% (68.8% with σ = 0.1).
pub fn embedding(n: usize, dim: usize, vb: candle_nn::VarBuilder) -> Result<candle_nn::Embedding> {
    let init = candle_nn::Init::Randn {
        mean: 0.0,
        stdev: 0.1,
    };
    Ok(candle_nn::Embedding::new(
        vb.get_with_hints((n, dim), "weight", init)?,
        dim,
    ))
}

/// How many of a tensor's values are exactly zero (any dtype, any device).
pub fn zeros_in(t: &Tensor) -> candle_core::Result<usize> {
    Ok(t.to_device(&candle_core::Device::Cpu)?
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .filter(|v| **v == 0.0)
        .count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_activation_name_is_a_variant_and_back() {
        for name in ACTIVATIONS {
            let a: Activation = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(serde_json::to_value(a).unwrap(), serde_json::json!(name));
            assert_eq!(a.name(), *name);
        }
        let e = serde_json::from_value::<Activation>(serde_json::json!("relu6")).unwrap_err();
        assert!(e.to_string().contains("unknown variant `relu6`"), "{e}");
    }
}
