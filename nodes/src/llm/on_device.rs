//! The forward pass on a GPU: the same llama network as [`super::model`],
//! composed of candle's ops (its quantized products, RMS norm, rotary
//! embedding, softmax), with each sequence's keys and values kept on the
//! device.
//!
//! kiln's own kernels are CPU code; this path is what runs when a language
//! model's node is placed on `cuda`. It rounds where the CPU path rounds
//! (keys, values and queries to f16, attention weights to f16 before they
//! meet the values) and takes the CPU path's RoPE tables, so the two agree
//! up to the order of sums and candle's activation rounding in its
//! quantized products; `llm::tests` checks that on the CPU, where candle's
//! ops run too.

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Tensor};
use kiln_engine::NodeError;

use super::gguf::{GgufModel, LlamaConfig};

/// The network's weights on one device.
pub struct DeviceLlama {
    device: Device,
    layers: Vec<DeviceLayer>,
    out_norm: Tensor,
    /// The output projection (the token embedding when the file ties them).
    head: QMatMul,
}

struct DeviceLayer {
    attn_norm: Tensor,
    q: QMatMul,
    k: QMatMul,
    v: QMatMul,
    wo: QMatMul,
    ffn_norm: Tensor,
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
}

/// One sequence's keys and values on the device, per layer: `[kv_heads,
/// positions, head_dim]` in f16.
pub type DeviceKv = Vec<Option<(Tensor, Tensor)>>;

/// One sequence's part of a step: its new rows (consecutive, in sequence
/// order), the position of the first, and its cache.
pub struct DeviceSeq<'a> {
    /// New tokens.
    pub rows: usize,
    /// Positions already cached.
    pub start: usize,
    /// The keys and values so far; the step appends to them.
    pub kv: &'a mut DeviceKv,
}

impl DeviceLlama {
    /// The weights of `g` placed on `device`.
    pub fn from_gguf(g: &GgufModel, device: &Device) -> Result<DeviceLlama, NodeError> {
        let t = &g.tensors;
        let matmul = |name: &str| {
            QMatMul::from_qtensor(t.qtensor(name, device)?).map_err(|e| device_error(&e))
        };
        let vector =
            |name: &str| Tensor::new(t.vector(name)?, device).map_err(|e| device_error(&e));
        let mut layers = Vec::with_capacity(g.config.layers);
        for l in 0..g.config.layers {
            let name = |n: &str| format!("blk.{l}.{n}.weight");
            layers.push(DeviceLayer {
                attn_norm: vector(&name("attn_norm"))?,
                q: matmul(&name("attn_q"))?,
                k: matmul(&name("attn_k"))?,
                v: matmul(&name("attn_v"))?,
                wo: matmul(&name("attn_output"))?,
                ffn_norm: vector(&name("ffn_norm"))?,
                gate: matmul(&name("ffn_gate"))?,
                up: matmul(&name("ffn_up"))?,
                down: matmul(&name("ffn_down"))?,
            });
        }
        let head = match t.has("output.weight") {
            true => matmul("output.weight")?,
            false => matmul("token_embd.weight")?,
        };
        Ok(DeviceLlama {
            device: device.clone(),
            layers,
            out_norm: vector("output_norm.weight")?,
            head,
        })
    }

    /// The device the weights are on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// One forward step over every sequence (see `Llama::forward`): `x` is
    /// the new tokens' embeddings (`rows × hidden`, host), `cos` and `sin`
    /// each row's RoPE table (`rows × head_dim / 2`). Returns, for the rows
    /// that want them, the logits (host, one row per wanted token) and the
    /// normed hidden states of the pooled rows.
    pub fn forward(
        &self,
        c: &LlamaConfig,
        seqs: &mut [DeviceSeq<'_>],
        x: Vec<f32>,
        (cos, sin): (Vec<f32>, Vec<f32>),
        wanted: &[usize],
        pooled: &[usize],
    ) -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
        let dev = &self.device;
        let (hd, heads, kv_heads) = (c.head_dim, c.heads, c.kv_heads);
        let rows = x.len() / c.hidden;
        let mut x = Tensor::from_vec(x, (rows, c.hidden), dev)?;
        let cos = Tensor::from_vec(cos, (rows, hd / 2), dev)?;
        let sin = Tensor::from_vec(sin, (rows, hd / 2), dev)?;
        for seq in seqs.iter_mut() {
            if seq.kv.len() != c.layers {
                *seq.kv = vec![None; c.layers];
            }
        }
        for (l, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, c.eps)?;
            // Each row its own position: rows as the sequence axis, one
            // batch, heads in between, as `rope_i` takes them.
            let rotate = |t: Tensor, n: usize| -> candle_core::Result<Tensor> {
                let t = t.reshape((rows, n, hd))?.transpose(0, 1)?.contiguous()?;
                candle_nn::rotary_emb::rope_i(&t.unsqueeze(0)?, &cos, &sin)?.squeeze(0)
            };
            let q = rounded_f16(&rotate(layer.q.forward(&h)?, heads)?)?;
            let k = rotate(layer.k.forward(&h)?, kv_heads)?.to_dtype(DType::F16)?;
            let v = layer
                .v
                .forward(&h)?
                .reshape((rows, kv_heads, hd))?
                .transpose(0, 1)?
                .to_dtype(DType::F16)?;
            let mut outs = Vec::with_capacity(seqs.len());
            let mut offset = 0;
            for seq in seqs.iter_mut() {
                let (n, start) = (seq.rows, seq.start);
                let (k_new, v_new) = (k.narrow(1, offset, n)?, v.narrow(1, offset, n)?);
                let (k_all, v_all) = match seq.kv[l].take() {
                    Some((k_old, v_old)) => (
                        Tensor::cat(&[&k_old, &k_new], 1)?,
                        Tensor::cat(&[&v_old, &v_new], 1)?,
                    ),
                    None => (k_new.contiguous()?, v_new.contiguous()?),
                };
                let q_s = q.narrow(1, offset, n)?;
                outs.push(attend(c, &q_s, &k_all, &v_all, start)?);
                seq.kv[l] = Some((k_all, v_all));
                offset += n;
            }
            let attn = Tensor::cat(&outs, 0)?;
            x = (x + layer.wo.forward(&attn)?)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, c.eps)?;
            let act = (layer.gate.forward(&h)?.silu()? * layer.up.forward(&h)?)?;
            x = (x + layer.down.forward(&act)?)?;
        }
        let normed = |picked: &[usize]| -> candle_core::Result<Option<Tensor>> {
            if picked.is_empty() {
                return Ok(None);
            }
            let at: Vec<u32> = picked.iter().map(|&r| r as u32).collect();
            let at = Tensor::new(at, dev)?;
            let rows = x.index_select(&at, 0)?;
            candle_nn::ops::rms_norm(&rows, &self.out_norm, c.eps).map(Some)
        };
        let host = |t: Option<Tensor>| -> candle_core::Result<Vec<f32>> {
            t.map_or(Ok(Vec::new()), |t| t.flatten_all()?.to_vec1())
        };
        let logits = match normed(wanted)? {
            Some(rows) => Some(self.head.forward(&rows)?),
            None => None,
        };
        Ok((host(logits)?, host(normed(pooled)?)?))
    }
}

/// Attention of one sequence's new rows (`q`: `[heads, n, head_dim]`) over
/// its cache (`[kv_heads, start + n, head_dim]`, f16), each row seeing the
/// positions up to its own: `[n, heads · head_dim]`.
fn attend(
    c: &LlamaConfig,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    start: usize,
) -> candle_core::Result<Tensor> {
    let (hd, heads, kv_heads) = (c.head_dim, c.heads, c.kv_heads);
    let group = heads / kv_heads;
    let n = q.dim(1)?;
    let len = k.dim(1)?;
    // Query heads that share a key/value head, side by side.
    let q = q.reshape((kv_heads, group * n, hd))?;
    let k = k.to_dtype(DType::F32)?;
    let v = v.to_dtype(DType::F32)?;
    let scale = 1.0 / (hd as f64).sqrt();
    let mut scores = (q.matmul(&k.t()?)? * scale)?;
    if n > 1 {
        // Row i (position start + i) sees positions up to start + i.
        let mask: Vec<f32> = (0..n)
            .flat_map(|i| {
                (0..len).map(move |j| {
                    if j > start + i {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
            })
            .collect();
        let mask = Tensor::from_vec(mask, (1, 1, n, len), q.device())?;
        scores = scores
            .reshape((kv_heads, group, n, len))?
            .broadcast_add(&mask)?
            .reshape((kv_heads, group * n, len))?;
    }
    let weights = rounded_f16(&candle_nn::ops::softmax_last_dim(&scores)?)?;
    weights
        .matmul(&v)?
        .reshape((heads, n, hd))?
        .transpose(0, 1)?
        .reshape((n, heads * hd))
}

/// Values rounded to f16 and back, as llama.cpp rounds them.
fn rounded_f16(t: &Tensor) -> candle_core::Result<Tensor> {
    t.to_dtype(DType::F16)?.to_dtype(DType::F32)
}

fn device_error(e: &dyn std::fmt::Display) -> NodeError {
    NodeError::new(format!("the language model on the device: {e}"))
}

/// Bytes a sequence's device cache holds.
pub fn bytes(kv: &DeviceKv) -> usize {
    kv.iter()
        .flatten()
        .map(|(k, v)| (k.elem_count() + v.elem_count()) * 2)
        .sum()
}
