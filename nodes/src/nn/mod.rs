//! Neural-network building blocks shared by the model kinds: the
//! [`Network`] trait every architecture implements, seeded initialisation,
//! dropout and batch norm, activations, and [`ModelValue`], the typed view of
//! a `model` value (architecture, input/output sizes, task, weights).

pub mod batch_norm;
pub mod conv;
pub mod dense;
pub mod dropout;
pub mod encoder;
pub mod init;
pub mod lstm;
mod model_value;
pub mod prepared;
pub mod pruning;
pub mod quantized;

pub use model_value::{Dims, ModelValue, Task, Trained};
pub use prepared::{prepared, Prepared};
pub use quantized::QuantizedWeight;

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

/// Activation functions by name.
pub const ACTIVATIONS: &[&str] = &[
    "relu",
    "tanh",
    "sigmoid",
    "gelu",
    "leaky_relu",
    "silu",
    "identity",
];

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

/// Applies a named activation (names are checked at validation).
pub fn activate(x: &Tensor, name: &str) -> Result<Tensor> {
    match name {
        "tanh" => x.tanh(),
        "sigmoid" => candle_nn::ops::sigmoid(x),
        "gelu" => x.gelu_erf(),
        "leaky_relu" => candle_nn::ops::leaky_relu(x, 0.01),
        "silu" => x.silu(),
        "identity" => Ok(x.clone()),
        _ => x.relu(),
    }
}

/// The f32 values a custom op's CPU input holds, in order; `op` names the
/// op in the error when the input is not contiguous.
pub(crate) fn cpu_f32<'a>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
    op: &str,
) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: expects a contiguous tensor"),
    }
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

/// Asserts that every trainable variable in `vars` gets a non-zero
/// gradient from `out` (tests: a forward-only op would silently stop
/// training below it); `what` names the case in failures.
#[cfg(test)]
pub(crate) fn assert_all_have_gradients(vars: &init::SeededVars, out: &Tensor, what: &str) {
    let grads = out
        .sqr()
        .and_then(|o| o.sum_all())
        .and_then(|o| o.backward())
        .expect("a backward pass");
    for (name, var) in vars.sorted_vars() {
        if batch_norm::is_statistic(&name) {
            continue;
        }
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{what}: {name} gets no gradient"));
        let norm = g
            .sqr()
            .and_then(|g| g.sum_all())
            .and_then(|g| g.to_scalar::<f32>())
            .expect("a gradient norm");
        assert!(norm > 0.0, "{what}: {name} gets a zero gradient");
    }
}

/// Rows of token ids as a model reads them (tests).
#[cfg(test)]
pub(crate) fn token_rows<const N: usize>(rows: &[[u32; N]]) -> Tensor {
    let flat: Vec<f32> = rows.iter().flatten().map(|&i| i as f32).collect();
    Tensor::from_vec(flat, (rows.len(), N), &candle_core::Device::Cpu).expect("token rows")
}

/// The largest absolute difference between two tensors of one shape (tests).
#[cfg(test)]
pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar())
        .expect("tensors of one shape")
}
