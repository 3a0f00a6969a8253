//! Training-side model code on candle: one file per model family (plain config + forward) with
//! LoRA-ready projection layers, loaded from the same GGUF files llama.cpp serves.
//!
//! # Invariants
//!
//! - **Frozen quantized base.** Every projection weight stays a candle
//!   [`QTensor`](candle_core::quantized::QTensor) as read from the GGUF; it is dequantized only
//!   for the duration of one matmul ([`Precision::Dequantized`]) or not at all
//!   ([`Precision::Quantized`]). The whole model is never held in f32. Norm weights and biases
//!   (small, F32 in GGUF) are plain f32 tensors.
//! - **Real backward through the base.** [`QLinear`] is a custom op whose backward is
//!   `grad_x = grad_y · W`; candle's `QMatMul` silently drops that gradient. Fused candle-nn
//!   ops without backward (`rms_norm`, `softmax_last_dim`, rope) are used only on untracked
//!   tensors; tracked tensors go through differentiable ops.
//! - **Weight layout.** GGUF dims `[in, out]` = candle shape `(out, in)` = PyTorch
//!   `nn.Linear.weight`; `y = x·Wᵀ`. Embeddings are `(vocab, hidden)`; a tied head reuses them.
//!   LoRA `A` is `(r, in)`, `B` is `(out, r)` (PEFT `lora_A.weight` / `lora_B.weight`).
//! - **Rope.** qwen2, qwen3 and gemma3 use NEOX pairing (`i ↔ i + d/2`); llama uses
//!   interleaved pairing (`2i ↔ 2i+1`) because llama.cpp's converter permutes Llama's Q/K rows.
//!   `inv_freq_i = θ^(−2i/d) / factor_i / linear`, computed in f32 like HF. Positions count
//!   the real (unmasked) tokens of each row.
//! - **Gemma norms.** GGUF stores Gemma's `1 + w`, so every RMSNorm here is `x·w_gguf`.
//! - **Masks.** Causal, plus padding keys from the attention mask, plus the sliding window on
//!   gemma3's local layers (key allowed iff `0 ≤ i − j < window`). Masked scores get −1e9
//!   (finite, so a fully padded row gives no NaN).
//! - **Memory.** In train mode with LoRA on CPU each layer is gradient-checkpointed (only its
//!   input is kept; backward recomputes it), and [`CausalLm::loss`] never materialises the
//!   `[tokens, vocab]` logits: the head and cross-entropy are fused and chunked over the
//!   vocabulary, and only positions with non-zero loss weight pass through the head.
//! - **Train vs eval.** `train = true`: LoRA dropout on and a graph is built for `backward()`.
//!   `train = false`: no dropout, LoRA tensors detached, no graph (inference memory).
//!
//! - **Devices.** On CPU the custom ops above (fused bf16/f32 GEMMs, checkpointing, the fused
//!   loss) run. On CUDA (the `cuda` feature, [`ComputeDevice`]) the model takes the
//!   *portable* path: each frozen weight is dequantized to f32 on the GPU with candle's
//!   kernels for one matmul and multiplied by cuBLAS through candle's backend interface (the
//!   same generic code the CPU runs under [`LoadOptions::portable`], which tests hold to the
//!   CPU kernels); the loss is log-softmax over full logits; nothing is checkpointed.

#![warn(missing_docs)]

pub mod config;
pub mod decoder;
pub mod device;
pub mod error;
pub mod families;
pub mod ggml_gemm;
pub mod lora;
pub mod memory;
pub mod qlinear;

#[cfg(test)]
pub(crate) mod testutil;

// Compares with llama.cpp on tiny models of every family. Not yet compiled/run in CI (written
// at the end of the session): enable with `--features llama-tests`.
#[cfg(all(test, feature = "llama-tests"))]
mod llamacpp_tests;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use candle_core::quantized::{gguf_file, QTensor};
use candle_core::{DType, Device, Tensor, Var};

pub use config::{Activation, Family, ModelConfig, RopeStyle};
pub use decoder::{peft_name, DecoderModel, LossBatch, LossOutput};
pub use device::ComputeDevice;
pub use error::{NnError, Result};
pub use lora::{LoraAB, LoraConfig, LoraLinear, LoraTarget};
pub use qlinear::{dequantize_f32, Precision, QLinear};

use config::Meta;
use decoder::Block;

/// How to load a model for training or evaluation.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Add fresh LoRA adapters (A Kaiming-uniform, B zero) to these projections.
    pub lora: Option<LoraConfig>,
    /// How the frozen quantized weights are multiplied.
    pub precision: Precision,
    /// Where the model lives: [`Device::Cpu`] (the CPU kernels below), or a CUDA device
    /// (needs the `cuda` feature; see [`ComputeDevice`]), which always takes the portable path.
    pub device: Device,
    /// Use the device-portable path on CPU as well: each frozen weight is dequantized to f32
    /// on the device for one matmul and multiplied with the device's GEMM, the loss is
    /// log-softmax over full logits, and nothing is checkpointed; `precision` and
    /// `checkpointing` are then ignored. It is how the model runs on CUDA; on CPU it exists
    /// so that tests can hold it to the CPU kernels.
    pub portable: bool,
    /// Gradient-checkpoint every layer in train mode (much less memory, ~⅓ more compute).
    pub checkpointing: bool,
    /// Seed of the LoRA dropout masks (combined with a per-forward counter).
    pub dropout_seed: u64,
}

impl LoadOptions {
    /// Whether the model takes the device-portable path: when asked to, and always off CPU.
    pub fn uses_portable_path(&self) -> bool {
        self.portable || !self.device.is_cpu()
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { lora: None, precision: Precision::Dequantized, device: Device::Cpu, portable: false, checkpointing: true, dropout_seed: 0 }
    }
}

/// A causal language model the trainer can run, differentiate and adapt.
pub trait CausalLm: Send + Sync {
    /// Next-token logits `[batch, seq, vocab]` (f32) for `input_ids: [batch, seq]` (u32), with
    /// no padding. `train` turns on LoRA dropout and graph building (see crate docs).
    fn forward(&self, input_ids: &Tensor, train: bool) -> Result<Tensor>;

    /// As [`Self::forward`] with an optional `[batch, seq]` attention mask (1 = token,
    /// 0 = padding, left or right).
    fn forward_masked(&self, input_ids: &Tensor, attention_mask: Option<&Tensor>, train: bool) -> Result<Tensor>;

    /// Weighted mean next-token cross-entropy, fused with the output head (the memory-lean
    /// path for training and held-out evaluation). Call `backward()` on `loss` in train mode.
    fn loss(&self, batch: &LossBatch, train: bool) -> Result<LossOutput>;

    /// The model's hyper-parameters.
    fn config(&self) -> &ModelConfig;

    /// The trainable LoRA variables with PEFT names
    /// (`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight`, …), in a fixed
    /// order (layer, then q, k, v, o, gate, up, down, then A before B). Empty without LoRA.
    fn lora_vars(&self) -> Vec<(String, Var)>;

    /// Overwrites the LoRA variables from a PEFT-named map (resume, evaluation, import). The
    /// map must hold exactly this model's LoRA tensors with matching shapes; on error nothing
    /// is changed.
    fn load_lora(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()>;

    /// Multiplies every adapter's `alpha / r` by `scale` (1 = as trained, 0 = base model).
    fn set_lora_scale(&mut self, scale: f64);

    /// Switches how the frozen weights are multiplied.
    fn set_precision(&mut self, precision: Precision);

    /// Sets the dropout step counter (dropout masks are a pure function of the load-time
    /// seed and this counter, which advances once per train-mode forward), for exact resume.
    fn set_dropout_step(&self, step: u64);
}

impl CausalLm for DecoderModel {
    fn forward(&self, input_ids: &Tensor, train: bool) -> Result<Tensor> {
        self.logits(input_ids, None, train)
    }

    fn forward_masked(&self, input_ids: &Tensor, attention_mask: Option<&Tensor>, train: bool) -> Result<Tensor> {
        self.logits(input_ids, attention_mask, train)
    }

    fn loss(&self, batch: &LossBatch, train: bool) -> Result<LossOutput> {
        DecoderModel::loss(self, batch, train)
    }

    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn lora_vars(&self) -> Vec<(String, Var)> {
        DecoderModel::lora_vars(self)
    }

    fn load_lora(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        DecoderModel::load_lora(self, tensors)
    }

    fn set_lora_scale(&mut self, scale: f64) {
        self.lora_scale = scale;
    }

    fn set_precision(&mut self, precision: Precision) {
        DecoderModel::set_precision(self, precision)
    }

    fn set_dropout_step(&self, step: u64) {
        self.step.store(step, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Loads a GGUF model of a supported family (qwen2, qwen3, llama, gemma3) for training or
/// evaluation, with fresh LoRA adapters when `opts.lora` is set.
pub fn load_model(gguf_path: &Path, opts: &LoadOptions) -> Result<Box<dyn CausalLm>> {
    Ok(Box::new(load_decoder(gguf_path, opts)?))
}

/// Reads only the configuration of a GGUF model (no tensor data).
pub fn read_config(gguf_path: &Path) -> Result<ModelConfig> {
    let mut f = open(gguf_path)?;
    let content = read_content(gguf_path, &mut f)?;
    config_from_content(gguf_path, &content)
}

fn open(path: &Path) -> Result<std::io::BufReader<std::fs::File>> {
    let f = std::fs::File::open(path).map_err(|source| NnError::Io { path: path.to_path_buf(), source })?;
    Ok(std::io::BufReader::new(f))
}

fn read_content(path: &Path, f: &mut std::io::BufReader<std::fs::File>) -> Result<gguf_file::Content> {
    gguf_file::Content::read(f).map_err(|e| NnError::InvalidGguf { path: path.to_path_buf(), reason: e.to_string() })
}

fn config_from_content(path: &Path, content: &gguf_file::Content) -> Result<ModelConfig> {
    let arch = match content.metadata.get("general.architecture") {
        Some(gguf_file::Value::String(s)) => s.clone(),
        _ => {
            return Err(NnError::Metadata {
                path: path.to_path_buf(),
                key: "general.architecture".into(),
                reason: "missing or not a string".into(),
            });
        }
    };
    let family =
        Family::from_arch(&arch).ok_or_else(|| NnError::UnsupportedArchitecture { path: path.to_path_buf(), arch: arch.clone() })?;
    let embd = content.tensor_infos.get("token_embd.weight").ok_or_else(|| NnError::Tensor {
        path: path.to_path_buf(),
        name: "token_embd.weight".into(),
        reason: "missing".into(),
    })?;
    let (vocab, _) = embd.shape.dims2().map_err(|_| NnError::Tensor {
        path: path.to_path_buf(),
        name: "token_embd.weight".into(),
        reason: format!("expected 2 dims, got {:?}", embd.shape),
    })?;
    let tied = !content.tensor_infos.contains_key("output.weight");
    let m = Meta { md: &content.metadata, path, arch: &arch };
    let cfg = match family {
        Family::Qwen2 => families::qwen2::config(&m, vocab, tied)?,
        Family::Qwen3 => families::qwen3::config(&m, vocab, tied)?,
        Family::Llama => families::llama::config(&m, vocab, tied)?,
        Family::Gemma3 => families::gemma3::config(&m, vocab, tied)?,
    };
    Ok(cfg)
}

/// Loads a model as the concrete [`DecoderModel`] (same as [`load_model`], unboxed).
pub fn load_decoder(path: &Path, opts: &LoadOptions) -> Result<DecoderModel> {
    if matches!(opts.device, Device::Metal(_)) {
        return Err(NnError::Input("the training model code runs on CPU or CUDA, not Metal".into()));
    }
    let portable = opts.uses_portable_path();
    if let Some(l) = &opts.lora {
        l.validate()?;
    }
    let mut f = open(path)?;
    let content = read_content(path, &mut f)?;
    let mut cfg = config_from_content(path, &content)?;
    let dev = &opts.device;
    let mut ld = Loader { content: &content, f, path, dev: dev.clone() };
    if content.tensor_infos.contains_key("rope_freqs.weight") {
        let ff = ld.f32t("rope_freqs.weight", &[cfg.rope_dim / 2])?;
        cfg.rope_freq_factors = Some(ff.to_vec1::<f32>()?);
    }
    let cfg = Arc::new(cfg);
    let (d, hd, h, kvh, ffn) = (cfg.hidden_size, cfg.head_dim, cfg.num_heads, cfg.num_kv_heads, cfg.intermediate_size);
    let embed = ld.qt("token_embd.weight", &[cfg.vocab_size, d])?;
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let p = |s: &str| format!("blk.{i}.{s}");
        let bias = cfg.qkv_bias;
        let q = ld.proj(opts, i, LoraTarget::Q, h * hd, d, bias)?;
        let k = ld.proj(opts, i, LoraTarget::K, kvh * hd, d, bias)?;
        let v = ld.proj(opts, i, LoraTarget::V, kvh * hd, d, bias)?;
        let o = ld.proj(opts, i, LoraTarget::O, d, h * hd, false)?;
        let gate = ld.proj(opts, i, LoraTarget::Gate, ffn, d, false)?;
        let up = ld.proj(opts, i, LoraTarget::Up, ffn, d, false)?;
        let down = ld.proj(opts, i, LoraTarget::Down, d, ffn, false)?;
        let (q_norm, k_norm) = if cfg.qk_norm {
            (Some(ld.f32t(&p("attn_q_norm.weight"), &[hd])?), Some(ld.f32t(&p("attn_k_norm.weight"), &[hd])?))
        } else {
            (None, None)
        };
        let (post_attn_norm, post_ffn_norm) = if cfg.post_norms {
            (Some(ld.f32t(&p("post_attention_norm.weight"), &[d])?), Some(ld.f32t(&p("post_ffw_norm.weight"), &[d])?))
        } else {
            (None, None)
        };
        layers.push(Arc::new(Block {
            idx: i,
            cfg: cfg.clone(),
            attn_norm: ld.f32t(&p("attn_norm.weight"), &[d])?,
            q,
            k,
            v,
            o,
            q_norm,
            k_norm,
            post_attn_norm,
            ffn_norm: ld.f32t(&p("ffn_norm.weight"), &[d])?,
            gate,
            up,
            down,
            post_ffn_norm,
        }));
    }
    let final_norm = ld.f32t("output_norm.weight", &[d])?;
    let head_w = if cfg.tied_embeddings { embed.clone() } else { ld.qt("output.weight", &[cfg.vocab_size, d])? };
    let mut head = QLinear::new(head_w, None, opts.precision)?;
    head.set_portable(portable);
    Ok(DecoderModel {
        cfg,
        embed,
        layers,
        final_norm,
        head,
        lora_scale: 1.0,
        checkpointing: opts.checkpointing,
        device: dev.clone(),
        portable,
        step: AtomicU64::new(0),
        dropout_seed: opts.dropout_seed,
    })
}

/// Reads named tensors of one GGUF file with shape checks and errors naming the tensor.
struct Loader<'a> {
    content: &'a gguf_file::Content,
    f: std::io::BufReader<std::fs::File>,
    path: &'a Path,
    dev: Device,
}

impl Loader<'_> {
    fn err(&self, name: &str, reason: String) -> NnError {
        NnError::Tensor { path: self.path.to_path_buf(), name: name.to_string(), reason }
    }

    /// A quantized tensor of exactly `shape` (candle order: `(out, in)` for matrices).
    fn qt(&mut self, name: &str, shape: &[usize]) -> Result<Arc<QTensor>> {
        if !self.content.tensor_infos.contains_key(name) {
            return Err(self.err(name, "missing".into()));
        }
        let t = self.content.tensor(&mut self.f, name, &self.dev).map_err(|e| self.err(name, e.to_string()))?;
        if t.shape().dims() != shape {
            return Err(self.err(name, format!("shape {:?}, expected {:?}", t.shape().dims(), shape)));
        }
        Ok(Arc::new(t))
    }

    /// A small tensor (norm weight, bias) as f32.
    fn f32t(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let q = self.qt(name, shape)?;
        Ok(q.dequantize(&self.dev)?.to_dtype(DType::F32)?)
    }

    /// Projection `blk.{layer}.{stem}` with optional bias and, when targeted, a fresh adapter.
    fn proj(&mut self, opts: &LoadOptions, layer: usize, t: LoraTarget, out_f: usize, in_f: usize, bias: bool) -> Result<LoraLinear> {
        let w = self.qt(&format!("blk.{layer}.{}.weight", t.gguf_stem()), &[out_f, in_f])?;
        let b = if bias { Some(self.f32t(&format!("blk.{layer}.{}.bias", t.gguf_stem()), &[out_f])?) } else { None };
        let mut base = QLinear::new(w, b, opts.precision)?;
        base.set_portable(opts.uses_portable_path());
        let lora = match &opts.lora {
            Some(lc) if lc.targets.contains(&t) => {
                let seed = lora::splitmix64(lc.init_seed ^ ((layer as u64) << 8 | t as u64));
                Some(LoraAB::init(in_f, out_f, lc, seed, &self.dev)?)
            }
            _ => None,
        };
        Ok(LoraLinear { base, lora })
    }
}
