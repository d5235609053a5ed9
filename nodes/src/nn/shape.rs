//! The sizes a network is built for and what it predicts: what an
//! architecture needs to know to build itself, and what a trained model
//! records.

use serde::{Deserialize, Serialize};

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

/// What one layer reads and gives: `[width]`, or `[c, h, w]` in a CNN's stack.
pub type LayerShapes = (Vec<usize>, Vec<usize>);
