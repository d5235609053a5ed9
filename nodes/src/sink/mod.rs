//! Sink kinds: nodes that write results into the run's output folder.

mod csv;
mod json;
pub mod plot;
mod safetensors;

/// Registers every sink kind.
pub fn register_all(reg: &mut kiln_engine::Registry) {
    reg.register(csv::CsvSink);
    reg.register(json::JsonSink);
    reg.register(safetensors::SafetensorsSink);
    reg.register(plot::Plot);
}
