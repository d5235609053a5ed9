//! Source kinds: nodes that read data from files, or take it from requests.

mod csv;
mod graph;
mod idx;
mod request;
mod synthetic;
mod text;
mod text_request;

/// Registers every source kind.
pub fn register_all(reg: &mut kiln_engine::Registry) {
    reg.register(csv::CsvSource);
    reg.register(idx::IdxSource);
    reg.register(synthetic::Synthetic);
    reg.register(request::Request::default());
    reg.register(text::TextSource);
    reg.register(text_request::TextRequest);
    reg.register(graph::GraphSource);
}
