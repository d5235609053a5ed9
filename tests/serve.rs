//! `kiln serve` driven for real: a child process on a free port, HTTP
//! requests over loopback, answers compared with what `kiln run` gives.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{assert_exit, kiln, text, workspace, Running};

/// `kiln serve` on a free port, and its address.
pub(crate) struct Server {
    process: Running,
    pub(crate) addr: String,
}

impl Server {
    pub(crate) fn start(dir: &Path, args: &[&str]) -> Server {
        Self::start_env(dir, args, &[])
    }

    /// As [`Server::start`], with extra environment variables.
    pub(crate) fn start_env(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Server {
        let mut all = vec!["serve"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--addr", "127.0.0.1:0", "--jobs", "2"]);
        let mut process = Running::start_env(dir, &all, env);
        let line = process.wait_for("listening on http://");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .expect("an address")
            .to_string();
        Server { process, addr }
    }

    /// What it printed up to the listening line.
    pub(crate) fn log(&self) -> String {
        self.process.seen().join("\n")
    }

    pub(crate) fn wait_for(&mut self, text: &str) -> String {
        self.process.wait_for(text)
    }

    fn post(&self, path: &str, body: &[u8]) -> (u16, Value) {
        request(&self.addr, "POST", path, body)
    }

    pub(crate) fn get(&self, path: &str) -> (u16, String) {
        let (status, body) = raw(&self.addr, "GET", path, b"");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    pub(crate) fn infer(&self, rows: Value) -> (u16, Value) {
        infer_at(&self.addr, rows)
    }
}

/// Asks the iris pipeline served at `addr` about `rows`.
fn infer_at(addr: &str, rows: Value) -> (u16, Value) {
    request(
        addr,
        "POST",
        "/v1/pipelines/iris-mlp/infer",
        json!({ "inputs": { "request": rows } })
            .to_string()
            .as_bytes(),
    )
}

/// One HTTP/1.1 exchange on a fresh connection: status and body.
fn raw(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let (status, _, body) = exchange(addr, method, path, "", body);
    (status, body)
}

/// One HTTP/1.1 exchange with extra header lines (each ending in `\r\n`):
/// status, response head and body.
pub(crate) fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading a large body.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a full response");
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, head, out[split + 4..].to_vec())
}

fn request(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let (status, body) = raw(addr, method, path, body);
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("a JSON body, got {:?}", String::from_utf8_lossy(&body)));
    (status, json)
}

/// The four measurements of every flower in `data/iris.csv`.
fn iris_rows(dir: &Path) -> Vec<Vec<f64>> {
    let text = fs::read_to_string(dir.join("data/iris.csv")).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(',').take(4).map(|v| v.parse().unwrap()).collect())
        .collect()
}

fn labels(answer: &Value) -> Vec<String> {
    answer["outputs"]["label.classes"]
        .as_array()
        .unwrap_or_else(|| panic!("rows in {answer}"))
        .iter()
        .map(|r| r["class"].as_str().unwrap().to_string())
        .collect()
}

/// Each row in a request of its own, from `threads` threads at once (so
/// they are batched together and split back): each row's label, in order.
fn labels_one_row_a_request(addr: &str, threads: usize, rows: Vec<Value>) -> Vec<String> {
    let rows = std::sync::Arc::new(rows);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (addr, rows) = (addr.to_string(), rows.clone());
            std::thread::spawn(move || {
                (t..rows.len())
                    .step_by(threads)
                    .map(|i| {
                        let (status, answer) = infer_at(&addr, json!([rows[i]]));
                        assert_eq!(status, 200, "{answer}");
                        (i, labels(&answer).remove(0))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut labelled = vec![String::new(); rows.len()];
    for h in handles {
        for (i, label) in h.join().unwrap() {
            labelled[i] = label;
        }
    }
    labelled
}

#[test]
fn served_labels_match_what_kiln_run_predicts() {
    let ws = workspace();
    let rows = iris_rows(ws.path());
    assert_eq!(rows.len(), 150);
    // `kiln run` on the same rows, through the same nodes, written to a CSV.
    let pipeline = fs::read_to_string(ws.path().join("iris-mlp.yaml")).unwrap();
    let example = "example: [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]";
    assert!(pipeline.contains(example));
    let with_rows = pipeline
        .replace(example, &format!("example: {}", json!(rows)))
        .replace(
            "outputs: [eval.metrics, fit.metrics]",
            "  label_csv:\n    kind: sink.csv\n    inputs: { data: label }\n    with: { path: labels.csv }\noutputs: [eval.metrics, fit.metrics]",
        );
    fs::write(ws.path().join("iris-rows.yaml"), with_rows).unwrap();
    assert_exit(
        &kiln(ws.path(), &["run", "iris-rows.yaml", "--out", "ran"]),
        0,
    );
    let ran: Vec<String> = fs::read_to_string(ws.path().join("ran/labels.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(String::from)
        .collect();
    assert_eq!(ran.len(), 150);

    // `kiln run --input` answers through the serve path: the same labels.
    fs::write(
        ws.path().join("rows.json"),
        json!({ "inputs": { "request": rows } }).to_string(),
    )
    .unwrap();
    let out = kiln(
        ws.path(),
        &[
            "run",
            "iris-mlp.yaml",
            "--input",
            "rows.json",
            "--out",
            "answered",
        ],
    );
    assert_exit(&out, 0);
    let metrics: Value =
        serde_json::from_str(&fs::read_to_string(ws.path().join("answered/metrics.json")).unwrap())
            .unwrap();
    assert_eq!(labels(&json!({ "outputs": metrics })), ran);

    let server = Server::start(ws.path(), &["iris-mlp.yaml"]);
    // All rows in one request.
    let (status, answer) = server.infer(json!(rows));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(labels(&answer), ran);
    assert_eq!(answer["fingerprint"].as_str().unwrap().len(), 16);
    // One row per request, 150 at once from 10 threads: batched together,
    // split back, each still gets its own flower's label.
    let one_by_one =
        labels_one_row_a_request(&server.addr, 10, rows.iter().map(|r| json!(r)).collect());
    for (i, label) in one_by_one.iter().enumerate() {
        assert_eq!(label, &ran[i], "row {i}");
    }
    // Iris is easy: the model gets the training flowers almost all right.
    let species: Vec<String> = fs::read_to_string(ws.path().join("data/iris.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.rsplit(',').next().unwrap().to_string())
        .collect();
    let right = species.iter().zip(&ran).filter(|(a, b)| a == b).count();
    assert!(right >= 140, "{right} of 150 right");
}

#[test]
fn rows_read_as_numbers_answer_as_rows_read_as_json() {
    let ws = workspace();
    let rows = iris_rows(ws.path());
    let server = Server::start(ws.path(), &["iris-mlp.yaml"]);
    let columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"];
    let objects: Vec<Value> = rows
        .iter()
        .map(|r| {
            Value::Object(
                columns
                    .iter()
                    .zip(r)
                    .map(|(c, v)| (c.to_string(), json!(v)))
                    .collect(),
            )
        })
        .collect();
    // Lists of numbers are read as numbers; objects, and lists holding a
    // null, as JSON values: the same rows give the same outputs, bit for bit.
    let (status, as_numbers) = server.infer(json!(rows));
    assert_eq!(status, 200, "{as_numbers}");
    let (status, as_json) = server.infer(json!(objects));
    assert_eq!(status, 200, "{as_json}");
    assert_eq!(as_numbers["outputs"], as_json["outputs"]);
    let mut with_null = json!(rows);
    with_null[3][1] = Value::Null;
    let (status, answer) = server.infer(with_null);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["outputs"]["label.classes"][0],
        as_json["outputs"]["label.classes"][0]
    );
    // A bad list still gets the JSON path's words.
    let (status, answer) = server.infer(json!([[1.0, 2.0, 3.0]]));
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["field"], "inputs.request[0]", "{answer}");
    // Requests of both forms at once, batched together: each gets its own
    // flower's label.
    let labelled = labels(&as_json);
    let mixed = (0..150)
        .map(|i| {
            if (i / 6) % 2 == 0 {
                json!(rows[i])
            } else {
                objects[i].clone()
            }
        })
        .collect();
    for (i, label) in labels_one_row_a_request(&server.addr, 6, mixed)
        .iter()
        .enumerate()
    {
        assert_eq!(label, &labelled[i], "row {i}");
    }
}

#[test]
fn bad_requests_get_4xx_naming_the_field_and_the_server_keeps_answering() {
    let ws = workspace();
    let server = Server::start(ws.path(), &["iris-mlp.yaml"]);
    let path = "/v1/pipelines/iris-mlp/infer";
    let row = json!([5.1, 3.5, 1.4, 0.2]);
    let cases: Vec<(&str, Vec<u8>, u16, Option<&str>)> = vec![
        ("malformed JSON", b"{\"inputs\": {\"request\": [[1, 2".to_vec(), 400, None),
        ("not JSON at all", b"sepal_length=5.1".to_vec(), 400, None),
        ("empty body", Vec::new(), 400, None),
        ("a list, not an object", b"[1, 2, 3]".to_vec(), 400, Some("")),
        ("no inputs", json!({"rows": [row]}).to_string().into_bytes(), 400, Some("rows")),
        ("inputs not an object", json!({"inputs": [row]}).to_string().into_bytes(), 400, Some("inputs")),
        ("wrong input name", json!({"inputs": {"requests": [row]}}).to_string().into_bytes(), 400, Some("inputs.requests")),
        ("rows not a list", json!({"inputs": {"request": 5}}).to_string().into_bytes(), 400, Some("inputs.request")),
        ("no rows", json!({"inputs": {"request": []}}).to_string().into_bytes(), 422, Some("inputs.request")),
        ("unknown column", json!({"inputs": {"request": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_widht": 0.2}]}}).to_string().into_bytes(), 422, Some("inputs.request[0].petal_widht")),
        ("missing column", json!({"inputs": {"request": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4}]}}).to_string().into_bytes(), 422, Some("inputs.request[0].petal_width")),
        ("too few values", json!({"inputs": {"request": [row, [1, 2, 3]]}}).to_string().into_bytes(), 422, Some("inputs.request[1]")),
        ("too many values", json!({"inputs": {"request": [[1, 2, 3, 4, 5]]}}).to_string().into_bytes(), 422, Some("inputs.request[0]")),
        ("a string for a number", json!({"inputs": {"request": [[1, "2", 3, 4]]}}).to_string().into_bytes(), 422, Some("inputs.request[0][1]")),
        ("a boolean for a number", json!({"inputs": {"request": [{"sepal_length": true, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]}}).to_string().into_bytes(), 422, Some("inputs.request[0].sepal_length")),
        ("a number too big for f32", b"{\"inputs\": {\"request\": [[1e300, 2, 3, 4]]}}".to_vec(), 422, Some("inputs.request[0][0]")),
        ("a row that is a number", json!({"inputs": {"request": [7]}}).to_string().into_bytes(), 422, Some("inputs.request[0]")),
        ("too many rows", json!({"inputs": {"request": vec![row.clone(); 1025]}}).to_string().into_bytes(), 413, Some("inputs.request")),
        ("body over the size limit", vec![b' '; 5 * 1024 * 1024], 413, None),
    ];
    assert!(cases.len() >= 15);
    for (what, body, status, field) in &cases {
        let (got, answer) = server.post(path, body);
        assert_eq!(got, *status, "{what}: {answer}");
        let message = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: {answer}"));
        assert!(!message.is_empty(), "{what}");
        if let Some(f) = field {
            if f.is_empty() {
                assert!(answer.get("field").is_none(), "{what}: {answer}");
            } else {
                assert_eq!(answer["field"], *f, "{what}: {answer}");
            }
        }
    }
    // Wrong pipeline, wrong route, wrong method.
    let (status, answer) = server.post("/v1/pipelines/iris/infer", b"{}");
    assert_eq!(status, 404);
    assert!(
        answer["error"].as_str().unwrap().contains("iris-mlp"),
        "{answer}"
    );
    assert_eq!(request(&server.addr, "GET", "/nope", b"").0, 404);
    assert_eq!(request(&server.addr, "GET", path, b"").0, 405);
    // Still answering, and the metrics counted the errors.
    assert_eq!(server.infer(json!([row])).0, 200);
    assert_eq!(
        server.get("/healthz"),
        (200, json!({"status": "ok"}).to_string())
    );
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics.contains("kiln_requests_total{pipeline=\"iris-mlp\",status=\"200\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kiln_request_errors_total{pipeline=\"iris-mlp\",status=\"422\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kiln_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(metrics.contains("kiln_batch_rows_bucket"), "{metrics}");
}

#[test]
fn lists_pipelines_with_their_inputs_and_fingerprint() {
    let ws = workspace();
    let server = Server::start(ws.path(), &["iris-mlp.yaml"]);
    let (status, body) = server.get("/v1/pipelines");
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    let p = &list["pipelines"][0];
    assert_eq!(p["name"], "iris-mlp");
    assert_eq!(p["output"], "label.classes");
    assert_eq!(
        p["inputs"]["request"]["settings"]["columns"],
        json!(["sepal_length", "sepal_width", "petal_length", "petal_width"])
    );
    let (_, answer) = server.infer(json!([[5.1, 3.5, 1.4, 0.2]]));
    assert_eq!(answer["fingerprint"], p["fingerprint"]);
}

#[test]
fn watch_swaps_a_changed_model_in_without_failing_a_request() {
    let ws = workspace();
    let mut server = Server::start(ws.path(), &["iris-mlp.yaml", "--watch"]);
    let (_, first) = server.infer(json!([[5.1, 3.5, 1.4, 0.2]]));
    let old = first["fingerprint"].as_str().unwrap().to_string();
    // A client loops requests through the change.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let addr = server.addr.clone();
    let client = {
        let (stop, failures) = (stop.clone(), failures.clone());
        std::thread::spawn(move || {
            let mut seen: Vec<String> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let body = json!({"inputs": {"request": [[6.7, 3.0, 5.2, 2.3]]}}).to_string();
                let (status, answer) = request(
                    &addr,
                    "POST",
                    "/v1/pipelines/iris-mlp/infer",
                    body.as_bytes(),
                );
                if status != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let fp = answer["fingerprint"].as_str().unwrap().to_string();
                if seen.last() != Some(&fp) {
                    seen.push(fp);
                }
            }
            seen
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let file = ws.path().join("iris-mlp.yaml");
    let text = fs::read_to_string(&file).unwrap();
    fs::write(&file, text.replace("lr: 0.01", "lr: 0.02")).unwrap();
    let swapped = server.wait_for("now serving model");
    std::thread::sleep(Duration::from_millis(300));
    // An invalid edit: reported, the new model keeps serving.
    let current = fs::read_to_string(&file).unwrap();
    fs::write(
        &file,
        current.replace("kind: infer.predict", "kind: infer.predikt"),
    )
    .unwrap();
    server.wait_for("still serving model");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let seen = client.join().unwrap();
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    assert_eq!(seen.len(), 2, "fingerprints seen in order: {seen:?}");
    assert_eq!(seen[0], old);
    assert!(swapped.contains(&seen[1]), "{swapped} vs {seen:?}");
    let (status, answer) = server.infer(json!([[5.1, 3.5, 1.4, 0.2]]));
    assert_eq!(status, 200);
    assert_eq!(answer["fingerprint"], seen[1]);
}

#[test]
fn one_service_answers_for_several_pipelines() {
    let ws = workspace();
    let server = Server::start(
        ws.path(),
        &["iris-mlp.yaml", "penguins-mlp.yaml", "digits-cnn.yaml"],
    );
    let (_, body) = server.get("/v1/pipelines");
    let list: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = list["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["digits-cnn", "iris-mlp", "penguins-mlp"]);
    assert_eq!(
        server.infer(json!([[5.1, 3.5, 1.4, 0.2]])).1["outputs"]["label.classes"][0]["class"],
        "setosa"
    );
    // Text columns by name, a missing value as null.
    let (status, answer) = server.post(
        "/v1/pipelines/penguins-mlp/infer",
        json!({"inputs": {"request": [
            {"island": "Torgersen", "bill_length_mm": 39.1, "bill_depth_mm": 18.7, "flipper_length_mm": 181, "body_mass_g": 3750, "sex": "male"},
            ["Biscoe", 50.0, 15.2, 218, 5700, null]
        ]}})
        .to_string()
        .as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["outputs"]["species.classes"],
        json!([{"class": "Adelie"}, {"class": "Gentoo"}])
    );
    let (status, answer) = server.post(
        "/v1/pipelines/penguins-mlp/infer",
        json!({"inputs": {"request": [["Mars", 50.0, 15.2, 218, 5700, "male"]]}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 422);
    assert_eq!(answer["field"], "inputs.request[0][0]");
    // Images as 64 grey levels: the first two digits of the data set.
    let digits: Vec<Vec<f64>> = {
        let mut text = String::new();
        flate2::read::GzDecoder::new(fs::File::open(ws.path().join("data/digits.csv.gz")).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        text.lines()
            .take(10)
            .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
            .collect()
    };
    let pixels: Vec<Vec<f64>> = digits.iter().map(|d| d[..64].to_vec()).collect();
    let (status, answer) = server.post(
        "/v1/pipelines/digits-cnn/infer",
        json!({"inputs": {"request": pixels}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");
    let predicted: Vec<f64> = answer["outputs"]["digit.classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| match &r["class"] {
            Value::String(s) => s.parse().unwrap(),
            other => other.as_f64().unwrap(),
        })
        .collect();
    let truth: Vec<f64> = digits.iter().map(|d| d[64]).collect();
    let right = predicted.iter().zip(&truth).filter(|(a, b)| a == b).count();
    assert!(right >= 9, "{predicted:?} vs {truth:?}");
}

#[test]
fn refuses_pipelines_it_cannot_serve() {
    let ws = workspace();
    // No `serve:` block: a usage error.
    let out = kiln(
        ws.path(),
        &["serve", "iris-prep.yaml", "--addr", "127.0.0.1:0"],
    );
    assert_exit(&out, 2);
    assert!(text(&out).1.contains("no `serve:` block"));
    // The address is taken: a run-time error.
    let server = Server::start(ws.path(), &["iris-mlp.yaml"]);
    let out = kiln(
        ws.path(),
        &["serve", "iris-mlp.yaml", "--addr", &server.addr],
    );
    assert_exit(&out, 1);
    assert!(
        text(&out).1.contains("cannot listen on"),
        "{}",
        text(&out).1
    );
}

#[cfg(unix)]
#[test]
fn sigterm_stops_the_server_cleanly() {
    let ws = workspace();
    let mut server = Server::start(ws.path(), &["iris-mlp.yaml"]);
    assert_eq!(server.infer(json!([[5.1, 3.5, 1.4, 0.2]])).0, 200);
    assert_eq!(server.process.signal("TERM"), Some(0));
    server.wait_for("stopped");
}

#[test]
fn watch_serves_a_head_trained_on_new_encoder_weights() {
    // The stale-weights case through `serve --watch`: the served head is
    // trained on embeddings; new weights in the encoder's folder re-embed,
    // re-train and swap the new head in.
    let ws = crate::content::workspace_with_model();
    let file = ws.path().join("embed.yaml");
    let mut text = fs::read_to_string(&file).unwrap();
    text.push_str(
        "  net: { kind: model.mlp, with: { hidden: [8] } }\n  \
         fit: { kind: train.supervised, inputs: { model: net, train: embed }, with: { epochs: 3, batch_size: 4 } }\n  \
         request: { kind: source.request, with: { columns: 384 } }\n  \
         label: { kind: infer.predict, inputs: { model: fit.model, data: request } }\n\
         serve: { input: request, output: label }\n",
    );
    fs::write(&file, text).unwrap();
    let mut server = Server::start(ws.path(), &["embed.yaml", "--watch"]);
    let body = json!({ "inputs": { "request": [vec![0.05; 384]] } }).to_string();
    let (status, before) = server.post("/v1/pipelines/embed/infer", body.as_bytes());
    assert_eq!(status, 200, "{before}");

    crate::content::halve_word_embeddings(ws.path());
    let swapped = server.wait_for("now serving model");
    let (status, after) = server.post("/v1/pipelines/embed/infer", body.as_bytes());
    assert_eq!(status, 200, "{after}");
    assert_ne!(before["fingerprint"], after["fingerprint"]);
    assert!(
        swapped.contains(after["fingerprint"].as_str().unwrap()),
        "{swapped}"
    );
}

#[test]
fn run_reports_a_request_source_without_examples_as_serve_only() {
    let ws = workspace();
    let file = ws.path().join("iris-mlp.yaml");
    let yaml = fs::read_to_string(&file).unwrap();
    let example = "      example: [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]\n";
    assert!(yaml.contains(example));
    fs::write(&file, yaml.replace(example, "")).unwrap();
    let out = kiln(ws.path(), &["run", "iris-mlp.yaml", "--out", "out"]);
    assert_exit(&out, 0);
    let s = crate::common::statuses(&ws.path().join("out/run.json"));
    for node in ["request", "request_scaled", "request_scores", "label"] {
        assert_eq!(s[node].0, "serve-only", "{node}: {s:?}");
    }
    assert_eq!(s.values().filter(|(st, _)| st == "ran").count(), 9, "{s:?}");
    let (stdout, _) = text(&out);
    let row = stdout.lines().find(|l| l.starts_with("request_scores "));
    assert!(row.is_some_and(|r| r.contains(" serve-only ")), "{stdout}");
}
