//! `trident bench llm`: inference speed of the local engine (medians of several runs).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use serde::Serialize;
use trident_engine::{Backend, GenerateRequest, Generation, LlamaBackend, SamplingParams};

use super::generate::{ModelArgs, engine_err, load_model};
use crate::config::Context;

/// Arguments of `trident bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

/// What to benchmark.
#[derive(Debug, clap::Subcommand)]
pub enum BenchWhat {
    /// LLM inference: prefill, decode, time to first token with/without a cached prefix,
    /// 8-stream aggregate throughput, peak RSS.
    Llm(LlmBenchArgs),
}

/// Arguments of `trident bench llm`.
#[derive(Debug, clap::Args)]
pub struct LlmBenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Measured runs (the median is reported); one warm-up run comes first.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Prompt length for the prefill measurement.
    #[arg(long, default_value_t = 512)]
    pub prompt_tokens: usize,
    /// Tokens generated for the decode measurement.
    #[arg(long, default_value_t = 128)]
    pub gen_tokens: usize,
    /// Shared prefix length for the time-to-first-token measurement.
    #[arg(long, default_value_t = 1000)]
    pub prefix_tokens: usize,
    /// Concurrent sequences for the aggregate measurement.
    #[arg(long, default_value_t = 8)]
    pub streams: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
struct RunFigures {
    prefill_tok_s: f64,
    decode_tok_s: f64,
    ttft_no_cache_ms: f64,
    ttft_cached_prefix_ms: f64,
    aggregate_tok_s: f64,
}

/// The report.
#[derive(Debug, Serialize)]
struct Report {
    model: String,
    architecture: String,
    threads: usize,
    runs: usize,
    prompt_tokens: usize,
    gen_tokens: usize,
    prefix_tokens: usize,
    streams: usize,
    median: RunFigures,
    all_runs: Vec<RunFigures>,
    peak_rss_mib: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A deterministic token sequence of length `n` whose first tokens are unique to `tag`
/// (so no cached prefix from an earlier run applies).
fn tokens(b: &LlamaBackend, tag: &str, n: usize) -> anyhow::Result<Vec<u32>> {
    let filler = "Компания «Ромашка» продаёт CRM для малого бизнеса. The API rate limit is 600 requests per minute. ";
    let mut t = b.tokenize(&format!("[{tag}] "), true, false).map_err(engine_err)?;
    let body = b.tokenize(&filler.repeat(n / 8 + 8), false, false).map_err(engine_err)?;
    t.extend(body);
    t.truncate(n);
    Ok(t)
}

fn run_req(b: &LlamaBackend, prompt: Vec<u32>, max_tokens: usize) -> anyhow::Result<Generation> {
    let req = GenerateRequest {
        max_tokens,
        ignore_eos: true,
        sampling: SamplingParams::greedy(),
        ..GenerateRequest::tokens(prompt)
    };
    b.generate(&req, None).map_err(engine_err)
}

fn one_run(b: &LlamaBackend, a: &LlmBenchArgs, run: usize) -> anyhow::Result<RunFigures> {
    // Every measurement but the cached-prefix one starts from an empty KV cache, as the
    // peer's (llama-bench, llama-batched-bench) do: with a unified cache, cells kept by the
    // earlier runs' prompts would otherwise be attended (masked) by every batch.
    b.clear_prefix_cache().map_err(engine_err)?;
    // Prefill: a fresh 512-token prompt. Decode: 128 greedy tokens from a one-token prompt in
    // an empty context — the conditions of llama-bench's pp512 and tg128.
    let p = run_req(b, tokens(b, &format!("pd{run}"), a.prompt_tokens)?, 1)?;
    let prefill_tok_s = p.timings.prefill_tok_s(&p.usage);
    b.clear_prefix_cache().map_err(engine_err)?;
    let g = run_req(b, tokens(b, &format!("d{run}"), 1)?, a.gen_tokens)?;
    let decode_tok_s = g.timings.decode_tok_s(&g.usage);
    // Time to first token: a fresh 1000-token prefix + question, then the same prefix with
    // another question (the prefix comes from the KV cache).
    let prefix = tokens(b, &format!("ttft{run}"), a.prefix_tokens)?;
    let q1 = b.tokenize(" Question: how do I reset my password?", false, false).map_err(engine_err)?;
    let q2 = b.tokenize(" Question: what does the Business plan cost?", false, false).map_err(engine_err)?;
    let first = run_req(b, [prefix.clone(), q1].concat(), 1)?;
    let second = run_req(b, [prefix, q2].concat(), 1)?;
    if second.usage.cached_tokens < a.prefix_tokens.saturating_sub(1) {
        tracing::warn!(cached = second.usage.cached_tokens, "prefix was not reused");
    }
    // Aggregate: N concurrent sequences, 128 tokens each, from an empty cache.
    b.clear_prefix_cache().map_err(engine_err)?;
    let reqs: Vec<GenerateRequest> = (0..a.streams)
        .map(|i| {
            Ok(GenerateRequest {
                max_tokens: a.gen_tokens,
                ignore_eos: true,
                ..GenerateRequest::tokens(tokens(b, &format!("agg{run}-{i}"), 64)?)
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let t0 = Instant::now();
    let results = b.generate_batch(&reqs);
    let wall = t0.elapsed().as_secs_f64();
    let mut generated = 0;
    for r in results {
        generated += r.map_err(engine_err)?.usage.completion_tokens;
    }
    Ok(RunFigures {
        prefill_tok_s,
        decode_tok_s,
        ttft_no_cache_ms: first.timings.time_to_first_token_ms,
        ttft_cached_prefix_ms: second.timings.time_to_first_token_ms,
        aggregate_tok_s: generated as f64 / wall,
    })
}

/// Runs `trident bench`.
pub fn run(args: BenchArgs, ctx: &Context) -> anyhow::Result<()> {
    let BenchWhat::Llm(a) = args.what;
    if a.runs == 0 || a.streams == 0 || a.prompt_tokens < 8 || a.gen_tokens < 2 {
        return Err(crate::bad_input!("--runs and --streams must be ≥ 1, --prompt-tokens ≥ 8, --gen-tokens ≥ 2"));
    }
    let mut margs = a.model.clone();
    let need = (a.prompt_tokens + a.gen_tokens).max(a.prefix_tokens + 64).max(64 + a.gen_tokens) + 16;
    margs.ctx = Some(margs.ctx.unwrap_or(0).max(need));
    let b = load_model(&margs, a.streams.max(2), ctx)?;
    let threads = margs.threads.unwrap_or(ctx.config.engine.threads);
    let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
    if !ctx.json {
        eprintln!("benchmarking {} ({} threads): 1 warm-up + {} runs", b.info().path.display(), threads, a.runs);
    }
    one_run(&b, &a, usize::MAX).context("warm-up run")?;
    let mut all = Vec::new();
    for r in 0..a.runs {
        let f = one_run(&b, &a, r)?;
        if !ctx.json {
            eprintln!(
                "run {}: prefill {:.1} tok/s, decode {:.2} tok/s, ttft {:.0} ms / cached {:.0} ms, {}-stream {:.1} tok/s",
                r + 1, f.prefill_tok_s, f.decode_tok_s, f.ttft_no_cache_ms, f.ttft_cached_prefix_ms, a.streams, f.aggregate_tok_s
            );
        }
        all.push(f);
    }
    let m = |f: fn(&RunFigures) -> f64| median(all.iter().map(f).collect());
    let report = Report {
        model: b.info().path.display().to_string(),
        architecture: b.info().architecture.clone(),
        threads,
        runs: a.runs,
        prompt_tokens: a.prompt_tokens,
        gen_tokens: a.gen_tokens,
        prefix_tokens: a.prefix_tokens,
        streams: a.streams,
        median: RunFigures {
            prefill_tok_s: m(|f| f.prefill_tok_s),
            decode_tok_s: m(|f| f.decode_tok_s),
            ttft_no_cache_ms: m(|f| f.ttft_no_cache_ms),
            ttft_cached_prefix_ms: m(|f| f.ttft_cached_prefix_ms),
            aggregate_tok_s: m(|f| f.aggregate_tok_s),
        },
        all_runs: all,
        peak_rss_mib: peak_rss_mib(),
    };
    if let Some(out) = &a.out {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(out, text + "\n").with_context(|| format!("writing {}", out.display()))?;
    }
    if ctx.json {
        crate::output::print_json(&report)?;
    } else {
        let r = &report.median;
        println!("model            {} ({})", report.model, report.architecture);
        println!("threads          {}", report.threads);
        println!("prefill          {:.1} tok/s ({} tokens)", r.prefill_tok_s, report.prompt_tokens);
        println!("decode           {:.2} tok/s ({} tokens)", r.decode_tok_s, report.gen_tokens);
        println!("ttft, no cache   {:.0} ms ({}-token prefix)", r.ttft_no_cache_ms, report.prefix_tokens);
        println!("ttft, cached     {:.0} ms", r.ttft_cached_prefix_ms);
        println!("aggregate        {:.1} tok/s ({} streams)", r.aggregate_tok_s, report.streams);
        println!("peak RSS         {:.0} MiB", report.peak_rss_mib);
        println!("(medians of {} runs)", report.runs);
    }
    Ok(())
}
