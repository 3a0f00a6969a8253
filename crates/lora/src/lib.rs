//! LoRA fine-tuning: governed datasets, training on a frozen quantized base, held-out evaluation, and adapters in the PEFT layout.
//!
//! - [`data`]: `trident data check|prepare` — read JSONL/CSV in the common shapes, validate
//!   every row (file, line, field), anonymise personal data with `trident_guard::pii`,
//!   deduplicate, report category balance and split train/held-out deterministically.
//!
//! - [`train`]: `trident lora train` — LoRA on a frozen quantized base ([`trident_nn`]), with
//!   the engine's own tokenizer and chat template, AdamW, warm-up + cosine, clipping,
//!   accumulation, held-out loss, early stopping, checkpoints and exact resume.
//! - [`adapter`]: adapters in the PEFT layout under `$TRIDENT_HOME/adapters/NAME/vN/`,
//!   versions, import, GGUF-LoRA export, checks against a base, and
//!   [`adapter::resolve_adapter`] for inference.
//! - [`eval`]: `trident lora eval` — held-out loss/perplexity through the engine and generation
//!   metrics (exact match, token F1, chrF, JSON validity and key set), side by side.
//! - [`logits`]: `trident lora logits` — next-token logits of a base with an adapter (candle,
//!   f32 on the dequantized base; or llama.cpp log-probs), for the PEFT cross-check.
//! - [`plot`]: loss curves as CSV and SVG.
//! - [`tokens`]: conversation → tokens + answer-token mask through the engine's tokenizer and
//!   chat template (shared by training and evaluation).
//!
//! All modules share [`LoraError`].

pub mod adapter;
pub mod data;
pub mod eval;
pub mod logits;
pub mod plot;
pub mod tokens;
pub mod train;

pub use trident_nn::memory::keep_freed_memory;
pub use trident_nn::LoraTarget;
pub use trident_nn::ComputeDevice;
pub use trident_nn::Precision;

use std::path::PathBuf;

/// Errors from the LoRA crate.
///
/// Problems with single dataset rows are *not* errors: they are collected in the dataset
/// report ([`data::Report::rejected`]). These variants stop a whole command.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file could be read but not understood as a dataset at all.
    #[error("{path}: {reason}")]
    Unparseable {
        /// The file.
        path: PathBuf,
        /// Why (with the first offending line where there is one).
        reason: String,
    },
    /// An option value is invalid (`--heldout 1.5`, `--map question` …).
    #[error("invalid option {option}: {reason}")]
    BadOption {
        /// The option's name as on the command line.
        option: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The output directory cannot be used (e.g. it holds files other than a prepared
    /// dataset, which replacing it would delete).
    #[error("output directory {path}: {reason}")]
    OutDir {
        /// The directory.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// Writing an output failed; nothing was left half-written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or directory being written.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Serialising an output failed.
    #[error("cannot serialise {what}: {source}")]
    Serialize {
        /// What was being serialised.
        what: &'static str,
        /// The serde error.
        source: serde_json::Error,
    },
    /// A personal-data option is invalid.
    #[error(transparent)]
    Guard(#[from] trident_guard::GuardError),
    /// An adapter directory or file is missing, truncated or inconsistent.
    #[error("adapter {path}: {reason}")]
    BadAdapter {
        /// The adapter directory or file.
        path: PathBuf,
        /// What is wrong (names the file, tensor or field).
        reason: String,
    },
    /// An adapter does not fit the base model it is used with.
    #[error("adapter {adapter} does not fit base model {base}: {reason}")]
    WrongBase {
        /// The adapter (name@version or path).
        adapter: String,
        /// The base model file.
        base: PathBuf,
        /// Which check failed (hash, architecture, tensor shape).
        reason: String,
    },
    /// No adapter of that name/version is stored.
    #[error("no adapter {spec} (stored: {known})")]
    UnknownAdapter {
        /// What was asked for.
        spec: String,
        /// What exists, comma-separated (or `none`).
        known: String,
    },
    /// A training run cannot start or continue (e.g. a different run of the same name holds
    /// a checkpoint).
    #[error("training {name}: {reason}")]
    Training {
        /// The adapter name being trained.
        name: String,
        /// Why.
        reason: String,
    },
    /// A dataset sample cannot be turned into training tokens.
    #[error("{path}: sample {id} (line {line}): {reason}")]
    BadSample {
        /// The dataset file.
        path: PathBuf,
        /// The sample id.
        id: String,
        /// Its source line.
        line: usize,
        /// Why.
        reason: String,
    },
    /// The training model code failed (bad model file, bad LoRA configuration, tensor error).
    #[error(transparent)]
    Nn(#[from] trident_nn::NnError),
    /// The inference engine failed (tokenizer, template, generation, scoring).
    #[error(transparent)]
    Engine(#[from] trident_engine::EngineError),
    /// A GGUF file could not be read or written.
    #[error(transparent)]
    Gguf(#[from] trident_gguf::GgufError),
    /// A tensor operation failed (an internal error, not the input's fault).
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl LoraError {
    /// True when the error comes from the caller's input (bad file, bad option), not from
    /// the system: exit code 2 in the CLI.
    pub fn is_user_error(&self) -> bool {
        match self {
            LoraError::Read { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory | std::io::ErrorKind::InvalidData
            ),
            LoraError::Unparseable { .. } | LoraError::BadOption { .. } | LoraError::OutDir { .. } => true,
            LoraError::Guard(e) => e.is_user_error(),
            LoraError::BadAdapter { .. }
            | LoraError::WrongBase { .. }
            | LoraError::UnknownAdapter { .. }
            | LoraError::Training { .. }
            | LoraError::BadSample { .. } => true,
            LoraError::Nn(e) => e.is_user_error(),
            LoraError::Engine(e) => e.is_user_error(),
            LoraError::Gguf(e) => e.is_user_error(),
            LoraError::Write { .. } | LoraError::Serialize { .. } | LoraError::Tensor(_) => false,
        }
    }
}

/// Result alias for the LoRA crate.
pub type Result<T> = std::result::Result<T, LoraError>;
