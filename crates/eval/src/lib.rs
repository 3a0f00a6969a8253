//! Evaluation: metrics and side-by-side comparison of prompt-only, RAG, LoRA and RAG+LoRA.
