//! The typed view of `table` and `dataset` values shared by node kinds.
//!
//! A dataset is a feature tensor whose first dimension counts examples, an
//! optional target (class indices as `u32`, or numbers as `f32`) and the
//! names that give them meaning: column names for tables, label names for
//! classes. What a source fitted (label names) travels with the data, so it
//! is applied unchanged downstream.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use kiln_engine::{NodeError, Value, ValueType};
use serde_json::{json, Value as Json};

use crate::sparse::Csr;

/// The `categories` key under which a dataset of token ids (from
/// `preprocess.tokenize`) names its vocabulary, id by id.
pub const TOKENS: &str = "tokens";

/// The target of a dataset.
#[derive(Clone, Debug)]
pub struct Target {
    /// The target column's name.
    pub name: String,
    /// `[n]`: class indices (`u32`) for classification, values (`f32`) for regression.
    pub values: Tensor,
    /// Class names by index, for classification.
    pub labels: Option<Vec<String>>,
}

impl Target {
    /// The target stored as `tensor` (values) with its name and labels in a
    /// value's `meta`, as [`Target::store`] puts them.
    pub fn read(meta: &Json, values: &Tensor) -> Target {
        Target {
            name: meta
                .get("target")
                .and_then(Json::as_str)
                .unwrap_or("target")
                .to_string(),
            values: values.clone(),
            labels: meta
                .get("labels")
                .and_then(|l| serde_json::from_value(l.clone()).ok()),
        }
    }

    /// Stores the target in a value's parts: the values as tensor `key`,
    /// the name and labels in `meta`.
    pub fn store(self, key: &str, meta: &mut Json, tensors: &mut BTreeMap<String, Tensor>) {
        meta["target"] = json!(self.name);
        meta["labels"] = json!(self.labels);
        tensors.insert(key.to_string(), self.values);
    }

    /// The targets of examples `rows`, in that order.
    pub fn select(&self, rows: &[u32]) -> Result<Target, NodeError> {
        let idx = Tensor::from_slice(rows, rows.len(), self.values.device())?;
        Ok(Target {
            values: self.values.index_select(&idx, 0)?,
            ..self.clone()
        })
    }

    /// Whether this is a classification target.
    pub fn is_classification(&self) -> bool {
        self.values.dtype() == DType::U32
    }
}

/// The features of a dataset's examples: a tensor `[n, ...]`, or sparse
/// rows `[n, columns]` (tf-idf), which models with a sparse path (linear
/// models, naive Bayes) read as they are and others a batch at a time.
#[derive(Clone, Debug)]
pub enum Features {
    /// `[n, ...]`.
    Dense(Tensor),
    /// `[n, columns]`, mostly zeros.
    Sparse(Arc<Csr>),
}

impl From<Tensor> for Features {
    fn from(t: Tensor) -> Features {
        Features::Dense(t)
    }
}

impl From<Csr> for Features {
    fn from(c: Csr) -> Features {
        Features::Sparse(Arc::new(c))
    }
}

impl Features {
    /// The shape: examples first.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Features::Dense(t) => t.dims().to_vec(),
            Features::Sparse(c) => vec![c.rows(), c.cols],
        }
    }

    /// The shape of one example.
    pub fn example_shape(&self) -> Vec<usize> {
        self.dims().split_off(1.min(self.dims().len()))
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.dims().first().copied().unwrap_or(0)
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The features as one tensor: dense features as they are, sparse ones
    /// spelled out (all of them: read a batch of rows first where that is
    /// too much).
    pub fn tensor(&self) -> Result<Tensor, NodeError> {
        match self {
            Features::Dense(t) => Ok(t.clone()),
            Features::Sparse(c) => Ok(c.to_dense()?),
        }
    }

    /// The sparse rows, if that is how the features are held.
    pub fn sparse(&self) -> Option<&Csr> {
        match self {
            Features::Sparse(c) => Some(c),
            Features::Dense(_) => None,
        }
    }

    /// The examples at `rows`, in that order.
    pub fn select(&self, rows: &[u32]) -> Result<Features, NodeError> {
        Ok(match self {
            Features::Dense(t) => {
                let idx = Tensor::from_slice(rows, rows.len(), t.device())?;
                Features::Dense(t.index_select(&idx, 0)?)
            }
            Features::Sparse(c) => c.select(rows)?.into(),
        })
    }

    /// The features with each example in `shape`: as they are, or reshaped
    /// when a flat row holds as many values (a served request's 784 grey
    /// levels for 28×28 images); `None` when the counts differ. Sparse rows
    /// are rows already.
    pub fn in_example_shape(&self, shape: &[usize]) -> Result<Option<Features>, NodeError> {
        let given = self.example_shape();
        if given != shape && given.iter().product::<usize>() != shape.iter().product::<usize>() {
            return Ok(None);
        }
        Ok(Some(match self {
            Features::Dense(t) if given != shape => {
                let mut full = vec![self.len()];
                full.extend_from_slice(shape);
                Features::Dense(t.reshape(full)?)
            }
            same => same.clone(),
        }))
    }

    /// `len` examples from `start`.
    pub fn narrow(&self, start: usize, len: usize) -> Result<Features, NodeError> {
        match self {
            Features::Dense(t) => Ok(Features::Dense(t.narrow(0, start, len)?)),
            Features::Sparse(_) => {
                let rows: Vec<u32> = (start as u32..(start + len) as u32).collect();
                self.select(&rows)
            }
        }
    }
}

/// Examples with features, an optional target and their names.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// `[n, ...]`, `f32`, or sparse rows.
    pub features: Features,
    /// Feature column names (tables).
    pub columns: Option<Vec<String>>,
    /// The target, if the data has one.
    pub target: Option<Target>,
    /// Category names of categorical feature columns, by column (each such
    /// column holds category indices).
    pub categories: BTreeMap<String, Vec<String>>,
}

impl Dataset {
    /// Reads a `table` or `dataset` value.
    pub fn from_value(value: &Value) -> Result<Dataset, NodeError> {
        if !ValueType::Dataset.accepts(value.ty()) {
            return Err(NodeError::new(format!(
                "expected a dataset, got a {}",
                value.ty()
            )));
        }
        let meta = value.meta();
        let strings = |key: &str| -> Option<Vec<String>> {
            meta.get(key)?.as_array().map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
        };
        let target = value.tensors().get("target").map(|t| Target::read(meta, t));
        let categories = meta
            .get("categories")
            .and_then(|c| serde_json::from_value(c.clone()).ok())
            .unwrap_or_default();
        let features = match Csr::read("features", meta, value.tensors())? {
            Some(rows) => rows.into(),
            None => value.tensor("features")?.clone().into(),
        };
        Ok(Dataset {
            features,
            columns: strings("columns"),
            target,
            categories,
        })
    }

    /// The value: a `table` when features are 2-D with column names, else a `dataset`.
    pub fn into_value(self) -> Value {
        let ty = match &self.features {
            Features::Dense(t) if self.columns.is_some() && t.rank() == 2 => ValueType::Table,
            _ => ValueType::Dataset,
        };
        let mut tensors = BTreeMap::new();
        let mut meta = json!({ "columns": self.columns });
        match self.features {
            Features::Dense(t) => {
                tensors.insert("features".to_string(), t);
            }
            Features::Sparse(rows) => {
                // Only a malformed tensor could fail here, and these are built from vectors.
                if let Err(e) = rows.store("features", &mut meta, &mut tensors) {
                    tracing::error!("cannot store sparse features: {e}");
                }
            }
        }
        if !self.categories.is_empty() {
            meta["categories"] = json!(self.categories);
        }
        if let Some(t) = self.target {
            t.store("target", &mut meta, &mut tensors);
        }
        Value::new(ty, tensors, meta)
    }

    /// `n` examples with no features, only `target`: what a node scores
    /// predictions against when the examples themselves are not rows
    /// (documents, a graph's nodes).
    pub fn of_target(n: usize, target: Option<Target>) -> Result<Dataset, NodeError> {
        Ok(Dataset {
            features: Tensor::zeros((n, 0), DType::F32, &candle_core::Device::Cpu)?.into(),
            columns: Some(Vec::new()),
            target,
            categories: BTreeMap::new(),
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.features.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The examples at `rows`, in that order.
    pub fn select(&self, rows: &[u32]) -> Result<Dataset, NodeError> {
        let target = self.target.as_ref().map(|t| t.select(rows)).transpose()?;
        Ok(Dataset {
            features: self.features.select(rows)?,
            columns: self.columns.clone(),
            target,
            categories: self.categories.clone(),
        })
    }

    /// Class index of every example, when the target is a classification one.
    pub fn class_indices(&self) -> Result<Option<Vec<u32>>, NodeError> {
        match &self.target {
            Some(t) if t.is_classification() => {
                Ok(Some(t.values.to_device(&Device::Cpu)?.to_vec1::<u32>()?))
            }
            _ => Ok(None),
        }
    }
}

impl Dataset {
    /// One JSON object per example, `{column: value}`: categorical columns
    /// and class targets by name, a missing value as `null`. Examples with
    /// more than one dimension give `{"features": [...]}`. This is how a
    /// served pipeline answers.
    pub fn to_rows(&self) -> Result<Vec<Json>, NodeError> {
        let features = self
            .features
            .tensor()?
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?;
        let n = self.len();
        let number =
            |x: f32| serde_json::Number::from_f64(x as f64).map_or(Json::Null, Json::Number);
        let width = features.dims()[1..].iter().product::<usize>();
        let mut rows: Vec<serde_json::Map<String, Json>> = (0..n)
            .map(|_| serde_json::Map::with_capacity(width + 1))
            .collect();
        if features.rank() == 2 {
            let names: Vec<String> = self
                .columns
                .clone()
                .filter(|c| c.len() == width)
                .unwrap_or_else(|| (0..width).map(|i| format!("col{i}")).collect());
            for (row, values) in rows.iter_mut().zip(features.to_vec2::<f32>()?) {
                for (name, x) in names.iter().zip(values) {
                    let cell = match self.categories.get(name) {
                        Some(labels) if x.is_finite() && x >= 0.0 => labels
                            .get(x as usize)
                            .map_or_else(|| number(x), |l| Json::String(l.clone())),
                        _ => number(x),
                    };
                    row.insert(name.clone(), cell);
                }
            }
        } else {
            let flat = features.flatten_from(1)?.to_vec2::<f32>()?;
            for (row, values) in rows.iter_mut().zip(flat) {
                row.insert(
                    "features".into(),
                    Json::Array(values.into_iter().map(number).collect()),
                );
            }
        }
        if let Some(t) = &self.target {
            let values = t.values.to_device(&Device::Cpu)?;
            let cells: Vec<Json> = match (&t.labels, t.is_classification()) {
                (Some(labels), true) => values
                    .to_vec1::<u32>()?
                    .into_iter()
                    .map(|i| labels.get(i as usize).map_or(json!(i), |l| json!(l)))
                    .collect(),
                _ => values
                    .to_dtype(DType::F32)?
                    .to_vec1::<f32>()?
                    .into_iter()
                    .map(number)
                    .collect(),
            };
            for (row, cell) in rows.iter_mut().zip(cells) {
                row.insert(t.name.clone(), cell);
            }
        }
        Ok(rows.into_iter().map(Json::Object).collect())
    }
}

/// A value as a served answer: a dataset as rows ([`Dataset::to_rows`]),
/// anything else as its metadata (metrics and the like).
pub fn answer(value: &Value) -> Result<Json, NodeError> {
    if ValueType::Dataset.accepts(value.ty()) {
        Ok(Json::Array(Dataset::from_value(value)?.to_rows()?))
    } else {
        Ok(value.meta().clone())
    }
}
