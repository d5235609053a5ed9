//! Accepting connections: a cap on how many are open at once, a deadline
//! for each request's head (a client trickling bytes can't hold a
//! connection), TLS when configured, and a graceful stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::metrics::Metrics;

/// What one client may hold.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// How long a client may take to send a request's head (and, over
    /// TLS, to finish its handshake).
    pub header_timeout: Duration,
    /// HTTPS with this configuration; plain HTTP without.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// How long open connections get to finish their requests on a stop.
const DRAIN: Duration = Duration::from_secs(10);

/// Answers `router` on `listener` until `stop` resolves, then lets open
/// requests finish (for up to ten seconds).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()>,
) {
    let closed = |reason: &str| metrics.connections_closed.with_label_values(&[reason]);
    let (over_cap, slow_head, bad_tls) = (
        closed("max_connections"),
        closed("header_timeout"),
        closed("tls_handshake"),
    );
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, don't spin.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Ok(slot) = open.clone().try_acquire_owned() else {
            tracing::debug!("connection refused: {} are open", limits.max_connections);
            over_cap.inc();
            continue;
        };
        let gauge = metrics.connections_open.clone();
        gauge.inc();
        let slot = (slot, OpenGuard(gauge));
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        match &limits.tls {
            None => {
                let connection =
                    graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                let slow_head = slow_head.clone();
                tokio::spawn(async move {
                    if connection.await.is_err_and(|e| e.is_timeout()) {
                        slow_head.inc();
                    }
                    drop(slot);
                });
            }
            Some(tls) => {
                let (acceptor, http, watcher) = (
                    tokio_rustls::TlsAcceptor::from(tls.clone()),
                    http.clone(),
                    graceful.watcher(),
                );
                let handshake_timeout = limits.header_timeout;
                let (slow_head, bad_tls) = (slow_head.clone(), bad_tls.clone());
                tokio::spawn(async move {
                    // Plain HTTP, or a client that never finishes its
                    // handshake, just loses its connection.
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let served = watcher
                                .watch(http.serve_connection(TokioIo::new(stream), service))
                                .await;
                            if served.is_err_and(|e| e.is_timeout()) {
                                slow_head.inc();
                            }
                        }
                        _ => bad_tls.inc(),
                    }
                    drop(slot);
                });
            }
        }
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN) => {}
    }
}

/// Counts a connection out of `kiln_connections_open` when dropped.
struct OpenGuard(prometheus::IntGauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
