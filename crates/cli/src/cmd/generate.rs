//! `trident generate`: raw text completion, streamed to stdout.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use trident_engine::{
    AdapterRef, Backend, Control, GenerateRequest, LlamaBackend, LlamaConfig, SamplingParams,
    TokenEvent,
};

use crate::config::Context;

/// Model selection shared by `generate`, `chat` and `bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Model: a catalogue name (`qwen`, `gemma`), a registered name, or a GGUF path.
    /// Default: `engine.model` from the configuration.
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// CPU threads (default: `engine.threads`; 0 = all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Context window in tokens (default: `engine.ctx`).
    #[arg(long)]
    pub ctx: Option<usize>,
}

/// Sampling flags shared by `generate` and `chat`.
#[derive(Debug, Clone, clap::Args)]
pub struct SamplingArgs {
    /// Temperature; 0 = greedy (default: `engine.temperature`).
    #[arg(long, short = 't')]
    pub temperature: Option<f32>,
    /// Greedy decoding (same as --temperature 0).
    #[arg(long, conflicts_with = "temperature")]
    pub greedy: bool,
    /// Keep only the K most likely tokens (0 = off).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Nucleus sampling threshold (1 = off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than MIN_P × the top token (0 = off).
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Repetition penalty over the last --penalty-last-n tokens (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// OpenAI-style frequency penalty.
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// OpenAI-style presence penalty.
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
    /// How many recent tokens the penalties look at (-1 = all).
    #[arg(long, default_value_t = 64, allow_hyphen_values = true)]
    pub penalty_last_n: i32,
    /// Logit bias by token id: ID=BIAS (repeatable; -100 forbids, 100 forces).
    #[arg(long = "logit-bias", value_name = "ID=BIAS", allow_hyphen_values = true)]
    pub logit_bias: Vec<String>,
    /// Logit bias by text: TEXT=BIAS (every token of TEXT gets the bias; repeatable).
    #[arg(long = "logit-bias-text", value_name = "TEXT=BIAS", allow_hyphen_values = true)]
    pub logit_bias_text: Vec<String>,
    /// Random seed (same seed, same output).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Most new tokens (default: `engine.max_tokens`).
    #[arg(long, short = 'n')]
    pub max_tokens: Option<usize>,
    /// Stop sequence (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// LoRA adapter: NAME[@VERSION][:SCALE] of a stored adapter (`trident lora list`), or a
    /// GGUF-LoRA file path[:SCALE].
    #[arg(long)]
    pub adapter: Option<String>,
}

/// Arguments of `trident generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Print log-probs with this many alternatives per token (in --json output).
    #[arg(long)]
    pub logprobs: Option<usize>,
    /// The text to continue ("-" reads it from stdin).
    pub prompt: String,
}

fn bad(e: trident_engine::EngineError) -> anyhow::Error {
    if e.is_user_error() {
        anyhow::Error::new(crate::error::BadInput(e.to_string()))
    } else {
        anyhow::Error::new(e)
    }
}

/// Converts an engine error for the CLI (exit code 2 for the user's errors).
pub(crate) fn engine_err(e: trident_engine::EngineError) -> anyhow::Error {
    bad(e)
}

/// Resolves a model name or path to a GGUF file.
pub(crate) fn resolve_model(name: &str, ctx: &Context) -> anyhow::Result<PathBuf> {
    let as_path = Path::new(name);
    if as_path.extension().is_some_and(|e| e == "gguf") || name.contains('/') {
        if !as_path.exists() {
            return Err(crate::bad_input!("model file not found: {name}"));
        }
        return Ok(as_path.to_path_buf());
    }
    let registry = trident_models::Registry::open(&ctx.home);
    match registry.and_then(|r| r.resolve(name)) {
        Ok(p) => Ok(p),
        Err(e) => {
            // Test setups keep the default models in $TRIDENT_TEST_MODELS.
            if let Some(dir) = std::env::var_os("TRIDENT_TEST_MODELS") {
                let file = match name {
                    "qwen" => Some("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
                    "gemma" => Some("gemma-3-270m-q4_k_m.gguf"),
                    _ => None,
                };
                if let Some(f) = file {
                    let p = PathBuf::from(dir).join(f);
                    if p.exists() {
                        return Ok(p);
                    }
                }
            }
            Err(anyhow::Error::new(e).context(format!("cannot resolve model {name:?}")))
        }
    }
}

/// Loads the model named by the flags/config.
pub(crate) fn load_model(args: &ModelArgs, n_seq: usize, ctx: &Context) -> anyhow::Result<LlamaBackend> {
    let name = args.model.clone().unwrap_or_else(|| ctx.config.engine.model.clone());
    let path = resolve_model(&name, ctx)?;
    let cfg = LlamaConfig {
        n_ctx: args.ctx.unwrap_or(ctx.config.engine.ctx as usize),
        n_seq,
        threads: args.threads.unwrap_or(ctx.config.engine.threads),
        n_batch: ctx.config.engine.batch.max(1) as usize,
        gpu_layers: ctx.config.engine.gpu_layers_for_engine(),
        ..LlamaConfig::default()
    };
    LlamaBackend::load(&path, &cfg).map_err(bad).with_context(|| format!("loading {}", path.display()))
}

fn parse_bias<T: std::str::FromStr>(s: &str, what: &str) -> anyhow::Result<(T, f32)> {
    let (k, v) = s
        .rsplit_once('=')
        .ok_or_else(|| crate::bad_input!("{what} {s:?}: expected KEY=BIAS"))?;
    let key = k.parse::<T>().map_err(|_| crate::bad_input!("{what} {s:?}: bad key {k:?}"))?;
    let bias = v.parse::<f32>().map_err(|_| crate::bad_input!("{what} {s:?}: bad bias {v:?}"))?;
    Ok((key, bias))
}

impl SamplingArgs {
    /// Builds the sampling parameters.
    pub(crate) fn params(&self, ctx: &Context) -> anyhow::Result<SamplingParams> {
        let temperature = if self.greedy { 0.0 } else { self.temperature.unwrap_or(ctx.config.engine.temperature as f32) };
        let mut p = SamplingParams {
            temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            penalty_last_n: self.penalty_last_n,
            seed: self.seed,
            ..Default::default()
        };
        for b in &self.logit_bias {
            let (id, bias) = parse_bias::<u32>(b, "--logit-bias")?;
            p.logit_bias.insert(id, bias);
        }
        for b in &self.logit_bias_text {
            p.logit_bias_text.push(parse_bias::<String>(b, "--logit-bias-text")?);
        }
        p.validate().map_err(bad)?;
        Ok(p)
    }

    /// Loads the `--adapter` (if any) into the backend and returns its reference (see
    /// [`super::lora::load_adapter_into`]).
    pub(crate) fn adapter(&self, backend: &LlamaBackend, ctx: &Context) -> anyhow::Result<Option<AdapterRef>> {
        match &self.adapter {
            Some(spec) => Ok(Some(super::lora::load_adapter_into(backend, spec, ctx)?)),
            None => Ok(None),
        }
    }

    /// Fills a request's sampling, limits, stops and adapter.
    pub(crate) fn apply(
        &self,
        req: &mut GenerateRequest,
        adapter: Option<AdapterRef>,
        ctx: &Context,
    ) -> anyhow::Result<()> {
        req.sampling = self.params(ctx)?;
        req.max_tokens = self.max_tokens.unwrap_or(ctx.config.engine.max_tokens as usize);
        req.stop = self.stop.clone();
        req.adapters = adapter.into_iter().collect();
        Ok(())
    }
}

/// A token callback that writes each piece of text to stdout as it arrives (when `stream`;
/// with `--json` the text is printed once, at the end, instead).
pub(crate) fn stream_to_stdout(stream: bool) -> impl FnMut(&TokenEvent) -> Control {
    move |ev: &TokenEvent| {
        if stream {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(ev.text.as_bytes());
            let _ = out.flush();
        }
        Control::Continue
    }
}

/// Runs `trident generate`.
pub fn run(args: GenerateArgs, ctx: &Context) -> anyhow::Result<()> {
    let prompt = if args.prompt == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).context("reading the prompt from stdin")?;
        s
    } else {
        args.prompt.clone()
    };
    if prompt.is_empty() {
        return Err(crate::bad_input!("the prompt is empty"));
    }
    let backend = load_model(&args.model, 1, ctx)?;
    let adapter = args.sampling.adapter(&backend, ctx)?;
    let mut req = GenerateRequest::text(prompt);
    args.sampling.apply(&mut req, adapter, ctx)?;
    req.logprobs = args.logprobs;
    let mut on_token = stream_to_stdout(!ctx.json);
    let g = backend.generate(&req, Some(&mut on_token)).map_err(bad)?;
    if ctx.json {
        crate::output::print_json(&g)?;
    } else {
        println!();
        tracing::info!(
            prompt_tokens = g.usage.prompt_tokens,
            completion_tokens = g.usage.completion_tokens,
            finish = ?g.finish_reason,
            decode_tok_s = g.timings.decode_tok_s(&g.usage),
            "done"
        );
    }
    Ok(())
}
