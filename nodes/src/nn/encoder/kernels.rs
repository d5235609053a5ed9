//! The element-wise and row kernels of kiln's BERT forward pass: GELU (the
//! erf form BERT uses) and layer normalisation.
//! Each is portable code compiled once per vector extension and chosen at
//! run time; no sum is reordered between paths (lanes are explicit), so
//! every path gives the same bits (tested).

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

/// GELU in place: ½·x·(1 + erf(x/√2)), as candle's `gelu_erf`.
pub(super) fn gelu(x: &mut [f32]) {
    gelu_on(Isa::detected(), x)
}

/// [`gelu`] on the given path (one of [`Isa::available`]).
fn gelu_on(isa: Isa, x: &mut [f32]) {
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

/// Layer normalisation of each `weight.len()`-wide row of `x` in place:
/// (x − mean) / √(var + eps) · weight + bias, the variance about the mean.
pub(super) fn layer_norm(x: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    layer_norm_on(Isa::detected(), x, weight, bias, eps)
}

/// [`layer_norm`] on the given path (one of [`Isa::available`]).
fn layer_norm_on(isa: Isa, x: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
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
}
