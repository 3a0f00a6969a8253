//! `trident lora`: train, list, show, rm, import, export, evaluate LoRA adapters and print
//! their next-token logits (`logits`, the PEFT cross-check); and
//! [`load_adapter_into`], the `--adapter NAME[@VERSION][:SCALE]` resolution shared by
//! `generate`, `chat` and `ask`.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use trident_engine::{AdapterRef, Backend, LlamaBackend, LlamaConfig};
use trident_lora::adapter::{self, Adapter, AdapterSpec, AdapterStore};
use trident_lora::eval::{self, EvalOptions, Variant};
use trident_lora::train::{self, TrainEvent, TrainOptions};
use trident_lora::{LoraError, LoraTarget};

use super::generate::resolve_model;
use crate::config::Context;

/// Arguments of `trident lora`.
#[derive(Debug, clap::Args)]
pub struct LoraArgs {
    #[command(subcommand)]
    pub command: LoraCommand,
}

/// `trident lora` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum LoraCommand {
    /// Train an adapter on a frozen quantized base (re-run the same command to resume).
    Train(TrainArgs),
    /// List stored adapters and their versions.
    List,
    /// Show an adapter version's configuration and metadata.
    Show {
        /// NAME[@VERSION].
        spec: String,
    },
    /// Remove an adapter version (NAME@VERSION) or every version (NAME).
    Rm {
        /// NAME[@VERSION].
        spec: String,
    },
    /// Import a PEFT adapter directory trained elsewhere (adapter_config.json +
    /// adapter_model.safetensors) for a base model.
    Import {
        /// The PEFT adapter directory.
        dir: PathBuf,
        /// The base model it was trained for (name or GGUF path).
        #[arg(long)]
        base: String,
        /// Name to store it under (default: the directory's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Export an adapter to llama.cpp's GGUF-LoRA format.
    Export {
        /// NAME[@VERSION].
        spec: String,
        /// Output file.
        #[arg(long)]
        gguf: PathBuf,
        /// Base model to check against (default: the one it was made for).
        #[arg(long)]
        base: Option<String>,
    },
    /// Evaluate an adapter against the base model (with and without a prompt) on held-out data.
    Eval(EvalArgs),
    /// Print the top next-token logits at every position of a text, with an adapter (or
    /// `none`): the numbers to compare with PyTorch + PEFT on the same dequantized base.
    Logits(LogitsArgs),
}

/// Which implementation `trident lora logits` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogitsEngine {
    /// The training model code: f32, base weights dequantized, LoRA at alpha/r (raw logits).
    Candle,
    /// The llama.cpp backend on the quantized base with the GGUF-LoRA export (log-probs).
    Llama,
}

/// Arguments of `trident lora logits`.
#[derive(Debug, clap::Args)]
pub struct LogitsArgs {
    /// NAME[@VERSION][:SCALE], a PEFT adapter directory (DIR[:SCALE]), or `none` for the base model.
    pub spec: String,
    /// Base model (name or GGUF path; default: the one a stored adapter was made for, else `engine.model`).
    #[arg(long)]
    pub base: Option<String>,
    /// Text to score, tokenized by the base model's own tokenizer.
    #[arg(long, conflicts_with = "tokens", required_unless_present = "tokens")]
    pub text: Option<String>,
    /// Token ids to score, comma-separated (e.g. from another tokenizer, to compare on the same ids).
    #[arg(long, value_delimiter = ',', num_args = 1)]
    pub tokens: Option<Vec<u32>>,
    /// Top tokens printed per position.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Implementation: `candle` (f32 logits on the dequantized base) or `llama` (llama.cpp
    /// log-probs on the quantized base).
    #[arg(long, value_enum, default_value_t = LogitsEngine::Candle)]
    pub engine: LogitsEngine,
    /// CPU threads for `--engine llama` (0 = all).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// Arguments of `trident lora train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Base model: catalogue/registered name or GGUF path (default: `engine.model`).
    #[arg(long)]
    pub base: Option<String>,
    /// Training data: prepared train.jsonl (`trident data prepare`) or any dataset `data check` accepts.
    #[arg(long)]
    pub data: PathBuf,
    /// Held-out data for held-out loss, early stopping and metrics.
    #[arg(long)]
    pub heldout: Option<PathBuf>,
    /// Adapter name (stored as the next version of NAME).
    #[arg(long)]
    pub out: String,
    /// LoRA rank.
    #[arg(long, default_value_t = 16)]
    pub rank: usize,
    /// LoRA alpha (the update is scaled by alpha / rank).
    #[arg(long, default_value_t = 32.0)]
    pub alpha: f64,
    /// LoRA dropout.
    #[arg(long, default_value_t = 0.05)]
    pub dropout: f64,
    /// Target projections (comma-separated: q,k,v,o,gate,up,down).
    #[arg(long, default_value = "q,k,v,o,gate,up,down")]
    pub targets: String,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
    /// Epochs.
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Samples per micro-batch.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Longest sample in tokens (longer ones are skipped and counted, never truncated).
    #[arg(long, default_value_t = 512)]
    pub max_len: usize,
    /// Seed (A initialisation, data order, dropout).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Held-out loss every N steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    pub eval_every: usize,
    /// Early stopping after P held-out evaluations without improvement (0: off).
    #[arg(long, default_value_t = 0)]
    pub patience: usize,
    /// Warm-up share of the steps.
    #[arg(long, default_value_t = 0.05)]
    pub warmup: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Gradient clipping (global norm; 0: off).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Checkpoint every N steps (0: only at held-out evaluations).
    #[arg(long, default_value_t = 10)]
    pub save_every: usize,
    /// Train on a seeded subset of at most N samples.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Score at most N held-out samples during training.
    #[arg(long, default_value_t = 64)]
    pub heldout_limit: usize,
    /// Stop after N optimizer steps.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Report every N steps.
    #[arg(long, default_value_t = 1)]
    pub log_every: usize,
    /// Discard a checkpoint of a different run of the same name instead of refusing.
    #[arg(long)]
    pub restart: bool,
    /// Keep every layer's activations instead of recomputing them in the backward pass
    /// (about 25% faster, ≈ 10 MB of memory per token for a 0.5B model).
    #[arg(long)]
    pub no_checkpointing: bool,
    /// How the frozen base weights are multiplied: `bf16` (mixed precision: bf16 products,
    /// f32 sums, on AVX-512 BF16), `f32` (exact), or `auto` (bf16 where the CPU has it).
    #[arg(long, value_enum, default_value_t = PrecisionArg::Auto)]
    pub precision: PrecisionArg,
    /// Where to train: `cpu`, or `cuda` / `cuda:N` on a build with the `cuda` feature (the
    /// base is then dequantized to f32 on the GPU per matmul; --precision and
    /// --no-checkpointing apply to the CPU only).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// `--precision` of `trident lora train`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionArg {
    /// bf16 where the CPU has AVX-512 BF16, else f32.
    Auto,
    /// Exact float32.
    F32,
    /// bf16 products with f32 sums.
    Bf16,
}

/// Arguments of `trident lora eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// NAME[@VERSION][:SCALE].
    pub spec: String,
    /// Held-out data (prepared heldout.jsonl or any dataset `data check` accepts).
    #[arg(long)]
    pub data: PathBuf,
    /// A system prompt for the "base + prompt" column: text, or a file holding it.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Base model (default: the one the adapter was made for).
    #[arg(long)]
    pub base: Option<String>,
    /// Evaluate at most N samples (the first N).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Most tokens generated per answer.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Requests run at once.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Loss and perplexity only (no generation).
    #[arg(long)]
    pub no_generate: bool,
    /// CPU threads for the engine (0 = all).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// Converts a LoRA error for the CLI (exit code 2 for the user's errors).
pub(crate) fn lora_err(e: LoraError) -> anyhow::Error {
    if e.is_user_error() { crate::bad_input!("{e}") } else { anyhow::Error::new(e) }
}

/// Resolves `--adapter NAME[@VERSION][:SCALE]` (or a GGUF-LoRA path) for the model loaded in
/// `backend`, loads it into the backend unless it is already resident (several adapters stay
/// loaded side by side; the base is never reloaded), and returns the per-request reference.
///
/// This is the entry point for every command with `--adapter` (`generate`, `chat`, `ask`).
/// It checks that the adapter was made for this base (file hash, architecture, shapes) and
/// exports its GGUF-LoRA form on first use (cached next to the PEFT files).
pub fn load_adapter_into(backend: &LlamaBackend, spec: &str, ctx: &Context) -> anyhow::Result<AdapterRef> {
    let base = backend.info().path.clone();
    let r = adapter::resolve_adapter(&ctx.home, spec, &base).map_err(lora_err)?;
    if !backend.adapters().contains(&r.key) {
        backend.load_adapter(&r.key, &r.gguf).map_err(super::generate::engine_err)?;
    }
    Ok(AdapterRef::new(r.key, r.scale))
}

/// Runs `trident lora`.
pub fn run(args: LoraArgs, ctx: &Context) -> anyhow::Result<()> {
    let store = AdapterStore::new(&ctx.home);
    match args.command {
        LoraCommand::Train(a) => run_train(a, &store, ctx),
        LoraCommand::List => run_list(&store, ctx),
        LoraCommand::Show { spec } => {
            let s = store.find(&AdapterSpec::parse(&spec).map_err(lora_err)?).map_err(lora_err)?;
            let a = Adapter::read_dir(&s.dir).map_err(lora_err)?;
            let v = serde_json::json!({
                "name": s.name, "version": s.version, "dir": s.dir, "size_bytes": s.size_bytes,
                "tensors": a.tensors.len(), "modules": a.modules().len(),
                "adapter_config": a.config, "trident": a.meta,
            });
            if ctx.json {
                crate::output::print_json(&v)?;
            } else {
                println!("{}@{}  ({})", s.name, s.version, s.dir.display());
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            Ok(())
        }
        LoraCommand::Rm { spec } => {
            let p = AdapterSpec::parse(&spec).map_err(lora_err)?;
            let gone = store.remove(&p.name, p.version).map_err(lora_err)?;
            if ctx.json {
                crate::output::print_json(&serde_json::json!({ "name": p.name, "removed_versions": gone }))?;
            } else {
                println!("removed {} version(s) of {}: {:?}", gone.len(), p.name, gone);
            }
            Ok(())
        }
        LoraCommand::Import { dir, base, name } => {
            let base = resolve_model(&base, ctx)?;
            let name = match name {
                Some(n) => n,
                None => std::fs::canonicalize(&dir)
                    .ok()
                    .and_then(|d| d.file_name().map(|f| f.to_string_lossy().into_owned()))
                    .ok_or_else(|| crate::bad_input!("cannot derive a name from {}; pass --name", dir.display()))?,
            };
            let s = store.import(&dir, &name, &base).map_err(lora_err)?;
            if ctx.json {
                crate::output::print_json(&serde_json::json!({ "name": s.name, "version": s.version, "dir": s.dir }))?;
            } else {
                println!("imported {} as {}@{} ({})", dir.display(), s.name, s.version, s.dir.display());
            }
            Ok(())
        }
        LoraCommand::Export { spec, gguf, base } => {
            let s = store.find(&AdapterSpec::parse(&spec).map_err(lora_err)?).map_err(lora_err)?;
            let a = Adapter::read_dir(&s.dir).map_err(lora_err)?;
            let base = match base {
                Some(b) => resolve_model(&b, ctx)?,
                None => PathBuf::from(&a.meta.base.path),
            };
            if !base.is_file() {
                return Err(crate::bad_input!("base model {} not found; pass --base", base.display()));
            }
            adapter::export_version(&store, &s, &base, &gguf).map_err(lora_err)?;
            if ctx.json {
                crate::output::print_json(&serde_json::json!({ "name": s.name, "version": s.version, "gguf": gguf }))?;
            } else {
                println!("exported {}@{} to {}", s.name, s.version, gguf.display());
            }
            Ok(())
        }
        LoraCommand::Eval(a) => run_eval(a, &store, ctx),
        LoraCommand::Logits(a) => run_logits(a, &store, ctx),
    }
}

fn run_logits(a: LogitsArgs, store: &AdapterStore, ctx: &Context) -> anyhow::Result<()> {
    use trident_lora::logits;
    let base = match &a.base {
        Some(b) => resolve_model(b, ctx)?,
        None => {
            // A stored adapter knows its base; otherwise the configured model.
            let recorded = AdapterSpec::parse(&a.spec)
                .ok()
                .filter(|p| a.spec != "none" && !p.name.contains('/'))
                .and_then(|p| store.find(&p).ok())
                .and_then(|s| s.meta.map(|m| PathBuf::from(m.base.path)))
                .filter(|p| p.is_file());
            match recorded {
                Some(p) => p,
                None => resolve_model(&ctx.config.engine.model, ctx)?,
            }
        }
    };
    let adapter = logits::resolve_logits_adapter(&ctx.home, &a.spec, &base).map_err(lora_err)?;
    let tokens = match (&a.tokens, &a.text) {
        (Some(t), _) => t.clone(),
        (None, Some(text)) => logits::tokenize(&base, text).map_err(lora_err)?,
        (None, None) => return Err(crate::bad_input!("give --text or --tokens")),
    };
    let (kind, positions) = match a.engine {
        LogitsEngine::Candle => ("logits", logits::candle_top_tokens(&base, adapter.as_ref(), &tokens, a.top).map_err(lora_err)?),
        LogitsEngine::Llama => ("logprobs", logits::llama_top_tokens(&base, adapter.as_ref(), &tokens, a.top, a.threads).map_err(lora_err)?),
    };
    let engine = match a.engine {
        LogitsEngine::Candle => "candle",
        LogitsEngine::Llama => "llama",
    };
    let label = adapter.as_ref().map(|x| x.label.clone());
    let scale = adapter.as_ref().map(|x| x.scale);
    let lora = adapter.as_ref().map(|x| serde_json::json!({ "r": x.adapter.config.r, "alpha": x.adapter.config.lora_alpha }));
    if ctx.json {
        return crate::output::print_json(&serde_json::json!({
            "engine": engine, "kind": kind, "base": base, "adapter": label, "scale": scale, "lora": lora,
            "tokens": tokens, "positions": positions,
        }));
    }
    println!(
        "{engine} {kind}, {} on {} ({} tokens)",
        label.map(|l| format!("adapter {l} (scale {})", scale.unwrap_or(1.0))).unwrap_or_else(|| "no adapter".into()),
        base.display(),
        tokens.len()
    );
    for (i, (tok, p)) in tokens.iter().zip(&positions).enumerate() {
        let values = if p.top_logits.is_empty() { &p.top_logprobs } else { &p.top_logits };
        let top: Vec<String> = p.top_ids.iter().zip(values).map(|(id, v)| format!("{id}:{v:.4}")).collect();
        println!("{i:>4} {tok:>7} -> {}", top.join(" "));
    }
    Ok(())
}

fn run_list(store: &AdapterStore, ctx: &Context) -> anyhow::Result<()> {
    let all = store.list().map_err(lora_err)?;
    if ctx.json {
        let v: Vec<serde_json::Value> = all
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name, "version": s.version, "dir": s.dir, "size_bytes": s.size_bytes,
                    "source": s.meta.as_ref().map(|m| m.source.clone()),
                    "base": s.meta.as_ref().map(|m| m.base.path.clone()),
                    "created": s.meta.as_ref().map(|m| m.created.clone()),
                    "heldout_loss": s.meta.as_ref().and_then(|m| m.heldout.as_ref().map(|h| h.loss)),
                })
            })
            .collect();
        return crate::output::print_json(&v);
    }
    if all.is_empty() {
        println!("no adapters in {}", store.root().display());
        return Ok(());
    }
    let mut rows = vec![vec!["NAME".into(), "VERSION".into(), "SOURCE".into(), "BASE".into(), "HELD-OUT LOSS".into(), "SIZE".into(), "CREATED".into()]];
    for s in &all {
        let m = s.meta.as_ref();
        rows.push(vec![
            s.name.clone(),
            format!("{}", s.version),
            m.map(|m| m.source.clone()).unwrap_or_default(),
            m.map(|m| Path::new(&m.base.path).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()).unwrap_or_default(),
            m.and_then(|m| m.heldout.as_ref().map(|h| format!("{:.4}", h.loss))).unwrap_or_else(|| "-".into()),
            crate::output::human_bytes(s.size_bytes),
            m.map(|m| m.created.chars().take(19).collect()).unwrap_or_default(),
        ]);
    }
    crate::output::print_table(&rows);
    Ok(())
}

fn run_train(a: TrainArgs, store: &AdapterStore, ctx: &Context) -> anyhow::Result<()> {
    // The device first: no model fetch or data check before learning there is no GPU.
    let device = trident_lora::ComputeDevice::parse(&a.device).map_err(|e| crate::bad_input!("--device: {e}"))?;
    device.open().map_err(|e| crate::bad_input!("--device: {e}"))?;
    let base_name = a.base.clone().unwrap_or_else(|| ctx.config.engine.model.clone());
    let base = resolve_model(&base_name, ctx)?;
    if !a.data.is_file() {
        return Err(crate::bad_input!("--data {}: no such file", a.data.display()));
    }
    if let Some(h) = &a.heldout {
        if !h.is_file() {
            return Err(crate::bad_input!("--heldout {}: no such file", h.display()));
        }
    }
    let targets = LoraTarget::parse_list(&a.targets).map_err(|e| crate::bad_input!("--targets: {e}"))?;
    // Activation buffers are freed and re-allocated every step: keep them mapped.
    trident_lora::keep_freed_memory();
    let opts = TrainOptions {
        base,
        data: a.data.clone(),
        heldout: a.heldout.clone(),
        rank: a.rank,
        alpha: a.alpha,
        dropout: a.dropout,
        targets,
        lr: a.lr,
        epochs: a.epochs,
        batch: a.batch,
        grad_accum: a.grad_accum,
        max_len: a.max_len,
        seed: a.seed,
        eval_every: a.eval_every,
        patience: a.patience,
        warmup: a.warmup,
        weight_decay: a.weight_decay,
        max_grad_norm: a.max_grad_norm,
        save_every: a.save_every,
        limit: a.limit,
        heldout_limit: a.heldout_limit,
        max_steps: a.max_steps,
        log_every: a.log_every,
        checkpointing: !a.no_checkpointing,
        precision: match a.precision {
            PrecisionArg::Auto => trident_lora::Precision::training_default(),
            PrecisionArg::F32 => trident_lora::Precision::Dequantized,
            PrecisionArg::Bf16 => trident_lora::Precision::Bf16,
        },
        device,
    };
    let json = ctx.json;
    let bar = indicatif::ProgressBar::hidden();
    let mut on_event = |ev: &TrainEvent| {
        match ev {
            TrainEvent::Ready { samples, skipped, heldout_samples, total_steps, start_step, trainable_params } => {
                if json {
                    println!("{}", serde_json::to_string(ev).unwrap_or_default());
                } else {
                    eprintln!(
                        "training {}: {samples} samples ({skipped} over --max-len skipped), {heldout_samples} held-out, \
                         {total_steps} steps, {trainable_params} trainable parameters{}",
                        a.out,
                        if *start_step > 0 { format!("; resuming after step {start_step}") } else { String::new() }
                    );
                    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                    bar.set_length(*total_steps as u64);
                    bar.set_position(*start_step as u64);
                    bar.set_style(
                        indicatif::ProgressStyle::with_template("{bar:30} step {pos}/{len} {msg} ETA {eta}")
                            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                    );
                }
            }
            TrainEvent::Step(s) => {
                if json {
                    let mut v = serde_json::json!({ "step": s.step, "loss": s.loss, "tokens_per_s": s.tokens_per_s, "lr": s.lr, "epoch": s.epoch });
                    if let Some(h) = s.heldout_loss {
                        v["heldout_loss"] = h.into();
                    }
                    println!("{v}");
                } else {
                    bar.set_position(s.step as u64);
                    let h = s.heldout_loss.map(|h| format!(" held-out {h:.4}")).unwrap_or_default();
                    bar.set_message(format!("loss {:.4}{h} {:.1} tok/s", s.loss, s.tokens_per_s));
                    if s.heldout_loss.is_some() {
                        bar.println(format!("step {}: loss {:.4}{h}", s.step, s.loss));
                    }
                }
            }
            TrainEvent::Checkpoint { .. } => {}
            TrainEvent::EarlyStop { step, best_step } => {
                if json {
                    println!("{}", serde_json::to_string(ev).unwrap_or_default());
                } else {
                    bar.println(format!("early stop at step {step}: best held-out loss at step {best_step}"));
                }
            }
        }
        ControlFlow::Continue(())
    };
    let out = train::train(store, &a.out, &opts, a.restart, &mut on_event).map_err(lora_err)?;
    bar.finish_and_clear();
    let stored = out.stored.context("training stopped before the end")?;
    let summary = serde_json::json!({
        "event": "done", "name": stored.name, "version": stored.version, "dir": stored.dir,
        "training": out.stats, "heldout": out.heldout,
    });
    if json {
        println!("{summary}");
    } else {
        println!(
            "saved {}@{} ({}): {} steps, {:.1} tok/s, {:.0} s{}",
            stored.name,
            stored.version,
            stored.dir.display(),
            out.stats.steps,
            out.stats.tokens_per_s,
            out.stats.seconds,
            out.heldout.map(|h| format!(", held-out loss {:.4} (base {:.4})", h.loss, h.base_loss.unwrap_or(f64::NAN))).unwrap_or_default()
        );
    }
    Ok(())
}

fn run_eval(a: EvalArgs, store: &AdapterStore, ctx: &Context) -> anyhow::Result<()> {
    let spec = AdapterSpec::parse(&a.spec).map_err(lora_err)?;
    let found = store.find(&spec).map_err(lora_err)?;
    let meta = Adapter::read_dir(&found.dir).map_err(lora_err)?.meta;
    let base = match &a.base {
        Some(b) => resolve_model(b, ctx)?,
        None => PathBuf::from(&meta.base.path),
    };
    if !base.is_file() {
        return Err(crate::bad_input!("base model {} not found; pass --base", base.display()));
    }
    if !a.data.is_file() {
        return Err(crate::bad_input!("--data {}: no such file", a.data.display()));
    }
    let mut samples = train::read_samples(&a.data).map_err(lora_err)?;
    if let Some(l) = a.limit {
        samples.truncate(l);
    }
    let system = match &a.prompt {
        Some(p) if Path::new(p).is_file() => Some(std::fs::read_to_string(p).with_context(|| format!("reading --prompt {p}"))?),
        Some(p) => Some(p.clone()),
        None => None,
    };
    let parallel = a.parallel.clamp(1, 16);
    let cfg = LlamaConfig { n_ctx: 2048, n_seq: parallel, threads: a.threads, ..Default::default() };
    let backend = LlamaBackend::load(&base, &cfg).map_err(super::generate::engine_err)?;
    let aref = load_adapter_into(&backend, &a.spec, ctx)?;
    let mut variants = vec![Variant { label: "base".into(), adapter: None, system: None }];
    if let Some(s) = &system {
        variants.push(Variant { label: "base+prompt".into(), adapter: None, system: Some(s.clone()) });
    }
    variants.push(Variant { label: "adapter".into(), adapter: Some(aref.clone()), system: None });
    let opts = EvalOptions { max_tokens: a.max_tokens, parallel, examples: 3, no_generate: a.no_generate };
    let json = ctx.json;
    let t0 = std::time::Instant::now();
    let mut progress = |label: &str, done: usize, total: usize| {
        if !json {
            eprint!("\r{label}: {done}/{total}   ");
        }
    };
    let reports = eval::evaluate(&backend, &samples, &variants, &opts, &mut progress).map_err(lora_err)?;
    if !json {
        eprintln!();
    }
    let v = serde_json::json!({
        "adapter": format!("{}@{}", found.name, found.version), "scale": aref.scale,
        "base": base, "data": a.data, "samples": samples.len(), "seconds": t0.elapsed().as_secs_f64(),
        "variants": reports,
    });
    if json {
        return crate::output::print_json(&v);
    }
    let mut rows = vec![vec![
        "".to_string(),
        "loss".into(),
        "ppl".into(),
        "exact".into(),
        "token F1".into(),
        "chrF".into(),
        "JSON valid".into(),
        "exact keys".into(),
    ]];
    let mut fields: Vec<String> = Vec::new();
    for r in &reports {
        if let Some(j) = r.generation.as_ref().and_then(|g| g.json.as_ref()) {
            for k in j.field_accuracy.keys() {
                if !fields.contains(k) {
                    fields.push(k.clone());
                }
            }
        }
    }
    for f in &fields {
        rows[0].push(format!("{f} acc"));
    }
    let pct = |x: f64| format!("{:.1}%", 100.0 * x);
    for r in &reports {
        let mut row = vec![r.label.clone(), format!("{:.4}", r.loss.loss), format!("{:.3}", r.loss.perplexity)];
        match &r.generation {
            Some(g) => {
                row.extend([pct(g.exact_match), format!("{:.3}", g.token_f1), format!("{:.1}", g.chrf)]);
                match &g.json {
                    Some(j) => {
                        row.extend([pct(j.valid), pct(j.exact_keys)]);
                        for f in &fields {
                            row.push(j.field_accuracy.get(f).map(|x| pct(*x)).unwrap_or_else(|| "-".into()));
                        }
                    }
                    None => row.extend(["-".to_string(), "-".to_string()]),
                }
            }
            None => row.extend(["-".to_string(), "-".to_string(), "-".to_string()]),
        }
        rows.push(row);
    }
    println!("{}@{} on {} ({} samples, {:.0} s)", found.name, found.version, a.data.display(), samples.len(), t0.elapsed().as_secs_f64());
    crate::output::print_table(&rows);
    Ok(())
}
