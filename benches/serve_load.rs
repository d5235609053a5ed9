//! Loopback load test of `kiln serve` (BENCHMARKS.md, "Serving").
//!
//! `cargo bench --bench serve_load` starts `kiln serve pipelines/iris-mlp.yaml`
//! on a free port and drives it from 32 keep-alive connections for 10 s, one
//! request in flight per connection, then prints requests/s and latency
//! percentiles. `cargo bench --bench serve_load -- URL BODY_FILE` drives any
//! other server the same way (the FastAPI peer, for the figure beside ours).
//! `CONNECTIONS` and `SECONDS` change the load.

mod http;

use http::exchange;
use std::io::BufReader;
use std::net::TcpStream;
use std::process::Child;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let connections = env_or("CONNECTIONS", 32);
    let seconds = env_or("SECONDS", 10);
    let mut server: Option<Child> = None;
    let (url, body) = match args.as_slice() {
        [url, body_file, ..] => (
            url.clone(),
            std::fs::read(body_file).expect("the body file is readable"),
        ),
        _ => {
            let (child, addr) = http::start_kiln("pipelines/iris-mlp.yaml");
            server = Some(child);
            let body = br#"{"inputs": {"request": [[6.7, 3.0, 5.2, 2.3]]}}"#.to_vec();
            (format!("http://{addr}/v1/pipelines/iris-mlp/infer"), body)
        }
    };
    let (addr, path) = split_url(&url);
    // Warm-up: a second of load, not counted.
    drive(&addr, &path, &body, connections, Duration::from_secs(1));
    let (latencies, errors, wall) = drive(
        &addr,
        &path,
        &body,
        connections,
        Duration::from_secs(seconds),
    );
    let mut sorted = latencies;
    sorted.sort();
    let pct = |p: f64| {
        sorted
            .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "{url}: {connections} connections, {seconds} s: {:.0} req/s, p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms, {} requests, {errors} errors",
        sorted.len() as f64 / wall,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        sorted.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        sorted.len(),
    );
    if let Some(mut child) = server {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    match rest.split_once('/') {
        Some((addr, path)) => (addr.to_string(), format!("/{path}")),
        None => (rest.to_string(), "/".to_string()),
    }
}

/// `connections` threads, each with one keep-alive connection and one
/// request in flight, for `duration`. Returns every latency, the error
/// count and the wall time.
fn drive(
    addr: &str,
    path: &str,
    body: &[u8],
    connections: u64,
    duration: Duration,
) -> (Vec<Duration>, usize, f64) {
    let request = [
        format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes(),
        body.to_vec(),
    ]
    .concat();
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (addr, request) = (addr.to_string(), request.clone());
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut errors = 0;
                let mut stream = BufReader::new(TcpStream::connect(&addr).expect("connects"));
                let _ = stream.get_ref().set_nodelay(true);
                while started.elapsed() < duration {
                    let t0 = Instant::now();
                    match exchange(&mut stream, &request) {
                        Ok(200) => latencies.push(t0.elapsed()),
                        Ok(_) => errors += 1,
                        Err(_) => {
                            errors += 1;
                            stream = BufReader::new(TcpStream::connect(&addr).expect("reconnects"));
                        }
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.join().expect("a load thread");
        all.extend(l);
        errors += e;
    }
    (all, errors, started.elapsed().as_secs_f64())
}
