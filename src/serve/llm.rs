//! The language model behind a served pipeline whose `serve.output` is an
//! `infer.generate` node: its generation engine (continuous batching, one
//! thread) and the node's settings as the defaults of a request.

use std::sync::Arc;

use kiln_engine::Service;
use kiln_nodes::infer::generate::{language_model, prompt_tokens, GenerateSettings, NAME};
use kiln_nodes::llm::generate::{Engine, Event, Request};
use kiln_nodes::llm::sample::Sampling;
use kiln_nodes::llm::template::Message;
use kiln_nodes::llm::LanguageModel;
use tokio::sync::mpsc;

/// A served language model.
pub struct Generator {
    /// The model.
    pub lm: Arc<LanguageModel>,
    /// The `infer.generate` node's settings.
    pub defaults: GenerateSettings,
    /// The pipeline's seed (the default seed of a request).
    pub seed: u64,
    engine: Engine,
}

/// What a request asks for, checked.
pub struct Ask {
    /// The prompt's tokens.
    pub prompt: Vec<u32>,
    /// How tokens are chosen.
    pub sampling: Sampling,
    /// The most tokens to generate.
    pub max_tokens: usize,
    /// Texts that end the answer.
    pub stop: Vec<String>,
}

impl Generator {
    /// The generator for `service` when its output is an `infer.generate`
    /// node (`Ok(None)` otherwise). Loads the model (once per content).
    pub fn for_service(service: &Service) -> Result<Option<Arc<Generator>>, String> {
        let plan = service.plan();
        let output = plan.node(service.spec().output.node);
        if output.spec.name != NAME {
            return Ok(None);
        }
        let defaults: GenerateSettings = output.settings.read().map_err(|e| e.to_string())?;
        let value = service
            .fixed_output_input("model")
            .ok_or("the `infer.generate` node's model is not fixed: connect `model` to a `model.pretrained` node")?;
        let device = output.device.resolve().map_err(|e| e.to_string())?;
        let lm = language_model(value, &device).map_err(|e| e.to_string())?;
        let engine = Engine::start(lm.clone(), defaults.batch);
        Ok(Some(Arc::new(Generator {
            lm,
            defaults,
            seed: plan.seed,
            engine,
        })))
    }

    /// The prompt for `messages` in the model's chat template.
    pub fn chat(&self, messages: &[Message]) -> Result<String, String> {
        self.lm.chat_prompt(messages)
    }

    /// The tokens of a prompt text; an error when it does not fit.
    pub fn tokens(&self, prompt: &str) -> Result<Vec<u32>, String> {
        let settings = GenerateSettings {
            chat: false,
            system: None,
            prompt: None,
            ..self.defaults.clone()
        };
        prompt_tokens(&self.lm, &settings, prompt).map_err(|e| e.to_string())
    }

    /// Requests waiting to join the batch.
    pub fn waiting(&self) -> usize {
        self.engine.load().0
    }

    /// Requests waiting, and sequences generating.
    pub fn load(&self) -> (usize, usize) {
        self.engine.load()
    }

    /// Starts generating; events arrive on the receiver. Dropping it stops
    /// the sequence at its next token.
    pub fn start(&self, ask: Ask) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.engine.submit(Request {
            prompt: ask.prompt,
            sampling: ask.sampling,
            max_tokens: ask.max_tokens,
            stop: ask.stop,
            listener: Box::new(move |event| tx.send(event).is_ok()),
        });
        rx
    }
}
