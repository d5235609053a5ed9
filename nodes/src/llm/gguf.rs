//! Reading a llama-family language model from a GGUF file: its sizes,
//! weights, tokenizer data and chat template, with a sentence naming the
//! file and what is wrong when it is not one kiln can run.

use std::collections::HashMap;
use std::fs::File;
use std::io::Cursor;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, TensorInfo, Value as Meta};
use candle_core::quantized::GgmlDType;
use candle_core::Device;
use kiln_engine::NodeError;

use memmap2::Mmap;
#[cfg(unix)]
use memmap2::UncheckedAdvice;

use crate::quant::{QMatrix, Weights, BLOCK};

/// The architectures kiln runs.
pub const ARCHITECTURES: [&str; 1] = ["llama"];

/// A model's sizes.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Transformer blocks.
    pub layers: usize,
    /// Width of the residual stream.
    pub hidden: usize,
    /// Width of the feed-forward layer.
    pub ffn: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (fewer than `heads` with grouped-query attention).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Tokens in the vocabulary.
    pub vocab: usize,
    /// The longest sequence the model was trained on.
    pub context: usize,
    /// RoPE's base frequency.
    pub rope_base: f32,
    /// RMS norm's epsilon.
    pub eps: f32,
}

/// The tokenizer as a GGUF describes it.
#[derive(Clone, Debug)]
pub struct TokenizerData {
    /// `tokenizer.ggml.model` (`gpt2` for byte-level BPE).
    pub model: String,
    /// `tokenizer.ggml.pre`: which pre-tokenizer splits text before BPE.
    pub pre: String,
    /// Every token's text, by id.
    pub tokens: Vec<String>,
    /// Each token's type (1 normal, 3 control, 4 user-defined, …).
    pub types: Vec<i32>,
    /// BPE merges, `"a b"`, highest priority first.
    pub merges: Vec<String>,
    /// Beginning-of-sequence token.
    pub bos: Option<u32>,
    /// End-of-sequence token.
    pub eos: Option<u32>,
    /// Whether prompts start with `bos`.
    pub add_bos: bool,
}

/// What a GGUF file holds, read.
pub struct GgufModel {
    /// Sizes.
    pub config: LlamaConfig,
    /// The weights, read when asked for.
    pub tensors: Tensors,
    /// Tokenizer data.
    pub tokenizer: TokenizerData,
    /// The chat template (Jinja), if the file has one.
    pub chat_template: Option<String>,
    /// `general.name`.
    pub name: String,
}

/// A GGUF file's tensors, read from a memory map of the file: each weight
/// matrix is built straight from the file's bytes (parts stacked as they are
/// read), so loading allocates the model and nothing it then throws away,
/// and the pages a matrix was built from are handed back to the kernel as
/// soon as it is built: the file and the model it becomes are never both
/// resident (the peak of loading is the model plus one matrix's bytes).
pub struct Tensors {
    map: Mmap,
    infos: HashMap<String, TensorInfo>,
    /// Where tensor data starts in the file.
    data_at: usize,
    shown: String,
}

impl Tensors {
    /// Whether the file has tensor `name`.
    pub fn has(&self, name: &str) -> bool {
        self.infos.contains_key(name)
    }

    fn info(&self, name: &str) -> Result<&TensorInfo, NodeError> {
        self.infos
            .get(name)
            .ok_or_else(|| NodeError::new(format!("the model file has no tensor `{name}`")))
    }

    /// The bytes of tensor `name`, as the file stores them.
    fn bytes(&self, name: &str) -> Result<&[u8], NodeError> {
        let info = self.info(name)?;
        let dtype = info.ggml_dtype;
        let size = info.shape.elem_count() / dtype.block_size() * dtype.type_size();
        let at = self.data_at.checked_add(info.offset as usize);
        let range = at.and_then(|at| Some(at..at.checked_add(size)?));
        range.and_then(|r| self.map.get(r)).ok_or_else(|| {
            NodeError::new(format!(
                "`{}` ends inside tensor `{name}`: the file is cut short",
                self.shown
            ))
        })
    }

    /// Tensor `name` decoded to f32 by candle (formats kiln has no kernel for).
    fn decoded(&self, name: &str) -> Result<Vec<f32>, NodeError> {
        let info = self.info(name)?;
        let bad = |e: candle_core::Error| {
            NodeError::new(format!(
                "cannot decode tensor `{name}` of `{}`: {e}",
                self.shown
            ))
        };
        let tensor = info
            .read(
                &mut Cursor::new(&self.map[..]),
                self.data_at as u64,
                &Device::Cpu,
            )
            .map_err(bad)?;
        let v = tensor.dequantize(&Device::Cpu).map_err(bad)?;
        v.flatten_all().and_then(|v| v.to_vec1()).map_err(bad)
    }

    /// Tensor `name` as candle's quantized tensor on `device`, in the
    /// file's own format (the forward pass on a GPU).
    pub fn qtensor(
        &self,
        name: &str,
        device: &Device,
    ) -> Result<candle_core::quantized::QTensor, NodeError> {
        self.info(name)?
            .read(&mut Cursor::new(&self.map[..]), self.data_at as u64, device)
            .map_err(|e| {
                NodeError::new(format!(
                    "cannot place tensor `{name}` of `{}` on the device: {e}",
                    self.shown
                ))
            })
    }

    /// The vector (a norm's weights) `name`.
    pub fn vector(&self, name: &str) -> Result<Vec<f32>, NodeError> {
        let dims = self.info(name)?.shape.dims().to_vec();
        if dims.len() != 1 {
            return Err(NodeError::new(format!(
                "tensor `{name}` of `{}` has shape {dims:?}; it should be a vector",
                self.shown
            )));
        }
        let vector = match self.info(name)?.ggml_dtype {
            GgmlDType::F32 => self
                .bytes(name)?
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            _ => self.decoded(name)?,
        };
        self.release(name);
        Ok(vector)
    }

    /// The matrices `names` (same columns), their rows one after the other.
    pub fn matrix(&self, names: &[&str]) -> Result<QMatrix, NodeError> {
        let mut cols = None;
        let mut dtypes = Vec::new();
        for name in names {
            let dims = self.info(name)?.shape.dims().to_vec();
            let [_, c] = dims[..] else {
                return Err(NodeError::new(format!(
                    "tensor `{name}` of `{}` has shape {dims:?}; a llama model's weights are matrices",
                    self.shown
                )));
            };
            if cols.is_some_and(|cols| cols != c) {
                return Err(NodeError::new(format!(
                    "tensor `{name}` of `{}` has {c} columns where `{}` has {}",
                    self.shown,
                    names[0],
                    cols.unwrap_or_default()
                )));
            }
            cols = Some(c);
            dtypes.push(self.info(name)?.ggml_dtype);
        }
        let cols = cols.unwrap_or_default();
        let all = |d: GgmlDType| dtypes.iter().all(|&t| t == d) && cols.is_multiple_of(BLOCK);
        let parts = || {
            names
                .iter()
                .map(|n| self.bytes(n))
                .collect::<Result<Vec<_>, _>>()
        };
        let matrix = if all(GgmlDType::Q4_1) {
            QMatrix::from_q4_1(cols, &parts()?)
        } else if all(GgmlDType::Q8_0) {
            QMatrix::from_q8_0(cols, &parts()?)
        } else {
            let mut values = Vec::new();
            for name in names {
                values.extend(self.decoded(name)?);
            }
            QMatrix {
                rows: values.len() / cols.max(1),
                cols,
                weights: Weights::F32(values),
            }
        };
        for name in names {
            self.release(name);
        }
        Ok(matrix)
    }

    /// Bytes of the file's map resident in this process (Linux's
    /// `/proc/self/smaps`), for the test that loading gives them back.
    #[cfg(all(test, target_os = "linux"))]
    pub fn resident_bytes(&self) -> usize {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let start = format!("{:x}-", self.map.as_ptr() as usize);
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
        let kib = lines
            .find_map(|l| l.strip_prefix("Rss:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
            .expect("the map's Rss line");
        kib * 1024
    }

    /// Hands the pages of tensor `name` back to the kernel: they were
    /// copied into a matrix, and another read (a GPU placing the model)
    /// faults them in again from the file.
    fn release(&self, name: &str) {
        let Ok(bytes) = self.bytes(name) else { return };
        let offset = bytes.as_ptr() as usize - self.map.as_ptr() as usize;
        // SAFETY: the map is private and read-only, so no page of it holds
        // bytes of our own: the kernel drops the pages, and any later read
        // through the map, or through a slice borrowed from it, faults in
        // the file's bytes again, the same ones (on a file changed
        // meanwhile, see `header`).
        #[cfg(unix)]
        let _ = unsafe {
            self.map
                .unchecked_advise_range(UncheckedAdvice::DontNeed, offset, bytes.len())
        };
    }
}

/// Maps `path` and reads its header: its metadata and tensor list.
fn header(path: &Path) -> Result<(Mmap, Content), NodeError> {
    let shown = path.display();
    let file =
        File::open(path).map_err(|e| NodeError::new(format!("cannot open `{shown}`: {e}")))?;
    // SAFETY: the map lives only while the model is built, and is only
    // read. A file truncated by another process during those seconds would
    // fault the process (SIGBUS), and one rewritten in place would give
    // mixed weights, as with llama.cpp's and safetensors' maps.
    let map = unsafe { Mmap::map(&file) }
        .map_err(|e| NodeError::new(format!("cannot read `{shown}`: {e}")))?;
    let content = Content::read(&mut Cursor::new(&map[..]))
        .map_err(|e| NodeError::new(format!("`{shown}` is not a GGUF model file: {e}")))?;
    Ok((map, content))
}

/// Checks that `path` is a GGUF file of an architecture kiln runs (reads
/// its header only).
pub fn check_architecture(path: &Path) -> Result<(), NodeError> {
    let (_, content) = header(path)?;
    architecture(&content, path).map(|_| ())
}

fn architecture(content: &Content, path: &Path) -> Result<String, NodeError> {
    let meta = Metadata {
        content,
        shown: path.display().to_string(),
    };
    let arch = meta.string("general.architecture")?;
    if !ARCHITECTURES.contains(&arch.as_str()) {
        return Err(NodeError::new(format!(
            "`{}` is a `{arch}` model; kiln runs GGUF language models of the {} architecture (Llama, SmolLM, TinyLlama and other files that say `llama`)",
            path.display(),
            ARCHITECTURES.join(", ")
        )));
    }
    Ok(arch)
}

/// Reads `path`.
pub fn read(path: &Path) -> Result<GgufModel, NodeError> {
    let shown = path.display();
    let (map, content) = header(path)?;
    let arch = architecture(&content, path)?;
    let meta = Metadata {
        content: &content,
        shown: shown.to_string(),
    };
    let key = |k: &str| format!("{arch}.{k}");
    let hidden = meta.usize(&key("embedding_length"))?;
    let heads = meta.usize(&key("attention.head_count"))?;
    let head_dim = hidden / heads.max(1);
    let tokens = meta.strings("tokenizer.ggml.tokens")?;
    let config = LlamaConfig {
        layers: meta.usize(&key("block_count"))?,
        hidden,
        ffn: meta.usize(&key("feed_forward_length"))?,
        heads,
        kv_heads: meta.usize_or(&key("attention.head_count_kv"), heads),
        head_dim,
        vocab: meta.usize_or(&key("vocab_size"), tokens.len()),
        context: meta.usize_or(&key("context_length"), 2048),
        rope_base: meta.f32_or(&key("rope.freq_base"), 10_000.0),
        eps: meta.f32_or(&key("attention.layer_norm_rms_epsilon"), 1e-5),
    };
    let rope_dims = meta.usize_or(&key("rope.dimension_count"), head_dim);
    if heads == 0 || config.kv_heads == 0 || heads % config.kv_heads != 0 || rope_dims != head_dim {
        return Err(NodeError::new(format!(
            "`{shown}` has {heads} query heads, {} key/value heads and RoPE over {rope_dims} of {head_dim} dimensions; kiln runs models whose query heads are a multiple of the key/value heads, with RoPE over whole heads",
            config.kv_heads
        )));
    }
    let tokenizer = TokenizerData {
        model: meta.string("tokenizer.ggml.model")?,
        pre: meta.string_or("tokenizer.ggml.pre", "default"),
        types: meta.ints_or("tokenizer.ggml.token_type", tokens.len()),
        merges: meta.strings("tokenizer.ggml.merges").unwrap_or_default(),
        bos: meta.u32_opt("tokenizer.ggml.bos_token_id"),
        eos: meta.u32_opt("tokenizer.ggml.eos_token_id"),
        add_bos: meta.bool_or("tokenizer.ggml.add_bos_token", false),
        tokens,
    };
    let chat_template = meta.string("tokenizer.chat_template").ok();
    let name = meta.string_or("general.name", "a language model");
    Ok(GgufModel {
        config,
        tokenizer,
        chat_template,
        name,
        tensors: Tensors {
            data_at: content.tensor_data_offset as usize,
            infos: content.tensor_infos,
            map,
            shown: shown.to_string(),
        },
    })
}

/// Typed reads of the metadata, with errors naming the file and the key.
struct Metadata<'a> {
    content: &'a Content,
    shown: String,
}

impl Metadata<'_> {
    fn get(&self, key: &str) -> Result<&Meta, NodeError> {
        self.content.metadata.get(key).ok_or_else(|| {
            NodeError::new(format!(
                "`{}` has no `{key}` in its metadata; is it a complete GGUF model?",
                self.shown
            ))
        })
    }

    fn wrong(&self, key: &str, want: &str) -> NodeError {
        NodeError::new(format!("`{}`: metadata `{key}` is not {want}", self.shown))
    }

    fn string(&self, key: &str) -> Result<String, NodeError> {
        self.get(key)?
            .to_string()
            .cloned()
            .map_err(|_| self.wrong(key, "a string"))
    }

    fn string_or(&self, key: &str, default: &str) -> String {
        self.string(key).unwrap_or_else(|_| default.to_string())
    }

    fn usize(&self, key: &str) -> Result<usize, NodeError> {
        let v = self.get(key)?;
        v.to_u64()
            .map(|n| n as usize)
            .or_else(|_| v.to_u32().map(|n| n as usize))
            .or_else(|_| v.to_i32().map(|n| n.max(0) as usize))
            .map_err(|_| self.wrong(key, "a count"))
    }

    fn usize_or(&self, key: &str, default: usize) -> usize {
        self.usize(key).unwrap_or(default)
    }

    fn u32_opt(&self, key: &str) -> Option<u32> {
        self.usize(key).ok().map(|n| n as u32)
    }

    fn f32_or(&self, key: &str, default: f32) -> f32 {
        self.content
            .metadata
            .get(key)
            .and_then(|v| v.to_f32().ok())
            .unwrap_or(default)
    }

    fn bool_or(&self, key: &str, default: bool) -> bool {
        self.content
            .metadata
            .get(key)
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(default)
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, NodeError> {
        let list = self
            .get(key)?
            .to_vec()
            .map_err(|_| self.wrong(key, "a list"))?;
        list.iter()
            .map(|v| {
                v.to_string()
                    .cloned()
                    .map_err(|_| self.wrong(key, "a list of strings"))
            })
            .collect()
    }

    fn ints_or(&self, key: &str, n: usize) -> Vec<i32> {
        let read = || -> Option<Vec<i32>> {
            let list = self.content.metadata.get(key)?.to_vec().ok()?;
            list.iter().map(|v| v.to_i32().ok()).collect()
        };
        read().unwrap_or_else(|| vec![1; n])
    }
}
