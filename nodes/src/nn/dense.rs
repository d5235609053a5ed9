//! Fully connected layers, in f32 or quantized.
//!
//! A quantized layer keeps its weights in one of ggml's block formats
//! (`q8_0`, `q4_0`, `q4k`) and multiplies with candle's `QMatMul`, so a
//! quantized model really runs quantized. Block formats group the inputs
//! in blocks of 32 (256 for `q4k`); a layer whose input count is not a
//! multiple is stored with zero columns added, and its inputs are padded
//! with zeros to match.
//!
//! `QMatMul` wins on large layers (a 1024×1024 Q8_0 layer: 14.6 µs against
//! 40.3 µs in f32 at batch 1, 0.24 ms against 1.43 ms at batch 32: candle
//! repacks weights whose inputs are a multiple of 256 for its VNNI kernels).
//! On small layers it takes a generic path that is slow with many rows
//! (LeNet-300-100 at batch 256: 6.9 ms against 0.46 ms in f32), so a small
//! layer given at least 16 rows dequantizes its weights for the call and
//! runs one f32 product. The weights stay quantized between calls.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

/// Batches of at least this many rows multiply a small layer's weights
/// dequantized.
const DEQUANTIZE_FROM_ROWS: usize = 16;

/// Layers of at most this many weights are small (LeNet-300-100's largest
/// has 240 000).
const SMALL_LAYER: usize = 1 << 18;

/// Quantized weights by variable name, for the layers that have them.
pub type Quantized = HashMap<String, Arc<QTensor>>;

/// A fully connected layer: `x · Wᵀ + b`.
#[derive(Clone, Debug)]
pub enum Dense {
    /// f32 weights.
    F32(Linear),
    /// Block-quantized weights.
    Quantized {
        /// `[out, padded inputs]`.
        weight: QMatMul,
        /// The same blocks, dequantized for large batches.
        blocks: Arc<QTensor>,
        /// `[out]`, f32.
        bias: Tensor,
        /// Inputs the layer reads.
        inputs: usize,
        /// Inputs after zero padding to the block size.
        padded: usize,
    },
}

impl Dense {
    /// `inputs` → `outputs` under `vb` (`weight`, `bias`); quantized when
    /// `quantized` holds `<prefix>.weight`.
    pub fn new(
        inputs: usize,
        outputs: usize,
        vb: VarBuilder,
        quantized: &Quantized,
    ) -> Result<Self> {
        let name = format!("{}.weight", vb.prefix());
        let Some(q) = quantized.get(&name) else {
            return Ok(Dense::F32(candle_nn::linear(inputs, outputs, vb)?));
        };
        let (rows, padded) = q.shape().dims2()?;
        if rows != outputs || padded < inputs {
            candle_core::bail!(
                "quantized `{name}` is {rows}×{padded}, but the layer maps {inputs} inputs to {outputs} outputs"
            );
        }
        let bias = vb.get_with_hints(outputs, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Dense::Quantized {
            weight: QMatMul::from_arc(q.clone())?,
            blocks: q.clone(),
            bias,
            inputs,
            padded,
        })
    }
}

impl Dense {
    /// The weight `[outputs, inputs]` in f32 (dequantized if need be) and the bias.
    pub fn weight_and_bias(&self) -> Result<(Tensor, Tensor)> {
        match self {
            Dense::F32(linear) => {
                let bias = match linear.bias() {
                    Some(b) => b.clone(),
                    None => Tensor::zeros(
                        linear.weight().dim(0)?,
                        linear.weight().dtype(),
                        linear.weight().device(),
                    )?,
                };
                Ok((linear.weight().clone(), bias))
            }
            Dense::Quantized {
                blocks,
                bias,
                inputs,
                ..
            } => Ok((
                blocks.dequantize(bias.device())?.narrow(1, 0, *inputs)?,
                bias.clone(),
            )),
        }
    }
}

impl Module for Dense {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Dense::F32(linear) => linear.forward(x),
            Dense::Quantized {
                weight,
                blocks,
                bias,
                inputs,
                padded,
            } => {
                if x.dim(0)? >= DEQUANTIZE_FROM_ROWS && blocks.shape().elem_count() <= SMALL_LAYER {
                    let w = blocks.dequantize(x.device())?.narrow(1, 0, *inputs)?;
                    return x.matmul(&w.t()?)?.broadcast_add(bias);
                }
                let x = if padded > inputs {
                    let zeros = Tensor::zeros((x.dim(0)?, padded - inputs), x.dtype(), x.device())?;
                    Tensor::cat(&[x, &zeros], 1)?
                } else {
                    x.contiguous()?
                };
                weight.forward(&x)?.broadcast_add(bias)
            }
        }
    }
}
