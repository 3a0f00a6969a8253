//! The retrieval index behind a trait: the knowledge base writes whole documents to it and asks
//! it for ACL-filtered hybrid hits. The embedded implementation is `trident-search`'s
//! [`HybridIndex`] (tantivy BM25 with ru/en stemming + HNSW vectors, reciprocal-rank fusion);
//! a server deployment can put PostgreSQL + pgvector behind the same trait.
//!
//! Access groups are part of every [`SearchQuery`]: the implementation must apply them inside
//! its search (a chunk the asker may not read is never scored, counted or returned).

use crate::{RagError, Result};
use std::path::Path;
use trident_search::{HybridIndex, IndexChunk, IndexMeta, SearchQuery};

pub use trident_search::Hit as IndexHit;

/// One document as the index should hold it after a write: every stored chunk of every
/// version, and which version is current (`None`: no version is current).
#[derive(Debug, Clone)]
pub struct DocChunks {
    /// Document id.
    pub doc_id: String,
    /// All chunks of all its versions (empty: the document is gone).
    pub chunks: Vec<IndexChunk>,
    /// The current version, if any.
    pub current: Option<u32>,
}

/// A retrieval index the knowledge base can use.
pub trait RetrievalIndex: Send + Sync {
    /// Replaces the listed documents as a whole, atomically (after a crash the index shows all
    /// of the write or none of it).
    fn replace_docs(&self, docs: &[DocChunks]) -> Result<()>;
    /// Hybrid search with the asker's groups, version and metadata filters inside the search.
    fn search(&self, q: &SearchQuery) -> Result<Vec<IndexHit>>;
    /// Number of chunks `q` may read and, per analyzed term, how many of them contain it.
    fn doc_freqs(&self, q: &SearchQuery, terms: &[String]) -> Result<(u64, Vec<u64>)>;
    /// Committed chunks (all versions).
    fn len(&self) -> Result<u64>;
    /// Whether the index holds no chunk.
    fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

fn search_err(e: trident_search::SearchError) -> RagError {
    match e {
        trident_search::SearchError::EmbedderMismatch { path, index_embedder, index_dim, requested_embedder, requested_dim } => {
            RagError::EmbedderMismatch { kb: path, stored: index_embedder, stored_dim: index_dim, given: requested_embedder, given_dim: requested_dim }
        }
        other => RagError::Search(other),
    }
}

/// The embedded index: `trident-search`'s [`HybridIndex`] in the KB's `index/` folder.
pub struct EmbeddedIndex(HybridIndex);

impl EmbeddedIndex {
    /// Opens (creating) the index in `dir`; an index built with another embedder (id or
    /// dimension) is [`RagError::EmbedderMismatch`].
    pub fn open(dir: &Path, embedder_id: &str, dim: usize) -> Result<Self> {
        let meta = IndexMeta { embedder_id: embedder_id.to_string(), dim };
        Ok(Self(HybridIndex::open_or_create(dir, &meta).map_err(search_err)?))
    }
}

impl RetrievalIndex for EmbeddedIndex {
    fn replace_docs(&self, docs: &[DocChunks]) -> Result<()> {
        for d in docs {
            self.0.remove_doc(&d.doc_id);
            if let Err(e) = self.0.add(&d.chunks) {
                self.0.rollback();
                return Err(search_err(e));
            }
            // Version numbers start at 1, so 0 leaves the document without a current version.
            self.0.set_current(&d.doc_id, d.current.unwrap_or(0));
        }
        self.0.commit().map_err(search_err)
    }

    fn search(&self, q: &SearchQuery) -> Result<Vec<IndexHit>> {
        self.0.search(q).map_err(search_err)
    }

    fn doc_freqs(&self, q: &SearchQuery, terms: &[String]) -> Result<(u64, Vec<u64>)> {
        self.0.doc_freqs(q, terms).map_err(search_err)
    }

    fn len(&self) -> Result<u64> {
        Ok(self.0.stats().chunks)
    }
}
