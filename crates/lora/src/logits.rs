//! Next-token logits of a base model with or without an adapter — `trident lora logits`, the
//! Rust side of the PEFT cross-check (`bench/lora/peft_check.py`).
//!
//! Two engines give the same numbers a reference implementation can be compared with:
//!
//! - [`candle_top_tokens`]: the training model code ([`trident_nn`]) with every weight
//!   dequantized to f32 for its matmul ([`Precision::Dequantized`]) and the adapter's LoRA
//!   weights applied at `alpha / r × scale`, float32 throughout. This is the forward PEFT
//!   computes on the same dequantized base, so logits should agree to float32 rounding.
//! - [`llama_top_tokens`]: the llama.cpp backend serving the adapter's GGUF-LoRA export on the
//!   quantized base (quantized activations), i.e. what `generate --adapter` runs. It gives
//!   log-probabilities (llama.cpp's scoring API), not raw logits.

use std::path::{Path, PathBuf};

use serde::Serialize;
use trident_engine::sampling::{log_softmax, top_logprobs};
use trident_engine::{AdapterRef, Backend, LlamaBackend, LlamaConfig};
use trident_nn::{LoadOptions, LoraConfig, Precision};

use crate::adapter::{self, Adapter, AdapterSpec, AdapterStore, StoredVersion};
use crate::{LoraError, Result};

/// Longest token sequence accepted (one forward keeps `[tokens, vocab]` f32 logits).
pub const MAX_TOKENS: usize = 4096;

/// An adapter picked by `NAME[@VERSION][:SCALE]` or a PEFT directory, checked against a base.
#[derive(Debug, Clone)]
pub struct LogitsAdapter {
    /// `name@vN` for a stored version, the directory path otherwise.
    pub label: String,
    /// The adapter (PEFT tensors and config).
    pub adapter: Adapter,
    /// User scale multiplying `alpha / r` (1.0 unless the spec gives `:SCALE`).
    pub scale: f32,
    /// The stored version, when the spec named one (its GGUF-LoRA export is cached there).
    pub stored: Option<StoredVersion>,
}

/// Resolves the `SPEC` of `trident lora logits` for the base model `base`: `none` (no
/// adapter), a PEFT directory path (`adapter_config.json` + `adapter_model.safetensors`,
/// optionally `:SCALE`), or a stored `NAME[@VERSION][:SCALE]`. Checks that the adapter fits
/// the base (tensor shapes, and the file hash when one is recorded).
///
/// # Errors
/// [`LoraError::BadOption`] for a GGUF-LoRA file or a missing directory,
/// [`LoraError::UnknownAdapter`], [`LoraError::BadAdapter`], [`LoraError::WrongBase`].
pub fn resolve_logits_adapter(home: &Path, spec: &str, base: &Path) -> Result<Option<LogitsAdapter>> {
    if spec == "none" {
        return Ok(None);
    }
    let badopt = |reason: String| LoraError::BadOption { option: "adapter".into(), reason };
    // DIR[:SCALE] when the spec is (or names) a path; NAME[@VERSION][:SCALE] otherwise.
    let (path_part, path_scale) = match spec.rsplit_once(':') {
        Some((d, s)) if !Path::new(spec).is_dir() && s.parse::<f32>().is_ok_and(|v| v.is_finite()) => (d, s.parse::<f32>().ok()),
        _ => (spec, None),
    };
    let is_path = Path::new(path_part).is_dir() || path_part.contains('/') || path_part.contains('\\') || path_part.ends_with(".gguf");
    let parsed = if is_path {
        if path_part.ends_with(".gguf") {
            return Err(badopt(format!(
                "{spec:?}: a GGUF-LoRA file has no PEFT tensors to compare; give a stored NAME[@VERSION] or a PEFT directory"
            )));
        }
        if !Path::new(path_part).is_dir() {
            return Err(badopt(format!("{spec:?}: no such PEFT adapter directory")));
        }
        AdapterSpec { name: path_part.to_string(), version: None, scale: path_scale }
    } else {
        AdapterSpec::parse(spec)?
    };
    let store = AdapterStore::new(home);
    let (label, dir, stored) = if is_path {
        (parsed.name.clone(), PathBuf::from(&parsed.name), None)
    } else {
        let found = store.find(&parsed)?;
        (format!("{}@{}", found.name, found.version), found.dir.clone(), Some(found))
    };
    let adapter = Adapter::read_dir(&dir)?;
    let info = trident_gguf::inspect(base)?;
    let sha = adapter::file_sha256_cached(base, &store.hash_cache())?;
    // A plain PEFT directory (no trident.json) records no hash: only shapes are checked.
    adapter.check_base(&label, base, &info, &sha)?;
    Ok(Some(LogitsAdapter { label, adapter, scale: parsed.scale.unwrap_or(1.0), stored }))
}

/// The top-`k` next tokens at one position, best first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopTokens {
    /// Token ids.
    pub top_ids: Vec<u32>,
    /// Their raw logits (candle engine only; empty for llama.cpp, which exposes log-probs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top_logits: Vec<f32>,
    /// Their log-probabilities (log-softmax over the whole vocabulary).
    pub top_logprobs: Vec<f32>,
}

fn check_request(tokens: &[u32], top_k: usize) -> Result<()> {
    let badopt = |option: &str, reason: String| LoraError::BadOption { option: option.into(), reason };
    if tokens.is_empty() {
        return Err(badopt("tokens", "no tokens to score".into()));
    }
    if tokens.len() > MAX_TOKENS {
        return Err(badopt("tokens", format!("{} tokens, at most {MAX_TOKENS}", tokens.len())));
    }
    if top_k == 0 {
        return Err(badopt("top", "must be at least 1".into()));
    }
    Ok(())
}

/// Tokenizes `text` with the base model's own tokenizer (llama.cpp's, as training and
/// inference do): special tokens added as the model's metadata says (`add_special`), special
/// token text such as `<|im_start|>` parsed as special tokens.
///
/// # Errors
/// [`LoraError::Engine`] when the model cannot be loaded or the text tokenized.
pub fn tokenize(base: &Path, text: &str) -> Result<Vec<u32>> {
    let tok = crate::train::tokenizer_backend(base, 64)?;
    Ok(tok.tokenize(text, true, true)?)
}

/// One forward of the training model code over `tokens` (one sequence, no padding) with the
/// adapter applied, float32 with the base weights dequantized for each matmul; returns, for
/// every position, the top-`k` next tokens by logit with their logits and log-probs.
///
/// Modules an adapter does not cover (PEFT's `layers_to_transform`) get a zero delta.
///
/// # Errors
/// [`LoraError::BadOption`] for no tokens, too many or `k = 0`; [`LoraError::Nn`] for a bad
/// model file or token ids outside the vocabulary.
pub fn candle_top_tokens(base: &Path, adapter: Option<&LogitsAdapter>, tokens: &[u32], k: usize) -> Result<Vec<TopTokens>> {
    check_request(tokens, k)?;
    let lora = match adapter {
        Some(a) => {
            let targets = a.adapter.config.targets().map_err(|reason| LoraError::BadAdapter { path: PathBuf::from(&a.label), reason })?;
            Some(LoraConfig { rank: a.adapter.config.r, alpha: a.adapter.config.lora_alpha, dropout: 0.0, targets, init_seed: 0 })
        }
        None => None,
    };
    let opts = LoadOptions { lora, precision: Precision::Dequantized, checkpointing: false, ..Default::default() };
    let mut model = trident_nn::load_model(base, &opts)?;
    if let Some(a) = adapter {
        let mut tensors = a.adapter.to_tensors()?;
        for (name, var) in model.lora_vars() {
            if !tensors.contains_key(&name) {
                tensors.insert(name, var.as_tensor().zeros_like()?);
            }
        }
        model.load_lora(&tensors)?;
        model.set_lora_scale(f64::from(a.scale));
    }
    let ids = candle_core::Tensor::from_slice(tokens, (1, tokens.len()), &candle_core::Device::Cpu)?;
    let logits = model.forward(&ids, false)?.squeeze(0)?.to_vec2::<f32>()?;
    Ok(logits
        .iter()
        .map(|row| {
            let lp = log_softmax(row);
            let top = top_logprobs(row, k);
            TopTokens {
                top_ids: top.iter().map(|(id, _)| *id).collect(),
                top_logits: top.iter().map(|(_, l)| *l).collect(),
                top_logprobs: top.iter().map(|(id, _)| lp[*id as usize]).collect(),
            }
        })
        .collect())
}

/// Scores `tokens` with the llama.cpp backend on the (quantized) base, with the adapter's
/// GGUF-LoRA export loaded at its scale: for every position, the top-`k` next tokens and their
/// log-probs. A stored version uses its cached export (`vN/adapter.gguf`, made on first use);
/// a plain directory is exported to a temporary file removed after loading.
///
/// # Errors
/// [`LoraError::BadOption`] as [`candle_top_tokens`]; [`LoraError::Engine`],
/// [`LoraError::Gguf`], [`LoraError::Write`].
pub fn llama_top_tokens(base: &Path, adapter: Option<&LogitsAdapter>, tokens: &[u32], k: usize, threads: usize) -> Result<Vec<TopTokens>> {
    check_request(tokens, k)?;
    let cfg = LlamaConfig { n_ctx: (tokens.len() + 16).max(64), n_seq: 1, threads, ..Default::default() };
    let backend = LlamaBackend::load(base, &cfg)?;
    let aref = match adapter {
        Some(a) => {
            let info = trident_gguf::inspect(base)?;
            match &a.stored {
                Some(s) => {
                    let gguf = s.dir.join(adapter::GGUF_FILE);
                    if !gguf.is_file() {
                        a.adapter.export_gguf(&info, &gguf)?;
                    }
                    backend.load_adapter(&a.label, &gguf)?;
                }
                None => {
                    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let tmp = std::env::temp_dir().join(format!("trident-logits-{}-{n}.gguf", std::process::id()));
                    let res = a.adapter.export_gguf(&info, &tmp).and_then(|()| backend.load_adapter(&a.label, &tmp).map_err(LoraError::from));
                    let _ = std::fs::remove_file(&tmp);
                    res?;
                }
            }
            Some(AdapterRef::new(a.label.clone(), a.scale))
        }
        None => None,
    };
    let mut scored = backend.score(tokens, k, aref.as_ref())?;
    scored.sort_by_key(|p| p.position);
    Ok(scored
        .into_iter()
        .map(|p| TopTokens {
            top_ids: p.top.iter().map(|t| t.token).collect(),
            top_logits: Vec::new(),
            top_logprobs: p.top.iter().map(|t| t.logprob).collect(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use trident_gguf::Family;

    /// A tiny qwen2 base and a stored adapter with random, non-zero A and B on q and down only
    /// in layer 0 (a partial PEFT adapter, as `layers_to_transform` makes).
    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("tiny.gguf");
        trident_gguf::testing::write_tiny_model(Family::Qwen2, &base, 3).unwrap();
        let info = trident_gguf::inspect(&base).unwrap();
        let r = 2;
        let mut tensors = std::collections::BTreeMap::new();
        let mut seed = 1u32;
        let mut rnd = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
                })
                .collect()
        };
        for t in [trident_nn::LoraTarget::Q, trident_nn::LoraTarget::Down] {
            let w = info.tensor(&format!("blk.0.{}.weight", t.gguf_stem())).unwrap();
            let (inf, outf) = (w.shape[0] as usize, w.shape[1] as usize);
            tensors.insert(trident_nn::peft_name(0, t, "A"), adapter::LoraMatrix { shape: [r, inf], data: rnd(r * inf) });
            tensors.insert(trident_nn::peft_name(0, t, "B"), adapter::LoraMatrix { shape: [outf, r], data: rnd(outf * r) });
        }
        let targets = [trident_nn::LoraTarget::Q, trident_nn::LoraTarget::Down];
        let meta = adapter::TridentMeta {
            format: 1,
            name: String::new(),
            version: 0,
            created: String::new(),
            source: "imported".into(),
            base: adapter::BaseRef { path: String::new(), sha256: String::new(), architecture: String::new() },
            dataset: None,
            hyper: None,
            heldout: None,
            training: None,
            imported_from: None,
            tool_version: "test".into(),
        };
        let peft = dir.path().join("peft");
        Adapter { config: adapter::PeftConfig::new(r, 4.0, 0.0, &targets, "tiny.gguf"), meta, tensors }.write_dir(&peft, &[]).unwrap();
        std::fs::remove_file(peft.join(adapter::META_FILE)).unwrap();
        (dir, base, peft)
    }

    #[test]
    fn adapter_changes_logits_and_scale_zero_is_the_base() {
        let (dir, base, peft) = setup();
        let home = dir.path().join("home");
        let toks = [1u32, 5, 9, 2, 7];
        assert!(resolve_logits_adapter(&home, "none", &base).unwrap().is_none());
        let plain = candle_top_tokens(&base, None, &toks, 4).unwrap();
        assert_eq!(plain.len(), toks.len());
        let a = resolve_logits_adapter(&home, peft.to_str().unwrap(), &base).unwrap().unwrap();
        assert_eq!(a.scale, 1.0);
        let with = candle_top_tokens(&base, Some(&a), &toks, 4).unwrap();
        assert_ne!(plain, with);
        let zero = resolve_logits_adapter(&home, &format!("{}:0", peft.display()), &base).unwrap().unwrap();
        assert_eq!(zero.scale, 0.0);
        assert_eq!(candle_top_tokens(&base, Some(&zero), &toks, 4).unwrap(), plain);
        // Log-probs are the logits shifted by one constant per position.
        for p in &with {
            let d: Vec<f32> = p.top_logits.iter().zip(&p.top_logprobs).map(|(l, lp)| l - lp).collect();
            assert!(d.iter().all(|x| (x - d[0]).abs() < 1e-4), "{d:?}");
            assert!(p.top_logits.windows(2).all(|w| w[0] >= w[1]));
        }
        // llama.cpp on the same adapter (quantized base): same shape of answer.
        let ll = llama_top_tokens(&base, Some(&a), &toks, 4, 1).unwrap();
        assert_eq!(ll.len(), toks.len());
        assert!(ll.iter().all(|p| p.top_ids.len() == 4 && p.top_logits.is_empty()));
    }

    #[test]
    fn bad_requests_are_user_errors() {
        let (dir, base, peft) = setup();
        let home = dir.path().join("home");
        for spec in ["nope", "/no/such/dir", "x.gguf", "nope@0"] {
            let e = resolve_logits_adapter(&home, spec, &base).unwrap_err();
            assert!(e.is_user_error(), "{spec}: {e}");
        }
        let a = resolve_logits_adapter(&home, peft.to_str().unwrap(), &base).unwrap();
        for (toks, k) in [(&[][..], 3usize), (&[1u32][..], 0), (&[1_000_000u32][..], 3)] {
            let e = candle_top_tokens(&base, a.as_ref(), toks, k).unwrap_err();
            assert!(e.is_user_error(), "{toks:?} {k}: {e}");
        }
    }
}
