//! One file per model family: how its GGUF metadata maps onto [`crate::ModelConfig`] and what
//! its decoder block computes. The shared forward pass is in [`crate::decoder`].

pub mod gemma3;
pub mod llama;
pub mod qwen2;
pub mod qwen3;
