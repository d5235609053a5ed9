//! Source kinds: nodes that read data from files.

mod csv;
mod idx;
mod synthetic;

/// Registers every source kind.
pub fn register_all(reg: &mut kiln_engine::Registry) {
    reg.register(csv::CsvSource);
    reg.register(idx::IdxSource);
    reg.register(synthetic::Synthetic);
}
