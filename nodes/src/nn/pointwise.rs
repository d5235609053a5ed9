//! A bias added over the last axis and ReLU, each one op forward and one
//! backward on the CPU.
//!
//! In candle the bias's gradient is a sum over the leading axis, which its
//! CPU backend reduces with a strided scalar loop (a tenth of an MLP's
//! training time), and ReLU's gradient is three ops (compare, convert,
//! multiply). Both give candle's numbers: the bias gradient sums the rows in
//! order, as candle does, and ReLU passes the gradient where the input is
//! ≥ 0, as candle's does. Other devices keep candle's ops.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::cpu::own_kernel_takes;

/// `x + b`, `b` of `x`'s last dimension, broadcast over the others.
pub fn add_bias(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let width = x.dims().last().copied().unwrap_or(1);
    if !own_kernel_takes(x) || !own_kernel_takes(bias) || bias.dims() != [width] || width == 0 {
        return x.broadcast_add(bias);
    }
    x.contiguous()?.apply_op2(&bias.contiguous()?, AddBias)
}

/// `max(x, 0)`.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if !own_kernel_takes(x) {
        return x.relu();
    }
    x.contiguous()?.apply_op1(Relu)
}

struct AddBias;

/// Sums the rows of a `[.., width]` tensor: `[width]`.
struct SumRows;

struct Relu;

/// The gradient through [`Relu`]: (input, gradient) → gradient where the
/// input is ≥ 0, zero elsewhere.
struct ReluGrad;

impl CustomOp2 for AddBias {
    fn name(&self) -> &'static str {
        "kiln-add-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, b) = (
            super::cpu_f32(s1, l1, self.name())?,
            super::cpu_f32(s2, l2, self.name())?,
        );
        let mut out = x.to_vec();
        for row in out.chunks_exact_mut(b.len()) {
            row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let d_bias = grad.contiguous()?.apply_op1_no_bwd(&SumRows)?;
        Ok((Some(grad.clone()), Some(d_bias)))
    }
}

impl CustomOp1 for SumRows {
    fn name(&self) -> &'static str {
        "kiln-sum-rows"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = super::cpu_f32(storage, layout, self.name())?;
        let width = layout.dims().last().copied().unwrap_or(1);
        let mut sum = vec![0f32; width];
        for row in x.chunks_exact(width) {
            sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
        }
        Ok((CpuStorage::F32(sum), width.into()))
    }
}

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "kiln-relu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = super::cpu_f32(storage, layout, self.name())?;
        let out = x.iter().map(|v| v.max(0.0)).collect();
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, &ReluGrad)?))
    }
}

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "kiln-relu-grad"
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
        let out = x
            .iter()
            .zip(g)
            .map(|(x, g)| g * if *x >= 0.0 { 1.0 } else { 0.0 })
            .collect();
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::bits;
    use candle_core::{Device, Var};

    fn random(shape: &[usize], seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n = shape.iter().product();
        // Some exact zeros, where ReLU's gradient has a convention.
        let data: Vec<f32> = (0..n)
            .map(|i| {
                if i % 7 == 0 {
                    0.0
                } else {
                    rng.random_range(-1.0..1.0)
                }
            })
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    /// Values and gradients are candle's own, to the bit, on odd shapes.
    #[test]
    fn bias_and_relu_give_candles_bits_forward_and_back() {
        for shape in [vec![1, 1], vec![3, 17], vec![255, 3], vec![2, 5, 257]] {
            let width = *shape.last().unwrap();
            let x = Var::from_tensor(&random(&shape, 1)).unwrap();
            let b = Var::from_tensor(&random(&[width], 2)).unwrap();
            let up = random(&shape, 3);
            let ours = relu(&add_bias(x.as_tensor(), b.as_tensor()).unwrap()).unwrap();
            let theirs = x
                .as_tensor()
                .broadcast_add(b.as_tensor())
                .unwrap()
                .relu()
                .unwrap();
            assert_eq!(bits(&ours), bits(&theirs), "{shape:?}");
            let g_ours = crate::nn::gradients(&ours, &up);
            let g_theirs = crate::nn::gradients(&theirs, &up);
            for v in [&x, &b] {
                let (a, c) = (g_ours.get(v).unwrap(), g_theirs.get(v).unwrap());
                assert_eq!(bits(a), bits(c), "{shape:?} {:?}", v.dims());
            }
        }
    }
}
