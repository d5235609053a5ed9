//! Dropout with masks from the node's seeded generator (candle's own
//! `Dropout` draws from the unseedable CPU generator).

use candle_core::{Result, Tensor};
use rand::Rng;

use super::Mode;

/// Zeroes each value with probability `p` while training, scaling the rest by `1/(1-p)`.
pub fn dropout(x: &Tensor, p: f64, mode: &mut Mode<'_>) -> Result<Tensor> {
    let Some(rng) = mode.rng.as_deref_mut() else {
        return Ok(x.clone());
    };
    if !mode.train || p <= 0.0 {
        return Ok(x.clone());
    }
    let keep = (1.0 / (1.0 - p)) as f32;
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| if rng.random::<f64>() < p { 0.0 } else { keep })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x * mask
}
