//! Choosing the next token from logits: greedy at temperature 0, else
//! repetition penalty, top-k, top-p and temperature in llama.cpp's order,
//! drawn from a seeded generator (the same seed gives the same text).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How tokens are chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    /// 0 picks the most likely token; higher flattens the distribution.
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the most likely tokens whose probabilities add up to p.
    pub top_p: f32,
    /// Divides the logits of recently seen tokens (1: off).
    pub repetition_penalty: f32,
    /// The generator's seed.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

/// How many recent tokens the repetition penalty looks at (llama.cpp's default).
const PENALTY_WINDOW: usize = 64;

/// A sequence's sampler.
pub struct Sampler {
    sampling: Sampling,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// A sampler seeded from `sampling.seed`.
    pub fn new(sampling: Sampling) -> Sampler {
        Sampler {
            rng: ChaCha8Rng::seed_from_u64(sampling.seed),
            sampling,
        }
    }

    /// The next token after `history`, from `logits` (changed in place).
    pub fn next(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let s = &self.sampling;
        if s.repetition_penalty != 1.0 {
            let recent = &history[history.len().saturating_sub(PENALTY_WINDOW)..];
            let mut seen = std::collections::HashSet::new();
            for &t in recent {
                if let (true, Some(l)) = (seen.insert(t), logits.get_mut(t as usize)) {
                    *l = if *l > 0.0 {
                        *l / s.repetition_penalty
                    } else {
                        *l * s.repetition_penalty
                    };
                }
            }
        }
        if s.temperature <= 0.0 {
            return argmax(logits);
        }
        let mut candidates = top_k(logits, s.top_k);
        if s.top_p < 1.0 {
            let probs = softmax(candidates.iter().map(|c| c.1), 1.0);
            let mut total = 0.0;
            let keep = probs
                .iter()
                .position(|p| {
                    total += p;
                    total >= s.top_p
                })
                .map_or(candidates.len(), |i| i + 1);
            candidates.truncate(keep.max(1));
        }
        let probs = softmax(candidates.iter().map(|c| c.1), s.temperature);
        let mut u: f32 = self.rng.random_range(0.0..1.0);
        for (c, p) in candidates.iter().zip(&probs) {
            if u < *p {
                return c.0;
            }
            u -= p;
        }
        candidates.last().map_or(0, |c| c.0)
    }
}

/// Most likely first, the first of equals first.
fn by_logit(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// The `k` most likely tokens (all when `k` is 0 or not below the
/// vocabulary), most likely first. A decoding step samples every sequence's
/// 49 152 logits, so this reads them twice and sorts only a few: first each
/// block's largest (a vectorised integer maximum); k blocks reach the k-th
/// largest of those, so the k largest logits are all at least that large,
/// and only the few that are, found in the blocks that reach it, are sorted.
/// (A heap of the best so far took 67 µs on SmolLM2's 49 152 logits at
/// k = 40, mostly replacing its worst; this takes 6.5 µs, Zen 5.)
fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let all = |i: usize, l: f32| (i as u32, l);
    let mut candidates: Vec<(u32, f32)> = if k > 0 && k < logits.len() {
        let largest = block_maxima(logits);
        let bar = if largest.len() > k {
            let mut reached = largest.clone();
            *reached.select_nth_unstable_by(k - 1, |a, b| b.cmp(a)).1
        } else {
            i32::MIN
        };
        logits
            .chunks(BLOCK)
            .zip(&largest)
            .enumerate()
            .filter(|(_, (_, &most))| most >= bar)
            .flat_map(|(b, (block, _))| {
                block
                    .iter()
                    .enumerate()
                    .filter(|(_, &l)| order_key(l) >= bar)
                    .map(move |(j, &l)| all(b * BLOCK + j, l))
            })
            .collect()
    } else {
        logits.iter().enumerate().map(|(i, &l)| all(i, l)).collect()
    };
    if k > 0 && candidates.len() > k {
        candidates.select_nth_unstable_by(k - 1, by_logit);
        candidates.truncate(k);
    }
    candidates.sort_unstable_by(by_logit);
    candidates
}

/// The most likely token (the first of equals; NaN never wins over a
/// number, unless it comes first). Only a block whose largest (in
/// [`f32::total_cmp`]'s order) beats the best so far is searched, the
/// old way.
pub fn argmax(logits: &[f32]) -> u32 {
    let Some(&first) = logits.first() else {
        return 0;
    };
    let (mut best, mut best_logit) = (0, first);
    for (b, (block, &most)) in logits.chunks(BLOCK).zip(&block_maxima(logits)).enumerate() {
        if most <= order_key(best_logit) {
            continue;
        }
        for (j, &l) in block.iter().enumerate() {
            if l > best_logit {
                (best, best_logit) = (b * BLOCK + j, l);
            }
        }
    }
    best as u32
}

/// Logits looked at together by [`top_k`] and [`argmax`].
const BLOCK: usize = 64;

/// `x`'s place in [`f32::total_cmp`]'s order, as an integer (the same
/// transform: negative values' magnitude bits flipped).
fn order_key(x: f32) -> i32 {
    let bits = x.to_bits() as i32;
    bits ^ (((bits >> 31) as u32) >> 1) as i32
}

/// The largest [`order_key`] of each block of [`BLOCK`] logits.
fn block_maxima(logits: &[f32]) -> Vec<i32> {
    #[inline(always)]
    fn largest(block: &[f32]) -> i32 {
        let mut most = i32::MIN;
        for &l in block {
            most = most.max(order_key(l));
        }
        most
    }
    #[inline(always)]
    fn maxima(logits: &[f32]) -> Vec<i32> {
        let mut out = Vec::with_capacity(logits.len().div_ceil(BLOCK));
        let mut blocks = logits.chunks_exact(BLOCK);
        for block in &mut blocks {
            let block: &[f32; BLOCK] = block.try_into().expect("a whole block");
            out.push(largest(block));
        }
        if !blocks.remainder().is_empty() {
            out.push(largest(blocks.remainder()));
        }
        out
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn maxima_avx2(logits: &[f32]) -> Vec<i32> {
        maxima(logits)
    }
    #[cfg(target_arch = "x86_64")]
    if crate::quant::Isa::detected() != crate::quant::Isa::Generic {
        // SAFETY: the CPU has AVX2 (every path but the portable one does).
        return unsafe { maxima_avx2(logits) };
    }
    maxima(logits)
}

fn softmax(logits: impl Iterator<Item = f32> + Clone, temperature: f32) -> Vec<f32> {
    let max = logits.clone().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = logits.map(|l| ((l - max) / temperature).exp()).collect();
    let total: f32 = e.iter().sum();
    e.into_iter().map(|v| v / total).collect()
}

/// log-probability of `token` under `logits` (natural log).
pub fn log_prob(logits: &[f32], token: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max
        + logits
            .iter()
            .map(|&l| (l as f64 - max).exp())
            .sum::<f64>()
            .ln();
    logits
        .get(token as usize)
        .map_or(f64::NEG_INFINITY, |&l| l as f64 - lse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_largest_and_the_first_of_equals() {
        let mut s = Sampler::new(Sampling::default());
        assert_eq!(s.next(&mut [0.1, 2.0, 2.0, -1.0], &[]), 1);
    }

    #[test]
    fn the_same_seed_draws_the_same_tokens_and_top_k_bounds_them() {
        let draw = |seed| {
            let mut s = Sampler::new(Sampling {
                temperature: 1.0,
                top_k: 3,
                top_p: 1.0,
                seed,
                ..Default::default()
            });
            (0..200)
                .map(|_| {
                    s.next(
                        &mut (0..10).map(|i| i as f32 * 0.1).collect::<Vec<_>>(),
                        &[],
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        assert!(draw(7).iter().all(|&t| t >= 7), "only the top three");
        // All three appear: it samples, it does not pick the top one.
        for t in 7..10 {
            assert!(draw(7).contains(&t));
        }
    }

    #[test]
    fn top_k_keeps_the_k_largest_the_first_of_equals_first() {
        // Few distinct values: many ties.
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 13) as f32 * 0.5).collect();
        let mut sorted: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        sorted.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for k in [1, 3, 40, 999, 1000, 1005, 0] {
            let expected = &sorted[..if k == 0 { 1000 } else { k.min(1000) }];
            assert_eq!(top_k(&logits, k), expected, "k = {k}");
        }
    }

    #[test]
    fn top_k_orders_as_a_full_sort_does_on_any_values() {
        // Values in every block, ascending runs (each block beats the
        // last), and the values an ordinary comparison gets wrong.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut logits: Vec<f32> = (0..5000).map(|_| rng.random_range(-20.0..20.0)).collect();
        logits.extend((0..700).map(|i| i as f32 * 0.1));
        for (i, v) in [
            f32::NAN,
            -f32::NAN,
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ]
        .into_iter()
        .enumerate()
        {
            logits[97 * i + 5] = v;
            logits[2000 + 131 * i] = v;
        }
        let mut sorted: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        sorted.sort_by(by_logit);
        for k in [1, 2, 40, 63, 64, 65, 1000, 5699] {
            let kept = top_k(&logits, k);
            let bits =
                |v: &[(u32, f32)]| v.iter().map(|c| (c.0, c.1.to_bits())).collect::<Vec<_>>();
            assert_eq!(bits(&kept), bits(&sorted[..k]), "k = {k}");
        }
    }

    #[test]
    fn argmax_is_the_first_of_the_largest_whatever_the_values() {
        let one_by_one = |logits: &[f32]| {
            let mut best = 0;
            for (i, &l) in logits.iter().enumerate() {
                if l > logits[best] {
                    best = i;
                }
            }
            best as u32
        };
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut logits: Vec<f32> = (0..3000).map(|_| rng.random_range(-20.0..20.0)).collect();
        assert_eq!(argmax(&logits), one_by_one(&logits));
        // Equal largest values in two blocks, -0 before +0, NaN ahead of them,
        // and NaN as the very first logit (nothing beats it).
        logits[700] = 25.0;
        logits[2900] = 25.0;
        assert_eq!(argmax(&logits), 700);
        logits[100] = f32::NAN;
        logits[650] = 30.0;
        logits[651] = 30.0;
        assert_eq!(argmax(&logits), 650);
        let mut zeros = vec![-1.0f32; 200];
        zeros[70] = -0.0;
        zeros[150] = 0.0;
        assert_eq!(argmax(&zeros), one_by_one(&zeros));
        assert_eq!(argmax(&zeros), 70);
        for first in [f32::NAN, -f32::NAN] {
            logits[0] = first;
            assert_eq!(argmax(&logits), one_by_one(&logits));
            assert_eq!(argmax(&logits), 0);
        }
        assert_eq!(argmax(&[]), 0);
        assert_eq!(argmax(&[-3.0, -2.0, -2.5]), 1);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        let mut s = Sampler::new(Sampling {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.5,
            seed: 1,
            ..Default::default()
        });
        // p(0) ≈ 0.88: it alone reaches 0.5.
        for _ in 0..50 {
            assert_eq!(s.next(&mut [3.0, 1.0, 0.0], &[]), 0);
        }
    }

    #[test]
    fn the_penalty_lowers_seen_tokens() {
        let mut s = Sampler::new(Sampling {
            repetition_penalty: 2.0,
            ..Default::default()
        });
        assert_eq!(s.next(&mut [1.5, 1.0], &[0]), 1);
        let mut logits = [-1.0, -1.5];
        assert_eq!(s.next(&mut logits, &[0]), 1);
        assert_eq!(logits[0], -2.0);
    }

    #[test]
    fn log_probs_sum_to_one() {
        let logits = [0.5f32, 1.0, -2.0];
        let total: f64 = (0..3).map(|t| log_prob(&logits, t).exp()).sum();
        assert!((total - 1.0).abs() < 1e-9);
    }
}
