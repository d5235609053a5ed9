//! Per-epoch figures of a training run, as the `history` output holds them.

use serde_json::{json, Value as Json};

#[derive(Default)]
pub(super) struct History {
    pub(super) epochs: Vec<usize>,
    pub(super) lr: Vec<f64>,
    pub(super) train_loss: Vec<f64>,
    pub(super) valid_loss: Vec<f64>,
    pub(super) valid_accuracy: Vec<f64>,
    /// Sparsity per epoch of a pruning ramp.
    pub(super) sparsity: Vec<f64>,
}

impl History {
    pub(super) fn push(
        &mut self,
        epoch: usize,
        lr: f64,
        train_loss: f64,
        valid: Option<(f64, Option<f64>)>,
    ) {
        self.epochs.push(epoch);
        self.lr.push(lr);
        self.train_loss.push(train_loss);
        if let Some((l, acc)) = valid {
            self.valid_loss.push(l);
            if let Some(a) = acc {
                self.valid_accuracy.push(a);
            }
        }
    }

    pub(super) fn to_json(&self) -> Json {
        let mut out = json!({
            "epoch": self.epochs,
            "lr": self.lr,
            "train_loss": self.train_loss,
            "valid_loss": self.valid_loss,
            "valid_accuracy": self.valid_accuracy,
        });
        if !self.sparsity.is_empty() {
            out["sparsity"] = json!(self.sparsity);
        }
        out
    }
}
