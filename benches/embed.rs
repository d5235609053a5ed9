//! Sentence-embedding throughput of all-MiniLM-L6-v2, as the peer measures
//! it (`../shared/peers/minilm_embed.py`, `st_encode`): 32 English sentences
//! of 15–17 tokens, one batch of 32, tokenizing, forward, mean pooling and
//! normalisation (`cargo bench --bench main -- embed/`).

use std::path::Path;

use candle_core::Device;
use criterion::{Criterion, Throughput};
use kiln_nodes::nn::encoder::Encoder;
use rand::{Rng, SeedableRng};

const WORDS: &str =
    "the quick brown fox jumps over a lazy dog while engineers train small models on \
cheap machines and measure latency throughput memory accuracy with careful repeatable \
benchmarks every single day";

/// The peer's kind of sentences: 12–15 words from its list, 15–17 tokens.
fn sentences(encoder: &Encoder) -> Vec<String> {
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut out = Vec::new();
    for _ in 0..100_000 {
        if out.len() == 32 {
            break;
        }
        let n = rng.random_range(12..16);
        let s = (0..n)
            .map(|_| words[rng.random_range(0..words.len())])
            .collect::<Vec<_>>()
            .join(" ")
            + ".";
        if (15..=17).contains(&encoder.tokens(&s)) {
            out.push(s);
        }
    }
    assert_eq!(out.len(), 32, "no sentences of 15-17 tokens found");
    out
}

/// Sentences per second for one batch of 32.
pub fn minilm(c: &mut Criterion) {
    crate::training::pin_threads();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = kiln_engine::data::fetch(repo, &["minilm"]).unwrap_or_else(|e| panic!("{e}"));
    let dir = data.join("models/all-MiniLM-L6-v2");
    let content = kiln_engine::fingerprint::hash_path(&dir).expect("the fetched MiniLM model");
    let encoder = Encoder::load(&dir, &content, &Device::Cpu).expect("the fetched MiniLM model");
    let batch = sentences(&encoder);
    let mut group = c.benchmark_group("embed");
    group.throughput(Throughput::Elements(32));
    group.bench_function("minilm-32", |b| {
        b.iter(|| {
            encoder
                .embed(&batch, 32, 256, true, |_| Ok(()))
                .expect("embeds")
        })
    });
    group.finish();
}
