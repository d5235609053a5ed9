//! Batch normalisation whose running statistics live in the model's
//! variables, so they are saved and restored with the weights (candle-nn's
//! `BatchNorm` copies them out of the `VarMap`).

use candle_core::{Result, Tensor, Var, D};
use candle_nn::{Init, VarBuilder};

use super::Mode;

/// Names of variables that are statistics, not trained by the optimizer.
pub fn is_statistic(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

/// Normalises over every dimension but the channel one (dimension 1).
pub struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    momentum: f64,
    eps: f64,
}

impl BatchNorm {
    /// A layer for `channels` channels.
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        // The backend hands out the variable itself, so `Var::from_tensor`
        // shares its storage: updates land in the saved model.
        let var = |name: &str, init: f64| -> Result<Var> {
            Var::from_tensor(&vb.get_with_hints(channels, name, Init::Const(init))?)
        };
        Ok(BatchNorm {
            weight: vb.get_with_hints(channels, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(channels, "bias", Init::Const(0.0))?,
            running_mean: var("running_mean", 0.0)?,
            running_var: var("running_var", 1.0)?,
            momentum: 0.1,
            eps: 1e-5,
        })
    }

    fn shape_for(&self, x: &Tensor) -> Vec<usize> {
        let mut shape = vec![1; x.rank()];
        shape[1] = self.weight.elem_count();
        shape
    }

    /// Normalises with batch statistics while training (updating the running
    /// ones), with the running statistics otherwise.
    pub fn forward(&self, x: &Tensor, mode: &Mode<'_>) -> Result<Tensor> {
        let shape = self.shape_for(x);
        let (mean, var) = if mode.train {
            // Move channels last and flatten the rest: [rest, C].
            let c = shape[1];
            let flat = x.transpose(1, D::Minus1)?.reshape(((), c))?;
            let mean = flat.mean(0)?;
            let centered = flat.broadcast_sub(&mean)?;
            let var = centered.sqr()?.mean(0)?;
            let n = flat.dim(0)? as f64;
            let unbiased = (var.detach() * (n / (n - 1.0).max(1.0)))?;
            let m = self.momentum;
            self.running_mean
                .set(&((self.running_mean.as_tensor() * (1.0 - m))? + (mean.detach() * m)?)?)?;
            self.running_var
                .set(&((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?)?;
            (mean, var)
        } else {
            (
                self.running_mean.as_tensor().clone(),
                self.running_var.as_tensor().clone(),
            )
        };
        let mean = mean.reshape(shape.as_slice())?;
        let std = (var + self.eps)?.sqrt()?.reshape(shape.as_slice())?;
        x.broadcast_sub(&mean)?
            .broadcast_div(&std)?
            .broadcast_mul(&self.weight.reshape(shape.as_slice())?)?
            .broadcast_add(&self.bias.reshape(shape.as_slice())?)
    }
}
