//! SmolLM2-135M-Instruct (Q4_1 GGUF) against llama.cpp's own answers on the
//! same file (tests/fixtures/smollm2-llama-cpp.json, written by
//! benches/peers/llama_cpp_reference.py): token ids, greedy text, each
//! position's log-probabilities, perplexity; and batching that changes
//! nothing.

use std::sync::Arc;

use serde_json::Value as Json;

use super::generate::{generate_all, FinishReason};
use super::model::{KvCache, Logits, Step};
use super::sample::{argmax, log_prob, Sampling};
use super::LanguageModel;

fn model() -> Arc<LanguageModel> {
    let dir = crate::test_data(&["smollm2"]);
    let path = dir.join("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    LanguageModel::load(&path, "smollm2-test", &candle_core::Device::Cpu).unwrap()
}

fn reference() -> Json {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/smollm2-llama-cpp.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn tokens_equal_llama_cpps_and_decode_back_to_the_text() {
    let lm = model();
    let r = reference();
    let tokenized = r["tokenized"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (&c["text"], &c["tokens"]));
    let prompts = r["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (&c["prompt"], &c["prompt_tokens"]));
    let mut checked = 0;
    for (text, want) in tokenized.chain(prompts) {
        let text = text.as_str().unwrap();
        let got = lm.tokenizer.encode(text).unwrap();
        assert_eq!(got, ids(want), "tokens of {text:?}");
        // Control tokens decode to nothing; everything else round-trips.
        if !text.contains("<|") {
            assert_eq!(lm.tokenizer.decode(&got), text);
        }
        checked += 1;
    }
    assert_eq!(checked, 35);
}

#[test]
fn greedy_text_equals_llama_cpps_up_to_its_first_near_tie() {
    let lm = model();
    let r = reference();
    let prompts = r["prompts"].as_array().unwrap();
    let requests = prompts
        .iter()
        .map(|p| {
            (
                ids(&p["prompt_tokens"]),
                Sampling::default(),
                32,
                Vec::new(),
            )
        })
        .collect();
    // All ten prompts in one batch: continuous batching must not change them.
    let finished = generate_all(lm.clone(), requests, 10, |_| Ok(())).unwrap();
    let mut equal_prefix = 0;
    for (p, f) in prompts.iter().zip(&finished) {
        let want = ids(&p["tokens"]);
        // Up to llama.cpp's first near-tie, or the first position where its
        // own batched pass and its token-by-token decoding disagree.
        let safe = p["safe_prefix_tokens"]
            .as_u64()
            .min(p["self_consistent_prefix_tokens"].as_u64())
            .unwrap() as usize;
        assert_eq!(
            f.tokens[..safe.min(f.tokens.len())],
            want[..safe],
            "prompt {:?}",
            p["user"]
        );
        equal_prefix += safe;
    }
    assert!(equal_prefix >= 100, "{equal_prefix} tokens compared");
}

#[test]
fn teacher_forced_top_tokens_and_log_probs_agree_with_llama_cpp() {
    let lm = model();
    let r = reference();
    let (mut positions, mut same_top, mut diff) = (0usize, 0usize, 0f64);
    // Positions where llama.cpp's top two logits are further apart than
    // any rounding difference seen here moves them, and kiln differs.
    let mut clear_differences = Vec::new();
    let vocab = lm.model.vocab();
    for p in r["prompts"].as_array().unwrap() {
        let prompt = ids(&p["prompt_tokens"]);
        let greedy = ids(&p["tokens"]);
        let want_logp: Vec<f64> = p["token_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let seq: Vec<u32> = prompt.iter().chain(&greedy).copied().collect();
        let mut cache = KvCache::default();
        let logits = lm
            .model
            .forward(&mut [Step {
                cache: &mut cache,
                tokens: &seq,
                logits: Logits::All,
            }])
            .unwrap();
        for (k, &next) in greedy.iter().enumerate() {
            let i = prompt.len() - 1 + k;
            let row = &logits[0][i * vocab..(i + 1) * vocab];
            same_top += usize::from(argmax(row) == next);
            let margin = p["margins"][k].as_f64().unwrap();
            if argmax(row) != next {
                eprintln!(
                    "position {k}: kiln {} llama.cpp {next}, llama.cpp's margin {margin}",
                    argmax(row)
                );
                if margin > 0.25 {
                    clear_differences.push((k, margin));
                }
            }
            diff += (log_prob(row, next) - want_logp[k]).abs();
            positions += 1;
        }
    }
    let agree = same_top as f64 / positions as f64;
    let mean_diff = diff / positions as f64;
    eprintln!("teacher-forced: {positions} positions, top token equal {agree:.4}, mean |Δ log p| {mean_diff:.4}");
    assert!(clear_differences.is_empty(), "{clear_differences:?}");
    assert!(
        agree >= 0.98,
        "top token equal at {agree:.3} of {positions}"
    );
    assert!(
        mean_diff <= 0.05,
        "mean log-probability difference {mean_diff:.4}"
    );
}

#[test]
fn perplexity_on_the_reviews_is_within_two_percent_of_llama_cpps() {
    let lm = model();
    let r = reference();
    let csv = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pipelines/data/rotten_tomatoes.csv");
    let mut reader = csv::Reader::from_path(csv).unwrap();
    let texts: Vec<String> = reader
        .deserialize::<std::collections::HashMap<String, String>>()
        .map(|row| row.unwrap()["text"].clone())
        .collect();
    let mut tokens = lm.tokenizer.encode(&texts.join("\n")).unwrap();
    tokens.truncate(2048);
    let (nll, count) = lm.score(&tokens, 512).unwrap();
    let ppl = (nll / count as f64).exp();
    let want = r["perplexity"]["perplexity"].as_f64().unwrap();
    eprintln!("perplexity {ppl:.3}, llama.cpp {want:.3}");
    assert_eq!(count, 1020);
    assert!(
        (ppl / want - 1.0).abs() <= 0.02,
        "perplexity {ppl} vs llama.cpp {want}"
    );
}

#[test]
fn seeded_sampling_repeats_and_stops_where_asked() {
    let lm = model();
    let prompt = lm
        .tokenizer
        .encode("<|im_start|>user\nTell me a story.<|im_end|>\n<|im_start|>assistant\n")
        .unwrap();
    let warm = Sampling {
        temperature: 0.9,
        top_k: 40,
        top_p: 0.95,
        repetition_penalty: 1.1,
        seed: 5,
    };
    let run = |sampling: Sampling, stop: Vec<String>| {
        generate_all(
            lm.clone(),
            vec![(prompt.clone(), sampling, 24, stop)],
            1,
            |_| Ok(()),
        )
        .unwrap()
        .remove(0)
    };
    let a = run(warm.clone(), vec![]);
    assert_eq!(
        a,
        Finished {
            first_token_seconds: a.first_token_seconds,
            decode_seconds: a.decode_seconds,
            ..run(warm.clone(), vec![])
        }
    );
    let b = run(
        Sampling {
            seed: 6,
            ..warm.clone()
        },
        vec![],
    );
    assert_ne!(a.tokens, b.tokens, "another seed, another story");
    assert_eq!(a.tokens.len(), 24);
    assert_eq!(a.reason, FinishReason::Length);
    // A stop text taken from the middle of the answer ends it just before.
    let words: Vec<&str> = a.text.split(' ').collect();
    let stop = words[words.len() / 2].to_string();
    let cut = run(warm, vec![stop.clone()]);
    assert_eq!(cut.reason, FinishReason::Stop);
    assert_eq!(cut.text, a.text[..a.text.find(&stop).unwrap()]);
}

use super::generate::Finished;

#[test]
fn embeddings_are_the_pooled_hidden_states_whatever_the_batch() {
    let lm = model();
    let texts: Vec<String> = [
        "A gorgeous, witty, seductive movie.",
        "",
        "Lacks depth, and the jokes fall flat from the first reel to the last.",
        "ok",
    ]
    .map(String::from)
    .to_vec();
    let hidden = lm.model.config.hidden;
    let mut reported = Vec::new();
    let together = lm
        .embed(&texts, 512, 4, true, |d| {
            reported.push(d);
            Ok(())
        })
        .unwrap();
    assert_eq!(reported, [4]);
    assert_eq!(together.len(), 4 * hidden);
    // One text at a time: the same bits (each row's products are its own).
    let alone = lm.embed(&texts, 512, 1, true, |_| Ok(())).unwrap();
    assert_eq!(together, alone);
    for (i, e) in together.chunks(hidden).enumerate() {
        let norm: f32 = e.iter().map(|v| v * v).sum::<f32>().sqrt();
        let want = if texts[i].is_empty() { 0.0 } else { 1.0 };
        assert!((norm - want).abs() < 1e-5, "text {i}: norm {norm}");
    }
    // The mean over a text read in two steps, weighted by their lengths,
    // is the mean over it read in one: the pooling runs over positions
    // whose keys and values come from the cache.
    let tokens = lm.tokenizer.encode(&texts[2]).unwrap();
    let (a, b) = tokens.split_at(5);
    let pool = |parts: &[&[u32]]| {
        let mut cache = KvCache::default();
        let mut sum = vec![0f32; hidden];
        for part in parts {
            let mean = lm
                .model
                .forward(&mut [Step {
                    cache: &mut cache,
                    tokens: part,
                    logits: Logits::Pooled,
                }])
                .unwrap();
            for (s, m) in sum.iter_mut().zip(&mean[0]) {
                *s += m * part.len() as f32 / tokens.len() as f32;
            }
        }
        sum
    };
    let (whole, split) = (pool(&[&tokens]), pool(&[a, b]));
    for (x, y) in whole.iter().zip(&split) {
        assert!((x - y).abs() <= 1e-4 * (1.0 + x.abs()), "{x} vs {y}");
    }
    // Normalised, it is what `embed` gave.
    let norm: f32 = whole.iter().map(|v| v * v).sum::<f32>().sqrt();
    let from_embed = &together[2 * hidden..3 * hidden];
    for (x, y) in whole.iter().zip(from_embed) {
        assert!((x / norm - y).abs() < 1e-6, "{} vs {y}", x / norm);
    }
    // Different texts, different embeddings.
    assert_ne!(&together[..hidden], &together[2 * hidden..3 * hidden]);
}

/// Building a matrix hands its pages of the file back: the file and the
/// weights are never both resident (issue #21's memory bound; loading had
/// peaked at the weights plus the whole file).
#[cfg(target_os = "linux")]
#[test]
fn loading_gives_the_files_pages_back() {
    use super::model::Llama;
    let dir = crate::test_data(&["smollm2"]);
    let path = dir.join("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    let size = std::fs::metadata(&path).unwrap().len() as usize;
    let g = super::gguf::read(&path).unwrap();
    let t = &g.tensors;
    // The embeddings' 30 MB leave no more than the pages the kernel maps
    // around a fault past either end (64 KiB, or whole large folios where
    // the page cache holds them and the kernel maps them whole).
    let before = t.resident_bytes();
    let embeddings = t.matrix(&["token_embd.weight"]).unwrap();
    let grew = t.resident_bytes().saturating_sub(before);
    assert!(
        grew < embeddings.bytes() / 4,
        "{grew} bytes of the embeddings stay resident after building them"
    );
    // The whole model: those edges add up over 273 tensors (7.9 to 15 MB
    // measured), and the map goes with `g`. Kept, the pages were all 98 MB.
    let _model = Llama::from_gguf(&g, &candle_core::Device::Cpu).unwrap();
    let resident = t.resident_bytes();
    assert!(
        resident < size / 2,
        "{resident} bytes of the {size}-byte file stay resident after loading"
    );
}

/// The forward pass a GPU runs (candle's ops, keys and values on the
/// device) agrees with kiln's kernels, for a prompt read at once and for
/// sequences decoded token by token side by side, each from its own cache:
/// checked on the CPU, where candle's ops run too, and on CUDA where a GPU
/// answers (`KILN_REQUIRE_GPU=1` makes its absence a failure).
#[test]
fn the_gpu_path_agrees_with_kiln_kernels() {
    use super::model::Llama;
    let dir = crate::test_data(&["smollm2"]);
    let path = dir.join("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    let cpu = candle_core::Device::Cpu;
    let g = super::gguf::read(&path).unwrap();
    let kiln = Llama::from_gguf(&g, &cpu).unwrap();
    let candle_here = Llama::from_gguf(&g, &cpu)
        .unwrap()
        .with_device_path(&g, &cpu)
        .unwrap();
    same_answers(&kiln, &candle_here, "candle's ops on the CPU");
    if let Some(gpu) = crate::nn::cuda_or_skip("the language model") {
        let on_gpu = Llama::from_gguf(&g, &gpu).unwrap();
        same_answers(&kiln, &on_gpu, "CUDA");
    }
}

/// `other` gives `kiln`'s answers: teacher-forced along llama.cpp's first
/// greedy answer, the top token at all positions but one and every
/// log-probability within 0.1; decoding two chats side by side, the same
/// tokens.
fn same_answers(kiln: &super::model::Llama, other: &super::model::Llama, what: &str) {
    use super::model::Llama;
    let lm = model();
    let vocab = kiln.vocab();
    let r = reference();
    let p = &r["prompts"][0];
    let seq: Vec<u32> = ids(&p["prompt_tokens"])
        .into_iter()
        .chain(ids(&p["tokens"]).into_iter().take(12))
        .collect();
    let all = |model: &Llama, tokens: &[u32]| {
        let mut cache = KvCache::default();
        model
            .forward(&mut [Step {
                cache: &mut cache,
                tokens,
                logits: Logits::All,
            }])
            .unwrap()
            .remove(0)
    };
    let (want, got) = (all(kiln, &seq), all(other, &seq));
    let (mut same_top, mut worst) = (0, 0f64);
    for (w, g) in want.chunks(vocab).zip(got.chunks(vocab)) {
        same_top += usize::from(argmax(w) == argmax(g));
        let next = argmax(w);
        worst = worst.max((log_prob(w, next) - log_prob(g, next)).abs());
    }
    let positions = seq.len();
    eprintln!("{what}: top token equal at {same_top} of {positions}, worst |Δ log p| {worst:.4}");
    assert!(
        same_top + 1 >= positions,
        "{what}: {same_top} of {positions}"
    );
    assert!(worst <= 0.1, "{what}: {worst}");

    // Two chats decoded side by side, four tokens each, after their prompts
    // (of different lengths) read in one step.
    let prompts: Vec<Vec<u32>> = [
        "Name a colour.",
        "What is two plus two? Answer in one word.",
    ]
    .iter()
    .map(|q| {
        let text = format!("<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n");
        lm.tokenizer.encode(&text).unwrap()
    })
    .collect();
    let decode = |model: &Llama| {
        let mut caches = [KvCache::default(), KvCache::default()];
        let mut next: Vec<Vec<u32>> = prompts.clone();
        let mut chosen = vec![Vec::new(), Vec::new()];
        for _ in 0..4 {
            let mut steps: Vec<Step<'_>> = caches
                .iter_mut()
                .zip(&next)
                .map(|(cache, tokens)| Step {
                    cache,
                    tokens,
                    logits: Logits::Last,
                })
                .collect();
            let logits = model.forward(&mut steps).unwrap();
            for (s, row) in logits.iter().enumerate() {
                chosen[s].push(argmax(row));
            }
            next = chosen.iter().map(|c| vec![*c.last().unwrap()]).collect();
        }
        (chosen, caches.iter().map(KvCache::len).collect::<Vec<_>>())
    };
    let (want, got) = (decode(kiln), decode(other));
    assert_eq!(got, want, "{what}");
    assert_eq!(got.1, [prompts[0].len() + 3, prompts[1].len() + 3]);
}
