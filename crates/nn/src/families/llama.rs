//! Llama 2/3 (`general.architecture = llama`).
//!
//! Block as Qwen2 without biases. Rope is the *interleaved* style: llama.cpp's converter
//! permutes the rows of `attn_q`/`attn_k` so that rotating pairs `(2i, 2i+1)` of the permuted
//! projections equals HF's `rotate_half` on the original weights (q·k is unchanged because
//! both sides are permuted alike). Llama 3.1+ "llama3" rope scaling arrives as the
//! `rope_freqs.weight` tensor (per-frequency divisors), read by the loader; linear scaling as
//! `llama.rope.scaling.type = linear`.

use crate::config::{base_config, Family, Meta, ModelConfig, RopeStyle};
use crate::error::Result;

/// Builds the Llama configuration from GGUF metadata.
pub(crate) fn config(m: &Meta<'_>, vocab: usize, tied: bool) -> Result<ModelConfig> {
    let mut c = base_config(m, Family::Llama, vocab, tied)?;
    c.rope_style = RopeStyle::Interleaved;
    Ok(c)
}
