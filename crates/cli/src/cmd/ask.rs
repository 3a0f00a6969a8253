//! `trident ask`: answer a question from a knowledge base, with citations.

use crate::cmd::generate::{ModelArgs, load_model};
use crate::cmd::kb::{FilterArgs, KbName, open_existing};
use crate::config::Context;
use anyhow::Result;
use trident_rag::{AnswerConfig, EngineGenerator, Generator, KbOptions};

/// Arguments of `trident ask`.
#[derive(Debug, clap::Args)]
pub struct AskArgs {
    /// The question.
    pub question: String,
    #[command(flatten)]
    pub kb: KbName,
    #[command(flatten)]
    pub filters: FilterArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub answering: AnswerArgs,
    /// LoRA adapter applied to the answer (RAG + LoRA): a stored adapter NAME[@VERSION][:SCALE]
    /// (`trident lora list`) or a GGUF-LoRA file PATH[:SCALE].
    #[arg(long = "adapter", value_name = "NAME[@VERSION][:SCALE]")]
    pub rag_adapter: Option<String>,
    /// Do not call a model: answer with the best-matching sentence of the sources (extractive).
    #[arg(long)]
    pub no_model: bool,
}

/// Answering settings shared by `ask` and `eval rag`.
#[derive(Debug, Clone, clap::Args)]
pub struct AnswerArgs {
    /// Chunks retrieved (default: `[rag] k`).
    #[arg(long)]
    pub k: Option<usize>,
    /// Relevance threshold (0..1) of the best chunk: below it the answer is "I don't know",
    /// without calling the model (default: `[rag] refusal_threshold`).
    #[arg(long, alias = "min-evidence")]
    pub refusal_threshold: Option<f32>,
    /// Most tokens generated.
    #[arg(long, default_value_t = 160)]
    pub max_new_tokens: usize,
    /// Personal-data values never masked (the organisation's own contacts: a value or
    /// `@domain`; repeatable). Values published in everyone-readable documents are kept anyway.
    #[arg(long = "pii-allow", value_name = "VALUE")]
    pub pii_allow: Vec<String>,
}

impl AnswerArgs {
    /// The answering configuration (flags over `[rag]` settings).
    pub fn config(&self, ctx: &Context) -> Result<AnswerConfig> {
        let k = self.k.unwrap_or(ctx.config.rag.k as usize);
        if k == 0 || k > 50 {
            return Err(crate::bad_input!("--k must be 1..=50"));
        }
        let t = self.refusal_threshold.unwrap_or(ctx.config.rag.refusal_threshold as f32);
        if !(0.0..=1.0).contains(&t) {
            return Err(crate::bad_input!("--refusal-threshold must be between 0 and 1"));
        }
        Ok(AnswerConfig { k, refusal_threshold: t, max_new_tokens: self.max_new_tokens.max(1), pii_allow: self.pii_allow.clone(), ..AnswerConfig::default() })
    }
}

/// Loads the model named by the flags (and the adapter: a stored adapter `NAME[@VERSION][:SCALE]`
/// or a GGUF-LoRA file `PATH[:SCALE]`) as the RAG answerer.
pub fn load_generator(model: &ModelArgs, adapter: Option<&str>, ctx: &Context) -> Result<EngineGenerator> {
    let backend = load_model(model, 1, ctx)?;
    let adapter = adapter.map(|spec| super::lora::load_adapter_into(&backend, spec, ctx)).transpose()?;
    let mut g = EngineGenerator::new(backend);
    if let Some(a) = adapter {
        g = g.with_loaded_adapter(a);
    }
    Ok(g)
}

/// Runs `trident ask`.
pub fn run(args: AskArgs, ctx: &Context) -> Result<()> {
    if args.question.trim().is_empty() {
        return Err(crate::bad_input!("the question is empty"));
    }
    let cfg = args.answering.config(ctx)?;
    let kb = open_existing(ctx, &args.kb.kb, KbOptions::default())?;
    let req = args.filters.request(&args.question, cfg.k)?;
    // Loading first reports a missing model or adapter before any retrieval work.
    let generator = if args.no_model { None } else { Some(load_generator(&args.model, args.rag_adapter.as_deref(), ctx)?) };
    let a = trident_rag::answer::answer(&kb, &args.question, &req, generator.as_ref().map(|g| g as &dyn Generator), &cfg)?;
    if ctx.json {
        let citations: Vec<_> = a
            .citations
            .iter()
            .map(|c| {
                serde_json::json!({"n": c.n, "source": c.source, "title": c.title, "version": c.version, "version_label": c.version_label,
                    "section": c.section, "page": c.page, "chunk_id": c.chunk_id, "score": c.score})
            })
            .collect();
        return crate::output::print_json(&serde_json::json!({
            "answer": a.answer, "citations": citations, "refused": a.refused, "reason": a.reason,
            "timings": {"retrieve_ms": a.timings.retrieve_ms, "generate_ms": a.timings.generate_ms}
        }));
    }
    println!("{}", a.answer);
    if !a.citations.is_empty() {
        println!();
        println!("Sources:");
        for c in &a.citations {
            let label = c.version_label.as_deref().map(|l| format!(", {l}")).unwrap_or_default();
            let section = if c.section.is_empty() { String::new() } else { format!(" § {}", c.section) };
            println!("[{}] {} (v{}{label}){section} — {}", c.n, c.title, c.version, c.source);
        }
    }
    Ok(())
}
