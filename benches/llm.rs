//! SmolLM2-135M-Instruct (Q4_1 GGUF) on the work `../shared/peers/llama_cpp_gen.py`
//! gives llama.cpp: a ~200-token prompt read in one pass, then 128 tokens
//! decoded greedily; and what batching adds: 8 sequences decoding together
//! (one forward pass per step for all eight), and the time to the first
//! token of a 200-token prompt through the generation engine.
//!
//!     cargo bench --bench llm            (median of 3 runs each; JSON on stdout)
//!
//! Threads: rayon's pool, one per core (`RAYON_NUM_THREADS` to change).

use std::sync::Arc;
use std::time::Instant;

use kiln_nodes::llm::generate::generate_all;
use kiln_nodes::llm::model::{KvCache, Logits, Step};
use kiln_nodes::llm::sample::{argmax, Sampling};
use kiln_nodes::llm::LanguageModel;
use kiln_nodes::quant::Isa;
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
    let lm: Arc<LanguageModel> =
        LanguageModel::load(&path, "bench", &candle_core::Device::Cpu).expect("the model loads");
    // The peer's long prompt, word for word.
    let review = "the film is a warm, funny and sharply observed story about a family that never quite learns to talk";
    let mut words = vec!["Summarise the following review in one sentence:"];
    words.extend(std::iter::repeat_n(review, 11));
    let prompt = lm.tokenizer.encode(&chatml(&words.join(" "))).unwrap();
    let runs = 3;
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        // Room for the prompt and the answer, as the engine reserves it.
        let mut cache = KvCache::with_capacity(&lm.model, prompt.len() + 128);
        let t0 = Instant::now();
        let logits = lm
            .model
            .forward(&mut [Step {
                cache: &mut cache,
                tokens: &prompt,
                logits: Logits::Last,
            }])
            .expect("a forward pass");
        let t1 = Instant::now();
        let mut token = argmax(&logits[0]);
        for _ in 0..128 {
            let logits = lm
                .model
                .forward(&mut [Step {
                    cache: &mut cache,
                    tokens: &[token],
                    logits: Logits::Last,
                }])
                .expect("a forward pass");
            token = argmax(&logits[0]);
        }
        let t2 = Instant::now();
        pp.push(prompt.len() as f64 / (t1 - t0).as_secs_f64());
        tg.push(128.0 / (t2 - t1).as_secs_f64());
    }
    // Eight sequences decoding together, as the continuous-batching engine
    // runs them: one forward pass per step takes every sequence's next
    // token. Each starts from its own question before the same long review
    // (~250 tokens, so attention costs what it costs the single stream) and
    // decodes 128 greedy tokens, end tokens included, so the batch stays
    // eight wide from the first step to the last.
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
    let prompts: Vec<Vec<u32>> = users
        .iter()
        .map(|u| {
            let text = format!("{u} {}", words[1..].join(" "));
            lm.tokenizer.encode(&chatml(&text)).unwrap()
        })
        .collect();
    let mut batched = Vec::new();
    for _ in 0..runs {
        let mut caches: Vec<KvCache> = prompts
            .iter()
            .map(|p| KvCache::with_capacity(&lm.model, p.len() + 128))
            .collect();
        let mut steps: Vec<Step<'_>> = caches
            .iter_mut()
            .zip(&prompts)
            .map(|(cache, p)| Step {
                cache,
                tokens: p,
                logits: Logits::Last,
            })
            .collect();
        let logits = lm.model.forward(&mut steps).expect("a forward pass");
        drop(steps);
        let mut next: Vec<u32> = logits.iter().map(|l| argmax(l)).collect();
        let t0 = Instant::now();
        for _ in 0..128 {
            let mut steps: Vec<Step<'_>> = caches
                .iter_mut()
                .zip(&next)
                .map(|(cache, t)| Step {
                    cache,
                    tokens: std::slice::from_ref(t),
                    logits: Logits::Last,
                })
                .collect();
            let logits = lm.model.forward(&mut steps).expect("a forward pass");
            next = logits.iter().map(|l| argmax(l)).collect();
        }
        batched.push((8 * 128) as f64 / t0.elapsed().as_secs_f64());
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
