//! The crate's one error type.

use std::path::PathBuf;

/// Every failure of `trident-nn`, with the context needed to act on it.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// The GGUF file could not be opened or read.
    #[error("cannot read GGUF file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The GGUF file is not a valid GGUF container (bad header, truncated tensor data, …).
    #[error("invalid GGUF file {path}: {reason}")]
    InvalidGguf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The model's architecture is not one of the supported families.
    #[error("unsupported architecture `{arch}` in {path} (supported: qwen2, qwen3, llama, gemma3)")]
    UnsupportedArchitecture {
        /// The file.
        path: PathBuf,
        /// `general.architecture` as found in the file.
        arch: String,
    },
    /// A metadata key the family needs is missing or has the wrong type.
    #[error("GGUF metadata key `{key}` in {path}: {reason}")]
    Metadata {
        /// The file.
        path: PathBuf,
        /// The metadata key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor the family needs is missing, or has an unexpected shape.
    #[error("GGUF tensor `{name}` in {path}: {reason}")]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor name (GGUF naming, e.g. `blk.0.attn_q.weight`).
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The LoRA configuration is invalid (rank 0, unknown target, …).
    #[error("invalid LoRA configuration: {0}")]
    LoraConfig(String),
    /// LoRA weights handed to [`crate::CausalLm::load_lora`] do not fit the model.
    #[error("LoRA tensor `{name}`: {reason}")]
    LoraTensor {
        /// PEFT-style tensor name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A compute device that cannot be used: unparseable name, CUDA not compiled in, no such
    /// GPU or no driver.
    #[error("device `{device}`: {reason}")]
    Device {
        /// The device as given (`cpu`, `cuda`, `cuda:1`).
        device: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// Bad model input (token id out of range, shape mismatch, empty batch, …).
    #[error("invalid input: {0}")]
    Input(String),
    /// A failure inside candle (shape bugs, allocation failures, unsupported device ops).
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl NnError {
    /// True when the error comes from bad input or usage (the caller should fix its file,
    /// configuration or arguments); false for internal/runtime failures.
    pub fn is_user_error(&self) -> bool {
        !matches!(self, NnError::Candle(_) | NnError::Io { .. })
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, NnError>;
