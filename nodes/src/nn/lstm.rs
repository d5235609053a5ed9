//! An LSTM layer that runs a whole sequence as one op on the CPU.
//!
//! candle-nn's LSTM runs every gate of every time step as its own strided
//! element-wise op (about twenty per step, each allocating and each a node of
//! the backward graph); on the CPU that bookkeeping, not the arithmetic, was
//! most of an LSTM's training time. Here a layer is one custom op
//! ([`Sequence`]): one matrix product projects every step's input, then a
//! loop runs the recurrence with one product per step and the gates computed
//! in place. Its backward pass ([`SequenceGrad`]) runs the recurrence back
//! through time the same way, and the weight gradients are three products.
//! Weights are created exactly as candle-nn creates them (PyTorch's names and
//! initialisation); other devices run the same formula with tensor ops.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use candle_nn::rnn::LSTMConfig;
use candle_nn::VarBuilder;

/// One LSTM layer in one direction (gates in PyTorch's order: i, f, g, o).
pub struct Lstm {
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor,
    b_hh: Tensor,
    hidden: usize,
}

impl Lstm {
    /// Creates `weight_ih_l{layer}`, `weight_hh_l{layer}`, `bias_ih_l{layer}`,
    /// `bias_hh_l{layer}` (with `_reverse` for the backward direction).
    pub fn new(
        input: usize,
        hidden: usize,
        layer: usize,
        backward: bool,
        vb: &VarBuilder,
    ) -> Result<Self> {
        let conf = LSTMConfig::default();
        let suffix = if backward { "_reverse" } else { "" };
        let bias_init = conf.b_ih_init.unwrap_or(candle_nn::Init::Const(0.0));
        Ok(Lstm {
            w_ih: vb.get_with_hints(
                (4 * hidden, input),
                &format!("weight_ih_l{layer}{suffix}"),
                conf.w_ih_init,
            )?,
            w_hh: vb.get_with_hints(
                (4 * hidden, hidden),
                &format!("weight_hh_l{layer}{suffix}"),
                conf.w_hh_init,
            )?,
            b_ih: vb.get_with_hints(4 * hidden, &format!("bias_ih_l{layer}{suffix}"), bias_init)?,
            b_hh: vb.get_with_hints(4 * hidden, &format!("bias_hh_l{layer}{suffix}"), bias_init)?,
            hidden,
        })
    }

    /// Runs the layer over a time-major sequence `[time, batch, input]` and
    /// returns every step's hidden state, `[time, batch, hidden]`.
    pub fn run(&self, x: &Tensor) -> Result<Tensor> {
        let hidden = self.hidden;
        let bias = (&self.b_ih + &self.b_hh)?;
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            let packed = Tensor::cat(&[&self.w_ih, &self.w_hh, &bias.unsqueeze(1)?], 1)?;
            let all = x.contiguous()?.apply_op2(&packed, Sequence { hidden })?;
            return all.narrow(2, 0, hidden);
        }
        let (time, batch, _) = x.dims3()?;
        let zeros = Tensor::zeros((batch, hidden), x.dtype(), x.device())?;
        let (mut h, mut c) = (zeros.clone(), zeros);
        let mut states = Vec::with_capacity(time);
        for t in 0..time {
            let gates = (x.get(t)?.matmul(&self.w_ih.t()?)? + h.matmul(&self.w_hh.t()?)?)?
                .broadcast_add(&bias)?;
            let chunks = gates.chunk(4, 1)?;
            let (i, f) = (
                candle_nn::ops::sigmoid(&chunks[0])?,
                candle_nn::ops::sigmoid(&chunks[1])?,
            );
            let (g, o) = (chunks[2].tanh()?, candle_nn::ops::sigmoid(&chunks[3])?);
            c = ((f * &c)? + (i * g)?)?;
            h = (o * c.tanh()?)?;
            states.push(h.clone());
        }
        Tensor::stack(&states, 0)
    }
}

/// tanh as a rational function (Eigen's `ptanh_float`: within a few ulp of
/// libm on all of f32, and it vectorises; libm's `tanhf` was a third of an
/// LSTM's training time).
#[inline(always)]
fn tanh(x: f32) -> f32 {
    const ALPHA: [f32; 7] = [
        4.893_524_6e-3,
        6.372_619_3e-4,
        1.485_722_4e-5,
        5.122_297e-8,
        -8.604_672e-11,
        2.000_188e-13,
        -2.760_768_5e-16,
    ];
    const BETA: [f32; 4] = [4.893_525e-3, 2.268_434_6e-3, 1.185_347_1e-4, 1.198_258_4e-6];
    let x = x.clamp(-7.905_311, 7.905_311);
    let x2 = x * x;
    let p = ALPHA.iter().rev().fold(0.0, |acc, a| acc * x2 + a) * x;
    let q = BETA.iter().rev().fold(0.0, |acc, b| acc * x2 + b);
    p / q
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    0.5 + 0.5 * tanh(0.5 * x)
}

/// Turns one example's pre-activations (i, f, g, o blocks of `hidden`)
/// into activations in place; plain loops, so they vectorise.
#[inline(always)]
fn activate_gates(row: &mut [f32], hidden: usize) {
    for (block, a) in row.chunks_exact_mut(hidden).enumerate() {
        if block == 2 {
            a.iter_mut().for_each(|a| *a = tanh(*a));
        } else {
            a.iter_mut().for_each(|a| *a = sigmoid(*a));
        }
    }
}

/// A matrix inside a slice: element (r, c) is `data[r * row + c * col]`.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row: usize,
    col: usize,
}

impl<'a> View<'a> {
    /// A row-major `rows × cols` matrix.
    fn dense(data: &'a [f32], rows: usize, cols: usize) -> Self {
        View {
            data,
            rows,
            cols,
            row: cols,
            col: 1,
        }
    }

    /// This matrix transposed (no copy).
    fn t(self) -> Self {
        View {
            rows: self.cols,
            cols: self.rows,
            row: self.col,
            col: self.row,
            ..self
        }
    }

    /// Whether every element lies inside `data`.
    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row + (self.cols - 1) * self.col < self.data.len()
    }
}

/// `dst (m × n, row-major) (+)= a (m × k) · b (k × n)` on this thread.
///
/// The per-step products of a recurrence are small ([batch, hidden] by
/// [hidden, 4·hidden]); candle's matmul spreads each over the thread pool and
/// the hand-offs cost more than the arithmetic, so they call gemm directly.
fn product(dst: &mut [f32], a: View<'_>, b: View<'_>, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(
        b.rows == k && dst.len() == m * n && a.fits() && b.fits(),
        "product shapes"
    );
    // SAFETY: the assertion above keeps every element gemm reads inside `a`
    // and `b` and every element it writes inside `dst`; the slices cannot
    // overlap (one is borrowed mutably).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col as isize,
            a.row as isize,
            b.data.as_ptr(),
            b.col as isize,
            b.row as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Slots per example and step in [`Sequence`]'s output: h, c, then the
/// four gate activations (kept for the backward pass).
const SLOTS: usize = 6;

/// (x `[t, b, f]`, packed weights `[4h, f + h + 1]` = W_ih | W_hh | bias)
/// → `[t, b, 6h]`: per step and example h, c, i, f, g, o. Only the h slots
/// are read outside this module, so only they carry gradients back.
struct Sequence {
    hidden: usize,
}

/// The packed weights' parts: W_ih `[4h, f]`, W_hh `[4h, h]`, bias `[4h]`.
fn unpack(w: &[f32], features: usize, hidden: usize) -> (View<'_>, View<'_>, View<'_>) {
    let ld = features + hidden + 1;
    let part = |start: usize, cols: usize| View {
        data: &w[start..],
        rows: 4 * hidden,
        cols,
        row: ld,
        col: 1,
    };
    (
        part(0, features),
        part(features, hidden),
        part(features + hidden, 1),
    )
}

impl CustomOp2 for Sequence {
    fn name(&self) -> &'static str {
        "kiln-lstm-sequence"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let hidden = self.hidden;
        let (time, batch, features) = l1.shape().dims3()?;
        let (w_ih, w_hh, bias) = unpack(super::cpu_f32(s2, l2, "kiln-lstm")?, features, hidden);
        let x = View::dense(super::cpu_f32(s1, l1, "kiln-lstm")?, time * batch, features);
        // Every step's input projection at once, on top of the bias.
        let bias: Vec<f32> = (0..4 * hidden).map(|n| bias.data[n * bias.row]).collect();
        let mut pre: Vec<f32> = bias
            .iter()
            .copied()
            .cycle()
            .take(time * batch * 4 * hidden)
            .collect();
        product(&mut pre, x, w_ih.t(), true);
        let mut out = vec![0f32; time * batch * SLOTS * hidden];
        let mut h = vec![0f32; batch * hidden];
        let zeros = vec![0f32; batch * hidden];
        for t in 0..time {
            let gates = &mut pre[t * batch * 4 * hidden..][..batch * 4 * hidden];
            if t > 0 {
                product(gates, View::dense(&h, batch, hidden), w_hh.t(), true);
            }
            let (done, rest) = out.split_at_mut(t * batch * SLOTS * hidden);
            let now = &mut rest[..batch * SLOTS * hidden];
            for b in 0..batch {
                let row = &mut gates[b * 4 * hidden..][..4 * hidden];
                activate_gates(row, hidden);
                let c_prev = if t == 0 {
                    &zeros[b * hidden..][..hidden]
                } else {
                    &done[((t - 1) * batch + b) * SLOTS * hidden + hidden..][..hidden]
                };
                let slot = &mut now[b * SLOTS * hidden..][..SLOTS * hidden];
                let (hc, acts) = slot.split_at_mut(2 * hidden);
                acts.copy_from_slice(row);
                let (h_out, c_out) = hc.split_at_mut(hidden);
                let (i, rest) = row.split_at(hidden);
                let (f, rest) = rest.split_at(hidden);
                let (g, o) = rest.split_at(hidden);
                for j in 0..hidden {
                    let c = f[j] * c_prev[j] + i[j] * g[j];
                    c_out[j] = c;
                    h_out[j] = o[j] * tanh(c);
                }
                h[b * hidden..][..hidden].copy_from_slice(h_out);
            }
        }
        Ok((CpuStorage::F32(out), (time, batch, SLOTS * hidden).into()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let hidden = self.hidden;
        let (time, batch, features) = x.dims3()?;
        let d_pre = w.apply_op3_no_bwd(res, &grad.contiguous()?, &SequenceGrad { hidden })?;
        let d_pre = d_pre.reshape((time * batch, 4 * hidden))?;
        let w_ih = w.narrow(1, 0, features)?;
        let d_x = d_pre.matmul(&w_ih)?.reshape((time, batch, features))?;
        let d_w_ih = d_pre.t()?.matmul(&x.reshape((time * batch, features))?)?;
        // Step t's recurrent product read h from step t − 1.
        let d_w_hh = if time > 1 {
            let h_before = res
                .narrow(0, 0, time - 1)?
                .narrow(2, 0, hidden)?
                .contiguous()?
                .reshape(((time - 1) * batch, hidden))?;
            d_pre
                .narrow(0, batch, (time - 1) * batch)?
                .t()?
                .matmul(&h_before)?
        } else {
            Tensor::zeros((4 * hidden, hidden), DType::F32, w.device())?
        };
        // Σ over steps and examples, as a product (candle's sum over a
        // leading axis is a slow strided loop).
        let ones = Tensor::ones((1, time * batch), DType::F32, w.device())?;
        let d_bias = ones.matmul(&d_pre)?.t()?;
        let d_w = Tensor::cat(&[d_w_ih, d_w_hh, d_bias], 1)?;
        Ok((Some(d_x), Some(d_w)))
    }
}

/// (packed weights, [`Sequence`]'s output, its gradient) → the gradient of
/// every step's gate pre-activations, `[t, b, 4h]`: the recurrence run
/// backwards through time.
struct SequenceGrad {
    hidden: usize,
}

impl CustomOp3 for SequenceGrad {
    fn name(&self) -> &'static str {
        "kiln-lstm-sequence-grad"
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
        let hidden = self.hidden;
        let (time, batch, _) = l2.shape().dims3()?;
        let features = l1.shape().dims2()?.1 - hidden - 1;
        let (_, w_hh, _) = unpack(super::cpu_f32(s1, l1, "kiln-lstm")?, features, hidden);
        let (res, grad) = (
            super::cpu_f32(s2, l2, "kiln-lstm")?,
            super::cpu_f32(s3, l3, "kiln-lstm")?,
        );
        let step = batch * SLOTS * hidden;
        let mut d_pre = vec![0f32; time * batch * 4 * hidden];
        let mut d_h_next = vec![0f32; batch * hidden];
        let mut d_c_next = vec![0f32; batch * hidden];
        let zeros = vec![0f32; hidden];
        for t in (0..time).rev() {
            // d h flowing in from step t + 1, through W_hh.
            let d_h_rec = if t + 1 < time {
                let d = &d_pre[(t + 1) * batch * 4 * hidden..][..batch * 4 * hidden];
                product(
                    &mut d_h_next,
                    View::dense(d, batch, 4 * hidden),
                    w_hh,
                    false,
                );
                Some(&d_h_next)
            } else {
                None
            };
            let d_now = &mut d_pre[t * batch * 4 * hidden..][..batch * 4 * hidden];
            for b in 0..batch {
                let slot = &res[t * step + b * SLOTS * hidden..][..SLOTS * hidden];
                let (c, acts) = (&slot[hidden..2 * hidden], &slot[2 * hidden..]);
                let c_prev = if t == 0 {
                    &zeros[..]
                } else {
                    &res[(t - 1) * step + b * SLOTS * hidden + hidden..][..hidden]
                };
                let d_h_out = &grad[t * step + b * SLOTS * hidden..][..hidden];
                let (i, rest) = acts.split_at(hidden);
                let (f, rest) = rest.split_at(hidden);
                let (g, o) = rest.split_at(hidden);
                let d_row = &mut d_now[b * 4 * hidden..][..4 * hidden];
                let (d_i, rest) = d_row.split_at_mut(hidden);
                let (d_f, rest) = rest.split_at_mut(hidden);
                let (d_g, d_o) = rest.split_at_mut(hidden);
                let d_c_next = &mut d_c_next[b * hidden..][..hidden];
                let d_h_rec = d_h_rec.map(|d| &d[b * hidden..][..hidden]);
                for j in 0..hidden {
                    let d_h = d_h_out[j] + d_h_rec.map_or(0.0, |d| d[j]);
                    let tanh_c = tanh(c[j]);
                    let d_c = d_c_next[j] + d_h * o[j] * (1.0 - tanh_c * tanh_c);
                    d_i[j] = d_c * g[j] * i[j] * (1.0 - i[j]);
                    d_f[j] = d_c * c_prev[j] * f[j] * (1.0 - f[j]);
                    d_g[j] = d_c * i[j] * (1.0 - g[j] * g[j]);
                    d_o[j] = d_h * tanh_c * o[j] * (1.0 - o[j]);
                    d_c_next[j] = d_c * f[j];
                }
            }
        }
        Ok((CpuStorage::F32(d_pre), (time, batch, 4 * hidden).into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_tanh_is_within_a_few_ulp_of_libm() {
        let mut worst = 0f32;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4;
            worst = worst.max((tanh(x) - x.tanh()).abs());
        }
        assert!(worst < 5e-7, "worst error {worst}");
        assert_eq!(tanh(100.0), 1.0);
        assert_eq!(tanh(-100.0), -1.0);
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
    }
    use candle_core::{Device, Var};
    use candle_nn::rnn::{LSTMConfig, RNN};
    use candle_nn::{VarBuilder, VarMap};

    /// Same weights, same sequence: outputs and every gradient agree with
    /// candle-nn's LSTM.
    #[test]
    fn matches_candle_nn_lstm_forward_and_backward() {
        let dev = Device::Cpu;
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &dev);
        let ours = Lstm::new(5, 7, 0, false, &vb).unwrap();
        let theirs = candle_nn::rnn::lstm(5, 7, LSTMConfig::default(), vb).unwrap();
        // Biases start at zero; make them matter.
        for (name, var) in vars.data().lock().unwrap().iter() {
            if name.starts_with("bias") {
                var.set(&Tensor::randn(0f32, 0.5, 28, &dev).unwrap())
                    .unwrap();
            }
        }
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 6, 5), &dev).unwrap()).unwrap();
        let up = Tensor::randn(0f32, 1.0, (3, 6, 7), &dev).unwrap();

        let h_ours = ours
            .run(&x.transpose(0, 1).unwrap())
            .unwrap()
            .transpose(0, 1)
            .unwrap();
        let h_theirs = theirs
            .states_to_tensor(&theirs.seq(x.as_tensor()).unwrap())
            .unwrap();
        assert!(crate::nn::max_diff(&h_ours, &h_theirs) < 1e-5);

        let g_ours = (h_ours * &up)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g_theirs = (h_theirs * &up)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let mut checked = 0;
        for var in vars.all_vars().iter().chain([&x]) {
            let (a, b) = (g_ours.get(var).unwrap(), g_theirs.get(var).unwrap());
            assert!(crate::nn::max_diff(a, b) < 1e-4, "{:?}", var.dims());
            checked += 1;
        }
        assert_eq!(checked, 5);
    }
}
