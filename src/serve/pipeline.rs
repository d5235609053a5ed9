//! One served pipeline: the version answering now, and its batch queue.

use std::sync::{Arc, RwLock};

use kiln_engine::Service;
use tokio::sync::mpsc;

use super::job::Job;
use super::metrics::Metrics;

/// Requests waiting for a batch before new ones are turned away (503).
const QUEUE: usize = 4096;

/// One served pipeline: the version answering now, and its batch queue.
pub struct Pipeline {
    /// The pipeline's name (its route).
    pub name: String,
    current: RwLock<Arc<Service>>,
    /// Requests waiting for a batch.
    pub queue: mpsc::Sender<Job>,
    /// The service's metrics.
    pub metrics: Arc<Metrics>,
}

impl Pipeline {
    /// A pipeline answering with `service`, and the receiving end of its
    /// queue (for the batching task, [`super::batch::start`]).
    pub fn new(service: Service, metrics: Arc<Metrics>) -> (Arc<Pipeline>, mpsc::Receiver<Job>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let pipeline = Arc::new(Pipeline {
            name: service.plan().name.to_string(),
            current: RwLock::new(Arc::new(service)),
            queue: tx,
            metrics,
        });
        (pipeline, rx)
    }

    /// The version answering requests now.
    pub fn current(&self) -> Arc<Service> {
        self.current
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
        *current = Arc::new(service);
        self.metrics.swaps.with_label_values(&[&self.name]).inc();
        true
    }
}
