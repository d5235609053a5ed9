//! 2-D convolution on the CPU as one custom op, forward and backward.
//!
//! candle's CPU `conv2d` computes each output with a short dot product, and
//! its backward pass goes through `conv_transpose2d`, which is slower still;
//! at the sizes kiln's examples use (8×8 and 28×28 images, 1–64 channels)
//! that was most of a CNN's training time. Here ([`Conv`]) each image's
//! patches are gathered into a buffer, row by row in contiguous runs, and
//! multiplied by the weights straight into the output's `[out, oh·ow]`
//! layout, the bias written first. The backward pass ([`ConvGrad`])
//! gathers the patches again and gives all three gradients in one pass over
//! the batch. Parts of the batch run side by side on the thread pool, each
//! product on one thread. Other devices keep candle's own kernels
//! (cuDNN-backed on CUDA).

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use candle_nn::Conv2d;
use rayon::prelude::*;

use crate::nn::matrix::{product, View};

/// Geometry of one convolution: input size, kernel, stride, padding.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    channels: usize,
    height: usize,
    width: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl Geometry {
    fn out_height(&self) -> usize {
        (self.height + 2 * self.padding - self.kernel) / self.stride + 1
    }

    fn out_width(&self) -> usize {
        (self.width + 2 * self.padding - self.kernel) / self.stride + 1
    }

    fn pixels(&self) -> usize {
        self.out_height() * self.out_width()
    }

    /// Rows of a patch matrix: one per input channel and kernel position.
    fn patch_len(&self) -> usize {
        self.channels * self.kernel * self.kernel
    }

    /// Every run of output pixels along one row whose kernel tap lands
    /// inside the image (not on the padding), listed once per op and
    /// replayed for every image: at 8×8 the runs are 7 or 8 values long,
    /// and working out each one's place cost more than copying it.
    fn runs(&self) -> Vec<Run> {
        let (oh, ow, k, s, p) = (
            self.out_height(),
            self.out_width(),
            self.kernel,
            self.stride,
            self.padding,
        );
        let pixels = oh * ow;
        // Output columns whose tap `kx` falls inside `0..width`.
        let inside = |kx: usize| {
            let first = p.saturating_sub(kx).div_ceil(s);
            let last = (self.width + p).saturating_sub(kx).div_ceil(s).min(ow);
            (first, last.max(first))
        };
        let mut runs = Vec::new();
        for c in 0..self.channels {
            for ky in 0..k {
                for kx in 0..k {
                    let row = (c * k + ky) * k + kx;
                    let (first, last) = inside(kx);
                    if first == last {
                        continue;
                    }
                    for oy in 0..oh {
                        let Some(y) = (oy * s + ky).checked_sub(p).filter(|y| *y < self.height)
                        else {
                            continue;
                        };
                        runs.push(Run {
                            patch: row * pixels + oy * ow + first,
                            image: (c * self.height + y) * self.width + first * s + kx - p,
                            len: last - first,
                        });
                    }
                }
            }
        }
        runs
    }
}

/// A run of patch values: `len` of them from `patch` on in the patch
/// matrix, taken from the image `stride` apart from `image` on.
#[derive(Clone, Copy, Debug)]
struct Run {
    patch: usize,
    image: usize,
    len: usize,
}

/// Images per part of the batch: parts run side by side on the thread pool,
/// and each part sums its own weight gradients, which are then added in part
/// order. The cut depends on the batch size only, so the numbers do not
/// depend on `--jobs`.
const PART: usize = 8;

impl Geometry {
    fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// One image `[c, h, w]` → its patches `[c·k·k, oh·ow]` (`runs` from
    /// [`Geometry::runs`]): row `(c, ky, kx)` holds that tap for every
    /// output pixel. Padding stays as `cols` has it (zero: the same places
    /// are skipped for every image).
    fn im2col(&self, runs: &[Run], image: &[f32], cols: &mut [f32]) {
        for r in runs {
            let dst = &mut cols[r.patch..][..r.len];
            if self.stride == 1 {
                copy_run(dst, &image[r.image..][..r.len]);
            } else {
                for (i, d) in dst.iter_mut().enumerate() {
                    *d = image[r.image + i * self.stride];
                }
            }
        }
    }

    /// The adjoint of [`Geometry::im2col`]: adds each patch value back onto
    /// the image position it came from.
    fn col2im(&self, runs: &[Run], cols: &[f32], image: &mut [f32]) {
        for r in runs {
            let src = &cols[r.patch..][..r.len];
            if self.stride == 1 {
                for (d, v) in image[r.image..][..r.len].iter_mut().zip(src) {
                    *d += v;
                }
            } else {
                for (i, v) in src.iter().enumerate() {
                    image[r.image + i * self.stride] += v;
                }
            }
        }
    }
}

/// Copies `src` into `dst` (as long) in blocks of eight: the runs here are
/// an image row or less, too short for a call to `memcpy` to pay.
#[inline(always)]
fn copy_run(dst: &mut [f32], src: &[f32]) {
    let (mut d, mut s) = (dst.chunks_exact_mut(8), src.chunks_exact(8));
    for (d, s) in (&mut d).zip(&mut s) {
        let d: &mut [f32; 8] = d.try_into().expect("a block of eight");
        *d = s.try_into().expect("a block of eight");
    }
    // An indexed loop: a zipped one would be turned back into `memcpy`.
    let (d, s) = (d.into_remainder(), s.remainder());
    let mut i = 0;
    while i < d.len().min(s.len()) {
        d[i] = s[i];
        i += 1;
    }
}

/// The convolution of `x` `[b, c, h, w]` with weights `[out, c·k·k]` and a
/// bias `[out]`: for each image, its patches times the weights, written
/// straight into `[out, oh·ow]` (no transpose afterwards).
struct Conv(Geometry);

/// The gradients of [`Conv`] from `x`, the weights and the output's
/// gradient, packed into one vector: weights `[out·c·k·k]`, bias `[out]`,
/// then the input `[b·c·h·w]` when `input` (a layer whose input is data, not
/// a result, skips it).
struct ConvGrad {
    geometry: Geometry,
    input: bool,
}

impl CustomOp3 for Conv {
    fn name(&self) -> &'static str {
        "kiln-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let x = super::cpu_f32(s1, l1, self.name())?;
        let w = super::cpu_f32(s2, l2, self.name())?;
        let bias = super::cpu_f32(s3, l3, self.name())?;
        let (batch, out_channels) = (l1.dims()[0], bias.len());
        let (k, pixels, image) = (g.patch_len(), g.pixels(), g.image_len());
        let mut out = vec![0f32; batch * out_channels * pixels];
        let shape = (batch, out_channels, g.out_height(), g.out_width());
        if out.is_empty() {
            return Ok((CpuStorage::F32(out), shape.into()));
        }
        let weights = View::dense(w, out_channels, k);
        let runs = g.runs();
        out.par_chunks_mut(PART * out_channels * pixels)
            .zip(x.par_chunks(PART * image))
            .for_each(|(out, x)| {
                let mut cols = vec![0f32; k * pixels];
                for (y, x) in out
                    .chunks_exact_mut(out_channels * pixels)
                    .zip(x.chunks_exact(image))
                {
                    g.im2col(&runs, x, &mut cols);
                    for (row, b) in y.chunks_exact_mut(pixels).zip(bias) {
                        row.fill(*b);
                    }
                    product(y, weights, View::dense(&cols, k, pixels), true);
                }
            });
        Ok((CpuStorage::F32(out), shape.into()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let input = x.track_op();
        let op = ConvGrad {
            geometry: self.0,
            input,
        };
        let packed = x.apply_op3_no_bwd(w, &grad.contiguous()?, &op)?;
        let (out_channels, k) = w.dims2()?;
        let d_w = packed
            .narrow(0, 0, out_channels * k)?
            .reshape((out_channels, k))?;
        let d_bias = packed.narrow(0, out_channels * k, out_channels)?;
        let d_x = if input {
            let at = out_channels * (k + 1);
            Some(packed.narrow(0, at, x.elem_count())?.reshape(x.shape())?)
        } else {
            None
        };
        Ok((d_x, Some(d_w), Some(d_bias)))
    }
}

impl CustomOp3 for ConvGrad {
    fn name(&self) -> &'static str {
        "kiln-conv2d-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.geometry;
        let x = super::cpu_f32(s1, l1, self.name())?;
        let w = super::cpu_f32(s2, l2, self.name())?;
        let grad = super::cpu_f32(s3, l3, self.name())?;
        let (out_channels, k) = l2.shape().dims2()?;
        let (batch, pixels, image) = (l1.dims()[0], g.pixels(), g.image_len());
        let sums_len = out_channels * (k + 1);
        let mut d_x = vec![0f32; if self.input { batch * image } else { 0 }];
        let d_x_parts: Vec<Option<&mut [f32]>> = if self.input {
            d_x.chunks_mut(PART * image).map(Some).collect()
        } else {
            (0..batch.div_ceil(PART)).map(|_| None).collect()
        };
        let weights = View::dense(w, out_channels, k);
        let runs = g.runs();
        let sums: Vec<Vec<f32>> = d_x_parts
            .into_par_iter()
            .enumerate()
            .map(|(part, mut d_x)| {
                let first = part * PART;
                let images = first..(first + PART).min(batch);
                let mut sums = vec![0f32; sums_len];
                let mut cols = vec![0f32; k * pixels];
                let mut d_cols = vec![0f32; if d_x.is_some() { k * pixels } else { 0 }];
                for b in images {
                    let dy = &grad[b * out_channels * pixels..][..out_channels * pixels];
                    let (d_w, d_bias) = sums.split_at_mut(out_channels * k);
                    g.im2col(&runs, &x[b * image..][..image], &mut cols);
                    product(
                        d_w,
                        View::dense(dy, out_channels, pixels),
                        View::dense(&cols, k, pixels).t(),
                        true,
                    );
                    for (d, row) in d_bias.iter_mut().zip(dy.chunks_exact(pixels)) {
                        *d += row.iter().sum::<f32>();
                    }
                    if let Some(d_x) = d_x.as_deref_mut() {
                        let dy = View::dense(dy, out_channels, pixels);
                        product(&mut d_cols, weights.t(), dy, false);
                        g.col2im(&runs, &d_cols, &mut d_x[(b - first) * image..][..image]);
                    }
                }
                sums
            })
            .collect();
        let mut packed = vec![0f32; sums_len];
        for part in &sums {
            for (p, s) in packed.iter_mut().zip(part) {
                *p += s;
            }
        }
        packed.extend_from_slice(&d_x);
        let len = packed.len();
        Ok((CpuStorage::F32(packed), len.into()))
    }
}

/// Applies `conv` (weights `[out, in, k, k]`, square kernel, no dilation or
/// groups) to `x`: `[batch, in, h, w]` → `[batch, out, oh, ow]`.
pub fn conv2d(conv: &Conv2d, x: &Tensor) -> Result<Tensor> {
    use candle_nn::Module;
    let cfg = conv.config();
    let weight = conv.weight();
    let (out_channels, in_channels, kernel, _) = weight.dims4()?;
    if !super::cpu::own_kernel_takes(x)
        || weight.dtype() != candle_core::DType::F32
        || cfg.dilation != 1
        || cfg.groups != 1
    {
        return conv.forward(x);
    }
    let (_, channels, height, width) = x.dims4()?;
    if channels != in_channels
        || height + 2 * cfg.padding < kernel
        || width + 2 * cfg.padding < kernel
    {
        // Let candle report the shape error in its own words.
        return conv.forward(x);
    }
    let g = Geometry {
        channels,
        height,
        width,
        kernel,
        stride: cfg.stride,
        padding: cfg.padding,
    };
    let bias = match conv.bias() {
        Some(b) => b.clone(),
        None => Tensor::zeros(out_channels, weight.dtype(), weight.device())?,
    };
    let w = weight.reshape((out_channels, g.patch_len()))?;
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &bias.contiguous()?, Conv(g))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use candle_nn::{Conv2dConfig, Module};

    fn random(shape: &[usize], seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    /// Outputs and all three gradients agree with candle's own kernels.
    #[test]
    fn matches_candle_conv_forward_and_backward() {
        for (batch, padding, stride, k, h) in [
            (3, 1, 1, 3, 8),
            (3, 0, 1, 3, 7),
            (3, 2, 2, 5, 11),
            (3, 0, 2, 2, 6),
            // More images than one part holds, and not a multiple of it.
            (2 * PART + 3, 1, 1, 3, 5),
        ] {
            let x = Var::from_tensor(&random(&[batch, 2, h, h], 1)).unwrap();
            let w = Var::from_tensor(&random(&[4, 2, k, k], 2)).unwrap();
            let b = Var::from_tensor(&random(&[4], 3)).unwrap();
            let cfg = Conv2dConfig {
                padding,
                stride,
                ..Default::default()
            };
            let conv = Conv2d::new(w.as_tensor().clone(), Some(b.as_tensor().clone()), cfg);
            let ours = conv2d(&conv, x.as_tensor()).unwrap();
            let theirs = conv.forward(x.as_tensor()).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            assert!(crate::nn::max_diff(&ours, &theirs) < 1e-5);

            let up = random(theirs.dims(), 4);
            let g_ours = crate::nn::gradients(&ours, &up);
            let g_theirs = crate::nn::gradients(&theirs, &up);
            for v in [&x, &w, &b] {
                let (a, b) = (g_ours.get(v).unwrap(), g_theirs.get(v).unwrap());
                assert!(
                    crate::nn::max_diff(a, b) < 1e-4,
                    "padding {padding} stride {stride}"
                );
            }
        }
    }

    /// A first layer, whose input is data (no gradient wanted, the op skips
    /// it), still gets candle's weight and bias gradients.
    #[test]
    fn a_layer_on_data_gets_candles_weight_gradients() {
        let x = random(&[5, 3, 6, 6], 1);
        let w = Var::from_tensor(&random(&[4, 3, 3, 3], 2)).unwrap();
        let b = Var::from_tensor(&random(&[4], 3)).unwrap();
        let cfg = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let conv = Conv2d::new(w.as_tensor().clone(), Some(b.as_tensor().clone()), cfg);
        let grads = conv2d(&conv, &x).unwrap().sqr().unwrap().sum_all().unwrap();
        let grads = grads.backward().unwrap();
        let theirs = conv.forward(&x).unwrap().sqr().unwrap().sum_all().unwrap();
        let theirs = theirs.backward().unwrap();
        assert!(grads.get(&x).is_none());
        for v in [&w, &b] {
            let (a, b) = (grads.get(v).unwrap(), theirs.get(v).unwrap());
            assert!(crate::nn::max_diff(a, b) < 1e-3);
        }
    }

    /// An empty batch gives an empty output of the right shape.
    #[test]
    fn an_empty_batch_is_empty() {
        let w = random(&[4, 2, 3, 3], 2);
        let conv = Conv2d::new(w, None, Conv2dConfig::default());
        let y = conv2d(
            &conv,
            &Tensor::zeros((0, 2, 5, 5), DType::F32, &Device::Cpu).unwrap(),
        );
        assert_eq!(y.unwrap().dims(), [0, 4, 3, 3]);
    }
}
