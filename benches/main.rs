//! kiln's benchmarks (criterion). `cargo bench --bench main` runs them all;
//! `cargo bench --bench main -- engine/` one group. Figures are recorded in
//! BENCHMARKS.md with the command that reproduces each.

use criterion::{criterion_group, criterion_main};

mod embed;
mod engine;
mod gnn;
mod quantized;
mod training;

/// The allocator the `kiln` binary uses (see `src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

criterion_group! {
    name = benches;
    config = criterion::Criterion::default()
        .sample_size(10)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(5));
    targets = engine::parse_and_validate, engine::scheduling_overhead, engine::cached_rerun, engine::parallel_branches
}
criterion_group! {
    name = training_benches;
    config = criterion::Criterion::default()
        .sample_size(10)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(10));
    targets = training::peer_workloads, training::plain_candle_mlp, gnn::gcn_epochs
}
criterion_group! {
    name = quantized_benches;
    config = criterion::Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = quantized::lenet_layers, quantized::large_linear, quantized::mlp_batch_1, embed::minilm
}
criterion_main!(benches, training_benches, quantized_benches);
