//! Qwen3 (`general.architecture = qwen3`).
//!
//! As Qwen2 without q/k/v biases, plus a per-head RMSNorm on queries and keys
//! (`attn_q_norm.weight`, `attn_k_norm.weight`, width `head_dim`) applied before rope.
//! `head_dim` comes from `qwen3.attention.key_length` (it need not equal hidden/heads).

use crate::config::{base_config, Family, Meta, ModelConfig, RopeStyle};
use crate::error::Result;

/// Builds the Qwen3 configuration from GGUF metadata.
pub(crate) fn config(m: &Meta<'_>, vocab: usize, tied: bool) -> Result<ModelConfig> {
    let mut c = base_config(m, Family::Qwen3, vocab, tied)?;
    c.rope_style = RopeStyle::Neox;
    c.qk_norm = true;
    Ok(c)
}
