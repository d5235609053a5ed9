//! `infer.generate`: text from a language model, one answer per document.

use std::path::PathBuf;
use std::sync::Arc;

use kiln_engine::{
    Config, InputSpec, KindSpec, NodeError, NodeKind, OutputSpec, Outputs, PortName, RunContext,
    Settings, Value, ValueType,
};
use serde::Deserialize;
use serde_json::{json, Value as Json};

use crate::llm::generate::generate_all;
use crate::llm::sample::Sampling;
use crate::llm::template::Message;
use crate::llm::LanguageModel;
use crate::model::ModelValue;
use crate::text::Texts;

/// The kind's name (the server answers the OpenAI routes for pipelines
/// whose output is one).
pub const NAME: &str = "infer.generate";

/// Generates text.
pub struct Generate;

/// What `infer.generate` reads from `with:` (also the defaults of a served
/// request).
#[derive(Config, Deserialize, Clone, Debug)]
pub struct GenerateSettings {
    /// the most tokens to generate for a document
    #[setting(default = 128, min = 1, max = 32768)]
    pub max_tokens: usize,
    /// 0 takes the likeliest token each time (greedy); higher values sample more freely
    #[setting(default = 0.0, min = 0.0, max = 10.0)]
    pub temperature: f64,
    /// sample among the k likeliest tokens (0: all)
    #[setting(default = 40)]
    pub top_k: usize,
    /// sample among the likeliest tokens whose probabilities add up to p
    #[setting(default = 0.95, gt = 0.0, max = 1.0)]
    pub top_p: f64,
    /// divides the logits of the tokens of the last 64 (1: off)
    #[setting(default = 1.0, gt = 0.0, max = 10.0)]
    pub repetition_penalty: f64,
    /// generation stops before the first of these texts
    pub stop: Option<Vec<String>>,
    /// the prompt for a document, `{text}` standing for the document (default: the document itself)
    pub prompt: Option<String>,
    /// wrap each prompt in the model's chat template as a user message
    #[setting(default = true)]
    pub chat: bool,
    /// a system message before each document (with `chat`)
    pub system: Option<String>,
    /// documents generated at once (continuous batching); served, the most concurrent streams
    #[setting(default = 8, min = 1, max = 256)]
    pub batch: usize,
}

impl GenerateSettings {
    /// The sampling these settings ask for, seeded with `seed`.
    pub fn sampling(&self, seed: u64) -> Sampling {
        Sampling {
            temperature: self.temperature as f32,
            top_k: self.top_k,
            top_p: self.top_p as f32,
            repetition_penalty: self.repetition_penalty as f32,
            seed,
        }
    }
}

impl NodeKind for Generate {
    fn computes_on_device(&self) -> bool {
        true
    }

    fn spec(&self) -> KindSpec {
        KindSpec {
            name: NAME,
            version: 1,
            doc: "Generates an answer to each document with a language model from `model.pretrained` (a GGUF file): the document (put in `prompt` where it says `{text}`, if given) as a user message in the model's chat template (`chat`, optional `system`), or as plain text to continue; greedy at `temperature: 0`, else sampled (top-k, top-p, repetition penalty) from the node's seed, so the same file and seed give the same text. Documents run together with continuous batching, each with its own key/value cache.
Gives the answers as `text` (the documents' target kept) and the counts and speed as `metrics`. Served (`serve.output`), it also answers the OpenAI-compatible routes (SPEC §7).",
            inputs: vec![
                InputSpec::required("model", ValueType::Model, "a language model from `model.pretrained`"),
                InputSpec::required("data", ValueType::Text, "the prompts, one per document"),
            ],
            outputs: vec![
                OutputSpec::new("text", ValueType::Text, "the generated answers"),
                OutputSpec::new("metrics", ValueType::Metrics, "tokens in and out, seconds, tokens per second"),
            ],
            settings: GenerateSettings::specs(),
            side_effects: false,
        }
    }

    fn check(&self, settings: &Settings) -> Vec<(String, String)> {
        let s = match settings.read_checked::<GenerateSettings>() {
            Ok(s) => s,
            Err(problems) => return problems,
        };
        let mut problems = Vec::new();
        if s.prompt.as_ref().is_some_and(|p| !p.contains("{text}")) {
            problems.push((
                "prompt".into(),
                "write `{text}` where the document goes".into(),
            ));
        }
        if s.system.is_some() && !s.chat {
            problems.push((
                "system".into(),
                "a system message needs `chat: true`".into(),
            ));
        }
        problems
    }

    fn run(&self, ctx: &RunContext<'_>) -> Result<Outputs, NodeError> {
        let s: GenerateSettings = ctx.settings().read()?;
        let lm = language_model(ctx.input("model")?, ctx.device())?;
        let texts = Texts::from_value(ctx.input("data")?)?;
        let prompts = texts
            .texts
            .iter()
            .map(|t| prompt_tokens(&lm, &s, t))
            .collect::<Result<Vec<_>, _>>()?;
        let n = prompts.len();
        let started = std::time::Instant::now();
        let requests = prompts
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let seed = ctx.seed().wrapping_add(i as u64);
                (
                    p,
                    s.sampling(seed),
                    s.max_tokens,
                    s.stop.clone().unwrap_or_default(),
                )
            })
            .collect();
        let finished = generate_all(lm.clone(), requests, s.batch, |done| {
            ctx.check_cancelled()?;
            ctx.progress(done as u64, n as u64, "generating");
            Ok(())
        })?;
        let seconds = started.elapsed().as_secs_f64();
        let prompt_tokens: usize = finished.iter().map(|f| f.prompt_tokens).sum();
        let completion_tokens: usize = finished.iter().map(|f| f.tokens.len()).sum();
        let metrics = json!({
            "documents": n,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "stopped": finished.iter().filter(|f| f.reason.as_str() == "stop").count(),
            "seconds": seconds,
            "completion_tokens_per_second": completion_tokens as f64 / seconds.max(1e-9),
        });
        let answers = Texts {
            texts: finished.into_iter().map(|f| f.text).collect(),
            target: texts.target,
        };
        Ok(vec![
            (PortName::new_static("text"), answers.into_value()),
            (
                PortName::new_static("metrics"),
                Value::from_json(ValueType::Metrics, metrics),
            ),
        ])
    }
}

/// The language model a `model` value stands for, to run on `device`
/// (loaded once per content and device).
pub fn language_model(
    value: &Value,
    device: &candle_core::Device,
) -> Result<Arc<LanguageModel>, NodeError> {
    let model = ModelValue::from_value(value)?;
    match (
        model.arch_type(),
        model.arch.get("path").and_then(Json::as_str),
        model.arch.get("content").and_then(Json::as_str),
    ) {
        ("llm", Some(path), Some(content)) => LanguageModel::load(&PathBuf::from(path), content, device),
        (other, _, _) => Err(NodeError::new(format!(
            "`model` is a `{other}` model; text comes from a language model: `model.pretrained` with a `.gguf` file"
        ))),
    }
}

/// The prompt's tokens for a document: put in `prompt`, then in the chat
/// template as a user message (after `system`), or as it is.
pub fn prompt_tokens(
    lm: &LanguageModel,
    s: &GenerateSettings,
    document: &str,
) -> Result<Vec<u32>, NodeError> {
    let filled;
    let document = match &s.prompt {
        Some(p) => {
            filled = p.replace("{text}", document);
            filled.as_str()
        }
        None => document,
    };
    let text = if s.chat {
        let mut messages = Vec::new();
        if let Some(system) = &s.system {
            messages.push(Message {
                role: "system".into(),
                content: system.clone(),
            });
        }
        messages.push(Message {
            role: "user".into(),
            content: document.to_string(),
        });
        lm.chat_prompt(&messages).map_err(NodeError::new)?
    } else {
        document.to_string()
    };
    let tokens = lm.tokenizer.encode(&text)?;
    if tokens.is_empty() {
        return Err(NodeError::new(
            "a document is empty; a prompt needs at least one token",
        ));
    }
    if tokens.len() >= lm.context() {
        return Err(NodeError::new(format!(
            "a prompt is {} tokens, and the model's context is {}; shorten the documents",
            tokens.len(),
            lm.context()
        )));
    }
    Ok(tokens)
}
