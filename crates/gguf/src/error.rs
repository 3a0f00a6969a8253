//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong reading, validating or writing a GGUF file.
///
/// Every variant that describes a bad *file* carries the file's path and enough detail (key,
/// tensor name, offsets) for a user to see what is wrong without a hex editor. All of those are
/// user errors ([`GgufError::is_user_error`]): a GGUF file is the user's input.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file does not exist.
    #[error("{path}: no such file")]
    NotFound {
        /// The path that was looked up.
        path: PathBuf,
    },

    /// The file exists but could not be opened or read (permissions, a directory, I/O error).
    #[error("{path}: cannot read: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The file is empty (0 bytes).
    #[error("{path}: file is empty (0 bytes), not a GGUF model")]
    Empty {
        /// The file.
        path: PathBuf,
    },

    /// The file does not start with the GGUF magic `GGUF`.
    #[error("{path}: not a GGUF file (magic bytes are {found:02x?}, expected \"GGUF\")")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The first (up to) four bytes of the file.
        found: Vec<u8>,
    },

    /// The GGUF version is not 2 or 3 (the versions llama.cpp reads).
    #[error("{path}: unsupported GGUF version {version} (supported: 2, 3){hint}")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version number found in the header.
        version: u32,
        /// Extra hint (e.g. a byte-order mismatch), possibly empty.
        hint: String,
    },

    /// The file ends inside the header, the metadata or the tensor table.
    #[error("{path}: truncated GGUF header: {detail}")]
    TruncatedHeader {
        /// The file.
        path: PathBuf,
        /// What was being read when the file ended.
        detail: String,
    },

    /// A metadata entry is malformed (bad type id, invalid UTF-8, over-long string or array,
    /// duplicate key, wrong value type for a well-known key, a value llama.cpp would abort on).
    #[error("{path}: bad metadata key '{key}': {detail}")]
    BadMetadata {
        /// The file.
        path: PathBuf,
        /// The key (or `#<index>` when the key itself could not be read).
        key: String,
        /// What is wrong.
        detail: String,
    },

    /// A tensor-table entry is malformed (name, dimensions, element count, duplicate name).
    #[error("{path}: bad tensor '{tensor}': {detail}")]
    BadTensorInfo {
        /// The file.
        path: PathBuf,
        /// The tensor name (or `#<index>` when the name could not be read).
        tensor: String,
        /// What is wrong.
        detail: String,
    },

    /// A tensor uses a ggml type id that is unknown or no longer supported by llama.cpp.
    #[error("{path}: tensor '{tensor}' has unknown or unsupported tensor type id {type_id}")]
    UnknownTensorType {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The raw type id.
        type_id: u32,
    },

    /// A tensor's data offset is not a multiple of the file's alignment, or does not follow the
    /// previous tensor the way llama.cpp requires (tensors are packed in table order, each
    /// padded to the alignment).
    #[error("{path}: tensor '{tensor}' has offset {offset}: {detail}")]
    MisalignedOffset {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The offset relative to the start of the data section.
        offset: u64,
        /// What is wrong, including the expected value.
        detail: String,
    },

    /// A tensor's data extends beyond the end of the file (a cut download or copy).
    #[error(
        "{path}: tensor '{tensor}' data ends at byte {end} but the file has only {file_size} bytes; the file is truncated or incomplete (re-download it)"
    )]
    TruncatedTensorData {
        /// The file.
        path: PathBuf,
        /// The first tensor found beyond the end of the file.
        tensor: String,
        /// Absolute byte position where the tensor's data ends.
        end: u64,
        /// Actual file size.
        file_size: u64,
    },

    /// `general.architecture` is not an architecture llama.cpp knows (or is missing).
    #[error("{path}: unknown model architecture '{architecture}' (llama.cpp does not support it)")]
    UnknownArchitecture {
        /// The file.
        path: PathBuf,
        /// The architecture string found (empty when the key is missing).
        architecture: String,
    },

    /// A metadata key the architecture needs is missing.
    #[error("{path}: missing required metadata key '{key}' for architecture '{architecture}'")]
    MissingKey {
        /// The file.
        path: PathBuf,
        /// The missing key.
        key: String,
        /// The file's architecture.
        architecture: String,
    },

    /// The tokenizer metadata is missing or unusable.
    #[error("{path}: tokenizer problem: {detail}")]
    MissingTokenizer {
        /// The file.
        path: PathBuf,
        /// What is missing or wrong.
        detail: String,
    },

    /// Tensor shapes disagree with the metadata (e.g. `token_embd.weight` vs vocabulary size).
    #[error("{path}: inconsistent shape of tensor '{tensor}': {detail}")]
    InconsistentShape {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// Expected vs found.
        detail: String,
    },

    /// A LoRA adapter file is not usable with the given base model (wrong architecture, a
    /// target tensor the base lacks, wrong shapes, not an adapter at all).
    #[error("{path}: LoRA adapter does not fit base model {base}: {detail}")]
    AdapterMismatch {
        /// The adapter file.
        path: PathBuf,
        /// The base model file.
        base: PathBuf,
        /// What does not fit.
        detail: String,
    },

    /// The data handed to the writer is inconsistent (shape vs data length, a row length that
    /// is not a multiple of the quantization block, an over-long name, ...). A caller bug.
    #[error("invalid GGUF write request: {detail}")]
    InvalidWrite {
        /// What is wrong.
        detail: String,
    },

    /// Writing a GGUF file failed (I/O).
    #[error("{path}: cannot write GGUF file: {source}")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// Quantizing a tensor through candle failed.
    #[error("quantizing tensor '{tensor}' failed: {detail}")]
    Quantize {
        /// The tensor name.
        tensor: String,
        /// candle's error text.
        detail: String,
    },
}

impl GgufError {
    /// True when the error comes from bad user input (a bad or unsuitable file), false for
    /// internal failures (write I/O, caller bugs). The CLI maps user errors to exit code 2.
    pub fn is_user_error(&self) -> bool {
        match self {
            GgufError::NotFound { .. }
            | GgufError::Unreadable { .. }
            | GgufError::Empty { .. }
            | GgufError::BadMagic { .. }
            | GgufError::UnsupportedVersion { .. }
            | GgufError::TruncatedHeader { .. }
            | GgufError::BadMetadata { .. }
            | GgufError::BadTensorInfo { .. }
            | GgufError::UnknownTensorType { .. }
            | GgufError::MisalignedOffset { .. }
            | GgufError::TruncatedTensorData { .. }
            | GgufError::UnknownArchitecture { .. }
            | GgufError::MissingKey { .. }
            | GgufError::MissingTokenizer { .. }
            | GgufError::InconsistentShape { .. }
            | GgufError::AdapterMismatch { .. } => true,
            GgufError::InvalidWrite { .. } | GgufError::Write { .. } | GgufError::Quantize { .. } => {
                false
            }
        }
    }

    /// The file the error is about, when there is one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            GgufError::NotFound { path }
            | GgufError::Unreadable { path, .. }
            | GgufError::Empty { path }
            | GgufError::BadMagic { path, .. }
            | GgufError::UnsupportedVersion { path, .. }
            | GgufError::TruncatedHeader { path, .. }
            | GgufError::BadMetadata { path, .. }
            | GgufError::BadTensorInfo { path, .. }
            | GgufError::UnknownTensorType { path, .. }
            | GgufError::MisalignedOffset { path, .. }
            | GgufError::TruncatedTensorData { path, .. }
            | GgufError::UnknownArchitecture { path, .. }
            | GgufError::MissingKey { path, .. }
            | GgufError::MissingTokenizer { path, .. }
            | GgufError::InconsistentShape { path, .. }
            | GgufError::AdapterMismatch { path, .. }
            | GgufError::Write { path, .. } => Some(path),
            GgufError::InvalidWrite { .. } | GgufError::Quantize { .. } => None,
        }
    }
}
