//! Optimizers with their state per variable: SGD (momentum, weight decay),
//! Adam (L2 weight decay) and AdamW (decoupled weight decay). candle-nn's SGD
//! has no momentum, so these are ours; variables are visited in name order.
//!
//! f32 weights on the CPU are updated in one pass with their moments kept in
//! host memory ([`host`]); as a dozen tensor ops per variable, the update was
//! a tenth of an MLP's training time. Other devices and types run the same
//! rule as tensor ops; both give the same bits.

mod host;

use std::cell::RefCell;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, InplaceOp2, Layout, Result, Tensor, Var};

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

/// A variable's moments: momentum (SGD) or first moment (Adam) in `m`,
/// second moment in `v`.
enum Moments {
    /// As tensors on the variable's device, none before the first step.
    Tensors(Option<Tensor>, Option<Tensor>),
    /// In host memory for an f32 variable on the CPU, zeros at first (which
    /// is the same as none: `0·β + x = x`).
    Host(Vec<f32>, Vec<f32>),
}

/// An optimizer over a fixed list of variables.
pub struct Optimizer {
    rule: Rule,
    weight_decay: f64,
    vars: Vec<(Var, Moments)>,
    masks: Vec<Option<Tensor>>,
    steps: i32,
}

impl Optimizer {
    /// An optimizer for `vars` (in the order given), each with an optional
    /// pruning mask: after every update a masked variable is multiplied by
    /// its mask, so pruned weights stay exactly zero.
    pub fn new(rule: Rule, weight_decay: f64, vars: Vec<(Var, Option<Tensor>)>) -> Self {
        let (vars, masks): (Vec<_>, Vec<_>) = vars.into_iter().unzip();
        let second = matches!(rule, Rule::Adam | Rule::AdamW);
        Optimizer {
            rule,
            weight_decay,
            vars: vars
                .into_iter()
                .map(|var| {
                    let t = var.as_tensor();
                    let moments = if crate::nn::cpu::own_kernel_takes(t) && t.is_contiguous() {
                        let n = t.elem_count();
                        Moments::Host(vec![0.0; n], vec![0.0; if second { n } else { 0 }])
                    } else {
                        Moments::Tensors(None, None)
                    };
                    (var, moments)
                })
                .collect(),
            masks,
            steps: 0,
        }
    }

    /// The same optimizer keeping every variable's moments as tensors (to
    /// check the host path against).
    #[cfg(test)]
    fn on_tensors(mut self) -> Self {
        for (_, moments) in &mut self.vars {
            *moments = Moments::Tensors(None, None);
        }
        self
    }

    /// Replaces the pruning masks (one per variable, in order) and applies
    /// them at once.
    pub fn set_masks(&mut self, masks: Vec<Option<Tensor>>) -> Result<()> {
        self.masks = masks;
        self.apply_masks()
    }

    fn apply_masks(&self) -> Result<()> {
        for ((var, _), mask) in self.vars.iter().zip(&self.masks) {
            if let Some(mask) = mask {
                var.set(&var.as_tensor().mul(mask)?)?;
            }
        }
        Ok(())
    }

    /// The gradient norm over all variables.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut sum = 0.0;
        for (var, _) in &self.vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                sum += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        Ok(sum.sqrt())
    }

    /// One update with learning rate `lr`; gradients are scaled by `scale` first (clipping).
    pub fn step(&mut self, grads: &GradStore, lr: f64, scale: f64) -> Result<()> {
        self.steps += 1;
        let host_step = self.host_step(lr);
        for (var, moments) in &mut self.vars {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            match moments {
                Moments::Host(m, v) => {
                    let update = HostUpdate {
                        step: host_step,
                        scale: (scale != 1.0).then_some(scale as f32),
                        m: RefCell::new(m),
                        v: RefCell::new(v),
                    };
                    var.as_tensor().inplace_op2(&g.contiguous()?, &update)?;
                }
                Moments::Tensors(m, v) => tensor_step(
                    self.rule,
                    self.weight_decay,
                    self.steps,
                    var,
                    g,
                    (m, v),
                    lr,
                    scale,
                )?,
            }
        }
        self.apply_masks()
    }

    /// This step's constants for [`host::update`], converted to f32 as
    /// candle converts an f64 operand.
    fn host_step(&self, lr: f64) -> host::Step {
        let wd = (self.weight_decay > 0.0).then_some(self.weight_decay);
        match self.rule {
            Rule::Sgd { momentum } => host::Step::Sgd {
                lr: lr as f32,
                weight_decay: wd.map(|wd| wd as f32),
                momentum: (momentum > 0.0).then_some(momentum as f32),
            },
            Rule::Adam | Rule::AdamW => host::Step::Adam {
                lr: lr as f32,
                beta1: BETA1 as f32,
                one_minus_beta1: (1.0 - BETA1) as f32,
                beta2: BETA2 as f32,
                one_minus_beta2: (1.0 - BETA2) as f32,
                unbias1: (1.0 / (1.0 - BETA1.powi(self.steps))) as f32,
                unbias2: (1.0 / (1.0 - BETA2.powi(self.steps))) as f32,
                eps: EPS as f32,
                l2: wd.filter(|_| self.rule == Rule::Adam).map(|wd| wd as f32),
                decoupled: wd
                    .filter(|_| self.rule == Rule::AdamW)
                    .map(|wd| (lr * wd) as f32),
            },
        }
    }
}

/// One step of `rule` for one variable as tensor ops (any device or type).
#[allow(clippy::too_many_arguments)]
fn tensor_step(
    rule: Rule,
    wd: f64,
    t: i32,
    var: &Var,
    g: &Tensor,
    (m, v): (&mut Option<Tensor>, &mut Option<Tensor>),
    lr: f64,
    scale: f64,
) -> Result<()> {
    let w = var.as_tensor();
    let mut g = if scale != 1.0 {
        (g * scale)?
    } else {
        g.clone()
    };
    match rule {
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
            if rule == Rule::Adam && wd > 0.0 {
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
            if rule == Rule::AdamW && wd > 0.0 {
                next = (next - (w * (lr * wd))?)?;
            }
            var.set(&next)?;
            *m = Some(m1);
            *v = Some(v1);
        }
    }
    Ok(())
}

/// [`host::update`] as an in-place op on a variable, with its gradient as
/// the second operand.
struct HostUpdate<'a> {
    step: host::Step,
    scale: Option<f32>,
    m: RefCell<&'a mut Vec<f32>>,
    v: RefCell<&'a mut Vec<f32>>,
}

impl InplaceOp2 for HostUpdate<'_> {
    fn name(&self) -> &'static str {
        "kiln-optimizer-step"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let g = crate::nn::cpu_f32(s2, l2, self.name())?;
        let (CpuStorage::F32(w), Some((start, end))) = (s1, l1.contiguous_offsets()) else {
            candle_core::bail!("{}: expects a contiguous f32 variable", self.name());
        };
        let w = &mut w[start..end];
        if g.len() != w.len() {
            candle_core::bail!(
                "{}: a gradient of {} values for {} weights",
                self.name(),
                g.len(),
                w.len()
            );
        }
        let (mut m, mut v) = (self.m.borrow_mut(), self.v.borrow_mut());
        host::update(&self.step, self.scale, w, g, &mut m[..], &mut v[..]);
        Ok(())
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

    /// Steps in host memory give the bits that the same steps in tensor ops
    /// give, for every rule, with weight decay and gradient scaling.
    #[test]
    fn the_host_update_gives_the_tensor_ops_bits() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let data: Vec<f32> = (0..300).map(|_| rng.random_range(-2.0..2.0)).collect();
        let target: Vec<f32> = (0..300).map(|_| rng.random_range(-1.0..1.0)).collect();
        let target = Tensor::from_vec(target, (20, 15), &Device::Cpu).unwrap();
        let rules = [
            Rule::Sgd { momentum: 0.0 },
            Rule::Sgd { momentum: 0.9 },
            Rule::Adam,
            Rule::AdamW,
        ];
        for rule in rules {
            for (wd, scale) in [(0.0, 1.0), (0.01, 1.0), (0.05, 0.37)] {
                let run = |tensors: bool| {
                    let w = Var::from_vec(data.clone(), (20, 15), &Device::Cpu).unwrap();
                    let mut opt = Optimizer::new(rule, wd, vec![(w.clone(), None)]);
                    if tensors {
                        opt = opt.on_tensors();
                    }
                    for step in 0..7 {
                        let loss = (w.as_tensor() - &target)
                            .unwrap()
                            .powf(3.0)
                            .unwrap()
                            .sum_all()
                            .unwrap();
                        let lr = 0.01 * (step + 1) as f64;
                        opt.step(&loss.backward().unwrap(), lr, scale).unwrap();
                    }
                    w.as_tensor()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                };
                let (host, tensors) = (run(false), run(true));
                assert!(host != data, "{rule:?}: nothing moved");
                let same = host
                    .iter()
                    .zip(&tensors)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{rule:?} wd {wd} scale {scale}");
            }
        }
    }

    #[test]
    fn momentum_speeds_up_sgd() {
        let plain = (minimise(Rule::Sgd { momentum: 0.0 }, 0.01, 30) - 3.0).abs();
        let heavy = (minimise(Rule::Sgd { momentum: 0.9 }, 0.01, 30) - 3.0).abs();
        assert!(heavy < plain, "{heavy} vs {plain}");
    }
}
