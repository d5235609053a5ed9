//! kiln's integration tests, linked into one binary. They drive the real
//! `kiln` binary in temporary folders and check exit codes, output and the
//! files a run leaves (`run.json`, `metrics.json`, the cache).

mod common;
mod s3;

mod argo;
mod baselines;
mod cache;
mod cli;
mod compress;
mod content;
mod devices;
mod graph;
mod invalid;
mod layers;
mod llm;
mod pipelines;
mod pods;
mod robustness;
mod scale;
mod scheduler;
mod serve;
mod serve_limits;
mod sweep;
mod text;
mod training;
mod ui;
mod watch;
