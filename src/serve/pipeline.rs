//! One served pipeline: the version answering now, and its batch queue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use kiln_engine::Service;
use prometheus::{Histogram, IntCounter};
use tokio::sync::mpsc;

use super::job::Job;
use super::llm::Generator;
use super::metrics::Metrics;

/// One served pipeline: the version answering now, and its batch queue.
pub struct Pipeline {
    /// The pipeline's name (its route).
    pub name: String,
    current: RwLock<Arc<Service>>,
    /// The language model answering the OpenAI routes, when the output is
    /// an `infer.generate` node (follows hot swaps).
    generator: RwLock<Option<Arc<Generator>>>,
    /// Requests waiting for a batch.
    pub queue: mpsc::Sender<Job>,
    /// Rows of the requests in `queue`, what `serve.max_queue` bounds:
    /// the wait a queue means is its rows' work, not its count of requests.
    waiting: WaitingRows,
    /// The service's metrics.
    pub metrics: Arc<Metrics>,
    /// This pipeline's most used series, resolved once (a labelled lookup
    /// per request hashes the labels and takes a lock).
    answered_ok: IntCounter,
    latency: Histogram,
    batch_rows: Histogram,
    batch_requests: Histogram,
}

impl Pipeline {
    /// A pipeline answering with `service`, and the receiving end of its
    /// queue (for the batching task, [`super::batch::start`]).
    pub fn new(service: Service, metrics: Arc<Metrics>) -> (Arc<Pipeline>, mpsc::Receiver<Job>) {
        // Sized once: a hot swap keeps the queue (and what waits in it).
        let (tx, rx) = mpsc::channel(service.spec().max_queue.max(1));
        let name = service.plan().name.to_string();
        let pipeline = Arc::new(Pipeline {
            answered_ok: metrics.requests.with_label_values(&[&name, "200"]),
            latency: metrics.latency.with_label_values(&[&name]),
            batch_rows: metrics.batch_rows.with_label_values(&[&name]),
            batch_requests: metrics.batch_requests.with_label_values(&[&name]),
            generator: RwLock::new(generator_of(&name, &service)),
            name,
            current: RwLock::new(Arc::new(service)),
            queue: tx,
            waiting: WaitingRows::default(),
            metrics,
        });
        (pipeline, rx)
    }

    /// Whether the queue holds `serve.max_queue` rows or more: a request
    /// arriving now is turned away before its body is read.
    pub fn queue_full(&self) -> bool {
        self.waiting.at_least(self.current().spec().max_queue)
    }

    /// Counts `rows` as waiting if they fit under `serve.max_queue`.
    pub fn hold_rows(&self, rows: usize) -> bool {
        self.waiting.hold(rows, self.current().spec().max_queue)
    }

    /// Takes `rows` out of the count: their request left the queue.
    pub fn release_rows(&self, rows: usize) {
        self.waiting.release(rows)
    }

    /// Counts a request answered with `status` after `seconds`.
    pub fn answered(&self, status: u16, seconds: f64) {
        if status == 200 {
            self.answered_ok.inc();
            self.latency.observe(seconds);
        } else {
            self.metrics.answered(&self.name, status, seconds);
        }
    }

    /// Records the size of a batch about to run.
    pub fn observe_batch(&self, rows: usize, requests: usize) {
        self.batch_rows.observe(rows as f64);
        self.batch_requests.observe(requests as f64);
    }

    /// The version answering requests now.
    pub fn current(&self) -> Arc<Service> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The language model of the version answering now, if it has one.
    pub fn generator(&self) -> Option<Arc<Generator>> {
        self.generator
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Swaps in a new version; batches already running finish on the old
    /// one. Returns whether the fingerprint changed (an identical rebuild
    /// is not swapped).
    pub fn swap(&self, service: Service) -> bool {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.fingerprint() == service.fingerprint() {
            return false;
        }
        *self.generator.write().unwrap_or_else(|e| e.into_inner()) =
            generator_of(&self.name, &service);
        *current = Arc::new(service);
        self.metrics.swaps.with_label_values(&[&self.name]).inc();
        true
    }
}

/// Rows waiting in a queue, held against a bound.
#[derive(Default)]
struct WaitingRows(AtomicUsize);

impl WaitingRows {
    fn at_least(&self, most: usize) -> bool {
        self.0.load(Ordering::Acquire) >= most
    }

    /// Counts `rows` if they fit under `most`; a request larger than
    /// `most` is taken when nothing waits, so every request `max_rows`
    /// allows can be answered.
    fn hold(&self, rows: usize, most: usize) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |waiting| {
                (waiting == 0 || waiting + rows <= most).then_some(waiting + rows)
            })
            .is_ok()
    }

    fn release(&self, rows: usize) {
        self.0.fetch_sub(rows, Ordering::AcqRel);
    }
}

/// The generator of `service`; a model that fails to load leaves the
/// OpenAI routes off for it, saying why.
fn generator_of(name: &str, service: &Service) -> Option<Arc<Generator>> {
    Generator::for_service(service).unwrap_or_else(|e| {
        eprintln!("warning: pipeline `{name}`: the OpenAI routes are off: {e}");
        None
    })
}

#[cfg(test)]
mod tests {
    use super::WaitingRows;

    #[test]
    fn the_queue_is_bounded_in_rows_and_takes_a_large_request_when_empty() {
        let waiting = WaitingRows::default();
        assert!(waiting.hold(1000, 64), "an empty queue takes any request");
        assert!(waiting.at_least(64));
        assert!(!waiting.hold(1, 64));
        waiting.release(1000);
        assert!(waiting.hold(40, 64));
        assert!(!waiting.hold(30, 64), "40 + 30 rows is over 64");
        assert!(waiting.hold(24, 64), "40 + 24 rows fills it exactly");
        assert!(waiting.at_least(64));
        waiting.release(40);
        assert!(!waiting.at_least(64));
        assert!(waiting.hold(30, 64));
    }
}
