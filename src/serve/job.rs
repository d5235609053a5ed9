//! A request waiting in a pipeline's queue, and what it gets back.

use kiln_engine::{NumberRows, RequestError};
use serde_json::Value as Json;
use tokio::sync::oneshot;

/// One request waiting for its answer.
pub struct Job {
    /// Its rows (already checked).
    pub rows: Rows,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Answer>,
}

/// A request's rows as they were read.
#[derive(Clone, Debug, PartialEq)]
pub enum Rows {
    /// As JSON values.
    Json(Vec<Json>),
    /// Every row a list of numbers, read as numbers (the input node reads
    /// them so: `Service::number_rows`).
    Numbers(NumberRows),
}

impl Rows {
    /// How many rows there are.
    pub fn len(&self) -> usize {
        match self {
            Rows::Json(rows) => rows.len(),
            Rows::Numbers(rows) => rows.len(),
        }
    }

    /// The rows as JSON values.
    pub fn into_json(self) -> Vec<Json> {
        match self {
            Rows::Json(rows) => rows,
            Rows::Numbers(rows) => rows.to_json(),
        }
    }
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
