//! Prepared models: a trained model value built into its network, its
//! quantized weights decoded, on a device — once per value and device.
//!
//! Building a network from a model value (parsing the architecture, creating
//! variables, decoding quantized blocks) costs more than a served request's
//! forward pass. `infer.predict`, `postprocess.metrics` and
//! `postprocess.compare` take their network from here, keyed by the value's
//! content hash and the device, so `run`, `watch` and every served batch
//! share one built network per model; a hot swap brings a new value, hence a
//! new key, and the old network is dropped once it is the oldest of a few.

use std::sync::Arc;

use candle_core::Device;
use kiln_engine::{NodeError, Value};

use super::trained::Trained;
use super::value::ModelValue;
use crate::nn::kept::Kept;
use crate::nn::{Dims, Task};

/// How many prepared models stay in memory (a service holds a few
/// pipelines, and a swap briefly holds two versions of one).
const KEPT: usize = 16;

/// A trained model ready to predict on one device.
pub struct Prepared {
    /// The built network.
    pub trained: Trained,
    /// Input and output sizes.
    pub dims: Dims,
    /// What it predicts.
    pub task: Task,
    /// Where its weights live.
    pub device: Device,
}

/// The prepared model of `value` on `device`, built on first use.
pub fn prepared(value: &Value, device: &Device) -> Result<Arc<Prepared>, NodeError> {
    static PREPARED: Kept<Prepared> = Kept::new(KEPT);
    PREPARED.get_or_load(value.content_hash(), device, || {
        let (trained, dims, task) = ModelValue::from_value(value)?.load(device)?;
        Ok(Prepared {
            trained,
            dims,
            task,
            device: device.clone(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_model_value_is_built_once_per_content_and_device() {
        let arch = json!({"type": "mlp", "hidden": [8], "activation": "relu", "dropout": 0.0, "batch_norm": false});
        let value = ModelValue::random(arch.clone(), &[4]).into_value();
        let first = prepared(&value, &Device::Cpu).unwrap();
        // The same content, even in another value (a reload from the cache), is the same network.
        let reloaded = Value::from_bytes(value.to_bytes().unwrap()).unwrap();
        assert!(Arc::ptr_eq(
            &first,
            &prepared(&reloaded, &Device::Cpu).unwrap()
        ));
        // Other weights are another network.
        let other = ModelValue::random(json!({"type": "mlp", "hidden": [9], "activation": "relu", "dropout": 0.0, "batch_norm": false}), &[4]).into_value();
        assert!(!Arc::ptr_eq(
            &first,
            &prepared(&other, &Device::Cpu).unwrap()
        ));
    }
}
