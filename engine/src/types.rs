//! The types of values that flow along edges.

use std::fmt;

/// The type of a value flowing along an edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ValueType {
    /// Rows of named numeric columns with an optional target column.
    Table,
    /// Examples with features of any shape and optional targets; every table is one.
    Dataset,
    /// A single tensor.
    Tensor,
    /// A model: its architecture and weights.
    Model,
    /// Fitted preprocessing state (means, vocabularies, label names).
    Transform,
    /// Named scores.
    Metrics,
    /// Text documents.
    Text,
    /// A graph with node features.
    Graph,
    /// A human-readable report.
    Report,
    /// Anything (sinks that write whatever they are given).
    Any,
}

impl ValueType {
    /// Every type, for docs and the schema.
    pub const ALL: [ValueType; 10] = [
        ValueType::Table,
        ValueType::Dataset,
        ValueType::Tensor,
        ValueType::Model,
        ValueType::Transform,
        ValueType::Metrics,
        ValueType::Text,
        ValueType::Graph,
        ValueType::Report,
        ValueType::Any,
    ];

    /// The type's name as users write and read it.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Table => "table",
            ValueType::Dataset => "dataset",
            ValueType::Tensor => "tensor",
            ValueType::Model => "model",
            ValueType::Transform => "transform",
            ValueType::Metrics => "metrics",
            ValueType::Text => "text",
            ValueType::Graph => "graph",
            ValueType::Report => "report",
            ValueType::Any => "any",
        }
    }

    /// Parses a type name.
    pub fn from_name(name: &str) -> Option<ValueType> {
        ValueType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether a port of this type takes a value of type `given`.
    pub fn accepts(self, given: ValueType) -> bool {
        self == given
            || self == ValueType::Any
            || (self == ValueType::Dataset && given == ValueType::Table)
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
