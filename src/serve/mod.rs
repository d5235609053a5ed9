//! The HTTP side of `kiln serve` (SPEC §7): routes, request checking,
//! dynamic batching ([`batch`]) and metrics ([`metrics`]). What a request
//! runs is the engine's [`Service`].

pub mod access;
mod app;
pub mod batch;
mod job;
pub mod listen;
mod llm;
pub mod metrics;
mod openai;
mod pipeline;
pub mod tls;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kiln_engine::{NumberRows, RequestError};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use app::error;
pub use app::App;
use job::{Failure, Job, Rows};
pub use pipeline::Pipeline;

/// The largest request body accepted.
pub const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// The routes.
pub fn router(app: Arc<App>) -> Router {
    let in_time = || axum::middleware::from_fn_with_state(app.clone(), body_in_time);
    let keyed = Router::new()
        .route("/v1/pipelines", get(list))
        .route("/v1/pipelines/{name}/infer", post(infer))
        .route("/v1/models", get(openai::models))
        .route(
            "/v1/completions",
            post(openai::completions).layer(in_time()),
        )
        .route(
            "/v1/chat/completions",
            post(openai::chat_completions).layer(in_time()),
        );
    let metrics_route = Router::new().route("/metrics", get(metrics));
    let (keyed, open) = if app.protect_metrics {
        (keyed.merge(metrics_route), Router::new())
    } else {
        (keyed, metrics_route)
    };
    let keyed = keyed.route_layer(axum::middleware::from_fn_with_state(app.clone(), admit));
    Router::new()
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .merge(open)
        .merge(keyed)
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such route: try GET /v1/pipelines, POST /v1/pipelines/<name>/infer, GET /v1/models, POST /v1/completions, POST /v1/chat/completions, GET /healthz or GET /metrics",
                None,
            )
        })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "wrong method: inference is `POST /v1/pipelines/<name>/infer`; the other routes are GET",
                None,
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(app)
}

/// Lets a request through when it carries an accepted key (or none is
/// needed); otherwise `401`, counted, the key never logged.
async fn admit(
    State(app): State<Arc<App>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if app.keys.admit(request.headers()) {
        return next.run(request).await;
    }
    app.metrics.answered("-", 401, 0.0);
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "this service needs an API key: send `Authorization: Bearer <key>`",
        Some("headers.authorization"),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// Reads a request's body within `body_timeout` before the route sees it
/// (a client trickling one can't hold a connection).
async fn body_in_time(
    State(app): State<Arc<App>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = request.into_parts();
    match read_body(&app, body).await {
        Ok(bytes) => {
            let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
            next.run(request).await
        }
        Err(refused) => refused,
    }
}

/// A request's body, read within `body_timeout`: `408` past it, `413` over
/// the size limit (each counted).
async fn read_body(app: &App, body: axum::body::Body) -> Result<Bytes, Response> {
    let read = axum::body::to_bytes(body, BODY_LIMIT);
    let refused = match tokio::time::timeout(app.body_timeout, read).await {
        Ok(Ok(bytes)) => return Ok(bytes),
        Ok(Err(e)) => {
            let too_large = e
                .into_inner()
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            if too_large {
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!(
                        "the body is larger than {} MiB; split the rows",
                        BODY_LIMIT >> 20
                    ),
                    None,
                )
            } else {
                error(
                    StatusCode::BAD_REQUEST,
                    "the body broke off before its end",
                    None,
                )
            }
        }
        Err(_) => error(
            StatusCode::REQUEST_TIMEOUT,
            &format!(
                "the body did not arrive within {} ms; send it at once",
                app.body_timeout.as_millis()
            ),
            None,
        ),
    };
    // Counted before a pipeline is known, as unknown routes are.
    app.metrics.answered("-", refused.status().as_u16(), 0.0);
    Err(refused)
}

/// Reads a body to its end, keeping none of it (within `body_timeout` and
/// the size limit), so that a refused request's connection stays usable
/// (closing it with the body unread could reset it before the client
/// reads its answer).
async fn discard_body(app: &App, body: axum::body::Body) {
    use http_body_util::BodyExt;
    let mut body = http_body_util::Limited::new(body, BODY_LIMIT);
    let drain = async { while let Some(Ok(_)) = body.frame().await {} };
    let _ = tokio::time::timeout(app.body_timeout, drain).await;
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    for p in app.pipelines.values() {
        if let Some(g) = p.generator() {
            let (waiting, generating) = g.load();
            let gauge = |state: &str, n: usize| {
                app.metrics
                    .sequences
                    .with_label_values(&[p.name.as_str(), state])
                    .set(n as i64)
            };
            gauge("generating", generating);
            gauge("waiting", waiting);
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

async fn list(State(app): State<Arc<App>>) -> Json<Value> {
    let pipelines: Vec<Value> = app
        .pipelines
        .values()
        .map(|p| {
            let s = p.current();
            let plan = s.plan();
            let spec = s.spec();
            let input = plan.node(spec.input);
            json!({
                "name": p.name,
                "description": plan.description,
                "infer": format!("/v1/pipelines/{}/infer", p.name),
                "inputs": { input.id.as_str(): {
                    "kind": input.spec.name,
                    "settings": s.input_settings(),
                    "max_rows": spec.max_rows,
                }},
                "output": plan.outlet_name(&spec.output),
                "fingerprint": s.fingerprint(),
                "max_batch": spec.max_batch,
                "max_wait_ms": spec.max_wait_ms,
            })
        })
        .collect();
    Json(json!({ "pipelines": pipelines }))
}

async fn infer(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let started = Instant::now();
    let Some(pipeline) = app.pipelines.get(&name).cloned() else {
        discard_body(&app, request.into_body()).await;
        let known: Vec<&str> = app.pipelines.keys().map(String::as_str).collect();
        // Unknown names share one label, so clients can't grow the metrics.
        app.metrics
            .answered("-", 404, started.elapsed().as_secs_f64());
        return error(
            StatusCode::NOT_FOUND,
            &format!(
                "no pipeline `{name}` is served here (served: {})",
                known.join(", ")
            ),
            None,
        );
    };
    let holds_body_back = expects_continue(request.headers());
    let body = request.into_body();
    let response = if pipeline.queue_full() {
        // Turned away before its body is parsed or kept, and the 503 leaves
        // at once. A client that asked `Expect: 100-continue` never sends
        // the body (it is never asked for; the connection closes after the
        // 503); any other body is read and dropped meanwhile, so its
        // connection stays usable.
        let mut busy = busy(&pipeline);
        if holds_body_back {
            busy.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        } else {
            tokio::spawn(async move { discard_body(&app, body).await });
        }
        busy
    } else {
        match read_body(&app, body).await {
            Ok(bytes) => answer(&pipeline, &bytes).await,
            Err(refused) => return refused,
        }
    };
    pipeline.answered(response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

/// The client waits for `100 Continue` before it sends its body.
fn expects_continue(headers: &header::HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// `503` with `Retry-After`: the queue of `pipeline` is full.
fn busy(pipeline: &Pipeline) -> Response {
    let mut busy = error(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!(
            "too many rows are waiting ({} is this pipeline's `serve.max_queue`); retry shortly",
            pipeline.current().spec().max_queue
        ),
        None,
    );
    busy.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    busy
}

/// The body of an answer (SPEC §7).
#[derive(serde::Serialize)]
struct Answered<'a> {
    pipeline: &'a str,
    fingerprint: &'a str,
    outputs: BTreeMap<String, &'a Value>,
}

/// Checks a request body, queues it and waits for its answer.
async fn answer(pipeline: &Pipeline, body: &[u8]) -> Response {
    let service = pipeline.current();
    let spec = service.spec();
    let input = service.plan().node(spec.input).id.as_str();
    // A place in the queue first: a request turned away costs no parsing.
    let Ok(place) = pipeline.queue.try_reserve() else {
        return busy(pipeline);
    };
    let numbers = service
        .number_rows()
        .and_then(|width| number_rows(body, input, width));
    let rows = match numbers {
        Some(numbers) => Rows::Numbers(numbers),
        None => {
            let request: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("the body is not valid JSON: {e}"),
                        None,
                    )
                }
            };
            match rows_of(request, input) {
                Ok(rows) => Rows::Json(rows),
                Err(e) => return client_error(StatusCode::BAD_REQUEST, e),
            }
        }
    };
    let field = || format!("inputs.{input}");
    if rows.len() > spec.max_rows {
        return client_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::new(
                field(),
                format!(
                    "{} rows is more than this pipeline takes in one request ({}); split it",
                    rows.len(),
                    spec.max_rows
                ),
            ),
        );
    }
    // The rows are checked where they are read, in the batch: a batch that
    // fails on a client's input is answered request by request, so one
    // client's mistake fails only its own request.
    // Then room for its rows: the bound is on the work waiting.
    if !pipeline.hold_rows(rows.len()) {
        return busy(pipeline);
    }
    let (tx, rx) = oneshot::channel();
    place.send(Job { rows, reply: tx });
    let deadline = std::time::Duration::from_millis(spec.timeout_ms);
    let Ok(answer) = tokio::time::timeout(deadline, rx).await else {
        // Dropping the receiver tells the batcher to drop the request if
        // its batch has not started.
        return error(
            StatusCode::GATEWAY_TIMEOUT,
            &format!(
                "no answer within {} ms (this pipeline's `serve.timeout_ms`); the service is busy or the request is too large",
                spec.timeout_ms
            ),
            None,
        );
    };
    match answer {
        Ok(Ok((output, fingerprint))) => Json(Answered {
            pipeline: &pipeline.name,
            fingerprint: &fingerprint,
            outputs: [(service.plan().outlet_name(&spec.output), &output)].into(),
        })
        .into_response(),
        Ok(Err(Failure::Client(e))) => {
            client_error(StatusCode::UNPROCESSABLE_ENTITY, e.within(&field()))
        }
        Ok(Err(Failure::Server(e))) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the pipeline failed: {e}"),
            None,
        ),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the request was dropped by an internal error",
            None,
        ),
    }
}

/// The rows of a body `{"inputs": {"<input>": [[…], …]}}` whose rows are
/// all lists of `width` numbers that fit an f32, read as numbers; `None`
/// for any other body, which is then read as JSON values (which also words
/// whatever is wrong with it). A 32-image request: 0.2 ms so, 1.0 ms as
/// values (BENCHMARKS.md, "Serving under overload").
fn number_rows(body: &[u8], input: &str, width: usize) -> Option<NumberRows> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        inputs: BTreeMap<String, Vec<Vec<f64>>>,
    }
    let Body { mut inputs } = serde_json::from_slice(body).ok()?;
    let rows = inputs.remove(input)?;
    if !inputs.is_empty() || rows.is_empty() || width == 0 {
        return None;
    }
    let mut values = Vec::with_capacity(rows.len() * width);
    for row in rows {
        if row.len() != width {
            return None;
        }
        // As a JSON number cell is read: to f64, then to f32, which must be
        // finite.
        for v in row {
            let v = v as f32;
            if !v.is_finite() {
                return None;
            }
            values.push(v);
        }
    }
    Some(NumberRows { width, values })
}

/// The rows under `inputs.<input>` of a request body: a list, or one
/// object as one row (taken out of the body, not copied).
pub fn rows_of(request: Value, input: &str) -> Result<Vec<Value>, RequestError> {
    let example = || format!("send `{{\"inputs\": {{\"{input}\": [ ...rows... ]}}}}`");
    let Value::Object(mut top) = request else {
        return Err(RequestError::new(
            "",
            format!("the body should be an object: {}", example()),
        ));
    };
    if let Some(other) = top.keys().find(|k| *k != "inputs") {
        return Err(RequestError::new(
            other.as_str(),
            format!("unknown key: {}", example()),
        ));
    }
    let Some(inputs) = top.remove("inputs") else {
        return Err(RequestError::new(
            "inputs",
            format!("missing: {}", example()),
        ));
    };
    let Value::Object(mut inputs) = inputs else {
        return Err(RequestError::new(
            "inputs",
            format!("should be an object: {}", example()),
        ));
    };
    if let Some(other) = inputs.keys().find(|k| *k != input) {
        return Err(RequestError::new(
            format!("inputs.{other}"),
            format!("this pipeline takes requests at `{input}` only"),
        ));
    }
    match inputs.remove(input) {
        None => Err(RequestError::new(
            format!("inputs.{input}"),
            format!("missing: {}", example()),
        )),
        Some(Value::Array(rows)) => Ok(rows),
        Some(row @ Value::Object(_)) => Ok(vec![row]),
        Some(_) => Err(RequestError::new(
            format!("inputs.{input}"),
            "should be a list of rows (objects, or lists of numbers)",
        )),
    }
}

fn client_error(status: StatusCode, e: RequestError) -> Response {
    let field = (!e.field.is_empty()).then_some(e.field.as_str());
    error(status, &e.message, field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bodies_of_whole_number_rows_are_read_as_numbers() {
        let read = |body: &str| number_rows(body.as_bytes(), "x", 2);
        assert_eq!(
            read(r#"{"inputs": {"x": [[1, 2.5], [-3e2, 0]]}}"#),
            Some(NumberRows {
                width: 2,
                values: vec![1.0, 2.5, -300.0, 0.0]
            })
        );
        // Everything else goes to the JSON path, which answers it as before.
        for other in [
            r#"{"inputs": {"x": [[1, null]]}}"#,
            r#"{"inputs": {"x": [[1, 2], [3]]}}"#,
            r#"{"inputs": {"x": [[1, 2, 3]]}}"#,
            r#"{"inputs": {"x": [{"a": 1, "b": 2}]}}"#,
            r#"{"inputs": {"x": {"a": 1, "b": 2}}}"#,
            r#"{"inputs": {"x": []}}"#,
            r#"{"inputs": {"x": [[1, 2]], "y": [[1, 2]]}}"#,
            r#"{"inputs": {"y": [[1, 2]]}}"#,
            r#"{"inputs": {"x": [[1, 2]]}, "extra": 1}"#,
            r#"{"inputs": {"x": [[1e39, 2]]}}"#,
            r#"{"inputs": {"x": [["1", 2]]}}"#,
            r#"{"inputs": {"x": [[1, 2]]"#,
        ] {
            assert_eq!(read(other), None, "{other}");
        }
    }
}
