//! The typed view of `table` and `dataset` values shared by node kinds.
//!
//! A dataset is a feature tensor whose first dimension counts examples, an
//! optional target (class indices as `u32`, or numbers as `f32`) and the
//! names that give them meaning: column names for tables, label names for
//! classes. What a source fitted (label names) travels with the data, so it
//! is applied unchanged downstream.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use kiln_engine::{NodeError, Value, ValueType};
use serde_json::{json, Value as Json};

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
    /// Whether this is a classification target.
    pub fn is_classification(&self) -> bool {
        self.values.dtype() == DType::U32
    }
}

/// Examples with features, an optional target and their names.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// `[n, ...]`, `f32`.
    pub features: Tensor,
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
        let target = value.tensors().get("target").map(|t| Target {
            name: meta
                .get("target")
                .and_then(Json::as_str)
                .unwrap_or("target")
                .to_string(),
            values: t.clone(),
            labels: strings("labels"),
        });
        let categories = meta
            .get("categories")
            .and_then(|c| serde_json::from_value(c.clone()).ok())
            .unwrap_or_default();
        Ok(Dataset {
            features: value.tensor("features")?.clone(),
            columns: strings("columns"),
            target,
            categories,
        })
    }

    /// The value: a `table` when features are 2-D with column names, else a `dataset`.
    pub fn into_value(self) -> Value {
        let ty = if self.columns.is_some() && self.features.rank() == 2 {
            ValueType::Table
        } else {
            ValueType::Dataset
        };
        let mut tensors = BTreeMap::from([("features".to_string(), self.features)]);
        let mut meta = json!({ "columns": self.columns });
        if !self.categories.is_empty() {
            meta["categories"] = json!(self.categories);
        }
        if let Some(t) = self.target {
            meta["target"] = json!(t.name);
            meta["labels"] = json!(t.labels);
            tensors.insert("target".to_string(), t.values);
        }
        Value::new(ty, tensors, meta)
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.features.dims().first().copied().unwrap_or(0)
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The examples at `rows`, in that order.
    pub fn select(&self, rows: &[u32]) -> Result<Dataset, NodeError> {
        let idx = Tensor::from_slice(rows, rows.len(), self.features.device())?;
        let target = match &self.target {
            Some(t) => Some(Target {
                values: t.values.index_select(&idx, 0)?,
                ..t.clone()
            }),
            None => None,
        };
        Ok(Dataset {
            features: self.features.index_select(&idx, 0)?,
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
