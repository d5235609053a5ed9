//! Architectures by their `type`: building a network, and what
//! compression needs to know of its layers. Each architecture lives in its
//! own file; this is where a `type` string meets it.

use candle_nn::VarBuilder;
use kiln_engine::NodeError;
use serde::Deserialize;
use serde_json::Value as Json;

use crate::nn::dense::Quantized;
use crate::nn::{Dims, LayerShapes, Network, UnitGroup};

use super::{cnn, gnn, linear, mlp, rnn, transformer};

/// An architecture, as a model value records it (`{"type": "mlp", ...}`):
/// one variant per architecture, so a new one is a variant and its file,
/// and the compiler names every match below that must learn it.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Arch {
    /// `model.mlp`.
    Mlp(mlp::MlpConfig),
    /// `model.cnn`.
    Cnn(cnn::CnnConfig),
    /// `model.rnn`.
    Rnn(rnn::RnnConfig),
    /// `model.gnn`.
    Gnn(gnn::GnnConfig),
    /// `model.transformer`.
    Transformer(transformer::TransformerConfig),
    /// `model.linear`.
    Linear(linear::LinearConfig),
    /// `model.naive_bayes`.
    #[serde(rename = "naive_bayes")]
    NaiveBayes(linear::NaiveBayesConfig),
    /// A pre-trained encoder (`model.pretrained`): used by `infer.embed`,
    /// never built here.
    Bert(serde_json::Map<String, Json>),
}

impl Arch {
    /// The architecture a model value's JSON describes.
    pub fn of(arch: &Json) -> Result<Arch, NodeError> {
        serde_json::from_value(arch.clone()).map_err(|e| {
            NodeError::caused_by(
                format!(
                    "the model's architecture is malformed ({e}); this kiln knows `mlp`, `cnn`, `rnn`, `gnn`, `transformer`, `linear`, `naive_bayes` and `bert`"
                ),
                e,
            )
        })
    }

    /// Its `type`.
    pub fn name(&self) -> &'static str {
        match self {
            Arch::Mlp(_) => "mlp",
            Arch::Cnn(_) => "cnn",
            Arch::Rnn(_) => "rnn",
            Arch::Gnn(_) => "gnn",
            Arch::Transformer(_) => "transformer",
            Arch::Linear(_) => "linear",
            Arch::NaiveBayes(_) => "naive_bayes",
            Arch::Bert(_) => "bert",
        }
    }
}

/// The unit groups structured pruning can shrink, for architectures that
/// have them (`mlp`, `cnn`).
pub fn unit_groups(arch: &Json) -> Result<Vec<UnitGroup>, NodeError> {
    match Arch::of(arch)? {
        Arch::Mlp(cfg) => Ok(mlp::unit_groups(&cfg)),
        Arch::Cnn(cfg) => Ok(cnn::unit_groups(&cfg)),
        other @ (Arch::Rnn(_)
        | Arch::Gnn(_)
        | Arch::Transformer(_)
        | Arch::Linear(_)
        | Arch::NaiveBayes(_)
        | Arch::Bert(_)) => {
            Err(NodeError::new(format!(
                "structured pruning removes neurons of `mlp` and channels of `cnn` models; a `{}` model can be pruned with `method: magnitude`",
                other.name()
            )))
        }
    }
}

/// The shapes of an MLP's hidden layers or a CNN's stack entries, in order.
pub fn layer_shapes(arch: &Json, dims: &Dims) -> Result<Vec<LayerShapes>, NodeError> {
    match Arch::of(arch)? {
        Arch::Mlp(cfg) => {
            let mut width: usize = dims.input.iter().product();
            Ok(cfg
                .hidden
                .iter()
                .map(|&units| {
                    let shapes = (vec![width], vec![units]);
                    width = units;
                    shapes
                })
                .collect())
        }
        Arch::Cnn(cfg) => Ok(cnn::layer_shapes(&cfg)),
        other @ (Arch::Rnn(_)
        | Arch::Gnn(_)
        | Arch::Transformer(_)
        | Arch::Linear(_)
        | Arch::NaiveBayes(_)
        | Arch::Bert(_)) => Err(NodeError::new(format!(
            "layer by layer changes work on `mlp` and `cnn` models, not `{}`",
            other.name()
        ))),
    }
}

/// The weights of fully connected layers (what quantization can store in
/// block formats): every matrix of an MLP, the dense layers and head of a
/// CNN, the head of an RNN.
pub fn dense_weights(
    arch: &Json,
    weights: &std::collections::BTreeMap<String, candle_core::Tensor>,
) -> Vec<String> {
    let rnn = matches!(Arch::of(arch), Ok(Arch::Rnn(_)));
    weights
        .iter()
        .filter(|(name, t)| {
            t.rank() == 2 && name.ends_with(".weight") && (!rnn || *name == "head.weight")
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// Builds the network an architecture describes, for `dims`; layers whose
/// weights are in `quantized` run quantized.
pub fn build(
    arch: &Json,
    dims: &Dims,
    vb: VarBuilder,
    quantized: &Quantized,
) -> Result<Box<dyn Network>, NodeError> {
    fn boxed(n: impl Network + 'static) -> Box<dyn Network> {
        Box::new(n)
    }
    let arch = Arch::of(arch)?;
    let built = match &arch {
        Arch::Mlp(cfg) => mlp::Mlp::new(cfg, dims, vb, quantized).map(boxed),
        Arch::Cnn(cfg) => cnn::Cnn::new(cfg, dims, vb, quantized).map(boxed),
        Arch::Rnn(cfg) => rnn::Rnn::new(cfg, dims, vb, quantized).map(boxed),
        Arch::Transformer(cfg) => transformer::Transformer::new(cfg, dims, vb).map(boxed),
        Arch::Gnn(cfg) => gnn::Gnn::new(cfg, dims, vb).map(boxed),
        Arch::Linear(_) | Arch::NaiveBayes(_) => linear::Linear::new(dims, vb, quantized).map(boxed),
        Arch::Bert(_) => {
            return Err(NodeError::new(
                "a pre-trained encoder is not trained or run as a classifier here: embed with `infer.embed`, then train a head on the embeddings",
            ))
        }
    };
    built.map_err(|e| {
        NodeError::caused_by(format!("cannot build the {} model: {e}", arch.name()), e)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use candle_core::{Device, Tensor};
    use serde_json::json;

    use super::*;
    use crate::nn::init::{var_builder, SeededVars};
    use crate::nn::Mode;

    /// Every trainable variable must receive a gradient (a forward-only op
    /// would silently stop training below it).
    fn assert_all_trained(arch: serde_json::Value, input: &[usize]) {
        let dims = Dims {
            input: input.to_vec(),
            output: 3,
            vocab: None,
        };
        let vars = Arc::new(SeededVars::new(1, HashMap::new()));
        let net = build(
            &arch,
            &dims,
            var_builder(vars.clone(), &Device::Cpu),
            &Default::default(),
        )
        .unwrap();
        let mut shape = vec![4];
        shape.extend_from_slice(input);
        let x = Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap();
        let y = net
            .forward(
                &x,
                &mut Mode {
                    train: true,
                    rng: None,
                },
            )
            .unwrap();
        crate::nn::assert_all_have_gradients(&vars, &y, "this architecture");
    }

    #[test]
    fn every_mlp_weight_is_trained() {
        let arch = json!({"type": "mlp", "hidden": [8, 8], "activation": "tanh", "dropout": 0.0, "batch_norm": true});
        assert_all_trained(arch, &[5]);
    }

    #[test]
    fn every_cnn_weight_is_trained() {
        let arch = json!({
            "type": "cnn", "input_shape": [1, 8, 8], "activation": "relu",
            "layers": [{"conv": {"channels": 4, "kernel": 3, "stride": 1, "padding": 1}}, "batch_norm", {"pool": {"size": 2}}, {"dense": {"units": 8}}],
        });
        assert_all_trained(arch, &[64]);
    }

    #[test]
    fn every_rnn_weight_is_trained() {
        for cell in ["lstm", "gru"] {
            let arch = json!({"type": "rnn", "cell": cell, "hidden": 6, "layers": 2, "bidirectional": true, "pooling": "last"});
            assert_all_trained(arch, &[7, 2]);
        }
        let arch = json!({"type": "rnn", "cell": "lstm", "hidden": 6, "layers": 1, "bidirectional": false, "pooling": "mean"});
        assert_all_trained(arch, &[5]);
    }

    #[test]
    fn an_input_shape_unlike_the_data_is_a_clear_error() {
        let arch =
            json!({"type": "cnn", "input_shape": [1, 28, 28], "activation": "relu", "layers": []});
        let dims = Dims {
            input: vec![64],
            output: 10,
            vocab: None,
        };
        let vars = Arc::new(SeededVars::new(1, HashMap::new()));
        let Err(e) = build(
            &arch,
            &dims,
            var_builder(vars, &Device::Cpu),
            &Default::default(),
        ) else {
            panic!("built")
        };
        assert!(
            e.message()
                .contains("`input_shape: [1, 28, 28]` holds 784 values, but each example has 64"),
            "{e}"
        );
    }
}
