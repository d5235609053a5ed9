//! # kiln-nodes
//!
//! The node kinds of kiln, one folder per category (`source`, `preprocess`,
//! `sink`, …), each kind in its own file. [`register_all`] adds every kind to
//! an engine [`Registry`](kiln_engine::Registry); adding a kind is one file
//! plus one `reg.register(...)` line in its category's `mod.rs`.
//!
//! Shared typed views of values live beside the categories: [`data`] for
//! tables and datasets, [`show`] for JSON renderings.

pub mod data;
pub mod preprocess;
pub mod show;
pub mod sink;
pub mod source;

/// Registers every node kind this crate provides.
pub fn register_all(reg: &mut kiln_engine::Registry) {
    source::register_all(reg);
    preprocess::register_all(reg);
    sink::register_all(reg);
}

/// A registry holding every kind of this crate.
pub fn registry() -> kiln_engine::Registry {
    let mut reg = kiln_engine::Registry::new();
    register_all(&mut reg);
    reg
}
