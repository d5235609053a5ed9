//! The live view (`kiln watch --ui`, `kiln run --ui`): a page served on its
//! own address that draws the pipeline's graph with each node's status,
//! training curves, validation problems and plots, updated by server-sent
//! events as the run goes. Everything it shows comes from [`Board`], which
//! the engine's `Observer` feeds (beside the terminal's bars, through
//! [`Tee`]), so the page and the terminal can't disagree. The page is one
//! file compiled into the binary: it works without internet.

mod board;
mod layout;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kiln_engine::{NodeId, NodeReport, Observer, Progress};
use tokio::sync::broadcast::error::RecvError;

pub use board::{Board, BoardObserver};

/// The default address of `--ui`.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8700";

const PAGE: &str = include_str!("page.html");

/// Serves the live view of `board` on `addr` from a thread of its own;
/// returns the address it listens on (the port is chosen when `addr` says 0).
pub fn start(addr: &str, board: Arc<Board>) -> Result<SocketAddr, String> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| format!("error: `--ui {addr}`: cannot listen there ({e}); choose another address, e.g. `--ui 127.0.0.1:8701`"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("error: `--ui {addr}`: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("error: `--ui {addr}`: {e}"))?;
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/state", get(state))
        .route("/events", get(events))
        .route("/files/{name}", get(file))
        .with_state(board);
    std::thread::Builder::new()
        .name("kiln-ui".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => return eprintln!("error: the live view cannot start: {e}"),
            };
            runtime.block_on(async move {
                let served = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => axum::serve(l, app).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = served {
                    eprintln!("error: the live view stopped: {e}");
                }
            });
        })
        .map_err(|e| format!("error: the live view cannot start: {e}"))?;
    Ok(local)
}

async fn state(State(board): State<Arc<Board>>) -> Json<serde_json::Value> {
    Json(board.snapshot())
}

/// Every change, as it happens; a page that fell behind is told to reload
/// the state.
async fn events(
    State(board): State<Arc<Board>>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let stream = futures_util::stream::unfold(board.subscribe(), |mut rx| async move {
        let data = match rx.recv().await {
            Ok(event) => event.to_string(),
            Err(RecvError::Lagged(_)) => r#"{"type":"resync"}"#.to_string(),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(Event::default().data(data)), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// A plot the run wrote (`.png` or `.svg` directly in the output folder).
async fn file(State(board): State<Arc<Board>>, UrlPath(name): UrlPath<String>) -> Response {
    let kind = if name.ends_with(".png") {
        "image/png"
    } else if name.ends_with(".svg") {
        "image/svg+xml"
    } else {
        return (StatusCode::NOT_FOUND, "only plots (.png, .svg) are served").into_response();
    };
    if name.contains('/') || name.contains('\\') || name.starts_with('.') {
        return (StatusCode::NOT_FOUND, "no such plot").into_response();
    }
    match std::fs::read(board.out_dir().join(Path::new(&name))) {
        Ok(bytes) => ([(header::CONTENT_TYPE, kind)], bytes).into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "no such plot").into_response(),
    }
}

/// Several observers seeing the same events, in order.
pub struct Tee(pub Vec<Arc<dyn Observer>>);

impl Observer for Tee {
    fn node_started(&self, node: &NodeId, kind: &str) {
        self.0.iter().for_each(|o| o.node_started(node, kind));
    }

    fn progress(&self, node: &NodeId, progress: &Progress) {
        self.0.iter().for_each(|o| o.progress(node, progress));
    }

    fn node_finished(&self, report: &NodeReport) {
        self.0.iter().for_each(|o| o.node_finished(report));
    }
}
