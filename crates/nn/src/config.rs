//! Model hyper-parameters read from GGUF metadata, shared by all families.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;

use crate::error::{NnError, Result};

/// The supported model families (`general.architecture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Family {
    /// Qwen2 / Qwen2.5: q/k/v biases, NEOX rope.
    Qwen2,
    /// Qwen3: per-head q/k RMSNorm, no biases, NEOX rope.
    Qwen3,
    /// Llama 2/3: interleaved ("normal") rope on llama.cpp-permuted Q/K weights.
    Llama,
    /// Gemma 3: scaled embeddings, pre/post norms, q/k norms, sliding-window local layers.
    Gemma3,
}

impl Family {
    /// Maps a GGUF `general.architecture` string to a family.
    pub fn from_arch(arch: &str) -> Option<Self> {
        match arch {
            "qwen2" => Some(Self::Qwen2),
            "qwen3" => Some(Self::Qwen3),
            "llama" => Some(Self::Llama),
            "gemma3" => Some(Self::Gemma3),
            _ => None,
        }
    }

    /// The GGUF architecture string (metadata key prefix).
    pub fn arch(self) -> &'static str {
        match self {
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Llama => "llama",
            Self::Gemma3 => "gemma3",
        }
    }
}

/// How rotary embeddings pair up the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RopeStyle {
    /// GPT-NeoX / HF `rotate_half`: dimension `i` pairs with `i + d/2` (llama.cpp
    /// `LLAMA_ROPE_TYPE_NEOX`; qwen2, qwen3, gemma3).
    Neox,
    /// Interleaved: dimension `2i` pairs with `2i+1` (llama.cpp `LLAMA_ROPE_TYPE_NORM`; llama).
    /// llama.cpp's converter permutes the rows of Llama's Q/K weights so that this style on
    /// the permuted weights equals HF's `rotate_half` on the original ones.
    Interleaved,
}

/// The MLP gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    /// SiLU (Swish): qwen2, qwen3, llama.
    Silu,
    /// GELU, tanh approximation (`gelu_pytorch_tanh`): gemma3.
    GeluTanh,
}

/// Everything the forward pass needs to know about a model, independent of its weights.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelConfig {
    /// The family.
    pub family: Family,
    /// Vocabulary size (rows of `token_embd.weight`).
    pub vocab_size: usize,
    /// Residual width (`embedding_length`).
    pub hidden_size: usize,
    /// MLP inner width (`feed_forward_length`).
    pub intermediate_size: usize,
    /// Decoder layers (`block_count`).
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention when smaller than `num_heads`).
    pub num_kv_heads: usize,
    /// Per-head width of queries and keys (`attention.key_length`, default hidden/heads).
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f64,
    /// Rope base of the global (or only) attention layers.
    pub rope_theta: f64,
    /// Rope base of sliding-window (local) layers (gemma3: 10 000).
    pub rope_theta_local: Option<f64>,
    /// Rope pairing convention.
    pub rope_style: RopeStyle,
    /// Number of rotated dimensions per head (`rope.dimension_count`, default `head_dim`).
    pub rope_dim: usize,
    /// Linear rope scaling factor for global layers (positions divided by it; 1 = none).
    pub rope_linear_factor: f64,
    /// Per-frequency divisors (Llama 3 "llama3" rope scaling, from the `rope_freqs.weight`
    /// tensor llama.cpp's converter writes); `None` = no scaling.
    pub rope_freq_factors: Option<Vec<f32>>,
    /// Sliding-window size of local layers, when the family has them.
    pub sliding_window: Option<usize>,
    /// Every `n`-th layer (1-based) is global; the others are local (gemma3: 6).
    pub sliding_window_pattern: usize,
    /// Multiplier of `q·kᵀ` (`1/√head_dim`, or `1/√query_pre_attn_scalar` for gemma3).
    pub attn_scale: f64,
    /// q/k/v projections carry biases (qwen2).
    pub qkv_bias: bool,
    /// Per-head RMSNorm on queries and keys (qwen3, gemma3).
    pub qk_norm: bool,
    /// Extra norms after attention and MLP, before the residual add (gemma3).
    pub post_norms: bool,
    /// Multiplier of the token embeddings (gemma3: √hidden).
    pub embed_scale: Option<f64>,
    /// MLP activation.
    pub activation: Activation,
    /// Final logit soft-capping `cap·tanh(z/cap)`, when set.
    pub final_logit_softcap: Option<f64>,
    /// Attention logit soft-capping, when set.
    pub attn_logit_softcap: Option<f64>,
    /// The output head reuses `token_embd.weight` (no `output.weight` in the file).
    pub tied_embeddings: bool,
    /// Training context length from the metadata.
    pub context_length: usize,
}

impl ModelConfig {
    /// Whether layer `i` (0-based) uses sliding-window (local) attention.
    pub fn is_local_layer(&self, i: usize) -> bool {
        self.sliding_window.is_some() && self.sliding_window_pattern > 0 && (i + 1) % self.sliding_window_pattern != 0
    }
}

/// Typed access to a GGUF metadata map, with errors naming the file and key.
pub(crate) struct Meta<'a> {
    pub md: &'a HashMap<String, Value>,
    pub path: &'a Path,
    pub arch: &'a str,
}

impl Meta<'_> {
    fn err(&self, key: &str, reason: impl Into<String>) -> NnError {
        NnError::Metadata { path: self.path.to_path_buf(), key: key.to_string(), reason: reason.into() }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.md.get(&format!("{}.{key}", self.arch))
    }

    fn as_u64(&self, key: &str, v: &Value) -> Result<u64> {
        let full = format!("{}.{key}", self.arch);
        match v {
            Value::U8(x) => Ok(*x as u64),
            Value::U16(x) => Ok(*x as u64),
            Value::U32(x) => Ok(*x as u64),
            Value::U64(x) => Ok(*x),
            Value::I8(x) if *x >= 0 => Ok(*x as u64),
            Value::I16(x) if *x >= 0 => Ok(*x as u64),
            Value::I32(x) if *x >= 0 => Ok(*x as u64),
            Value::I64(x) if *x >= 0 => Ok(*x as u64),
            // Some converters write per-layer arrays (e.g. head_count_kv); all equal is required.
            Value::Array(a) if !a.is_empty() => {
                let first = self.as_u64(key, &a[0])?;
                for x in a {
                    if self.as_u64(key, x)? != first {
                        return Err(self.err(&full, "per-layer values differ (not supported)"));
                    }
                }
                Ok(first)
            }
            other => Err(self.err(&full, format!("expected a non-negative integer, found {:?}", other.value_type()))),
        }
    }

    /// Required unsigned integer `<arch>.<key>`.
    pub fn usize(&self, key: &str) -> Result<usize> {
        let full = format!("{}.{key}", self.arch);
        let v = self.get(key).ok_or_else(|| self.err(&full, "missing"))?;
        let n = self.as_u64(key, v)? as usize;
        if n == 0 {
            return Err(self.err(&full, "must be positive"));
        }
        Ok(n)
    }

    /// Optional unsigned integer `<arch>.<key>`.
    pub fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            Some(v) => Ok(Some(self.as_u64(key, v)? as usize)),
            None => Ok(None),
        }
    }

    /// Optional float `<arch>.<key>`.
    pub fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        let full = format!("{}.{key}", self.arch);
        let v = match self.get(key) {
            None => None,
            Some(Value::F32(x)) => Some(*x as f64),
            Some(Value::F64(x)) => Some(*x),
            Some(v) => Some(self.as_u64(key, v)? as f64),
        };
        match v {
            Some(x) if !x.is_finite() => Err(self.err(&full, "not a finite number")),
            o => Ok(o),
        }
    }

    /// Optional string `<arch>.<key>`.
    pub fn str_opt(&self, key: &str) -> Option<String> {
        match self.get(key) {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        }
    }
}

/// Fields common to every family, read from `<arch>.*` keys.
pub(crate) fn base_config(m: &Meta<'_>, family: Family, vocab_size: usize, tied: bool) -> Result<ModelConfig> {
    let hidden = m.usize("embedding_length")?;
    let heads = m.usize("attention.head_count")?;
    let kv_heads = m.usize_opt("attention.head_count_kv")?.unwrap_or(heads);
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(m.err(
            &format!("{}.attention.head_count_kv", m.arch),
            format!("{kv_heads} does not divide the {heads} query heads"),
        ));
    }
    let head_dim = match m.usize_opt("attention.key_length")? {
        Some(k) => k,
        None => {
            if hidden % heads != 0 {
                return Err(m.err(&format!("{}.embedding_length", m.arch), "not divisible by head_count"));
            }
            hidden / heads
        }
    };
    let rope_dim = m.usize_opt("rope.dimension_count")?.unwrap_or(head_dim);
    if rope_dim > head_dim || rope_dim % 2 != 0 {
        return Err(m.err(&format!("{}.rope.dimension_count", m.arch), format!("{rope_dim} invalid for head_dim {head_dim}")));
    }
    let rope_linear_factor = match m.str_opt("rope.scaling.type").as_deref() {
        Some("linear") => m.f64_opt("rope.scaling.factor")?.unwrap_or(1.0),
        Some("none") | None => 1.0,
        Some(other) => {
            return Err(m.err(&format!("{}.rope.scaling.type", m.arch), format!("rope scaling `{other}` is not supported")));
        }
    };
    Ok(ModelConfig {
        family,
        vocab_size,
        hidden_size: hidden,
        intermediate_size: m.usize("feed_forward_length")?,
        num_layers: m.usize("block_count")?,
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim,
        rms_eps: m.f64_opt("attention.layer_norm_rms_epsilon")?.unwrap_or(1e-6),
        rope_theta: m.f64_opt("rope.freq_base")?.unwrap_or(10_000.0),
        rope_theta_local: None,
        rope_style: RopeStyle::Neox,
        rope_dim,
        rope_linear_factor,
        rope_freq_factors: None,
        sliding_window: None,
        sliding_window_pattern: 0,
        attn_scale: 1.0 / (head_dim as f64).sqrt(),
        qkv_bias: false,
        qk_norm: false,
        post_norms: false,
        embed_scale: None,
        activation: Activation::Silu,
        final_logit_softcap: m.f64_opt("final_logit_softcapping")?.filter(|c| *c > 0.0),
        attn_logit_softcap: m.f64_opt("attn_logit_softcapping")?.filter(|c| *c > 0.0),
        tied_embeddings: tied,
        context_length: m.usize_opt("context_length")?.unwrap_or(4096),
    })
}
