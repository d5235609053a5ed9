//! The OpenAI-compatible routes (SPEC §7): `POST /v1/completions`,
//! `POST /v1/chat/completions` and `GET /v1/models`, for served pipelines
//! whose output is an `infer.generate` node. `stream: true` answers with
//! server-sent events as tokens are decoded, then `data: [DONE]`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as Sse, Sse as SseBody};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_nodes::llm::generate::{Event, Finished};
use kiln_nodes::llm::sample::Sampling;
use kiln_nodes::llm::template::Message;
use serde_json::{json, Map, Value};

use super::app::{error, App};
use super::llm::{Ask, Generator};
use super::pipeline::Pipeline;

/// Which route a request came by.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Completions,
    Chat,
}

/// A request refused: status, field and sentence.
struct Refusal {
    status: StatusCode,
    field: Option<String>,
    message: String,
}

fn bad(field: &str, message: impl Into<String>) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        field: Some(field.to_string()),
        message: message.into(),
    }
}

impl Refusal {
    fn response(&self) -> Response {
        let mut r = error(self.status, &self.message, self.field.as_deref());
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        r
    }
}

/// `POST /v1/completions`.
pub async fn completions(State(app): State<Arc<App>>, body: Bytes) -> Response {
    answer(&app, Route::Completions, &body).await
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(State(app): State<Arc<App>>, body: Bytes) -> Response {
    answer(&app, Route::Chat, &body).await
}

/// `GET /v1/models`: the servable language-model pipelines.
pub async fn models(State(app): State<Arc<App>>) -> Json<Value> {
    let data: Vec<Value> = app
        .pipelines
        .values()
        .filter_map(|p| {
            let g = p.generator()?;
            Some(json!({
                "id": p.name,
                "object": "model",
                "created": 0,
                "owned_by": "kiln",
                "description": g.lm.name,
                "context_length": g.lm.context(),
            }))
        })
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

async fn answer(app: &App, route: Route, body: &[u8]) -> Response {
    let started = Instant::now();
    let (pipeline, response) = match respond(app, route, body).await {
        Ok((p, r)) => (Some(p), r),
        Err((p, refusal)) => (p, refusal.response()),
    };
    let (status, seconds) = (response.status().as_u16(), started.elapsed().as_secs_f64());
    match pipeline {
        Some(p) => p.answered(status, seconds),
        None => app.metrics.answered("-", status, seconds),
    }
    response
}

type Refused = (Option<Arc<Pipeline>>, Refusal);

async fn respond(
    app: &App,
    route: Route,
    body: &[u8],
) -> Result<(Arc<Pipeline>, Response), Refused> {
    let text = std::str::from_utf8(body)
        .map_err(|e| (None, bad("", format!("the body is not UTF-8 text: {e}"))))?;
    let request: Value = serde_json::from_str(text)
        .map_err(|e| (None, bad("", format!("the body is not valid JSON: {e}"))))?;
    let Value::Object(request) = request else {
        return Err((None, bad("", "the body should be a JSON object")));
    };
    let name = match request.get("model") {
        Some(Value::String(m)) => m.clone(),
        Some(_) => {
            return Err((
                None,
                bad("model", "should be a string: the pipeline's name"),
            ))
        }
        None => {
            return Err((
                None,
                bad(
                    "model",
                    "missing: name the pipeline to use (GET /v1/models lists them)",
                ),
            ))
        }
    };
    let found = app
        .pipelines
        .get(&name)
        .and_then(|p| Some((p.clone(), p.generator()?)));
    let Some((pipeline, generator)) = found else {
        let served: Vec<&str> = app
            .pipelines
            .values()
            .filter(|p| p.generator().is_some())
            .map(|p| p.name.as_str())
            .collect();
        return Err((
            None,
            Refusal {
                status: StatusCode::NOT_FOUND,
                field: Some("model".into()),
                message: format!(
                    "no language model `{name}` is served here (served: {})",
                    if served.is_empty() {
                        "none".to_string()
                    } else {
                        served.join(", ")
                    }
                ),
            },
        ));
    };
    let refuse = |r: Refusal| (Some(pipeline.clone()), r);
    let parsed = parse(&generator, route, &request).map_err(refuse)?;
    let max_queue = pipeline.current().spec().max_queue;
    if generator.waiting() >= max_queue {
        return Err(refuse(Refusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            field: None,
            message: format!(
                "too many requests are waiting ({max_queue} is this pipeline's `serve.max_queue`); retry shortly"
            ),
        }));
    }
    let Parsed {
        ask,
        stream,
        include_usage,
    } = parsed;
    let prompt_tokens = ask.prompt.len();
    let events = generator.start(ask);
    let head = Head {
        id: new_id(route),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model: name,
        route,
    };
    if stream {
        let response = streamed(head, events, include_usage, prompt_tokens);
        return Ok((pipeline, response));
    }
    let timeout = std::time::Duration::from_millis(pipeline.current().spec().timeout_ms);
    let done = tokio::time::timeout(timeout, until_done(events)).await;
    match done {
        Ok(Some(finished)) => Ok((pipeline, Json(head.whole(&finished)).into_response())),
        Ok(None) => Err(refuse(Refusal {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            field: None,
            message: "the generation ended without an answer".into(),
        })),
        Err(_) => Err(refuse(Refusal {
            status: StatusCode::GATEWAY_TIMEOUT,
            field: None,
            message: format!(
                "no answer within {} ms (this pipeline's `serve.timeout_ms`); ask for fewer tokens or stream",
                timeout.as_millis()
            ),
        })),
    }
}

async fn until_done(mut events: tokio::sync::mpsc::UnboundedReceiver<Event>) -> Option<Finished> {
    while let Some(event) = events.recv().await {
        if let Event::Done(f) = event {
            return Some(f);
        }
    }
    None
}

/// A request's checked parts.
struct Parsed {
    ask: Ask,
    stream: bool,
    include_usage: bool,
}

fn parse(g: &Generator, route: Route, r: &Map<String, Value>) -> Result<Parsed, Refusal> {
    let prompt_text = match route {
        Route::Completions => match r.get("prompt") {
            Some(Value::String(p)) => p.clone(),
            Some(Value::Array(list)) if list.len() == 1 && list[0].is_string() => {
                list[0].as_str().unwrap_or_default().to_string()
            }
            Some(Value::Array(_)) => {
                return Err(bad(
                    "prompt",
                    "give one prompt (a string); send several requests for several prompts",
                ))
            }
            Some(_) => return Err(bad("prompt", "should be a string")),
            None => return Err(bad("prompt", "missing: the text to continue")),
        },
        Route::Chat => {
            let messages = messages(r.get("messages"))?;
            g.chat(&messages).map_err(|e| bad("messages", e))?
        }
    };
    let prompt_field = if route == Route::Chat {
        "messages"
    } else {
        "prompt"
    };
    let prompt = g.tokens(&prompt_text).map_err(|e| bad(prompt_field, e))?;
    let d = &g.defaults;
    let context = g.lm.context();
    let max_tokens = match route {
        Route::Chat => count(r, "max_completion_tokens")?.or(count(r, "max_tokens")?),
        Route::Completions => count(r, "max_tokens")?,
    }
    .unwrap_or(d.max_tokens);
    if max_tokens == 0 || max_tokens >= context {
        return Err(bad(
            "max_tokens",
            format!(
                "should be between 1 and {} (the model's context is {context} tokens)",
                context - 1
            ),
        ));
    }
    if let Some(n) = count(r, "n")? {
        if n != 1 {
            return Err(bad("n", "only one choice per request is generated (n: 1)"));
        }
    }
    let temperature = number(r, "temperature", 0.0, 2.0)?.unwrap_or(d.temperature);
    let top_p = number(r, "top_p", 0.0, 1.0)?.unwrap_or(d.top_p);
    if top_p <= 0.0 {
        return Err(bad("top_p", "should be above 0 and at most 1"));
    }
    let repetition_penalty =
        number(r, "repetition_penalty", 0.01, 10.0)?.unwrap_or(d.repetition_penalty);
    let top_k = count(r, "top_k")?.unwrap_or(d.top_k);
    let seed = match r.get("seed") {
        None | Some(Value::Null) => g.seed,
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_i64().map(|s| s as u64))
            .ok_or_else(|| bad("seed", "should be an integer"))?,
    };
    let stop = match r.get("stop") {
        None | Some(Value::Null) => d.stop.clone().unwrap_or_default(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| bad(&format!("stop[{i}]"), "should be a non-empty string"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("stop", "should be a string or a list of strings")),
    };
    if stop.len() > 16 {
        return Err(bad("stop", "at most 16 stop texts"));
    }
    let stream = match r.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("stream", "should be true or false")),
    };
    let include_usage = r
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Parsed {
        ask: Ask {
            prompt,
            sampling: Sampling {
                temperature: temperature as f32,
                top_k,
                top_p: top_p as f32,
                repetition_penalty: repetition_penalty as f32,
                seed,
            },
            max_tokens,
            stop,
        },
        stream,
        include_usage,
    })
}

fn messages(value: Option<&Value>) -> Result<Vec<Message>, Refusal> {
    let Some(Value::Array(list)) = value else {
        return Err(bad(
            "messages",
            "should be a list of messages: [{\"role\": \"user\", \"content\": \"…\"}]",
        ));
    };
    if list.is_empty() {
        return Err(bad("messages", "is empty: give at least one message"));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let field = |f: &str| format!("messages[{i}].{f}");
            let Value::Object(m) = m else {
                return Err(bad(&format!("messages[{i}]"), "should be an object with `role` and `content`"));
            };
            let role = match m.get("role") {
                Some(Value::String(r)) if ["system", "user", "assistant", "developer"].contains(&r.as_str()) => {
                    if r == "developer" { "system".to_string() } else { r.clone() }
                }
                Some(Value::String(r)) => {
                    return Err(bad(&field("role"), format!("`{r}` is not a role: use system, user or assistant")))
                }
                _ => return Err(bad(&field("role"), "missing: system, user or assistant")),
            };
            let content = match m.get("content") {
                Some(Value::String(c)) => c.clone(),
                // Content parts: the text ones, joined.
                Some(Value::Array(parts)) => parts
                    .iter()
                    .enumerate()
                    .map(|(j, p)| match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                        (Some("text"), Some(t)) => Ok(t.to_string()),
                        _ => Err(bad(&format!("messages[{i}].content[{j}]"), "only text parts are understood: {\"type\": \"text\", \"text\": \"…\"}")),
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .join(""),
                _ => return Err(bad(&field("content"), "missing: the message's text")),
            };
            Ok(Message { role, content })
        })
        .collect()
}

fn count(r: &Map<String, Value>, field: &str) -> Result<Option<usize>, Refusal> {
    match r.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| bad(field, "should be a whole number, 0 or more")),
    }
}

fn number(r: &Map<String, Value>, field: &str, lo: f64, hi: f64) -> Result<Option<f64>, Refusal> {
    match r.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
            _ => Err(bad(field, format!("should be a number from {lo} to {hi}"))),
        },
    }
}

fn new_id(route: Route) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let prefix = if route == Route::Chat {
        "chatcmpl"
    } else {
        "cmpl"
    };
    format!("{prefix}-{:x}{n:x}", t & 0xffff_ffff_ffff)
}

/// What every answer and chunk of one request repeats.
struct Head {
    id: String,
    created: u64,
    model: String,
    route: Route,
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({ "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion })
}

impl Head {
    /// The whole answer.
    fn whole(&self, f: &Finished) -> Value {
        let choice = match self.route {
            Route::Chat => {
                json!({ "index": 0, "message": { "role": "assistant", "content": f.text },
                "logprobs": null, "finish_reason": f.reason.as_str() })
            }
            Route::Completions => json!({ "index": 0, "text": f.text, "logprobs": null,
                "finish_reason": f.reason.as_str() }),
        };
        json!({
            "id": self.id,
            "object": if self.route == Route::Chat { "chat.completion" } else { "text_completion" },
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage(f.prompt_tokens, f.tokens.len()),
        })
    }

    /// One streamed chunk: `text` (or the role, first), and the reason at the end.
    fn chunk(&self, text: Option<&str>, reason: Option<&str>) -> Value {
        let choice = match self.route {
            Route::Chat => {
                let delta = match text {
                    Some(t) => json!({ "content": t }),
                    None if reason.is_none() => json!({ "role": "assistant", "content": "" }),
                    None => json!({}),
                };
                json!({ "index": 0, "delta": delta, "logprobs": null, "finish_reason": reason })
            }
            Route::Completions => {
                json!({ "index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": reason })
            }
        };
        json!({
            "id": self.id,
            "object": if self.route == Route::Chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        })
    }

    fn usage_chunk(&self, f: &Finished) -> Value {
        json!({
            "id": self.id,
            "object": if self.route == Route::Chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage(f.prompt_tokens, f.tokens.len()),
        })
    }
}

/// The answer as server-sent events, a chunk per piece of text as it is
/// decoded. When the client goes, the stream (and its receiver) is dropped
/// and the sequence stops at its next token.
fn streamed(
    head: Head,
    events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    include_usage: bool,
    _prompt_tokens: usize,
) -> Response {
    enum State {
        Start,
        Going,
        Ended,
    }
    let head = Arc::new(head);
    let stream = futures_util::stream::unfold(
        (events, State::Start, Vec::<Sse>::new()),
        move |(mut events, mut state, mut queued)| {
            let head = head.clone();
            async move {
                loop {
                    if let Some(event) = queued.pop() {
                        return Some((Ok::<_, Infallible>(event), (events, state, queued)));
                    }
                    match state {
                        State::Start => {
                            state = State::Going;
                            if head.route == Route::Chat {
                                queued.push(data(&head.chunk(None, None)));
                            }
                        }
                        State::Ended => return None,
                        State::Going => match events.recv().await {
                            Some(Event::Text(t)) => queued.push(data(&head.chunk(Some(&t), None))),
                            Some(Event::Done(f)) => {
                                state = State::Ended;
                                // Popped from the end: pushed in reverse order.
                                queued.push(Sse::default().data("[DONE]"));
                                if include_usage {
                                    queued.push(data(&head.usage_chunk(&f)));
                                }
                                queued.push(data(&head.chunk(None, Some(f.reason.as_str()))));
                            }
                            None => {
                                state = State::Ended;
                                queued.push(Sse::default().data("[DONE]"));
                            }
                        },
                    }
                }
            }
        },
    );
    SseBody::new(stream).into_response()
}

fn data(v: &Value) -> Sse {
    Sse::default().data(v.to_string())
}
