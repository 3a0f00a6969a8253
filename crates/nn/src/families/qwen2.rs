//! Qwen2 / Qwen2.5 (`general.architecture = qwen2`).
//!
//! Block: `x += o(attn(rope_neox(q(n1(x))), rope_neox(k(n1(x))), v(n1(x))))`,
//! `x += down(silu(gate(n2(x))) ⊙ up(n2(x)))`, with biases on q/k/v and RMSNorm `x·w`.
//! Output head: `output.weight`, or tied to `token_embd.weight` when absent.

use crate::config::{base_config, Family, Meta, ModelConfig, RopeStyle};
use crate::error::Result;

/// Builds the Qwen2 configuration from GGUF metadata.
pub(crate) fn config(m: &Meta<'_>, vocab: usize, tied: bool) -> Result<ModelConfig> {
    let mut c = base_config(m, Family::Qwen2, vocab, tied)?;
    c.rope_style = RopeStyle::Neox;
    c.qkv_bias = true;
    Ok(c)
}
