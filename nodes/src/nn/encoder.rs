//! Pre-trained BERT-family sentence encoders, loaded from local files
//! (`config.json`, `model.safetensors`, `tokenizer.json`; no hub access) with
//! candle-transformers, and sentence embeddings as sentence-transformers
//! computes them: mean of the last hidden states over real tokens, then L2
//! normalisation.

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
    model: BertModel,
    tokenizer: Tokenizer,
    /// Hidden size: the embedding's width.
    pub hidden: usize,
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
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let model = BertModel::load(vb, &config)
            .map_err(|e| NodeError::new(format!("`{shown}` does not hold a BERT model: {e}")))?;
        let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| NodeError::new(format!("cannot read `{shown}/tokenizer.json`: {e}")))?;
        Ok(Encoder {
            model,
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
    /// one padded batch.
    fn embed_batch(
        &self,
        tokenizer: &Tokenizer,
        docs: Vec<String>,
        normalize: bool,
    ) -> Result<Tensor, NodeError> {
        let device = &self.model.device;
        let enc = tokenizer
            .encode_batch(docs, true)
            .map_err(|e| NodeError::new(format!("tokenizer: {e}")))?;
        let ids: Vec<Vec<u32>> = enc.iter().map(|e| e.get_ids().to_vec()).collect();
        let mask: Vec<Vec<u32>> = enc
            .iter()
            .map(|e| e.get_attention_mask().to_vec())
            .collect();
        let ids = Tensor::new(ids, device)?;
        let mask = Tensor::new(mask, device)?;
        let hidden = self.model.forward(&ids, &ids.zeros_like()?, Some(&mask))?;
        // Mean over real tokens only.
        let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let sum = hidden.broadcast_mul(&m)?.sum(1)?;
        let mut e = sum.broadcast_div(&m.sum(1)?.clamp(1e-9, f64::MAX)?)?;
        if normalize {
            e = e.broadcast_div(&e.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?)?;
        }
        Ok(e)
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
        tokenizer.with_padding(Some(PaddingParams::default()));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|e| NodeError::new(format!("tokenizer: {e}")))?;
        // Batches of similar lengths pad less: embed in order of length,
        // then put the rows back in the documents' order. Each batch is cut
        // in one part per worker thread, run side by side: small products
        // scale better across documents than inside one product.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| (texts[i].len(), i));
        let workers = rayon::current_num_threads().max(1);
        let mut out = Vec::new();
        for (i, chunk) in order.chunks(batch.max(1)).enumerate() {
            progress(i * batch)?;
            let part = chunk.len().div_ceil(workers).max(MIN_PART);
            let parts = chunk
                .par_chunks(part)
                .map(|docs| {
                    let docs: Vec<String> = docs.iter().map(|&k| texts[k].clone()).collect();
                    self.embed_batch(&tokenizer, docs, normalize)
                })
                .collect::<Result<Vec<_>, NodeError>>()?;
            out.extend(parts);
        }
        let device = &self.model.device;
        let sorted = Tensor::cat(&out, 0)?;
        let mut back = vec![0u32; order.len()];
        for (row, &doc) in order.iter().enumerate() {
            back[doc] = row as u32;
        }
        let n = back.len();
        Ok(sorted.index_select(&Tensor::from_vec(back, n, device)?, 0)?)
    }
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
        // Batching pads; padding must not change an embedding.
        let alone = enc.embed(&texts[..1], 1, 256, true, |_| Ok(())).unwrap();
        let alone: Vec<f32> = alone.squeeze(0).unwrap().to_vec1().unwrap();
        let diff = alone
            .iter()
            .zip(&e[0])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "{diff}");
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
