//! Errors by phase. Loading and validation produce [`Diagnostics`]; running
//! produces [`NodeError`]s inside a report. Only the CLI maps them to exit codes.

use std::fmt;

/// Why a node failed at run time: a plain sentence for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct NodeError {
    message: String,
}

impl NodeError {
    /// An error with this message (lowercase, no trailing period).
    pub fn new(message: impl Into<String>) -> Self {
        NodeError {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error with context in front: `context: message`.
    pub fn context(self, context: impl fmt::Display) -> Self {
        NodeError::new(format!("{context}: {}", self.message))
    }
}

impl From<candle_core::Error> for NodeError {
    fn from(e: candle_core::Error) -> Self {
        NodeError::new(format!("tensor error: {e}"))
    }
}

/// Errors of the engine outside any one node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The pipeline file could not be read.
    #[error("cannot read `{path}`: {reason}")]
    Read {
        /// The path as given.
        path: String,
        /// Why, in words.
        reason: String,
    },
    /// The pipeline is invalid; the diagnostics say why.
    #[error("{0}")]
    Invalid(crate::diagnostic::Diagnostics),
    /// The cache or output folder could not be written.
    #[error("cannot write `{path}`: {reason}")]
    Write {
        /// The path.
        path: String,
        /// Why, in words.
        reason: String,
    },
    /// A command-line value was wrong (`--set`, `--only`, …).
    #[error("{0}")]
    Usage(String),
}
