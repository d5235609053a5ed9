//! The pruning a model brings to training: masks held at zero, and a
//! gradual ramp that raises the sparsity epoch by epoch.

use std::collections::BTreeMap;

use candle_core::{Tensor, Var};
use kiln_engine::NodeError;

use super::super::optim::Optimizer;
use crate::nn::pruning::{magnitude_masks, GradualSchedule};

/// The pruning a model brings to training: masks to hold, and perhaps a
/// ramp to raise its sparsity along.
pub(super) struct Pruning<'a> {
    pub(super) masks: &'a BTreeMap<String, Tensor>,
    pub(super) schedule: Option<&'a GradualSchedule>,
}

/// Follows a gradual pruning ramp: before each epoch of the ramp, masks the
/// smallest weights up to that epoch's sparsity.
pub(super) struct Ramp<'a> {
    pub(super) schedule: &'a GradualSchedule,
    pub(super) names: Vec<String>,
    pub(super) masks: BTreeMap<String, Tensor>,
}

impl Ramp<'_> {
    /// Prunes to the sparsity of `epoch`, in the optimizer's masks and the
    /// variables themselves; `vars` are the optimizer's variables by name.
    pub(super) fn advance(
        &mut self,
        epoch: usize,
        epochs: usize,
        vars: &[(String, Var)],
        opt: &mut Optimizer,
    ) -> Result<f64, NodeError> {
        let sparsity = self.schedule.sparsity_at(epoch, epochs);
        let weights: BTreeMap<String, Tensor> = vars
            .iter()
            .map(|(name, v)| (name.clone(), v.as_tensor().clone()))
            .collect();
        let next = magnitude_masks(
            &weights,
            &self.masks,
            &self.names,
            sparsity,
            self.schedule.global,
        )?;
        for (name, mask) in next {
            let w = &weights[&name];
            let mask = Tensor::from_vec(mask, w.shape(), w.device())?.to_dtype(w.dtype())?;
            self.masks.insert(name, mask);
        }
        let masks = vars
            .iter()
            .map(|(name, _)| self.masks.get(name).cloned())
            .collect();
        opt.set_masks(masks)?;
        Ok(sparsity)
    }
}
