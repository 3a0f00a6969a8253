//! The engine's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model (or adapter) file does not exist.
    #[error("model file not found: {}", path.display())]
    FileNotFound {
        /// The path asked for.
        path: PathBuf,
    },
    /// The file is not a GGUF llama.cpp can load (checked before llama.cpp sees it).
    #[error("invalid GGUF file {}: {reason}", path.display())]
    InvalidGguf {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// llama.cpp refused to load the model; `reason` is its last error log line.
    #[error("llama.cpp could not load {}: {reason}", path.display())]
    Load {
        /// The file.
        path: PathBuf,
        /// llama.cpp's reason.
        reason: String,
    },
    /// A LoRA adapter could not be loaded or applied.
    #[error("LoRA adapter {name}: {reason}")]
    Adapter {
        /// The adapter's name or path.
        name: String,
        /// What went wrong (llama.cpp's reason where it gave one).
        reason: String,
    },
    /// A request named an adapter that is not loaded.
    #[error("unknown LoRA adapter {name:?} (loaded: {loaded})")]
    UnknownAdapter {
        /// The name asked for.
        name: String,
        /// The names that are loaded, comma-separated.
        loaded: String,
    },
    /// The chat template does not parse or failed to render.
    #[error("chat template: {message}")]
    Template {
        /// The minijinja error.
        message: String,
    },
    /// The prompt (plus the tokens asked for, where known) does not fit the context window.
    #[error(
        "prompt of {prompt_tokens} tokens does not fit the context window of {limit} tokens \
         (per sequence); shorten the prompt or raise the context size"
    )]
    ContextOverflow {
        /// Tokens in the prompt.
        prompt_tokens: usize,
        /// The per-sequence context limit.
        limit: usize,
    },
    /// The request is malformed (bad sampling value, token id out of range, empty prompt…).
    #[error("invalid request: {message}")]
    InvalidRequest {
        /// What is wrong.
        message: String,
    },
    /// A llama.cpp call failed at run time.
    #[error("llama.cpp {op} failed: {reason}")]
    Llama {
        /// The operation (`decode`, `new_context`, …).
        op: &'static str,
        /// llama.cpp's reason (its last error log line) or the error code.
        reason: String,
    },
    /// The engine's worker thread is gone (it panicked or was shut down).
    #[error("the inference worker has stopped")]
    WorkerStopped,
    /// A remote backend failed.
    #[error("remote backend: {message}")]
    Remote {
        /// What went wrong.
        message: String,
    },
}

impl EngineError {
    /// True when the error comes from the caller's input (bad file, bad request, prompt too
    /// long): the CLI exits with code 2 for these.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            EngineError::FileNotFound { .. }
                | EngineError::InvalidGguf { .. }
                | EngineError::Load { .. }
                | EngineError::Adapter { .. }
                | EngineError::UnknownAdapter { .. }
                | EngineError::Template { .. }
                | EngineError::ContextOverflow { .. }
                | EngineError::InvalidRequest { .. }
        )
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        EngineError::InvalidRequest { message: message.into() }
    }
}

/// The engine's result type.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
