//! Generation with continuous batching: every step runs each active
//! sequence's next tokens in one forward pass (new prompts whole, in chunks
//! that bound a step's work, and one token for each decoding sequence); new
//! requests join between steps and finished ones leave. A sequence whose
//! listener is gone stops at the next step.
//!
//! [`Batch`] is the loop's state; [`generate_all`] runs a list of requests
//! to the end (the `infer.generate` node), and [`Engine`] runs one forever
//! on its own thread for a server.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use super::model::{KvCache, Logits, Step};
use super::sample::{Sampler, Sampling};
use super::tokenizer::Utf8Stream;
use super::LanguageModel;

/// The most prompt tokens one step takes in, over all new sequences: a long
/// prompt is read in several steps while the others keep decoding (a step
/// of 128 prompt tokens takes ~0.25 s on two cores, so their next token
/// waits no longer), and a step's buffers stay small (at 512, the server's
/// resident set peaked 4 MiB higher). Each step still decodes every weight
/// once for its 128 rows: a 239-token prompt's first token came in
/// 0.42–0.50 s at 128 against 0.37–0.53 s at 512 (two-core EPYC).
const PROMPT_CHUNK: usize = 128;

/// The most answer positions a sequence's cache takes room for when it
/// joins; a longer answer grows the cache as it goes.
const CACHE_AHEAD: usize = 512;

/// Positions to take room for at once: the prompt and the answer, up to
/// [`CACHE_AHEAD`] of it. Room taken is resident at once (the allocator
/// hands back touched pages), so a client asking for 8 000 tokens that
/// ends after 10 must not cost 8 000 positions (188 MB for SmolLM2).
fn cache_positions(prompt: usize, max_tokens: usize, context: usize) -> usize {
    (prompt + max_tokens.min(CACHE_AHEAD)).min(context)
}

/// What one generation is asked for.
pub struct Request {
    /// The prompt's tokens (at least one).
    pub prompt: Vec<u32>,
    /// How tokens are chosen.
    pub sampling: Sampling,
    /// The most tokens to generate.
    pub max_tokens: usize,
    /// Generation stops before the first of these texts.
    pub stop: Vec<String>,
    /// Receives the text as it is generated; returns `false` when nobody
    /// listens any more (the sequence is then dropped).
    pub listener: Box<dyn FnMut(Event) -> bool + Send>,
}

/// What a listener hears.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// More text (complete characters, never part of a stop string).
    Text(String),
    /// The end, with the whole text and counts.
    Done(Finished),
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended its turn, or a stop text was reached.
    Stop,
    /// `max_tokens` or the context was reached.
    Length,
}

impl FinishReason {
    /// The OpenAI API's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// A finished generation.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    /// The generated text (without the stop text or end token).
    pub text: String,
    /// Generated tokens.
    pub tokens: Vec<u32>,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Why it ended.
    pub reason: FinishReason,
    /// Seconds from joining to the first generated token.
    pub first_token_seconds: f64,
    /// Seconds from the first generated token to the end.
    pub decode_seconds: f64,
}

/// One sequence in the batch.
struct Active {
    request: Request,
    cache: KvCache,
    /// Prompt tokens read so far.
    read: usize,
    generated: Vec<u32>,
    sampler: Sampler,
    utf8: Utf8Stream,
    text: String,
    /// Bytes of `text` already sent.
    sent: usize,
    joined: Instant,
    first_token: Option<Instant>,
}

/// The sequences being generated.
pub struct Batch {
    model: Arc<LanguageModel>,
    active: Vec<Active>,
}

impl Batch {
    /// An empty batch for `model`.
    pub fn new(model: Arc<LanguageModel>) -> Batch {
        Batch {
            model,
            active: Vec::new(),
        }
    }

    /// Sequences in the batch.
    pub fn len(&self) -> usize {
        self.active.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Adds a request; it starts at the next step.
    pub fn join(&mut self, request: Request) {
        let positions = cache_positions(
            request.prompt.len(),
            request.max_tokens,
            self.model.context(),
        );
        self.active.push(Active {
            sampler: Sampler::new(request.sampling.clone()),
            cache: KvCache::with_capacity(&self.model.model, positions),
            request,
            read: 0,
            generated: Vec::new(),
            utf8: Utf8Stream::default(),
            text: String::new(),
            sent: 0,
            joined: Instant::now(),
            first_token: None,
        });
    }

    /// Runs one forward pass for every sequence and hands out the tokens.
    /// When the pass fails (a GPU out of memory), every sequence ends
    /// without an answer (its listener is dropped) and the error is given.
    pub fn step(&mut self) -> Result<(), kiln_engine::NodeError> {
        let model = self.model.clone();
        let mut budget = PROMPT_CHUNK;
        // Each sequence's tokens this step: the next chunk of its prompt, or
        // its last token.
        let mut spans: Vec<(usize, usize)> = Vec::with_capacity(self.active.len());
        for a in &self.active {
            let span = if a.read < a.request.prompt.len() {
                let n = (a.request.prompt.len() - a.read).min(budget);
                budget -= n;
                (a.read, a.read + n)
            } else {
                (0, 0)
            };
            spans.push(span);
        }
        let mut steps = Vec::new();
        let mut who = Vec::new();
        for (i, (a, &(from, to))) in self.active.iter_mut().zip(&spans).enumerate() {
            let tokens: &[u32] = if a.read < a.request.prompt.len() {
                if from == to {
                    continue; // waits for the next step's budget
                }
                &a.request.prompt[from..to]
            } else {
                std::slice::from_ref(a.generated.last().expect("a read prompt has a token"))
            };
            steps.push(Step {
                cache: &mut a.cache,
                tokens,
                logits: Logits::Last,
            });
            who.push(i);
        }
        if steps.is_empty() {
            return Ok(());
        }
        let logits = match model.model.forward(&mut steps) {
            Ok(logits) => logits,
            Err(e) => {
                drop(steps);
                self.active.clear();
                return Err(e);
            }
        };
        drop(steps);
        let mut gone = Vec::new();
        for (mut logits, i) in logits.into_iter().zip(who) {
            let a = &mut self.active[i];
            let (from, to) = spans[i];
            if a.read < a.request.prompt.len() {
                a.read += to - from;
                if a.read < a.request.prompt.len() {
                    continue;
                }
            }
            if !a.advance(&model, &mut logits) {
                gone.push(i);
            }
        }
        for i in gone.into_iter().rev() {
            self.active.swap_remove(i);
        }
        Ok(())
    }
}

impl Active {
    /// Samples the next token and tells the listener; `false` when the
    /// sequence is over (finished, or nobody listens).
    fn advance(&mut self, model: &LanguageModel, logits: &mut [f32]) -> bool {
        let now = Instant::now();
        self.first_token.get_or_insert(now);
        let history: Vec<u32> = self
            .request
            .prompt
            .iter()
            .chain(&self.generated)
            .copied()
            .collect();
        let token = self.sampler.next(logits, &history);
        if model.ends_turn(token) {
            return self.finish(FinishReason::Stop, None);
        }
        self.generated.push(token);
        let piece = self.utf8.push(&model.tokenizer.decode_bytes(&[token]));
        let searched = self.text.len().saturating_sub(self.longest_stop());
        self.text.push_str(&piece);
        let found = self
            .request
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.text[searched..].find(s.as_str()).map(|i| searched + i))
            .min();
        if let Some(at) = found {
            return self.finish(FinishReason::Stop, Some(at));
        }
        let full = self.generated.len() >= self.request.max_tokens
            || self.request.prompt.len() + self.generated.len() >= model.context();
        if full {
            return self.finish(FinishReason::Length, None);
        }
        // Sends what can no longer turn out to begin a stop text.
        let held = self.held_back();
        let end = self.text.len() - held;
        if end > self.sent {
            let piece = self.text[self.sent..end].to_string();
            self.sent = end;
            return (self.request.listener)(Event::Text(piece));
        }
        true
    }

    fn longest_stop(&self) -> usize {
        self.request.stop.iter().map(String::len).max().unwrap_or(0)
    }

    /// Bytes at the end of the text that begin some stop text.
    fn held_back(&self) -> usize {
        let mut held = 0;
        for s in &self.request.stop {
            for k in (1..s.len()).rev() {
                if k > held && s.is_char_boundary(k) && self.text.ends_with(&s[..k]) {
                    held = k;
                    break;
                }
            }
        }
        held
    }

    fn finish(&mut self, reason: FinishReason, cut: Option<usize>) -> bool {
        let rest = self.utf8.finish();
        self.text.push_str(&rest);
        if let Some(at) = cut {
            self.text.truncate(at);
        }
        if self.text.len() > self.sent {
            let piece = self.text[self.sent..].to_string();
            self.sent = self.text.len();
            (self.request.listener)(Event::Text(piece));
        }
        let first = self.first_token.unwrap_or(self.joined);
        let done = Finished {
            text: std::mem::take(&mut self.text),
            tokens: std::mem::take(&mut self.generated),
            prompt_tokens: self.request.prompt.len(),
            reason,
            first_token_seconds: (first - self.joined).as_secs_f64(),
            decode_seconds: first.elapsed().as_secs_f64(),
        };
        (self.request.listener)(Event::Done(done));
        false
    }
}

/// Runs `requests` to the end, at most `concurrent` at once; their
/// listeners hear everything. Returns each one's end, in order.
pub fn generate_all(
    model: Arc<LanguageModel>,
    requests: Vec<(Vec<u32>, Sampling, usize, Vec<String>)>,
    concurrent: usize,
    mut between_steps: impl FnMut(usize) -> Result<(), kiln_engine::NodeError>,
) -> Result<Vec<Finished>, kiln_engine::NodeError> {
    let n = requests.len();
    let results: Arc<Mutex<Vec<Option<Finished>>>> = Arc::new(Mutex::new(vec![None; n]));
    let mut waiting: VecDeque<Request> = requests
        .into_iter()
        .enumerate()
        .map(|(i, (prompt, sampling, max_tokens, stop))| {
            let results = results.clone();
            Request {
                prompt,
                sampling,
                max_tokens,
                stop,
                listener: Box::new(move |event| {
                    if let Event::Done(f) = event {
                        results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(f);
                    }
                    true
                }),
            }
        })
        .collect();
    let mut batch = Batch::new(model);
    loop {
        while batch.len() < concurrent.max(1) {
            match waiting.pop_front() {
                Some(r) => batch.join(r),
                None => break,
            }
        }
        if batch.is_empty() {
            break;
        }
        batch.step()?;
        let done = results
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|r| r.is_some())
            .count();
        between_steps(done)?;
    }
    let results = std::mem::take(&mut *results.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(results
        .into_iter()
        .map(|r| r.expect("every request ends"))
        .collect())
}

/// A batch run forever on its own thread: requests join through
/// [`Engine::submit`].
pub struct Engine {
    shared: Arc<(Mutex<Queue>, Condvar)>,
}

struct Queue {
    waiting: VecDeque<Request>,
    /// Sequences generating now.
    active: usize,
    stopped: bool,
}

impl Engine {
    /// Starts the loop for `model`, at most `concurrent` sequences at once.
    pub fn start(model: Arc<LanguageModel>, concurrent: usize) -> Engine {
        let shared = Arc::new((
            Mutex::new(Queue {
                waiting: VecDeque::new(),
                active: 0,
                stopped: false,
            }),
            Condvar::new(),
        ));
        let looped = shared.clone();
        std::thread::Builder::new()
            .name("kiln-generate".into())
            .spawn(move || run(model, concurrent.max(1), &looped))
            .expect("a thread for generation");
        Engine { shared }
    }

    /// Queues a request; it joins the batch at the next step with room.
    pub fn submit(&self, request: Request) {
        let (lock, wake) = &*self.shared;
        lock.lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiting
            .push_back(request);
        wake.notify_one();
    }

    /// Requests waiting to join, and sequences generating.
    pub fn load(&self) -> (usize, usize) {
        let q = self.shared.0.lock().unwrap_or_else(|e| e.into_inner());
        (q.waiting.len(), q.active)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let (lock, wake) = &*self.shared;
        lock.lock().unwrap_or_else(|e| e.into_inner()).stopped = true;
        wake.notify_one();
    }
}

fn run(model: Arc<LanguageModel>, concurrent: usize, shared: &(Mutex<Queue>, Condvar)) {
    let (lock, wake) = shared;
    let mut batch = Batch::new(model);
    loop {
        {
            let mut q = lock.lock().unwrap_or_else(|e| e.into_inner());
            q.active = batch.len();
            while batch.is_empty() && q.waiting.is_empty() && !q.stopped {
                q = wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            if q.stopped {
                return;
            }
            while batch.len() < concurrent {
                match q.waiting.pop_front() {
                    Some(r) => batch.join(r),
                    None => break,
                }
            }
            q.active = batch.len();
        }
        if let Err(e) = batch.step() {
            // Its sequences' clients hear that no answer came.
            tracing::error!("generation failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_takes_room_for_the_prompt_and_a_bounded_answer() {
        assert_eq!(cache_positions(52, 512, 8192), 564);
        assert_eq!(cache_positions(52, 8000, 8192), 52 + CACHE_AHEAD);
        assert_eq!(cache_positions(8000, 100, 8192), 8100);
        assert_eq!(cache_positions(8100, 500, 8192), 8192);
    }
}
