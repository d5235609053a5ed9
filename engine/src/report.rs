//! What happened to each node of a run: the lines of `run.json`.

use serde::Serialize;

/// What happened to a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// It executed.
    Ran,
    /// Its result came from the cache.
    Cached,
    /// It failed.
    Failed,
    /// It did not run because something it depends on failed, or the run was cancelled.
    Skipped,
    /// It has a value only when the pipeline is served (a request source
    /// without example rows, and what depends on it).
    #[serde(rename = "serve-only")]
    ServeOnly,
}

impl Status {
    /// The word used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ran => "ran",
            Status::Cached => "cached",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::ServeOnly => "serve-only",
        }
    }
}

/// One node's line in `run.json`.
#[derive(Clone, Debug, Serialize)]
pub struct NodeReport {
    /// The node id.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// What happened.
    pub status: Status,
    /// Wall time spent on it (lookup, loading inputs, running, storing).
    pub seconds: f64,
    /// Where it ran (`cpu`, `cuda:0`).
    pub device: String,
    /// Its fingerprint, when it got that far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Why it failed or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl NodeReport {
    /// A report for node `id` of `kind` placed on `device`, with `status`,
    /// nothing measured yet.
    pub fn new(id: &str, kind: &str, device: String, status: Status) -> Self {
        NodeReport {
            id: id.to_string(),
            kind: kind.to_string(),
            status,
            seconds: 0.0,
            device,
            fingerprint: None,
            error: None,
        }
    }
}
