//! `train.supervised`'s settings as it reads them, the task a target
//! defines, and the loss that fits it.

use candle_core::Tensor;
use kiln_engine::{NodeError, Settings};
use serde_json::Value as Json;

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

pub(super) struct Config {
    pub(super) loss: LossChoice,
    pub(super) rule: Rule,
    pub(super) lr: f64,
    pub(super) weight_decay: f64,
    pub(super) epochs: usize,
    pub(super) batch_size: usize,
    pub(super) shuffle: bool,
    pub(super) schedule: ScheduleKind,
    pub(super) warmup: usize,
    pub(super) step_size: usize,
    pub(super) gamma: f64,
    pub(super) min_lr: f64,
    pub(super) clip_norm: Option<f64>,
    pub(super) patience: Option<usize>,
    pub(super) monitor: Monitor,
    pub(super) restore_best: bool,
}

impl Config {
    pub(super) fn read(s: &Settings) -> Result<Self, NodeError> {
        let optimizer: OptimizerChoice = s.parse("optimizer")?;
        let rule = match optimizer {
            OptimizerChoice::Sgd => Rule::Sgd {
                momentum: s.float("momentum")?,
            },
            OptimizerChoice::Adam => Rule::Adam,
            OptimizerChoice::Adamw => Rule::AdamW,
        };
        let default_decay = if optimizer == OptimizerChoice::Adamw {
            0.01
        } else {
            0.0
        };
        Ok(Config {
            loss: s.parse("loss")?,
            rule,
            lr: s.float("lr")?,
            weight_decay: s
                .get("weight_decay")
                .and_then(Json::as_f64)
                .unwrap_or(default_decay),
            epochs: s.usize("epochs")?,
            batch_size: s.usize("batch_size")?,
            shuffle: s.bool("shuffle")?,
            schedule: s.parse("schedule")?,
            warmup: s.usize("warmup")?,
            step_size: s.usize("step_size")?,
            gamma: s.float("gamma")?,
            min_lr: s.float("min_lr")?,
            clip_norm: s.get("clip_norm").and_then(Json::as_f64),
            patience: s.get("patience").and_then(Json::as_u64).map(|p| p as usize),
            monitor: s.parse("monitor")?,
            restore_best: s.bool("restore_best")?,
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
