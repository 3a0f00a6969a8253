//! Prompt tables: specs, immutable versions, labels (owned by the prompt work).
