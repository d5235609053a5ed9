//! A request waiting in a pipeline's queue, and what it gets back.

use kiln_engine::RequestError;
use serde_json::Value as Json;
use tokio::sync::oneshot;

/// One request waiting for its answer.
pub struct Job {
    /// Its rows (already checked).
    pub rows: Vec<Json>,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Answer>,
}

/// The answer to one request: its output and the fingerprint of the model
/// that produced it.
pub type Answer = Result<(Json, String), Failure>;

/// Why a request got no answer.
#[derive(Debug)]
pub enum Failure {
    /// The client's input is wrong (4xx).
    Client(RequestError),
    /// Something failed on our side (5xx).
    Server(String),
}
