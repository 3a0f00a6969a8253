//! Gemma 3 (`general.architecture = gemma3`).
//!
//! - Embeddings are multiplied by `√hidden`; the output head is tied to them.
//! - RMSNorm is `x·(1+w)` in HF; llama.cpp's converter stores `1+w` in the GGUF, so the
//!   norms here are the plain `x·w_gguf` (the same function).
//! - Block: `x += post_attn_norm(o(attn(...)))`, `x += post_ffw_norm(mlp(ffn_norm(x)))`,
//!   with per-head q/k RMSNorm before rope and a GELU-tanh gated MLP.
//! - Local layers (all but every `sliding_window_pattern`-th, default 6) use sliding-window
//!   attention (`attention.sliding_window`) and rope base `rope.freq_base_swa` (default 10 000);
//!   global layers use `rope.freq_base` (and linear rope scaling when given).
//! - Attention scale `1/√query_pre_attn_scalar` (`attention.query_pre_attn_scalar` when the
//!   file has it, else `key_length` as in llama.cpp); final logit soft-capping when set.

use crate::config::{base_config, Activation, Family, Meta, ModelConfig, RopeStyle};
use crate::error::Result;

/// Builds the Gemma 3 configuration from GGUF metadata.
pub(crate) fn config(m: &Meta<'_>, vocab: usize, tied: bool) -> Result<ModelConfig> {
    let mut c = base_config(m, Family::Gemma3, vocab, tied)?;
    c.rope_style = RopeStyle::Neox;
    c.qk_norm = true;
    c.post_norms = true;
    c.activation = Activation::GeluTanh;
    c.embed_scale = Some((c.hidden_size as f64).sqrt());
    c.sliding_window = Some(m.usize_opt("attention.sliding_window")?.unwrap_or(512));
    c.sliding_window_pattern = m.usize_opt("attention.sliding_window_pattern")?.unwrap_or(6);
    c.rope_theta_local = Some(m.f64_opt("rope.freq_base_swa")?.unwrap_or(10_000.0));
    let qpas = m.f64_opt("attention.query_pre_attn_scalar")?.unwrap_or(c.head_dim as f64);
    c.attn_scale = 1.0 / qpas.sqrt();
    Ok(c)
}
