//! `train.supervised`'s settings as it reads them, the task a target
//! defines, and the loss that fits it.

use candle_core::Tensor;
use kiln_engine::{Config, NodeError};
use serde::Deserialize;

use super::super::optim::Rule;
use super::super::schedule::ScheduleKind;
use crate::data::Dataset;
use crate::nn::Task;

kiln_engine::choices! {
    /// The `optimizer` setting.
    pub enum OptimizerChoice {
        /// SGD with momentum.
        Sgd = "sgd",
        /// Adam.
        Adam = "adam",
        /// Adam with decoupled weight decay.
        Adamw = "adamw",
    }
}

kiln_engine::choices! {
    /// The `loss` setting, before the target decides `auto`.
    pub enum LossChoice {
        /// Cross-entropy for classes, MSE for numbers.
        Auto = "auto",
        /// Cross-entropy over the classes.
        CrossEntropy = "cross_entropy",
        /// Mean squared error.
        Mse = "mse",
        /// Binary cross-entropy on one logit.
        BceWithLogits = "bce_with_logits",
    }
}

kiln_engine::choices! {
    /// The `monitor` setting: what early stopping and `restore_best` watch.
    pub enum Monitor {
        /// The loss on `valid` (lower is better).
        ValidLoss = "valid_loss",
        /// The accuracy on `valid` (higher is better).
        ValidAccuracy = "valid_accuracy",
    }
}

/// `train.supervised`'s settings, as written in `with:`.
#[derive(Config, Deserialize)]
pub(super) struct SupervisedSettings {
    /// `auto`: cross-entropy for classes, MSE for numbers; `bce_with_logits` for two classes
    #[setting(default = "auto")]
    pub(super) loss: LossChoice,
    /// the update rule
    #[setting(default = "adamw")]
    pub(super) optimizer: OptimizerChoice,
    /// the (peak) learning rate
    #[setting(default = 0.001, gt = 0.0)]
    pub(super) lr: f64,
    /// SGD momentum
    #[setting(default = 0.9, min = 0.0, lt = 1.0)]
    pub(super) momentum: f64,
    /// weight decay (default 0.01 for adamw, 0 otherwise)
    #[setting(min = 0.0)]
    pub(super) weight_decay: Option<f64>,
    /// passes over the training data
    #[setting(default = 10, min = 1, max = 100_000)]
    pub(super) epochs: usize,
    /// examples per step
    #[setting(default = 32, min = 1, max = 1 << 20)]
    pub(super) batch_size: usize,
    /// reshuffle the training data every epoch (from the node's seed)
    #[setting(default = true)]
    pub(super) shuffle: bool,
    /// how the learning rate changes over the run
    #[setting(default = "constant")]
    pub(super) schedule: ScheduleKind,
    /// epochs of linear warmup from 0 to `lr`
    #[setting(default = 0)]
    pub(super) warmup: usize,
    /// `step` schedule: epochs between decays
    #[setting(default = 10, min = 1)]
    pub(super) step_size: usize,
    /// `step` schedule: decay factor
    #[setting(default = 0.1, gt = 0.0, max = 1.0)]
    pub(super) gamma: f64,
    /// `cosine` schedule: the final learning rate
    #[setting(default = 0.0, min = 0.0)]
    pub(super) min_lr: f64,
    /// clip gradients to this global norm
    #[setting(gt = 0.0)]
    pub(super) clip_norm: Option<f64>,
    /// stop after this many epochs without improvement of `monitor` (needs `valid`)
    #[setting(min = 1)]
    pub(super) patience: Option<usize>,
    /// the score early stopping and `restore_best` watch
    #[setting(default = "valid_loss")]
    pub(super) monitor: Monitor,
    /// keep the model of the best epoch (with `valid`)
    #[setting(default = true)]
    pub(super) restore_best: bool,
}

impl SupervisedSettings {
    /// The update rule `optimizer` (and `momentum`) name.
    pub(super) fn rule(&self) -> Rule {
        match self.optimizer {
            OptimizerChoice::Sgd => Rule::Sgd {
                momentum: self.momentum,
            },
            OptimizerChoice::Adam => Rule::Adam,
            OptimizerChoice::Adamw => Rule::AdamW,
        }
    }

    /// `weight_decay`, or the optimizer's default.
    pub(super) fn weight_decay(&self) -> f64 {
        self.weight_decay
            .unwrap_or(if self.optimizer == OptimizerChoice::Adamw {
                0.01
            } else {
                0.0
            })
    }
}

/// What the target is, from a dataset.
pub fn task_of(data: &Dataset, port: &str) -> Result<Task, NodeError> {
    let target = data.target.as_ref().ok_or_else(|| {
        NodeError::new(format!(
            "`{port}` has no target: name the target column on its source (`target:`)"
        ))
    })?;
    Ok(Task {
        kind: if target.is_classification() {
            "classification"
        } else {
            "regression"
        }
        .into(),
        target: target.name.clone(),
        labels: target.labels.clone(),
    })
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Loss {
    CrossEntropy,
    Mse,
    Bce,
}

impl Loss {
    pub(super) fn choose(choice: LossChoice, task: &Task) -> Result<Loss, NodeError> {
        match (choice, task.is_classification()) {
            (LossChoice::Auto | LossChoice::CrossEntropy, true) => Ok(Loss::CrossEntropy),
            (LossChoice::Auto | LossChoice::Mse, false) => Ok(Loss::Mse),
            (LossChoice::BceWithLogits, true) => Ok(Loss::Bce),
            (LossChoice::Mse, true) => Err(NodeError::new(format!(
                "`loss: mse` needs a numeric target, but `{}` holds classes: use `cross_entropy`",
                task.target
            ))),
            (LossChoice::CrossEntropy | LossChoice::BceWithLogits, false) => {
                Err(NodeError::new(format!(
                    "`loss: {}` needs class labels, but `{}` holds numbers: use `mse`",
                    choice.name(),
                    task.target
                )))
            }
        }
    }

    /// The mean loss of a batch.
    pub(super) fn compute(self, out: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Loss::CrossEntropy => candle_nn::loss::cross_entropy(out, y),
            Loss::Mse => candle_nn::loss::mse(out, y),
            // Stable form: max(x, 0) - x·y + log(1 + e^-|x|).
            Loss::Bce => (out.relu()? - (out * y)?)?
                .add(&(out.abs()?.neg()?.exp()? + 1.0)?.log()?)?
                .mean_all(),
        }
    }
}
