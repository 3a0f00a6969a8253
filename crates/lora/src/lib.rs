//! LoRA fine-tuning: governed datasets, training on a frozen quantized base, held-out evaluation, and adapters in the PEFT layout.
//!
//! - [`data`]: `trident data check|prepare` — read JSONL/CSV in the common shapes, validate
//!   every row (file, line, field), anonymise personal data with `trident_guard::pii`,
//!   deduplicate, report category balance and split train/held-out deterministically.
//!
//! Training (`train`), adapters (`adapter`) and evaluation (`eval`) modules are added next to
//! `data` and share [`LoraError`].

pub mod data;
// pub mod train;
// pub mod adapter;
// pub mod eval;

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
            LoraError::Write { .. } | LoraError::Serialize { .. } => false,
        }
    }
}

/// Result alias for the LoRA crate.
pub type Result<T> = std::result::Result<T, LoraError>;
