//! A llama-family decoder: the forward pass over several sequences at once,
//! each with its own key/value cache.
//!
//! Every sequence's new tokens (a whole prompt, or one decoded token) are
//! stacked into one matrix, so the weight products run once per step for
//! all of them; attention runs per sequence over its own cache.
//!
//! The arithmetic follows llama.cpp's where it rounds: keys and values kept
//! in f16, queries and attention weights rounded to f16 where they meet
//! them, activations quantized to 8 bits with f16 scales before each
//! product with quantized weights, RoPE's angle stepped pair by pair. On
//! llama.cpp's own greedy answers this keeps kiln's top token equal at
//! over 98% of positions (tests/fixtures, `llm::tests`).

use kiln_engine::NodeError;
use rayon::prelude::*;

use super::gguf::{GgufModel, LlamaConfig};
use super::on_device::{self, DeviceKv, DeviceLlama, DeviceSeq};
use crate::quant::{round_to_f16, scores_f16, to_f16_bits, weighted_sum_f16, QMatrix, Scratch};

/// A loaded model.
pub struct Llama {
    /// Sizes.
    pub config: LlamaConfig,
    embed: QMatrix,
    /// The output projection; `None` when tied to the embedding.
    output: Option<QMatrix>,
    out_norm: Vec<f32>,
    layers: Vec<Layer>,
    /// RoPE's frequency per pair of a head's dimensions.
    inv_freq: Vec<f32>,
    /// The weights on a GPU, when the model runs there (the embedding
    /// lookup and RoPE tables stay here).
    on_device: Option<DeviceLlama>,
}

struct Layer {
    attn_norm: Vec<f32>,
    /// Query, key and value projections stacked: one product for the three.
    qkv: QMatrix,
    wo: QMatrix,
    ffn_norm: Vec<f32>,
    /// Gate and up projections stacked.
    gate_up: QMatrix,
    down: QMatrix,
}

/// One sequence's keys and values so far, per layer.
#[derive(Clone, Default)]
pub struct KvCache {
    /// Per layer and key-value head (`layer · kv_heads + head`), each
    /// position's key (then value) as f16 bits. A head's positions lie one
    /// after the other, so attention reads them as one stream: with a
    /// position's heads side by side, each head's pass skipped over the
    /// others' and waited on memory (SmolLM2, eight sequences decoding
    /// together, Zen 4: the keys' scores 27% of a step, now 8%).
    k: Vec<Vec<u16>>,
    v: Vec<Vec<u16>>,
    /// The same on the GPU, when the model runs there.
    pub(super) on_device: DeviceKv,
    len: usize,
}

impl KvCache {
    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room for `positions` positions of `model`, taken at once: a cache
    /// that grows by doubling copies itself as it goes and may end up
    /// holding twice what it uses.
    pub fn with_capacity(model: &Llama, positions: usize) -> KvCache {
        if model.on_device.is_some() {
            // The keys and values live on the device.
            return KvCache::default();
        }
        let c = &model.config;
        let head = || Vec::with_capacity(positions * c.head_dim);
        let heads = c.layers * c.kv_heads;
        KvCache {
            k: (0..heads).map(|_| head()).collect(),
            v: (0..heads).map(|_| head()).collect(),
            on_device: Vec::new(),
            len: 0,
        }
    }

    /// Bytes held (here and on the device).
    pub fn bytes(&self) -> usize {
        let here: usize = self.k.iter().chain(&self.v).map(|l| l.capacity() * 2).sum();
        here + on_device::bytes(&self.on_device)
    }
}

/// What a step asks of the forward pass: logits at its last position or at
/// every one, or its hidden states pooled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// The last one (generation).
    Last,
    /// Every one (scoring a text).
    All,
    /// None: the mean of the step's last hidden states after the output
    /// norm instead (`hidden` values), for embeddings.
    Pooled,
}

/// One sequence's part of a forward step: its cache and its new tokens.
pub struct Step<'a> {
    /// The sequence's cache; the step appends to it.
    pub cache: &'a mut KvCache,
    /// New tokens (at least one).
    pub tokens: &'a [u32],
    /// Which logits to return (or the pooled hidden states).
    pub logits: Logits,
}

impl Llama {
    /// The model in a read GGUF, run on `device` (kiln's kernels on the
    /// CPU, candle's ops elsewhere).
    pub fn from_gguf(g: &GgufModel, device: &candle_core::Device) -> Result<Llama, NodeError> {
        let c = g.config.clone();
        let t = &g.tensors;
        let embed = t.matrix(&["token_embd.weight"])?;
        // Absent when the output projection is tied to the embedding.
        let output = match t.has("output.weight") {
            true => Some(t.matrix(&["output.weight"])?),
            false => None,
        };
        let mut layers = Vec::with_capacity(c.layers);
        for l in 0..c.layers {
            let name = |n: &str| format!("blk.{l}.{n}.weight");
            let matrix = |ns: &[&str]| {
                let names: Vec<String> = ns.iter().map(|n| name(n)).collect();
                t.matrix(&names.iter().map(String::as_str).collect::<Vec<_>>())
            };
            layers.push(Layer {
                attn_norm: t.vector(&name("attn_norm"))?,
                ffn_norm: t.vector(&name("ffn_norm"))?,
                qkv: matrix(&["attn_q", "attn_k", "attn_v"])?,
                wo: matrix(&["attn_output"])?,
                gate_up: matrix(&["ffn_gate", "ffn_up"])?,
                down: matrix(&["ffn_down"])?,
            });
        }
        let model = Llama {
            inv_freq: (0..c.head_dim / 2)
                .map(|i| c.rope_base.powf(-2.0 * i as f32 / c.head_dim as f32))
                .collect(),
            out_norm: t.vector("output_norm.weight")?,
            config: c,
            embed,
            output,
            layers,
            on_device: None,
        };
        model.check_shapes()?;
        let (layers, on_device) = match device.is_cpu() {
            true => (model.layers, None),
            // The blocks run from the device's copy: only the embedding
            // lookup (and the sizes) stay here.
            false => (Vec::new(), Some(DeviceLlama::from_gguf(g, device)?)),
        };
        Ok(Llama {
            layers,
            on_device,
            ..model
        })
    }

    fn check_shapes(&self) -> Result<(), NodeError> {
        let c = &self.config;
        let (q, kv) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let wrong = |what: &str, got: (usize, usize), want: (usize, usize)| {
            NodeError::new(format!(
                "the model file's {what} is {}×{}, where its sizes call for {}×{}",
                got.0, got.1, want.0, want.1
            ))
        };
        let shape = |m: &QMatrix| (m.rows, m.cols);
        if shape(&self.embed).1 != c.hidden {
            return Err(wrong(
                "token embedding",
                shape(&self.embed),
                (c.vocab, c.hidden),
            ));
        }
        for l in &self.layers {
            for (what, m, want) in [
                ("attention", &l.qkv, (q + 2 * kv, c.hidden)),
                ("attention output", &l.wo, (c.hidden, q)),
                ("feed-forward", &l.gate_up, (2 * c.ffn, c.hidden)),
                ("feed-forward output", &l.down, (c.hidden, c.ffn)),
            ] {
                if shape(m) != want || !m.cols.is_multiple_of(crate::quant::BLOCK) {
                    return Err(wrong(what, shape(m), want));
                }
            }
        }
        Ok(())
    }

    /// Rows of the vocabulary the output gives logits for.
    pub fn vocab(&self) -> usize {
        self.output.as_ref().unwrap_or(&self.embed).rows
    }

    /// Bytes the weights take in memory.
    pub fn bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| l.qkv.bytes() + l.wo.bytes() + l.gate_up.bytes() + l.down.bytes())
            .sum();
        layers + self.embed.bytes() + self.output.as_ref().map_or(0, QMatrix::bytes)
    }

    /// Runs the new tokens of every step; returns each step's logits
    /// (`vocab` values for [`Logits::Last`], one row per token for
    /// [`Logits::All`]) or its pooled hidden states (`hidden` values for
    /// [`Logits::Pooled`]). Tokens must be below [`Llama::vocab`].
    pub fn forward(&self, steps: &mut [Step<'_>]) -> Result<Vec<Vec<f32>>, NodeError> {
        match &self.on_device {
            Some(device) => self.forward_on(device, steps).map_err(|e| {
                NodeError::new(format!(
                    "the language model's forward pass on {:?} failed: {e}",
                    device.device().location()
                ))
            }),
            // On a pool thread: the products, norms and attention below
            // hand work to the pool hundreds of times a step, which costs a
            // thread wake-up each when asked from outside it.
            None => Ok(rayon::scope(|_| self.forward_on_pool(steps))),
        }
    }

    /// The forward pass with candle's ops on `device` (a GPU, or the CPU in
    /// the tests that check it against kiln's kernels).
    fn forward_on(
        &self,
        device: &DeviceLlama,
        steps: &mut [Step<'_>],
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        let rows = rows_of(steps);
        let x = self.embedded(steps);
        let tables = self.rope_tables(&rows);
        let (wanted, pooled) = wanted_and_pooled(steps);
        let mut seqs: Vec<DeviceSeq<'_>> = steps
            .iter_mut()
            .map(|s| DeviceSeq {
                rows: s.tokens.len(),
                start: s.cache.len,
                kv: &mut s.cache.on_device,
            })
            .collect();
        let (logits, hidden) =
            device.forward(&self.config, &mut seqs, x, tables, &wanted, &pooled)?;
        drop(seqs);
        for step in steps.iter_mut() {
            step.cache.len += step.tokens.len();
        }
        Ok(self.assemble(steps, &logits, &hidden))
    }

    /// Test-only: the same model run by candle's ops on `device` (the GPU
    /// path, checked on the CPU).
    #[cfg(test)]
    pub(super) fn with_device_path(
        self,
        g: &GgufModel,
        device: &candle_core::Device,
    ) -> Result<Llama, NodeError> {
        Ok(Llama {
            on_device: Some(DeviceLlama::from_gguf(g, device)?),
            ..self
        })
    }

    /// The new tokens' embeddings, one row per token, step after step.
    fn embedded(&self, steps: &[Step<'_>]) -> Vec<f32> {
        steps
            .iter()
            .flat_map(|s| {
                s.tokens
                    .iter()
                    .flat_map(|&tok| self.embed.row_f32(tok as usize))
            })
            .collect()
    }

    /// Each step's answer from the wanted rows' logits and the pooled rows'
    /// normed hidden states (in step order).
    fn assemble(&self, steps: &[Step<'_>], logits: &[f32], hidden: &[f32]) -> Vec<Vec<f32>> {
        let (vocab, width) = (self.vocab(), self.config.hidden);
        let mut out = Vec::with_capacity(steps.len());
        let (mut at, mut pooled_at) = (0, 0);
        for step in steps {
            let n = step.tokens.len();
            match step.logits {
                Logits::Pooled => {
                    let rows = &hidden[pooled_at * width..(pooled_at + n) * width];
                    let mut mean = vec![0f32; width];
                    for row in rows.chunks_exact(width) {
                        for (m, v) in mean.iter_mut().zip(row) {
                            *m += v;
                        }
                    }
                    mean.iter_mut().for_each(|m| *m /= n as f32);
                    out.push(mean);
                    pooled_at += n;
                }
                Logits::Last | Logits::All => {
                    let n = if step.logits == Logits::Last { 1 } else { n };
                    out.push(logits[at * vocab..(at + n) * vocab].to_vec());
                    at += n;
                }
            }
        }
        out
    }

    fn forward_on_pool(&self, steps: &mut [Step<'_>]) -> Vec<Vec<f32>> {
        let c = &self.config;
        let (hd, q_dim, kv_dim) = (c.head_dim, c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let rows = rows_of(steps);
        let t = rows.len();
        let mut x = self.embedded(steps);
        let mut h = vec![0f32; t * c.hidden];
        let mut qkv = vec![0f32; t * (q_dim + 2 * kv_dim)];
        let mut attn = vec![0f32; t * q_dim];
        let mut proj = vec![0f32; t * c.hidden];
        let mut gu = vec![0f32; t * 2 * c.ffn];
        let mut act = vec![0f32; t * c.ffn];
        let mut scratch = Scratch::default();
        let (cos, sin) = self.rope_tables(&rows);
        for step in steps.iter_mut() {
            if step.cache.k.len() != c.layers * c.kv_heads {
                step.cache.k = vec![Vec::new(); c.layers * c.kv_heads];
                step.cache.v = vec![Vec::new(); c.layers * c.kv_heads];
            }
        }
        for (l, layer) in self.layers.iter().enumerate() {
            rms_norm(&x, &layer.attn_norm, c.eps, &mut h);
            layer.qkv.matmul(&h, &mut qkv, &mut scratch);
            // RoPE on queries and keys; keys and values into the caches.
            qkv.par_chunks_mut(q_dim + 2 * kv_dim)
                .with_min_len(SMALL_ROWS)
                .enumerate()
                .for_each(|(r, row)| {
                    let (q, kv) = row.split_at_mut(q_dim);
                    let half = hd / 2;
                    let (cs, sn) = (
                        &cos[r * half..(r + 1) * half],
                        &sin[r * half..(r + 1) * half],
                    );
                    rope(q, hd, cs, sn);
                    rope(&mut kv[..kv_dim], hd, cs, sn);
                    // llama.cpp keeps keys and values in f16 and rounds
                    // the queries to f16 for their product with the keys.
                    round_to_f16(row);
                });
            let heads = l * c.kv_heads..(l + 1) * c.kv_heads;
            let mut offset = 0;
            for step in steps.iter_mut() {
                let n = step.tokens.len();
                let (k, v) = (
                    &mut step.cache.k[heads.clone()],
                    &mut step.cache.v[heads.clone()],
                );
                for r in offset..offset + n {
                    let row =
                        &qkv[r * (q_dim + 2 * kv_dim) + q_dim..(r + 1) * (q_dim + 2 * kv_dim)];
                    let (keys, values) = row.split_at(kv_dim);
                    for (h, (k, v)) in k.iter_mut().zip(v.iter_mut()).enumerate() {
                        to_f16_bits(&keys[h * hd..(h + 1) * hd], k);
                        to_f16_bits(&values[h * hd..(h + 1) * hd], v);
                    }
                }
                offset += n;
            }
            let caches: Vec<&KvCache> = steps.iter().map(|s| &*s.cache).collect();
            let qkv_ref = &qkv;
            attn.par_chunks_mut(q_dim).enumerate().for_each(|(r, out)| {
                let (s, pos) = rows[r];
                let q = &qkv_ref[r * (q_dim + 2 * kv_dim)..r * (q_dim + 2 * kv_dim) + q_dim];
                let (k, v) = (&caches[s].k[heads.clone()], &caches[s].v[heads.clone()]);
                attend(c, q, k, v, pos + 1, out);
            });
            layer.wo.matmul(&attn, &mut proj, &mut scratch);
            add(&mut x, &proj);
            rms_norm(&x, &layer.ffn_norm, c.eps, &mut h);
            layer.gate_up.matmul(&h, &mut gu, &mut scratch);
            act.par_chunks_mut(c.ffn)
                .zip(gu.par_chunks(2 * c.ffn))
                .with_min_len(SMALL_ROWS / 4)
                .for_each(|(a, g)| {
                    let (gate, up) = g.split_at(c.ffn);
                    for ((a, &g), &u) in a.iter_mut().zip(gate).zip(up) {
                        *a = g / (1.0 + (-g).exp()) * u;
                    }
                });
            layer.down.matmul(&act, &mut proj, &mut scratch);
            add(&mut x, &proj);
        }
        for step in steps.iter_mut() {
            step.cache.len += step.tokens.len();
        }
        // The rows that want logits, and the pooled ones: all normed.
        let (wanted, pooled) = wanted_and_pooled(steps);
        let normed_rows = |rows: &[usize]| {
            let picked: Vec<f32> = rows
                .iter()
                .flat_map(|&r| x[r * c.hidden..(r + 1) * c.hidden].iter().copied())
                .collect();
            let mut normed = vec![0f32; picked.len()];
            rms_norm(&picked, &self.out_norm, c.eps, &mut normed);
            normed
        };
        let head = self.output.as_ref().unwrap_or(&self.embed);
        let mut logits = vec![0f32; wanted.len() * head.rows];
        if !wanted.is_empty() {
            head.matmul(&normed_rows(&wanted), &mut logits, &mut scratch);
        }
        let hidden = normed_rows(&pooled);
        self.assemble(steps, &logits, &hidden)
    }

    /// cos and sin of each row's position times each frequency, the angle
    /// stepped from pair to pair as llama.cpp steps it.
    fn rope_tables(&self, rows: &[(usize, usize)]) -> (Vec<f32>, Vec<f32>) {
        let n = self.inv_freq.len();
        let step = self
            .config
            .rope_base
            .powf(-2.0 / self.config.head_dim as f32);
        let mut cos = Vec::with_capacity(rows.len() * n);
        let mut sin = Vec::with_capacity(rows.len() * n);
        for &(_, pos) in rows {
            let mut theta = pos as f32;
            for _ in 0..n {
                let (s, c) = theta.sin_cos();
                cos.push(c);
                sin.push(s);
                theta *= step;
            }
        }
        (cos, sin)
    }
}

/// Which rows (of all the steps' new tokens) want logits, and which are
/// pooled.
fn wanted_and_pooled(steps: &[Step<'_>]) -> (Vec<usize>, Vec<usize>) {
    let mut wanted = Vec::new();
    let mut pooled = Vec::new();
    let mut offset = 0;
    for step in steps {
        let n = step.tokens.len();
        match step.logits {
            Logits::Last => wanted.push(offset + n - 1),
            Logits::All => wanted.extend(offset..offset + n),
            Logits::Pooled => pooled.extend(offset..offset + n),
        }
        offset += n;
    }
    (wanted, pooled)
}

/// Each new token's sequence and position, step after step.
fn rows_of(steps: &[Step<'_>]) -> Vec<(usize, usize)> {
    let mut rows = Vec::new();
    for (s, step) in steps.iter().enumerate() {
        let start = step.cache.len;
        rows.extend((0..step.tokens.len()).map(|i| (s, start + i)));
    }
    rows
}

/// Rows of a cheap row-wise step (a norm, a rotation) one task takes: a
/// decoding step's few rows stay on one thread rather than waking another.
const SMALL_ROWS: usize = 16;

/// RMS norm of each row of `x` (rows of `w.len()` values) into `out`.
fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    out.par_chunks_mut(w.len())
        .zip(x.par_chunks(w.len()))
        .with_min_len(SMALL_ROWS)
        .for_each(|(o, x)| {
            let mean = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
            let scale = 1.0 / (mean + eps).sqrt();
            for ((o, &v), &w) in o.iter_mut().zip(x).zip(w) {
                *o = v * scale * w;
            }
        });
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Rotates each head of `v` (heads of `hd` values) by its position: pairs
/// of neighbouring dimensions, as GGUF llama files expect.
fn rope(v: &mut [f32], hd: usize, cos: &[f32], sin: &[f32]) {
    for head in v.chunks_exact_mut(hd) {
        for (i, pair) in head.chunks_exact_mut(2).enumerate() {
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * cos[i] - b * sin[i];
            pair[1] = a * sin[i] + b * cos[i];
        }
    }
}

/// One row's attention over the first `len` cached positions, every head
/// (`k`, `v`: the layer's cached heads): each cached head read once for the
/// query heads that share it.
fn attend(c: &LlamaConfig, q: &[f32], k: &[Vec<u16>], v: &[Vec<u16>], len: usize, out: &mut [f32]) {
    let hd = c.head_dim;
    let group = c.heads / c.kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut scores = vec![0f32; group * len];
    for kvh in 0..c.kv_heads {
        let heads = kvh * group * hd..(kvh + 1) * group * hd;
        scores_f16(&q[heads.clone()], group, &k[kvh], hd, scale, &mut scores);
        crate::nn::softmax_rows(&mut scores, len);
        // As llama.cpp: the weights meet the f16 values in f16.
        round_to_f16(&mut scores);
        weighted_sum_f16(&scores, group, &v[kvh], hd, &mut out[heads]);
    }
}
