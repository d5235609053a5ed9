//! The update rules for f32 weights in host memory, each one pass over the
//! weights, their gradient and the optimizer's moments.
//!
//! Written as candle's tensor ops would compute them (a tensor times an f64
//! is `x · f32(a) + 0`, one rounding per op, no fused multiply-adds), so a
//! step here gives the bits that the same step in tensor ops gives. The loop
//! is compiled once per vector extension and chosen at run time; every path
//! rounds alike (square root and division are exact in each).

use crate::quant::Isa;

/// One rule's constants for one step, as f32 the way candle converts them.
#[derive(Clone, Copy, Debug)]
pub(super) enum Step {
    /// SGD: `w -= lr · (g + wd·w + momentum · previous update)`.
    Sgd {
        lr: f32,
        weight_decay: Option<f32>,
        momentum: Option<f32>,
    },
    /// Adam (weight decay in the gradient) or AdamW (decoupled).
    Adam {
        lr: f32,
        beta1: f32,
        one_minus_beta1: f32,
        beta2: f32,
        one_minus_beta2: f32,
        /// `1 / (1 − β₁ᵗ)` and `1 / (1 − β₂ᵗ)`.
        unbias1: f32,
        unbias2: f32,
        eps: f32,
        /// Adam's L2 term, added to the gradient.
        l2: Option<f32>,
        /// AdamW's `lr · wd`, taken off the weights.
        decoupled: Option<f32>,
    },
}

/// `x · a + b`, candle's affine op.
#[inline(always)]
fn affine(x: f32, a: f32, b: f32) -> f32 {
    x * a + b
}

/// Updates `w` in place from its gradient `g` (scaled by `scale` first when
/// it is not 1) and the moments `m` (momentum or first moment) and `v`
/// (second moment; unused by SGD).
pub(super) fn update(
    step: &Step,
    scale: Option<f32>,
    w: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    match Isa::detected() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX-512 (checked by `Isa::detected`).
        Isa::Avx512Vnni => unsafe { update_avx512(step, scale, w, g, m, v) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX2 (checked by `Isa::detected`).
        Isa::Avx2 => unsafe { update_avx2(step, scale, w, g, m, v) },
        _ => portable(step, scale, w, g, m, v),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn update_avx512(
    step: &Step,
    scale: Option<f32>,
    w: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    portable(step, scale, w, g, m, v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn update_avx2(
    step: &Step,
    scale: Option<f32>,
    w: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    portable(step, scale, w, g, m, v)
}

#[inline(always)]
fn portable(
    step: &Step,
    scale: Option<f32>,
    w: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    let n = w.len();
    let (g, m) = (&g[..n], &mut m[..n]);
    let grad = |g: f32| scale.map_or(g, |s| affine(g, s, 0.0));
    match *step {
        Step::Sgd {
            lr,
            weight_decay,
            momentum,
        } => {
            for ((w, g), m) in w.iter_mut().zip(g).zip(m.iter_mut()) {
                let mut g = grad(*g);
                if let Some(wd) = weight_decay {
                    g += affine(*w, wd, 0.0);
                }
                let update = match momentum {
                    Some(mu) => {
                        let u = affine(*m, mu, 0.0) + g;
                        *m = u;
                        u
                    }
                    None => g,
                };
                *w -= affine(update, lr, 0.0);
            }
        }
        Step::Adam {
            lr,
            beta1,
            one_minus_beta1,
            beta2,
            one_minus_beta2,
            unbias1,
            unbias2,
            eps,
            l2,
            decoupled,
        } => {
            let v = &mut v[..n];
            for (((w, g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                let mut g = grad(*g);
                if let Some(wd) = l2 {
                    g += affine(*w, wd, 0.0);
                }
                *m = affine(*m, beta1, 0.0) + affine(g, one_minus_beta1, 0.0);
                *v = affine(*v, beta2, 0.0) + affine(g * g, one_minus_beta2, 0.0);
                let m_hat = affine(*m, unbias1, 0.0);
                let v_hat = affine(*v, unbias2, 0.0);
                let step = affine(m_hat / affine(v_hat.sqrt(), 1.0, eps), lr, 0.0);
                let next = *w - step;
                *w = match decoupled {
                    Some(d) => next - affine(*w, d, 0.0),
                    None => next,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every vector path gives the portable path's bits.
    #[test]
    fn every_vector_path_gives_the_portable_numbers() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut random =
            |n: usize, lo: f32| -> Vec<f32> { (0..n).map(|_| rng.random_range(lo..1.0)).collect() };
        let n = 1037;
        let (w, g, m, v) = (
            random(n, -1.0),
            random(n, -1.0),
            random(n, -1.0),
            random(n, 0.0),
        );
        let steps = [
            Step::Sgd {
                lr: 0.1,
                weight_decay: Some(0.01),
                momentum: Some(0.9),
            },
            Step::Adam {
                lr: 1e-3,
                beta1: 0.9,
                one_minus_beta1: 0.1,
                beta2: 0.999,
                one_minus_beta2: 1e-3,
                unbias1: 10.0,
                unbias2: 1000.0,
                eps: 1e-8,
                l2: None,
                decoupled: Some(1e-5),
            },
        ];
        for step in steps {
            let run = |isa: Isa| {
                let (mut w, mut m, mut v) = (w.clone(), m.clone(), v.clone());
                let (w_, m_, v_) = (&mut w[..], &mut m[..], &mut v[..]);
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512Vnni => unsafe { update_avx512(&step, Some(0.5), w_, &g, m_, v_) },
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => unsafe { update_avx2(&step, Some(0.5), w_, &g, m_, v_) },
                    _ => portable(&step, Some(0.5), w_, &g, m_, v_),
                }
                (w, m, v)
            };
            let reference = run(Isa::Generic);
            assert!(reference.0 != w);
            for isa in Isa::available() {
                assert!(run(isa) == reference, "{isa:?} {step:?}");
            }
        }
    }
}
