//! llama.cpp's GGUF-LoRA adapter format: writer and fit check against a base model.
//!
//! Format (from llama.cpp's `llama-adapter.cpp` and `convert_lora_to_gguf.py`):
//! metadata `general.type = "adapter"`, `adapter.type = "lora"`, `adapter.lora.alpha` (f32),
//! `general.architecture` equal to the base model's; for every adapted base tensor `W`
//! (ggml shape `[n_in, n_out]`) two tensors `W.lora_a` with ggml shape `[n_in, r]` and
//! `W.lora_b` with ggml shape `[r, n_out]` — byte-for-byte PEFT's `lora_A.weight` (`[r, in]`
//! row-major) and `lora_B.weight` (`[out, r]` row-major). llama.cpp computes
//! `y = W x + scale · B (A x)` with `scale = adapter_scale · alpha / r` (or `adapter_scale` when
//! alpha is 0). For `token_embd.weight` llama.cpp flips the roles of A and B (it checks
//! `B.ne[1] == W.ne[0]` and `A.ne[1] == W.ne[1]`); [`inspect_adapter_against`] follows it.

use std::collections::HashSet;
use std::path::Path;

use crate::error::GgufError;
use crate::inspect::{GgufInfo, inspect};
use crate::types::GgmlType;
use crate::writer::GgufWriter;

/// One adapted base tensor: PEFT-layout LoRA matrices.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraTensorPair {
    /// Name of the base tensor, e.g. `blk.0.attn_q.weight`.
    pub base: String,
    /// LoRA rank r.
    pub rank: usize,
    /// Input features of the base projection (its ggml `ne[0]`).
    pub in_features: usize,
    /// Output features of the base projection (its ggml `ne[1]`).
    pub out_features: usize,
    /// A, row-major `[rank, in_features]` (PEFT `lora_A.weight`).
    pub a: Vec<f32>,
    /// B, row-major `[out_features, rank]` (PEFT `lora_B.weight`).
    pub b: Vec<f32>,
}

/// A whole LoRA adapter to write with [`write_lora_adapter`].
#[derive(Debug, Clone, PartialEq)]
pub struct LoraAdapterSpec {
    /// `general.architecture` of the base model (must match it, llama.cpp checks).
    pub architecture: String,
    /// LoRA alpha; llama.cpp scales the update by `alpha / rank`.
    pub alpha: f32,
    /// Optional `general.name`.
    pub name: Option<String>,
    /// Storage type of the A/B tensors: [`GgmlType::F32`] or [`GgmlType::F16`].
    pub dtype: GgmlType,
    /// The adapted tensors.
    pub tensors: Vec<LoraTensorPair>,
}

fn invalid(detail: String) -> GgufError {
    GgufError::InvalidWrite { detail }
}

/// Write `spec` as a llama.cpp GGUF-LoRA file at `path`.
///
/// Checks the spec's own consistency (data lengths vs rank and features, rank > 0, no
/// duplicate base tensors, F32/F16 storage); use [`inspect_adapter_against`] to check that the
/// written file fits a particular base model.
pub fn write_lora_adapter(path: &Path, spec: &LoraAdapterSpec) -> Result<(), GgufError> {
    if !matches!(spec.dtype, GgmlType::F32 | GgmlType::F16) {
        return Err(invalid(format!("LoRA tensors must be F32 or F16, not {}", spec.dtype)));
    }
    if spec.tensors.is_empty() {
        return Err(invalid("LoRA adapter has no tensors".into()));
    }
    if !spec.alpha.is_finite() {
        return Err(invalid(format!("LoRA alpha {} is not finite", spec.alpha)));
    }
    let mut w = GgufWriter::new();
    w.set("general.architecture", spec.architecture.as_str());
    w.set("general.type", "adapter");
    if let Some(name) = &spec.name {
        w.set("general.name", name.as_str());
    }
    w.set("adapter.type", "lora");
    w.set("adapter.lora.alpha", spec.alpha);
    let mut seen = HashSet::new();
    for t in &spec.tensors {
        if !seen.insert(t.base.as_str()) {
            return Err(invalid(format!("base tensor '{}' adapted twice", t.base)));
        }
        if t.rank == 0 || t.in_features == 0 || t.out_features == 0 {
            return Err(invalid(format!("'{}': rank and features must be > 0", t.base)));
        }
        if t.a.len() != t.rank * t.in_features {
            return Err(invalid(format!(
                "'{}': A has {} values, expected rank {} x in {}",
                t.base,
                t.a.len(),
                t.rank,
                t.in_features
            )));
        }
        if t.b.len() != t.out_features * t.rank {
            return Err(invalid(format!(
                "'{}': B has {} values, expected out {} x rank {}",
                t.base,
                t.b.len(),
                t.out_features,
                t.rank
            )));
        }
        let (r, i, o) = (t.rank as u64, t.in_features as u64, t.out_features as u64);
        w.add_tensor(&format!("{}.lora_a", t.base), &[i, r], &t.a, spec.dtype)?;
        w.add_tensor(&format!("{}.lora_b", t.base), &[r, o], &t.b, spec.dtype)?;
    }
    w.write(path)
}

/// Inspect the adapter at `adapter_path` and check that llama.cpp will accept it for the base
/// model `base` (as returned by [`inspect`]): it is a valid LoRA adapter, its architecture
/// matches, every `lora_a`/`lora_b` pair targets a tensor the base has, with the shapes
/// llama.cpp's `llama_adapter_lora_init` checks (`A.ne[0] == W.ne[0]`, `B.ne[1] == W.ne[1]`,
/// `A.ne[1] == B.ne[0]`; flipped for `token_embd.weight`).
///
/// Returns the adapter's [`GgufInfo`]; errors are [`GgufError::AdapterMismatch`] (or whatever
/// [`inspect`] reports for a broken file).
pub fn inspect_adapter_against(adapter_path: &Path, base: &GgufInfo) -> Result<GgufInfo, GgufError> {
    let info = inspect(adapter_path)?;
    let mismatch = |detail: String| GgufError::AdapterMismatch {
        path: adapter_path.to_path_buf(),
        base: base.path.clone(),
        detail,
    };
    if !info.is_lora_adapter {
        return Err(mismatch("not a LoRA adapter (general.type must be 'adapter', adapter.type 'lora')".into()));
    }
    if base.is_lora_adapter {
        return Err(mismatch("the base is itself an adapter".into()));
    }
    if info.architecture != base.architecture {
        return Err(mismatch(format!(
            "adapter is for architecture '{}', base model is '{}'",
            info.architecture, base.architecture
        )));
    }
    let mut pairs = 0usize;
    for a in info.tensors() {
        let Some(name) = a.name.strip_suffix(".lora_a") else { continue };
        let b = info
            .tensor(&format!("{name}.lora_b"))
            .ok_or_else(|| mismatch(format!("'{name}' has lora_a but no lora_b")))?;
        let w = base
            .tensor(name)
            .ok_or_else(|| mismatch(format!("target tensor '{name}' does not exist in the base model")))?;
        let dim = |s: &[u64], i: usize| s.get(i).copied().unwrap_or(1);
        let ok = if name.ends_with("token_embd.weight") {
            dim(&w.shape, 0) == dim(&b.shape, 1) && dim(&w.shape, 1) == dim(&a.shape, 1)
        } else {
            dim(&w.shape, 0) == dim(&a.shape, 0)
                && dim(&w.shape, 1) == dim(&b.shape, 1)
                && dim(&a.shape, 1) == dim(&b.shape, 0)
        };
        if !ok {
            return Err(mismatch(format!(
                "'{name}': base shape {:?} (ggml order), lora_a {:?}, lora_b {:?}; expected lora_a [{}, r] and lora_b [r, {}]",
                w.shape,
                a.shape,
                b.shape,
                dim(&w.shape, 0),
                dim(&w.shape, 1)
            )));
        }
        pairs += 1;
    }
    if pairs == 0 {
        return Err(mismatch("adapter contains no lora_a/lora_b pairs".into()));
    }
    Ok(info)
}
