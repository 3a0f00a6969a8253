//! The inference engine: the [`Backend`] trait, the llama.cpp backend ([`LlamaBackend`]), chat
//! templates (minijinja), sampling, streaming, prefix-cache reuse, batching, log-probs and LoRA
//! adapters at inference.

pub mod error;
pub mod template;

pub use error::{EngineError, Result};
pub use template::{ChatMessage, ChatTemplate};
pub mod sampling;
pub mod stop;
pub mod backend;
pub mod prefix;
pub mod logs;
pub mod validate;
pub mod llama;

pub use backend::{
    AdapterRef, Backend, Control, FinishReason, GenerateRequest, Generation, ModelInfo, Prompt,
    ScoredPosition, Timings, TokenEvent, TokenLogprob, TopLogprob, Usage,
};
pub use llama::{LlamaBackend, LlamaConfig, RequestHandle, llama_cpp};
pub use sampling::SamplingParams;
