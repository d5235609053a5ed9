//! Dynamic batching: requests that arrive together run as one forward pass.
//!
//! One task per pipeline takes the first waiting request and gathers more
//! for up to `max_wait_ms`; then, until a worker is free (at most one batch
//! per core runs at once), it keeps taking in requests that arrive, up to
//! `max_batch` rows. So a quiet service answers at once and a busy one
//! batches whatever queued while it was busy. The rows of all its requests
//! run together; the answer's rows are split back by count.

use std::sync::Arc;
use std::time::Duration;

use kiln_engine::{RequestError, ServeError, Service};
use serde_json::Value as Json;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::Pipeline;

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

/// Runs the batching loop of `pipeline` until every sender is gone.
pub async fn run(pipeline: Arc<Pipeline>, mut queue: mpsc::Receiver<Job>, workers: Arc<Semaphore>) {
    while let Some(first) = queue.recv().await {
        let service = pipeline.current();
        let spec = service.spec().clone();
        let mut rows = first.rows.len();
        let mut jobs = vec![first];
        let deadline = tokio::time::Instant::now() + Duration::from_millis(spec.max_wait_ms);
        while rows < spec.max_batch && spec.max_wait_ms > 0 {
            match tokio::time::timeout_at(deadline, queue.recv()).await {
                Ok(Some(job)) => {
                    rows += job.rows.len();
                    jobs.push(job);
                }
                _ => break,
            }
        }
        let permit = loop {
            if rows >= spec.max_batch {
                break workers.clone().acquire_owned().await;
            }
            tokio::select! {
                biased;
                permit = workers.clone().acquire_owned() => break permit,
                job = queue.recv() => match job {
                    Some(job) => {
                        rows += job.rows.len();
                        jobs.push(job);
                    }
                    None => break workers.clone().acquire_owned().await,
                },
            }
        };
        let Ok(permit) = permit else {
            return;
        };
        let pipeline = pipeline.clone();
        tokio::task::spawn_blocking(move || {
            pipeline
                .metrics
                .batch_rows
                .with_label_values(&[&pipeline.name])
                .observe(rows as f64);
            pipeline
                .metrics
                .batch_requests
                .with_label_values(&[&pipeline.name])
                .observe(jobs.len() as f64);
            answer(&service, jobs);
            drop(permit);
        });
    }
}

/// Runs a batch and sends every request its answer.
fn answer(service: &Service, jobs: Vec<Job>) {
    let fingerprint = service.fingerprint().to_string();
    let counts: Vec<usize> = jobs.iter().map(|j| j.rows.len()).collect();
    let total: usize = counts.iter().sum();
    let merged: Vec<Json> = jobs.iter().flat_map(|j| j.rows.iter().cloned()).collect();
    let result = service
        .infer(&Json::Array(merged))
        .map_err(failure)
        .and_then(|v| kiln_nodes::data::answer(&v).map_err(|e| Failure::Server(e.to_string())));
    match result {
        Ok(Json::Array(mut out)) if out.len() == total => {
            for (job, n) in jobs.into_iter().zip(counts) {
                let rest = out.split_off(n);
                let mine = std::mem::replace(&mut out, rest);
                let _ = job.reply.send(Ok((Json::Array(mine), fingerprint.clone())));
            }
        }
        // An answer that is not one row per input row can't be split: each
        // request runs alone.
        _ if jobs.len() > 1 => {
            for job in jobs {
                let one = answer_one(service, &job.rows);
                let _ = job.reply.send(one);
            }
        }
        other => {
            if let Some(job) = jobs.into_iter().next() {
                let _ = job.reply.send(other.map(|v| (v, fingerprint)));
            }
        }
    }
}

fn answer_one(service: &Service, rows: &[Json]) -> Answer {
    let value = service
        .infer(&Json::Array(rows.to_vec()))
        .map_err(failure)?;
    let out = kiln_nodes::data::answer(&value).map_err(|e| Failure::Server(e.to_string()))?;
    Ok((out, service.fingerprint().to_string()))
}

fn failure(e: ServeError) -> Failure {
    match e {
        ServeError::Request(r) => Failure::Client(r),
        other => Failure::Server(other.to_string()),
    }
}
