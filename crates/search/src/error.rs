//! The crate's one error type.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, SearchError>;

/// Everything that can go wrong in the hybrid index.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The index was built with another embedding model; vectors are not comparable.
    #[error("index {path} was built with embedder {index_embedder:?} (dim {index_dim}); refusing to use it with {requested_embedder:?} (dim {requested_dim}) — re-index with one model")]
    EmbedderMismatch {
        /// Index folder.
        path: PathBuf,
        /// Embedder recorded in the index.
        index_embedder: String,
        /// Its dimension.
        index_dim: usize,
        /// Embedder the caller uses.
        requested_embedder: String,
        /// Its dimension.
        requested_dim: usize,
    },
    /// A chunk or query is invalid (field named).
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// Which input (e.g. `chunk "a#3" vector`).
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A file of the index could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The index files are inconsistent or unreadable.
    #[error("corrupt index {path}: {reason}")]
    Corrupt {
        /// Index folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// tantivy failed.
    #[error("full-text index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    /// The vector index failed.
    #[error("vector index: {0}")]
    Ann(String),
    /// The rerank hook failed.
    #[error("reranker: {0}")]
    Rerank(String),
}

impl SearchError {
    /// True for errors caused by the caller's input or choice of model (CLI exit code 2).
    pub fn is_user_error(&self) -> bool {
        matches!(self, SearchError::EmbedderMismatch { .. } | SearchError::InvalidInput { .. })
    }

    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        SearchError::InvalidInput { what: what.into(), reason: reason.into() }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        SearchError::Io { path: path.to_path_buf(), source }
    }
}
