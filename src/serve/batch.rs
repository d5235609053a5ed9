//! Dynamic batching: requests that arrive together run as one forward pass.
//!
//! One task per pipeline takes the first waiting request and gathers more
//! for up to `max_wait_ms`; then, until a worker is free (at most one batch
//! per core runs at once), it keeps taking in requests that arrive, up to
//! `max_batch` rows. So a quiet service answers at once and a busy one
//! batches whatever queued while it was busy. The rows of all its requests
//! run together; the answer's rows are split back by count.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kiln_engine::{NumberRows, ServeError, Service};
use serde_json::Value as Json;
use tokio::sync::{mpsc, Semaphore};

use super::job::{Answer, Failure, Job, Rows};
use super::metrics::Metrics;
use super::pipeline::Pipeline;

/// Starts serving `service`: its pipeline, and its batching task on the
/// current runtime.
pub fn start(service: Service, metrics: Arc<Metrics>, workers: Arc<Semaphore>) -> Arc<Pipeline> {
    let (pipeline, queue) = Pipeline::new(service, metrics);
    tokio::spawn(run(pipeline.clone(), queue, workers));
    pipeline
}

/// Runs the batching loop of `pipeline` until every sender is gone.
pub async fn run(pipeline: Arc<Pipeline>, queue: mpsc::Receiver<Job>, workers: Arc<Semaphore>) {
    let own_turn = Arc::new(Semaphore::new(1));
    let mut queue = Waiting {
        queue,
        pipeline: pipeline.clone(),
    };
    while let Some(first) = queue.next().await {
        let service = pipeline.current();
        let spec = service.spec().clone();
        let mut rows = first.rows.len();
        let mut jobs = vec![first];
        let deadline = tokio::time::Instant::now() + Duration::from_millis(spec.max_wait_ms);
        while rows < spec.max_batch && spec.max_wait_ms > 0 {
            match tokio::time::timeout_at(deadline, queue.next()).await {
                Ok(Some(job)) => {
                    rows += job.rows.len();
                    jobs.push(job);
                }
                _ => break,
            }
        }
        // One batch of this pipeline at a time (its forward pass uses the
        // cores itself), and at most one per core over all pipelines; what
        // arrives meanwhile joins the batch.
        let mut gathered = Gathered {
            jobs,
            rows,
            max_rows: spec.max_batch,
        };
        let own = gathered
            .until(own_turn.clone().acquire_owned(), &mut queue)
            .await;
        let shared = gathered
            .until(workers.clone().acquire_owned(), &mut queue)
            .await;
        let (Ok(own), Ok(shared)) = (own, shared) else {
            return;
        };
        let Gathered { mut jobs, .. } = gathered;
        // A request whose client left, or whose deadline passed while it
        // waited, is dropped before its batch starts: it costs nothing more.
        jobs.retain(|job| !job.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let rows = jobs.iter().map(|j| j.rows.len()).sum::<usize>();
        let permit = (own, shared);
        pipeline.observe_batch(rows, jobs.len());
        let pipeline = pipeline.clone();
        tokio::task::spawn_blocking(move || {
            answer(&pipeline.name, &service, jobs);
            drop(permit);
        });
    }
}

/// The receiving end of a pipeline's queue: a request taken out no longer
/// counts toward `serve.max_queue`.
struct Waiting {
    queue: mpsc::Receiver<Job>,
    pipeline: Arc<Pipeline>,
}

impl Waiting {
    async fn next(&mut self) -> Option<Job> {
        let job = self.queue.recv().await?;
        self.pipeline.release_rows(job.rows.len());
        Some(job)
    }
}

/// The requests of the batch being formed.
struct Gathered {
    jobs: Vec<Job>,
    rows: usize,
    max_rows: usize,
}

impl Gathered {
    /// Takes in requests from `queue` until `ready` resolves (or the batch
    /// is full, then just waits for it).
    async fn until<T>(&mut self, ready: impl Future<Output = T>, queue: &mut Waiting) -> T {
        tokio::pin!(ready);
        loop {
            if self.rows >= self.max_rows {
                return ready.await;
            }
            tokio::select! {
                biased;
                value = &mut ready => return value,
                job = queue.next() => match job {
                    Some(job) => {
                        self.rows += job.rows.len();
                        self.jobs.push(job);
                    }
                    None => return ready.await,
                },
            }
        }
    }
}

/// Runs a batch and sends every request its answer. A panic while
/// answering is logged with the pipeline's name and answers each request of
/// the batch with a server error naming it; the service goes on.
fn answer(pipeline: &str, service: &Service, jobs: Vec<Job>) {
    let (rows, replies): (Vec<Rows>, Vec<_>) = jobs.into_iter().map(|j| (j.rows, j.reply)).unzip();
    let answers = answer_guarded(pipeline, rows, |rows| answers(service, rows));
    for (reply, answer) in replies.into_iter().zip(answers) {
        let _ = reply.send(answer);
    }
}

/// `answer` for each request's rows, or one server error per request if it panics.
fn answer_guarded(
    pipeline: &str,
    rows: Vec<Rows>,
    answer: impl FnOnce(Vec<Rows>) -> Vec<Answer>,
) -> Vec<Answer> {
    let requests = rows.len();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| answer(rows))) {
        Ok(answers) => answers,
        Err(panic) => {
            let cause = kiln_engine::error::panic_message(panic.as_ref());
            tracing::error!(
                "pipeline `{pipeline}`: a batch of {requests} requests failed: internal error: {cause}",
            );
            (0..requests)
                .map(|_| Err(Failure::Server(format!("internal error: {cause}"))))
                .collect()
        }
    }
}

/// The answers to a batch of requests, one per request, in order.
fn answers(service: &Service, rows: Vec<Rows>) -> Vec<Answer> {
    if rows.len() == 1 {
        return rows
            .into_iter()
            .map(|one| answer_one(service, one))
            .collect();
    }
    let counts: Vec<usize> = rows.iter().map(Rows::len).collect();
    // Rows read as numbers run as numbers when every request's are so and
    // as wide; otherwise all as JSON.
    let numbers: Option<Vec<&NumberRows>> = rows
        .iter()
        .map(|r| match r {
            Rows::Numbers(n) => Some(n),
            Rows::Json(_) => None,
        })
        .collect();
    if let Some(numbers) =
        numbers.filter(|n| !n.is_empty() && n.iter().all(|r| r.width == n[0].width))
    {
        let width = numbers[0].width;
        let values = numbers.iter().flat_map(|r| &r.values).copied().collect();
        let result = service.infer_numbers(NumberRows { width, values });
        return split(service, result, &counts)
            .unwrap_or_else(|| rows.into_iter().map(|r| answer_one(service, r)).collect());
    }
    let merged = Json::Array(rows.into_iter().flat_map(Rows::into_json).collect());
    let result = service.infer(&merged);
    split(service, result, &counts).unwrap_or_else(|| {
        let mut rows = match merged {
            Json::Array(rows) => rows.into_iter(),
            _ => Vec::new().into_iter(),
        };
        counts
            .into_iter()
            .map(|n| answer_one(service, Rows::Json(rows.by_ref().take(n).collect())))
            .collect()
    })
}

/// A batch's answer split back into each request's rows by `counts`; `None`
/// when it is not one row per input row (then it can't be split), or the
/// batch failed (a client's bad input must fail only its own request): each
/// request then runs alone.
fn split(
    service: &Service,
    result: Result<kiln_engine::Value, ServeError>,
    counts: &[usize],
) -> Option<Vec<Answer>> {
    let total: usize = counts.iter().sum();
    let fingerprint = service.fingerprint();
    match result.ok().map(|v| kiln_nodes::data::answer(&v)) {
        Some(Ok(Json::Array(mut out))) if out.len() == total => Some(
            counts
                .iter()
                .map(|&n| {
                    let rest = out.split_off(n);
                    let mine = std::mem::replace(&mut out, rest);
                    Ok((Json::Array(mine), fingerprint.to_string()))
                })
                .collect(),
        ),
        _ => None,
    }
}

fn answer_one(service: &Service, rows: Rows) -> Answer {
    let value = match rows {
        Rows::Json(rows) => service.infer(&Json::Array(rows)),
        Rows::Numbers(rows) => service.infer_numbers(rows),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_panic_while_answering_fails_only_that_batch() {
        let rows = vec![
            Rows::Json(vec![json!([1.0])]),
            Rows::Json(vec![json!([2.0]), json!([3.0])]),
        ];
        let answers = answer_guarded("iris", rows.clone(), |_| panic!("index out of bounds"));
        assert_eq!(answers.len(), 2);
        for a in answers {
            match a {
                Err(Failure::Server(e)) => assert_eq!(e, "internal error: index out of bounds"),
                other => panic!("{other:?}"),
            }
        }
        // The next batch is answered as usual.
        let ok = answer_guarded("iris", rows, |r| {
            r.iter()
                .map(|_| Ok((json!([]), "fp".to_string())))
                .collect()
        });
        assert!(ok.iter().all(Result::is_ok));
    }
}
