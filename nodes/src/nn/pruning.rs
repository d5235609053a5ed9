//! Magnitude pruning: which weights to zero, and the gradual schedule that
//! raises sparsity step by step while a pruned model is fine-tuned (Zhu &
//! Gupta, "To prune, or not to prune", 2017).

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use kiln_engine::NodeError;
use serde::{Deserialize, Serialize};

/// A sparsity ramp that `train.supervised` follows while fine-tuning:
/// before epoch `e` of the ramp the sparsity is
/// `target + (initial − target)·(1 − e/ramp)³`, so most weights go early,
/// while the network still adapts easily, and the last ones gently.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradualSchedule {
    /// Sparsity the model was pruned to before fine-tuning.
    pub initial: f64,
    /// Sparsity reached at the end of the ramp.
    pub target: f64,
    /// One threshold over all layers (`true`) or the same share in each.
    pub global: bool,
    /// Weights left whole.
    pub exclude: Vec<String>,
    /// Epochs the ramp lasts; by default three quarters of the fine-tuning,
    /// so the last quarter recovers at the final sparsity.
    pub ramp_epochs: Option<usize>,
}

impl GradualSchedule {
    /// Epochs of the ramp in a fine-tuning of `epochs` epochs.
    pub fn ramp(&self, epochs: usize) -> usize {
        self.ramp_epochs
            .unwrap_or(epochs * 3 / 4)
            .clamp(1, epochs.max(1))
    }

    /// The sparsity to hold during epoch `epoch` (1-based) of `epochs`.
    pub fn sparsity_at(&self, epoch: usize, epochs: usize) -> f64 {
        let ramp = self.ramp(epochs);
        let t = epoch.min(ramp) as f64 / ramp as f64;
        self.target + (self.initial - self.target) * (1.0 - t).powi(3)
    }
}

/// Weight matrices and kernels (rank 2 and up) not in `exclude`, by name:
/// what magnitude pruning may zero. Biases and normalisation parameters are
/// left alone.
pub fn prunable(weights: &BTreeMap<String, Tensor>, exclude: &[String]) -> Vec<String> {
    weights
        .iter()
        .filter(|(name, t)| t.rank() >= 2 && !exclude.contains(name))
        .map(|(name, _)| name.clone())
        .collect()
}

fn cpu_values(t: &Tensor) -> Result<Vec<f32>, NodeError> {
    Ok(t.to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1()?)
}

/// Masks (1 keeps, 0 prunes) that zero exactly `round(sparsity · n)` of the
/// weights `names`, smallest magnitude first (ties by position), counted
/// over all of them together (`global`) or in each. Weights already masked
/// in `masks` go first, so pruning again only adds zeros.
pub fn magnitude_masks(
    weights: &BTreeMap<String, Tensor>,
    masks: &BTreeMap<String, Tensor>,
    names: &[String],
    sparsity: f64,
    global: bool,
) -> Result<BTreeMap<String, Vec<f32>>, NodeError> {
    if global {
        return smallest(weights, masks, names, sparsity);
    }
    let mut all = BTreeMap::new();
    for name in names {
        all.extend(smallest(
            weights,
            masks,
            std::slice::from_ref(name),
            sparsity,
        )?);
    }
    Ok(all)
}

fn smallest(
    weights: &BTreeMap<String, Tensor>,
    masks: &BTreeMap<String, Tensor>,
    names: &[String],
    sparsity: f64,
) -> Result<BTreeMap<String, Vec<f32>>, NodeError> {
    let mut all: Vec<(f32, usize, usize)> = Vec::new();
    let mut out = BTreeMap::new();
    for (k, name) in names.iter().enumerate() {
        let w = weights
            .get(name)
            .ok_or_else(|| NodeError::new(format!("the model has no weight `{name}`")))?;
        let values = cpu_values(w)?;
        let old = match masks.get(name) {
            Some(m) => cpu_values(m)?,
            None => vec![1.0; values.len()],
        };
        all.extend(
            values
                .iter()
                .zip(&old)
                .enumerate()
                .map(|(i, (v, m))| (if *m == 0.0 { -1.0 } else { v.abs() }, k, i)),
        );
        out.insert(name.clone(), vec![1.0f32; values.len()]);
    }
    let cut = (sparsity * all.len() as f64).round() as usize;
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    for &(_, k, i) in &all[..cut.min(all.len())] {
        if let Some(m) = out.get_mut(&names[k]) {
            m[i] = 0.0;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ramp_is_cubic_and_ends_at_the_target() {
        let s = GradualSchedule {
            initial: 0.5,
            target: 0.9,
            global: true,
            exclude: vec![],
            ramp_epochs: None,
        };
        // 8 epochs: a ramp of 6, then 2 at the target.
        assert_eq!(s.ramp(8), 6);
        let at: Vec<f64> = (1..=8).map(|e| s.sparsity_at(e, 8)).collect();
        assert!((at[0] - (0.9 - 0.4 * (5.0f64 / 6.0).powi(3))).abs() < 1e-12);
        assert!(at.windows(2).all(|w| w[1] >= w[0]), "{at:?}");
        assert_eq!(at[5], 0.9);
        assert_eq!(at[7], 0.9);
        // Steps shrink: more is removed early than late.
        assert!(at[1] - at[0] > at[5] - at[4]);
        // A ramp longer than the fine-tuning still ends at the target.
        let long = GradualSchedule {
            ramp_epochs: Some(50),
            ..s
        };
        assert_eq!(long.sparsity_at(3, 3), 0.9);
        assert_eq!(long.ramp(1), 1);
    }
}
