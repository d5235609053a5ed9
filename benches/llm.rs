//! SmolLM2-135M-Instruct (Q4_1 GGUF) on the work `../shared/peers/llama_cpp_gen.py`
//! gives llama.cpp: a ~200-token prompt read in one pass, then 128 tokens
//! decoded greedily; and what batching adds: 8 sequences decoding together,
//! and the time to the first token of a 200-token prompt.
//!
//!     cargo bench --bench llm            (median of 3 runs each; JSON on stdout)
//!
//! Threads: rayon's pool, one per core (`RAYON_NUM_THREADS` to change).

use std::sync::Arc;
use std::time::Instant;

use kiln_nodes::llm::generate::generate_all;
use kiln_nodes::llm::model::{KvCache, Logits, Step};
use kiln_nodes::llm::quant::Isa;
use kiln_nodes::llm::sample::{argmax, Sampling};
use kiln_nodes::llm::LanguageModel;
use serde_json::json;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn chatml(user: &str) -> String {
    format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = kiln_engine::data::fetch(repo, &["smollm2"]).unwrap_or_else(|e| panic!("{e}"));
    let path = data.join("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    let lm: Arc<LanguageModel> = LanguageModel::load(&path, "bench").expect("the model loads");
    // The peer's long prompt, word for word.
    let review = "the film is a warm, funny and sharply observed story about a family that never quite learns to talk";
    let mut words = vec!["Summarise the following review in one sentence:"];
    words.extend(std::iter::repeat_n(review, 11));
    let prompt = lm.tokenizer.encode(&chatml(&words.join(" "))).unwrap();
    let runs = 3;
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let mut cache = KvCache::default();
        let t0 = Instant::now();
        let logits = lm.model.forward(&mut [Step {
            cache: &mut cache,
            tokens: &prompt,
            logits: Logits::Last,
        }]);
        let t1 = Instant::now();
        let mut token = argmax(&logits[0]);
        for _ in 0..128 {
            let logits = lm.model.forward(&mut [Step {
                cache: &mut cache,
                tokens: &[token],
                logits: Logits::Last,
            }]);
            token = argmax(&logits[0]);
        }
        let t2 = Instant::now();
        pp.push(prompt.len() as f64 / (t1 - t0).as_secs_f64());
        tg.push(128.0 / (t2 - t1).as_secs_f64());
    }
    // Eight different prompts decoding together (continuous batching), 128
    // tokens each whatever the model says (no end token).
    let users = [
        "What is the capital of France?",
        "Write one sentence about the sea.",
        "List three prime numbers.",
        "Explain what a neural network is in one sentence.",
        "Translate 'good morning' into Spanish.",
        "Name two colours of the rainbow.",
        "What does a cat say?",
        "Count from 1 to 5.",
    ];
    let mut batched = Vec::new();
    for _ in 0..runs {
        let requests = users
            .iter()
            .map(|u| {
                (
                    lm.tokenizer.encode(&chatml(u)).unwrap(),
                    Sampling {
                        temperature: 0.8,
                        seed: 1,
                        ..Default::default()
                    },
                    128,
                    Vec::new(),
                )
            })
            .collect();
        let t0 = Instant::now();
        let done = generate_all(lm.clone(), requests, 8, |_| Ok(())).unwrap();
        let tokens: usize = done.iter().map(|f| f.tokens.len()).sum();
        batched.push(tokens as f64 / t0.elapsed().as_secs_f64());
    }
    let ttft = median(
        (0..runs)
            .map(|_| {
                let t0 = Instant::now();
                generate_all(
                    lm.clone(),
                    vec![(prompt.clone(), Sampling::default(), 1, Vec::new())],
                    1,
                    |_| Ok(()),
                )
                .unwrap();
                t0.elapsed().as_secs_f64()
            })
            .collect(),
    );
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "model": path.file_name().map(|f| f.to_string_lossy().into_owned()),
            "threads": std::env::var("RAYON_NUM_THREADS").ok().and_then(|n| n.parse().ok()).unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            "vector_code": format!("{:?}", Isa::detected()),
            "prompt_tokens": prompt.len(),
            "prompt_tok_per_s": median(pp),
            "decode_tok_per_s": median(tg),
            "batch8_decode_tok_per_s": median(batched),
            "first_token_seconds_200_token_prompt": ttft,
            "weight_bytes": lm.model.bytes(),
        }))
        .unwrap()
    );
}
