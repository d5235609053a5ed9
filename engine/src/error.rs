//! Errors by phase. Loading and validation produce [`Diagnostics`]; running
//! produces [`NodeError`]s inside a report. Only the CLI maps them to exit codes.

use std::fmt;
use std::sync::Arc;

/// Why a node failed at run time: a plain sentence for the user, and the
/// error underneath when there is one (a tensor library's, an I/O error),
/// kept as the [`source`](std::error::Error::source) for whoever wants the
/// chain.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct NodeError {
    message: String,
    #[source]
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl NodeError {
    /// An error with this message (lowercase, no trailing period).
    pub fn new(message: impl Into<String>) -> Self {
        NodeError {
            message: message.into(),
            source: None,
        }
    }

    /// An error with this message, caused by `source`.
    pub fn caused_by(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        NodeError {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error with context in front: `context: message` (the
    /// source is kept).
    pub fn context(self, context: impl fmt::Display) -> Self {
        NodeError {
            message: format!("{context}: {}", self.message),
            source: self.source,
        }
    }
}

/// What a caught panic said (its `&str` or `String` payload).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".into())
}

impl PartialEq for NodeError {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message
    }
}

impl Eq for NodeError {}

impl From<candle_core::Error> for NodeError {
    fn from(e: candle_core::Error) -> Self {
        NodeError::caused_by(format!("tensor error: {e}"), e)
    }
}

impl From<std::io::Error> for NodeError {
    fn from(e: std::io::Error) -> Self {
        NodeError::caused_by(format!("i/o error: {e}"), e)
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

/// A problem with a client's input: which field, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestError {
    /// Where in the request, e.g. `inputs.request[2].sepal_width`; may be empty.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl RequestError {
    /// An error at `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        RequestError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error with `prefix` in front of its field.
    pub fn within(self, prefix: &str) -> Self {
        let field = match (prefix.is_empty(), self.field.is_empty()) {
            (true, _) => self.field,
            (false, true) => prefix.to_string(),
            (false, false) if self.field.starts_with('[') => format!("{prefix}{}", self.field),
            (false, false) => format!("{prefix}.{}", self.field),
        };
        RequestError { field, ..self }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "`{}`: {}", self.field, self.message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_error_keeps_the_error_underneath() {
        let inner = candle_core::Error::Msg("shape mismatch".into());
        let e = NodeError::from(inner).context("layer 2");
        assert_eq!(e.message(), "layer 2: tensor error: shape mismatch");
        let source = std::error::Error::source(&e).expect("a source");
        assert_eq!(source.to_string(), "shape mismatch");
    }
}
