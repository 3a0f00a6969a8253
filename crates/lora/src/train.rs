//! `trident lora train`: LoRA on a frozen quantized base.
//!
//! - **Tokens** come from the engine ([`trident_engine::LlamaBackend`] loaded on the same
//!   GGUF): the sample is rendered with the model's chat template and tokenized with its own
//!   tokenizer ([`crate::tokens`]); the loss covers the answer tokens and the end-of-turn
//!   token only.
//! - **Model**: [`trident_nn`] (quantized weights at rest, dequantized per matmul; layers
//!   gradient-checkpointed; fused chunked cross-entropy).
//! - **Optimiser**: AdamW (own implementation, so its moments can be checkpointed), linear
//!   warm-up then cosine decay to 0, global-norm gradient clipping, gradient accumulation
//!   (micro-batch gradients weighted by their share of the step's answer tokens, so a step is
//!   a token-weighted mean whatever the split).
//! - **Determinism / resume**: the sample order of epoch `e` is a seeded permutation of
//!   `(seed, e)`; LoRA dropout masks are a function of `(seed, micro-batch index)`; the A
//!   initialisation of `seed`. Checkpoints (LoRA weights, AdamW moments, best weights, state)
//!   are written atomically every `save_every` steps under `adapters/NAME/.train/`; re-running
//!   the same command after a crash (even `kill -9`) continues from the last checkpoint and
//!   ends with the same weights as an uninterrupted run. A checkpoint of a *different* run
//!   (other data, base or hyper-parameters) is refused unless `restart` is set.
//! - **Held-out loss** every `eval_every` steps; **early stopping** after `patience`
//!   evaluations without improvement; the best held-out weights are kept.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use trident_engine::{Backend, LlamaBackend, LlamaConfig};
use trident_nn::{CausalLm, ComputeDevice, LoadOptions, LoraConfig, LoraTarget, LossBatch, Precision};

use crate::adapter::{
    file_sha256, file_sha256_cached, write_atomic, Adapter, AdapterStore, BaseRef, DatasetRef, HeldoutMetrics, LoraMatrix,
    PeftConfig, StoredVersion, TrainingStats, TridentMeta,
};
use crate::data::{self, Sample};
use crate::plot::{self, LossPoint};
use crate::tokens::{self, Encoded};
use crate::{LoraError, Result};

/// Everything `trident lora train` takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Base model (GGUF).
    pub base: PathBuf,
    /// Training data: a prepared `train.jsonl` (`trident data prepare`) or any dataset
    /// `trident data check` accepts (then anonymised on the fly, nothing split off).
    pub data: PathBuf,
    /// Held-out data (same formats), for held-out loss, early stopping and metrics.
    pub heldout: Option<PathBuf>,
    /// LoRA rank.
    pub rank: usize,
    /// LoRA alpha.
    pub alpha: f64,
    /// LoRA dropout.
    pub dropout: f64,
    /// Target projections.
    pub targets: Vec<LoraTarget>,
    /// Peak learning rate.
    pub lr: f64,
    /// Epochs over the training samples.
    pub epochs: usize,
    /// Samples per micro-batch.
    pub batch: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Longest sample in tokens; longer ones are skipped and counted (never truncated).
    pub max_len: usize,
    /// Seed of the A initialisation, data order and dropout.
    pub seed: u64,
    /// Held-out loss every this many steps (0: only at the end).
    pub eval_every: usize,
    /// Stop after this many held-out evaluations without improvement (0: never).
    pub patience: usize,
    /// Warm-up as a share of the planned steps (0..1).
    pub warmup: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0: no clipping).
    pub max_grad_norm: f64,
    /// Checkpoint every this many steps (0: only at held-out evaluations).
    pub save_every: usize,
    /// Train on at most this many samples (a seeded subset), when set.
    pub limit: Option<usize>,
    /// Score at most this many held-out samples during training.
    pub heldout_limit: usize,
    /// Stop after this many optimizer steps in total, when set (the schedule still spans
    /// all epochs).
    pub max_steps: Option<usize>,
    /// Log (call back) every this many steps.
    pub log_every: usize,
    /// Gradient-checkpoint every layer (much less memory, about a third more compute). Off
    /// is faster when the activations of one micro-batch fit in memory (≈ 10 MB per token
    /// for a 0.5B model).
    pub checkpointing: bool,
    /// How the frozen base weights are multiplied: `Bf16` (mixed precision on ggml's AVX-512
    /// BF16 kernels, the default where the CPU has them) or `Dequantized` (exact f32).
    #[serde(default)]
    pub precision: Precision,
    /// Where to train: the CPU (default) or a CUDA GPU (a build with the `cuda` feature).
    /// On a GPU the base is dequantized to f32 on the device per matmul and multiplied by
    /// cuBLAS; `precision` and `checkpointing` apply to the CPU only.
    #[serde(default)]
    pub device: ComputeDevice,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            base: PathBuf::new(),
            data: PathBuf::new(),
            heldout: None,
            rank: 16,
            alpha: 32.0,
            dropout: 0.05,
            targets: LoraTarget::ALL.to_vec(),
            lr: 2e-4,
            epochs: 1,
            batch: 1,
            grad_accum: 1,
            max_len: 512,
            seed: 0,
            eval_every: 0,
            patience: 0,
            warmup: 0.05,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            save_every: 10,
            limit: None,
            heldout_limit: 64,
            max_steps: None,
            log_every: 1,
            checkpointing: true,
            precision: Precision::training_default(),
            device: ComputeDevice::Cpu,
        }
    }
}

impl TrainOptions {
    /// Checks every value; the error names the option.
    ///
    /// # Errors
    /// [`LoraError::BadOption`].
    pub fn validate(&self) -> Result<()> {
        let bad = |option: &str, reason: String| Err(LoraError::BadOption { option: option.into(), reason });
        self.lora_config().validate().map_err(|e| LoraError::BadOption { option: "rank/alpha/dropout/targets".into(), reason: e.to_string() })?;
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("--lr", format!("must be a positive number, got {}", self.lr));
        }
        if self.epochs == 0 {
            return bad("--epochs", "must be at least 1".into());
        }
        if self.batch == 0 {
            return bad("--batch", "must be at least 1".into());
        }
        if self.grad_accum == 0 {
            return bad("--grad-accum", "must be at least 1".into());
        }
        if self.max_len < 8 {
            return bad("--max-len", format!("must be at least 8, got {}", self.max_len));
        }
        if !(0.0..1.0).contains(&self.warmup) {
            return bad("--warmup", format!("must be in [0, 1), got {}", self.warmup));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("--weight-decay", format!("must be ≥ 0, got {}", self.weight_decay));
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0) {
            return bad("--max-grad-norm", format!("must be ≥ 0, got {}", self.max_grad_norm));
        }
        if self.patience > 0 && self.heldout.is_none() {
            return bad("--patience", "early stopping needs --heldout".into());
        }
        if self.limit == Some(0) {
            return bad("--limit", "must be at least 1".into());
        }
        if self.log_every == 0 {
            return bad("--log-every", "must be at least 1".into());
        }
        Ok(())
    }

    /// The LoRA configuration of the model.
    pub fn lora_config(&self) -> LoraConfig {
        LoraConfig { rank: self.rank, alpha: self.alpha, dropout: self.dropout, targets: self.targets.clone(), init_seed: self.seed }
    }

    /// The multiplication mode actually used: `precision` on CPU; exact f32 on a GPU.
    pub fn effective_precision(&self) -> Precision {
        if self.device.is_cuda() { Precision::Dequantized } else { self.precision }
    }

    /// The hyper-parameters that define a run (recorded in `trident.json`, fingerprinted for
    /// resume): everything except file paths, logging and the device.
    fn hyper(&self) -> serde_json::Value {
        serde_json::json!({
            "rank": self.rank, "alpha": self.alpha, "dropout": self.dropout,
            "targets": self.targets.iter().map(|t| t.short()).collect::<Vec<_>>(),
            "lr": self.lr, "epochs": self.epochs, "batch": self.batch, "grad_accum": self.grad_accum,
            "max_len": self.max_len, "seed": self.seed, "eval_every": self.eval_every, "patience": self.patience,
            "warmup": self.warmup, "weight_decay": self.weight_decay, "max_grad_norm": self.max_grad_norm,
            "limit": self.limit, "heldout_limit": self.heldout_limit, "max_steps": self.max_steps,
            "optimizer": "adamw(0.9, 0.999, 1e-8)", "schedule": "linear warm-up + cosine to 0",
            "precision": match self.effective_precision() {
                Precision::Bf16 => "bf16 matmuls with f32 sums (ggml), quantized base dequantized per matmul",
                Precision::Dequantized => "f32 activations, quantized base dequantized per matmul",
                Precision::Quantized => "f32 activations quantized to Q8 against the quantized base",
            },
        })
    }
}

/// One logged step, as given to the progress callback.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepLog {
    /// Optimizer step (1-based).
    pub step: usize,
    /// Planned steps.
    pub total_steps: usize,
    /// Epoch (1-based).
    pub epoch: usize,
    /// Training loss of the step.
    pub loss: f64,
    /// Held-out loss, when measured at this step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heldout_loss: Option<f64>,
    /// Learning rate of the step.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens (without padding) per second in this step.
    pub tokens_per_s: f64,
    /// Seconds since this run (process) started training.
    pub elapsed_s: f64,
    /// Estimated seconds left.
    pub eta_s: f64,
}

/// What the trainer reports to its caller.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TrainEvent {
    /// Data tokenized and model loaded; training is about to start.
    Ready {
        /// Training samples.
        samples: usize,
        /// Samples skipped for being longer than `max_len`.
        skipped: usize,
        /// Held-out samples scored during training.
        heldout_samples: usize,
        /// Planned optimizer steps.
        total_steps: usize,
        /// First step of this run (> 0 when resuming).
        start_step: usize,
        /// Trainable parameters.
        trainable_params: usize,
    },
    /// One logged step.
    Step(StepLog),
    /// A checkpoint was written after this step.
    Checkpoint {
        /// The step.
        step: usize,
    },
    /// Early stopping ended the run.
    EarlyStop {
        /// The step it stopped at.
        step: usize,
        /// The step with the best held-out loss.
        best_step: usize,
    },
}

/// The result of [`train`].
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The stored adapter version (`None` when the run was interrupted by the callback).
    pub stored: Option<StoredVersion>,
    /// Every logged step of the run (including resumed parts).
    pub log: Vec<LossPoint>,
    /// Statistics (also in `trident.json`).
    pub stats: TrainingStats,
    /// Held-out metrics at the kept weights.
    pub heldout: Option<HeldoutMetrics>,
}

/// State saved with each checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunState {
    fingerprint: String,
    /// Optimizer steps done.
    step: usize,
    adam_t: u64,
    best_loss: Option<f64>,
    best_step: usize,
    bad_evals: usize,
    log: Vec<LossPoint>,
    tokens: u64,
    seconds: f64,
    resumed: usize,
    ckpt_file: String,
}

impl RunState {
    /// The run's statistics so far, for the adapter metadata and the caller.
    fn stats(&self, planned_steps: usize, stopped_early: bool, kept_step: usize) -> TrainingStats {
        TrainingStats {
            steps: self.step,
            planned_steps,
            tokens: self.tokens,
            seconds: self.seconds,
            tokens_per_s: self.tokens as f64 / self.seconds.max(1e-9),
            stopped_early,
            kept_step,
            resumed: self.resumed,
        }
    }
}

/// AdamW with checkpointable moments.
struct AdamW {
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: u64,
    wd: f64,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

impl AdamW {
    fn new(vars: &[Var], wd: f64) -> Result<Self> {
        let z = |v: &Var| v.as_tensor().zeros_like();
        Ok(Self {
            m: vars.iter().map(z).collect::<candle_core::Result<_>>()?,
            v: vars.iter().map(z).collect::<candle_core::Result<_>>()?,
            t: 0,
            wd,
        })
    }

    fn step(&mut self, vars: &[Var], grads: &[Tensor], lr: f64) -> Result<()> {
        self.t += 1;
        let bc1 = 1.0 - BETA1.powi(self.t as i32);
        let bc2 = 1.0 - BETA2.powi(self.t as i32);
        for (i, (var, g)) in vars.iter().zip(grads).enumerate() {
            let m = ((&self.m[i] * BETA1)? + (g * (1.0 - BETA1))?)?;
            let v = ((&self.v[i] * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?;
            let upd = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + EPS)?)?;
            let theta = var.as_tensor();
            let decayed = if self.wd > 0.0 { (theta * (1.0 - lr * self.wd))? } else { theta.clone() };
            var.set(&(decayed - (upd * lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }
}

/// Learning rate of optimizer step `s` (0-based) out of `total`: linear warm-up over `warm`
/// steps, then cosine decay to 0.
pub fn lr_at(peak: f64, s: usize, total: usize, warm: usize) -> f64 {
    if s < warm {
        return peak * (s + 1) as f64 / warm as f64;
    }
    let span = (total - warm).max(1) as f64;
    let p = ((s - warm) as f64 / span).min(1.0);
    peak * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
}

/// SplitMix64, to derive independent seeds from (seed, purpose, index).
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The sample order of one epoch: a pure function of `(seed, epoch)`.
fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(mix(seed ^ mix(0xE90C ^ epoch as u64)));
    idx.shuffle(&mut rng);
    idx
}

/// Reads a dataset: prepared JSONL as is, anything else through `trident data check` (which
/// validates and anonymises it) keeping every accepted row.
pub fn read_samples(path: &Path) -> Result<Vec<Sample>> {
    match data::read_prepared(path) {
        Ok(s) => Ok(s),
        Err(_) => {
            let opts = data::Options { heldout: 0.0, ..Default::default() };
            let p = data::check(path, &opts)?;
            let mut all = p.train;
            all.extend(p.heldout);
            if all.is_empty() {
                return Err(LoraError::Unparseable { path: path.to_path_buf(), reason: "no usable samples".into() });
            }
            Ok(all)
        }
    }
}

/// Loads the engine on `base` for its tokenizer and chat template only.
pub fn tokenizer_backend(base: &Path, max_len: usize) -> Result<LlamaBackend> {
    let cfg = LlamaConfig { n_ctx: max_len.max(64) + 16, n_seq: 1, threads: 1, n_batch: 64, ..Default::default() };
    Ok(LlamaBackend::load(base, &cfg)?)
}

/// Encodes samples; returns the kept encodings and how many were over `max_len`.
fn encode_all(backend: &dyn Backend, path: &Path, samples: &[Sample], max_len: usize) -> Result<(Vec<Encoded>, usize)> {
    let mut out = Vec::with_capacity(samples.len());
    let mut skipped = 0;
    for s in samples {
        let e = tokens::encode(backend, &tokens::chat_messages(s))
            .map_err(|reason| LoraError::BadSample { path: path.to_path_buf(), id: s.id.clone(), line: s.source_line, reason })?;
        if e.target_end > max_len {
            skipped += 1;
        } else {
            out.push(e);
        }
    }
    Ok((out, skipped))
}

/// A padded micro-batch; also returns its real (non-padding) input tokens.
pub fn make_batch(encs: &[&Encoded]) -> Result<(LossBatch, usize)> {
    let b = encs.len();
    let len = encs.iter().map(|e| e.input_len()).max().unwrap_or(1).max(1);
    let mut ids = vec![0u32; b * len];
    let mut mask = vec![0u32; b * len];
    let mut tgt = vec![0u32; b * len];
    let mut w = vec![0f32; b * len];
    let mut real = 0;
    for (r, e) in encs.iter().enumerate() {
        for p in 0..e.input_len() {
            ids[r * len + p] = e.ids[p];
            mask[r * len + p] = 1;
            tgt[r * len + p] = e.ids[p + 1];
            if p + 1 >= e.target_start && p + 1 < e.target_end {
                w[r * len + p] = 1.0;
            }
        }
        real += e.input_len();
    }
    let dev = Device::Cpu;
    let any_pad = mask.iter().any(|&m| m == 0);
    Ok((
        LossBatch {
            input_ids: Tensor::from_vec(ids, (b, len), &dev)?,
            attention_mask: if any_pad { Some(Tensor::from_vec(mask, (b, len), &dev)?) } else { None },
            targets: Tensor::from_vec(tgt, (b, len), &dev)?,
            weights: Tensor::from_vec(w, (b, len), &dev)?,
        },
        real,
    ))
}

/// Mean answer-token loss of `model` over `encs` (no dropout, no graph): `(loss, tokens)`.
pub fn heldout_loss(model: &dyn CausalLm, encs: &[Encoded], batch: usize) -> Result<(f64, usize)> {
    let mut sum = 0f64;
    let mut n = 0usize;
    // Similar lengths together: less padding.
    let mut order: Vec<&Encoded> = encs.iter().collect();
    order.sort_by_key(|e| e.input_len());
    for chunk in order.chunks(batch.max(1)) {
        let (b, _) = make_batch(chunk)?;
        let out = model.loss(&b, false)?;
        sum += out.token_nll.iter().map(|&v| v as f64).sum::<f64>();
        n += out.token_nll.len();
    }
    Ok((if n > 0 { sum / n as f64 } else { f64::NAN }, n))
}

fn vars_of(model: &dyn CausalLm) -> (Vec<String>, Vec<Var>) {
    model.lora_vars().into_iter().unzip()
}

fn snapshot(names: &[String], vars: &[Var]) -> Result<HashMap<String, Tensor>> {
    let mut m = HashMap::new();
    for (n, v) in names.iter().zip(vars) {
        m.insert(n.clone(), v.as_tensor().copy()?);
    }
    Ok(m)
}

fn to_matrix(t: &Tensor) -> Result<LoraMatrix> {
    let (r, c) = t.dims2()?;
    Ok(LoraMatrix { shape: [r, c], data: t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()? })
}

fn tensors_bytes(map: &[(String, &Tensor)]) -> Result<Vec<u8>> {
    let mut owned = Vec::new();
    for (n, t) in map {
        let v: Vec<f32> = t.flatten_all()?.to_vec1()?;
        owned.push((n.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(), t.dims().to_vec()));
    }
    let views = owned
        .iter()
        .map(|(n, b, s)| safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| LoraError::Training { name: String::new(), reason: format!("checkpoint serialisation: {e}") })?;
    safetensors::serialize(views, None).map_err(|e| LoraError::Training { name: String::new(), reason: format!("checkpoint serialisation: {e}") })
}

fn read_ckpt(path: &Path) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|source| LoraError::Read { path: path.to_path_buf(), source })?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| LoraError::BadAdapter { path: path.to_path_buf(), reason: format!("corrupt checkpoint: {e}") })?;
    let mut out = HashMap::new();
    for (n, v) in st.tensors() {
        let data: Vec<f32> = v.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        out.insert(n, Tensor::from_vec(data, v.shape(), &Device::Cpu)?);
    }
    Ok(out)
}

/// Trains an adapter and stores it as the next version of `name` in `store`. `on_event` sees
/// progress and may return `Break` to stop at once *without* writing anything more (as a
/// crash would: the next run resumes from the last checkpoint).
///
/// # Errors
/// Bad options or data, wrong model file, a checkpoint of a different run (unless
/// `restart`), write failures.
pub fn train(
    store: &AdapterStore,
    name: &str,
    opts: &TrainOptions,
    restart: bool,
    on_event: &mut dyn FnMut(&TrainEvent) -> ControlFlow<()>,
) -> Result<TrainOutcome> {
    crate::adapter::validate_name(name)?;
    opts.validate()?;
    // The device first: a missing GPU should not wait for the data to be tokenized.
    let device = opts.device.open()?;
    let terr = |reason: String| LoraError::Training { name: name.to_string(), reason };
    let base_info = trident_gguf::inspect(&opts.base)?;
    let base_sha = file_sha256_cached(&opts.base, &store.hash_cache())?;
    let data_sha = file_sha256(&opts.data)?;
    let held_sha = match &opts.heldout {
        Some(p) => Some(file_sha256(p)?),
        None => None,
    };
    let hyper = opts.hyper();
    let fingerprint = hex::encode(Sha256::digest(
        serde_json::to_vec(&serde_json::json!({"base": base_sha, "data": data_sha, "heldout": held_sha, "hyper": hyper}))
            .map_err(|source| LoraError::Serialize { what: "fingerprint", source })?,
    ));

    // Tokens through the engine's own tokenizer and template.
    let tok = tokenizer_backend(&opts.base, opts.max_len)?;
    let mut samples = read_samples(&opts.data)?;
    if let Some(limit) = opts.limit {
        if limit < samples.len() {
            let order = epoch_order(samples.len(), opts.seed, usize::MAX);
            let mut keep: Vec<usize> = order.into_iter().take(limit).collect();
            keep.sort();
            samples = keep.into_iter().map(|i| samples[i].clone()).collect();
        }
    }
    let (train_encs, skipped) = encode_all(&tok, &opts.data, &samples, opts.max_len)?;
    if train_encs.is_empty() {
        return Err(LoraError::BadOption {
            option: "--max-len".into(),
            reason: format!("all {} samples are longer than {} tokens", samples.len(), opts.max_len),
        });
    }
    let held_encs = match &opts.heldout {
        Some(p) => {
            let s = read_samples(p)?;
            let (mut e, _) = encode_all(&tok, p, &s, opts.max_len)?;
            e.truncate(opts.heldout_limit.max(1));
            e
        }
        None => Vec::new(),
    };
    drop(tok);

    let load = LoadOptions {
        lora: Some(opts.lora_config()),
        dropout_seed: mix(opts.seed ^ 0xD50),
        checkpointing: opts.checkpointing,
        precision: opts.effective_precision(),
        device: device.clone(),
        ..Default::default()
    };
    let mut model = trident_nn::load_model(&opts.base, &load)?;
    let (names, vars) = vars_of(model.as_ref());
    let trainable: usize = vars.iter().map(|v| v.as_tensor().elem_count()).sum();

    let n = train_encs.len();
    let n_batches = n.div_ceil(opts.batch);
    let steps_per_epoch = n_batches.div_ceil(opts.grad_accum);
    let planned = steps_per_epoch * opts.epochs;
    let total = opts.max_steps.map(|m| m.min(planned)).unwrap_or(planned);
    let warm = ((planned as f64 * opts.warmup).ceil() as usize).min(planned.saturating_sub(1));

    // Resume from a checkpoint of the same run, if any.
    let run_dir = store.run_dir(name);
    let state_path = run_dir.join("state.json");
    let mut adam = AdamW::new(&vars, opts.weight_decay)?;
    let mut best: Option<HashMap<String, Tensor>> = None;
    let mut st = RunState {
        fingerprint: fingerprint.clone(),
        step: 0,
        adam_t: 0,
        best_loss: None,
        best_step: 0,
        bad_evals: 0,
        log: Vec::new(),
        tokens: 0,
        seconds: 0.0,
        resumed: 0,
        ckpt_file: String::new(),
    };
    if restart && run_dir.exists() {
        std::fs::remove_dir_all(&run_dir).map_err(|source| LoraError::Write { path: run_dir.clone(), source })?;
    }
    if let Ok(bytes) = std::fs::read(&state_path) {
        let old: RunState = serde_json::from_slice(&bytes)
            .map_err(|e| terr(format!("unreadable checkpoint state {}: {e}; pass --restart to start over", state_path.display())))?;
        if old.fingerprint != fingerprint {
            return Err(terr(format!(
                "{} holds a checkpoint of a different run (other base, data or hyper-parameters); \
                 re-run the same command to resume it, or pass --restart to discard it",
                run_dir.display()
            )));
        }
        let ck = read_ckpt(&run_dir.join(&old.ckpt_file))?;
        let pick = |prefix: &str| -> Option<HashMap<String, Tensor>> {
            names.iter().map(|n| ck.get(&format!("{prefix}{n}")).map(|t| (n.clone(), t.clone()))).collect()
        };
        let lora = pick("lora.").ok_or_else(|| terr("checkpoint lacks LoRA tensors; pass --restart".into()))?;
        model.load_lora(&lora)?;
        let m = pick("m.").ok_or_else(|| terr("checkpoint lacks optimizer state; pass --restart".into()))?;
        let v = pick("v.").ok_or_else(|| terr("checkpoint lacks optimizer state; pass --restart".into()))?;
        adam.m = names.iter().map(|n| m[n].to_device(&device)).collect::<candle_core::Result<_>>()?;
        adam.v = names.iter().map(|n| v[n].to_device(&device)).collect::<candle_core::Result<_>>()?;
        adam.t = old.adam_t;
        best = pick("best.").map(|b| b.into_iter().map(|(n, t)| Ok((n, t.to_device(&device)?))).collect::<Result<_>>()).transpose()?;
        st = old;
        st.resumed += 1;
    }
    let start_step = st.step;
    if on_event(&TrainEvent::Ready {
        samples: n,
        skipped,
        heldout_samples: held_encs.len(),
        total_steps: total,
        start_step,
        trainable_params: trainable,
    })
    .is_break()
    {
        return Ok(interrupted(st, total, false));
    }

    let save = |st: &mut RunState, adam: &AdamW, best: &Option<HashMap<String, Tensor>>| -> Result<()> {
        let mut items: Vec<(String, &Tensor)> = Vec::new();
        for (i, (n, v)) in names.iter().zip(&vars).enumerate() {
            items.push((format!("lora.{n}"), v.as_tensor()));
            items.push((format!("m.{n}"), &adam.m[i]));
            items.push((format!("v.{n}"), &adam.v[i]));
            if let Some(b) = best {
                items.push((format!("best.{n}"), &b[n]));
            }
        }
        let file = format!("ckpt-{:06}.safetensors", st.step);
        write_atomic(&run_dir.join(&file), &tensors_bytes(&items)?)?;
        let old = std::mem::replace(&mut st.ckpt_file, file);
        st.adam_t = adam.t;
        let bytes = serde_json::to_vec_pretty(&*st).map_err(|source| LoraError::Serialize { what: "checkpoint state", source })?;
        write_atomic(&state_path, &bytes)?;
        if !old.is_empty() && old != st.ckpt_file {
            let _ = std::fs::remove_file(run_dir.join(old));
        }
        Ok(())
    };

    let run_start = Instant::now();
    let mut stopped_early = false;
    let mut step = st.step;
    while step < total {
        let t0 = Instant::now();
        let epoch = step / steps_per_epoch;
        let k = step % steps_per_epoch;
        let order = epoch_order(n, opts.seed, epoch);
        let mb0 = k * opts.grad_accum;
        let mb1 = ((k + 1) * opts.grad_accum).min(n_batches);
        let micro: Vec<Vec<&Encoded>> = (mb0..mb1)
            .map(|mb| order[mb * opts.batch..((mb + 1) * opts.batch).min(n)].iter().map(|&i| &train_encs[i]).collect())
            .collect();
        let step_targets: usize = micro.iter().flatten().map(|e| e.n_targets()).sum();
        let mut acc: Vec<Option<Tensor>> = vec![None; vars.len()];
        let mut loss_sum = 0f64;
        let mut real_tokens = 0usize;
        for (j, mb) in micro.iter().enumerate() {
            let (b, real) = make_batch(mb)?;
            real_tokens += real;
            // Dropout masks depend only on (seed, global micro-batch index): exact resume.
            model.set_dropout_step((epoch * n_batches + mb0 + j) as u64);
            let out = model.loss(&b, true)?;
            let share = out.weight_sum / step_targets as f64;
            loss_sum += out.loss.to_scalar::<f32>()? as f64 * share;
            let grads = out.loss.backward()?;
            for (i, v) in vars.iter().enumerate() {
                if let Some(g) = grads.get(v.as_tensor()) {
                    let g = (g * share)?;
                    acc[i] = Some(match acc[i].take() {
                        Some(a) => (a + g)?,
                        None => g,
                    });
                }
            }
        }
        let grads: Vec<Tensor> = acc
            .into_iter()
            .zip(&vars)
            .map(|(g, v)| g.map_or_else(|| v.as_tensor().zeros_like(), Ok))
            .collect::<candle_core::Result<_>>()?;
        let mut sq = 0f64;
        for g in &grads {
            sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
        let gnorm = sq.sqrt();
        if !gnorm.is_finite() || !loss_sum.is_finite() {
            return Err(terr(format!("the loss or gradient became non-finite at step {} (lower --lr?)", step + 1)));
        }
        let clip = if opts.max_grad_norm > 0.0 && gnorm > opts.max_grad_norm { opts.max_grad_norm / gnorm } else { 1.0 };
        let grads: Vec<Tensor> = if clip < 1.0 { grads.iter().map(|g| g * clip).collect::<candle_core::Result<_>>()? } else { grads };
        let lr = lr_at(opts.lr, step, planned, warm);
        adam.step(&vars, &grads, lr)?;
        step += 1;
        st.step = step;
        st.tokens += real_tokens as u64;
        let dt = t0.elapsed().as_secs_f64();
        st.seconds += dt;

        // Held-out loss.
        let mut heldout = None;
        let eval_now = !held_encs.is_empty() && ((opts.eval_every > 0 && step % opts.eval_every == 0) || step == total);
        if eval_now {
            let (hl, _) = heldout_loss(model.as_ref(), &held_encs, opts.batch)?;
            heldout = Some(hl);
            if st.best_loss.is_none_or(|b| hl < b) {
                st.best_loss = Some(hl);
                st.best_step = step;
                st.bad_evals = 0;
                best = Some(snapshot(&names, &vars)?);
            } else {
                st.bad_evals += 1;
            }
        }
        let point = LossPoint { step, loss: loss_sum, heldout_loss: heldout, lr, grad_norm: gnorm, tokens_per_s: real_tokens as f64 / dt.max(1e-9) };
        st.log.push(point.clone());
        let elapsed = run_start.elapsed().as_secs_f64();
        let done_here = step - start_step;
        let eta = elapsed / done_here.max(1) as f64 * (total - step) as f64;
        let early = opts.patience > 0 && st.bad_evals >= opts.patience;
        if step % opts.log_every == 0 || heldout.is_some() || step == total || early {
            let log = StepLog {
                step,
                total_steps: total,
                epoch: epoch + 1,
                loss: loss_sum,
                heldout_loss: heldout,
                lr,
                grad_norm: gnorm,
                tokens_per_s: point.tokens_per_s,
                elapsed_s: elapsed,
                eta_s: eta,
            };
            if on_event(&TrainEvent::Step(log)).is_break() {
                return Ok(interrupted(st, total, stopped_early));
            }
        }
        if early {
            stopped_early = true;
            let _ = on_event(&TrainEvent::EarlyStop { step, best_step: st.best_step });
            break;
        }
        let save_now = step < total && ((opts.save_every > 0 && step % opts.save_every == 0) || heldout.is_some());
        if save_now {
            save(&mut st, &adam, &best)?;
            if on_event(&TrainEvent::Checkpoint { step }).is_break() {
                return Ok(interrupted(st, total, stopped_early));
            }
        }
    }

    // Keep the best held-out weights when there were held-out evaluations.
    let kept_step = if let Some(b) = &best {
        model.load_lora(b)?;
        st.best_step
    } else {
        st.step
    };
    let heldout = if held_encs.is_empty() {
        None
    } else {
        let (loss, tokens) = heldout_loss(model.as_ref(), &held_encs, opts.batch)?;
        model.set_lora_scale(0.0);
        let (base_loss, _) = heldout_loss(model.as_ref(), &held_encs, opts.batch)?;
        model.set_lora_scale(1.0);
        Some(HeldoutMetrics { loss, perplexity: loss.exp(), base_loss: Some(base_loss), tokens, samples: held_encs.len() })
    };
    let stats = st.stats(total, stopped_early, kept_step);
    let mut tensors = std::collections::BTreeMap::new();
    for (n, v) in names.iter().zip(&vars) {
        tensors.insert(n.clone(), to_matrix(v.as_tensor())?);
    }
    let base_file = opts.base.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let mut adapter = Adapter {
        config: PeftConfig::new(opts.rank, opts.alpha, opts.dropout, &opts.targets, &base_file),
        meta: TridentMeta {
            format: 1,
            name: name.to_string(),
            version: 0,
            created: String::new(),
            source: "trained".into(),
            base: BaseRef { path: opts.base.display().to_string(), sha256: base_sha, architecture: base_info.architecture.clone() },
            dataset: Some(DatasetRef {
                path: opts.data.display().to_string(),
                sha256: data_sha,
                samples: n,
                skipped,
                heldout_path: opts.heldout.as_ref().map(|p| p.display().to_string()),
                heldout_sha256: held_sha,
            }),
            hyper: Some(hyper),
            heldout: heldout.clone(),
            training: Some(stats.clone()),
            imported_from: None,
            tool_version: env!("CARGO_PKG_VERSION").into(),
        },
        tensors,
    };
    let title = format!("{name}: loss per step");
    let csv = plot::to_csv(&st.log).into_bytes();
    let svg = plot::to_svg(&st.log, &title).into_bytes();
    let stored = store.save(name, &mut adapter, &[("loss.csv", csv), ("loss.svg", svg)])?;
    // The run is complete: its checkpoints are no longer needed.
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir).map_err(|source| LoraError::Write { path: run_dir.clone(), source })?;
    }
    Ok(TrainOutcome { stored: Some(stored), log: st.log, stats, heldout })
}

fn interrupted(st: RunState, total: usize, stopped_early: bool) -> TrainOutcome {
    TrainOutcome {
        stored: None,
        stats: st.stats(total, stopped_early, st.step),
        log: st.log,
        heldout: None,
    }
}

#[cfg(test)]
mod tests;
