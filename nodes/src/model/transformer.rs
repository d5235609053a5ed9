//! `model.transformer`: a Transformer encoder trained from scratch on token
//! ids (from `preprocess.tokenize`) for classification or regression.
//!
//! Token and position embeddings, `layers` pre-norm encoder blocks
//! (multi-head self-attention that ignores padding, then a feed-forward
//! block, each around a residual), a final layer norm, the mean over real
//! tokens, a linear head. With `layers: 0` it is a bag of embeddings (the
//! fastText-style baseline). Layer norm and softmax are composed from
//! differentiable ops: candle's fused kernels have no backward pass.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{Embedding, Linear, Module, VarBuilder};
use kiln_engine::{
    Config, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext, Settings,
    ValueType,
};
use serde::{Deserialize, Serialize};

use crate::model::ModelValue;
use crate::nn::dropout::dropout;
use crate::nn::{embedding, Dims, Mode, Network};

/// The Transformer's architecture: the settings of `model.transformer` and
/// what a model value records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Config)]
pub struct TransformerConfig {
    /// width of embeddings and blocks
    #[setting(default = 64, min = 1)]
    pub dim: usize,
    /// attention heads (must divide `dim`)
    #[setting(default = 4, min = 1)]
    pub heads: usize,
    /// encoder blocks (0: a bag of embeddings)
    #[setting(default = 2)]
    pub layers: usize,
    /// hidden width of each feed-forward block
    #[setting(default = 128, min = 1)]
    pub ff: usize,
    /// dropout while training
    #[setting(default = 0.1, min = 0.0, max = 1.0)]
    pub dropout: f64,
    /// how the tokens' outputs are summarised: their mean, or each feature's maximum
    #[setting(default = "mean")]
    #[serde(default = "default_pooling")]
    pub pooling: TokenPooling,
}

kiln_engine::choices! {
    /// How the real tokens' outputs are summarised (the `pooling` setting).
    pub enum TokenPooling {
        /// Their mean.
        Mean = "mean",
        /// Each feature's maximum.
        Max = "max",
    }
}

fn default_pooling() -> TokenPooling {
    TokenPooling::Mean
}

/// Layer norm over the last dimension, `γ·(x − μ)/√(σ² + ε) + β`.
struct Norm {
    gamma: Tensor,
    beta: Tensor,
}

impl Norm {
    fn new(dim: usize, vb: VarBuilder) -> Result<Norm> {
        Ok(Norm {
            gamma: vb.get_with_hints(dim, "weight", candle_nn::Init::Const(1.0))?,
            beta: vb.get_with_hints(dim, "bias", candle_nn::Init::Const(0.0))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        centred
            .broadcast_div(&(var + 1e-5)?.sqrt()?)?
            .broadcast_mul(&self.gamma)?
            .broadcast_add(&self.beta)
    }
}

/// One pre-norm encoder block.
struct Block {
    norm1: Norm,
    qkv: Linear,
    out: Linear,
    norm2: Norm,
    up: Linear,
    down: Linear,
}

impl Block {
    fn new(cfg: &TransformerConfig, vb: VarBuilder) -> Result<Block> {
        Ok(Block {
            norm1: Norm::new(cfg.dim, vb.pp("norm1"))?,
            qkv: candle_nn::linear(cfg.dim, 3 * cfg.dim, vb.pp("qkv"))?,
            out: candle_nn::linear(cfg.dim, cfg.dim, vb.pp("out"))?,
            norm2: Norm::new(cfg.dim, vb.pp("norm2"))?,
            up: candle_nn::linear(cfg.dim, cfg.ff, vb.pp("up"))?,
            down: candle_nn::linear(cfg.ff, cfg.dim, vb.pp("down"))?,
        })
    }

    /// `h`: `[b, t, d]`; `blocked`: `[b, 1, 1, t]`, −∞-like where padding.
    fn forward(
        &self,
        h: &Tensor,
        blocked: &Tensor,
        cfg: &TransformerConfig,
        mode: &mut Mode<'_>,
    ) -> Result<Tensor> {
        let (b, t, d) = h.dims3()?;
        let dh = d / cfg.heads;
        let qkv = self
            .qkv
            .forward(&self.norm1.forward(h)?)?
            .reshape((b, t, 3, cfg.heads, dh))?
            .permute((2, 0, 3, 1, 4))?; // [3, b, heads, t, dh]
        let (q, k, v) = (
            qkv.get(0)?.contiguous()?,
            qkv.get(1)?.contiguous()?,
            qkv.get(2)?.contiguous()?,
        );
        let scores = (q.matmul(&k.t()?)? / (dh as f64).sqrt())?.broadcast_add(blocked)?;
        let weights = dropout(
            &candle_nn::ops::softmax(&scores, D::Minus1)?,
            cfg.dropout,
            mode,
        )?;
        let attended = weights
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, d))?;
        let h = (h + dropout(&self.out.forward(&attended)?, cfg.dropout, mode)?)?;
        let ff = self
            .down
            .forward(&self.up.forward(&self.norm2.forward(&h)?)?.relu()?)?;
        h + dropout(&ff, cfg.dropout, mode)?
    }
}

/// Embeddings, encoder blocks, mean pooling over real tokens, a head.
pub struct Transformer {
    tokens: Embedding,
    positions: Embedding,
    blocks: Vec<Block>,
    norm: Norm,
    head: Linear,
    cfg: TransformerConfig,
}

impl Transformer {
    /// Builds the layers for `dims` (examples of `[length]` token ids from a
    /// vocabulary of `dims.vocab`).
    pub fn new(cfg: &TransformerConfig, dims: &Dims, vb: VarBuilder) -> Result<Self> {
        let Some(vocab) = dims.vocab else {
            candle_core::bail!(
                "a transformer reads token ids: give it the output of `preprocess.tokenize`"
            )
        };
        let [length] = dims.input[..] else {
            candle_core::bail!(
                "a transformer reads rows of token ids, but the examples have shape {:?}",
                dims.input
            )
        };
        if !cfg.dim.is_multiple_of(cfg.heads) {
            candle_core::bail!("`dim` ({}) must divide by `heads` ({})", cfg.dim, cfg.heads)
        }
        Ok(Transformer {
            tokens: embedding(vocab, cfg.dim, vb.pp("tokens"))?,
            positions: embedding(length, cfg.dim, vb.pp("positions"))?,
            blocks: (0..cfg.layers)
                .map(|i| Block::new(cfg, vb.pp(format!("blocks.{i}"))))
                .collect::<Result<_>>()?,
            norm: Norm::new(cfg.dim, vb.pp("norm"))?,
            head: candle_nn::linear(cfg.dim, dims.output, vb.pp("head"))?,
            cfg: cfg.clone(),
        })
    }
}

impl Network for Transformer {
    fn forward(&self, x: &Tensor, mode: &mut Mode<'_>) -> Result<Tensor> {
        let ids = x.to_dtype(DType::U32)?;
        let (b, t) = ids.dims2()?;
        let real = ids.ne(0u32)?.to_dtype(DType::F32)?; // [b, t]
        let positions = Tensor::arange(0u32, t as u32, x.device())?;
        let mut h = self
            .tokens
            .forward(&ids)?
            .broadcast_add(&self.positions.forward(&positions)?)?;
        h = dropout(&h, self.cfg.dropout, mode)?;
        // Padding gets a large negative score, so no attention weight.
        let blocked = ((real.clone() - 1.0)? * 1e9)?.reshape((b, 1, 1, t))?;
        for block in &self.blocks {
            h = block.forward(&h, &blocked, &self.cfg, mode)?;
        }
        let h = self.norm.forward(&h)?;
        let m = real.unsqueeze(2)?;
        let pooled = if self.cfg.pooling == TokenPooling::Max {
            // Padding pushed far below any real value first.
            h.broadcast_add(&((m - 1.0)? * 1e9)?)?.max(1)?
        } else {
            h.broadcast_mul(&m)?
                .sum(1)?
                .broadcast_div(&m.sum(1)?.clamp(1.0, f64::MAX)?)?
        };
        self.head
            .forward(&dropout(&pooled, self.cfg.dropout, mode)?)
    }
}

/// The `model.transformer` kind.
pub struct TransformerKind;

impl NodeKind for TransformerKind {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "model.transformer",
            version: 1,
            doc: "A Transformer encoder trained from scratch on token ids (`preprocess.tokenize`): token and position embeddings, `layers` pre-norm blocks of multi-head self-attention (padding masked) and feed-forward, the mean over real tokens, a linear head.
`layers: 0` is a bag of embeddings: the mean token embedding and a head, a strong baseline for short texts. Vocabulary size and length come from the data.",
            inputs: vec![],
            outputs: vec![OutputSpec::new("model", ValueType::Model, "the untrained architecture")],
            settings: TransformerConfig::specs(),
            side_effects: false,
        }
    }

    fn check(&self, settings: &Settings) -> Vec<(String, String)> {
        match settings.read_checked::<TransformerConfig>() {
            Ok(cfg) if cfg.heads > 0 && !cfg.dim.is_multiple_of(cfg.heads) => vec![(
                "heads".into(),
                format!("`dim` ({}) must divide by `heads` ({})", cfg.dim, cfg.heads),
            )],
            Err(problems) => problems,
            Ok(_) => Vec::new(),
        }
    }

    fn run(&self, ctx: &RunContext<'_>) -> std::result::Result<Outputs, NodeError> {
        let model =
            ModelValue::configured("transformer", &ctx.settings().read::<TransformerConfig>()?)?;
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

    fn build(layers: usize, pooling: &str) -> (Transformer, Arc<SeededVars>) {
        let cfg = TransformerConfig {
            dim: 8,
            heads: 2,
            layers,
            ff: 16,
            dropout: 0.0,
            pooling: serde_json::from_value(json!(pooling)).unwrap(),
        };
        let dims = Dims {
            input: vec![6],
            output: 3,
            vocab: Some(20),
        };
        let vars = Arc::new(SeededVars::new(2, HashMap::new()));
        (
            Transformer::new(&cfg, &dims, var_builder(vars.clone(), &Device::Cpu)).unwrap(),
            vars,
        )
    }

    /// Every weight gets a gradient through attention, norms and pooling.
    #[test]
    fn every_transformer_weight_is_trained() {
        for (layers, pooling) in [(0, "mean"), (2, "mean"), (2, "max")] {
            let (net, vars) = build(layers, pooling);
            let out = net
                .forward(
                    &ids(&[[3, 4, 5, 0, 0, 0], [7, 8, 9, 10, 11, 12]]),
                    &mut Mode::eval(),
                )
                .unwrap();
            assert_all_have_gradients(&vars, &out, &format!("{layers} layers, {pooling}"));
        }
    }

    /// Padding changes nothing: the same tokens with more padding (or with
    /// other ids where attention can't see) give the same output.
    #[test]
    fn padding_is_invisible() {
        for pooling in ["mean", "max"] {
            let (net, _) = build(2, pooling);
            let a = net
                .forward(&ids(&[[3, 4, 5, 0, 0, 0]]), &mut Mode::eval())
                .unwrap();
            let b = net
                .forward(
                    &ids(&[[3, 4, 5, 0, 0, 0], [3, 4, 5, 6, 0, 0]]),
                    &mut Mode::eval(),
                )
                .unwrap();
            assert!(
                max_diff(&a, &b.narrow(0, 0, 1).unwrap()) < 1e-5,
                "{pooling}"
            );
            assert!(
                max_diff(&a, &b.narrow(0, 1, 1).unwrap()) > 1e-4,
                "{pooling}: a real token must count"
            );
        }
    }
}
