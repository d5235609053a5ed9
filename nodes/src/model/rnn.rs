//! `model.rnn`: LSTM or GRU layers over sequences, then a linear head.

use candle_core::{DType, Result, Tensor};
use candle_nn::rnn::{GRUConfig, GRU, RNN};
use candle_nn::{Embedding, Module, VarBuilder};
use kiln_engine::{
    Config, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext, ValueType,
};
use serde::{Deserialize, Serialize};

use crate::model::ModelValue;
use crate::nn::dense::{Dense, Quantized};
use crate::nn::lstm::Lstm;
use crate::nn::{Dims, Mode, Network};

kiln_engine::choices! {
    /// The recurrent cell (the `cell` setting).
    pub enum CellKind {
        /// Long short-term memory.
        Lstm = "lstm",
        /// Gated recurrent unit.
        Gru = "gru",
    }
}

kiln_engine::choices! {
    /// How a sequence is summarised for the head (the `pooling` setting).
    pub enum SequencePooling {
        /// The final state.
        Last = "last",
        /// The average over time.
        Mean = "mean",
    }
}

/// The RNN's architecture: the settings of `model.rnn` and what a model
/// value records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Config)]
pub struct RnnConfig {
    /// the recurrent cell
    #[setting(default = "lstm")]
    pub cell: CellKind,
    /// units per layer and direction
    #[setting(default = 64, min = 1, max = 65_536)]
    pub hidden: usize,
    /// stacked recurrent layers
    #[setting(default = 1, min = 1, max = 16)]
    pub layers: usize,
    /// also read sequences backwards
    #[setting(default = false)]
    pub bidirectional: bool,
    /// how a sequence is summarised for the output layer
    #[setting(default = "last")]
    pub pooling: SequencePooling,
    /// token ids: width of the embedding layer in front
    #[setting(default = 64, min = 1, max = 65_536)]
    #[serde(default = "default_embedding")]
    pub embedding: usize,
}

fn default_embedding() -> usize {
    64
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
    /// For token ids: their embeddings.
    embedding: Option<Embedding>,
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
    if cfg.cell == CellKind::Gru {
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
        let embedding = match dims.vocab {
            Some(vocab) => Some(crate::nn::embedding(
                vocab,
                cfg.embedding,
                vb.pp("embedding"),
            )?),
            None => None,
        };
        let features = match dims.input.as_slice() {
            [0] | [0, _] => candle_core::bail!("a recurrent model needs sequences of at least one step"),
            [_time] if embedding.is_some() => cfg.embedding,
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
            embedding,
            layers,
            head,
            cfg: cfg.clone(),
        })
    }
}

impl Network for Rnn {
    fn forward(&self, x: &Tensor, _mode: &mut Mode<'_>) -> Result<Tensor> {
        // Token ids: embedded, and padding (id 0, at the end) left out of
        // the summary.
        let (x, real) = match &self.embedding {
            Some(e) => {
                let ids = x.to_dtype(DType::U32)?;
                (e.forward(&ids)?, Some(ids.ne(0u32)?.to_dtype(DType::F32)?))
            }
            None if x.rank() == 2 => (x.unsqueeze(2)?, None),
            None => (x.clone(), None),
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
        let summary = if let Some(real) = &real {
            summarise_tokens(&h, real, &self.cfg)?
        } else if self.cfg.pooling == SequencePooling::Mean {
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

/// A summary of time-major states `h` `[t, b, units]` over the real
/// tokens (`real`: `[b, t]`, 1 for a token, 0 for padding): their mean, or
/// the state at each sequence's last token (for the forward direction; a
/// backward direction's summary is its state after reading the whole row).
fn summarise_tokens(h: &Tensor, real: &Tensor, cfg: &RnnConfig) -> Result<Tensor> {
    let m = real.t()?.unsqueeze(2)?; // [t, b, 1]
    if cfg.pooling == SequencePooling::Mean {
        return h
            .broadcast_mul(&m)?
            .sum(0)?
            .broadcast_div(&m.sum(0)?.clamp(1.0, f64::MAX)?);
    }
    let (_, b, units) = h.dims3()?;
    let last: Vec<u32> = real
        .sum(1)?
        .to_vec1::<f32>()?
        .iter()
        .map(|&n| (n as u32).max(1) - 1)
        .collect();
    let index = Tensor::from_vec(last, (1, b, 1), h.device())?.broadcast_as((1, b, units))?;
    let at_last = h
        .contiguous()?
        .gather(&index.contiguous()?, 0)?
        .squeeze(0)?;
    if !cfg.bidirectional {
        return Ok(at_last);
    }
    let hidden = cfg.hidden;
    Tensor::cat(
        &[
            at_last.narrow(1, 0, hidden)?,
            h.get(0)?.narrow(1, hidden, hidden)?,
        ],
        1,
    )
}

/// The `model.rnn` kind.
pub struct RnnKind;

impl NodeKind for RnnKind {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "model.rnn",
            version: 1,
            doc: "A recurrent network for sequence classification or regression: stacked LSTM or GRU layers, optionally bidirectional, whose last state (or mean over time) feeds a linear output layer.
Examples are sequences shaped [time] or [time, features], or rows of token ids from `preprocess.tokenize`: an embedding layer (`embedding` wide) then reads them, and the summary skips the padding.",
            inputs: vec![],
            outputs: vec![OutputSpec::new("model", ValueType::Model, "the untrained architecture")],
            settings: RnnConfig::specs(),
            side_effects: false,
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> std::result::Result<Outputs, NodeError> {
        let model = ModelValue::configured("rnn", &ctx.settings().read::<RnnConfig>()?)?;
        Ok(vec![(PortName::new_static("model"), model.into_value())])
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use std::collections::HashMap;
    use std::sync::Arc;

    use candle_core::Device;

    use super::*;
    use crate::nn::init::{var_builder, SeededVars};
    use crate::nn::{assert_all_have_gradients, max_diff, token_rows as ids};

    fn on_tokens(cell: &str, bidirectional: bool, pooling: &str) -> (Rnn, Arc<SeededVars>) {
        let cfg = RnnConfig {
            cell: serde_json::from_value(json!(cell)).unwrap(),
            hidden: 5,
            layers: 1,
            bidirectional,
            pooling: serde_json::from_value(json!(pooling)).unwrap(),
            embedding: 4,
        };
        let dims = Dims {
            input: vec![6],
            output: 2,
            vocab: Some(12),
        };
        let vars = Arc::new(SeededVars::new(4, HashMap::new()));
        let net = Rnn::new(
            &cfg,
            &dims,
            var_builder(vars.clone(), &Device::Cpu),
            &Quantized::new(),
        )
        .unwrap();
        (net, vars)
    }

    /// On token ids, a forward summary ignores the padding after the last
    /// token, and every weight (the embeddings too) gets a gradient.
    #[test]
    fn token_sequences_skip_their_padding() {
        for (cell, pooling) in [("lstm", "last"), ("lstm", "mean"), ("gru", "last")] {
            let (net, vars) = on_tokens(cell, false, pooling);
            let short = net
                .forward(&ids(&[[3, 4, 5, 0, 0, 0]]), &mut Mode::eval())
                .unwrap();
            let both = net
                .forward(
                    &ids(&[[3, 4, 5, 0, 0, 0], [3, 4, 5, 6, 7, 8]]),
                    &mut Mode::eval(),
                )
                .unwrap();
            assert!(
                max_diff(&short, &both.narrow(0, 0, 1).unwrap()) < 1e-5,
                "{cell}/{pooling}"
            );
            assert!(
                max_diff(&short, &both.narrow(0, 1, 1).unwrap()) > 1e-4,
                "{cell}/{pooling}"
            );
            assert_all_have_gradients(&vars, &both, &format!("{cell}/{pooling}"));
        }
        let (net, _) = on_tokens("lstm", true, "last");
        let out = net
            .forward(&ids(&[[3, 4, 5, 0, 0, 0]]), &mut Mode::eval())
            .unwrap();
        assert_eq!(out.dims(), [1, 2]);
    }
}
