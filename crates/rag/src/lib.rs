//! The knowledge base: ingestion, chunking, embeddings, hybrid BM25 + vector retrieval with
//! access groups and versions, and cited answers.
//!
//! Entry points: [`KnowledgeBase::open`] / [`KnowledgeBase::ingest`] / [`KnowledgeBase::sync`] /
//! [`KnowledgeBase::search`], [`answer::answer`] for cited answers, [`eval::run`] for
//! `trident eval rag`, and [`quickstart::run_example`] for the quickstart.

pub mod access;
pub mod answer;
pub mod chunk;
pub mod embed;
pub mod eval;
pub mod generate;
pub mod index;
pub mod kb;
pub mod pii;
pub mod parse;
pub mod quickstart;
pub mod scope;
pub mod text;

pub use access::AccessMap;
pub use answer::{Answer, AnswerConfig, ChatMessage, Citation, Generator};
pub use chunk::ChunkConfig;
pub use generate::EngineGenerator;
/// The embedding models (re-exported so the binary names one crate for the whole RAG stack).
pub use trident_embed;
pub use embed::Embedder;
#[cfg(any(test, feature = "testing"))]
pub use embed::HashEmbedder;
pub use index::{EmbeddedIndex, RetrievalIndex};
pub use kb::{FileStatus, Hit, IngestReport, KbOptions, KnowledgeBase, Progress, SearchRequest, SourceSpec};

use std::path::PathBuf;

/// Errors of the RAG crate.
#[derive(Debug, thiserror::Error)]
pub enum RagError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file's extension is not one the parsers handle.
    #[error("{path}: unsupported file type {ext:?} (supported: pdf, docx, html, md, txt, csv)")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// Its extension.
        ext: String,
    },
    /// A file is larger than the configured limit.
    #[error("{path}: file is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A file is corrupt, encrypted, empty or otherwise unreadable.
    #[error("{path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The index was built with another embedding model.
    #[error("knowledge base {kb} was indexed with embedder {stored:?} ({stored_dim} dims) but {given:?} ({given_dim} dims) was given; re-create the KB or use the same model")]
    EmbedderMismatch {
        /// The KB folder.
        kb: PathBuf,
        /// The recorded model id.
        stored: String,
        /// The recorded dimension.
        stored_dim: usize,
        /// The model offered now.
        given: String,
        /// Its dimension.
        given_dim: usize,
    },
    /// Bad input from the caller (flag values, access map, question file).
    #[error("{0}")]
    BadInput(String),
    /// A named thing does not exist.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// What kind of thing.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The embedding model failed.
    #[error("embedding failed: {0}")]
    Embed(String),
    /// The language model failed.
    #[error("generation failed: {0}")]
    Generate(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] trident_store::StoreError),
    /// The retrieval index failed.
    #[error("search index: {0}")]
    Search(trident_search::SearchError),
}

impl RagError {
    /// True when the error comes from the caller's input (exit code 2), not the system.
    pub fn is_user_error(&self) -> bool {
        match self {
            RagError::Unsupported { .. }
            | RagError::TooLarge { .. }
            | RagError::Parse { .. }
            | RagError::EmbedderMismatch { .. }
            | RagError::BadInput(_)
            | RagError::NotFound { .. } => true,
            RagError::Store(e) => e.is_user_error(),
            RagError::Search(e) => e.is_user_error(),
            RagError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        }
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, RagError>;
