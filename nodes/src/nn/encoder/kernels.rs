//! The element-wise, row and attention kernels of kiln's BERT forward pass:
//! GELU (the erf form BERT uses), layer normalisation, and one head's
//! attention inside one sentence.
//! Each is portable code compiled once per vector extension and chosen at
//! run time; no sum is reordered between paths (lanes are explicit), so
//! every path gives the same bits (tested).

use crate::nn::softmax_rows;
use crate::quant::Isa;

/// Lanes of the explicit sums: one AVX2 register of f32.
const LANES: usize = 8;

/// erf(x) as Eigen and XLA compute it in f32: x·P(x²)/Q(x²) on x clamped to
/// [−4, 4], where erf is ±1 to f32 precision (within 5e-7 of candle's
/// `erf`, tested). Branch-free, so loops of it vectorise.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    for c in [
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906e-4,
        -2.954_600_1e-3,
        -1.609_603_3e-2,
    ] {
        p = p * x2 + c;
    }
    let mut q = -1.456_607_2e-5_f32;
    for c in [-2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2] {
        q = q * x2 + c;
    }
    x * p / q
}

/// GELU in place, ½·x·(1 + erf(x/√2)) as candle's `gelu_erf`, on the
/// given path (one of [`Isa::available`]).
pub(super) fn gelu_on(isa: Isa, x: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX-512 (`isa` is one it has).
        Isa::Avx512Vnni => unsafe { gelu_avx512(x) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX2 and FMA (`isa` is one it has).
        Isa::Avx2 => unsafe { gelu_avx2(x) },
        _ => gelu_portable(x),
    }
}

#[inline(always)]
fn gelu_portable(x: &mut [f32]) {
    for v in x {
        *v = (erf(*v * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * *v;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gelu_avx512(x: &mut [f32]) {
    gelu_portable(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gelu_avx2(x: &mut [f32]) {
    gelu_portable(x)
}

/// Layer normalisation of each `weight.len()`-wide row of `x` in place,
/// (x − mean) / √(var + eps) · weight + bias with the variance about the
/// mean, on the given path (one of [`Isa::available`]).
pub(super) fn layer_norm_on(isa: Isa, x: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `gelu`.
        Isa::Avx512Vnni => unsafe { layer_norm_avx512(x, weight, bias, eps) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `gelu`.
        Isa::Avx2 => unsafe { layer_norm_avx2(x, weight, bias, eps) },
        _ => layer_norm_portable(x, weight, bias, eps),
    }
}

/// Σ f(v) over `row`, in [`LANES`] explicit lanes (the same order on every path).
#[inline(always)]
fn lane_sum(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += f(c[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn layer_norm_portable(x: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    let width = weight.len();
    for row in x.chunks_exact_mut(width) {
        let mean = lane_sum(row, |v| v) / width as f32;
        let var = lane_sum(row, |v| (v - mean) * (v - mean)) / width as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, w), b) in row.iter_mut().zip(weight).zip(bias) {
            *v = (*v - mean) * inv * w + b;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn layer_norm_avx512(x: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    layer_norm_portable(x, weight, bias, eps)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn layer_norm_avx2(x: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    layer_norm_portable(x, weight, bias, eps)
}

/// One attention head over one sentence of `tokens` tokens: token `t`'s
/// query, key and value are the `width` values at `at[0]`, `at[1]` and
/// `at[2]` of `qkv[t * stride..]`.
pub(super) struct Head<'a> {
    pub qkv: &'a [f32],
    pub tokens: usize,
    pub stride: usize,
    pub width: usize,
    pub at: [usize; 3],
    /// The scores' divisor: √width.
    pub scale: f32,
}

/// softmax(q·kᵀ / scale)·v for each of a sentence's tokens, token `t`'s
/// into `out[t * out_stride..][..width]`. `scores` is room for the weights
/// (`tokens × tokens`), `keys` for the keys (`tokens × width`). Each sum runs
/// in the same order on every path: over the width for a score, over the
/// tokens for an output.
pub(super) fn attend_on(
    isa: Isa,
    head: &Head<'_>,
    scores: &mut [f32],
    keys: &mut [f32],
    out: &mut [f32],
    out_stride: usize,
) {
    let tokens = head.tokens;
    assert!(
        scores.len() >= tokens * tokens
            && head.width > 0
            && head.at.iter().all(|&a| a + head.width <= head.stride)
            && head.qkv.len() >= tokens * head.stride
            && keys.len() >= tokens * head.width
            && (tokens == 0 || out.len() >= (tokens - 1) * out_stride + head.width),
        "attention shapes"
    );
    let (scores, keys) = (
        &mut scores[..tokens * tokens],
        &mut keys[..tokens * head.width],
    );
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `gelu_on`.
        Isa::Avx512Vnni => unsafe { attend_avx512(head, scores, keys, out, out_stride) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `gelu_on`.
        Isa::Avx2 => unsafe { attend_avx2(head, scores, keys, out, out_stride) },
        _ => attend_portable(head, scores, keys, out, out_stride),
    }
}

/// Vector code runs across the keys for the scores (laid out width-major
/// first) and across the width for the outputs; the tokens' sums are
/// independent, so they interleave instead of waiting on each other.
#[inline(always)]
fn attend_portable(
    head: &Head<'_>,
    scores: &mut [f32],
    keys: &mut [f32],
    out: &mut [f32],
    out_stride: usize,
) {
    let Head {
        qkv,
        tokens,
        stride,
        width,
        at: [q, k, v],
        scale,
    } = *head;
    if tokens == 0 {
        return;
    }
    let row = |t: usize, at: usize| &qkv[t * stride + at..][..width];
    for u in 0..tokens {
        for (d, &x) in row(u, k).iter().enumerate() {
            keys[d * tokens + u] = x;
        }
    }
    scores.fill(0.0);
    for (d, keys) in keys.chunks_exact(tokens).enumerate() {
        for (t, scores) in scores.chunks_exact_mut(tokens).enumerate() {
            let x = qkv[t * stride + q + d];
            for (s, &key) in scores.iter_mut().zip(keys) {
                *s = x.mul_add(key, *s);
            }
        }
    }
    scores.iter_mut().for_each(|s| *s /= scale);
    softmax_rows(scores, tokens);
    for t in 0..tokens {
        out[t * out_stride..][..width].fill(0.0);
    }
    for u in 0..tokens {
        let value = row(u, v);
        for t in 0..tokens {
            let p = scores[t * tokens + u];
            for (o, &x) in out[t * out_stride..][..width].iter_mut().zip(value) {
                *o = p.mul_add(x, *o);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn attend_avx512(
    head: &Head<'_>,
    scores: &mut [f32],
    keys: &mut [f32],
    out: &mut [f32],
    out_stride: usize,
) {
    attend_portable(head, scores, keys, out, out_stride)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_avx2(
    head: &Head<'_>,
    scores: &mut [f32],
    keys: &mut [f32],
    out: &mut [f32],
    out_stride: usize,
) {
    attend_portable(head, scores, keys, out, out_stride)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn values(n: usize) -> Vec<f32> {
        // −6 … 6 and a few odd ones: both ends of erf's clamp.
        let mut v: Vec<f32> = (0..n).map(|i| -6.0 + 12.0 * i as f32 / n as f32).collect();
        v.extend([0.0, -0.0, 1e-8, -1e-8, 3.999, 4.001, 40.0, -40.0]);
        v
    }

    #[test]
    fn erf_is_within_5e_7_of_candles() {
        let x = values(200_001);
        let want: Vec<f32> = Tensor::new(x.as_slice(), &Device::Cpu)
            .unwrap()
            .erf()
            .unwrap()
            .to_vec1()
            .unwrap();
        let worst = x
            .iter()
            .zip(&want)
            .map(|(&x, w)| (erf(x) - w).abs())
            .fold(0f32, f32::max);
        assert!(worst < 5e-7, "{worst}");
    }

    /// Runs `kernel` on a copy of `x` on every vector path: each within
    /// 1e-5 of `want`, and all the same bits.
    fn check_every_path(x: &[f32], want: &[f32], what: &str, kernel: impl Fn(Isa, &mut [f32])) {
        let mut first: Option<Vec<f32>> = None;
        for isa in Isa::available() {
            let mut got = x.to_vec();
            kernel(isa, &mut got);
            let worst = got
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-5, "{what}, {isa:?}: {worst}");
            match &first {
                None => first = Some(got),
                Some(f) => assert!(
                    f.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{what}: {isa:?} differs from the portable path"
                ),
            }
        }
    }

    #[test]
    fn gelu_matches_candle_on_every_path() {
        let x = values(100_003);
        let want: Vec<f32> = Tensor::new(x.as_slice(), &Device::Cpu)
            .unwrap()
            .gelu_erf()
            .unwrap()
            .to_vec1()
            .unwrap();
        check_every_path(&x, &want, "gelu", gelu_on);
    }

    #[test]
    fn layer_norm_matches_candle_on_every_path_and_odd_widths() {
        for width in [1, 3, 17, 255, 257, 384] {
            let rows = 5;
            let x: Vec<f32> = (0..rows * width)
                .map(|i| ((i * 7919) % 1013) as f32 / 100.0 - 5.0)
                .collect();
            let w: Vec<f32> = (0..width).map(|i| 0.5 + (i % 7) as f32 / 7.0).collect();
            let b: Vec<f32> = (0..width).map(|i| (i % 5) as f32 / 10.0 - 0.2).collect();
            let dev = Device::Cpu;
            let want: Vec<f32> = candle_nn::ops::layer_norm(
                &Tensor::from_vec(x.clone(), (rows, width), &dev).unwrap(),
                &Tensor::new(w.as_slice(), &dev).unwrap(),
                &Tensor::new(b.as_slice(), &dev).unwrap(),
                1e-12,
            )
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
            check_every_path(&x, &want, &format!("width {width}"), |isa, x| {
                layer_norm_on(isa, x, &w, &b, 1e-12)
            });
        }
    }

    #[test]
    fn attention_matches_candles_ops_on_every_path() {
        let dev = Device::Cpu;
        for (tokens, width) in [(1, 32), (3, 17), (17, 32), (40, 8)] {
            let heads = 2;
            let stride = 3 * heads * width + 1;
            let qkv: Vec<f32> = (0..tokens * stride)
                .map(|i| ((i * 7919) % 997) as f32 / 200.0 - 2.5)
                .collect();
            let whole = Tensor::from_vec(qkv.clone(), (tokens, stride), &dev).unwrap();
            let scale = (width as f32).sqrt();
            for h in 0..heads {
                let at = [h * width, (heads + h) * width, (2 * heads + h) * width];
                let part = |a: usize| whole.narrow(1, a, width).unwrap();
                let scores = (part(at[0]).matmul(&part(at[1]).t().unwrap()).unwrap()
                    / scale as f64)
                    .unwrap();
                let want: Vec<f32> = candle_nn::ops::softmax_last_dim(&scores)
                    .unwrap()
                    .matmul(&part(at[2]).contiguous().unwrap())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let head = Head {
                    qkv: &qkv,
                    tokens,
                    stride,
                    width,
                    at,
                    scale,
                };
                let zeros = vec![0f32; tokens * width];
                check_every_path(&zeros, &want, &format!("{tokens}x{width}"), |isa, out| {
                    attend_on(
                        isa,
                        &head,
                        &mut vec![0.0; tokens * tokens],
                        &mut vec![0.0; tokens * width],
                        out,
                        width,
                    )
                });
            }
        }
    }
}
