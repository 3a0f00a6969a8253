//! The knowledge base: ingestion, chunking, embeddings, hybrid BM25 + vector retrieval with access groups and versions, and cited answers.
