//! Optimizers with their state per variable: SGD (momentum, weight decay),
//! Adam (L2 weight decay) and AdamW (decoupled weight decay). candle-nn's SGD
//! has no momentum, so these are ours; variables are visited in name order.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

/// Which update rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    /// Stochastic gradient descent with momentum.
    Sgd {
        /// Momentum factor (0 for plain SGD).
        momentum: f64,
    },
    /// Adam, weight decay added to the gradient.
    Adam,
    /// AdamW, weight decay applied to the weights directly.
    AdamW,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// An optimizer over a fixed list of variables.
pub struct Optimizer {
    rule: Rule,
    weight_decay: f64,
    vars: Vec<(Var, Option<Tensor>, Option<Tensor>)>,
    masks: Vec<Option<Tensor>>,
    steps: i32,
}

impl Optimizer {
    /// An optimizer for `vars` (in the order given), each with an optional
    /// pruning mask: after every update a masked variable is multiplied by
    /// its mask, so pruned weights stay exactly zero.
    pub fn new(rule: Rule, weight_decay: f64, vars: Vec<(Var, Option<Tensor>)>) -> Self {
        let (vars, masks): (Vec<_>, Vec<_>) = vars.into_iter().unzip();
        Optimizer {
            rule,
            weight_decay,
            vars: vars.into_iter().map(|v| (v, None, None)).collect(),
            masks,
            steps: 0,
        }
    }

    /// Replaces the pruning masks (one per variable, in order) and applies
    /// them at once.
    pub fn set_masks(&mut self, masks: Vec<Option<Tensor>>) -> Result<()> {
        self.masks = masks;
        self.apply_masks()
    }

    fn apply_masks(&self) -> Result<()> {
        for ((var, _, _), mask) in self.vars.iter().zip(&self.masks) {
            if let Some(mask) = mask {
                var.set(&var.as_tensor().mul(mask)?)?;
            }
        }
        Ok(())
    }

    /// The gradient norm over all variables.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut sum = 0.0;
        for (var, _, _) in &self.vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                sum += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        Ok(sum.sqrt())
    }

    /// One update with learning rate `lr`; gradients are scaled by `scale` first (clipping).
    pub fn step(&mut self, grads: &GradStore, lr: f64, scale: f64) -> Result<()> {
        self.steps += 1;
        let t = self.steps;
        let wd = self.weight_decay;
        for (var, m, v) in &mut self.vars {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let w = var.as_tensor();
            let mut g = if scale != 1.0 {
                (g * scale)?
            } else {
                g.clone()
            };
            match self.rule {
                Rule::Sgd { momentum } => {
                    if wd > 0.0 {
                        g = (g + (w * wd)?)?;
                    }
                    let update = match (momentum > 0.0, m.as_ref()) {
                        (true, Some(prev)) => ((prev * momentum)? + &g)?,
                        _ => g,
                    };
                    var.set(&(w - (&update * lr)?)?)?;
                    if momentum > 0.0 {
                        *m = Some(update);
                    }
                }
                Rule::Adam | Rule::AdamW => {
                    if self.rule == Rule::Adam && wd > 0.0 {
                        g = (g + (w * wd)?)?;
                    }
                    let m1 = match m.as_ref() {
                        Some(prev) => ((prev * BETA1)? + (&g * (1.0 - BETA1))?)?,
                        None => (&g * (1.0 - BETA1))?,
                    };
                    let v1 = match v.as_ref() {
                        Some(prev) => ((prev * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?,
                        None => (g.sqr()? * (1.0 - BETA2))?,
                    };
                    let m_hat = (&m1 / (1.0 - BETA1.powi(t)))?;
                    let v_hat = (&v1 / (1.0 - BETA2.powi(t)))?;
                    let mut next = (w - ((m_hat / (v_hat.sqrt()? + EPS)?)? * lr)?)?;
                    if self.rule == Rule::AdamW && wd > 0.0 {
                        next = (next - (w * (lr * wd))?)?;
                    }
                    var.set(&next)?;
                    *m = Some(m1);
                    *v = Some(v1);
                }
            }
        }
        self.apply_masks()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Minimises (w - 3)² from w = 0.
    fn minimise(rule: Rule, lr: f64, steps: usize) -> f32 {
        let w = Var::new(&[0.0f32], &Device::Cpu).unwrap();
        let mut opt = Optimizer::new(rule, 0.0, vec![(w.clone(), None)]);
        for _ in 0..steps {
            let loss = (w.as_tensor() - 3.0)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap();
            opt.step(&loss.backward().unwrap(), lr, 1.0).unwrap();
        }
        w.as_tensor().to_vec1::<f32>().unwrap()[0]
    }

    #[test]
    fn every_rule_reaches_the_minimum() {
        assert!((minimise(Rule::Sgd { momentum: 0.0 }, 0.1, 100) - 3.0).abs() < 1e-3);
        assert!((minimise(Rule::Sgd { momentum: 0.9 }, 0.01, 300) - 3.0).abs() < 1e-2);
        assert!((minimise(Rule::Adam, 0.1, 500) - 3.0).abs() < 1e-2);
        assert!((minimise(Rule::AdamW, 0.1, 500) - 3.0).abs() < 1e-2);
    }

    #[test]
    fn momentum_speeds_up_sgd() {
        let plain = (minimise(Rule::Sgd { momentum: 0.0 }, 0.01, 30) - 3.0).abs();
        let heavy = (minimise(Rule::Sgd { momentum: 0.9 }, 0.01, 30) - 3.0).abs();
        assert!(heavy < plain, "{heavy} vs {plain}");
    }
}
