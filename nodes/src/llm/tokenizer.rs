//! The tokenizer of a GGUF language model: GPT-2-style byte-level BPE built
//! from the file's vocabulary and merges (or a `tokenizer.json` beside it),
//! with control tokens such as `<|im_start|>` matched as whole tokens, and
//! decoding to bytes that streams without splitting a character.

use std::path::Path;

use kiln_engine::NodeError;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::gguf::TokenizerData;

/// Token types in GGUF metadata that are matched as whole tokens in text.
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;

/// Encodes text to token ids and decodes ids to bytes.
pub struct LlmTokenizer {
    inner: Tokenizer,
    /// Each token's bytes (control tokens decode to nothing).
    bytes: Vec<Vec<u8>>,
    /// Control tokens' texts, by id (`None` for the others).
    control: Vec<Option<String>>,
    /// Beginning of sequence, put before a prompt when the model asks.
    pub bos: Option<u32>,
    /// End of sequence: generation stops at it.
    pub eos: Option<u32>,
    /// Whether prompts start with `bos`.
    pub add_bos: bool,
}

impl LlmTokenizer {
    /// The tokenizer the GGUF describes; `beside` (a `tokenizer.json` next
    /// to the model file) wins when it exists.
    pub fn new(data: &TokenizerData, beside: Option<&Path>) -> Result<LlmTokenizer, NodeError> {
        let inner = match beside {
            Some(file) if file.is_file() => Tokenizer::from_file(file)
                .map_err(|e| NodeError::new(format!("cannot read `{}`: {e}", file.display())))?,
            _ => from_gguf(data)?,
        };
        let table = unicode_to_byte();
        let mut control = vec![None; data.tokens.len()];
        let bytes = data
            .tokens
            .iter()
            .enumerate()
            .map(|(id, tok)| match data.types.get(id).copied().unwrap_or(1) {
                CONTROL => {
                    control[id] = Some(tok.clone());
                    Vec::new()
                }
                USER_DEFINED => tok.as_bytes().to_vec(),
                _ => tok
                    .chars()
                    .map(|ch| table.get(&ch).copied().unwrap_or(b'?'))
                    .collect(),
            })
            .collect();
        Ok(LlmTokenizer {
            inner,
            bytes,
            control,
            bos: data.bos,
            eos: data.eos,
            add_bos: data.add_bos,
        })
    }

    /// Token ids of `text`; control tokens written in it (`<|im_start|>`)
    /// are matched as themselves, as llama.cpp does with `special = true`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, NodeError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| NodeError::new(format!("cannot tokenize the text: {e}")))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if let (true, Some(bos)) = (self.add_bos, self.bos) {
            ids.push(bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// The bytes of `tokens`, control tokens left out.
    pub fn decode_bytes(&self, tokens: &[u32]) -> Vec<u8> {
        tokens
            .iter()
            .flat_map(|&t| self.bytes.get(t as usize).map(Vec::as_slice).unwrap_or(&[]))
            .copied()
            .collect()
    }

    /// The text of `tokens` (bytes that are not UTF-8 become U+FFFD).
    pub fn decode(&self, tokens: &[u32]) -> String {
        String::from_utf8_lossy(&self.decode_bytes(tokens)).into_owned()
    }

    /// A control token's text (`<|im_end|>`), if `token` is one.
    pub fn control_text(&self, token: u32) -> Option<&str> {
        self.control.get(token as usize)?.as_deref()
    }

    /// Tokens in the vocabulary.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// A `tokenizers` tokenizer from GGUF metadata: the byte-level BPE model,
/// the pre-tokenizer its `tokenizer.ggml.pre` names, and its control and
/// user-defined tokens matched whole, as the model's `tokenizer.json` would
/// state them (built directly: the JSON detour left ~30 MB of garbage in
/// the server's resident set).
fn from_gguf(data: &TokenizerData) -> Result<Tokenizer, NodeError> {
    if data.model != "gpt2" {
        return Err(NodeError::new(format!(
            "the model's tokenizer is `{}`; kiln reads byte-level BPE (`gpt2`) tokenizers from GGUF files; put the model's `tokenizer.json` beside the file to use another",
            data.model
        )));
    }
    let unusable = |e: tokenizers::Error| {
        NodeError::new(format!("the model's tokenizer data is not usable: {e}"))
    };
    // llama.cpp's pre-tokenizers by `tokenizer.ggml.pre`, as the models'
    // own `tokenizer.json` files state them.
    let byte_level = || ByteLevel::new(false, false, true);
    let pre_tokenizer: PreTokenizerWrapper = match data.pre.as_str() {
        "smollm" | "starcoder" | "refact" => {
            Sequence::new(vec![Digits::new(true).into(), byte_level().into()]).into()
        }
        "llama-bpe" | "llama3" => {
            let split = Split::new(
                SplitPattern::Regex(LLAMA3_SPLIT.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(unusable)?;
            Sequence::new(vec![split.into(), ByteLevel::new(false, false, false).into()]).into()
        }
        "gpt2" | "default" | "gpt-2" => byte_level().into(),
        other => {
            return Err(NodeError::new(format!(
                "the model's pre-tokenizer is `{other}`, which kiln does not know (it knows smollm, starcoder, gpt2, llama-bpe); put the model's `tokenizer.json` beside the file"
            )))
        }
    };
    let vocab: Vocab = data
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let merges = data
        .merges
        .iter()
        .map(|m| match m.split_once(' ') {
            Some((a, b)) => Ok((a.to_string(), b.to_string())),
            None => Err(NodeError::new(format!(
                "the model's tokenizer has the merge `{m}`, which is not two tokens separated by a space"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(unusable)?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer
        .with_pre_tokenizer(Some(pre_tokenizer))
        .with_decoder(Some(byte_level()));
    let whole: Vec<AddedToken> = data
        .tokens
        .iter()
        .zip(&data.types)
        .filter(|(_, &kind)| kind == CONTROL || kind == USER_DEFINED)
        .map(|(t, &kind)| AddedToken::from(t.as_str(), kind == CONTROL).normalized(false))
        .collect();
    tokenizer.add_tokens(whole).map_err(unusable)?;
    Ok(tokenizer)
}

/// Llama 3's split pattern (its `tokenizer.json`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GPT-2's printable stand-ins for bytes, reversed.
fn unicode_to_byte() -> std::collections::HashMap<char, u8> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars = printable.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    printable
        .into_iter()
        .zip(chars)
        .filter_map(|(b, c)| Some((char::from_u32(c)?, b as u8)))
        .collect()
}

/// Text decoded a token at a time: gives what is complete so far, holding
/// back a character split across tokens.
#[derive(Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds bytes; returns the text now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            // An incomplete character at the end waits for the next bytes;
            // an invalid one is replaced.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => {
                let text = String::from_utf8_lossy(&self.pending).into_owned();
                self.pending.clear();
                return text;
            }
        };
        let text = String::from_utf8_lossy(&self.pending[..valid]).into_owned();
        self.pending.drain(..valid);
        text
    }

    /// What is left at the end (an incomplete character, replaced).
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_across_tokens_waits_for_its_end() {
        let mut s = Utf8Stream::default();
        let e = "é".as_bytes();
        assert_eq!(s.push(b"caf"), "caf");
        assert_eq!(s.push(&e[..1]), "");
        assert_eq!(s.push(&e[1..]), "é");
        assert_eq!(s.push(&[0xFF, b'a']), "\u{FFFD}a");
        assert_eq!(s.push(&e[..1]), "");
        assert_eq!(s.finish(), "\u{FFFD}");
    }

    /// A vocabulary of the 256 byte stand-ins, one merge (`1 2`) and a
    /// control token, with the pre-tokenizer `pre`.
    fn tiny_data(pre: &str) -> TokenizerData {
        let mut tokens: Vec<String> = unicode_to_byte().keys().map(char::to_string).collect();
        tokens.sort();
        tokens.extend(["12".to_string(), "<|end|>".to_string()]);
        let mut types = vec![1; tokens.len()];
        *types.last_mut().unwrap() = CONTROL;
        TokenizerData {
            model: "gpt2".into(),
            pre: pre.into(),
            types,
            merges: vec!["1 2".into()],
            bos: None,
            eos: None,
            add_bos: false,
            tokens,
        }
    }

    fn tiny(pre: &str) -> LlmTokenizer {
        LlmTokenizer::new(&tiny_data(pre), None).unwrap()
    }

    #[test]
    fn every_pre_tokenizer_reads_text_and_gives_it_back() {
        let text = "Say 12 and 123, it's<|end|> done.";
        for pre in ["smollm", "llama-bpe", "gpt2"] {
            let t = tiny(pre);
            let ids = t.encode(text).unwrap();
            // The control token is matched whole and decodes to nothing.
            let end = t.len() as u32 - 1;
            assert_eq!(ids.iter().filter(|&&i| i == end).count(), 1, "{pre}");
            assert_eq!(t.decode(&ids), text.replace("<|end|>", ""), "{pre}");
            // "12" merges where digits may stay together: not under
            // smollm's one-digit split.
            let merged = ids.contains(&(end - 1));
            assert_eq!(merged, pre != "smollm", "{pre}: {ids:?}");
        }
        let unknown = TokenizerData {
            pre: "qwen2".into(),
            ..tiny_data("gpt2")
        };
        let Err(e) = LlmTokenizer::new(&unknown, None) else {
            panic!("an unknown pre-tokenizer is refused")
        };
        assert!(e.to_string().contains("`qwen2`"), "{e}");
    }

    #[test]
    fn every_byte_has_a_stand_in() {
        let table = unicode_to_byte();
        assert_eq!(table.len(), 256);
        assert_eq!(table[&'Ġ'], b' ');
        assert_eq!(table[&'Ċ'], b'\n');
        assert_eq!(table[&'a'], b'a');
    }
}
