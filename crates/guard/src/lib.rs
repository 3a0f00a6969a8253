//! Safety and governance: personal-data detection and masking, guardrails, and the audit log.
//!
//! Today this crate holds [`pii`]: detectors for Russian and international personal data
//! (phones, e-mails, bank cards, passports, INN, SNILS, OGRN, IBAN, IP addresses and, on
//! request, personal names introduced by a phrase) and a [`pii::Masker`] that replaces what
//! they find with typed placeholders or per-document pseudonyms. The same masker is meant to
//! run on training data (`trident data prepare`), on text before it reaches a model, on logs
//! and on answers.

pub mod pii;

/// Errors from the guard crate.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// An allow-list entry is empty or not a recognisable value.
    #[error("invalid allow-list entry {entry:?}: {reason}")]
    InvalidAllow {
        /// The entry as given.
        entry: String,
        /// Why it was refused.
        reason: String,
    },
    /// An unknown personal-data kind name (e.g. in `--pii phone,emial`).
    #[error("unknown personal-data kind {name:?} (known: {known})")]
    UnknownKind {
        /// The name as given.
        name: String,
        /// The accepted names, comma-separated.
        known: String,
    },
    /// A confidence threshold outside 0..=1.
    #[error("confidence threshold {0} is outside 0..=1")]
    BadThreshold(f32),
}

impl GuardError {
    /// True when the error comes from the caller's input (all current variants are).
    pub fn is_user_error(&self) -> bool {
        match self {
            GuardError::InvalidAllow { .. } | GuardError::UnknownKind { .. } | GuardError::BadThreshold(_) => true,
        }
    }
}

/// Result alias for the guard crate.
pub type Result<T> = std::result::Result<T, GuardError>;
