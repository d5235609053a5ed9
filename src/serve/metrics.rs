//! The service's Prometheus metrics (`GET /metrics`).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Counters and histograms, labelled by pipeline.
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by pipeline and HTTP status.
    pub requests: IntCounterVec,
    /// Requests answered with a 4xx or 5xx, by pipeline and status.
    pub errors: IntCounterVec,
    /// Time from a request's arrival to its answer, by pipeline.
    pub latency: HistogramVec,
    /// Rows per forward pass (a batch may hold several requests), by pipeline.
    pub batch_rows: HistogramVec,
    /// Requests per forward pass, by pipeline.
    pub batch_requests: HistogramVec,
    /// New versions swapped in by `--watch`, by pipeline.
    pub swaps: IntCounterVec,
    /// Connections closed by the server before a request was answered, by
    /// reason: `max_connections` (over the cap), `header_timeout` (the
    /// request's head took too long), `tls_handshake`.
    pub connections_closed: IntCounterVec,
    /// Connections open now.
    pub connections_open: IntGauge,
    /// Sequences a language model is generating now, and requests waiting
    /// to join them, by pipeline (set when scraped).
    pub sequences: IntGaugeVec,
}

impl Metrics {
    /// Fresh metrics.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("kiln_requests_total", "Requests answered, by status."),
            &["pipeline", "status"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "kiln_request_errors_total",
                "Requests answered with an error status.",
            ),
            &["pipeline", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "kiln_request_duration_seconds",
                "Time from arrival to answer.",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16)?),
            &["pipeline"],
        )?;
        let batch_rows = HistogramVec::new(
            HistogramOpts::new("kiln_batch_rows", "Rows per forward pass.")
                .buckets(prometheus::exponential_buckets(1.0, 2.0, 12)?),
            &["pipeline"],
        )?;
        let batch_requests = HistogramVec::new(
            HistogramOpts::new("kiln_batch_requests", "Requests per forward pass.")
                .buckets(prometheus::exponential_buckets(1.0, 2.0, 10)?),
            &["pipeline"],
        )?;
        let swaps = IntCounterVec::new(
            Opts::new(
                "kiln_model_swaps_total",
                "New versions swapped in by --watch.",
            ),
            &["pipeline"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(batch_rows.clone()))?;
        registry.register(Box::new(batch_requests.clone()))?;
        let connections_closed = IntCounterVec::new(
            Opts::new(
                "kiln_connections_closed_total",
                "Connections the server closed before answering, by reason.",
            ),
            &["reason"],
        )?;
        let connections_open = IntGauge::new("kiln_connections_open", "Connections open now.")?;
        registry.register(Box::new(swaps.clone()))?;
        registry.register(Box::new(connections_closed.clone()))?;
        registry.register(Box::new(connections_open.clone()))?;
        let sequences = IntGaugeVec::new(
            Opts::new(
                "kiln_generate_sequences",
                "Language-model sequences by state: generating, waiting.",
            ),
            &["pipeline", "state"],
        )?;
        registry.register(Box::new(sequences.clone()))?;
        Ok(Metrics {
            sequences,
            registry,
            requests,
            errors,
            latency,
            batch_rows,
            batch_requests,
            swaps,
            connections_closed,
            connections_open,
        })
    }

    /// Records one answered request.
    pub fn answered(&self, pipeline: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        self.requests.with_label_values(&[pipeline, &status]).inc();
        if status.starts_with('4') || status.starts_with('5') {
            self.errors.with_label_values(&[pipeline, &status]).inc();
        }
        self.latency.with_label_values(&[pipeline]).observe(seconds);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            return format!("# cannot encode metrics: {e}\n");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
