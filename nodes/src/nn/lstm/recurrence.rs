//! The recurrence of an LSTM layer on the CPU, forward and backward through
//! time, for one part of the batch at a time.
//!
//! Examples of a batch never meet inside the recurrence, so the batch is cut
//! into parts of at most [`PART`] examples that run through all their steps
//! side by side on the thread pool, each step one small product on its own
//! thread (candle's matmul would spread every such product over the pool,
//! and those hand-offs cost more than the arithmetic). The cut depends on the
//! batch size only, never on the thread count, so the numbers do not depend
//! on `--jobs`. The gate arithmetic is compiled once per vector extension
//! and chosen at run time; every path rounds the same way (no fused
//! multiply-adds), so they agree to the bit.

use std::ops::Range;

use crate::nn::matrix::{product, View};
use crate::quant::Isa;

/// The most examples one part of the batch holds.
pub(super) const PART: usize = 32;

/// Slots per example and step in the forward pass's output: h, c, then the
/// four gate activations (kept for the backward pass).
pub(super) const SLOTS: usize = 6;

/// The batch `0..batch` cut into parts of at most [`PART`] examples, as even
/// as they can be.
pub(super) fn parts(batch: usize) -> Vec<Range<usize>> {
    let count = batch.div_ceil(PART).max(1);
    (0..count)
        .map(|p| p * batch / count..(p + 1) * batch / count)
        .collect()
}

/// Cuts a time-major buffer (`width` values per example, `batch` examples
/// per step) into each part's slice of every step.
pub(super) fn steps_by_part<'a>(
    buf: &'a mut [f32],
    width: usize,
    batch: usize,
    parts: &[Range<usize>],
) -> Vec<Vec<&'a mut [f32]>> {
    let mut by_part: Vec<Vec<&mut [f32]>> = parts.iter().map(|_| Vec::new()).collect();
    for mut step in buf.chunks_exact_mut(batch * width) {
        for (part, steps) in parts.iter().zip(&mut by_part) {
            let (mine, rest) = std::mem::take(&mut step).split_at_mut(part.len() * width);
            steps.push(mine);
            step = rest;
        }
    }
    by_part
}

/// tanh as a rational function (Eigen's `ptanh_float`: within a few ulp of
/// libm on all of f32, and it vectorises; libm's `tanhf` was a third of an
/// LSTM's training time).
#[inline(always)]
pub(super) fn tanh(x: f32) -> f32 {
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
pub(super) fn sigmoid(x: f32) -> f32 {
    0.5 + 0.5 * tanh(0.5 * x)
}

/// A layer's weights: W_ih `[4h, f]`, W_hh `[4h, h]`, the two biases summed.
pub(super) struct Weights<'a> {
    pub(super) w_ih: View<'a>,
    pub(super) w_hh: View<'a>,
    pub(super) bias: &'a [f32],
    pub(super) hidden: usize,
}

/// Runs one part of the batch forward through every step: `x[t]` is the
/// part's input at step t (`[n, f]`), `out[t]` receives its h, c and gate
/// activations (`[n, 6h]`).
pub(super) fn forward_part(w: &Weights<'_>, x: &[&[f32]], out: Vec<&mut [f32]>) {
    match Isa::detected() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX-512 (checked by `Isa::detected`).
        Isa::Avx512Vnni => unsafe { forward_avx512(w, x, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX2 (checked by `Isa::detected`).
        Isa::Avx2 => unsafe { forward_avx2(w, x, out) },
        _ => forward(w, x, out),
    }
}

/// The gradient of one part's gate pre-activations at every step
/// (`d_pre[t]`, `[n, 4h]`), the recurrence run backwards through time from
/// the forward pass's output `res` and its gradient `grad` (whole batch,
/// `[t, batch, 6h]`).
pub(super) fn backward_part(
    w_hh: View<'_>,
    res: &[f32],
    grad: &[f32],
    part: Range<usize>,
    d_pre: Vec<&mut [f32]>,
) {
    match Isa::detected() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX-512 (checked by `Isa::detected`).
        Isa::Avx512Vnni => unsafe { backward_avx512(w_hh, res, grad, part, d_pre) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX2 (checked by `Isa::detected`).
        Isa::Avx2 => unsafe { backward_avx2(w_hh, res, grad, part, d_pre) },
        _ => backward(w_hh, res, grad, part, d_pre),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn forward_avx512(w: &Weights<'_>, x: &[&[f32]], out: Vec<&mut [f32]>) {
    forward(w, x, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn forward_avx2(w: &Weights<'_>, x: &[&[f32]], out: Vec<&mut [f32]>) {
    forward(w, x, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn backward_avx512(
    w_hh: View<'_>,
    res: &[f32],
    grad: &[f32],
    part: Range<usize>,
    d_pre: Vec<&mut [f32]>,
) {
    backward(w_hh, res, grad, part, d_pre)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn backward_avx2(
    w_hh: View<'_>,
    res: &[f32],
    grad: &[f32],
    part: Range<usize>,
    d_pre: Vec<&mut [f32]>,
) {
    backward(w_hh, res, grad, part, d_pre)
}

/// [`forward_part`] in portable code (inlined into each vector path).
#[inline(always)]
fn forward(w: &Weights<'_>, x: &[&[f32]], mut out: Vec<&mut [f32]>) {
    let hidden = w.hidden;
    let Some(n) = out.first().map(|o| o.len() / (SLOTS * hidden)) else {
        return;
    };
    let features = w.w_ih.cols;
    let mut gates = vec![0f32; n * 4 * hidden];
    let mut h = vec![0f32; n * hidden];
    let zeros = vec![0f32; hidden];
    assert_eq!(x.len(), out.len(), "one input per step");
    for (t, x) in x.iter().enumerate() {
        for row in gates.chunks_exact_mut(4 * hidden) {
            row.copy_from_slice(w.bias);
        }
        product(&mut gates, View::dense(x, n, features), w.w_ih.t(), true);
        if t > 0 {
            product(&mut gates, View::dense(&h, n, hidden), w.w_hh.t(), true);
        }
        let (done, rest) = out.split_at_mut(t);
        let now = &mut *rest[0];
        for b in 0..n {
            let row = &mut gates[b * 4 * hidden..][..4 * hidden];
            for (block, a) in row.chunks_exact_mut(hidden).enumerate() {
                if block == 2 {
                    a.iter_mut().for_each(|a| *a = tanh(*a));
                } else {
                    a.iter_mut().for_each(|a| *a = sigmoid(*a));
                }
            }
            let c_prev = match done.last() {
                Some(before) => &before[b * SLOTS * hidden + hidden..][..hidden],
                None => &zeros[..],
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
}

/// [`backward_part`] in portable code (inlined into each vector path).
#[inline(always)]
fn backward(
    w_hh: View<'_>,
    res: &[f32],
    grad: &[f32],
    part: Range<usize>,
    mut d_pre: Vec<&mut [f32]>,
) {
    let hidden = w_hh.cols;
    let (time, n) = (d_pre.len(), part.len());
    if time == 0 {
        return;
    }
    let step = res.len() / time;
    let mut d_h_next = vec![0f32; n * hidden];
    let mut d_c_next = vec![0f32; n * hidden];
    let mut d_h = vec![0f32; hidden];
    let mut tanh_c = vec![0f32; hidden];
    let zeros = vec![0f32; hidden];
    for t in (0..time).rev() {
        let (until_now, after) = d_pre.split_at_mut(t + 1);
        // d h flowing in from step t + 1, through W_hh.
        let d_h_rec = match after.first() {
            Some(d) => {
                product(&mut d_h_next, View::dense(d, n, 4 * hidden), w_hh, false);
                Some(&d_h_next[..])
            }
            None => None,
        };
        let d_now = &mut *until_now[t];
        for b in 0..n {
            let at = (part.start + b) * SLOTS * hidden;
            let slot = &res[t * step + at..][..SLOTS * hidden];
            let (c, acts) = (&slot[hidden..2 * hidden], &slot[2 * hidden..]);
            let c_prev = if t == 0 {
                &zeros[..]
            } else {
                &res[(t - 1) * step + at + hidden..][..hidden]
            };
            let d_h_out = &grad[t * step + at..][..hidden];
            let (i, rest) = acts.split_at(hidden);
            let (f, rest) = rest.split_at(hidden);
            let (g, o) = rest.split_at(hidden);
            let d_row = &mut d_now[b * 4 * hidden..][..4 * hidden];
            let (d_i, rest) = d_row.split_at_mut(hidden);
            let (d_f, rest) = rest.split_at_mut(hidden);
            let (d_g, d_o) = rest.split_at_mut(hidden);
            let d_c_next = &mut d_c_next[b * hidden..][..hidden];
            d_h.copy_from_slice(d_h_out);
            if let Some(d) = d_h_rec {
                let d = &d[b * hidden..][..hidden];
                d_h.iter_mut().zip(d).for_each(|(a, b)| *a += b);
            }
            cell_backward(
                CellState {
                    c,
                    c_prev,
                    i,
                    f,
                    g,
                    o,
                },
                &d_h,
                d_c_next,
                &mut tanh_c,
                [d_i, d_f, d_g, d_o],
            );
        }
    }
}

/// One example's cell at one step, as the forward pass left it.
struct CellState<'a> {
    c: &'a [f32],
    c_prev: &'a [f32],
    i: &'a [f32],
    f: &'a [f32],
    g: &'a [f32],
    o: &'a [f32],
}

/// One cell's gate gradients from the gradient of its h (`d_h`) and of its c
/// from the step after (`d_c`, replaced by the gradient of the c before);
/// `tanh_c` is scratch. Each loop writes one slice, so each vectorises.
#[inline(always)]
fn cell_backward(
    s: CellState<'_>,
    d_h: &[f32],
    d_c: &mut [f32],
    tanh_c: &mut [f32],
    [d_i, d_f, d_g, d_o]: [&mut [f32]; 4],
) {
    for (t, c) in tanh_c.iter_mut().zip(s.c) {
        *t = tanh(*c);
    }
    for (((d, h), o), t) in d_c.iter_mut().zip(d_h).zip(s.o).zip(&*tanh_c) {
        *d += h * o * (1.0 - t * t);
    }
    for (((d_i, d), g), i) in d_i.iter_mut().zip(&*d_c).zip(s.g).zip(s.i) {
        *d_i = d * g * i * (1.0 - i);
    }
    for (((d_f, d), c), f) in d_f.iter_mut().zip(&*d_c).zip(s.c_prev).zip(s.f) {
        *d_f = d * c * f * (1.0 - f);
    }
    for (((d_g, d), i), g) in d_g.iter_mut().zip(&*d_c).zip(s.i).zip(s.g) {
        *d_g = d * i * (1.0 - g * g);
    }
    for (((d_o, h), t), o) in d_o.iter_mut().zip(d_h).zip(&*tanh_c).zip(s.o) {
        *d_o = h * t * o * (1.0 - o);
    }
    for (d, f) in d_c.iter_mut().zip(s.f) {
        *d *= f;
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

    #[test]
    fn parts_cover_the_batch_evenly_whatever_its_size() {
        assert_eq!(parts(1), vec![0..1]);
        assert_eq!(parts(32), vec![0..32]);
        assert_eq!(parts(64), vec![0..32, 32..64]);
        assert_eq!(parts(65), vec![0..21, 21..43, 43..65]);
        for batch in 1..200 {
            let p = parts(batch);
            assert_eq!(p[0].start, 0);
            assert_eq!(p.last().unwrap().end, batch);
            assert!(p.windows(2).all(|w| w[0].end == w[1].start));
            assert!(p.iter().all(|r| !r.is_empty() && r.len() <= PART));
        }
        let mut buf: Vec<f32> = (0..3 * 5 * 2).map(|v| v as f32).collect();
        let cut = steps_by_part(&mut buf, 2, 5, &[0..2, 2..5]);
        assert_eq!(cut[0].len(), 3);
        assert_eq!(cut[0][1], &[10.0, 11.0, 12.0, 13.0][..]);
        assert_eq!(cut[1][2], &[24.0, 25.0, 26.0, 27.0, 28.0, 29.0][..]);
    }

    /// Every vector path gives the portable path's bits, forward and back.
    #[test]
    fn every_vector_path_gives_the_portable_numbers() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (time, n, features, hidden) = (5, 7, 3, 19);
        let mut random =
            |len: usize| -> Vec<f32> { (0..len).map(|_| rng.random_range(-2.0..2.0)).collect() };
        let (w_ih, w_hh, bias) = (
            random(4 * hidden * features),
            random(4 * hidden * hidden),
            random(4 * hidden),
        );
        let x = random(time * n * features);
        let grad = random(time * n * SLOTS * hidden);
        let weights = Weights {
            w_ih: View::dense(&w_ih, 4 * hidden, features),
            w_hh: View::dense(&w_hh, 4 * hidden, hidden),
            bias: &bias,
            hidden,
        };
        let steps: Vec<&[f32]> = x.chunks_exact(n * features).collect();
        let run = |isa: Isa| {
            let mut out = vec![0f32; time * n * SLOTS * hidden];
            let outs: Vec<&mut [f32]> = out.chunks_exact_mut(n * SLOTS * hidden).collect();
            let mut d_pre = vec![0f32; time * n * 4 * hidden];
            let d_pres: Vec<&mut [f32]> = d_pre.chunks_exact_mut(n * 4 * hidden).collect();
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512Vnni => unsafe {
                    forward_avx512(&weights, &steps, outs);
                    backward_avx512(weights.w_hh, &out, &grad, 0..n, d_pres);
                },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe {
                    forward_avx2(&weights, &steps, outs);
                    backward_avx2(weights.w_hh, &out, &grad, 0..n, d_pres);
                },
                _ => {
                    forward(&weights, &steps, outs);
                    backward(weights.w_hh, &out, &grad, 0..n, d_pres);
                }
            }
            (out, d_pre)
        };
        let portable = run(Isa::Generic);
        assert!(portable.1.iter().any(|v| v.abs() > 1e-3));
        for isa in Isa::available() {
            assert!(run(isa) == portable, "{isa:?}");
        }
    }
}
