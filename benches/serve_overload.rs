//! `kiln serve` offered more than it can answer (BENCHMARKS.md, "Serving
//! under overload"; issue #20).
//!
//! `cargo bench --bench serve_overload` starts `kiln serve
//! pipelines/mnist-compress.yaml` (requests of `ROWS` 784-pixel images, 32 by
//! default, so the server, not this client, is what runs out), measures its
//! capacity (closed loop, 32 connections, 5 s), its p99 at a quarter of it,
//! then offers `FACTOR` (4) times the capacity for `SECONDS` (10) at a fixed
//! rate from `CONNECTIONS` (256) keep-alive connections: latencies count from
//! when a request was due, not when it was sent, so a late client doesn't
//! hide the server's queueing. Printed: what was answered how, the p99 of
//! the accepted requests, how fast the 503s came, requests that got no
//! answer, and the server's resident memory over the run.

mod http;

use http::response;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let rows = env_or("ROWS", 32) as usize;
    let factor = env_or("FACTOR", 4) as f64;
    let seconds = env_or("SECONDS", 10);
    let connections = env_or("CONNECTIONS", 256) as usize;
    let (mut server, addr) = http::start_kiln("pipelines/mnist-compress.yaml");
    let path = "/v1/pipelines/mnist-compress/infer";
    let pixels: Vec<Vec<u32>> = (0..rows)
        .map(|r| (0..784).map(|i| ((i * 7 + r * 13) % 256) as u32).collect())
        .collect();
    let body = format!("{{\"inputs\": {{\"request\": {pixels:?}}}}}").into_bytes();
    let expect = env_or("EXPECT", 0) == 1;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
        body.len(),
        if expect { "Expect: 100-continue\r\n" } else { "" }
    )
    .into_bytes();
    let request = Arc::new(Request { head, body, expect });
    if expect {
        println!("clients send `Expect: 100-continue` and their body only after `100 Continue`");
    }

    let capacity = closed_loop(&addr, &request, 32, Duration::from_secs(5));
    println!("capacity (closed loop, 32 connections, 5 s): {capacity:.0} req/s of {rows} rows");
    let quiet = open_loop(
        &addr,
        &request,
        capacity / 4.0,
        32,
        Duration::from_secs(5),
        None,
    );
    quiet.print("a quarter of capacity");
    let rss_before = rss_kib(server.id());
    // RATE: a fixed offered rate (req/s), to compare builds at equal load.
    let rate = std::env::var("RATE")
        .ok()
        .and_then(|r| r.parse::<f64>().ok())
        .unwrap_or(capacity * factor);
    let over = open_loop(
        &addr,
        &request,
        rate,
        connections,
        Duration::from_secs(seconds),
        Some(server.id()),
    );
    over.print(&format!("{:.1}× capacity", rate / capacity));
    let after = open_loop(
        &addr,
        &request,
        capacity / 4.0,
        32,
        Duration::from_secs(3),
        None,
    );
    after.print("a quarter of capacity, right after");
    println!(
        "server memory: {} KiB before, {} KiB at most during, {} KiB after",
        rss_before,
        over.rss_max,
        rss_kib(server.id())
    );
    println!(
        "accepted p99 {:.2} ms = {:.1}× the quiet p99",
        over.p99(&over.ok),
        over.p99(&over.ok) / quiet.p99(&quiet.ok).max(1e-9)
    );
    let _ = server.kill();
    let _ = server.wait();
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident memory of a process, KiB (0 where /proc can't say).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(String::from))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Requests answered per second with `connections` each keeping one in flight.
fn closed_loop(addr: &str, request: &Arc<Request>, connections: usize, duration: Duration) -> f64 {
    let started = Instant::now();
    let done: usize = (0..connections)
        .map(|_| {
            let (addr, request) = (addr.to_string(), request.clone());
            std::thread::spawn(move || {
                let mut stream = connect(&addr);
                let mut n = 0;
                while started.elapsed() < duration {
                    match request.send(&mut stream, &addr) {
                        Ok(200) => n += 1,
                        Ok(_) => {}
                        Err(_) => stream = connect(&addr),
                    }
                }
                n
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("a load thread"))
        .sum();
    done as f64 / started.elapsed().as_secs_f64()
}

/// What an open-loop run saw.
#[derive(Default)]
struct Seen {
    offered: f64,
    ok: Vec<f64>,
    busy: Vec<f64>,
    /// The same latencies from when each request was sent.
    ok_sent: Vec<f64>,
    busy_sent: Vec<f64>,
    other: usize,
    unanswered: usize,
    rss_max: u64,
}

impl Seen {
    fn p99(&self, of: &[f64]) -> f64 {
        let mut v = of.to_vec();
        v.sort_by(f64::total_cmp);
        v.get((v.len() as f64 * 0.99) as usize)
            .or(v.last())
            .copied()
            .unwrap_or(0.0)
    }

    fn print(&self, what: &str) {
        let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        println!(
            "{what}: offered {:.0} req/s; 200: {} (p50 {:.2} ms, p99 {:.2} ms; from sent: p99 {:.2} ms), 503: {} (p99 {:.2} ms, max {:.2} ms; from sent: p99 {:.2} ms), other: {}, unanswered: {}",
            self.offered,
            self.ok.len(),
            {
                let mut v = self.ok.clone();
                v.sort_by(f64::total_cmp);
                v.get(v.len() / 2).copied().unwrap_or(0.0)
            },
            self.p99(&self.ok),
            self.p99(&self.ok_sent),
            self.busy.len(),
            self.p99(&self.busy),
            max(&self.busy),
            self.p99(&self.busy_sent),
            self.other,
            self.unanswered
        );
    }
}

/// Sends at `rate` requests per second for `duration`, spread over
/// `connections`; each latency counts from when its request was due.
fn open_loop(
    addr: &str,
    request: &Arc<Request>,
    rate: f64,
    connections: usize,
    duration: Duration,
    watch: Option<u32>,
) -> Seen {
    let started = Instant::now() + Duration::from_millis(100);
    let every = Duration::from_secs_f64(connections as f64 / rate.max(1e-3));
    let sampler = watch.map(|pid| {
        std::thread::spawn(move || {
            let mut most = 0;
            while started.elapsed() < duration + Duration::from_millis(200) {
                most = most.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(100));
            }
            most
        })
    });
    let workers: Vec<_> = (0..connections)
        .map(|i| {
            let (addr, request) = (addr.to_string(), request.clone());
            std::thread::spawn(move || {
                let mut seen = Seen::default();
                let mut stream = connect(&addr);
                let mut due = started + every.mul_f64(i as f64 / connections as f64);
                while due < started + duration {
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let sent = Instant::now();
                    match request.send(&mut stream, &addr) {
                        Ok(status) => {
                            let ms = due.elapsed().as_secs_f64() * 1e3;
                            let from_sent = sent.elapsed().as_secs_f64() * 1e3;
                            match status {
                                200 => {
                                    seen.ok.push(ms);
                                    seen.ok_sent.push(from_sent);
                                }
                                503 => {
                                    seen.busy.push(ms);
                                    seen.busy_sent.push(from_sent);
                                }
                                _ => seen.other += 1,
                            }
                        }
                        Err(_) => {
                            seen.unanswered += 1;
                            stream = connect(&addr);
                        }
                    }
                    due += every;
                }
                seen
            })
        })
        .collect();
    let mut all = Seen {
        offered: rate,
        ..Seen::default()
    };
    for w in workers {
        let s = w.join().expect("a load thread");
        all.ok.extend(s.ok);
        all.busy.extend(s.busy);
        all.ok_sent.extend(s.ok_sent);
        all.busy_sent.extend(s.busy_sent);
        all.other += s.other;
        all.unanswered += s.unanswered;
    }
    all.rss_max = sampler.map_or(0, |s| s.join().unwrap_or(0));
    all
}

fn connect(addr: &str) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(addr).expect("connects");
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    BufReader::new(stream)
}

/// One request as the clients send it.
struct Request {
    head: Vec<u8>,
    body: Vec<u8>,
    /// The head asks `Expect: 100-continue`: the body goes only after the
    /// server's `100 Continue` (as curl does for large bodies).
    expect: bool,
}

impl Request {
    /// Sends the request on `stream` and reads its answer; reconnects when
    /// the server closes the connection after it.
    fn send(&self, stream: &mut BufReader<TcpStream>, addr: &str) -> std::io::Result<u16> {
        stream.get_mut().write_all(&self.head)?;
        if !self.expect {
            stream.get_mut().write_all(&self.body)?;
        }
        let mut answer = response(stream)?;
        if self.expect && answer.status == 100 {
            stream.get_mut().write_all(&self.body)?;
            answer = response(stream)?;
        }
        if answer.closes {
            *stream = connect(addr);
        }
        Ok(answer.status)
    }
}
