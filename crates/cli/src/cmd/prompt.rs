//! `trident prompt`: the prompt library — specs, immutable versions, labels, render, run, lint,
//! and a dataset benchmark.

use crate::config::Context;
use crate::output::{print_json, print_table};
use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use trident_engine::{Backend, LlamaBackend, LlamaConfig};
use trident_prompt::compile::{CompileInput, compile};
use trident_prompt::fewshot::{Lexical, load_examples, select};
use trident_prompt::lint::{BackendCounter, EstimateCounter, Price, TokenCounter, lint};
use trident_prompt::run::{EngineGenerator, gen_options};
use trident_prompt::sources::{HttpSource, csv_rows, json_rows, merge_source};
use trident_prompt::spec::{ExampleSet, Example};
use trident_prompt::vars::{Values, parse_flags};
use trident_prompt::{Category, Format, PromptRepo, PromptSpec, library};

/// Arguments of `trident prompt`.
#[derive(Debug, Args)]
pub struct PromptArgs {
    #[command(subcommand)]
    command: PromptCommand,
}

#[derive(Debug, Subcommand)]
enum PromptCommand {
    /// Save a spec file (TOML/YAML) as a new immutable version.
    Save {
        /// The spec file.
        file: PathBuf,
        /// Version message.
        #[arg(short, long, default_value = "")]
        message: String,
        /// Author (default: $USER).
        #[arg(long)]
        author: Option<String>,
    },
    /// List stored prompts (or the built-in library with --library).
    List {
        /// Only this category (HR, Data, Marketing, Management, Sales, Text, Finance, Support, Legal).
        #[arg(long)]
        category: Option<String>,
        /// Only prompts with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// List the built-in library instead of the store.
        #[arg(long)]
        library: bool,
    },
    /// Search stored prompts (or the library) by words in name, title, description, tags, task.
    Search {
        /// Words to look for.
        query: String,
        /// Only this category.
        #[arg(long)]
        category: Option<String>,
        /// Only prompts with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Search the built-in library instead of the store.
        #[arg(long)]
        library: bool,
    },
    /// Print a stored version's text exactly as saved (NAME, NAME@N, NAME@LABEL).
    Show {
        /// The reference.
        reference: String,
        /// Write the text to this file instead of stdout.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// The versions of a prompt, newest first.
    Log {
        /// Prompt name.
        name: String,
    },
    /// A unified diff between two versions (NAME@N NAME@M, labels allowed).
    Diff {
        /// From.
        a: String,
        /// To.
        b: String,
    },
    /// Show labels, move a label (`--to VERSION|LABEL|latest`), or show its history.
    Label {
        /// Prompt name.
        name: String,
        /// Label name (production, staging, …).
        label: Option<String>,
        /// Point the label at this version, another label, or `latest` (rollback = point back).
        #[arg(long)]
        to: Option<String>,
        /// Why the label moves.
        #[arg(short, long, default_value = "")]
        message: String,
        /// Show the label's move history.
        #[arg(long)]
        history: bool,
        /// Author (default: $USER).
        #[arg(long)]
        author: Option<String>,
    },
    /// Show the exact messages a prompt compiles to (and the template text with --model).
    Render {
        /// A spec file, a stored reference (NAME, NAME@N, NAME@LABEL) or a library name.
        spec: String,
        #[command(flatten)]
        vars: VarArgs,
        /// Also render through this model's chat template.
        #[arg(long)]
        model: Option<String>,
    },
    /// Run a prompt with the local model.
    Run {
        /// A spec file, a stored reference or a library name.
        spec: String,
        #[command(flatten)]
        vars: VarArgs,
        #[command(flatten)]
        generation: GenArgs,
    },
    /// Check a prompt: empty fields, variables, format conflicts, context budget, tokens, cost.
    Lint {
        /// A spec file, a stored reference or a library name.
        spec: String,
        #[command(flatten)]
        vars: VarArgs,
        /// Count tokens with this model's tokenizer and template (else an estimate).
        #[arg(long)]
        model: Option<String>,
        /// Context limit (default: [engine] ctx).
        #[arg(long)]
        ctx: Option<usize>,
        /// Price per 1,000 prompt tokens (for the cost estimate).
        #[arg(long, default_value_t = 0.0)]
        price_in: f64,
        /// Price per 1,000 answer tokens.
        #[arg(long, default_value_t = 0.0)]
        price_out: f64,
    },
    /// Import the built-in starter library into the store (all or nothing).
    ImportLibrary {
        /// Author (default: $USER).
        #[arg(long)]
        author: Option<String>,
    },
    /// Run a prompt over a JSONL dataset; report JSON validity and accuracy of one field.
    Bench {
        /// A spec file, a stored reference or a library name.
        spec: String,
        /// The JSONL dataset.
        #[arg(long)]
        data: PathBuf,
        /// Dataset field holding the input.
        #[arg(long, default_value = "question")]
        input_field: String,
        /// Variable the input goes into (default: the spec's first variable).
        #[arg(long)]
        var: Option<String>,
        /// Dataset field holding the expected label.
        #[arg(long, default_value = "category")]
        expect_field: String,
        /// Key of the answer JSON compared with the expected label.
        #[arg(long, default_value = "category")]
        answer_key: String,
        /// Only the first N rows.
        #[arg(long)]
        limit: Option<usize>,
        /// Write per-row results (JSONL) here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// JSONL example set for dynamic few-shot (fields `question`/`answer` unless the spec's
        /// `example_set` says otherwise).
        #[arg(long)]
        examples: Option<PathBuf>,
        /// How many dynamic few-shot examples.
        #[arg(long)]
        k: Option<usize>,
        #[command(flatten)]
        generation: GenArgs,
    },
}

/// Where variable values come from.
#[derive(Debug, Args)]
struct VarArgs {
    /// A value: NAME=VALUE, NAME.FIELD=VALUE, NAME=@FILE (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// A JSON, JSONL or CSV file of values (one render per row).
    #[arg(long)]
    vars_file: Option<PathBuf>,
    /// Use the spec's example values for variables not given.
    #[arg(long)]
    example: bool,
    /// Fetch a variable from an HTTP JSON source: NAME=URL (or just URL for an object of variables).
    #[arg(long, value_name = "[NAME=]URL")]
    http: Option<String>,
    /// Header for the HTTP source, `Name: value` (repeatable); `Name: env:VAR` reads the value
    /// from an environment variable (keeps tokens out of shell history).
    #[arg(long = "http-header", value_name = "NAME: VALUE")]
    http_headers: Vec<String>,
    /// HTTP timeout in seconds.
    #[arg(long, default_value_t = 10.0)]
    http_timeout: f64,
    /// JSON pointer selecting part of the HTTP response (`/data/client`).
    #[arg(long)]
    http_pointer: Option<String>,
    /// JSONL example set for dynamic few-shot (overrides the spec's `example_set`).
    #[arg(long)]
    examples: Option<PathBuf>,
    /// How many dynamic few-shot examples.
    #[arg(long)]
    k: Option<usize>,
}

/// Generation options.
#[derive(Debug, Args)]
struct GenArgs {
    /// Model: catalogue name, registered name or GGUF path (default: [engine] model).
    #[arg(long)]
    model: Option<String>,
    /// LoRA adapter (GGUF) to apply.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Knowledge base to fill the data with cited chunks from.
    #[arg(long)]
    kb: Option<String>,
    /// Sampling temperature (default: the spec's, else 0 = greedy).
    #[arg(long)]
    temperature: Option<f32>,
    /// Sampling seed.
    #[arg(long)]
    seed: Option<u64>,
    /// JSON retries with the validation error (default: the spec's strategy, 1).
    #[arg(long)]
    retries: Option<u32>,
    /// Draft, then refine.
    #[arg(long)]
    two_stage: bool,
    /// Verify each claim against the sources.
    #[arg(long)]
    self_check: bool,
}

fn author(a: Option<String>) -> String {
    a.or_else(|| std::env::var("USER").ok()).filter(|s| !s.is_empty()).unwrap_or_else(|| "unknown".into())
}

fn category(c: Option<&str>) -> Result<Option<Category>> {
    match c {
        None => Ok(None),
        Some(s) => Category::parse(s).map(Some).ok_or_else(|| {
            crate::bad_input!(
                "unknown category {s:?}; one of: {}",
                Category::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
            )
        }),
    }
}

/// Loads a spec from a file path, the store (NAME, NAME@N, NAME@LABEL) or the library.
fn load_spec(spec: &str, ctx: &Context) -> Result<(PromptSpec, String)> {
    let path = Path::new(spec);
    if Format::from_path(path).is_some() && (path.exists() || spec.contains('/')) {
        let (s, _, _) = PromptSpec::load(path)?;
        return Ok((s, path.display().to_string()));
    }
    let repo = PromptRepo::open(&ctx.home)?;
    match repo.get(spec) {
        Ok(p) => Ok((p.spec, format!("{}@{}", p.row.name, p.row.version))),
        Err(trident_prompt::PromptError::Store(trident_store::StoreError::NotFound { .. })) if !spec.contains('@') => {
            let e = library::get(spec).map_err(|_| crate::bad_input!("no prompt {spec:?} in the store, the library, or as a .toml/.yaml file"))?;
            Ok((e.spec, format!("library/{}", e.path)))
        }
        Err(e) => Err(e.into()),
    }
}

fn header_value(raw: &str) -> Result<(String, String)> {
    let (k, v) = raw.split_once(':').ok_or_else(|| crate::bad_input!("--http-header {raw:?}: expected `Name: value`"))?;
    let v = v.trim();
    let v = match v.strip_prefix("env:") {
        Some(var) => std::env::var(var).map_err(|_| crate::bad_input!("--http-header {}: environment variable {var} is not set", k.trim()))?,
        None => v.to_string(),
    };
    Ok((k.trim().to_string(), v))
}

/// The value rows for a spec from flags, files and HTTP (one row unless a file has many).
fn value_rows(spec: &PromptSpec, args: &VarArgs) -> Result<Vec<Values>> {
    let mut base = if args.example { spec.example_values() } else { Values::new() };
    if let Some(h) = &args.http {
        let (var, url) = match h.split_once('=') {
            Some((v, u)) if !v.contains('/') && !v.contains(':') => (Some(v), u),
            _ => (None, h.as_str()),
        };
        let mut src = HttpSource::new(url);
        src.timeout = Duration::from_secs_f64(args.http_timeout.max(0.001));
        src.pointer = args.http_pointer.clone();
        for raw in &args.http_headers {
            src.headers.push(header_value(raw)?);
        }
        merge_source(spec, &mut base, &src, var)?;
    }
    let rows = match &args.vars_file {
        None => vec![Values::new()],
        Some(p) => match p.extension().and_then(|e| e.to_str()) {
            Some("csv") => csv_rows(p, spec)?,
            Some("json" | "jsonl") => json_rows(p)?,
            _ => return Err(crate::bad_input!("--vars-file {}: use a .json, .jsonl or .csv file", p.display())),
        },
    };
    let flags = parse_flags(&spec.variables, &args.vars)?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let mut v = base.clone();
            v.extend(row);
            v.extend(flags.clone());
            v
        })
        .collect())
}

/// The example pool for dynamic few-shot, if any.
fn example_pool(spec: &PromptSpec, args: &VarArgs) -> Result<Option<(Vec<Example>, usize)>> {
    let set = match (&args.examples, &spec.example_set) {
        (Some(p), s) => {
            let mut set = s.clone().unwrap_or(ExampleSet { path: String::new(), k: 3, input_field: "question".into(), output_field: "answer".into() });
            set.path = p.display().to_string();
            set
        }
        (None, Some(s)) => s.clone(),
        (None, None) => return Ok(None),
    };
    let k = args.k.unwrap_or(set.k);
    Ok(Some((load_examples(Path::new(&set.path), &set)?, k)))
}

/// The text dynamic few-shot compares against: the data field rendered.
fn query_text(spec: &PromptSpec, values: &Values) -> String {
    let v = trident_prompt::vars::resolve(&spec.variables, values).unwrap_or_default();
    trident_prompt::vars::substitute(&spec.data, &v, "data").unwrap_or_default()
}

fn compile_row(spec: &PromptSpec, values: &Values, pool: &Option<(Vec<Example>, usize)>) -> Result<trident_prompt::Compiled> {
    let mut input = CompileInput::default();
    if let Some((pool, k)) = pool {
        input.extra_examples = select(&Lexical, &query_text(spec, values), pool, *k)?;
    }
    Ok(compile(spec, values, &input)?)
}

fn load_backend(ctx: &Context, model: Option<&str>) -> Result<LlamaBackend> {
    let path = ctx.resolve_model(model)?;
    let cfg = LlamaConfig::default().with_ctx(ctx.config.engine.ctx as usize).with_threads(ctx.config.engine.threads);
    LlamaBackend::load(&path, &cfg).with_context(|| format!("loading model {}", path.display()))
}

fn adapter_ref(backend: &LlamaBackend, adapter: &Option<PathBuf>) -> Result<Option<trident_engine::AdapterRef>> {
    match adapter {
        None => Ok(None),
        Some(p) => {
            backend.load_adapter("adapter", p)?;
            Ok(Some(trident_engine::AdapterRef::new("adapter", 1.0)))
        }
    }
}

fn strategy(spec: &PromptSpec, g: &GenArgs) -> trident_prompt::spec::Strategy {
    let mut s = spec.strategy.clone();
    if let Some(r) = g.retries {
        s.json_retries = r;
    }
    s.two_stage |= g.two_stage;
    s.self_check |= g.self_check;
    s
}

/// Runs `trident prompt`.
pub fn run(args: PromptArgs, ctx: &Context) -> Result<()> {
    match args.command {
        PromptCommand::Save { file, message, author: a } => {
            let (_, text, format) = PromptSpec::load(&file)?;
            let mut repo = PromptRepo::open(&ctx.home)?;
            let saved = repo.save(&text, format, &file.display().to_string(), &author(a), &message)?;
            if ctx.json {
                print_json(&saved)?;
            } else if saved.created {
                println!("saved {}@{} ({})", saved.name, saved.version, &saved.content_hash[..12]);
            } else {
                println!("unchanged: {}@{} already has this content", saved.name, saved.version);
            }
        }
        PromptCommand::List { category: c, tag, library: lib } => list_or_search("", c.as_deref(), tag.as_deref(), lib, ctx)?,
        PromptCommand::Search { query, category: c, tag, library: lib } => list_or_search(&query, c.as_deref(), tag.as_deref(), lib, ctx)?,
        PromptCommand::Show { reference, out } => {
            let repo = PromptRepo::open(&ctx.home)?;
            let p = repo.get(&reference)?;
            match out {
                Some(path) => {
                    std::fs::write(&path, &p.row.content).with_context(|| format!("writing {}", path.display()))?;
                    if ctx.json {
                        print_json(&json!({"written": path, "name": p.row.name, "version": p.row.version}))?;
                    } else {
                        println!("wrote {}@{} to {}", p.row.name, p.row.version, path.display());
                    }
                }
                None if ctx.json => print_json(&json!({"version": p.row, "spec": p.spec}))?,
                None => print!("{}", p.row.content),
            }
        }
        PromptCommand::Log { name } => {
            let repo = PromptRepo::open(&ctx.home)?;
            let log = repo.log(&name)?;
            let labels = repo.labels(&name)?;
            if ctx.json {
                let rows: Vec<Value> = log
                    .iter()
                    .map(|r| {
                        json!({"version": r.version, "author": r.author, "message": r.message, "created_at": r.created_at,
                               "content_hash": r.content_hash,
                               "labels": labels.iter().filter(|l| l.version == r.version).map(|l| &l.label).collect::<Vec<_>>()})
                    })
                    .collect();
                print_json(&rows)?;
            } else {
                let mut rows = vec![vec!["VERSION".into(), "CREATED".into(), "AUTHOR".into(), "HASH".into(), "LABELS".into(), "MESSAGE".into()]];
                for r in &log {
                    let l: Vec<&str> = labels.iter().filter(|l| l.version == r.version).map(|l| l.label.as_str()).collect();
                    rows.push(vec![
                        format!("{}@{}", r.name, r.version),
                        r.created_at.clone(),
                        r.author.clone(),
                        r.content_hash[..12].to_string(),
                        l.join(","),
                        r.message.clone(),
                    ]);
                }
                print_table(&rows);
            }
        }
        PromptCommand::Diff { a, b } => {
            let repo = PromptRepo::open(&ctx.home)?;
            let d = repo.diff(&a, &b)?;
            if ctx.json {
                print_json(&json!({"from": a, "to": b, "identical": d.is_empty(), "diff": d}))?;
            } else if d.is_empty() {
                println!("no differences");
            } else {
                print!("{d}");
            }
        }
        PromptCommand::Label { name, label, to, message, history, author: a } => {
            let mut repo = PromptRepo::open(&ctx.home)?;
            if let (Some(label), Some(to)) = (&label, &to) {
                let ev = repo.set_label(&name, label, to, &author(a), &message)?;
                if ctx.json {
                    print_json(&ev)?;
                } else {
                    match ev.from_version {
                        Some(f) if f == ev.to_version => println!("{name}@{label} already points at version {f}"),
                        Some(f) => println!("{name}@{label}: {f} -> {}", ev.to_version),
                        None => println!("{name}@{label} -> {}", ev.to_version),
                    }
                }
            } else if history || label.is_some() {
                let h = repo.label_history(&name, label.as_deref())?;
                if ctx.json {
                    print_json(&h)?;
                } else {
                    let mut rows = vec![vec!["AT".into(), "LABEL".into(), "FROM".into(), "TO".into(), "AUTHOR".into(), "MESSAGE".into()]];
                    for e in h {
                        rows.push(vec![
                            e.at,
                            e.label,
                            e.from_version.map(|v| v.to_string()).unwrap_or("-".into()),
                            e.to_version.to_string(),
                            e.author,
                            e.message,
                        ]);
                    }
                    print_table(&rows);
                }
            } else if to.is_some() {
                return Err(crate::bad_input!("--to needs a label name: trident prompt label {name} LABEL --to VERSION"));
            } else {
                repo.log(&name)?;
                let labels = repo.labels(&name)?;
                if ctx.json {
                    print_json(&labels)?;
                } else if labels.is_empty() {
                    println!("{name} has no labels");
                } else {
                    for l in labels {
                        println!("{}@{} -> {} (since {})", l.name, l.label, l.version, l.updated_at);
                    }
                }
            }
        }
        PromptCommand::Render { spec, vars, model } => {
            let (spec, origin) = load_spec(&spec, ctx)?;
            let pool = example_pool(&spec, &vars)?;
            let backend = match &model {
                Some(m) => Some(load_backend(ctx, Some(m))?),
                None => None,
            };
            let mut out = Vec::new();
            for values in value_rows(&spec, &vars)? {
                let c = compile_row(&spec, &values, &pool)?;
                let text = match &backend {
                    Some(b) => Some(b.render_chat(&c.messages, true)?),
                    None => None,
                };
                out.push((c, text));
            }
            if ctx.json {
                let rows: Vec<Value> = out
                    .iter()
                    .map(|(c, t)| json!({"prompt": origin, "messages": c.messages, "values": c.values, "stop": c.stop,
                                         "max_answer_tokens": c.max_answer_tokens, "schema": c.schema, "text": t}))
                    .collect();
                print_json(&if rows.len() == 1 { rows[0].clone() } else { Value::Array(rows) })?;
            } else {
                for (i, (c, t)) in out.iter().enumerate() {
                    if out.len() > 1 {
                        println!("=== row {} ===", i + 1);
                    }
                    match t {
                        Some(t) => print!("{t}"),
                        None => {
                            for m in &c.messages {
                                println!("--- {} ---\n{}\n", m.role, m.content);
                            }
                        }
                    }
                }
            }
        }
        PromptCommand::Lint { spec, vars, model, ctx: limit, price_in, price_out } => {
            let (spec, origin) = load_spec(&spec, ctx)?;
            let rows = value_rows(&spec, &vars)?;
            let values = if vars.vars.is_empty() && vars.vars_file.is_none() && vars.http.is_none() && !vars.example {
                None
            } else {
                rows.into_iter().next()
            };
            let backend = match &model {
                Some(m) => Some(load_backend(ctx, Some(m))?),
                None => None,
            };
            let limit = Some(limit.unwrap_or(ctx.config.engine.ctx as usize));
            let price = (price_in > 0.0 || price_out > 0.0).then_some(Price { input_per_1k: price_in, output_per_1k: price_out });
            let report = match &backend {
                Some(b) => {
                    let counter = BackendCounter(b);
                    let render = |c: &trident_prompt::Compiled| -> trident_prompt::Result<String> { Ok(b.render_chat(&c.messages, true)?) };
                    lint(&spec, values.as_ref(), &counter as &dyn TokenCounter, Some(&render), limit, price)
                }
                None => lint(&spec, values.as_ref(), &EstimateCounter, None, limit, price),
            };
            if ctx.json {
                print_json(&json!({"prompt": origin, "report": report}))?;
            } else {
                println!("{origin}");
                for f in &report.findings {
                    println!("  {:?} [{}] {}: {}", f.severity, f.code, f.field, f.message);
                }
                if report.findings.is_empty() {
                    println!("  no findings");
                }
                match report.prompt_tokens {
                    Some(n) => println!(
                        "  prompt tokens: {n} ({}) + up to {} answer tokens; context limit {}",
                        if report.tokens_exact { "model tokenizer" } else { "estimate, no model given" },
                        report.max_answer_tokens,
                        report.context_limit.map(|l| l.to_string()).unwrap_or("-".into())
                    ),
                    None => println!("  prompt tokens: not counted (the prompt does not render)"),
                }
                if let Some(c) = report.cost_per_1000_calls {
                    println!("  estimated cost per 1,000 calls: {c:.2}");
                }
            }
            if report.has_errors() {
                return Err(crate::bad_input!("lint found errors in {origin}"));
            }
        }
        PromptCommand::ImportLibrary { author: a } => {
            let mut repo = PromptRepo::open(&ctx.home)?;
            let saved = repo.import_library(&author(a))?;
            if ctx.json {
                print_json(&saved)?;
            } else {
                let new = saved.iter().filter(|s| s.created).count();
                println!("imported {} library prompts ({new} new versions, {} unchanged)", saved.len(), saved.len() - new);
            }
        }
        PromptCommand::Run { spec, vars, generation } => {
            let (spec, origin) = load_spec(&spec, ctx)?;
            if generation.kb.is_some() {
                return Err(crate::bad_input!(
                    "--kb is not wired into `prompt run` yet (the RAG crate will provide a trident_prompt::Retriever); use `trident ask`"
                ));
            }
            let pool = example_pool(&spec, &vars)?;
            let rows = value_rows(&spec, &vars)?;
            let compiled: Vec<_> = rows.iter().map(|v| compile_row(&spec, v, &pool)).collect::<Result<_>>()?;
            let backend = load_backend(ctx, generation.model.as_deref())?;
            let adapter = adapter_ref(&backend, &generation.adapter)?;
            let g = EngineGenerator { backend: &backend, adapter };
            let strat = strategy(&spec, &generation);
            let mut results = Vec::new();
            for c in &compiled {
                let opts = gen_options(c, generation.temperature.or(spec.temperature), generation.seed);
                let t = Instant::now();
                let r = trident_prompt::run::run(&g, c, &strat, &opts)?;
                results.push((r, t.elapsed().as_secs_f64()));
            }
            if ctx.json {
                let rows: Vec<Value> = results.iter().map(|(r, s)| json!({"prompt": origin, "result": r, "seconds": s})).collect();
                print_json(&if rows.len() == 1 { rows[0].clone() } else { Value::Array(rows) })?;
            } else {
                for (r, _) in &results {
                    println!("{}", r.answer);
                    if r.valid == Some(false) {
                        eprintln!(
                            "warning: the answer does not satisfy the output JSON Schema after {} attempt(s): {}",
                            r.attempts.len(),
                            r.attempts.last().map(|a| a.errors.join("; ")).unwrap_or_default()
                        );
                    }
                    if let Some(sc) = &r.self_check {
                        for c in &sc.unsupported {
                            eprintln!("unsupported claim: {c}");
                        }
                    }
                }
            }
        }
        PromptCommand::Bench { spec, data, input_field, var, expect_field, answer_key, limit, out, examples, k, generation } => {
            let fields = BenchFields { input_field, var, expect_field, answer_key };
            bench(ctx, &spec, &data, &fields, limit, out.as_deref(), examples, k, &generation)?
        }
    }
    Ok(())
}

fn list_or_search(query: &str, c: Option<&str>, tag: Option<&str>, lib: bool, ctx: &Context) -> Result<()> {
    let cat = category(c)?;
    if lib {
        let hits = library::search(query, cat, tag)?;
        if ctx.json {
            let rows: Vec<Value> = hits
                .iter()
                .map(|e| json!({"name": e.spec.name, "title": e.spec.title, "category": e.spec.category, "tags": e.spec.tags,
                                "language": e.spec.language, "path": e.path}))
                .collect();
            print_json(&rows)?;
        } else {
            let mut rows = vec![vec!["NAME".into(), "CATEGORY".into(), "TITLE".into()]];
            for e in hits {
                rows.push(vec![e.spec.name, e.spec.category.map(|c| c.as_str().to_string()).unwrap_or_default(), e.spec.title]);
            }
            print_table(&rows);
        }
        return Ok(());
    }
    let repo = PromptRepo::open(&ctx.home)?;
    let hits = repo.search(query, cat, tag)?;
    if ctx.json {
        print_json(&hits)?;
    } else if hits.is_empty() {
        println!("no prompts{} (try `trident prompt import-library`)", if query.is_empty() { "" } else { " match" });
    } else {
        let mut rows = vec![vec!["NAME".into(), "LATEST".into(), "CATEGORY".into(), "LABELS".into(), "TITLE".into()]];
        for s in hits {
            let labels: Vec<String> = s.labels.iter().map(|(l, v)| format!("{l}={v}")).collect();
            rows.push(vec![s.name, s.latest.to_string(), s.category, labels.join(","), s.title]);
        }
        print_table(&rows);
    }
    Ok(())
}

/// Which dataset fields and answer key a bench compares.
struct BenchFields {
    input_field: String,
    var: Option<String>,
    expect_field: String,
    answer_key: String,
}

#[allow(clippy::too_many_arguments)]
fn bench(
    ctx: &Context,
    spec_ref: &str,
    data: &Path,
    fields: &BenchFields,
    limit: Option<usize>,
    out: Option<&Path>,
    examples: Option<PathBuf>,
    k: Option<usize>,
    generation: &GenArgs,
) -> Result<()> {
    let (input_field, expect_field, answer_key) = (fields.input_field.as_str(), fields.expect_field.as_str(), fields.answer_key.as_str());
    let (spec, origin) = load_spec(spec_ref, ctx)?;
    let var = match fields.var.as_deref() {
        Some(v) => v.to_string(),
        None => spec.variables.first().map(|v| v.name.clone()).ok_or_else(|| crate::bad_input!("{origin} declares no variables"))?,
    };
    let text = std::fs::read_to_string(data).map_err(|e| crate::bad_input!("cannot read {}: {e}", data.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).map_err(|e| crate::bad_input!("{}:{}: not JSON: {e}", data.display(), i + 1))?;
        let input = v.get(input_field).and_then(Value::as_str).ok_or_else(|| crate::bad_input!("{}:{}: no string field {input_field:?}", data.display(), i + 1))?;
        let expect = v.get(expect_field).and_then(Value::as_str).map(str::to_string);
        rows.push((input.to_string(), expect));
    }
    if let Some(n) = limit {
        rows.truncate(n);
    }
    let pool_args = VarArgs {
        vars: vec![],
        vars_file: None,
        example: false,
        http: None,
        http_headers: vec![],
        http_timeout: 10.0,
        http_pointer: None,
        examples,
        k,
    };
    let pool = example_pool(&spec, &pool_args)?;
    let backend = load_backend(ctx, generation.model.as_deref())?;
    let adapter = adapter_ref(&backend, &generation.adapter)?;
    let g = EngineGenerator { backend: &backend, adapter };
    let strat = strategy(&spec, generation);
    let mut sink = match out {
        Some(p) => Some(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?),
        None => None,
    };
    let (mut valid_first, mut valid_final, mut correct, mut labelled, mut retries) = (0usize, 0usize, 0usize, 0usize, 0usize);
    let started = Instant::now();
    for (i, (input, expect)) in rows.iter().enumerate() {
        let mut values = Values::new();
        values.insert(var.clone(), Value::String(input.clone()));
        let c = compile_row(&spec, &values, &pool)?;
        let opts = gen_options(&c, generation.temperature.or(spec.temperature), generation.seed);
        let r = trident_prompt::run::run(&g, &c, &strat, &opts)?;
        let first_ok = r.attempts.first().is_some_and(|a| a.errors.is_empty());
        valid_first += first_ok as usize;
        valid_final += (r.valid == Some(true)) as usize;
        retries += r.attempts.len().saturating_sub(1);
        let got = r.json.as_ref().and_then(|j| j.get(answer_key)).and_then(Value::as_str).map(str::to_string);
        let hit = expect.is_some() && got.is_some() && got == *expect;
        if expect.is_some() {
            labelled += 1;
            correct += hit as usize;
        }
        if let Some(f) = sink.as_mut() {
            use std::io::Write;
            writeln!(f, "{}", json!({"row": i + 1, "input": input, "expected": expect, "got": got, "correct": hit, "valid": r.valid, "attempts": r.attempts}))?;
        }
        if !ctx.json {
            eprintln!("[{}/{}] valid={} {}={:?} expected={:?}", i + 1, rows.len(), r.valid == Some(true), answer_key, got, expect);
        }
    }
    let n = rows.len().max(1) as f64;
    let report = json!({
        "prompt": origin,
        "data": data,
        "rows": rows.len(),
        "model": ctx.resolve_model(generation.model.as_deref())?,
        "dynamic_few_shot": pool.as_ref().map(|(p, k)| json!({"pool": p.len(), "k": k})),
        "json_valid_first_attempt": valid_first as f64 / n,
        "json_valid_after_retry": valid_final as f64 / n,
        "retries": retries,
        "accuracy": if labelled > 0 { Some(correct as f64 / labelled as f64) } else { None },
        "correct": correct,
        "seconds": started.elapsed().as_secs_f64(),
    });
    if ctx.json {
        print_json(&report)?;
    } else {
        println!(
            "{origin} on {} rows: JSON valid {:.1}% first try, {:.1}% after retry; {answer_key} accuracy {}; {:.0} s",
            rows.len(),
            100.0 * valid_first as f64 / n,
            100.0 * valid_final as f64 / n,
            if labelled > 0 { format!("{:.1}% ({correct}/{labelled})", 100.0 * correct as f64 / labelled as f64) } else { "-".into() },
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
