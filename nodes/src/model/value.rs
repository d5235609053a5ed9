//! The typed view of a `model` value.
//!
//! A model value holds its architecture (as the `model.*` node's settings),
//! the sizes it was built for, the task it was trained on (with the label
//! names, so predictions decode without the training data) and its weights,
//! named as the layers are (`layers.0.weight`). An untrained model, as a
//! `model.*` node gives it, has an architecture only: training fills in the
//! rest. Everything needed to rebuild it is inside, so a checkpoint loads
//! without the YAML.

use std::collections::BTreeMap;

use candle_core::Tensor;
use kiln_engine::{NodeError, Value, ValueType};
use serde_json::{json, Value as Json};

use crate::nn::pruning::GradualSchedule;
use crate::nn::quantized::QuantizedWeight;
use crate::nn::{Dims, Task};

/// A model: architecture, and once trained its sizes, task and weights.
#[derive(Clone, Debug)]
pub struct ModelValue {
    /// `{"type": "mlp", ...settings}`.
    pub arch: Json,
    /// Set once trained.
    pub dims: Option<Dims>,
    /// Set once trained.
    pub task: Option<Task>,
    /// Weights by variable name (empty until trained).
    pub weights: BTreeMap<String, Tensor>,
    /// Pruning masks by weight name (1 keeps a weight, 0 holds it at zero);
    /// training keeps masked weights at zero.
    pub masks: BTreeMap<String, Tensor>,
    /// Weights stored quantized: their entry in `weights` holds the stored
    /// bytes (`u8`), described here (see [`crate::nn::quantized`]).
    pub quantized: BTreeMap<String, QuantizedWeight>,
    /// A gradual pruning ramp still to run: the next fine-tuning raises the
    /// sparsity along it (set by `compress.prune` with `schedule: gradual`).
    pub prune_schedule: Option<GradualSchedule>,
}

/// Prefix of mask tensors inside a model value.
const MASK: &str = "mask/";

impl ModelValue {
    /// An untrained model of the architecture `name` configured so: its
    /// JSON is `{"type": name}` and then the configuration's fields (what
    /// [`Arch`](super::Arch) reads back).
    pub fn configured<T: serde::Serialize>(name: &str, config: &T) -> Result<Self, NodeError> {
        let mut arch = serde_json::Map::new();
        arch.insert("type".into(), json!(name));
        match serde_json::to_value(config) {
            Ok(Json::Object(fields)) => arch.extend(fields),
            _ => {
                return Err(NodeError::new(format!(
                    "a `{name}` configuration is not a mapping"
                )))
            }
        }
        Ok(ModelValue::untrained(Json::Object(arch)))
    }

    /// An untrained model of this architecture.
    pub fn untrained(arch: Json) -> Self {
        ModelValue {
            arch,
            dims: None,
            task: None,
            weights: BTreeMap::new(),
            masks: BTreeMap::new(),
            quantized: BTreeMap::new(),
            prune_schedule: None,
        }
    }

    /// Reads a `model` value.
    pub fn from_value(value: &Value) -> Result<Self, NodeError> {
        if value.ty() != ValueType::Model {
            return Err(NodeError::new(format!(
                "expected a model, got a {}",
                value.ty()
            )));
        }
        let meta = value.meta();
        let parse = |key: &str| meta.get(key).filter(|v| !v.is_null()).cloned();
        Ok(ModelValue {
            arch: parse("arch")
                .ok_or_else(|| NodeError::new("the model value has no architecture"))?,
            dims: parse("dims")
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| NodeError::new(format!("the model's sizes are malformed: {e}")))?,
            task: parse("task")
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| NodeError::new(format!("the model's task is malformed: {e}")))?,
            weights: value
                .tensors()
                .iter()
                .filter(|(k, _)| !k.starts_with(MASK))
                .map(|(k, t)| (k.clone(), t.clone()))
                .collect(),
            masks: value
                .tensors()
                .iter()
                .filter_map(|(k, t)| Some((k.strip_prefix(MASK)?.to_string(), t.clone())))
                .collect(),
            quantized: parse("quantized")
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| {
                    NodeError::new(format!("the model's quantized weights are malformed: {e}"))
                })?
                .unwrap_or_default(),
            prune_schedule: parse("prune_schedule")
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| {
                    NodeError::new(format!("the model's pruning schedule is malformed: {e}"))
                })?,
        })
    }

    /// The value.
    pub fn into_value(self) -> Value {
        let mut meta = json!({ "arch": self.arch, "dims": self.dims, "task": self.task });
        if !self.quantized.is_empty() {
            meta["quantized"] = json!(self.quantized);
        }
        if let Some(schedule) = &self.prune_schedule {
            meta["prune_schedule"] = json!(schedule);
        }
        let mut tensors = self.weights;
        tensors.extend(
            self.masks
                .into_iter()
                .map(|(k, t)| (format!("{MASK}{k}"), t)),
        );
        Value::new(ValueType::Model, tensors, meta)
    }

    /// The architecture's name (`mlp`, `cnn`, …).
    pub fn arch_type(&self) -> &str {
        self.arch.get("type").and_then(Json::as_str).unwrap_or("?")
    }

    /// After layer `removed` left the model, renames the weights and masks of
    /// the layers after it (`layers.5.weight` -> `layers.4.weight`).
    pub fn renumber_layers_after(&mut self, removed: usize) {
        let rename = |name: String| -> String {
            let index = name
                .strip_prefix("layers.")
                .and_then(|rest| rest.split_once('.'))
                .and_then(|(i, rest)| Some((i.parse::<usize>().ok()?, rest)));
            match index {
                Some((i, rest)) if i > removed => format!("layers.{}.{rest}", i - 1),
                _ => name,
            }
        };
        self.weights = std::mem::take(&mut self.weights)
            .into_iter()
            .map(|(k, t)| (rename(k), t))
            .collect();
        self.masks = std::mem::take(&mut self.masks)
            .into_iter()
            .map(|(k, t)| (rename(k), t))
            .collect();
    }
}
