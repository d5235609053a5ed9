//! The typed view of `text` values: documents, with an optional target
//! (class indices and their names, as in [`crate::data::Dataset`]).

use std::collections::BTreeMap;

use candle_core::Tensor;
use kiln_engine::{NodeError, Value, ValueType};
use serde_json::{json, Value as Json};

use crate::data::Target;

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
        let target = value.tensors().get("target").map(|t| Target {
            name: meta
                .get("target")
                .and_then(Json::as_str)
                .unwrap_or("target")
                .to_string(),
            values: t.clone(),
            labels: meta
                .get("labels")
                .and_then(|l| serde_json::from_value(l.clone()).ok()),
        });
        Ok(Texts { texts, target })
    }

    /// The value.
    pub fn into_value(self) -> Value {
        let mut meta = json!({ "texts": self.texts });
        let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
        if let Some(t) = self.target {
            meta["target"] = json!(t.name);
            meta["labels"] = json!(t.labels);
            tensors.insert("target".into(), t.values);
        }
        Value::new(ValueType::Text, tensors, meta)
    }
}
