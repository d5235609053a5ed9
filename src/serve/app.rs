//! What every handler shares: the served pipelines, metrics and access
//! settings, and the shape of an error answer.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::access;
use super::metrics::Metrics;
use super::pipeline::Pipeline;

/// Everything the handlers share.
pub struct App {
    /// Served pipelines by name.
    pub pipelines: BTreeMap<String, Arc<Pipeline>>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Who may call the /v1 routes.
    pub keys: access::Keys,
    /// Whether `/metrics` needs a key too.
    pub protect_metrics: bool,
    /// How long a client may take to send a request's body.
    pub body_timeout: std::time::Duration,
}

/// An error answer: `{"error": message, "field": field}`.
pub fn error(status: StatusCode, message: &str, field: Option<&str>) -> Response {
    let mut body = json!({ "error": message });
    if let Some(f) = field {
        body["field"] = json!(f);
    }
    (status, Json(body)).into_response()
}
