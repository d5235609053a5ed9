//! Seeded weight initialisation.
//!
//! candle's CPU random generator cannot be seeded, so a `VarMap` initialises
//! weights differently on every run. [`SeededVars`] is a `VarBuilder` backend
//! that draws every initial value from the node's own ChaCha stream instead,
//! following the same `Init` rules (Kaiming, uniform, normal, constant), and
//! takes a variable's value from `initial` when one is given (fine-tuning a
//! trained model, loading a checkpoint).

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::{FanInOut, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// A `VarMap` whose new variables are initialised from a seeded generator.
pub struct SeededVars {
    vars: VarMap,
    rng: Mutex<ChaCha8Rng>,
    initial: HashMap<String, Tensor>,
}

impl SeededVars {
    /// New variables draw from `seed`; names found in `initial` take those values.
    pub fn new(seed: u64, initial: HashMap<String, Tensor>) -> Self {
        SeededVars {
            vars: VarMap::new(),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            initial,
        }
    }

    /// The variables created so far.
    pub fn var_map(&self) -> &VarMap {
        &self.vars
    }

    /// Trainable variables sorted by name (a `VarMap` iterates in random order).
    pub fn sorted_vars(&self) -> Vec<(String, Var)> {
        let data = self.vars.data().lock().unwrap_or_else(|e| e.into_inner());
        let mut vars: Vec<(String, Var)> =
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    fn draw(&self, shape: &Shape, init: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let n = shape.elem_count();
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let values: Vec<f32> = match init {
            Init::Const(c) => vec![c as f32; n],
            Init::Uniform { lo, up } => (0..n).map(|_| rng.random_range(lo..up) as f32).collect(),
            Init::Randn { mean, stdev } => normal(&mut rng, mean, stdev, n)?,
            Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                let fan = match fan {
                    FanInOut::FanIn => fan.for_shape(shape),
                    FanInOut::FanOut => fan.for_shape(shape),
                };
                let std = non_linearity.gain() / (fan.max(1) as f64).sqrt();
                match dist {
                    NormalOrUniform::Uniform => {
                        let bound = 3f64.sqrt() * std;
                        (0..n)
                            .map(|_| rng.random_range(-bound..bound) as f32)
                            .collect()
                    }
                    NormalOrUniform::Normal => normal(&mut rng, 0.0, std, n)?,
                }
            }
        };
        Tensor::from_vec(values, shape.clone(), dev)?.to_dtype(dtype)
    }
}

fn normal(rng: &mut ChaCha8Rng, mean: f64, std: f64, n: usize) -> Result<Vec<f32>> {
    let dist = Normal::new(mean, std.max(f64::MIN_POSITIVE)).map_err(candle_core::Error::wrap)?;
    Ok((0..n).map(|_| dist.sample(rng) as f32).collect())
}

impl SimpleBackend for SeededVars {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        let mut data = self.vars.data().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(var) = data.get(name) {
            if var.shape() != &shape {
                candle_core::bail!(
                    "variable `{name}` has shape {:?}, expected {shape:?}",
                    var.shape()
                );
            }
            return Ok(var.as_tensor().clone());
        }
        let value = match self.initial.get(name) {
            Some(t) if t.shape() == &shape => t.to_device(dev)?.to_dtype(dtype)?,
            Some(t) => candle_core::bail!(
                "the checkpoint's `{name}` has shape {:?}, but the architecture needs {shape:?}",
                t.shape()
            ),
            None => {
                drop(data);
                let t = self.draw(&shape, init, dtype, dev)?;
                data = self.vars.data().lock().unwrap_or_else(|e| e.into_inner());
                t
            }
        };
        let var = Var::from_tensor(&value)?;
        data.insert(name.to_string(), var.clone());
        Ok(var.as_tensor().clone())
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        let data = self.vars.data().lock().unwrap_or_else(|e| e.into_inner());
        match data.get(name) {
            Some(v) => Ok(v.as_tensor().clone()),
            None => candle_core::bail!("no variable `{name}`"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.initial.contains_key(name)
            || self.vars.data().lock().is_ok_and(|d| d.contains_key(name))
    }
}

/// A `VarBuilder` over seeded variables (kept alive by the returned `Arc`).
pub fn var_builder(vars: std::sync::Arc<SeededVars>, device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(Shared(vars)), DType::F32, device.clone())
}

struct Shared(std::sync::Arc<SeededVars>);

impl SimpleBackend for Shared {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.0.get(s, name, h, dtype, dev)
    }
    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.0.get_unchecked(name, dtype, dev)
    }
    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains_tensor(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn weights(seed: u64) -> Vec<f32> {
        let vars = Arc::new(SeededVars::new(seed, HashMap::new()));
        let vb = var_builder(vars.clone(), &Device::Cpu);
        let layer = candle_nn::linear(8, 4, vb.pp("fc")).unwrap();
        layer.weight().flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn initial_weights_follow_the_seed() {
        assert_eq!(weights(1), weights(1));
        assert_ne!(weights(1), weights(2));
        assert!(weights(3).iter().any(|w| *w != 0.0));
    }
}
