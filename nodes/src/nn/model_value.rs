//! The typed view of a `model` value.
//!
//! A model value holds its architecture (as the `model.*` node's settings),
//! the sizes it was built for, the task it was trained on (with the label
//! names, so predictions decode without the training data) and its weights,
//! named as the layers are (`layers.0.weight`). An untrained model, as a
//! `model.*` node gives it, has an architecture only: training fills in the
//! rest. Everything needed to rebuild it is inside, so a checkpoint loads
//! without the YAML.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use kiln_engine::{NodeError, Value, ValueType};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

use super::dense::Quantized;
use super::init::{var_builder, SeededVars};
use super::pruning::GradualSchedule;
use super::quantized::QuantizedWeight;
use super::Network;

/// The sizes a network is built for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dims {
    /// Shape of one example (without the batch dimension).
    pub input: Vec<usize>,
    /// Outputs per example (classes, or regression targets).
    pub output: usize,
    /// For examples of token ids: the vocabulary's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab: Option<usize>,
}

/// What the model predicts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// `classification` or `regression`.
    pub kind: String,
    /// The target column's name.
    pub target: String,
    /// Class names by index (classification).
    pub labels: Option<Vec<String>>,
}

impl Task {
    /// Whether the model classifies.
    pub fn is_classification(&self) -> bool {
        self.kind == "classification"
    }
}

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
    /// bytes (`u8`), described here (see [`super::quantized`]).
    pub quantized: BTreeMap<String, QuantizedWeight>,
    /// A gradual pruning ramp still to run: the next fine-tuning raises the
    /// sparsity along it (set by `compress.prune` with `schedule: gradual`).
    pub prune_schedule: Option<GradualSchedule>,
}

/// Prefix of mask tensors inside a model value.
const MASK: &str = "mask/";

impl ModelValue {
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

    /// Builds the network for `dims` on `device`: new variables drawn from
    /// `seed`, the model's own weights where it has them.
    pub fn instantiate(
        &self,
        dims: &Dims,
        seed: u64,
        device: &Device,
    ) -> Result<Trained, NodeError> {
        let initial: HashMap<String, Tensor> = self
            .weights
            .iter()
            .filter(|(k, _)| !self.quantized.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut quantized = Quantized::new();
        for (name, q) in &self.quantized {
            let bytes = self.weights.get(name).ok_or_else(|| {
                NodeError::new(format!(
                    "the model lists `{name}` as quantized but holds no bytes for it"
                ))
            })?;
            quantized.insert(name.clone(), Arc::new(q.decode(bytes, device)?));
        }
        let vars = Arc::new(SeededVars::new(seed, initial));
        let vb = var_builder(vars.clone(), device);
        let net = crate::model::build(&self.arch, dims, vb, &quantized)?;
        Ok(Trained { net, vars })
    }

    /// A model of `arch` with random weights, as if trained on examples of
    /// shape `input` into 3 classes (for tests).
    #[cfg(test)]
    pub fn random(arch: Json, input: &[usize]) -> ModelValue {
        let dims = Dims {
            input: input.to_vec(),
            output: 3,
            vocab: None,
        };
        let vars = Arc::new(SeededVars::new(3, HashMap::new()));
        crate::model::build(
            &arch,
            &dims,
            var_builder(vars.clone(), &Device::Cpu),
            &Quantized::new(),
        )
        .expect("a valid architecture");
        ModelValue {
            arch,
            dims: Some(dims),
            task: Some(Task {
                kind: "classification".into(),
                target: "y".into(),
                labels: None,
            }),
            weights: vars
                .sorted_vars()
                .into_iter()
                .map(|(k, v)| (k, v.as_tensor().clone()))
                .collect(),
            masks: BTreeMap::new(),
            quantized: BTreeMap::new(),
            prune_schedule: None,
        }
    }

    /// Builds a trained model for inference.
    pub fn load(&self, device: &Device) -> Result<(Trained, Dims, Task), NodeError> {
        let (Some(dims), Some(task)) = (&self.dims, &self.task) else {
            return Err(NodeError::new(format!(
                "the {} model is not trained: connect it through `train.supervised` first",
                self.arch_type()
            )));
        };
        let trained = self.instantiate(dims, 0, device)?;
        let expected = trained.vars.sorted_vars().len() + self.quantized.len();
        if expected != self.weights.len() {
            return Err(NodeError::new(format!(
                "the model holds {} weight tensors, but its architecture has {expected}",
                self.weights.len()
            )));
        }
        Ok((trained, dims.clone(), task.clone()))
    }
}

/// A built network and its variables.
pub struct Trained {
    /// The network.
    pub net: Box<dyn Network>,
    /// Its variables (weights and statistics).
    pub vars: Arc<SeededVars>,
}

impl Trained {
    /// A copy of the current weights, by name.
    pub fn weights(&self) -> Result<BTreeMap<String, Tensor>, NodeError> {
        self.vars
            .sorted_vars()
            .into_iter()
            .map(|(k, v)| Ok((k, v.as_tensor().copy()?)))
            .collect()
    }

    /// Outputs for the examples `rows` of a graph (inference mode): one pass
    /// over the whole graph for nodes, batches of graphs for graphs.
    pub fn predict_graph(
        &self,
        graph: &crate::graph::Graph,
        rows: &[u32],
        device: &Device,
    ) -> Result<Tensor, NodeError> {
        if rows.is_empty() {
            return Err(NodeError::new("no examples to predict"));
        }
        match graph.level {
            crate::graph::Level::Node => {
                let all = self
                    .net
                    .forward_graph(&graph.batch(&[], device)?, &mut super::Mode::eval())?;
                Ok(all.index_select(&Tensor::from_slice(rows, rows.len(), device)?, 0)?)
            }
            crate::graph::Level::Graph => {
                let outs = rows
                    .chunks(256)
                    .map(|chunk| {
                        self.net
                            .forward_graph(&graph.batch(chunk, device)?, &mut super::Mode::eval())
                            .map_err(NodeError::from)
                    })
                    .collect::<Result<Vec<_>, NodeError>>()?;
                Ok(Tensor::cat(&outs, 0)?)
            }
        }
    }

    /// Outputs for `x`, in batches of `batch` (inference mode).
    pub fn predict(&self, x: &Tensor, batch: usize) -> Result<Tensor, NodeError> {
        let n = x.dim(0)?;
        let mut outs = Vec::new();
        let mut start = 0;
        while start < n {
            let len = batch.min(n - start);
            outs.push(
                self.net
                    .forward(&x.narrow(0, start, len)?, &mut super::Mode::eval())?,
            );
            start += len;
        }
        if outs.is_empty() {
            return Err(NodeError::new("no examples to predict"));
        }
        Ok(Tensor::cat(&outs, 0)?)
    }
}
