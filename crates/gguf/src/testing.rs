//! Tiny random-weight GGUF models (placeholder).
