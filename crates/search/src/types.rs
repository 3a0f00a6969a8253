//! Public value types of the hybrid index.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What an index records about its embedding model; opening it with another model fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexMeta {
    /// [`trident_embed::Embedder::id`]-style model identity.
    pub embedder_id: String,
    /// Vector dimension.
    pub dim: usize,
}

/// Group name that makes a chunk readable by everyone.
pub const EVERYONE: &str = "*";

/// One chunk to index.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexChunk {
    /// Unique chunk id; adding an existing id replaces that chunk.
    pub chunk_id: String,
    /// Document the chunk belongs to.
    pub doc_id: String,
    /// Document version the chunk belongs to.
    pub version: u32,
    /// Whether this version is the document's current one. Adding chunks with `current = true`
    /// makes their version current and every other version of the document non-current.
    pub current: bool,
    /// Chunk text (BM25 field; given to the rerank hook).
    pub text: String,
    /// Embedding (normalised on insert; must have the index's dimension).
    pub vector: Vec<f32>,
    /// Access groups allowed to read the chunk; [`EVERYONE`] (`"*"`) = everyone. Must not be empty.
    pub groups: Vec<String>,
    /// Language code (`ru`, `en`, …), stored as metadata; stemming covers Russian and English in
    /// every chunk.
    pub lang: String,
    /// Unix seconds from which this version is valid (used by [`VersionFilter::AsOf`]).
    pub valid_from: i64,
    /// Unix seconds of ingestion.
    pub ingested_at: i64,
    /// Free metadata (source path, title, section, page, …); filterable by exact value.
    pub metadata: BTreeMap<String, String>,
}

/// Which document versions a search sees.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum VersionFilter {
    /// Only chunks of each document's current version (the default).
    #[default]
    CurrentOnly,
    /// The version of each document that was valid at this time (unix seconds): the version
    /// with the latest `valid_from` ≤ the time.
    AsOf(i64),
    /// Exactly this version number, of one document (`Some(doc_id)`) or of every document.
    Version(Option<String>, u32),
    /// Every version (administration and tests).
    All,
}

/// A hybrid search request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchQuery {
    /// Query text for BM25 (empty: vector only).
    pub text: String,
    /// Query embedding (None: BM25 only).
    pub vector: Option<Vec<f32>>,
    /// The asker's groups. Chunks whose groups include one of these, or `"*"`, are readable;
    /// nothing else is scored, counted or returned.
    pub groups: Vec<String>,
    /// Version visibility.
    pub version: VersionFilter,
    /// Exact-match metadata filters (all must hold).
    pub metadata: BTreeMap<String, String>,
    /// Number of hits wanted.
    pub k: usize,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// Chunk id.
    pub chunk_id: String,
    /// Document id.
    pub doc_id: String,
    /// Document version.
    pub version: u32,
    /// Fused score (reciprocal-rank fusion, or the reranker's score when one ran).
    pub score: f32,
    /// 1-based rank in the BM25 list, if the chunk was in it.
    pub bm25_rank: Option<u32>,
    /// 1-based rank in the vector list, if the chunk was in it.
    pub vector_rank: Option<u32>,
    /// Raw BM25 score, if the chunk was in the BM25 list.
    pub bm25_score: Option<f32>,
    /// Cosine similarity to the query vector, if the chunk was in the vector list (an absolute
    /// evidence measure for "I don't know" thresholds).
    pub similarity: Option<f32>,
}

/// A candidate handed to a [`Reranker`]: only chunks the asker may read ever get here.
#[derive(Debug, Clone)]
pub struct RerankCandidate {
    /// Chunk id.
    pub chunk_id: String,
    /// Chunk text.
    pub text: String,
    /// Fused score before reranking.
    pub fused_score: f32,
}

/// Optional second-stage reranker (e.g. a cross-encoder).
pub trait Reranker: Send + Sync {
    /// Returns one score per candidate (higher = better), in the candidates' order.
    fn rerank(&self, query: &str, candidates: &[RerankCandidate]) -> std::result::Result<Vec<f32>, String>;
}

/// Fusion and ANN settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchConfig {
    /// RRF constant k in 1 / (k + rank); 60 by default.
    pub rrf_k: f32,
    /// Each list (BM25, vector) is cut at `max(k, 10) × fetch_factor` before fusion.
    pub fetch_factor: usize,
    /// Readable sets up to this many chunks are searched exactly instead of through the ANN
    /// graph (restrictive filters make graph search lose recall). Measured on the 2-core VM
    /// (bench/rag/hybrid_query.rs): a filtered graph search costs ~7 ms at 10k chunks, an
    /// exact scan ~3 ms at ~5k readable and ~30 ms at ~50k, so the switch sits near 16k.
    pub exact_threshold: usize,
    /// HNSW search breadth.
    pub ef_search: usize,
    /// Candidates passed to the reranker, when one is given.
    pub rerank_top: usize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig { rrf_k: 60.0, fetch_factor: 4, exact_threshold: 16_384, ef_search: 96, rerank_top: 30 }
    }
}
