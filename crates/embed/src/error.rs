//! The crate's one error type.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, EmbedError>;

/// Everything that can go wrong while loading or running an embedder.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// A model file or folder could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A model file is malformed (bad magic, truncated, inconsistent shapes).
    #[error("invalid model file {path}: {reason}")]
    InvalidModel {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field or tensor.
        reason: String,
    },
    /// The tokenizer failed or a text cannot be tokenized.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    /// An input is longer than the model accepts (no silent truncation).
    #[error("text #{index} has {tokens} tokens; the model accepts at most {limit}")]
    TooLong {
        /// Position of the text in the batch.
        index: usize,
        /// Its length in model tokens.
        tokens: usize,
        /// The model's limit.
        limit: usize,
    },
    /// The tensor engine failed.
    #[error("tensor computation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    /// An HTTP embedding endpoint failed or answered something unusable.
    #[error("embedding endpoint {url}: {reason}")]
    Endpoint {
        /// The endpoint URL.
        url: String,
        /// What went wrong (status, body excerpt, or transport error).
        reason: String,
    },
    /// The llama.cpp runtime failed (loading the encoder, or a forward pass).
    #[error("encoder runtime: {0}")]
    Runtime(String),
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl EmbedError {
    /// True when the error is caused by the caller's input or configuration (CLI exit code 2),
    /// false for environment or internal failures.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            EmbedError::InvalidModel { .. } | EmbedError::TooLong { .. } | EmbedError::Config(_)
        ) || matches!(self, EmbedError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }

    pub(crate) fn invalid(path: &std::path::Path, reason: impl Into<String>) -> Self {
        EmbedError::InvalidModel { path: path.to_path_buf(), reason: reason.into() }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        EmbedError::Io { path: path.to_path_buf(), source }
    }
}
