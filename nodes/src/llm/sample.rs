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

/// A kept candidate; the greatest is the one to drop first.
struct Kept((u32, f32));

impl Ord for Kept {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        by_logit(&self.0, &other.0)
    }
}

impl PartialOrd for Kept {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Kept {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Kept {}

/// The `k` most likely tokens (all when `k` is 0 or not below the
/// vocabulary), most likely first. One pass against the worst kept so far:
/// a decoding step samples every sequence's 49 152 logits, and sorting a
/// copy of them all cost each sequence a 400 kB buffer and a partition.
fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let all = logits.iter().enumerate().map(|(i, &l)| (i as u32, l));
    let mut candidates: Vec<(u32, f32)> = if k > 0 && k < logits.len() {
        let mut kept = std::collections::BinaryHeap::with_capacity(k + 1);
        for c in all {
            if kept.len() < k {
                kept.push(Kept(c));
            } else if kept
                .peek()
                .is_some_and(|worst: &Kept| by_logit(&c, &worst.0).is_lt())
            {
                kept.pop();
                kept.push(Kept(c));
            }
        }
        kept.into_iter().map(|c| c.0).collect()
    } else {
        all.collect()
    };
    candidates.sort_unstable_by(by_logit);
    candidates
}

/// The most likely token (the first of equals).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
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
