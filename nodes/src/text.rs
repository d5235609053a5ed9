//! The typed view of `text` values: documents, with an optional target
//! (class indices and their names, as in [`crate::data::Dataset`]).

use std::collections::BTreeMap;

use candle_core::Tensor;
use kiln_engine::{NodeError, Value, ValueType};
use serde_json::{json, Value as Json};

use crate::data::{Dataset, Target};

/// Documents and, when labelled, their target.
#[derive(Clone, Debug)]
pub struct Texts {
    /// One string per example.
    pub texts: Vec<String>,
    /// The target, if the documents are labelled.
    pub target: Option<Target>,
}

impl Texts {
    /// Reads a `text` value.
    pub fn from_value(value: &Value) -> Result<Texts, NodeError> {
        if value.ty() != ValueType::Text {
            return Err(NodeError::new(format!(
                "expected text, got a {}",
                value.ty()
            )));
        }
        let meta = value.meta();
        let texts = meta
            .get("texts")
            .and_then(Json::as_array)
            .ok_or_else(|| NodeError::new("the text value holds no documents"))?
            .iter()
            .map(|t| t.as_str().unwrap_or_default().to_string())
            .collect();
        let target = value.tensors().get("target").map(|t| Target::read(meta, t));
        Ok(Texts { texts, target })
    }

    /// The documents `rows`, in that order.
    pub fn select(&self, rows: &[u32]) -> Result<Texts, NodeError> {
        let texts = rows
            .iter()
            .map(|&r| {
                self.texts.get(r as usize).cloned().ok_or_else(|| {
                    NodeError::new(format!("document {r} of {} asked for", self.texts.len()))
                })
            })
            .collect::<Result<_, _>>()?;
        let target = self.target.as_ref().map(|t| t.select(rows)).transpose()?;
        Ok(Texts { texts, target })
    }

    /// A dataset of the documents' targets alone (no features), row for row.
    pub fn as_targets(&self) -> Result<Dataset, NodeError> {
        Dataset::of_target(self.texts.len(), self.target.clone())
    }

    /// The value.
    pub fn into_value(self) -> Value {
        let mut meta = json!({ "texts": self.texts });
        let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
        if let Some(t) = self.target {
            t.store("target", &mut meta, &mut tensors);
        }
        Value::new(ValueType::Text, tensors, meta)
    }
}
