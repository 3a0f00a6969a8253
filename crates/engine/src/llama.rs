//! The llama.cpp backend (`llama-cpp-2`).
//!
//! One worker thread owns the llama.cpp context; callers (any thread) submit requests over a
//! channel and receive token events back. The worker runs a continuous-batching loop: every
//! step puts the next token of each running sequence, plus prompt chunks of newly admitted
//! ones, into one `llama_batch`. Each sequence ("slot") keeps its KV cache after the request
//! ends, and a new request goes to the slot sharing its longest prefix (see [`crate::prefix`]).
//!
//! LoRA adapters apply to the whole context, so sequences running together share one adapter
//! set; a request under another set waits until the running ones finish.

use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, unbounded};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend as LlamaCpp;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use parking_lot::Mutex;

use crate::backend::{
    AdapterRef, Backend, Control, FinishReason, GenerateRequest, Generation, ModelInfo, Prompt,
    ScoredPosition, Timings, TokenEvent, TokenLogprob, TopLogprob, Usage,
};
use crate::error::EngineError;
use crate::prefix::{AdapterKey, PrefixCache};
use crate::sampling::{Sampler, log_softmax, top_logprobs};
use crate::stop::{StopMatcher, Utf8Assembler};
use crate::template::{ChatMessage, ChatTemplate};
use crate::{logs, validate};

/// How to load a model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Context window of each sequence, in tokens (0 = the model's training length, capped
    /// at 4096).
    pub n_ctx: usize,
    /// How many sequences can run (and keep a cached prefix) at once.
    pub n_seq: usize,
    /// CPU threads (0 = all available cores).
    pub threads: usize,
    /// Most tokens put into one llama.cpp batch.
    pub n_batch: usize,
    /// Layers offloaded to the GPU (only with the `cuda` feature; `u32::MAX` = all).
    pub gpu_layers: u32,
    /// Flash attention: `None` lets llama.cpp decide (its default), `Some(on)` forces it.
    pub flash_attn: Option<bool>,
}

impl Default for LlamaConfig {
    fn default() -> Self {
        Self { n_ctx: 0, n_seq: 1, threads: 0, n_batch: 512, gpu_layers: u32::MAX, flash_attn: None }
    }
}

impl LlamaConfig {
    /// Sets the per-sequence context window.
    pub fn with_ctx(mut self, n_ctx: usize) -> Self {
        self.n_ctx = n_ctx;
        self
    }
    /// Sets the number of parallel sequences.
    pub fn with_seqs(mut self, n_seq: usize) -> Self {
        self.n_seq = n_seq;
        self
    }
    /// Sets the thread count.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }
}

/// The process-wide llama.cpp backend, initialised on first use with llama.cpp's log routed to
/// `tracing`. llama.cpp can be initialised once per process, so every crate that loads a model
/// through `llama-cpp-2` (the chat engine here, the embedders) takes it from this one place.
pub fn llama_cpp() -> Result<&'static LlamaCpp, EngineError> {
    static BACKEND: OnceLock<Result<LlamaCpp, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            logs::install();
            LlamaCpp::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::Llama { op: "backend init", reason: e.clone() })
}

/// Raw pointer of a model, for the few llama.cpp calls `llama-cpp-2` exposes only through
/// `&mut LlamaModel` (adapter init), which a shared model cannot give.
fn raw_model(model: &LlamaModel) -> *mut llama_cpp_sys_2::llama_model {
    // SAFETY: `LlamaModel` is `#[repr(transparent)]` over `Ptr<llama_model>`, itself
    // `#[repr(transparent)]` over `NonNull<llama_model>`, so its bytes are the pointer.
    unsafe { *(std::ptr::from_ref(model).cast::<*mut llama_cpp_sys_2::llama_model>()) }
}

/// Loads a LoRA adapter through a shared model.
fn init_adapter(model: &LlamaModel, path: &Path) -> Result<LlamaLoraAdapter, String> {
    let c = CString::new(path.to_str().ok_or("path is not UTF-8")?)
        .map_err(|_| "path contains a NUL byte".to_string())?;
    let mark = logs::mark();
    // SAFETY: the model pointer is valid while `model` lives; llama.cpp registers the adapter
    // with the model and frees it with the model. Only the worker thread calls this.
    let raw = unsafe { llama_cpp_sys_2::llama_adapter_lora_init(raw_model(model), c.as_ptr()) };
    let ptr = NonNull::new(raw).ok_or_else(|| logs::errors_since(mark))?;
    // SAFETY: `LlamaLoraAdapter` is `#[repr(transparent)]` over `Ptr<llama_adapter_lora>`,
    // `#[repr(transparent)]` over `NonNull<llama_adapter_lora>`.
    Ok(unsafe { std::mem::transmute::<NonNull<llama_cpp_sys_2::llama_adapter_lora>, LlamaLoraAdapter>(ptr) })
}

/// Something the worker tells a caller.
#[derive(Debug)]
pub enum Event {
    /// A generated token.
    Token(TokenEvent),
    /// The next-token log-prob row after the prompt (for [`Backend::next_token_logprobs`]).
    Row(Vec<f32>),
    /// Every prompt position's scores (for [`Backend::score`]), sent before `Done`.
    Scores(Vec<ScoredPosition>),
    /// The request finished.
    Done(Result<Generation, EngineError>),
}

struct GenJob {
    req: GenerateRequest,
    prompt: Vec<u32>,
    bias_ids: Vec<(u32, f32)>,
    key: AdapterKey,
    want_row: bool,
    /// Score every prompt position (top-k alternatives kept), for [`Backend::score`].
    score_top: Option<usize>,
    events: Sender<Event>,
    cancel: Arc<AtomicBool>,
    submitted: Instant,
}

enum Job {
    Generate(Box<GenJob>),
    LoadAdapter { name: String, path: PathBuf, reply: Sender<Result<(), EngineError>> },
    /// Drop every idle slot's cached prefix; replies with the number of tokens dropped.
    ClearCache { reply: Sender<usize> },
}

/// A submitted request: its events arrive here; dropping it cancels the request.
#[derive(Debug)]
pub struct RequestHandle {
    events: Receiver<Event>,
    cancel: Arc<AtomicBool>,
}

impl RequestHandle {
    /// The next event, blocking; `None` once the request is done or the worker stopped.
    pub fn next_event(&self) -> Option<Event> {
        self.events.recv().ok()
    }
    /// The event channel (for `select!`).
    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }
    /// Asks the worker to stop this request (it finishes with [`FinishReason::Cancelled`]).
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
    /// Waits for the result, feeding tokens to `on_token` (which may cancel).
    ///
    /// # Errors
    /// The request's error, or [`EngineError::WorkerStopped`].
    pub fn wait(
        self,
        mut on_token: Option<&mut dyn FnMut(&TokenEvent) -> Control>,
    ) -> Result<Generation, EngineError> {
        while let Ok(ev) = self.events.recv() {
            match ev {
                Event::Token(t) => {
                    if let Some(cb) = on_token.as_mut() {
                        if cb(&t) == Control::Cancel {
                            self.cancel();
                        }
                    }
                }
                Event::Row(_) | Event::Scores(_) => {}
                Event::Done(r) => return r,
            }
        }
        Err(EngineError::WorkerStopped)
    }
}

impl Drop for RequestHandle {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// An inference backend over llama.cpp. Cheap to share (`Arc<LlamaBackend>`); all methods
/// take `&self` and may be called from many threads at once.
pub struct LlamaBackend {
    model: Arc<LlamaModel>,
    info: ModelInfo,
    gguf: trident_gguf::GgufInfo,
    template: ChatTemplate,
    adapters: Arc<Mutex<Vec<String>>>,
    jobs: Option<Sender<Job>>,
    worker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LlamaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaBackend").field("info", &self.info).finish()
    }
}

fn piece(model: &LlamaModel, token: u32) -> Vec<u8> {
    model.vocab().token_to_piece(LlamaToken(token as i32), true, None)
}

fn token_text(model: &LlamaModel, token: u32) -> String {
    String::from_utf8_lossy(&piece(model, token)).into_owned()
}

impl LlamaBackend {
    /// Loads a GGUF model (checked first; see [`validate::check_gguf`]) and starts the worker.
    ///
    /// # Errors
    /// Missing or invalid file ([`EngineError::FileNotFound`], [`EngineError::InvalidGguf`]),
    /// llama.cpp refusing it ([`EngineError::Load`] with llama.cpp's reason), bad config.
    pub fn load(path: &Path, config: &LlamaConfig) -> Result<Self, EngineError> {
        let gguf = validate::check_model(path)?;
        if config.n_seq == 0 || config.n_seq > 64 {
            return Err(EngineError::invalid(format!("n_seq must be 1..=64, got {}", config.n_seq)));
        }
        if config.n_batch == 0 {
            return Err(EngineError::invalid("n_batch must be > 0"));
        }
        let cpp = llama_cpp()?;
        let mut params = LlamaModelParams::default();
        if cfg!(feature = "cuda") {
            params = params.with_n_gpu_layers(config.gpu_layers.min(1000));
        } else {
            params = params.with_n_gpu_layers(0);
        }
        let mark = logs::mark();
        let model = LlamaModel::load_from_file(cpp, path, &params).map_err(|e| EngineError::Load {
            path: path.to_path_buf(),
            reason: match e {
                llama_cpp_2::LlamaModelLoadError::NullResult => logs::errors_since(mark),
                other => other.to_string(),
            },
        })?;
        let model = Arc::new(model);
        let vocab = model.vocab();
        let n_ctx_train = model.n_ctx_train() as usize;
        let n_ctx = if config.n_ctx == 0 { n_ctx_train.clamp(1, 4096) } else { config.n_ctx };
        let opt_tok = |t: LlamaToken| (t.0 >= 0).then_some(t.0 as u32);
        let bos = opt_tok(vocab.bos());
        let eos = opt_tok(vocab.eos());
        let template_src = model.meta_val_str("tokenizer.chat_template").ok();
        let bos_text = bos.map(|t| token_text(&model, t)).unwrap_or_default();
        let eos_text = eos.map(|t| token_text(&model, t)).unwrap_or_default();
        let template = ChatTemplate::from_model(template_src.as_deref(), &bos_text, &eos_text)?;
        let info = ModelInfo {
            path: path.to_path_buf(),
            architecture: gguf.architecture.clone(),
            name: model.meta_val_str("general.name").ok(),
            n_vocab: model.n_vocab().max(0) as usize,
            n_ctx_train,
            n_ctx,
            n_seq: config.n_seq,
            n_params: model.n_params(),
            size_bytes: model.size(),
            bos,
            eos,
            add_bos: vocab.should_add_bos(),
            has_chat_template: !template.is_fallback(),
        };
        drop(vocab);
        let threads = if config.threads == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            config.threads
        };
        let total_ctx = n_ctx
            .checked_mul(config.n_seq)
            .and_then(|t| u32::try_from(t).ok())
            .and_then(NonZeroU32::new)
            .ok_or_else(|| EngineError::invalid(format!("context size {n_ctx} is out of range")))?;
        let n_batch = config.n_batch.min(total_ctx.get() as usize) as u32;
        let ctx_params = LlamaContextParams::default()
            .with_n_ctx(Some(total_ctx))
            .with_n_batch(n_batch)
            .with_n_ubatch(n_batch)
            .with_n_seq_max(config.n_seq as u32)
            .with_n_threads(threads as i32)
            .with_n_threads_batch(threads as i32)
            // One KV pool shared by all sequences: prefixes can be copied between them.
            .with_kv_unified(true)
            // Full-size sliding-window caches, so a cached prefix can be cut at any position.
            .with_swa_full(true)
            .with_flash_attention_policy(match config.flash_attn {
                None => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_AUTO,
                Some(false) => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED,
                Some(true) => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED,
            });

        let (tx, rx) = unbounded::<Job>();
        let (ready_tx, ready_rx) = unbounded::<Result<(), EngineError>>();
        let worker_model = Arc::clone(&model);
        let adapters = Arc::new(Mutex::new(Vec::new()));
        let worker_info = info.clone();
        let worker_adapters = Arc::clone(&adapters);
        let worker = std::thread::Builder::new()
            .name("trident-llama".into())
            .spawn(move || {
                let mark = logs::mark();
                let ctx = match worker_model.new_context(cpp, ctx_params) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(EngineError::Llama {
                            op: "new_context",
                            reason: format!("{e}: {}", logs::errors_since(mark)),
                        }));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let mut w = Worker::new(&worker_model, ctx, worker_info, n_batch as usize, worker_adapters);
                w.run(&rx);
            })
            .map_err(|e| EngineError::Llama { op: "spawn worker", reason: e.to_string() })?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = worker.join();
                return Err(e);
            }
            Err(_) => {
                let _ = worker.join();
                return Err(EngineError::WorkerStopped);
            }
        }
        tracing::info!(path = %path.display(), arch = %info.architecture, n_ctx, n_seq = config.n_seq, threads, "model loaded");
        Ok(Self { model, info, gguf, template, adapters, jobs: Some(tx), worker: Some(worker) })
    }

    fn check_ids(&self, tokens: &[u32]) -> Result<(), EngineError> {
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= self.info.n_vocab) {
            return Err(EngineError::invalid(format!(
                "token id {bad} is outside the vocabulary of {} tokens",
                self.info.n_vocab
            )));
        }
        Ok(())
    }

    /// The prompt as token ids (text tokenized with BOS by the model's rule and special
    /// tokens parsed; chat rendered through the template).
    ///
    /// # Errors
    /// Template failure, bad ids.
    pub fn prompt_tokens(&self, prompt: &Prompt) -> Result<Vec<u32>, EngineError> {
        match prompt {
            Prompt::Text(t) => self.tokenize(t, true, true),
            Prompt::Chat(m) => {
                let text = self.template.render(m, true)?;
                self.tokenize(&text, true, true)
            }
            Prompt::Tokens(ids) => {
                self.check_ids(ids)?;
                Ok(ids.clone())
            }
        }
    }

    /// Drops the cached prefixes of every idle slot (requests in flight keep theirs) and
    /// returns how many cached tokens were dropped.
    ///
    /// Why: the KV cache is unified, so each batch attends (masked) over every occupied cell
    /// up to the highest one, cached prefixes of idle slots included. Clearing them gives a
    /// new prompt the cost of an empty context — what `trident bench llm` needs to compare
    /// with llama.cpp's tools, which start every measurement from an empty cache — and frees
    /// the cells when the cached prompts are known to be stale.
    ///
    /// # Errors
    /// The worker stopped.
    pub fn clear_prefix_cache(&self) -> Result<usize, EngineError> {
        let (tx, rx) = unbounded();
        self.send(Job::ClearCache { reply: tx })?;
        rx.recv().map_err(|_| EngineError::WorkerStopped)
    }

    /// Submits a request without waiting: events arrive on the returned handle. This is the
    /// entry point for servers (one handle per HTTP request; dropping it cancels).
    ///
    /// # Errors
    /// Invalid request, prompt over the context limit, unknown adapter.
    pub fn submit(&self, req: &GenerateRequest) -> Result<RequestHandle, EngineError> {
        self.submit_inner(req, false, None)
    }

    /// Submits `tokens` as a prompt that generates nothing, for its log-probs (`want_row`: the
    /// last position's row; `score_top`: every position's scores).
    fn submit_prompt_only(
        &self,
        tokens: &[u32],
        adapter: Option<&AdapterRef>,
        want_row: bool,
        score_top: Option<usize>,
    ) -> Result<RequestHandle, EngineError> {
        let req = GenerateRequest {
            prompt: Prompt::Tokens(tokens.to_vec()),
            max_tokens: 0,
            adapters: adapter.cloned().into_iter().collect(),
            ..Default::default()
        };
        self.submit_inner(&req, want_row, score_top)
    }

    fn submit_inner(
        &self,
        req: &GenerateRequest,
        want_row: bool,
        score_top: Option<usize>,
    ) -> Result<RequestHandle, EngineError> {
        req.sampling.validate()?;
        let prompt = self.prompt_tokens(&req.prompt)?;
        if prompt.is_empty() {
            return Err(EngineError::invalid("the prompt is empty (and the model adds no BOS)"));
        }
        let needed = prompt.len() + usize::from(!want_row && req.max_tokens > 0);
        if needed > self.info.n_ctx {
            return Err(EngineError::ContextOverflow { prompt_tokens: prompt.len(), limit: self.info.n_ctx });
        }
        if req.adapters.len() > 1 {
            return Err(EngineError::invalid(
                "the llama.cpp backend applies at most one LoRA adapter per request",
            ));
        }
        {
            let loaded = self.adapters.lock();
            for a in &req.adapters {
                if !loaded.contains(&a.name) {
                    return Err(EngineError::UnknownAdapter { name: a.name.clone(), loaded: loaded.join(", ") });
                }
                if !a.scale.is_finite() {
                    return Err(EngineError::invalid(format!("adapter scale {} is not finite", a.scale)));
                }
            }
        }
        self.check_ids(&req.sampling.logit_bias.keys().copied().collect::<Vec<_>>())?;
        let mut bias_ids = Vec::new();
        for (text, b) in &req.sampling.logit_bias_text {
            let ids = self.tokenize(text, false, false)?;
            if ids.is_empty() {
                return Err(EngineError::invalid(format!("logit bias text {text:?} has no tokens")));
            }
            bias_ids.extend(ids.into_iter().map(|id| (id, *b)));
        }
        let key = AdapterKey::new(req.adapters.iter().map(|a| (a.name.as_str(), a.scale)));
        let (tx, rx) = unbounded();
        let cancel = Arc::new(AtomicBool::new(false));
        let job = GenJob {
            req: req.clone(),
            prompt,
            bias_ids,
            key,
            want_row,
            score_top,
            events: tx,
            cancel: Arc::clone(&cancel),
            submitted: Instant::now(),
        };
        self.send(Job::Generate(Box::new(job)))?;
        Ok(RequestHandle { events: rx, cancel })
    }

    fn send(&self, job: Job) -> Result<(), EngineError> {
        self.jobs.as_ref().ok_or(EngineError::WorkerStopped)?.send(job).map_err(|_| EngineError::WorkerStopped)
    }

    /// Renders and generates a chat reply (convenience for `generate(GenerateRequest::chat)`).
    ///
    /// # Errors
    /// As [`Backend::generate`].
    pub fn chat(
        &self,
        messages: Vec<ChatMessage>,
        on_token: Option<&mut dyn FnMut(&TokenEvent) -> Control>,
    ) -> Result<Generation, EngineError> {
        self.generate(&GenerateRequest::chat(messages), on_token)
    }
}

impl Drop for LlamaBackend {
    fn drop(&mut self) {
        self.jobs = None; // closes the channel: the worker drains and exits
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Backend for LlamaBackend {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>, EngineError> {
        if text.len() > i32::MAX as usize / 2 {
            return Err(EngineError::invalid("text too long to tokenize"));
        }
        Ok(self
            .model
            .vocab()
            .tokenize(text.as_bytes(), add_special, parse_special)
            .into_iter()
            .map(|t| t.0 as u32)
            .collect())
    }

    fn detokenize(&self, tokens: &[u32]) -> Result<String, EngineError> {
        self.check_ids(tokens)?;
        let toks: Vec<LlamaToken> = tokens.iter().map(|&t| LlamaToken(t as i32)).collect();
        let bytes = self.model.vocab().detokenize(&toks, false, true);
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn is_eog(&self, token: u32) -> bool {
        (token as usize) < self.info.n_vocab && self.model.vocab().is_eog(LlamaToken(token as i32))
    }

    fn chat_template(&self) -> &ChatTemplate {
        &self.template
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        on_token: Option<&mut dyn FnMut(&TokenEvent) -> Control>,
    ) -> Result<Generation, EngineError> {
        self.submit(request)?.wait(on_token)
    }

    fn generate_batch(&self, requests: &[GenerateRequest]) -> Vec<Result<Generation, EngineError>> {
        let handles: Vec<_> = requests.iter().map(|r| self.submit(r)).collect();
        handles.into_iter().map(|h| h.and_then(|h| h.wait(None))).collect()
    }

    fn next_token_logprobs(&self, tokens: &[u32], adapter: Option<&AdapterRef>) -> Result<Vec<f32>, EngineError> {
        if tokens.is_empty() {
            return Err(EngineError::invalid("next_token_logprobs needs at least one token"));
        }
        let h = self.submit_prompt_only(tokens, adapter, true, None)?;
        let mut row = None;
        while let Some(ev) = h.next_event() {
            match ev {
                Event::Row(r) => row = Some(r),
                Event::Done(Err(e)) => return Err(e),
                Event::Done(Ok(_)) => break,
                Event::Token(_) | Event::Scores(_) => {}
            }
        }
        row.ok_or(EngineError::WorkerStopped)
    }

    fn score(
        &self,
        tokens: &[u32],
        top_k: usize,
        adapter: Option<&AdapterRef>,
    ) -> Result<Vec<ScoredPosition>, EngineError> {
        if tokens.is_empty() {
            return Err(EngineError::invalid("score needs at least one token"));
        }
        let h = self.submit_prompt_only(tokens, adapter, false, Some(top_k))?;
        let mut scores = None;
        while let Some(ev) = h.next_event() {
            match ev {
                Event::Scores(s) => scores = Some(s),
                Event::Done(Err(e)) => return Err(e),
                Event::Done(Ok(_)) => break,
                Event::Token(_) | Event::Row(_) => {}
            }
        }
        scores.ok_or(EngineError::WorkerStopped)
    }

    fn load_adapter(&self, name: &str, path: &Path) -> Result<(), EngineError> {
        if name.is_empty() {
            return Err(EngineError::invalid("adapter name is empty"));
        }
        if self.adapters.lock().iter().any(|n| n == name) {
            return Err(EngineError::Adapter { name: name.into(), reason: "an adapter with this name is already loaded".into() });
        }
        validate::check_adapter(name, path, &self.gguf)?;
        let (tx, rx) = unbounded();
        self.send(Job::LoadAdapter { name: name.into(), path: path.to_path_buf(), reply: tx })?;
        rx.recv().map_err(|_| EngineError::WorkerStopped)?
    }

    fn adapters(&self) -> Vec<String> {
        self.adapters.lock().clone()
    }
}

// ---------------------------------------------------------------------------------------
// The worker.

struct Active {
    job: Box<GenJob>,
    slot: usize,
    /// Prompt tokens not yet in the KV cache.
    pending: Vec<u32>,
    /// The sampled token waiting to be decoded (decode phase).
    next: Option<u32>,
    /// Index of this sequence's logits row in the last batch.
    logits_at: Option<i32>,
    /// Scored prompt positions: (batch row, position) in the last batch, and the results.
    score_rows: Vec<(i32, usize)>,
    scores: Vec<ScoredPosition>,
    /// Tokens in the context: prompt then generated (for penalties).
    history: Vec<u32>,
    generated: Vec<u32>,
    text: String,
    logprobs: Vec<TokenLogprob>,
    sampler: Sampler,
    stop: StopMatcher,
    utf8: Utf8Assembler,
    cached: usize,
    admitted: Instant,
    first_token: Option<Instant>,
}

/// How a logits row left a sequence.
enum Outcome {
    Continue,
    Finish(FinishReason, Option<String>),
    Failed(EngineError),
}

struct Worker<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    info: ModelInfo,
    n_batch: usize,
    cache: PrefixCache,
    queue: VecDeque<Box<GenJob>>,
    active: Vec<Active>,
    adapters: HashMap<String, LlamaLoraAdapter>,
    adapter_names: Arc<Mutex<Vec<String>>>,
    current: AdapterKey,
}

impl<'m> Worker<'m> {
    fn new(
        model: &'m LlamaModel,
        ctx: LlamaContext<'m>,
        info: ModelInfo,
        n_batch: usize,
        adapter_names: Arc<Mutex<Vec<String>>>,
    ) -> Self {
        let n_seq = info.n_seq;
        Self {
            model,
            ctx,
            info,
            n_batch,
            cache: PrefixCache::new(n_seq),
            queue: VecDeque::new(),
            active: Vec::new(),
            adapters: HashMap::new(),
            adapter_names,
            current: AdapterKey::base(),
        }
    }

    fn run(&mut self, rx: &Receiver<Job>) {
        loop {
            // Block only when idle.
            if self.active.is_empty() && self.queue.is_empty() {
                match rx.recv() {
                    Ok(j) => self.accept(j),
                    Err(_) => return,
                }
            }
            while let Ok(j) = rx.try_recv() {
                self.accept(j);
            }
            self.drop_cancelled_queued();
            self.admit();
            if self.active.is_empty() {
                if rx.is_empty() && self.queue.is_empty() {
                    continue;
                }
                // Queue blocked (should not happen: admit always succeeds when idle).
                continue;
            }
            self.step();
        }
    }

    fn accept(&mut self, job: Job) {
        match job {
            Job::Generate(g) => self.queue.push_back(g),
            Job::LoadAdapter { name, path, reply } => {
                let r = init_adapter(self.model, &path)
                    .map(|a| {
                        self.adapters.insert(name.clone(), a);
                        self.adapter_names.lock().push(name.clone());
                    })
                    .map_err(|reason| EngineError::Adapter { name: name.clone(), reason });
                let _ = reply.send(r);
            }
            Job::ClearCache { reply } => {
                let mut dropped = 0;
                for slot in 0..self.cache.slots().len() {
                    let s = &self.cache.slots()[slot];
                    if s.busy || s.tokens.is_empty() {
                        continue;
                    }
                    dropped += s.tokens.len();
                    let _ = self.ctx.clear_kv_cache_seq(Some(slot as u32), None, None);
                    self.cache.clear(slot);
                }
                let _ = reply.send(dropped);
            }
        }
    }

    fn drop_cancelled_queued(&mut self) {
        self.queue.retain(|j| {
            if j.cancel.load(Ordering::Relaxed) {
                let _ = j.events.send(Event::Done(Ok(empty_generation(j, FinishReason::Cancelled))));
                false
            } else {
                true
            }
        });
    }

    fn apply_adapters(&mut self, key: &AdapterKey) -> Result<(), EngineError> {
        if *key == self.current {
            return Ok(());
        }
        if key.is_base() {
            if let Some(a) = self.adapters.values_mut().next() {
                self.ctx
                    .lora_adapter_remove(a)
                    .map_err(|e| EngineError::Llama { op: "lora_adapter_remove", reason: e.to_string() })?;
            }
        } else {
            let (name, bits) = &key.0[0];
            let a = self.adapters.get_mut(name).ok_or_else(|| EngineError::UnknownAdapter {
                name: name.clone(),
                loaded: String::new(),
            })?;
            self.ctx
                .lora_adapter_set(a, f32::from_bits(*bits))
                .map_err(|e| EngineError::Llama { op: "lora_adapter_set", reason: e.to_string() })?;
        }
        self.current = key.clone();
        Ok(())
    }

    /// Moves queued jobs into free slots (FIFO; a job under another adapter set waits for
    /// the running ones to finish).
    fn admit(&mut self) {
        while let Some(job) = self.queue.front() {
            if !self.cache.has_free() {
                return;
            }
            if !self.active.is_empty() && job.key != self.current {
                return;
            }
            let Some(job) = self.queue.pop_front() else { return };
            if let Err(e) = self.apply_adapters(&job.key) {
                let _ = job.events.send(Event::Done(Err(e)));
                continue;
            }
            let Some(plan) = self.cache.plan(&job.prompt, &job.key) else { return };
            let slot = plan.slot as i32;
            let mut reuse = plan.reuse;
            if let Some((src, len)) = plan.copy_from {
                let ok = self.ctx.clear_kv_cache_seq(Some(slot as u32), None, None).is_ok()
                    && self.ctx.copy_kv_cache_seq(src as i32, slot, Some(0), Some(len as u32)).is_ok();
                if !ok {
                    reuse = 0;
                }
            } else if self
                .ctx
                .clear_kv_cache_seq(Some(slot as u32), Some(reuse as u32), None)
                .map(|removed| !removed)
                .unwrap_or(true)
            {
                reuse = 0;
            }
            // Scoring needs logits at every position, so nothing cached can stand in.
            if job.score_top.is_some() {
                reuse = 0;
            }
            if reuse == 0 {
                let _ = self.ctx.clear_kv_cache_seq(Some(slot as u32), None, None);
            }
            let plan = crate::prefix::Plan { reuse, ..plan };
            self.cache.begin(&plan, &job.prompt, &job.key);
            let sampler = Sampler::new(job.req.sampling.clone(), &job.bias_ids);
            let stop = StopMatcher::new(&job.req.stop);
            let pending = job.prompt[reuse..].to_vec();
            let history = job.prompt.clone();
            tracing::debug!(slot, reuse, prompt = job.prompt.len(), "request admitted");
            self.active.push(Active {
                slot: plan.slot,
                pending,
                next: None,
                logits_at: None,
                score_rows: Vec::new(),
                scores: Vec::new(),
                history,
                generated: Vec::new(),
                text: String::new(),
                logprobs: Vec::new(),
                sampler,
                stop,
                utf8: Utf8Assembler::default(),
                cached: reuse,
                admitted: Instant::now(),
                first_token: None,
                job,
            });
        }
    }

    /// One decode step over all active sequences.
    fn step(&mut self) {
        // Cancelled ones finish first.
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].job.cancel.load(Ordering::Relaxed) {
                let a = self.active.swap_remove(i);
                self.finish(a, FinishReason::Cancelled, None);
            } else {
                i += 1;
            }
        }
        if self.active.is_empty() {
            return;
        }
        let mut batch = LlamaBatch::new(self.n_batch, 1);
        let mut budget = self.n_batch;
        // (active index, tokens added) to commit to the prefix cache after decode.
        let mut added: Vec<(usize, Vec<u32>)> = Vec::new();
        for a in &mut self.active {
            a.logits_at = None;
            a.score_rows.clear();
        }
        // Decode-phase tokens first (latency), then prompt chunks.
        for phase in 0..2 {
            for (ai, a) in self.active.iter_mut().enumerate() {
                let pos0 = self.cache.slots()[a.slot].tokens.len();
                let toks: Vec<u32> = match (phase, a.next) {
                    (0, Some(t)) => vec![t],
                    (1, None) if !a.pending.is_empty() => {
                        let n = a.pending.len().min(budget);
                        a.pending[..n].to_vec()
                    }
                    _ => continue,
                };
                if toks.is_empty() || toks.len() > budget {
                    continue;
                }
                let last_of_prompt = a.next.is_some() || toks.len() == a.pending.len();
                let scoring = a.job.score_top.is_some() && a.next.is_none();
                for (k, &t) in toks.iter().enumerate() {
                    let last = last_of_prompt && k + 1 == toks.len();
                    if batch.add(LlamaToken(t as i32), (pos0 + k) as i32, &[a.slot as i32], last || scoring).is_err()
                    {
                        break;
                    }
                    if scoring {
                        a.score_rows.push((batch.n_tokens() - 1, pos0 + k));
                    }
                    if last {
                        a.logits_at = Some(batch.n_tokens() - 1);
                    }
                }
                budget -= toks.len();
                added.push((ai, toks));
            }
        }
        if batch.n_tokens() == 0 {
            return;
        }
        let mark = logs::mark();
        if let Err(e) = self.ctx.decode(&mut batch) {
            let reason = format!("{e}: {}", logs::errors_since(mark));
            tracing::error!(%reason, "decode failed");
            let all: Vec<Active> = self.active.drain(..).collect();
            for a in all {
                self.cache.clear(a.slot);
                let _ = self.ctx.clear_kv_cache_seq(Some(a.slot as u32), None, None);
                self.cache.release(a.slot);
                let _ = a.job.events.send(Event::Done(Err(EngineError::Llama { op: "decode", reason: reason.clone() })));
            }
            return;
        }
        for (ai, toks) in added {
            let a = &mut self.active[ai];
            self.cache.push(a.slot, &toks);
            if a.next.take().is_none() {
                a.pending.drain(..toks.len());
            }
        }
        // Score prompt positions where asked.
        for a in &mut self.active {
            let Some(k) = a.job.score_top else { continue };
            for &(idx, pos) in &a.score_rows {
                let lp = log_softmax(self.ctx.get_logits_ith(idx));
                let next = a.job.prompt.get(pos + 1).copied();
                a.scores.push(ScoredPosition {
                    position: pos,
                    next_logprob: next.map(|t| lp[t as usize]),
                    top: top_logprobs(&lp, k)
                        .into_iter()
                        .map(|(id, l)| TopLogprob { token: id, text: token_text(self.model, id), logprob: l })
                        .collect(),
                });
            }
        }
        // Sample where logits were produced.
        let mut finished: Vec<(usize, Outcome)> = Vec::new();
        for ai in 0..self.active.len() {
            let Some(idx) = self.active[ai].logits_at else { continue };
            match self.on_logits(ai, idx) {
                Outcome::Continue => {}
                done => finished.push((ai, done)),
            }
        }
        finished.sort_by_key(|f| std::cmp::Reverse(f.0));
        for (ai, outcome) in finished {
            let a = self.active.swap_remove(ai);
            match outcome {
                Outcome::Finish(reason, stop) => self.finish(a, reason, stop),
                Outcome::Failed(e) => {
                    self.cache.release(a.slot);
                    let _ = a.job.events.send(Event::Done(Err(e)));
                }
                Outcome::Continue => {}
            }
        }
    }

    /// Handles a logits row; returns how the sequence ends, if it does.
    fn on_logits(&mut self, ai: usize, idx: i32) -> Outcome {
        let n_ctx = self.info.n_ctx;
        let model = self.model;
        let logits = self.ctx.get_logits_ith(idx);
        let a = &mut self.active[ai];
        if a.job.want_row {
            let _ = a.job.events.send(Event::Row(log_softmax(logits)));
        }
        if a.generated.len() >= a.job.req.max_tokens {
            return Outcome::Finish(FinishReason::Length, None);
        }
        let token = match a.sampler.sample(logits, &a.history) {
            Ok(t) => t,
            Err(e) => return Outcome::Failed(e),
        };
        if a.first_token.is_none() {
            a.first_token = Some(Instant::now());
        }
        if !a.job.req.ignore_eos && model.vocab().is_eog(LlamaToken(token as i32)) {
            return Outcome::Finish(FinishReason::Stop, None);
        }
        let logprob = a.job.req.logprobs.map(|k| {
            let lp = log_softmax(logits);
            TokenLogprob {
                token,
                text: token_text(model, token),
                logprob: lp[token as usize],
                top: top_logprobs(&lp, k)
                    .into_iter()
                    .map(|(id, l)| TopLogprob { token: id, text: token_text(model, id), logprob: l })
                    .collect(),
            }
        });
        a.generated.push(token);
        a.history.push(token);
        let text = a.utf8.push(&piece(model, token));
        let step = a.stop.push(&text);
        a.text.push_str(&step.emit);
        if let Some(lp) = &logprob {
            a.logprobs.push(lp.clone());
        }
        let _ = a.job.events.send(Event::Token(TokenEvent {
            index: a.generated.len() - 1,
            token,
            text: step.emit,
            logprob,
        }));
        if step.stopped.is_some() {
            return Outcome::Finish(FinishReason::Stop, step.stopped);
        }
        if a.generated.len() >= a.job.req.max_tokens
            || self.cache.slots()[a.slot].tokens.len() + 1 > n_ctx
        {
            return Outcome::Finish(FinishReason::Length, None);
        }
        a.next = Some(token);
        Outcome::Continue
    }

    fn finish(&mut self, mut a: Active, reason: FinishReason, stop: Option<String>) {
        self.cache.release(a.slot);
        if stop.is_none() {
            // Release held-back text (incomplete UTF-8, a stop sequence's possible start).
            let mut tail = a.utf8.finish();
            tail = {
                let s = a.stop.push(&tail);
                let mut t = s.emit;
                t.push_str(&a.stop.finish());
                t
            };
            if !tail.is_empty() {
                a.text.push_str(&tail);
                if let Some(&last) = a.generated.last() {
                    let _ = a.job.events.send(Event::Token(TokenEvent {
                        index: a.generated.len() - 1,
                        token: last,
                        text: tail,
                        logprob: None,
                    }));
                }
            }
        }
        if a.job.score_top.is_some() {
            let _ = a.job.events.send(Event::Scores(std::mem::take(&mut a.scores)));
        }
        let now = Instant::now();
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        let first = a.first_token.unwrap_or(now);
        let timings = Timings {
            queue_ms: ms(a.admitted - a.job.submitted),
            time_to_first_token_ms: ms(first - a.job.submitted),
            prefill_ms: ms(first - a.admitted),
            decode_ms: ms(now - first),
            total_ms: ms(now - a.job.submitted),
        };
        let g = Generation {
            text: a.text,
            usage: Usage {
                prompt_tokens: a.job.prompt.len(),
                cached_tokens: a.cached,
                completion_tokens: a.generated.len(),
            },
            tokens: a.generated,
            finish_reason: reason,
            stop_sequence: stop,
            timings,
            logprobs: a.job.req.logprobs.map(|_| a.logprobs),
        };
        let _ = a.job.events.send(Event::Done(Ok(g)));
    }
}

fn empty_generation(job: &GenJob, reason: FinishReason) -> Generation {
    Generation {
        text: String::new(),
        tokens: Vec::new(),
        finish_reason: reason,
        stop_sequence: None,
        usage: Usage { prompt_tokens: job.prompt.len(), cached_tokens: 0, completion_tokens: 0 },
        timings: Timings::default(),
        logprobs: job.req.logprobs.map(|_| Vec::new()),
    }
}
