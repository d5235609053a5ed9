//! 2-D convolution as im2col + one batched matrix product on the CPU.
//!
//! candle's CPU `conv2d` computes each output with a short dot product, and
//! its backward pass goes through `conv_transpose2d`, which is slower still;
//! at the sizes kiln's examples use (8×8 and 28×28 images, 1–64 channels)
//! that is most of a CNN's training time. Here the patches are gathered once
//! by a custom op ([`Im2Col`], whose gradient is its adjoint [`Col2Im`]) and
//! the convolution is a matrix product that candle's gemm differentiates
//! itself. Other devices keep candle's own kernels (cuDNN-backed on CUDA).

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use candle_nn::Conv2d;

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

    /// Calls `f(patch row, first output pixel, first input offset, count)`
    /// for every run of output pixels along one row whose kernel tap lands
    /// inside the image (not on the padding); inside a run the input offset
    /// advances by `stride`.
    fn for_each_run(&self, mut f: impl FnMut(usize, usize, usize, usize)) {
        let (oh, ow, k, s, p) = (
            self.out_height(),
            self.out_width(),
            self.kernel,
            self.stride,
            self.padding,
        );
        // Output columns whose tap `kx` falls inside `0..width`.
        let inside = |kx: usize| {
            let first = p.saturating_sub(kx).div_ceil(s);
            let last = (self.width + p).saturating_sub(kx).div_ceil(s).min(ow);
            (first, last.max(first))
        };
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
                        let x = first * s + kx - p;
                        f(
                            row,
                            oy * ow + first,
                            (c * self.height + y) * self.width + x,
                            last - first,
                        );
                    }
                }
            }
        }
    }
}

/// `[b, c, h, w]` → `[b·oh·ow, c·k·k + 1]`: each row one receptive field,
/// then a 1 for the bias.
struct Im2Col(Geometry);

/// The adjoint of [`Im2Col`]: sums patch gradients back onto the image.
struct Col2Im(Geometry);

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "kiln-im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let input = super::cpu_f32(storage, layout, self.name())?;
        let batch = layout.dims()[0];
        let (image, pixels) = (g.channels * g.height * g.width, g.pixels());
        let width = g.patch_len() + 1;
        let mut out = vec![0f32; batch * pixels * width];
        for (b, src) in input.chunks_exact(image).enumerate() {
            let dst = &mut out[b * pixels * width..][..pixels * width];
            g.for_each_run(|row, pixel, from, len| {
                for i in 0..len {
                    dst[(pixel + i) * width + row] = src[from + i * g.stride];
                }
            });
            // The last column multiplies the bias.
            for p in 0..pixels {
                dst[p * width + width - 1] = 1.0;
            }
        }
        Ok((CpuStorage::F32(out), (batch * pixels, width).into()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Col2Im(self.0))?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "kiln-col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let cols = super::cpu_f32(storage, layout, self.name())?;
        let pixels = g.pixels();
        let batch = layout.dims()[0] / pixels;
        let (image, width) = (g.channels * g.height * g.width, g.patch_len() + 1);
        let mut out = vec![0f32; batch * image];
        for (b, dst) in out.chunks_exact_mut(image).enumerate() {
            let src = &cols[b * pixels * width..][..pixels * width];
            g.for_each_run(|row, pixel, to, len| {
                for i in 0..len {
                    dst[to + i * g.stride] += src[(pixel + i) * width + row];
                }
            });
        }
        let shape = (batch, g.channels, g.height, g.width);
        Ok((CpuStorage::F32(out), shape.into()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Im2Col(self.0))?))
    }
}

/// Applies `conv` (weights `[out, in, k, k]`, square kernel, no dilation or
/// groups) to `x`: `[batch, in, h, w]` → `[batch, out, oh, ow]`.
pub fn conv2d(conv: &Conv2d, x: &Tensor) -> Result<Tensor> {
    use candle_nn::Module;
    let cfg = conv.config();
    let weight = conv.weight();
    let (out_channels, in_channels, kernel, _) = weight.dims4()?;
    if !x.device().is_cpu()
        || x.dtype() != candle_core::DType::F32
        || cfg.dilation != 1
        || cfg.groups != 1
    {
        return conv.forward(x);
    }
    let (batch, channels, height, width) = x.dims4()?;
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
    // One product for the whole batch, `[batch·pixels, k + 1] · [k + 1, out]`,
    // with the bias as the last row of the weights (so its gradient is part
    // of the same product, not a sum over a broadcast).
    let cols = x.contiguous()?.apply_op1(Im2Col(g))?;
    let bias = match conv.bias() {
        Some(b) => b.reshape((out_channels, 1))?,
        None => Tensor::zeros((out_channels, 1), weight.dtype(), weight.device())?,
    };
    let w = Tensor::cat(&[&weight.reshape((out_channels, g.patch_len()))?, &bias], 1)?;
    cols.matmul(&w.t()?)?
        .reshape((batch, g.pixels(), out_channels))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((batch, out_channels, g.out_height(), g.out_width()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
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
        for (padding, stride, k, h) in [(1, 1, 3, 8), (0, 1, 3, 7), (2, 2, 5, 11), (0, 2, 2, 6)] {
            let x = Var::from_tensor(&random(&[3, 2, h, h], 1)).unwrap();
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
            let g_ours = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
            let g_theirs = (theirs * &up)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for v in [&x, &w, &b] {
                let (a, b) = (g_ours.get(v).unwrap(), g_theirs.get(v).unwrap());
                assert!(
                    crate::nn::max_diff(a, b) < 1e-4,
                    "padding {padding} stride {stride}"
                );
            }
        }
    }
}
