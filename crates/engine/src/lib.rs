//! The inference engine: the [`Backend`] trait, the llama.cpp backend ([`LlamaBackend`]), chat
//! templates (minijinja), sampling, streaming, prefix-cache reuse, batching, log-probs and LoRA
//! adapters at inference.

pub mod error;
pub mod template;

pub use error::{EngineError, Result};
pub use template::{ChatMessage, ChatTemplate};
pub mod sampling;
pub mod stop;
