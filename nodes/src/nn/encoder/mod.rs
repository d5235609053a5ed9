//! Pre-trained BERT-family sentence encoders, loaded from local files
//! (`config.json`, `model.safetensors`, `tokenizer.json`; no hub access),
//! and sentence embeddings as sentence-transformers computes them: mean of
//! the last hidden states over real tokens, then L2 normalisation. On the
//! CPU kiln's own forward pass runs them ([`bert`]); elsewhere
//! candle-transformers' `BertModel`.

mod bert;
mod kernels;

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use kiln_engine::NodeError;
use rayon::prelude::*;
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

use super::kept::Kept;

/// The fewest documents a part of a batch gets when a batch is shared
/// among worker threads.
const MIN_PART: usize = 8;

/// A loaded encoder and its tokenizer.
pub struct Encoder {
    forward: Forward,
    device: Device,
    tokenizer: Tokenizer,
    /// Hidden size: the embedding's width.
    pub hidden: usize,
}

/// What runs an encoder's forward pass.
enum Forward {
    /// kiln's own pass, on the CPU: sentences packed without padding.
    Kiln(bert::Bert),
    /// candle-transformers' model: other devices and configurations.
    Candle(BertModel),
}

/// The files a model folder must hold.
pub const FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

impl Encoder {
    /// Loads the encoder in `dir`, whose files hash to `content`, on
    /// `device` (once per content and device; later calls share it, and a
    /// folder whose files change is loaded anew). Two encoders stay loaded:
    /// a watch session that keeps editing weights holds the last two.
    pub fn load(dir: &Path, content: &str, device: &Device) -> Result<Arc<Encoder>, NodeError> {
        static LOADED: Kept<Encoder> = Kept::new(2);
        LOADED.get_or_load(content, device, || Encoder::read(dir, device))
    }

    fn read(dir: &Path, device: &Device) -> Result<Encoder, NodeError> {
        Encoder::read_with(dir, device, device.is_cpu())
    }

    /// [`Encoder::read`], with kiln's own forward pass where `own` and the
    /// configuration allows it, candle's model otherwise.
    fn read_with(dir: &Path, device: &Device, own: bool) -> Result<Encoder, NodeError> {
        let shown = dir.display();
        for f in FILES {
            if !dir.join(f).is_file() {
                return Err(NodeError::new(format!(
                    "`{shown}` has no `{f}`: a pre-trained model folder holds {}",
                    FILES.join(", ")
                )));
            }
        }
        let config: Config = serde_json::from_str(
            &std::fs::read_to_string(dir.join("config.json"))
                .map_err(|e| NodeError::new(format!("cannot read `{shown}/config.json`: {e}")))?,
        )
        .map_err(|e| NodeError::new(format!("`{shown}/config.json` is not a BERT config: {e}")))?;
        let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), device)
            .map_err(|e| NodeError::new(format!("cannot read `{shown}/model.safetensors`: {e}")))?;
        let not_bert = |e: &dyn std::fmt::Display| {
            NodeError::new(format!("`{shown}` does not hold a BERT model: {e}"))
        };
        let own = match own {
            true => bert::Bert::from_tensors(&tensors, &config).map_err(|e| not_bert(&e))?,
            false => None,
        };
        let forward = match own {
            Some(bert) => Forward::Kiln(bert),
            None => {
                let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
                Forward::Candle(BertModel::load(vb, &config).map_err(|e| not_bert(&e))?)
            }
        };
        let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| NodeError::new(format!("cannot read `{shown}/tokenizer.json`: {e}")))?;
        Ok(Encoder {
            forward,
            device: device.clone(),
            tokenizer,
            hidden: config.hidden_size,
        })
    }

    /// How many tokens `text` becomes (with the special tokens, without
    /// any padding the tokenizer file asks for).
    pub fn tokens(&self, text: &str) -> usize {
        self.tokenizer.encode(text, true).map_or(0, |e| {
            e.get_attention_mask().iter().map(|&m| m as usize).sum()
        })
    }

    /// Mean-pooled (and, when `normalize`, L2-normalised) embeddings of
    /// `docs`, `[docs, hidden]` row-major.
    fn embed_part(
        &self,
        tokenizer: &Tokenizer,
        docs: Vec<String>,
        normalize: bool,
    ) -> Result<Vec<f32>, NodeError> {
        let enc = tokenizer
            .encode_batch(docs, true)
            .map_err(|e| NodeError::new(format!("tokenizer: {e}")))?;
        let mut rows = match &self.forward {
            Forward::Kiln(bert) => {
                let ids: Vec<Vec<u32>> = enc.iter().map(|e| e.get_ids().to_vec()).collect();
                bert.mean_pooled(&ids).map_err(NodeError::new)?
            }
            Forward::Candle(model) => candle_mean_pooled(model, &enc)?,
        };
        if normalize {
            for row in rows.chunks_exact_mut(self.hidden) {
                let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                row.iter_mut().for_each(|v| *v /= norm);
            }
        }
        Ok(rows)
    }

    /// Sentence embeddings `[n, hidden]` of `texts`, `batch` at a time, each
    /// truncated to `max_tokens`; L2-normalised when `normalize`.
    pub fn embed(
        &self,
        texts: &[String],
        batch: usize,
        max_tokens: usize,
        normalize: bool,
        mut progress: impl FnMut(usize) -> Result<(), NodeError>,
    ) -> Result<Tensor, NodeError> {
        let mut tokenizer = self.tokenizer.clone();
        // kiln's pass packs sentences; candle's model takes a padded batch.
        tokenizer.with_padding(match self.forward {
            Forward::Kiln(_) => None,
            Forward::Candle(_) => Some(PaddingParams::default()),
        });
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|e| NodeError::new(format!("tokenizer: {e}")))?;
        // Batches of similar lengths pad less (candle's model) and parts of
        // one batch take alike amounts of work: embed in order of length,
        // each batch dealt round-robin into one part per worker thread, the
        // parts side by side (small products scale better across documents
        // than inside one product); each row lands at its document's place.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| (texts[i].len(), i));
        let workers = rayon::current_num_threads().max(1);
        let h = self.hidden;
        let mut rows = vec![0f32; texts.len() * h];
        for (i, chunk) in order.chunks(batch.max(1)).enumerate() {
            progress(i * batch)?;
            let parts = chunk
                .len()
                .div_ceil(chunk.len().div_ceil(workers).max(MIN_PART));
            let done = (0..parts)
                .into_par_iter()
                .map(|p| {
                    let docs: Vec<usize> = chunk.iter().skip(p).step_by(parts).copied().collect();
                    let texts = docs.iter().map(|&k| texts[k].clone()).collect();
                    Ok((docs, self.embed_part(&tokenizer, texts, normalize)?))
                })
                .collect::<Result<Vec<_>, NodeError>>()?;
            for (docs, part) in done {
                for (&doc, row) in docs.iter().zip(part.chunks_exact(h)) {
                    rows[doc * h..(doc + 1) * h].copy_from_slice(row);
                }
            }
        }
        Ok(Tensor::from_vec(rows, (texts.len(), h), &self.device)?)
    }
}

/// candle's model on one padded batch: the mean of the last hidden states
/// over each document's real tokens, on the host.
fn candle_mean_pooled(
    model: &BertModel,
    enc: &[tokenizers::Encoding],
) -> Result<Vec<f32>, NodeError> {
    let device = &model.device;
    let ids: Vec<Vec<u32>> = enc.iter().map(|e| e.get_ids().to_vec()).collect();
    let mask: Vec<Vec<u32>> = enc
        .iter()
        .map(|e| e.get_attention_mask().to_vec())
        .collect();
    let ids = Tensor::new(ids, device)?;
    let mask = Tensor::new(mask, device)?;
    let hidden = model.forward(&ids, &ids.zeros_like()?, Some(&mask))?;
    // Mean over real tokens only.
    let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let sum = hidden.broadcast_mul(&m)?.sum(1)?;
    let mean = sum.broadcast_div(&m.sum(1)?.clamp(1e-9, f64::MAX)?)?;
    Ok(mean.flatten_all()?.to_vec1()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minilm() -> std::path::PathBuf {
        crate::test_data(&["minilm"]).join("models/all-MiniLM-L6-v2")
    }

    /// sentence-transformers' cosines for these pairs, to ±0.001.
    #[test]
    fn minilm_reproduces_the_reference_cosines() {
        let enc = Encoder::load(&minilm(), "minilm", &Device::Cpu).unwrap();
        let texts: Vec<String> = [
            "The new movie is awesome",
            "The new movie is so great",
            "The cat sits outside",
            "The cat plays in the garden",
        ]
        .map(String::from)
        .to_vec();
        let e = enc.embed(&texts, 3, 256, true, |_| Ok(())).unwrap();
        assert_eq!(e.dims(), [4, 384]);
        let e: Vec<Vec<f32>> = e.to_vec2().unwrap();
        let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let (c1, c2) = (cos(&e[0], &e[1]), cos(&e[2], &e[3]));
        assert!((c1 - 0.8939).abs() < 0.001, "{c1}");
        assert!((c2 - 0.6788).abs() < 0.001, "{c2}");
        // A sentence's embedding does not depend on what shares its batch
        // or its part: the same bits alone, in batches of 3 and 4, and with
        // every batch in one part (one worker thread).
        let bits = |e: &Tensor| -> Vec<Vec<u32>> {
            let rows: Vec<Vec<f32>> = e.to_vec2().unwrap();
            rows.iter()
                .map(|r| r.iter().map(|v| v.to_bits()).collect())
                .collect()
        };
        let want = bits(&enc.embed(&texts, 3, 256, true, |_| Ok(())).unwrap());
        for batch in [1, 4] {
            let got = enc.embed(&texts, batch, 256, true, |_| Ok(())).unwrap();
            assert_eq!(bits(&got), want, "batch {batch}");
        }
        let one_thread = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let got = one_thread.install(|| enc.embed(&texts, 4, 256, true, |_| Ok(())).unwrap());
        assert_eq!(bits(&got), want, "one worker");
    }

    /// kiln's pass on packed sentences gives candle's model's embeddings
    /// of padded batches, for sentences of 3 to 256 tokens.
    #[test]
    fn kilns_forward_pass_matches_candles_model() {
        let ours = Encoder::read_with(&minilm(), &Device::Cpu, true).unwrap();
        assert!(matches!(ours.forward, Forward::Kiln(_)));
        let candle = Encoder::read_with(&minilm(), &Device::Cpu, false).unwrap();
        assert!(matches!(candle.forward, Forward::Candle(_)));
        let long = "the engineers measured every layer of the model twice ".repeat(30);
        let texts: Vec<String> = [
            "Hi",
            "A gorgeous, witty, seductive movie.",
            "Lacks depth.",
            "The cat plays in the garden while the dog sleeps under a tree near the old house.",
            long.as_str(),
            "Ünïcödé tëxt, emoji 🎬 and numbers 3.14159 in one sentence",
        ]
        .map(String::from)
        .to_vec();
        for normalize in [false, true] {
            let a: Vec<Vec<f32>> = ours
                .embed(&texts, 4, 256, normalize, |_| Ok(()))
                .unwrap()
                .to_vec2()
                .unwrap();
            let b: Vec<Vec<f32>> = candle
                .embed(&texts, 4, 256, normalize, |_| Ok(()))
                .unwrap()
                .to_vec2()
                .unwrap();
            for (i, (a, b)) in a.iter().zip(&b).enumerate() {
                let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
                let worst = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(
                    worst <= 1e-5 * scale.max(1.0),
                    "text {i}: {worst} (scale {scale})"
                );
            }
        }
    }

    /// The pass's sums run in the same order on every vector path, so an
    /// embedding is the same bits on an AVX2 machine and an AVX-512 one.
    #[test]
    fn every_vector_path_gives_the_same_embeddings() {
        let enc = Encoder::read_with(&minilm(), &Device::Cpu, true).unwrap();
        let Forward::Kiln(bert) = &enc.forward else {
            panic!("kiln's pass on the CPU")
        };
        let texts = ["A gorgeous, witty, seductive movie.", "Lacks depth.", "Hi"];
        let ids: Vec<Vec<u32>> = enc
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .unwrap()
            .iter()
            .map(|e| e.get_ids().to_vec())
            .collect();
        let paths = crate::quant::Isa::available();
        let want = bert.mean_pooled_on(paths[0], &ids).unwrap();
        for isa in &paths[1..] {
            let got = bert.mean_pooled_on(*isa, &ids).unwrap();
            let same = want
                .iter()
                .zip(&got)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{isa:?} differs from the portable path");
        }
    }

    #[test]
    fn a_folder_without_the_model_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = Encoder::load(dir.path(), "empty", &Device::Cpu)
            .err()
            .unwrap();
        assert!(e.message().contains("has no `config.json`"), "{e}");
    }
}
