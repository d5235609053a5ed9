//! An LSTM layer that runs a whole sequence as one op on the CPU.
//!
//! candle-nn's LSTM runs every gate of every time step as its own strided
//! element-wise op (about twenty per step, each allocating and each a node of
//! the backward graph); on the CPU that bookkeeping, not the arithmetic, was
//! most of an LSTM's training time. Here a layer is one custom op
//! ([`Sequence`]): parts of the batch run side by side through every step,
//! two small products per step and the gates computed in place
//! ([`recurrence`]). Its backward pass ([`SequenceGrad`]) runs the recurrence
//! back through time the same way, and the weight gradients are three
//! products over the whole batch.
//! Weights are created exactly as candle-nn creates them (PyTorch's names and
//! initialisation); other devices run the same formula with tensor ops.

mod recurrence;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use candle_nn::rnn::LSTMConfig;
use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::nn::matrix::View;
use recurrence::{backward_part, forward_part, parts, steps_by_part, Weights, SLOTS};

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
        if crate::nn::cpu::own_kernel_takes(x) {
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
        let x = super::cpu_f32(s1, l1, "kiln-lstm")?;
        let bias: Vec<f32> = (0..4 * hidden).map(|n| bias.data[n * bias.row]).collect();
        let weights = Weights {
            w_ih,
            w_hh,
            bias: &bias,
            hidden,
        };
        let mut out = vec![0f32; time * batch * SLOTS * hidden];
        if out.is_empty() {
            return Ok((CpuStorage::F32(out), (time, batch, SLOTS * hidden).into()));
        }
        let parts = parts(batch);
        let outs = steps_by_part(&mut out, SLOTS * hidden, batch, &parts);
        parts.par_iter().zip(outs).for_each(|(part, out)| {
            let x: Vec<&[f32]> = (0..time)
                .map(|t| &x[(t * batch + part.start) * features..][..part.len() * features])
                .collect();
            forward_part(&weights, &x, out);
        });
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
        let mut d_pre = vec![0f32; time * batch * 4 * hidden];
        if d_pre.is_empty() {
            return Ok((CpuStorage::F32(d_pre), (time, batch, 4 * hidden).into()));
        }
        let parts = parts(batch);
        let d_pres = steps_by_part(&mut d_pre, 4 * hidden, batch, &parts);
        parts
            .par_iter()
            .zip(d_pres)
            .for_each(|(part, d_pre)| backward_part(w_hh, res, grad, part.clone(), d_pre));
        Ok((CpuStorage::F32(d_pre), (time, batch, 4 * hidden).into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use candle_core::{Device, Var};
    use candle_nn::rnn::{LSTMConfig, RNN};
    use candle_nn::{VarBuilder, VarMap};

    /// Same weights, same sequence: outputs and every gradient agree with
    /// candle-nn's LSTM, with the batch in one part and in three.
    #[test]
    fn matches_candle_nn_lstm_forward_and_backward() {
        for batch in [6, 70] {
            matches_candle_nn_lstm_at(batch);
        }
    }

    /// An empty batch runs (and trains) to empty results.
    #[test]
    fn an_empty_batch_gives_empty_states() {
        let dev = Device::Cpu;
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &dev);
        let lstm = Lstm::new(5, 7, 0, false, &vb).unwrap();
        let x = Var::from_tensor(&Tensor::zeros((4, 0, 5), DType::F32, &dev).unwrap()).unwrap();
        let h = lstm.run(x.as_tensor()).unwrap();
        assert_eq!(h.dims(), [4, 0, 7]);
        h.sum_all().unwrap().backward().unwrap();
    }

    fn matches_candle_nn_lstm_at(batch: usize) {
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
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, batch, 5), &dev).unwrap()).unwrap();
        let up = Tensor::randn(0f32, 1.0, (3, batch, 7), &dev).unwrap();

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
