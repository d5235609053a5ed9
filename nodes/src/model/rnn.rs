//! `model.rnn`: LSTM or GRU layers over sequences, then a linear head.

use candle_core::{Result, Tensor};
use candle_nn::rnn::{GRUConfig, GRU, RNN};
use candle_nn::{Module, VarBuilder};
use kiln_engine::{
    KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext, SettingSpec,
    SettingType, ValueType,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::nn::dense::{Dense, Quantized};
use crate::nn::lstm::Lstm;
use crate::nn::{Dims, Mode, ModelValue, Network};

/// The RNN's architecture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RnnConfig {
    /// `lstm` or `gru`.
    pub cell: String,
    /// Units of each recurrent layer (per direction).
    pub hidden: usize,
    /// Stacked recurrent layers.
    pub layers: usize,
    /// Also read each sequence backwards.
    pub bidirectional: bool,
    /// `last` (final state) or `mean` (average over time) summarises a sequence for the head.
    pub pooling: String,
}

enum Cell {
    Lstm(Lstm),
    Gru(GRU),
}

impl Cell {
    /// Time-major `[time, batch, features]` -> `[time, batch, hidden]`.
    fn run(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Cell::Lstm(c) => c.run(x),
            Cell::Gru(c) => {
                let mut state = c.zero_state(x.dim(1)?)?;
                let mut states = Vec::with_capacity(x.dim(0)?);
                for t in 0..x.dim(0)? {
                    state = c.step(&x.get(t)?, &state)?;
                    states.push(state.h().clone());
                }
                Tensor::stack(&states, 0)
            }
        }
    }
}

/// Recurrent layers (forward, and backward when bidirectional), pooling, a linear head.
pub struct Rnn {
    layers: Vec<(Cell, Option<Cell>)>,
    head: Dense,
    cfg: RnnConfig,
}

fn cell(
    cfg: &RnnConfig,
    input: usize,
    layer: usize,
    backward: bool,
    vb: &VarBuilder,
) -> Result<Cell> {
    if cfg.cell == "gru" {
        let suffix = if backward { "_reverse" } else { "" };
        let vb = vb.pp(format!("gru_l{layer}{suffix}"));
        return Ok(Cell::Gru(candle_nn::rnn::gru(
            input,
            cfg.hidden,
            GRUConfig::default(),
            vb,
        )?));
    }
    Ok(Cell::Lstm(Lstm::new(
        input,
        cfg.hidden,
        layer,
        backward,
        &vb.pp("lstm"),
    )?))
}

/// Reverses a time-major sequence.
fn reverse_time(x: &Tensor) -> Result<Tensor> {
    let t = x.dim(0)?;
    let idx: Vec<u32> = (0..t as u32).rev().collect();
    x.contiguous()?
        .index_select(&Tensor::from_vec(idx, t, x.device())?, 0)
}

impl Rnn {
    /// Builds the layers; weights follow PyTorch's names (`lstm.weight_ih_l0`, `…_reverse`).
    pub fn new(
        cfg: &RnnConfig,
        dims: &Dims,
        vb: VarBuilder,
        quantized: &Quantized,
    ) -> Result<Self> {
        let features = match dims.input.as_slice() {
            [0] | [0, _] => candle_core::bail!("a recurrent model needs sequences of at least one step"),
            [_time] => 1,
            [_time, features] => *features,
            other => candle_core::bail!(
                "a recurrent model reads sequences shaped [time] or [time, features] per example, not {other:?}"
            ),
        };
        let directions = if cfg.bidirectional { 2 } else { 1 };
        let mut layers = Vec::new();
        let mut input = features;
        for l in 0..cfg.layers {
            let fwd = cell(cfg, input, l, false, &vb)?;
            let bwd = if cfg.bidirectional {
                Some(cell(cfg, input, l, true, &vb)?)
            } else {
                None
            };
            layers.push((fwd, bwd));
            input = cfg.hidden * directions;
        }
        let head = Dense::new(
            cfg.hidden * directions,
            dims.output,
            vb.pp("head"),
            quantized,
        )?;
        Ok(Rnn {
            layers,
            head,
            cfg: cfg.clone(),
        })
    }
}

impl Network for Rnn {
    fn forward(&self, x: &Tensor, _mode: &mut Mode<'_>) -> Result<Tensor> {
        let x = if x.rank() == 2 {
            x.unsqueeze(2)?
        } else {
            x.clone()
        };
        let mut h = x.transpose(0, 1)?.contiguous()?;
        let t = h.dim(0)?;
        for (fwd, bwd) in &self.layers {
            let out = fwd.run(&h)?;
            h = match bwd {
                Some(bwd) => Tensor::cat(&[out, reverse_time(&bwd.run(&reverse_time(&h)?)?)?], 2)?,
                None => out,
            };
        }
        let summary = if self.cfg.pooling == "mean" {
            h.mean(0)?
        } else if self.cfg.bidirectional {
            // Forward half at the last step, backward half at the first.
            let hidden = self.cfg.hidden;
            Tensor::cat(
                &[
                    h.get(t - 1)?.narrow(1, 0, hidden)?,
                    h.get(0)?.narrow(1, hidden, hidden)?,
                ],
                1,
            )?
        } else {
            h.get(t - 1)?
        };
        self.head.forward(&summary)
    }
}

/// The `model.rnn` kind.
pub struct RnnKind;

impl NodeKind for RnnKind {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "model.rnn",
            version: 1,
            doc: "A recurrent network for sequence classification or regression: stacked LSTM or GRU layers, optionally bidirectional, whose last state (or mean over time) feeds a linear output layer.
Examples are sequences shaped [time] or [time, features].",
            inputs: vec![],
            outputs: vec![OutputSpec::new("model", ValueType::Model, "the untrained architecture")],
            settings: vec![
                SettingSpec::with_default("cell", SettingType::Choice(&["lstm", "gru"]), json!("lstm"), "the recurrent cell"),
                SettingSpec::with_default("hidden", SettingType::Int { min: Some(1), max: Some(65_536) }, json!(64), "units per layer and direction"),
                SettingSpec::with_default("layers", SettingType::Int { min: Some(1), max: Some(16) }, json!(1), "stacked recurrent layers"),
                SettingSpec::with_default("bidirectional", SettingType::Bool, json!(false), "also read sequences backwards"),
                SettingSpec::with_default("pooling", SettingType::Choice(&["last", "mean"]), json!("last"), "how a sequence is summarised for the output layer"),
            ],
            side_effects: false,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> std::result::Result<Outputs, NodeError> {
        let s = ctx.settings();
        let arch = json!({
            "type": "rnn",
            "cell": s.str("cell")?,
            "hidden": s.usize("hidden")?,
            "layers": s.usize("layers")?,
            "bidirectional": s.bool("bidirectional")?,
            "pooling": s.str("pooling")?,
        });
        Ok(vec![(
            PortName::new_static("model"),
            ModelValue::untrained(arch).into_value(),
        )])
    }
}
