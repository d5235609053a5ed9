//! Max pooling over `size`×`size` windows (stride `size`) as one op each way
//! on the CPU, with PyTorch's gradient.
//!
//! candle's max-pool gradient multiplies the incoming gradient by the share
//! of the window that holds the maximum (¼ for a 2×2 window without ties)
//! where it should pass it whole, and builds it from five ops (upsample,
//! compare, average-pool, upsample, multiply). Here the gradient goes whole
//! to the window's first maximum, as in PyTorch. The forward values are
//! candle's. It also misplaces the gradient when a side is not a multiple
//! of the window (it upsamples to the whole side). Other devices (a GPU)
//! gather each window's arg-max from a reshaped view, whose gradient also
//! goes whole to one maximum (ties are common: ReLU's zeros after batch
//! norm are equal values).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `[b, c, h, w]` → `[b, c, h / size, w / size]`, each the maximum of its
/// window (rows and columns past the last whole window are dropped).
pub fn max_pool2d(x: &Tensor, size: usize) -> Result<Tensor> {
    if x.rank() != 4 || size == 0 {
        return x.max_pool2d(size);
    }
    if !super::cpu::own_kernel_takes(x) {
        return windows_max(x, size);
    }
    x.contiguous()?.apply_op1(MaxPool(size))
}

/// Max pooling from candle's ops, for devices without kiln's op: the whole
/// windows, each as the last axis, and the value at each one's arg-max.
fn windows_max(x: &Tensor, size: usize) -> Result<Tensor> {
    let (batch, channels, height, width) = x.dims4()?;
    let (rows, cols) = (height / size, width / size);
    let windows = x
        .narrow(2, 0, rows * size)?
        .narrow(3, 0, cols * size)?
        .contiguous()?
        .reshape((batch, channels, rows, size, cols, size))?
        .permute((0, 1, 2, 4, 3, 5))?
        .contiguous()?
        .reshape((batch, channels, rows, cols, size * size))?;
    let first_max = windows.argmax_keepdim(4)?;
    windows.gather(&first_max, 4)?.squeeze(4)
}

struct MaxPool(usize);

/// (input, output gradient) → input gradient.
struct MaxPoolGrad(usize);

/// Calls `f(output index, input index of the window's first maximum)` for
/// every output of pooling one `h`×`w` plane by `size`.
fn for_each_max(plane: &[f32], w: usize, size: usize, mut f: impl FnMut(usize, usize)) {
    let (oh, ow) = (plane.len() / w / size, w / size);
    for oy in 0..oh {
        let rows = &plane[oy * size * w..][..size * w];
        for ox in 0..ow {
            let mut best = ox * size;
            let mut top = rows[best];
            for (dy, row) in rows.chunks_exact(w).enumerate() {
                for (dx, v) in row[ox * size..][..size].iter().enumerate() {
                    if *v > top {
                        (top, best) = (*v, dy * w + ox * size + dx);
                    }
                }
            }
            f(oy * ow + ox, oy * size * w + best);
        }
    }
}

/// Planes handed to one task of the thread pool at least.
const PLANES_PER_TASK: usize = 16;

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "kiln-max-pool"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = super::cpu_f32(storage, layout, self.name())?;
        let (b, c, h, w) = layout.shape().dims4()?;
        let size = self.0;
        if h < size || w < size {
            candle_core::bail!("cannot pool {size}×{size} over a {h}×{w} input");
        }
        let (oh, ow) = (h / size, w / size);
        let mut out = vec![0f32; b * c * oh * ow];
        out.par_chunks_mut(oh * ow)
            .zip(x.par_chunks(h * w))
            .with_min_len(PLANES_PER_TASK)
            .for_each(|(out, x)| for_each_max(x, w, size, |o, i| out[o] = x[i]));
        Ok((CpuStorage::F32(out), (b, c, h / size, w / size).into()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(
            &grad.contiguous()?,
            &MaxPoolGrad(self.0),
        )?))
    }
}

impl CustomOp2 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "kiln-max-pool-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (
            super::cpu_f32(s1, l1, self.name())?,
            super::cpu_f32(s2, l2, self.name())?,
        );
        let (b, c, h, w) = l1.shape().dims4()?;
        let (size, (oh, ow)) = (self.0, (h / self.0, w / self.0));
        let mut d_x = vec![0f32; b * c * h * w];
        if oh * ow > 0 {
            d_x.par_chunks_mut(h * w)
                .zip(x.par_chunks(h * w))
                .zip(g.par_chunks(oh * ow))
                .with_min_len(PLANES_PER_TASK)
                .for_each(|((d_x, x), g)| for_each_max(x, w, size, |o, i| d_x[i] += g[o]));
        }
        Ok((CpuStorage::F32(d_x), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// candle's values; the gradient whole at each window's maximum, which is
    /// candle's gradient times the window's area when there are no ties.
    #[test]
    fn pools_as_candle_and_passes_the_whole_gradient_to_the_maximum() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        for (shape, size) in [
            ([2, 3, 8, 8], 2),
            ([1, 2, 7, 5], 2),
            ([3, 1, 9, 9], 3),
            ([1, 1, 1, 1], 1),
        ] {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let x = Var::from_vec(data, &shape, &Device::Cpu).unwrap();
            let ours = max_pool2d(x.as_tensor(), size).unwrap();
            // candle's gradient is right only over whole windows: crop first.
            let (h, w) = (shape[2] / size * size, shape[3] / size * size);
            let cropped = x
                .as_tensor()
                .narrow(2, 0, h)
                .unwrap()
                .narrow(3, 0, w)
                .unwrap();
            let theirs = cropped.max_pool2d(size).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            assert_eq!(crate::nn::max_diff(&ours, &theirs), 0.0);
            let up: Vec<f32> = (0..ours.elem_count())
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let up = Tensor::from_vec(up, ours.dims(), &Device::Cpu).unwrap();
            let g_ours = crate::nn::gradients(&ours, &up);
            let g_theirs = crate::nn::gradients(&theirs, &up);
            let scaled = (g_theirs.get(&x).unwrap() * (size * size) as f64).unwrap();
            assert!(
                crate::nn::max_diff(g_ours.get(&x).unwrap(), &scaled) < 1e-6,
                "{shape:?}"
            );
            // What a GPU runs: the same values and gradient.
            let composed = crate::nn::cpu::with_candle_ops(|| max_pool2d(x.as_tensor(), size));
            let composed = composed.unwrap();
            assert_eq!(
                crate::nn::bits(&composed),
                crate::nn::bits(&ours),
                "{shape:?}"
            );
            let g_composed = crate::nn::gradients(&composed, &up);
            assert_eq!(
                crate::nn::bits(g_composed.get(&x).unwrap()),
                crate::nn::bits(g_ours.get(&x).unwrap()),
                "{shape:?}"
            );
        }
        // A tie goes to the first maximum only, on both paths.
        let x = Var::from_vec(vec![1f32, 1.0, 0.0, 1.0], (1, 1, 2, 2), &Device::Cpu).unwrap();
        let tie = || {
            let g = max_pool2d(x.as_tensor(), 2)
                .and_then(|y| y.sum_all())
                .and_then(|y| y.backward())
                .unwrap();
            let g = g.get(&x).unwrap().flatten_all().unwrap();
            g.to_vec1::<f32>().unwrap()
        };
        assert_eq!(tie(), [1.0, 0.0, 0.0, 0.0]);
        assert_eq!(crate::nn::cpu::with_candle_ops(tie), [1.0, 0.0, 0.0, 0.0]);
    }
}
