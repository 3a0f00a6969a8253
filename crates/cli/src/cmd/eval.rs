//! `trident eval`: evaluation (`eval rag` for knowledge bases).

use crate::cmd::ask::{AnswerArgs, load_generator};
use crate::cmd::generate::ModelArgs;
use crate::cmd::kb::open_existing;
use crate::config::Context;
use anyhow::Result;
use std::path::PathBuf;
use trident_rag::eval::{EvalConfig, load_questions};
use trident_rag::{Generator, KbOptions};

/// Arguments of `trident eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    #[command(subcommand)]
    command: EvalCommand,
}

#[derive(Debug, clap::Subcommand)]
enum EvalCommand {
    /// Retrieval and answer quality of a knowledge base over a questions file.
    Rag(RagEvalArgs),
}

#[derive(Debug, clap::Args)]
struct RagEvalArgs {
    /// Knowledge base name.
    #[arg(long)]
    kb: String,
    /// Questions (JSON lines: id, question, lang, groups, expect, answers, forbidden, sources).
    #[arg(long)]
    questions: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    answering: AnswerArgs,
    /// LoRA adapter for the answers: a GGUF-LoRA file, PATH[:SCALE].
    #[arg(long = "adapter", value_name = "NAME[:SCALE]")]
    rag_adapter: Option<String>,
    /// Do not call a model (extractive answers).
    #[arg(long)]
    no_model: bool,
    /// Sources (relative to the docs root) whose personal data the guard masks: their strings
    /// are reported apart from leaks (repeatable).
    #[arg(long = "pii-exempt", value_name = "SOURCE")]
    pii_exempt: Vec<String>,
}

/// Runs `trident eval`.
pub fn run(args: EvalArgs, ctx: &Context) -> Result<()> {
    let EvalCommand::Rag(a) = args.command;
    let cfg = EvalConfig { answer: a.answering.config(ctx)?, pii_exempt_sources: a.pii_exempt.clone() };
    let questions = load_questions(&a.questions)?;
    let kb = open_existing(ctx, &a.kb, KbOptions::default())?;
    let generator = if a.no_model { None } else { Some(load_generator(&a.model, a.rag_adapter.as_deref(), ctx)?) };
    let json = ctx.json;
    let report = trident_rag::eval::run(&kb, &questions, generator.as_ref().map(|g| g as &dyn Generator), &cfg, &mut |i, r| {
        if !json {
            eprintln!("[{}/{}] {} {} {}", i + 1, questions.len(), r.id, if r.correct { "ok" } else { "FAIL" }, r.answer.replace('\n', " ").chars().take(100).collect::<String>());
        }
    })?;
    if json {
        return crate::output::print_json(&report);
    }
    println!("questions          {}", report.questions);
    println!("recall@{}           {:.3}", report.k, report.recall_at_k);
    println!("MRR                {:.3}", report.mrr);
    println!("answer accuracy    {:.3}", report.answer_accuracy);
    println!("citation rate      {:.3}", report.citation_rate);
    println!("correct refusals   {:.3}", report.correct_refusal_rate);
    println!("unknown → I don't know {:.3}", report.unknown_rate);
    println!("forbidden leaks    {} (+{} in sources exempted with --pii-exempt)", report.forbidden_leaks, report.pii_leaks_pending_guard);
    println!("latency ms p50/p95/max {}/{}/{} (retrieval {}/{}/{})", report.latency_ms[0], report.latency_ms[1], report.latency_ms[2], report.retrieve_ms[0], report.retrieve_ms[1], report.retrieve_ms[2]);
    println!("generator          {}", report.generator);
    Ok(())
}
