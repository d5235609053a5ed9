//! Fully connected layers, in f32 or quantized.
//!
//! A quantized layer keeps its weights in one of ggml's block formats
//! (`q8_0`, `q4_0`, `q4k`), so a quantized model really runs quantized.
//! Block formats group the inputs in blocks of 32 (256 for `q4k`); a layer
//! whose input count is not a multiple is stored with zero columns added,
//! and its inputs are padded with zeros to match.
//!
//! On the CPU, Q8_0 and Q4_0 layers multiply with kiln's own integer
//! products ([`crate::quant`]: AVX-512 VNNI or AVX2 chosen when the program
//! starts, any layer shape; Q4_0 runs as the Q4_1 it equals): LeNet-300-100
//! at batch 1 takes 8.7 µs in Q8_0 and 6.3 µs in Q4_0 against 10.9 µs in f32
//! (Zen 5). candle's `QMatMul` runs the other formats, and Q8_0 layers it
//! repacks for its VNNI kernels (`candle_repacks`). On small layers
//! integer products lose to one f32 product once there are many rows
//! (LeNet-300-100 at batch 256: 6.9 ms in `QMatMul` against 0.46 ms in f32),
//! so a small layer given at least 16 rows dequantizes its weights for the
//! call. The weights stay quantized between calls.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::quant::{Isa, QMatrix, Scratch};

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
        /// `[out, padded inputs]`, multiplied by kiln's kernels or candle's.
        weight: Product,
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

/// Whether candle repacks a Q8_0 layer of this shape for its VNNI kernels,
/// which are faster than kiln's there (1024×1024 at batch 1: 16 µs against
/// 21 µs on a Zen 5); it does so on AVX-512 VNNI machines for outputs in
/// sixteens and inputs in 256s, and never on AVX2 alone, where its Q8_0
/// product is 4× slower than kiln's.
fn candle_repacks(outputs: usize, padded_inputs: usize) -> bool {
    Isa::detected() == Isa::Avx512Vnni
        && outputs.is_multiple_of(16)
        && padded_inputs.is_multiple_of(256)
}

/// Who multiplies a quantized layer's weights.
#[derive(Clone, Debug)]
pub enum Product {
    /// kiln's integer products (Q8_0 and Q4_0 on the CPU), the bias added
    /// on the way out. The matrix is a second copy of the weights beside
    /// `blocks` (which the model value holds anyway), 1.06× (Q8_0) or 1.11×
    /// (Q4_0) the size of the stored blocks, in memory only.
    Own {
        matrix: Arc<QMatrix>,
        bias: Vec<f32>,
    },
    /// candle's.
    Candle(QMatMul),
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
        // kiln's matrices need whole blocks of 32 (a damaged file may hold none).
        let blocks_fit = padded > 0 && padded.is_multiple_of(crate::quant::BLOCK);
        let own = match q.dtype() {
            _ if !super::cpu::own_kernels_on(&q.device()) || !blocks_fit => None,
            GgmlDType::Q8_0 if !candle_repacks(rows, padded) => {
                Some(QMatrix::from_q8_0(padded, &[&q.data()?]))
            }
            GgmlDType::Q4_0 => Some(QMatrix::from_q4_0(padded, &q.data()?)),
            _ => None,
        };
        let weight = match own {
            Some(matrix) => Product::Own {
                matrix: Arc::new(matrix),
                bias: bias.to_dtype(DType::F32)?.to_vec1()?,
            },
            None => Product::Candle(QMatMul::from_arc(q.clone())?),
        };
        Ok(Dense::Quantized {
            weight,
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
            Dense::F32(linear) => match linear.bias() {
                // The bias by kiln's op: its gradient is one pass (see `pointwise`).
                Some(bias) if super::cpu::own_kernels_on(x.device()) => {
                    let product = Linear::new(linear.weight().clone(), None).forward(x)?;
                    super::pointwise::add_bias(&product, bias)
                }
                _ => linear.forward(x),
            },
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
                match weight {
                    Product::Own { matrix, bias } => own_product(matrix, bias, x, *inputs),
                    Product::Candle(weight) => {
                        let x = if padded > inputs {
                            let zeros =
                                Tensor::zeros((x.dim(0)?, padded - inputs), x.dtype(), x.device())?;
                            Tensor::cat(&[x, &zeros], 1)?
                        } else {
                            x.contiguous()?
                        };
                        weight.forward(&x)?.broadcast_add(bias)
                    }
                }
            }
        }
    }
}

/// `x · Wᵀ + b` by kiln's kernels: `x`'s rows (`[.., inputs]`, f32) padded
/// with zeros to the matrix's columns.
fn own_product(matrix: &QMatrix, bias: &[f32], x: &Tensor, inputs: usize) -> Result<Tensor> {
    let dims = x.dims();
    if dims.last() != Some(&inputs) {
        candle_core::bail!("a layer of {inputs} inputs was given values shaped {dims:?}");
    }
    let rows = x.elem_count() / inputs.max(1);
    let values = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let padded = if matrix.cols == inputs {
        values
    } else {
        let mut p = vec![0f32; rows * matrix.cols];
        for (to, from) in p
            .chunks_exact_mut(matrix.cols)
            .zip(values.chunks_exact(inputs))
        {
            to[..inputs].copy_from_slice(from);
        }
        p
    };
    let mut out = vec![0f32; rows * matrix.rows];
    matrix.matmul(&padded, &mut out, &mut Scratch::default());
    for row in out.chunks_exact_mut(matrix.rows) {
        for (o, b) in row.iter_mut().zip(bias) {
            *o += b;
        }
    }
    let mut shape = dims.to_vec();
    *shape
        .last_mut()
        .expect("a layer's input has at least one dimension") = matrix.rows;
    Tensor::from_vec(out, shape, x.device())?.to_dtype(x.dtype())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// A quantized layer of `inputs` → `outputs` in `dtype`, with a bias.
    fn layer(inputs: usize, outputs: usize, dtype: GgmlDType) -> (Dense, Arc<QTensor>, Tensor) {
        let dev = Device::Cpu;
        let block = dtype.block_size();
        let padded = inputs.div_ceil(block) * block;
        let w = Tensor::randn(0f32, 0.1, (outputs, inputs), &dev).unwrap();
        let w = Tensor::cat(
            &[
                &w,
                &Tensor::zeros((outputs, padded - inputs), DType::F32, &dev).unwrap(),
            ],
            1,
        )
        .unwrap();
        let q = Arc::new(QTensor::quantize(&w, dtype).unwrap());
        let bias = Tensor::randn(0f32, 1.0, outputs, &dev).unwrap();
        let vb = VarBuilder::from_tensors(
            HashMap::from([("l.bias".to_string(), bias.clone())]),
            DType::F32,
            &dev,
        );
        let quantized = Quantized::from([("l.weight".to_string(), q.clone())]);
        (
            Dense::new(inputs, outputs, vb.pp("l"), &quantized).unwrap(),
            q,
            bias,
        )
    }

    #[test]
    fn q8_0_and_q4_0_layers_of_any_shape_multiply_within_the_activations_rounding() {
        // Small layers given 16 rows or more multiply dequantized weights in
        // f32, so 40 rows are checked on large layers (the last two: kiln's
        // kernels and, on a VNNI machine, candle's repacked ones).
        let shapes = [(784, 300), (100, 10), (32, 1), (1024, 300), (1024, 256)];
        for ((inputs, outputs), dtype) in shapes
            .into_iter()
            .flat_map(|s| [(s, GgmlDType::Q8_0), (s, GgmlDType::Q4_0)])
        {
            let (dense, q, bias) = layer(inputs, outputs, dtype);
            let Dense::Quantized { weight, padded, .. } = &dense else {
                panic!("a quantized layer")
            };
            assert_eq!(
                matches!(weight, Product::Candle(_)),
                dtype == GgmlDType::Q8_0 && candle_repacks(outputs, *padded),
                "{dtype:?} {inputs}→{outputs}"
            );
            let w = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let bias = bias.to_vec1::<f32>().unwrap();
            let large = inputs * outputs > SMALL_LAYER;
            for rows in [1, 3, 15, 40]
                .into_iter()
                .filter(|&r| r < DEQUANTIZE_FROM_ROWS || large)
            {
                let x = Tensor::randn(0f32, 1.0, (rows, inputs), &Device::Cpu).unwrap();
                let got = dense.forward(&x).unwrap();
                assert_eq!(got.dims(), [rows, outputs]);
                let (got, x) = (got.to_vec2::<f32>().unwrap(), x.to_vec2::<f32>().unwrap());
                let (mut squared_err, mut squared_bound) = (0f64, 0f64);
                for (i, x) in x.iter().enumerate() {
                    for (j, w) in w.iter().enumerate() {
                        // The exact product of the stored weights, and the most
                        // that rounding the activations to 8 bits per block of 32
                        // (half a step, max |x| / 127 each) can move it.
                        let (mut exact, mut bound) = (bias[j] as f64, 1e-4);
                        for (xb, wb) in x.chunks(32).zip(w.chunks(32)) {
                            let step = xb.iter().fold(0f32, |m, v| m.max(v.abs())) as f64 / 127.0;
                            for (&xv, &wv) in xb.iter().zip(wb) {
                                exact += xv as f64 * wv as f64;
                                bound += (wv as f64).abs() * step * 0.5;
                            }
                        }
                        let err = (got[i][j] as f64 - exact).abs();
                        (squared_err, squared_bound) =
                            (squared_err + err * err, squared_bound + bound * bound);
                        assert!(
                            err <= bound,
                            "{dtype:?} {inputs}→{outputs} × {rows} [{i}][{j}]: {} vs {exact} (bound {bound})",
                            got[i][j]
                        );
                    }
                }
                // Rounding errors mostly cancel: about 1/√inputs of the bound,
                // where a lost bias or a misplaced input is many times all of it.
                let ratio = (squared_err / squared_bound).sqrt();
                assert!(
                    ratio < 3.0 / (inputs as f64).sqrt(),
                    "{dtype:?} {inputs}→{outputs} × {rows}: error {ratio} of the bound"
                );
            }
        }
    }

    #[test]
    fn a_q8_0_layer_reads_inputs_of_any_rank() {
        let (dense, _, _) = layer(50, 7, GgmlDType::Q8_0);
        let x = Tensor::randn(0f32, 1.0, (2, 3, 50), &Device::Cpu).unwrap();
        let whole = dense.forward(&x).unwrap();
        assert_eq!(whole.dims(), [2, 3, 7]);
        let flat = dense.forward(&x.reshape((6, 50)).unwrap()).unwrap();
        assert_eq!(
            whole.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            flat.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn a_q8_0_layer_refuses_rows_of_another_width() {
        let (dense, _, _) = layer(50, 7, GgmlDType::Q8_0);
        let x = Tensor::zeros((2, 48), DType::F32, &Device::Cpu).unwrap();
        let err = dense.forward(&x).unwrap_err().to_string();
        assert!(
            err.contains("a layer of 50 inputs was given values shaped [2, 48]"),
            "{err}"
        );
    }

    #[test]
    fn other_formats_stay_with_candle() {
        for dtype in [GgmlDType::Q4K, GgmlDType::Q5_0] {
            let (dense, _, _) = layer(256, 8, dtype);
            assert!(matches!(
                dense,
                Dense::Quantized {
                    weight: Product::Candle(_),
                    ..
                }
            ));
        }
    }
}
