//! `model.mlp`: a multi-layer perceptron.

use candle_core::{Result, Tensor};
use candle_nn::{Module, VarBuilder};
use kiln_engine::{
    Config, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext, Settings,
    ValueType,
};
use serde::{Deserialize, Serialize};

use crate::model::ModelValue;
use crate::nn::batch_norm::BatchNorm;
use crate::nn::dense::{Dense, Quantized};
use crate::nn::dropout::dropout;
use crate::nn::{Activation, Dims, Mode, Network, UnitGroup};

/// The MLP's architecture: the settings of `model.mlp` and what a model
/// value records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Config)]
pub struct MlpConfig {
    /// units of each hidden layer, e.g. [300, 100]
    #[setting(default = [64], min = 1)]
    pub hidden: Vec<usize>,
    /// activation after each hidden layer
    #[setting(default = "relu")]
    pub activation: Activation,
    /// probability of dropping a hidden unit while training
    #[setting(default = 0.0, min = 0.0, lt = 1.0)]
    pub dropout: f64,
    /// batch-normalise each hidden layer
    #[setting(default = false)]
    pub batch_norm: bool,
}

/// Flatten, then hidden layers (linear, batch norm, activation, dropout), then a linear head.
pub struct Mlp {
    hidden: Vec<(Dense, Option<BatchNorm>)>,
    head: Dense,
    cfg: MlpConfig,
}

impl Mlp {
    /// Builds the layers; weights are named `layers.{i}.weight`, `head.weight`, `layers.{i}.bn.*`.
    pub fn new(
        cfg: &MlpConfig,
        dims: &Dims,
        vb: VarBuilder,
        quantized: &Quantized,
    ) -> Result<Self> {
        let mut width: usize = dims.input.iter().product();
        let mut hidden = Vec::new();
        for (i, &units) in cfg.hidden.iter().enumerate() {
            let vb = vb.pp(format!("layers.{i}"));
            let linear = Dense::new(width, units, vb.clone(), quantized)?;
            let bn = if cfg.batch_norm {
                Some(BatchNorm::new(units, vb.pp("bn"))?)
            } else {
                None
            };
            hidden.push((linear, bn));
            width = units;
        }
        let head = Dense::new(width, dims.output, vb.pp("head"), quantized)?;
        Ok(Mlp {
            hidden,
            head,
            cfg: cfg.clone(),
        })
    }
}

impl Network for Mlp {
    fn forward(&self, x: &Tensor, mode: &mut Mode<'_>) -> Result<Tensor> {
        let mut h = x.flatten_from(1)?;
        for (linear, bn) in &self.hidden {
            h = linear.forward(&h)?;
            if let Some(bn) = bn {
                h = bn.forward(&h, mode)?;
            }
            h = self.cfg.activation.apply(&h)?;
            h = dropout(&h, self.cfg.dropout, mode)?;
        }
        self.head.forward(&h)
    }
}

/// What structured pruning can remove: the units of each hidden layer.
pub fn unit_groups(cfg: &MlpConfig) -> Vec<UnitGroup> {
    (0..cfg.hidden.len())
        .map(|i| {
            let mut producers = vec![format!("layers.{i}.weight"), format!("layers.{i}.bias")];
            if cfg.batch_norm {
                for p in ["weight", "bias", "running_mean", "running_var"] {
                    producers.push(format!("layers.{i}.bn.{p}"));
                }
            }
            let next = if i + 1 < cfg.hidden.len() {
                format!("layers.{}.weight", i + 1)
            } else {
                "head.weight".to_string()
            };
            UnitGroup {
                layer: format!("layers.{i}"),
                units: cfg.hidden[i],
                arch_path: format!("/hidden/{i}"),
                producers,
                consumers: vec![(next, 1)],
            }
        })
        .collect()
}

/// The `model.mlp` kind.
pub struct MlpKind;

impl NodeKind for MlpKind {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "model.mlp",
            version: 1,
            doc: "A multi-layer perceptron: hidden layers of linear units with an activation, optional batch norm and dropout, and a linear output layer.
Input and output sizes come from the data when `train.supervised` trains it; examples of any shape are flattened.",
            inputs: vec![],
            outputs: vec![OutputSpec::new("model", ValueType::Model, "the untrained architecture")],
            settings: MlpConfig::specs(),
            side_effects: false,
        }
    }

    fn check(&self, settings: &Settings) -> Vec<(String, String)> {
        match settings.read_checked::<MlpConfig>() {
            Ok(cfg) if cfg.hidden.is_empty() => vec![(
                "hidden".into(),
                "needs at least one layer size, e.g. `[64]`".into(),
            )],
            Err(problems) => problems,
            Ok(_) => vec![],
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> std::result::Result<Outputs, NodeError> {
        let model = ModelValue::configured("mlp", &ctx.settings().read::<MlpConfig>()?)?;
        Ok(vec![(PortName::new_static("model"), model.into_value())])
    }
}
