//! BERT's encoder forward pass on the CPU, kiln's own (candle-transformers'
//! `BertModel` runs on other devices). The sentences of a part lie row
//! after row with no padding, so every product covers real tokens only and
//! attention runs inside each sentence; Q, K and V are one product; the
//! weights are packed once, at load, for kiln's product kernel
//! ([`Packed`]); biases and residuals are written first and the products add
//! into them; GELU and layer norm are vector kernels ([`super::kernels`]). A
//! part runs on the calling thread, each product on it alone.

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use candle_transformers::models::bert::{Config, HiddenAct, PositionEmbeddingType};

use super::kernels::{attend_on, gelu_on, layer_norm_on, Head};
use crate::nn::Packed;
use crate::quant::Isa;

/// A layer norm's scale and shift.
struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

/// One encoder layer's weights, the matrices packed for the product kernel.
struct Layer {
    /// Q, K and V side by side: `hidden` inputs, `3·hidden` outputs.
    qkv: Packed,
    qkv_bias: Vec<f32>,
    out: Packed,
    out_bias: Vec<f32>,
    attention_norm: Norm,
    up: Packed,
    up_bias: Vec<f32>,
    down: Packed,
    down_bias: Vec<f32>,
    output_norm: Norm,
}

/// A BERT encoder's weights in host memory.
pub(super) struct Bert {
    hidden: usize,
    heads: usize,
    intermediate: usize,
    eps: f32,
    vocab: usize,
    positions: usize,
    word: Vec<f32>,
    position: Vec<f32>,
    /// Token type 0's row: every sentence is one segment.
    token_type: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
}

impl Bert {
    /// The encoder in `tensors` (a `model.safetensors`), or `None` for a
    /// configuration this pass does not cover (another activation), which
    /// candle's model then runs.
    pub(super) fn from_tensors(
        tensors: &HashMap<String, Tensor>,
        config: &Config,
    ) -> Result<Option<Bert>, String> {
        if config.hidden_act != HiddenAct::Gelu
            || config.position_embedding_type != PositionEmbeddingType::Absolute
            || config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Ok(None);
        }
        // Where candle's `BertModel` looks: the top level, `bert.`, or the
        // model type's name.
        let mut prefixes = vec![String::new(), "bert.".to_string()];
        prefixes.extend(config.model_type.iter().map(|t| format!("{t}.")));
        let Some(prefix) = prefixes
            .into_iter()
            .find(|p| tensors.contains_key(&format!("{p}embeddings.word_embeddings.weight")))
        else {
            return Err("no `embeddings.word_embeddings.weight` tensor".into());
        };
        let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>, String> {
            let full = format!("{prefix}{name}");
            let t = tensors
                .get(&full)
                .ok_or_else(|| format!("no `{full}` tensor"))?;
            if t.dims() != shape {
                return Err(format!("`{full}` is {:?}, expected {shape:?}", t.dims()));
            }
            t.to_dtype(DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1())
                .map_err(|e| format!("`{full}`: {e}"))
        };
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let norm = |at: &str| -> Result<Norm, String> {
            Ok(Norm {
                weight: get(&format!("{at}.LayerNorm.weight"), &[h])?,
                bias: get(&format!("{at}.LayerNorm.bias"), &[h])?,
            })
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let at = format!("encoder.layer.{l}");
            let mut qkv = Vec::with_capacity(3 * h * h);
            let mut qkv_bias = Vec::with_capacity(3 * h);
            for part in ["query", "key", "value"] {
                qkv.extend(get(&format!("{at}.attention.self.{part}.weight"), &[h, h])?);
                qkv_bias.extend(get(&format!("{at}.attention.self.{part}.bias"), &[h])?);
            }
            let t = |name: &str, out: usize, inp: usize| -> Result<Packed, String> {
                let w = get(&format!("{at}.{name}"), &[out, inp])?;
                Ok(Packed::from_out_in(&w, out, inp))
            };
            layers.push(Layer {
                qkv: Packed::from_out_in(&qkv, 3 * h, h),
                qkv_bias,
                out: t("attention.output.dense.weight", h, h)?,
                out_bias: get(&format!("{at}.attention.output.dense.bias"), &[h])?,
                attention_norm: norm(&format!("{at}.attention.output"))?,
                up: t("intermediate.dense.weight", i, h)?,
                up_bias: get(&format!("{at}.intermediate.dense.bias"), &[i])?,
                down: t("output.dense.weight", h, i)?,
                down_bias: get(&format!("{at}.output.dense.bias"), &[h])?,
                output_norm: norm(&format!("{at}.output"))?,
            });
        }
        if config.type_vocab_size == 0 {
            return Err("`type_vocab_size` is 0: BERT needs token type 0's embedding".into());
        }
        let types = get(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, h],
        )?;
        Ok(Some(Bert {
            hidden: h,
            heads: config.num_attention_heads,
            intermediate: i,
            eps: config.layer_norm_eps as f32,
            vocab: config.vocab_size,
            positions: config.max_position_embeddings,
            word: get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position: get(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?,
            token_type: types[..h].to_vec(),
            embedding_norm: norm("embeddings")?,
            layers,
        }))
    }

    /// The mean of the last hidden states over each sentence's tokens
    /// (`[sentences, hidden]`, row-major), on this thread.
    pub(super) fn mean_pooled(&self, sentences: &[Vec<u32>]) -> Result<Vec<f32>, String> {
        self.mean_pooled_on(Isa::detected(), sentences)
    }

    /// [`Bert::mean_pooled`] on the given vector path (one of
    /// [`Isa::available`]); every path gives the same bits.
    pub(super) fn mean_pooled_on(
        &self,
        isa: Isa,
        sentences: &[Vec<u32>],
    ) -> Result<Vec<f32>, String> {
        let h = self.hidden;
        let tokens: usize = sentences.iter().map(Vec::len).sum();
        let mut x = vec![0f32; tokens * h];
        let mut row = 0;
        for ids in sentences {
            if ids.len() > self.positions {
                return Err(format!(
                    "a text of {} tokens is longer than the model's {} positions",
                    ids.len(),
                    self.positions
                ));
            }
            for (p, &id) in ids.iter().enumerate() {
                let id = id as usize;
                if id >= self.vocab {
                    return Err(format!(
                        "token id {id} is outside the model's vocabulary of {}",
                        self.vocab
                    ));
                }
                let out = &mut x[row * h..(row + 1) * h];
                let (word, position) = (&self.word[id * h..], &self.position[p * h..]);
                for (k, o) in out.iter_mut().enumerate() {
                    *o = word[k] + self.token_type[k] + position[k];
                }
                row += 1;
            }
        }
        let norm = &self.embedding_norm;
        layer_norm_on(isa, &mut x, &norm.weight, &norm.bias, self.eps);
        let longest = sentences.iter().map(Vec::len).max().unwrap_or(0);
        let mut scratch = Scratch::new(tokens, longest, h, self.intermediate);
        for layer in &self.layers {
            self.layer(isa, layer, sentences, &mut x, &mut scratch);
        }
        let mut pooled = vec![0f32; sentences.len() * h];
        let mut start = 0;
        for (ids, out) in sentences.iter().zip(pooled.chunks_exact_mut(h)) {
            for r in start..start + ids.len() {
                for (o, v) in out.iter_mut().zip(&x[r * h..(r + 1) * h]) {
                    *o += v;
                }
            }
            let count = (ids.len() as f32).max(1e-9);
            out.iter_mut().for_each(|o| *o /= count);
            start += ids.len();
        }
        Ok(pooled)
    }

    /// One encoder layer over the packed rows `x` (`[tokens, hidden]`), in
    /// place.
    fn layer(
        &self,
        isa: Isa,
        layer: &Layer,
        sentences: &[Vec<u32>],
        x: &mut Vec<f32>,
        s: &mut Scratch,
    ) {
        let h = self.hidden;
        let tokens = x.len() / h;
        // Q, K, V.
        fill_rows(&mut s.qkv, &layer.qkv_bias);
        layer.qkv.add_product_on(isa, &mut s.qkv, x);
        self.attention(isa, sentences, s);
        // Attention's output + bias + residual, normalised.
        add_rows(&mut s.y, x, &layer.out_bias);
        layer.out.add_product_on(isa, &mut s.y, &s.context);
        let norm = &layer.attention_norm;
        layer_norm_on(isa, &mut s.y, &norm.weight, &norm.bias, self.eps);
        std::mem::swap(x, &mut s.y);
        // Feed-forward: up, GELU, down + bias + residual, normalised.
        fill_rows(&mut s.inner, &layer.up_bias);
        layer.up.add_product_on(isa, &mut s.inner, x);
        gelu_on(isa, &mut s.inner);
        add_rows(&mut s.y, x, &layer.down_bias);
        layer.down.add_product_on(isa, &mut s.y, &s.inner);
        let norm = &layer.output_norm;
        layer_norm_on(isa, &mut s.y, &norm.weight, &norm.bias, self.eps);
        std::mem::swap(x, &mut s.y);
        debug_assert_eq!(x.len(), tokens * h);
    }

    /// Each head's attention inside each sentence, from `s.qkv` into
    /// `s.context`.
    fn attention(&self, isa: Isa, sentences: &[Vec<u32>], s: &mut Scratch) {
        let h = self.hidden;
        let width = h / self.heads;
        let mut start = 0;
        for ids in sentences {
            let n = ids.len();
            for head in 0..self.heads {
                let head = Head {
                    qkv: &s.qkv[start * 3 * h..(start + n) * 3 * h],
                    tokens: n,
                    stride: 3 * h,
                    width,
                    at: [head * width, h + head * width, 2 * h + head * width],
                    scale: (width as f32).sqrt(),
                };
                let out = &mut s.context[start * h + head.at[0]..];
                attend_on(isa, &head, &mut s.scores, &mut s.keys, out, h);
            }
            start += n;
        }
    }
}

/// Buffers a forward pass reuses from layer to layer.
struct Scratch {
    qkv: Vec<f32>,
    context: Vec<f32>,
    y: Vec<f32>,
    inner: Vec<f32>,
    /// A head's attention weights in one sentence.
    scores: Vec<f32>,
    /// A head's keys, width-major.
    keys: Vec<f32>,
}

impl Scratch {
    fn new(tokens: usize, longest: usize, hidden: usize, intermediate: usize) -> Scratch {
        Scratch {
            qkv: vec![0.0; tokens * 3 * hidden],
            context: vec![0.0; tokens * hidden],
            y: vec![0.0; tokens * hidden],
            inner: vec![0.0; tokens * intermediate],
            scores: vec![0.0; longest * longest],
            keys: vec![0.0; longest * hidden],
        }
    }
}

/// Every `bias.len()`-wide row of `out` set to `bias`.
fn fill_rows(out: &mut [f32], bias: &[f32]) {
    for row in out.chunks_exact_mut(bias.len()) {
        row.copy_from_slice(bias);
    }
}

/// Every row of `out` set to the same row of `x` plus `bias`.
fn add_rows(out: &mut [f32], x: &[f32], bias: &[f32]) {
    for (o, x) in out
        .chunks_exact_mut(bias.len())
        .zip(x.chunks_exact(bias.len()))
    {
        for ((o, x), b) in o.iter_mut().zip(x).zip(bias) {
            *o = x + b;
        }
    }
}
