//! # kiln-nodes
//!
//! The node kinds of kiln, one folder per category (`source`, `preprocess`,
//! `sink`, …), each kind in its own file. [`register_all`] adds every kind to
//! an engine [`Registry`](kiln_engine::Registry); adding a kind is one file
//! plus one `reg.register(...)` line in its category's `mod.rs`.
//!
//! Shared pieces live beside the categories: [`data`] (tables and
//! datasets), [`graph`] (graphs), [`nn`] (network building blocks, seeded
//! initialisation), [`metrics`] (scores) and [`show`] (JSON renderings);
//! model values, and networks built from them, are in [`model`].

pub mod compress;
pub mod data;
pub mod graph;
pub mod infer;
pub mod llm;
pub mod metrics;
pub mod model;
pub mod nn;
pub mod postprocess;
pub mod preprocess;
pub mod quant;
pub mod show;
pub mod sink;
pub mod source;
pub mod sparse;
pub mod text;
pub mod train;

/// Registers every node kind this crate provides.
pub fn register_all(reg: &mut kiln_engine::Registry) {
    source::register_all(reg);
    preprocess::register_all(reg);
    model::register_all(reg);
    train::register_all(reg);
    infer::register_all(reg);
    postprocess::register_all(reg);
    sink::register_all(reg);
    compress::register_all(reg);
}

/// A registry holding every kind of this crate.
pub fn registry() -> kiln_engine::Registry {
    let mut reg = kiln_engine::Registry::new();
    register_all(&mut reg);
    reg
}

/// The kiln data folder with `items` fetched into it (`scripts/fetch-data.sh`).
#[cfg(test)]
pub(crate) fn test_data(items: &[&str]) -> std::path::PathBuf {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    kiln_engine::data::fetch(&repo, items).unwrap_or_else(|e| panic!("{e}"))
}
