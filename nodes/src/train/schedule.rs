//! Learning-rate schedules by step: constant, step decay or cosine, with an
//! optional linear warmup.

use std::f64::consts::PI;

kiln_engine::choices! {
    /// How the rate changes after the warmup (the `schedule` setting).
    pub enum ScheduleKind {
        /// The peak rate throughout.
        Constant = "constant",
        /// Multiplied by `gamma` every `step_size` steps.
        Step = "step",
        /// Half a cosine from the peak down to `min_lr`.
        Cosine = "cosine",
    }
}

/// A schedule over `total` steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// The peak rate.
    pub base: f64,
    /// Its shape.
    pub kind: ScheduleKind,
    /// Steps of linear warmup from 0.
    pub warmup: usize,
    /// Steps between decays (`step`).
    pub step_size: usize,
    /// Decay factor (`step`).
    pub gamma: f64,
    /// Floor (`cosine`).
    pub min_lr: f64,
    /// All steps of the run.
    pub total: usize,
}

impl Schedule {
    /// The rate at step `t` (from 0).
    pub fn at(&self, t: usize) -> f64 {
        if t < self.warmup {
            return self.base * (t + 1) as f64 / self.warmup as f64;
        }
        let after = t - self.warmup;
        match self.kind {
            ScheduleKind::Constant => self.base,
            ScheduleKind::Step => {
                self.base * self.gamma.powi((after / self.step_size.max(1)) as i32)
            }
            ScheduleKind::Cosine => {
                let span = self.total.saturating_sub(self.warmup).max(1) as f64;
                let progress = (after as f64 / span).min(1.0);
                self.min_lr + 0.5 * (self.base - self.min_lr) * (1.0 + (PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(kind: &str, warmup: usize) -> Schedule {
        Schedule {
            base: 1.0,
            kind: serde_json::from_value(serde_json::json!(kind)).unwrap(),
            warmup,
            step_size: 10,
            gamma: 0.5,
            min_lr: 0.0,
            total: 100,
        }
    }

    #[test]
    fn schedules_have_their_shapes() {
        assert_eq!(schedule("constant", 0).at(50), 1.0);
        assert_eq!(schedule("step", 0).at(25), 0.25);
        let cos = schedule("cosine", 0);
        assert_eq!(cos.at(0), 1.0);
        assert!((cos.at(50) - 0.5).abs() < 1e-9);
        assert!(cos.at(100).abs() < 1e-9);
        let warm = schedule("constant", 4);
        assert_eq!((warm.at(0), warm.at(3), warm.at(4)), (0.25, 1.0, 1.0));
    }
}
