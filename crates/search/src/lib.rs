//! Hybrid retrieval.
