//! Hybrid retrieval: tantivy BM25 with Russian and English stemming plus a persisted ANN vector index, fused by reciprocal rank, with access groups enforced inside the search.
