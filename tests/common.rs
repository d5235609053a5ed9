//! Helpers: run the binary, set up a workspace, read `run.json`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The kiln data folder, with `items` fetched into it by the same script a
/// user runs (`scripts/fetch-data.sh`; it locks, so parallel tests are safe).
pub fn data(items: &[&str]) -> PathBuf {
    kiln_engine::data::fetch(&root(), items).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `kiln` with `args` in `dir`.
pub fn kiln(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(dir)
        .env_remove("KILN_DEBUG")
        .output()
        .expect("the kiln binary runs")
}

/// Stdout and stderr as text.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts an exit code, showing the output when it differs.
pub fn assert_exit(out: &Output, code: i32) {
    let (stdout, stderr) = text(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "a panic reached the user:\n{stderr}"
    );
}

/// A temporary folder holding a copy of `pipelines/` (pipelines and their data).
pub fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(&root().join("pipelines"), dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let p = entry.path();
        let name = entry.file_name();
        if name == "runs" || name == ".kiln" {
            continue;
        }
        if p.is_dir() {
            copy_dir(&p, &to.join(name));
        } else {
            std::fs::copy(&p, to.join(name)).unwrap();
        }
    }
}

/// Node id -> (status, fingerprint) from a run's `run.json`.
pub fn statuses(run_json: &Path) -> BTreeMap<String, (String, String)> {
    let text = std::fs::read_to_string(run_json).expect("run.json exists");
    let json: serde_json::Value = serde_json::from_str(&text).expect("run.json is JSON");
    json["nodes"]
        .as_array()
        .expect("nodes list")
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_string(),
                (
                    n["status"].as_str().unwrap().to_string(),
                    n["fingerprint"].as_str().unwrap_or("").to_string(),
                ),
            )
        })
        .collect()
}

/// Ids of nodes with `status` in `run.json`.
pub fn with_status(run_json: &Path, status: &str) -> Vec<String> {
    statuses(run_json)
        .into_iter()
        .filter(|(_, (s, _))| s == status)
        .map(|(id, _)| id)
        .collect()
}

/// A `kiln` process left running (`watch`, `serve`), its stdout and stderr
/// read line by line as they come.
pub struct Running {
    /// The process.
    pub child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    /// Starts `kiln args...` in `dir`.
    pub fn start(dir: &Path, args: &[&str]) -> Running {
        Self::start_env(dir, args, &[])
    }

    /// Starts `kiln args...` in `dir` with extra environment variables.
    pub fn start_env(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .current_dir(dir)
            .env_remove("KILN_DEBUG")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kiln starts");
        let (tx, rx) = channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Running {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// The lines read so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// The next line containing `text`, within 60 s.
    pub fn wait_for(&mut self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no line with {text:?}; output so far:\n{}",
            self.seen.join("\n")
        );
    }

    /// Sends it `signal` (`INT` for Ctrl-C, `TERM`) and returns its exit code.
    pub fn signal(&mut self, signal: &str) -> Option<i32> {
        Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                panic!("kiln did not stop on SIG{signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
