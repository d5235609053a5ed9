//! A language model served for real (pipelines/chat-smollm2.yaml): the
//! OpenAI-compatible routes over loopback, streamed answers read as they
//! arrive by a client that decodes HTTP chunks and server-sent events,
//! concurrent streams, a client that leaves, and the bad-input battery.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{assert_exit, kiln, text, workspace};
use crate::serve::{exchange, Server};

fn served() -> (tempfile::TempDir, Server) {
    crate::common::data(&["smollm2"]);
    let ws = workspace();
    let server = Server::start(ws.path(), &["chat-smollm2.yaml"]);
    (ws, server)
}

fn post(addr: &str, path: &str, body: &Value) -> (u16, Value) {
    post_raw(addr, path, body.to_string().as_bytes())
}

fn post_raw(addr: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let (status, _, body) = exchange(addr, "POST", path, "", body);
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("JSON, got {:?}", String::from_utf8_lossy(&body)));
    (status, v)
}

fn chat(user: &str, max_tokens: usize) -> Value {
    json!({ "model": "chat-smollm2", "messages": [{ "role": "user", "content": user }],
            "max_tokens": max_tokens, "temperature": 0 })
}

/// A streamed answer, read event by event as the chunks arrive.
struct Events {
    reader: BufReader<TcpStream>,
}

impl Events {
    fn open(addr: &str, path: &str, body: &Value) -> Events {
        let body = body.to_string();
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut reader = BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_lowercase()
                .contains("content-type: text/event-stream"),
            "{head}"
        );
        assert!(
            head.to_lowercase().contains("transfer-encoding: chunked"),
            "{head}"
        );
        Events { reader }
    }

    /// The next HTTP chunk's bytes (`None` at the last, empty chunk).
    fn chunk(&mut self) -> Option<Vec<u8>> {
        let mut size = String::new();
        self.reader.read_line(&mut size).ok()?;
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        let mut data = vec![0; n + 2];
        self.reader.read_exact(&mut data).ok()?;
        (n > 0).then(|| data[..n].to_vec())
    }

    /// Every `data:` payload until the stream ends, in order.
    fn all(mut self) -> Vec<String> {
        let mut text = String::new();
        while let Some(c) = self.chunk() {
            text.push_str(std::str::from_utf8(&c).unwrap());
        }
        parse_sse(&text)
    }
}

fn parse_sse(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            e.lines()
                .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

/// The content pieces of a chat stream, checking its framing: the role
/// first, the finish reason in the last chunk, `[DONE]` last.
fn chat_pieces(events: &[String]) -> (Vec<String>, String) {
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let ids: std::collections::BTreeSet<&str> =
        chunks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "one id for the whole stream");
    let last = chunks.last().unwrap();
    let reason = last["choices"][0]["finish_reason"]
        .as_str()
        .unwrap()
        .to_string();
    let pieces = chunks[1..chunks.len() - 1]
        .iter()
        .map(|c| {
            assert!(c["choices"][0]["finish_reason"].is_null());
            assert_eq!(c["object"], "chat.completion.chunk");
            c["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    (pieces, reason)
}

#[test]
fn chat_completions_answer_with_usage_and_the_stream_spells_the_same_text() {
    let (_ws, server) = served();
    let (status, models) = crate::serve::Server::get(&server, "/v1/models");
    assert_eq!(status, 200);
    let models: Value = serde_json::from_str(&models).unwrap();
    assert_eq!(models["data"][0]["id"], "chat-smollm2");
    assert_eq!(models["data"][0]["context_length"], 8192);

    let (status, whole) = post(
        &server.addr,
        "/v1/chat/completions",
        &chat("List three prime numbers.", 24),
    );
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["model"], "chat-smollm2");
    let content = whole["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(whole["choices"][0]["message"]["role"], "assistant");
    // SmolLM2's template adds its default system turn: 35 tokens in all.
    assert_eq!(whole["usage"]["prompt_tokens"], 35);
    let completion = whole["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((1..=24).contains(&completion));
    assert_eq!(whole["usage"]["total_tokens"], 35 + completion);
    let reason = whole["choices"][0]["finish_reason"].as_str().unwrap();
    assert_eq!(reason == "length", completion == 24, "{whole}");
    assert!(
        content.contains('2') && content.contains('3'),
        "{content:?}"
    );

    let mut streamed = chat("List three prime numbers.", 24);
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({ "include_usage": true });
    let mut events = Events::open(&server.addr, "/v1/chat/completions", &streamed).all();
    // The usage chunk comes after the finish reason, before [DONE].
    let usage: Value = serde_json::from_str(&events.remove(events.len() - 2)).unwrap();
    assert_eq!(usage["usage"], whole["usage"]);
    let (pieces, stream_reason) = chat_pieces(&events);
    assert!(pieces.len() > 3, "token by token: {pieces:?}");
    assert_eq!(pieces.concat(), content);
    assert_eq!(stream_reason, reason);

    // The plain completion route, with a stop text.
    let (status, c) = post(
        &server.addr,
        "/v1/completions",
        &json!({
        "model": "chat-smollm2", "prompt": "The capital of France is", "max_tokens": 12,
        "temperature": 0, "stop": ["."] }),
    );
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["object"], "text_completion");
    let text = c["choices"][0]["text"].as_str().unwrap();
    assert!(text.contains("Paris") && !text.contains('.'), "{text:?}");
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
    assert_eq!(c["usage"]["prompt_tokens"], 5);

    // Seeded sampling: the same seed, the same text; another seed differs.
    let sampled = |seed: u64| {
        let mut body = chat("Tell me a short story about a dragon.", 32);
        body["temperature"] = json!(1.0);
        body["seed"] = json!(seed);
        post(&server.addr, "/v1/chat/completions", &body).1["choices"][0]["message"]["content"]
            .clone()
    };
    assert_eq!(sampled(7), sampled(7));
    assert_ne!(sampled(7), sampled(8));
}

#[test]
fn eight_concurrent_streams_each_equal_their_own_answer_and_a_client_that_leaves_frees_its_place() {
    let (_ws, server) = served();
    let users = [
        "What is the capital of France?",
        "Write one sentence about the sea.",
        "List three prime numbers.",
        "Explain what a neural network is in one sentence.",
        "Translate 'good morning' into Spanish.",
        "Name two colours of the rainbow.",
        "What does a cat say?",
        "Count from 1 to 5.",
    ];
    let alone: Vec<String> = users
        .iter()
        .map(|u| {
            let (_, v) = post(&server.addr, "/v1/chat/completions", &chat(u, 20));
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let addr = server.addr.clone();
    let together: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = users
            .iter()
            .map(|u| {
                let addr = addr.clone();
                s.spawn(move || {
                    let mut body = chat(u, 20);
                    body["stream"] = json!(true);
                    chat_pieces(&Events::open(&addr, "/v1/chat/completions", &body).all())
                        .0
                        .concat()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(together, alone, "batched streams change no answer");

    // Eight clients ask for 4 000 tokens each and leave after two chunks:
    // their sequences stop (the gauge falls to 0) and a ninth request is
    // answered at once.
    let leavers: Vec<Events> = (0..8)
        .map(|i| {
            let mut body = chat(users[i], 4000);
            body["stream"] = json!(true);
            body["temperature"] = json!(1.0);
            body["stop"] = json!([]);
            let mut e = Events::open(&addr, "/v1/chat/completions", &body);
            e.chunk().expect("a first chunk");
            e.chunk().expect("a second chunk");
            e
        })
        .collect();
    let generating = || {
        let (_, m) = server.get("/metrics");
        m.lines()
            .find(|l| l.starts_with("kiln_generate_sequences{") && l.contains("generating"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("no gauge in {m}"))
    };
    assert!(generating() > 0);
    drop(leavers);
    let started = Instant::now();
    while generating() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the leavers' sequences still run"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    let (status, v) = post(
        &addr,
        "/v1/chat/completions",
        &chat("Count from 1 to 5.", 8),
    );
    assert_eq!(status, 200, "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "answered after {:?}",
        started.elapsed()
    );
}

#[test]
fn bad_requests_get_4xx_naming_the_field() {
    let (_ws, server) = served();
    let a = &server.addr;
    let long = "word ".repeat(9000);
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({ "model": "nope", "messages": [{ "role": "user", "content": "hi" }] }),
            404,
            "model",
        ),
        (
            json!({ "messages": [{ "role": "user", "content": "hi" }] }),
            400,
            "model",
        ),
        (json!({ "model": "chat-smollm2" }), 400, "messages"),
        (
            json!({ "model": "chat-smollm2", "messages": [] }),
            400,
            "messages",
        ),
        (
            json!({ "model": "chat-smollm2", "messages": "hi" }),
            400,
            "messages",
        ),
        (
            json!({ "model": "chat-smollm2", "messages": [{ "role": "wizard", "content": "hi" }] }),
            400,
            "messages[0].role",
        ),
        (
            json!({ "model": "chat-smollm2", "messages": [{ "role": "user" }] }),
            400,
            "messages[0].content",
        ),
        (
            json!({ "model": "chat-smollm2", "messages": [{ "role": "user", "content": [{ "type": "image_url" }] }] }),
            400,
            "messages[0].content[0]",
        ),
        (
            json!({ "model": "chat-smollm2", "messages": [{ "role": "user", "content": long }] }),
            400,
            "messages",
        ),
        (
            json!({ "model": "chat-smollm2", "messages": [{ "role": "user", "content": "hi" }], "max_tokens": 100000 }),
            400,
            "max_tokens",
        ),
        (
            json!({ "model": "chat-smollm2", "messages": [{ "role": "user", "content": "hi" }], "max_tokens": -1 }),
            400,
            "max_tokens",
        ),
        (
            json!({ "model": "chat-smollm2", "messages": [{ "role": "user", "content": "hi" }], "temperature": 9 }),
            400,
            "temperature",
        ),
        (
            json!({ "model": "chat-smollm2", "messages": [{ "role": "user", "content": "hi" }], "top_p": 0 }),
            400,
            "top_p",
        ),
        (
            json!({ "model": "chat-smollm2", "messages": [{ "role": "user", "content": "hi" }], "n": 2 }),
            400,
            "n",
        ),
        (
            json!({ "model": "chat-smollm2", "messages": [{ "role": "user", "content": "hi" }], "stream": "yes" }),
            400,
            "stream",
        ),
        (
            json!({ "model": "chat-smollm2", "messages": [{ "role": "user", "content": "hi" }], "stop": [""] }),
            400,
            "stop[0]",
        ),
    ];
    for (body, status, field) in cases {
        let (got, v) = post(a, "/v1/chat/completions", &body);
        assert_eq!(
            (got, v["field"].as_str()),
            (status, Some(field)),
            "{body} -> {v}"
        );
        assert!(v["error"].as_str().is_some_and(|e| e.len() > 10), "{v}");
    }
    let (got, v) = post(a, "/v1/completions", &json!({ "model": "chat-smollm2" }));
    assert_eq!((got, v["field"].as_str()), (400, Some("prompt")));
    let (got, v) = post_raw(a, "/v1/chat/completions", b"{\"model\": \"chat-smollm2\", \"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}");
    assert_eq!(got, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("UTF-8"), "{v}");
    let (got, _) = post_raw(a, "/v1/chat/completions", b"{not json");
    assert_eq!(got, 400);
    // Still serving.
    let (status, _) = post(a, "/v1/chat/completions", &chat("Hi", 4));
    assert_eq!(status, 200);
}

#[test]
fn a_gguf_of_another_architecture_is_refused_before_running() {
    let ws = workspace();
    // A GGUF header: magic, version 3, no tensors, one key.
    let mut gguf = b"GGUF".to_vec();
    gguf.extend(3u32.to_le_bytes());
    gguf.extend(0u64.to_le_bytes());
    gguf.extend(1u64.to_le_bytes());
    let key = b"general.architecture";
    gguf.extend((key.len() as u64).to_le_bytes());
    gguf.extend(key);
    gguf.extend(8u32.to_le_bytes()); // a string
    gguf.extend(5u64.to_le_bytes());
    gguf.extend(b"qwen2");
    std::fs::write(ws.path().join("other.gguf"), gguf).unwrap();
    std::fs::write(
        ws.path().join("other.yaml"),
        "pipeline: other\nnodes:\n  lm:\n    kind: model.pretrained\n    with: { path: other.gguf }\n",
    )
    .unwrap();
    let out = kiln(ws.path(), &["validate", "other.yaml"]);
    assert_exit(&out, 2);
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("`qwen2` model") && stderr.contains("llama"),
        "{stderr}"
    );
    assert!(
        stderr.contains("other.yaml:5"),
        "the place is named: {stderr}"
    );
}

#[test]
fn a_gguf_cut_short_fails_with_a_sentence_not_a_panic() {
    let data = crate::common::data(&["smollm2"]);
    let ws = workspace();
    let whole =
        std::fs::read(data.join("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"))
            .unwrap();
    // The header and the first tensors, as an interrupted copy leaves it.
    std::fs::write(ws.path().join("cut.gguf"), &whole[..whole.len() * 3 / 5]).unwrap();
    std::fs::write(
        ws.path().join("cut.yaml"),
        "pipeline: cut\nnodes:\n  lm:\n    kind: model.pretrained\n    with: { path: cut.gguf }\n",
    )
    .unwrap();
    let out = kiln(ws.path(), &["run", "cut.yaml"]);
    assert_exit(&out, 1);
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("node `lm` (model.pretrained) failed")
            && stderr.contains("cut.gguf` ends inside tensor")
            && stderr.contains("cut short"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn the_chat_example_answers_and_scores_the_reviews_as_llama_cpp_does() {
    crate::common::data(&["smollm2"]);
    let ws = workspace();
    assert_exit(&kiln(ws.path(), &["run", "chat-smollm2.yaml"]), 0);
    let out = ws.path().join("runs/chat-smollm2");
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let ppl = metrics["perplexity.metrics"]["perplexity"]
        .as_f64()
        .unwrap();
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(
            crate::common::root().join("tests/fixtures/smollm2-llama-cpp.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let want = reference["perplexity"]["perplexity"].as_f64().unwrap();
    assert!(
        (ppl / want - 1.0).abs() <= 0.02,
        "perplexity {ppl}, llama.cpp {want}"
    );
    assert_eq!(metrics["perplexity.metrics"]["tokens_scored"], 1020);
    assert_eq!(metrics["answer.metrics"]["documents"], 2);
    let answers: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("answers.json")).unwrap()).unwrap();
    let primes = answers["texts"][1].as_str().unwrap();
    assert!(
        primes.contains('2') && primes.contains('3') && primes.contains('5'),
        "{primes:?}"
    );
    // The model is fingerprinted by content: a second run reuses everything.
    let again = kiln(ws.path(), &["run", "chat-smollm2.yaml"]);
    assert_exit(&again, 0);
    assert!(
        text(&again).0.contains("ran 0, reused 6"),
        "{}",
        text(&again).0
    );
}

#[test]
fn a_head_on_smollm2_embeddings_scores_beside_the_minilm_head() {
    crate::common::data(&["minilm", "smollm2"]);
    let ws = workspace();
    let run = kiln(ws.path(), &["run", "reviews-smollm2.yaml"]);
    assert_exit(&run, 0);
    let out = ws.path().join("runs/reviews-smollm2");
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    // The 973 held-out reviews of reviews-minilm.yaml; measured 0.7585
    // (the MiniLM head: 0.7595), chance is 0.50.
    assert_eq!(m["eval_lm.metrics"]["examples"], 973);
    let acc = m["eval_lm.metrics"]["accuracy"].as_f64().unwrap();
    assert!(acc >= 0.73, "SmolLM2 embeddings + head: {acc}");
    let rows = m["compare.report"]["models"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(names, ["fit_lm.model", "fit.model"]);
    assert_eq!(rows[0]["metric"].as_f64().unwrap(), acc);
    // 576 features from the language model, 384 from MiniLM: the heads
    // differ by that first layer (577 × 64 against 385 × 64 weights).
    let params = |r: &Value| r["params"].as_u64().unwrap();
    assert_eq!(params(&rows[0]) - params(&rows[1]), 192 * 64);
    // The model is fingerprinted by content: a second run reuses everything.
    let again = kiln(ws.path(), &["run", "reviews-smollm2.yaml"]);
    assert_exit(&again, 0);
    assert!(
        text(&again).0.contains("ran 0, reused 17"),
        "{}",
        text(&again).0
    );
}
