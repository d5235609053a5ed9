//! Model kinds: each declares an architecture (its settings) and outputs an
//! untrained `model` value; `train.supervised` builds it for the data's
//! sizes. [`build`] maps an architecture's `type` to its network.

mod cnn;
mod gnn;
mod load;
mod mlp;
mod pretrained;
mod rnn;
mod transformer;

use candle_nn::VarBuilder;
use kiln_engine::NodeError;
use serde_json::Value as Json;

use crate::nn::dense::Quantized;
use crate::nn::{Dims, Network, UnitGroup};

/// Registers every model kind.
pub fn register_all(reg: &mut kiln_engine::Registry) {
    reg.register(mlp::MlpKind);
    reg.register(cnn::CnnKind);
    reg.register(load::Load);
    reg.register(rnn::RnnKind);
    reg.register(pretrained::Pretrained);
    reg.register(gnn::GnnKind);
    reg.register(transformer::TransformerKind);
}

/// The unit groups structured pruning can shrink, for architectures that
/// have them (`mlp`, `cnn`).
pub fn unit_groups(arch: &Json) -> Result<Vec<UnitGroup>, NodeError> {
    let kind = arch.get("type").and_then(Json::as_str).unwrap_or("?");
    let bad =
        |e: serde_json::Error| NodeError::new(format!("the {kind} architecture is malformed: {e}"));
    match kind {
        "mlp" => Ok(mlp::unit_groups(&serde_json::from_value(arch.clone()).map_err(bad)?)),
        "cnn" => Ok(cnn::unit_groups(&serde_json::from_value(arch.clone()).map_err(bad)?)),
        other => Err(NodeError::new(format!(
            "structured pruning removes neurons of `mlp` and channels of `cnn` models; a `{other}` model can be pruned with `method: magnitude`"
        ))),
    }
}

/// What one layer reads and gives: `[width]`, or `[c, h, w]` in a CNN's stack.
pub type LayerShapes = (Vec<usize>, Vec<usize>);

/// The shapes of an MLP's hidden layers or a CNN's stack entries, in order.
pub fn layer_shapes(arch: &Json, dims: &Dims) -> Result<Vec<LayerShapes>, NodeError> {
    let kind = arch.get("type").and_then(Json::as_str).unwrap_or("?");
    let bad =
        |e: serde_json::Error| NodeError::new(format!("the {kind} architecture is malformed: {e}"));
    match kind {
        "mlp" => {
            let cfg: mlp::MlpConfig = serde_json::from_value(arch.clone()).map_err(bad)?;
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
        "cnn" => Ok(cnn::layer_shapes(
            &serde_json::from_value(arch.clone()).map_err(bad)?,
        )),
        other => Err(NodeError::new(format!(
            "layer by layer changes work on `mlp` and `cnn` models, not `{other}`"
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
    let rnn = arch.get("type").and_then(Json::as_str) == Some("rnn");
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
    let kind = arch.get("type").and_then(Json::as_str).unwrap_or("?");
    let bad =
        |e: serde_json::Error| NodeError::new(format!("the {kind} architecture is malformed: {e}"));
    let built: candle_core::Result<Box<dyn Network>> = match kind {
        "mlp" => mlp::Mlp::new(
            &serde_json::from_value(arch.clone()).map_err(bad)?,
            dims,
            vb,
            quantized,
        )
        .map(|n| Box::new(n) as Box<dyn Network>),
        "cnn" => cnn::Cnn::new(
            &serde_json::from_value(arch.clone()).map_err(bad)?,
            dims,
            vb,
            quantized,
        )
        .map(|n| Box::new(n) as Box<dyn Network>),
        "rnn" => rnn::Rnn::new(
            &serde_json::from_value(arch.clone()).map_err(bad)?,
            dims,
            vb,
            quantized,
        )
        .map(|n| Box::new(n) as Box<dyn Network>),
        "transformer" => transformer::Transformer::new(
            &serde_json::from_value(arch.clone()).map_err(bad)?,
            dims,
            vb,
        )
        .map(|n| Box::new(n) as Box<dyn Network>),
        "gnn" => gnn::Gnn::new(&serde_json::from_value(arch.clone()).map_err(bad)?, dims, vb)
            .map(|n| Box::new(n) as Box<dyn Network>),
        other => {
            return Err(NodeError::new(format!(
                "unknown architecture `{other}`: this kiln builds `mlp`, `cnn`, `rnn`, `gnn` and `transformer`"
            )))
        }
    };
    built.map_err(|e| NodeError::new(format!("cannot build the {kind} model: {e}")))
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
