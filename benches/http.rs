//! What the serving benches share: starting `kiln serve` on an example and
//! one HTTP/1.1 exchange on a keep-alive connection.

// Each bench uses a part of what is here.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

/// Starts `kiln serve PIPELINE` on a free port; returns it and its address.
/// `SERVER_CPUS=0` (a `taskset` list) keeps the server on those cores, so
/// a client run with `taskset -c 1` doesn't take the server's time;
/// `KILN_BIN` names another kiln binary to start.
pub fn start_kiln(pipeline: &str) -> (Child, String) {
    let root = env!("CARGO_MANIFEST_DIR");
    // KILN_BIN: another build to compare (an older commit's binary).
    let kiln = std::env::var("KILN_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_kiln").into());
    let serve = [kiln.as_str(), "serve", pipeline, "--addr", "127.0.0.1:0"];
    let mut command = match std::env::var("SERVER_CPUS") {
        Ok(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpus]).args(serve);
            c
        }
        Err(_) => {
            let mut c = Command::new(&kiln);
            c.args(&serve[1..]);
            c
        }
    };
    let mut child = command
        .current_dir(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("kiln serve starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("kiln serve prints its address (its data fetched?)")
            .expect("readable output");
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// Sends one request and reads its response; returns the status.
pub fn exchange(stream: &mut BufReader<TcpStream>, request: &[u8]) -> std::io::Result<u16> {
    stream.get_mut().write_all(request)?;
    Ok(response(stream)?.status)
}

/// What a response said.
pub struct Response {
    pub status: u16,
    /// The server closes the connection after it (`Connection: close`).
    pub closes: bool,
}

/// Reads one response (its head, and the body it announces).
pub fn response(stream: &mut BufReader<TcpStream>) -> std::io::Result<Response> {
    let mut status = 0;
    let mut closes = false;
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if status == 0 {
            status = l
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
        } else if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            } else if k.eq_ignore_ascii_case("connection") {
                closes = v.trim().eq_ignore_ascii_case("close");
            }
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body)?;
    Ok(Response { status, closes })
}
