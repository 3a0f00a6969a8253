//! The [`Backend`] trait every inference backend implements (llama.cpp here; a remote
//! OpenAI-compatible one later), and the request/response types it speaks.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::sampling::SamplingParams;
use crate::template::{ChatMessage, ChatTemplate};

/// What to continue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    /// Raw text, tokenized with the model's tokenizer (BOS added by the model's own rule;
    /// special-token text such as `<|im_start|>` is parsed as special tokens).
    Text(String),
    /// Token ids, used as they are.
    Tokens(Vec<u32>),
    /// A conversation, rendered through the model's chat template with the generation
    /// prompt appended.
    Chat(Vec<ChatMessage>),
}

/// A LoRA adapter (loaded with [`Backend::load_adapter`]) and the scale to apply it with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterRef {
    /// The name it was loaded under.
    pub name: String,
    /// The scale (1.0 = as trained; 0.0 = no effect).
    pub scale: f32,
}

impl AdapterRef {
    /// An adapter at scale `scale`.
    pub fn new(name: impl Into<String>, scale: f32) -> Self {
        Self { name: name.into(), scale }
    }
}

/// One generation request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerateRequest {
    /// The prompt.
    pub prompt: Prompt,
    /// How to pick tokens.
    pub sampling: SamplingParams,
    /// At most this many new tokens (the context limit also ends generation, with
    /// [`FinishReason::Length`]).
    pub max_tokens: usize,
    /// Stop sequences (string level; the stop text is not part of the output).
    pub stop: Vec<String>,
    /// Keep generating after an end-of-generation token (EOS/EOT) instead of stopping.
    pub ignore_eos: bool,
    /// When `Some(k)`, return each generated token's log-prob and its `k` most likely
    /// alternatives (OpenAI `logprobs`/`top_logprobs`; `k` may be 0).
    pub logprobs: Option<usize>,
    /// LoRA adapters for this request (at most one with the llama.cpp backend).
    pub adapters: Vec<AdapterRef>,
}

impl Default for GenerateRequest {
    fn default() -> Self {
        Self {
            prompt: Prompt::Text(String::new()),
            sampling: SamplingParams::default(),
            max_tokens: 256,
            stop: Vec::new(),
            ignore_eos: false,
            logprobs: None,
            adapters: Vec::new(),
        }
    }
}

impl GenerateRequest {
    /// A raw-text completion request with default (greedy) sampling.
    pub fn text(prompt: impl Into<String>) -> Self {
        Self { prompt: Prompt::Text(prompt.into()), ..Default::default() }
    }
    /// A chat request with default (greedy) sampling.
    pub fn chat(messages: Vec<ChatMessage>) -> Self {
        Self { prompt: Prompt::Chat(messages), ..Default::default() }
    }
    /// A request continuing the given token ids.
    pub fn tokens(ids: Vec<u32>) -> Self {
        Self { prompt: Prompt::Tokens(ids), ..Default::default() }
    }
    /// Sets `max_tokens`.
    pub fn with_max_tokens(mut self, n: usize) -> Self {
        self.max_tokens = n;
        self
    }
    /// Sets the sampling parameters.
    pub fn with_sampling(mut self, s: SamplingParams) -> Self {
        self.sampling = s;
        self
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-generation token or a stop sequence.
    Stop,
    /// `max_tokens` reached, or the context window is full.
    Length,
    /// The streaming callback asked to stop.
    Cancelled,
}

/// One alternative token and its log-prob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    /// Token id.
    pub token: u32,
    /// Its text (lossy UTF-8 of its bytes).
    pub text: String,
    /// Natural-log probability under the model (before sampling transforms).
    pub logprob: f32,
}

/// One position of a scored sequence ([`Backend::score`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredPosition {
    /// Index in the scored sequence of the token whose successor this predicts.
    pub position: usize,
    /// Log-prob of the token that follows in the sequence (`None` at the last position).
    pub next_logprob: Option<f32>,
    /// The most likely next tokens, best first.
    pub top: Vec<TopLogprob>,
}

/// Log-prob of one generated token with its top alternatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The generated token.
    pub token: u32,
    /// Its text (lossy UTF-8 of its bytes).
    pub text: String,
    /// Its natural-log probability under the model's distribution (log-softmax of the raw
    /// logits, before bias/penalties/temperature — as OpenAI reports).
    pub logprob: f32,
    /// The most likely alternatives, descending.
    pub top: Vec<TopLogprob>,
}

/// A streamed token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenEvent {
    /// Index of the token among the generated ones.
    pub index: usize,
    /// The token id.
    pub token: u32,
    /// Text released by this token (may be empty while a UTF-8 character or a possible stop
    /// sequence is incomplete; concatenated deltas equal [`Generation::text`]).
    pub text: String,
    /// Log-prob, when asked for.
    pub logprob: Option<TokenLogprob>,
}

/// What the streaming callback wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    Continue,
    /// Stop now ([`FinishReason::Cancelled`]).
    Cancel,
}

/// Token counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Of these, how many were already in the KV cache (not recomputed).
    pub cached_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
}

/// Wall-clock timings in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Time spent waiting for a free slot / compatible adapter set.
    pub queue_ms: f64,
    /// From start to the first generated token (prefill + first sample).
    pub time_to_first_token_ms: f64,
    /// Prefill (prompt evaluation) time.
    pub prefill_ms: f64,
    /// Decode time after the first token.
    pub decode_ms: f64,
    /// Total, from submission to the end.
    pub total_ms: f64,
}

impl Timings {
    /// Prompt tokens evaluated per second (excluding cached ones).
    pub fn prefill_tok_s(&self, usage: &Usage) -> f64 {
        rate(usage.prompt_tokens - usage.cached_tokens, self.prefill_ms)
    }
    /// Generated tokens per second after the first.
    pub fn decode_tok_s(&self, usage: &Usage) -> f64 {
        rate(usage.completion_tokens.saturating_sub(1), self.decode_ms)
    }
}

fn rate(n: usize, ms: f64) -> f64 {
    if ms > 0.0 { n as f64 / (ms / 1000.0) } else { 0.0 }
}

/// The result of one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// The generated text (without the stop sequence).
    pub text: String,
    /// The generated token ids (including the one that completed a stop sequence; an
    /// end-of-generation token is not included).
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// The stop sequence that ended it, if any.
    pub stop_sequence: Option<String>,
    /// Token counts.
    pub usage: Usage,
    /// Timings.
    pub timings: Timings,
    /// Per-token log-probs, when asked for.
    pub logprobs: Option<Vec<TokenLogprob>>,
}

/// Facts about the loaded model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The GGUF file.
    pub path: PathBuf,
    /// `general.architecture`, e.g. `qwen2`.
    pub architecture: String,
    /// `general.name`, when present.
    pub name: Option<String>,
    /// Vocabulary size.
    pub n_vocab: usize,
    /// Context length the model was trained with.
    pub n_ctx_train: usize,
    /// The context window of each sequence.
    pub n_ctx: usize,
    /// How many sequences can run at once.
    pub n_seq: usize,
    /// Parameter count.
    pub n_params: u64,
    /// Size of the weights in bytes.
    pub size_bytes: u64,
    /// BOS token id, if the model has one.
    pub bos: Option<u32>,
    /// EOS token id, if the model has one.
    pub eos: Option<u32>,
    /// Whether tokenization with `add_special` prepends BOS.
    pub add_bos: bool,
    /// Whether the GGUF carries a chat template (else the ChatML fallback is used).
    pub has_chat_template: bool,
}

/// An inference backend. Object-safe; shareable across threads (`Arc<dyn Backend>`); each
/// method may be called concurrently — requests are batched together by the backend.
pub trait Backend: Send + Sync {
    /// Facts about the model.
    fn info(&self) -> &ModelInfo;

    /// Text → token ids with the model's own tokenizer. `add_special` adds BOS/EOS as the
    /// model's GGUF says; `parse_special` turns special-token text (`<|im_end|>`) into those
    /// tokens instead of plain text.
    ///
    /// # Errors
    /// When the tokenizer fails.
    fn tokenize(&self, text: &str, add_special: bool, parse_special: bool)
    -> Result<Vec<u32>, EngineError>;

    /// Token ids → text (special tokens rendered as their text; invalid UTF-8 replaced).
    ///
    /// # Errors
    /// [`EngineError::InvalidRequest`] for ids outside the vocabulary.
    fn detokenize(&self, tokens: &[u32]) -> Result<String, EngineError>;

    /// True for end-of-generation tokens (EOS, EOT, `<|im_end|>`, `<end_of_turn>` …).
    fn is_eog(&self, token: u32) -> bool;

    /// The chat template (the GGUF's, or the ChatML fallback).
    fn chat_template(&self) -> &ChatTemplate;

    /// Renders a conversation with the chat template (generation prompt appended when asked).
    ///
    /// # Errors
    /// [`EngineError::Template`].
    fn render_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, EngineError> {
        self.chat_template().render(messages, add_generation_prompt)
    }

    /// Runs one request to the end; `on_token` (if any) sees every token as it is produced
    /// and may cancel.
    ///
    /// # Errors
    /// Bad request, prompt over the context limit, unknown adapter, llama.cpp failure.
    fn generate(
        &self,
        request: &GenerateRequest,
        on_token: Option<&mut dyn FnMut(&TokenEvent) -> Control>,
    ) -> Result<Generation, EngineError>;

    /// Runs several requests concurrently (batched together); results in request order.
    ///
    /// # Errors
    /// Per request, as [`Backend::generate`].
    fn generate_batch(
        &self,
        requests: &[GenerateRequest],
    ) -> Vec<Result<Generation, EngineError>>;

    /// The full next-token distribution (natural-log probabilities, one per vocabulary
    /// entry) after `tokens`, optionally under a LoRA adapter.
    ///
    /// # Errors
    /// Empty or over-long context, bad ids, unknown adapter.
    fn next_token_logprobs(
        &self,
        tokens: &[u32],
        adapter: Option<&AdapterRef>,
    ) -> Result<Vec<f32>, EngineError>;

    /// Scores a whole token sequence in one pass (teacher forcing): for every position, the
    /// top-`top_k` next tokens and the log-prob of the token that actually follows. This is
    /// what a perplexity, a held-out loss or a comparison with a reference implementation
    /// needs; it never reuses a cached prefix, so every position is computed in the same pass.
    ///
    /// # Errors
    /// Empty or over-long sequence, bad ids, unknown adapter.
    fn score(
        &self,
        tokens: &[u32],
        top_k: usize,
        adapter: Option<&AdapterRef>,
    ) -> Result<Vec<ScoredPosition>, EngineError>;

    /// Loads a LoRA adapter under `name` (replacing nothing: a name already in use is an
    /// error); several can be resident at once.
    ///
    /// # Errors
    /// Missing/invalid file, adapter not made for this base model.
    fn load_adapter(&self, name: &str, path: &std::path::Path) -> Result<(), EngineError>;

    /// Names of the loaded adapters.
    fn adapters(&self) -> Vec<String>;

}
