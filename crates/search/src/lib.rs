//! Hybrid retrieval: tantivy BM25 with Russian and English stemming plus a persisted HNSW vector
//! index (`hnsw_rs`), fused by reciprocal rank, with access groups enforced inside the search.
//!
//! The rag crate builds a [`HybridIndex`] per knowledge base with
//! [`HybridIndex::open_or_create`], queues [`IndexChunk`]s with [`HybridIndex::add`] /
//! removals / [`HybridIndex::set_current`], makes them durable with [`HybridIndex::commit`], and
//! asks [`HybridIndex::search`] with the asker's groups.

mod analyzer;
mod ann;
mod error;
mod index;
mod types;

pub use analyzer::{ANALYZER, analyze, analyzer};
pub use error::{Result, SearchError};
pub use index::{HybridIndex, IndexStats};
pub use types::{
    EVERYONE, Hit, IndexChunk, IndexMeta, RerankCandidate, Reranker, SearchConfig, SearchQuery, VersionFilter,
};

#[cfg(test)]
mod tests;
