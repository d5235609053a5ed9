//! What a command can fail with, and so which exit code it gets.

/// What a command can fail with, and so which exit code it gets.
pub enum Failure {
    /// A node or the server failed at run time (exit 1).
    Run(String),
    /// The pipeline or the command line is invalid (exit 2).
    Invalid(String),
}

impl From<kiln_engine::EngineError> for Failure {
    fn from(e: kiln_engine::EngineError) -> Self {
        match e {
            kiln_engine::EngineError::Write { .. } => Failure::Run(e.to_string()),
            _ => Failure::Invalid(e.to_string()),
        }
    }
}
