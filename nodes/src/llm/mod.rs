//! Decoder language models from GGUF files (llama family): loading
//! ([`gguf`]), the quantized products ([`crate::quant`]), the forward pass over
//! several sequences at once ([`model`]), the tokenizer ([`tokenizer`]),
//! the chat template ([`template`]), sampling ([`sample`]), and generation
//! with continuous batching ([`generate`]), which both `infer.generate`
//! and `kiln serve`'s OpenAI-compatible routes use.

pub mod generate;
pub mod gguf;
pub mod model;
mod on_device;
pub mod sample;
pub mod template;
pub mod tokenizer;

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;
use kiln_engine::NodeError;

use crate::nn::kept::Kept;
use model::{KvCache, Llama, Logits, Step};
use template::{ChatTemplate, Message};
use tokenizer::LlmTokenizer;

/// Control tokens that end a turn, besides the model's end-of-sequence.
const END_OF_TURN: [&str; 4] = [
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end_of_text|>",
];

/// A language model ready to generate: weights, tokenizer, chat template.
pub struct LanguageModel {
    /// The network.
    pub model: Llama,
    /// Text to tokens and back.
    pub tokenizer: LlmTokenizer,
    template: ChatTemplate,
    /// `general.name` from the file.
    pub name: String,
    /// The GGUF file's content hash.
    pub content: String,
}

impl LanguageModel {
    /// Whether `path` names a GGUF file (by its extension).
    pub fn is_gguf(path: &Path) -> bool {
        path.extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    }

    /// The model in the GGUF file `path`, whose content hashes to `content`,
    /// to run on `device` (loaded once per content and device; the last two
    /// stay loaded).
    pub fn load(
        path: &Path,
        content: &str,
        device: &Device,
    ) -> Result<Arc<LanguageModel>, NodeError> {
        static LOADED: Kept<LanguageModel> = Kept::new(2);
        LOADED.get_or_load(content, device, || {
            LanguageModel::read(path, content, device)
        })
    }

    fn read(path: &Path, content: &str, device: &Device) -> Result<LanguageModel, NodeError> {
        let g = gguf::read(path)?;
        let beside = path.with_file_name("tokenizer.json");
        let tokenizer = LlmTokenizer::new(&g.tokenizer, Some(&beside))?;
        let text_of = |t: Option<u32>| {
            t.and_then(|t| g.tokenizer.tokens.get(t as usize).cloned())
                .unwrap_or_default()
        };
        let template = ChatTemplate::new(
            g.chat_template.as_deref(),
            &text_of(g.tokenizer.bos),
            &text_of(g.tokenizer.eos),
        )?;
        let model = Llama::from_gguf(&g, device)
            .map_err(|e| NodeError::new(format!("`{}`: {e}", path.display())))?;
        Ok(LanguageModel {
            model,
            tokenizer,
            template,
            name: g.name,
            content: content.to_string(),
        })
    }

    /// The prompt text for a conversation (the model's chat template).
    pub fn chat_prompt(&self, messages: &[Message]) -> Result<String, String> {
        self.template.render(messages)
    }

    /// Whether generation ends at `token`.
    pub fn ends_turn(&self, token: u32) -> bool {
        Some(token) == self.tokenizer.eos
            || self
                .tokenizer
                .control_text(token)
                .is_some_and(|t| END_OF_TURN.contains(&t))
    }

    /// The longest sequence (prompt and answer) the model takes.
    pub fn context(&self) -> usize {
        self.model.config.context
    }

    /// Each text's embedding, `hidden` values one text after the other: the
    /// mean of the model's last hidden states (after the output norm) over
    /// the text's first `max_tokens` tokens, scaled to length 1 if
    /// `normalize`. `batch_size` texts share each forward pass (the numbers
    /// don't depend on it); `progress` hears the texts done after each pass.
    /// A text of no tokens embeds as zeros.
    pub fn embed(
        &self,
        texts: &[String],
        max_tokens: usize,
        batch_size: usize,
        normalize: bool,
        mut progress: impl FnMut(usize) -> Result<(), NodeError>,
    ) -> Result<Vec<f32>, NodeError> {
        let hidden = self.model.config.hidden;
        let max_tokens = max_tokens.min(self.context()).max(1);
        let mut out = Vec::with_capacity(texts.len() * hidden);
        for (b, batch) in texts.chunks(batch_size.max(1)).enumerate() {
            let tokens = batch
                .iter()
                .map(|t| {
                    let mut ids = self.tokenizer.encode(t)?;
                    ids.truncate(max_tokens);
                    Ok(ids)
                })
                .collect::<Result<Vec<_>, NodeError>>()?;
            let mut caches: Vec<KvCache> = tokens
                .iter()
                .map(|t| KvCache::with_capacity(&self.model, t.len()))
                .collect();
            let mut steps: Vec<Step<'_>> = caches
                .iter_mut()
                .zip(&tokens)
                .filter(|(_, t)| !t.is_empty())
                .map(|(cache, tokens)| Step {
                    cache,
                    tokens,
                    logits: Logits::Pooled,
                })
                .collect();
            let mut pooled = if steps.is_empty() {
                Vec::new()
            } else {
                self.model.forward(&mut steps)?
            }
            .into_iter();
            for t in &tokens {
                let mut e = match t.is_empty() {
                    true => vec![0f32; hidden],
                    false => pooled.next().expect("one pooled row per text with tokens"),
                };
                let norm = e.iter().map(|v| v * v).sum::<f32>().sqrt();
                if normalize && norm > 0.0 {
                    e.iter_mut().for_each(|v| *v /= norm);
                }
                out.extend(e);
            }
            progress(b * batch_size.max(1) + batch.len())?;
        }
        Ok(out)
    }

    /// The log-probability of each token of `tokens` after the ones before
    /// it (the first token is not scored), in windows of `window` tokens
    /// scored on their second half, as llama.cpp's perplexity tool does:
    /// returns (sum of negative log-probabilities, tokens scored).
    pub fn score(&self, tokens: &[u32], window: usize) -> Result<(f64, usize), NodeError> {
        let mut nll = 0.0;
        let mut count = 0;
        let mut start = 0;
        while start + window <= tokens.len() {
            let w = &tokens[start..start + window];
            let mut cache = KvCache::default();
            let logits = self.model.forward(&mut [Step {
                cache: &mut cache,
                tokens: w,
                logits: Logits::All,
            }])?;
            let vocab = self.model.vocab();
            for i in window / 2..window - 1 {
                let row = &logits[0][i * vocab..(i + 1) * vocab];
                nll -= sample::log_prob(row, w[i + 1]);
                count += 1;
            }
            start += window;
        }
        Ok((nll, count))
    }
}

#[cfg(test)]
mod tests;
