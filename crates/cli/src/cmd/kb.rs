//! `trident kb`: ingest files into a knowledge base, sync it with its folders, search it.

use crate::config::Context;
use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use trident_rag::kb::{FileStatus, IngestReport, Progress, SearchRequest, SourceSpec};
use trident_rag::{AccessMap, ChunkConfig, Embedder, KbOptions, KnowledgeBase};

/// Arguments of `trident kb`.
#[derive(Debug, clap::Args)]
pub struct KbArgs {
    #[command(subcommand)]
    command: KbCommand,
}

#[derive(Debug, clap::Subcommand)]
enum KbCommand {
    /// Ingest files and folders (PDF, DOCX, HTML, Markdown, TXT, CSV) into a knowledge base.
    Ingest(IngestArgs),
    /// Re-ingest changed files and drop deleted ones, for every folder ingested before.
    Sync(SyncArgs),
    /// Search a knowledge base as an asker with the given groups.
    Search(SearchArgs),
    /// List documents and their versions.
    Versions(KbName),
    /// List knowledge bases.
    List,
    /// Answer a question from a knowledge base, with citations (same as `trident ask`).
    Ask(crate::cmd::ask::AskArgs),
}

/// `--kb NAME`.
#[derive(Debug, Clone, clap::Args)]
pub struct KbName {
    /// Knowledge base name (a folder under $TRIDENT_HOME/kb).
    #[arg(long, default_value = "default")]
    pub kb: String,
}

#[derive(Debug, clap::Args)]
struct IngestArgs {
    /// Files or folders to ingest.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    kb: KbName,
    /// Access groups for every file (default: readable by everyone, `*`).
    #[arg(long)]
    groups: Option<String>,
    /// Metadata for every file, `key=value` (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    meta: Vec<String>,
    /// Access map: JSON object of folder (relative to each PATH) → groups.
    #[arg(long, value_name = "FILE.json")]
    access: Option<PathBuf>,
    #[command(flatten)]
    chunking: ChunkArgs,
}

/// Chunking and limits.
#[derive(Debug, Clone, clap::Args)]
pub struct ChunkArgs {
    /// Smallest chunk a heading may close, in model tokens.
    #[arg(long, default_value_t = 500)]
    pub chunk_min: usize,
    /// Largest chunk, in model tokens (shrunk to the embedding model's window).
    #[arg(long, default_value_t = 1200)]
    pub chunk_max: usize,
    /// Tokens repeated between consecutive chunks.
    #[arg(long, default_value_t = 100)]
    pub chunk_overlap: usize,
    /// Largest file accepted, in MiB.
    #[arg(long, default_value_t = 64)]
    pub max_file_mb: u64,
}

impl ChunkArgs {
    fn options(&self) -> KbOptions {
        let mut o = KbOptions::default();
        o.chunk = ChunkConfig { min_tokens: self.chunk_min, max_tokens: self.chunk_max, overlap_tokens: self.chunk_overlap };
        o.limits.max_file_bytes = self.max_file_mb.saturating_mul(1 << 20);
        o
    }
}

#[derive(Debug, clap::Args)]
struct SyncArgs {
    #[command(flatten)]
    kb: KbName,
    /// Keep watching: sync again every --interval seconds until interrupted.
    #[arg(long)]
    watch: bool,
    /// Seconds between syncs with --watch.
    #[arg(long, default_value_t = 5)]
    interval: u64,
    #[command(flatten)]
    chunking: ChunkArgs,
}

/// Retrieval filters shared by `kb search` and `ask`.
#[derive(Debug, Clone, clap::Args)]
pub struct FilterArgs {
    /// The asker's groups (default: only documents readable by everyone).
    #[arg(long)]
    pub as_groups: Option<String>,
    /// Search the versions in force on this date (YYYY-MM-DD) instead of the current ones.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub as_of: Option<String>,
    /// Search this version number (with --doc: of that document).
    #[arg(long)]
    pub version: Option<i64>,
    /// Only this document id.
    #[arg(long)]
    pub doc: Option<String>,
    /// Only documents in this language (ru, en).
    #[arg(long)]
    pub lang: Option<String>,
    /// Only documents whose metadata has key=value (repeatable).
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
}

impl FilterArgs {
    /// Builds a search request.
    pub fn request(&self, text: &str, k: usize) -> Result<SearchRequest> {
        let groups = match &self.as_groups {
            Some(g) => trident_rag::access::parse_groups(g).map_err(|e| crate::bad_input!("--as-groups: {e}"))?,
            None => Vec::new(),
        };
        let mut req = SearchRequest::new(text, groups, k);
        req.as_of = self.as_of.as_deref().map(trident_rag::kb::parse_as_of).transpose()?;
        req.version = self.version;
        req.doc = self.doc.clone();
        req.lang = self.lang.clone();
        req.meta = parse_kv(&self.filter, "--filter")?.into_iter().collect();
        Ok(req)
    }
}

#[derive(Debug, clap::Args)]
struct SearchArgs {
    /// The query.
    query: String,
    #[command(flatten)]
    kb: KbName,
    /// Hits to return.
    #[arg(long, default_value_t = 5)]
    k: usize,
    #[command(flatten)]
    filters: FilterArgs,
}

fn parse_kv(items: &[String], flag: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for it in items {
        let (k, v) = it.split_once('=').ok_or_else(|| crate::bad_input!("{flag} {it:?}: expected key=value"))?;
        if k.trim().is_empty() {
            return Err(crate::bad_input!("{flag} {it:?}: empty key"));
        }
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// The folder of knowledge base `name`.
pub fn kb_dir(ctx: &Context, name: &str) -> Result<PathBuf> {
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.')) || name.starts_with('.') {
        return Err(crate::bad_input!("bad knowledge base name {name:?} (letters, digits, - _ .)"));
    }
    Ok(ctx.home.join("kb").join(name))
}

/// The embedding model named by `[rag] embedder` (`TRIDENT_RAG_EMBEDDER`): a catalogue name
/// (`e5`, `minilm`), an e5 container file, a BERT safetensors folder, or an OpenAI-compatible
/// endpoint URL (`http…/v1#model@dim`). A KB records the model it was built with and refuses
/// another (`KnowledgeBase::open`), so indexing and search always embed alike.
pub fn embedder_for(ctx: &Context) -> Result<Arc<dyn Embedder>> {
    let spec = ctx.config.rag.embedder.trim();
    let user = |e: trident_rag::trident_embed::EmbedError| -> anyhow::Error {
        if e.is_user_error() { crate::bad_input!("embedding model {spec:?}: {e}") } else { anyhow::Error::new(e).context(format!("embedding model {spec:?}")) }
    };
    if spec.starts_with("http://") || spec.starts_with("https://") {
        // `URL#model@dim`: the endpoint cannot tell its dimension before the first call.
        let (url, rest) = spec.split_once('#').ok_or_else(|| crate::bad_input!("rag.embedder {spec:?}: write an endpoint as URL#MODEL@DIM"))?;
        let (model, dim) = rest.rsplit_once('@').ok_or_else(|| crate::bad_input!("rag.embedder {spec:?}: write an endpoint as URL#MODEL@DIM"))?;
        let dim: usize = dim.parse().map_err(|_| crate::bad_input!("rag.embedder {spec:?}: bad dimension {dim:?}"))?;
        let e = trident_rag::trident_embed::OpenAiEmbedder::new(trident_rag::trident_embed::OpenAiConfig::new(url, model, dim)).map_err(user)?;
        return Ok(Arc::new(e));
    }
    let path = {
        let p = Path::new(spec);
        if p.exists() { p.to_path_buf() } else { ctx.registry()?.resolve(spec).map_err(|e| crate::bad_input!("embedding model {spec:?}: {e} (run `trident models fetch`)"))? }
    };
    let t = std::time::Instant::now();
    let e: Arc<dyn Embedder> = if path.is_dir() {
        Arc::new(trident_rag::trident_embed::BertEmbedder::load(&path).map_err(user)?)
    } else {
        Arc::new(trident_rag::trident_embed::E5Embedder::load(&path).map_err(user)?)
    };
    tracing::debug!(model = e.id(), ms = t.elapsed().as_millis() as u64, "embedder loaded");
    Ok(e)
}

/// Opens an existing KB (an error naming the KB when it does not exist).
pub fn open_existing(ctx: &Context, name: &str, opts: KbOptions) -> Result<KnowledgeBase> {
    let dir = kb_dir(ctx, name)?;
    if !dir.join("kb.db").exists() {
        return Err(crate::bad_input!("knowledge base {name:?} does not exist (create it with `trident kb ingest PATH --kb {name}`)"));
    }
    Ok(KnowledgeBase::open(&dir, embedder_for(ctx)?, opts)?)
}

/// A progress bar on stderr, hidden when stderr is not a terminal or with --json.
fn progress_bar(ctx: &Context) -> ProgressBar {
    if ctx.json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} files  {msg}  {per_sec}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb
}

fn run_with_progress(ctx: &Context, f: impl FnOnce(&mut dyn FnMut(Progress)) -> trident_rag::Result<IngestReport>) -> Result<IngestReport> {
    let pb = progress_bar(ctx);
    let start = std::time::Instant::now();
    let report = f(&mut |p| match p {
        Progress::Start { files } => pb.set_length(files as u64),
        Progress::File { report, chunks_total } => {
            if report.status != FileStatus::Removed {
                pb.inc(1);
            }
            let secs = start.elapsed().as_secs_f64().max(1e-3);
            pb.set_message(format!("{chunks_total} chunks ({:.1} chunks/s)", chunks_total as f64 / secs));
            if report.status == FileStatus::Skipped {
                pb.suspend(|| eprintln!("skipped {}", report.reason.as_deref().unwrap_or(&report.path)));
            }
        }
    });
    pb.finish_and_clear();
    Ok(report?)
}

fn print_report(ctx: &Context, kb: &str, report: &IngestReport) -> Result<()> {
    if ctx.json {
        return crate::output::print_json(report);
    }
    for f in &report.files {
        match f.status {
            FileStatus::Added => println!(
                "added    {}  → {} v{} ({} chunks){}",
                f.path,
                f.doc_id.as_deref().unwrap_or("?"),
                f.version.unwrap_or(0),
                f.chunks,
                f.reason.as_deref().map(|r| format!(" [{r}]")).unwrap_or_default()
            ),
            FileStatus::Removed => println!("removed  {}", f.path),
            FileStatus::GroupsUpdated => println!("groups   {}", f.path),
            FileStatus::Skipped => println!("SKIPPED  {}", f.reason.as_deref().unwrap_or(&f.path)),
            FileStatus::Unchanged => {}
        }
    }
    println!(
        "kb {kb}: {} added, {} unchanged, {} removed, {} skipped; {} chunks in {:.1}s",
        report.count(FileStatus::Added),
        report.count(FileStatus::Unchanged),
        report.count(FileStatus::Removed),
        report.count(FileStatus::Skipped),
        report.chunks,
        report.elapsed_ms as f64 / 1000.0
    );
    Ok(())
}

/// Runs `trident kb`.
pub fn run(args: KbArgs, ctx: &Context) -> Result<()> {
    match args.command {
        KbCommand::Ingest(a) => {
            let dir = kb_dir(ctx, &a.kb.kb)?;
            let groups = a.groups.as_deref().map(trident_rag::access::parse_groups).transpose()?;
            let access = a.access.as_deref().map(AccessMap::load).transpose()?;
            let meta = parse_kv(&a.meta, "--meta")?;
            for p in &a.paths {
                if !p.exists() {
                    return Err(crate::bad_input!("{}: no such file or folder", p.display()));
                }
            }
            let specs = a.paths.iter().map(|p| SourceSpec { path: p.clone(), groups: groups.clone(), meta: meta.clone(), access: access.clone() }).collect();
            let mut kb = KnowledgeBase::open(&dir, embedder_for(ctx)?, a.chunking.options())?;
            let report = run_with_progress(ctx, |p| kb.ingest(specs, p))?;
            print_report(ctx, &a.kb.kb, &report)
        }
        KbCommand::Sync(a) => {
            let mut kb = open_existing(ctx, &a.kb.kb, a.chunking.options())?;
            loop {
                let report = run_with_progress(ctx, |p| kb.sync(p))?;
                let changed = report.files.iter().any(|f| f.status != FileStatus::Unchanged);
                if !a.watch || changed {
                    print_report(ctx, &a.kb.kb, &report)?;
                }
                if !a.watch {
                    return Ok(());
                }
                std::thread::sleep(std::time::Duration::from_secs(a.interval.max(1)));
            }
        }
        KbCommand::Search(a) => {
            if a.k == 0 || a.k > 1000 {
                return Err(crate::bad_input!("--k must be 1..=1000"));
            }
            let kb = open_existing(ctx, &a.kb.kb, KbOptions::default())?;
            let req = a.filters.request(&a.query, a.k)?;
            let hits = kb.search(&req)?;
            if ctx.json {
                return crate::output::print_json(&hits);
            }
            if hits.is_empty() {
                println!("no results");
            }
            for (i, h) in hits.iter().enumerate() {
                let label = h.label.as_deref().map(|l| format!(", {l}")).unwrap_or_default();
                let page = h.page.map(|p| format!(", p.{p}")).unwrap_or_default();
                println!("{}. [relevance {:.2}] {} (v{}{label}{page}) {}", i + 1, h.relevance, h.title, h.version, h.source);
                if !h.section.is_empty() {
                    println!("   § {}", h.section);
                }
                let snippet: String = h.text.chars().take(300).collect();
                println!("   {}", snippet.replace('\n', " "));
            }
            Ok(())
        }
        KbCommand::Versions(n) => {
            let kb = open_existing(ctx, &n.kb, KbOptions::default())?;
            let vs = kb.versions()?;
            if ctx.json {
                let rows: Vec<_> = vs
                    .iter()
                    .map(|v| serde_json::json!({"doc_id": v.doc_id, "version": v.version, "label": v.label, "title": v.title, "source": v.source,
                        "current": v.current, "valid_from": v.valid_from, "ingested_at": v.ingested_at, "groups": v.groups, "lang": v.lang, "content_hash": v.content_hash}))
                    .collect();
                return crate::output::print_json(&rows);
            }
            for v in vs {
                println!(
                    "{} {} v{}{} [{}] from {} groups {} — {}",
                    if v.current { "*" } else { " " },
                    v.doc_id,
                    v.version,
                    v.label.as_deref().map(|l| format!(" ({l})")).unwrap_or_default(),
                    v.lang,
                    v.valid_from,
                    v.groups.join(","),
                    v.source
                );
            }
            Ok(())
        }
        KbCommand::Ask(a) => crate::cmd::ask::run(a, ctx),
        KbCommand::List => {
            let root = ctx.home.join("kb");
            let mut names = Vec::new();
            if let Ok(rd) = std::fs::read_dir(&root) {
                for e in rd.flatten() {
                    if e.path().join("kb.db").exists() {
                        names.push(e.file_name().to_string_lossy().into_owned());
                    }
                }
            }
            names.sort();
            let mut rows = Vec::new();
            for n in &names {
                let kb = open_existing(ctx, n, KbOptions::default())?;
                let (files, versions, current, chunks) = kb.stats()?;
                rows.push(serde_json::json!({"kb": n, "files": files, "versions": versions, "current_versions": current, "chunks": chunks}));
            }
            if ctx.json {
                return crate::output::print_json(&rows);
            }
            for r in rows {
                println!("{}: {} files, {} documents' versions ({} current), {} chunks", r["kb"].as_str().unwrap_or(""), r["files"], r["versions"], r["current_versions"], r["chunks"]);
            }
            Ok(())
        }
    }
}
