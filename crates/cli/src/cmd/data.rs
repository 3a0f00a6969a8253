//! `trident data check|prepare`: validate, anonymise, deduplicate and split training datasets.

use crate::config::Context;
use std::path::PathBuf;
use trident_guard::pii::{MaskStyle, PiiKind};
use trident_lora::data::{self, FieldMap, InputFormat, Options, Report};

/// Arguments of `trident data`.
#[derive(Debug, clap::Args)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Debug, clap::Subcommand)]
enum DataCommand {
    /// Validate a dataset and report every problem (file, line, field) without writing
    /// anything. Exit code 2 when any row is rejected.
    Check(CommonArgs),
    /// Validate, anonymise personal data, deduplicate and split into DIR/train.jsonl,
    /// DIR/heldout.jsonl and DIR/report.json (written atomically).
    Prepare(PrepareArgs),
}

#[derive(Debug, clap::Args)]
struct CommonArgs {
    /// Input file: JSONL (question/answer, instruction/input/output or messages) or CSV.
    file: PathBuf,
    /// Input format: auto, qa, instruction, messages, csv.
    #[arg(long, default_value = "auto")]
    format: String,
    /// Field/column mapping, e.g. `question=Вопрос,answer=Ответ,category=Тема`.
    #[arg(long)]
    map: Option<String>,
    /// Reject samples estimated above this many tokens (0: no limit). The estimate is
    /// conservative; the trainer re-checks with the model's tokenizer.
    #[arg(long, default_value_t = 4096)]
    max_tokens: usize,
    /// Share of rows held out for evaluation, in [0, 1).
    #[arg(long, default_value_t = 0.1)]
    heldout: f64,
    /// Seed of the train/held-out split.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Questions at or above this Jaccard similarity are near-duplicates (kept, split together).
    #[arg(long, default_value_t = 0.8)]
    near_dup: f64,
    /// Keep exact duplicates instead of removing them.
    #[arg(long)]
    keep_duplicates: bool,
    /// Warn when one category holds more than this share of the rows.
    #[arg(long, default_value_t = 0.5)]
    balance_warn: f64,
    /// Personal data to mask: `default` (all but names), `all`, `none`, or a list such as
    /// `phone,email,card,passport,inn,snils,ogrn,iban,ip,name`.
    #[arg(long, default_value = "default")]
    pii: String,
    /// Placeholders: `typed` ([PHONE]) or `pseudonym` ([PHONE_1], numbered per row).
    #[arg(long, default_value = "typed")]
    pii_style: String,
    /// Detector confidence threshold, 0..1.
    #[arg(long, default_value_t = trident_guard::pii::DEFAULT_MIN_CONFIDENCE)]
    pii_min_confidence: f32,
    /// Values to keep although detected: `@domain` for all e-mails there, or exact values
    /// (the organisation's own contacts). Repeat or separate with commas.
    #[arg(long, value_delimiter = ',')]
    allow: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct PrepareArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Output directory (created, or replaced if it holds a previous prepared dataset).
    #[arg(long)]
    out: PathBuf,
}

fn lora_err(e: trident_lora::LoraError) -> anyhow::Error {
    if e.is_user_error() { crate::bad_input!("{e}") } else { anyhow::Error::new(e) }
}

fn options(a: &CommonArgs) -> anyhow::Result<Options> {
    let pii_kinds = if a.pii.trim().eq_ignore_ascii_case("none") {
        Default::default()
    } else {
        PiiKind::parse_list(&a.pii).map_err(|e| crate::bad_input!("--pii: {e}"))?
    };
    let pii_style = MaskStyle::parse(&a.pii_style)
        .ok_or_else(|| crate::bad_input!("--pii-style {:?}: expected typed or pseudonym", a.pii_style))?;
    Ok(Options {
        format: InputFormat::parse(&a.format).map_err(lora_err)?,
        map: match &a.map {
            Some(m) => FieldMap::parse(m).map_err(lora_err)?,
            None => FieldMap::default(),
        },
        max_tokens: (a.max_tokens > 0).then_some(a.max_tokens),
        heldout: a.heldout,
        seed: a.seed,
        near_dup_threshold: a.near_dup,
        keep_duplicates: a.keep_duplicates,
        balance_warn_share: a.balance_warn,
        pii_kinds,
        pii_style,
        pii_min_confidence: a.pii_min_confidence,
        pii_allow: a.allow.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
    })
}

/// Runs `trident data`.
pub fn run(args: DataArgs, ctx: &Context) -> anyhow::Result<()> {
    match args.command {
        DataCommand::Check(a) => {
            let opts = options(&a)?;
            let prepared = data::check(&a.file, &opts).map_err(lora_err)?;
            let report = prepared.report;
            if ctx.json {
                crate::output::print_json(&report)?;
            } else {
                print_summary(&report, None);
            }
            if report.counts.rejected > 0 {
                return Err(crate::bad_input!(
                    "{}: {} row(s) rejected (see above; `prepare` would skip them and list them in report.json)",
                    a.file.display(),
                    report.counts.rejected
                ));
            }
            Ok(())
        }
        DataCommand::Prepare(p) => {
            let opts = options(&p.common)?;
            let report = data::prepare(&p.common.file, &p.out, &opts).map_err(lora_err)?;
            if ctx.json {
                crate::output::print_json(&report)?;
            } else {
                print_summary(&report, Some(&p.out));
            }
            Ok(())
        }
    }
}

fn print_summary(r: &Report, out: Option<&std::path::Path>) {
    let c = &r.counts;
    println!(
        "{} ({}, {} rows): kept {}, fixed {}, rejected {}, duplicates removed {}",
        r.source.path, r.source.format, c.rows_read, c.kept, c.fixed, c.rejected, c.duplicates_removed
    );
    let a = &r.anonymization;
    if a.kinds.is_empty() {
        println!("personal data: NOT masked (--pii none)");
    } else {
        let found: Vec<String> = a.findings_by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let found = if found.is_empty() { "none found".to_string() } else { found.join(", ") };
        println!("personal data masked: {found} (in {} rows)", a.rows_with_findings);
        if !a.allowed_by_kind.is_empty() {
            let kept: Vec<String> = a.allowed_by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
            println!("kept by --allow: {}", kept.join(", "));
        }
    }
    println!(
        "near-duplicate question pairs: {} (Jaccard ≥ {}); questions with different answers: {}",
        r.dedup.near_pairs_total,
        r.dedup.near_threshold,
        r.dedup.conflicting_answers.len()
    );
    let cats: Vec<String> = r
        .balance
        .categories
        .iter()
        .map(|(name, s)| format!("{name} {:.0}% ({}: {}+{})", s.share * 100.0, s.count, s.train, s.heldout))
        .collect();
    println!("categories (rows: train+held-out): {}", cats.join(", "));
    println!("split (seed {}, held-out {}): train {}, held-out {}, {} groups", r.split.seed, r.split.heldout_ratio, c.train, c.heldout, r.split.groups);
    for w in &r.warnings {
        println!("warning: {w}");
    }
    const SHOWN: usize = 20;
    for rej in r.rejected.iter().take(SHOWN) {
        println!("rejected: {rej}");
    }
    if r.rejected.len() > SHOWN {
        println!("… and {} more rejected rows (all listed in --json / report.json)", r.rejected.len() - SHOWN);
    }
    if let Some(out) = out {
        println!(
            "wrote {}/{{train.jsonl,heldout.jsonl,report.json}}; dataset sha256 {}",
            out.display(),
            r.dataset_sha256.as_deref().unwrap_or("-")
        );
    }
}
