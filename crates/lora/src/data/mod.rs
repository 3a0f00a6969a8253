//! Training datasets: read, validate, anonymise, deduplicate, balance-check and split.
//!
//! `trident data check FILE` runs [`check`]; `trident data prepare FILE --out DIR` runs
//! [`prepare`], which writes three files atomically (all three or none; an existing `DIR` is
//! only replaced when the new one is complete):
//!
//! - `DIR/train.jsonl`, `DIR/heldout.jsonl`: one [`Sample`] per line,
//!   ```json
//!   {"id":"3f0c9a6e1b2d4c58","messages":[{"role":"system","content":"…"},{"role":"user","content":"…"},{"role":"assistant","content":"…"}],"category":"тарифы","source_line":12}
//!   ```
//!   `messages` alternate user/assistant after an optional first system message and end with
//!   the assistant (the training target); `category` is a string or `null`; `id` is the first
//!   16 hex digits of the SHA-256 of the *anonymised* sample (hashing the original would let
//!   anyone brute-force a masked phone number back from the id); `source_line` is the line
//!   (CSV: record's line) in the input file. The trainer renders `messages` through the
//!   model's own chat template. Read them back with [`read_prepared`].
//! - `DIR/report.json`: a [`Report`] — counts of kept, fixed and rejected rows with file, line,
//!   field and reason; personal data found by kind; duplicates; category balance; the split;
//!   and lineage (source file and its SHA-256, options, tool version, time, output hashes).
//!
//! # Input shapes
//!
//! JSONL (one object per line; blank lines are ignored and counted):
//! - `qa`: `question` + `answer` (aliases `prompt`/`query` and `response`/`completion`),
//!   optional `system`;
//! - `instruction`: `instruction` + optional `input` + `output` (user turn = instruction, a
//!   blank line, input), optional `system`;
//! - `messages`: OpenAI-style `messages: [{role, content}]` (content a string or a list of
//!   `{type:"text", text}` parts), optional top-level `system`;
//! - any of them with an optional `category` string.
//!
//! `auto` picks the shape per row from the keys present. CSV (`,` `;` or tab, detected from
//! the header) needs a header row; columns `question`/`answer` (or `instruction`/`input`/
//! `output`), `system` and `category` are used by name, or by `--map question=col,answer=col`.
//! `--map` renames fields for JSONL too.
//!
//! # Pipeline, in order
//!
//! 1. **Validate and fix** each row ([`read`]): bad JSON, not UTF-8, missing field, wrong type,
//!    empty answer, bad role order, over-long sample → rejected with line and field; leading/
//!    trailing whitespace, CRLF, control/zero-width characters, non-NFC Unicode, an answer given
//!    as a JSON object (serialised to a string) → fixed and counted.
//! 2. **Anonymise** every message with [`trident_guard::pii::Masker`] (phones, e-mails, cards,
//!    passports, INN, SNILS, OGRN, IBAN, IP by default; names only if asked).
//! 3. **Deduplicate** ([`dedup`]): exact duplicates after normalisation are removed and listed
//!    (line and the line they repeat); the same question with different answers is kept and
//!    flagged; near-duplicate questions (MinHash over character 5-grams, Jaccard ≥ threshold)
//!    are kept, listed as line pairs, and grouped.
//! 4. **Balance** ([`Balance`]): share per category; a warning above `balance_warn_share`.
//! 5. **Split** ([`split`]): seeded, stratified by category, by groups (same or near-duplicate
//!    question), so no question is on both sides.

pub mod dedup;
pub mod read;
pub mod report;
pub mod split;
pub mod text;
mod write;

pub use report::{Balance, CategoryStats, Counts, Fix, FixKind, Rejection, RejectKind, Report};
pub use text::{HeuristicTokens, TokenCounter};

use crate::{LoraError, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use trident_guard::pii::{Detector, MaskStyle, Masker, PiiKind};

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The customer / user.
    User,
    /// The model's reply (the training target).
    Assistant,
}

impl Role {
    /// `system`, `user` or `assistant`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
}

/// One normalised training sample, as written to `train.jsonl`/`heldout.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Stable id: 16 hex digits of the SHA-256 of the anonymised messages and category.
    pub id: String,
    /// System? then user/assistant turns, ending with the assistant.
    pub messages: Vec<Message>,
    /// The category label, when the input has one.
    pub category: Option<String>,
    /// Line (CSV: record start line) of the row in the input file.
    pub source_line: usize,
}

impl Sample {
    /// All non-assistant text (system and user turns), the "question" for deduplication.
    pub fn question(&self) -> String {
        let parts: Vec<&str> =
            self.messages.iter().filter(|m| m.role != Role::Assistant).map(|m| m.content.as_str()).collect();
        parts.join("\n")
    }

    /// The text of the last assistant message.
    pub fn answer(&self) -> &str {
        self.messages.iter().rev().find(|m| m.role == Role::Assistant).map_or("", |m| m.content.as_str())
    }
}

/// The input file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// `.csv`/`.tsv` → CSV, otherwise JSONL with the shape picked per row.
    #[default]
    Auto,
    /// JSONL `question`/`answer`.
    Qa,
    /// JSONL `instruction`/`input`/`output`.
    Instruction,
    /// JSONL OpenAI-style `messages`.
    Messages,
    /// CSV with a header row.
    Csv,
}

impl InputFormat {
    /// Parses `auto|qa|instruction|messages|csv`.
    pub fn parse(s: &str) -> Result<InputFormat> {
        match s.trim().to_lowercase().as_str() {
            "auto" => Ok(InputFormat::Auto),
            "qa" => Ok(InputFormat::Qa),
            "instruction" | "alpaca" => Ok(InputFormat::Instruction),
            "messages" | "chat" | "openai" => Ok(InputFormat::Messages),
            "csv" => Ok(InputFormat::Csv),
            _ => Err(LoraError::BadOption {
                option: "--format".into(),
                reason: format!("{s:?}: expected auto, qa, instruction, messages or csv"),
            }),
        }
    }
}

/// The field names the reader understands.
pub const CANONICAL_FIELDS: &[&str] = &["question", "answer", "system", "category", "instruction", "input", "output", "messages"];

/// `--map question=col,answer=col`: which source field/column holds each canonical field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldMap(pub BTreeMap<String, String>);

impl FieldMap {
    /// Parses `canonical=source` pairs separated by commas.
    pub fn parse(s: &str) -> Result<FieldMap> {
        let mut map = BTreeMap::new();
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = |reason: String| LoraError::BadOption { option: "--map".into(), reason };
            let (k, v) = pair.split_once('=').ok_or_else(|| bad(format!("{pair:?}: expected field=column")))?;
            let (k, v) = (k.trim().to_lowercase(), v.trim().to_string());
            if !CANONICAL_FIELDS.contains(&k.as_str()) {
                return Err(bad(format!("unknown field {k:?} (known: {})", CANONICAL_FIELDS.join(", "))));
            }
            if v.is_empty() {
                return Err(bad(format!("{pair:?}: empty column name")));
            }
            if map.insert(k.clone(), v).is_some() {
                return Err(bad(format!("field {k:?} mapped twice")));
            }
        }
        Ok(FieldMap(map))
    }

    /// The source name of a canonical field (itself when not mapped).
    pub fn source<'a>(&'a self, canonical: &'a str) -> &'a str {
        self.0.get(canonical).map_or(canonical, String::as_str)
    }

    /// True when `canonical` was mapped explicitly.
    pub fn is_mapped(&self, canonical: &str) -> bool {
        self.0.contains_key(canonical)
    }
}

/// Options of [`check`] and [`prepare`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Options {
    /// Input format.
    pub format: InputFormat,
    /// Field/column mapping.
    pub map: FieldMap,
    /// Reject samples estimated above this many tokens (`None`: no limit).
    pub max_tokens: Option<usize>,
    /// Share of rows held out, in `0..1`.
    pub heldout: f64,
    /// Seed of the split.
    pub seed: u64,
    /// Jaccard similarity of questions at or above which two rows are near-duplicates.
    pub near_dup_threshold: f64,
    /// Keep exact duplicates instead of removing them (they still go to the same side).
    pub keep_duplicates: bool,
    /// Warn when one category holds more than this share of the kept rows.
    pub balance_warn_share: f64,
    /// Personal-data kinds to mask (empty: no anonymisation, with a warning in the report).
    pub pii_kinds: BTreeSet<PiiKind>,
    /// Placeholder style.
    pub pii_style: MaskStyle,
    /// Confidence threshold of the detectors.
    pub pii_min_confidence: f32,
    /// Values kept despite being detected (`@domain` or exact values), e.g. the company's own
    /// support address that replies must keep.
    pub pii_allow: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            format: InputFormat::Auto,
            map: FieldMap::default(),
            max_tokens: Some(4096),
            heldout: 0.1,
            seed: 42,
            near_dup_threshold: 0.8,
            keep_duplicates: false,
            balance_warn_share: 0.5,
            pii_kinds: PiiKind::defaults(),
            pii_style: MaskStyle::Typed,
            pii_min_confidence: trident_guard::pii::DEFAULT_MIN_CONFIDENCE,
            pii_allow: Vec::new(),
        }
    }
}

impl Options {
    /// Checks value ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |option: &str, reason: String| Err(LoraError::BadOption { option: option.into(), reason });
        if !(0.0..1.0).contains(&self.heldout) {
            return bad("--heldout", format!("{} is outside [0, 1)", self.heldout));
        }
        if !(0.0..=1.0).contains(&self.near_dup_threshold) || self.near_dup_threshold <= 0.0 {
            return bad("--near-dup", format!("{} is outside (0, 1]", self.near_dup_threshold));
        }
        if !(0.0..=1.0).contains(&self.balance_warn_share) || self.balance_warn_share <= 0.0 {
            return bad("--balance-warn", format!("{} is outside (0, 1]", self.balance_warn_share));
        }
        if self.max_tokens == Some(0) {
            return bad("--max-tokens", "must be positive".into());
        }
        Ok(())
    }

    fn masker(&self) -> Result<Masker> {
        let detector = Detector::new(self.pii_kinds.clone(), self.pii_min_confidence)?;
        Ok(Masker::new(detector, self.pii_style).with_allow(&self.pii_allow)?)
    }
}

/// The outcome of running the pipeline on a file: the split samples and the report.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Training samples, in input order.
    pub train: Vec<Sample>,
    /// Held-out samples, in input order.
    pub heldout: Vec<Sample>,
    /// What happened to every row.
    pub report: Report,
}

/// Runs the whole pipeline in memory (nothing is written) with the heuristic token counter.
pub fn check(path: &Path, options: &Options) -> Result<Prepared> {
    check_with(path, options, &HeuristicTokens)
}

/// [`check`] with a caller-supplied token counter (the trainer passes the model's tokenizer).
pub fn check_with(path: &Path, options: &Options, tokens: &dyn TokenCounter) -> Result<Prepared> {
    options.validate()?;
    let masker = options.masker()?;
    let bytes = std::fs::read(path).map_err(|source| LoraError::Read { path: path.to_path_buf(), source })?;
    let source_sha256 = hex::encode(Sha256::digest(&bytes));
    let parsed = read::parse(path, &bytes, options, tokens)?;
    let mut report = Report::new(path, &bytes, source_sha256, options, tokens.name(), parsed.format_used.clone());
    report.counts.rows_read = parsed.rows.len() + parsed.rejected.len();
    report.counts.blank_lines = parsed.blank_lines;
    report.rejected = parsed.rejected;
    report.fixes = parsed.fixes;
    report.counts.rejected = report.rejected.len();
    report.counts.fixed = report.fixes.iter().map(|f| f.line).collect::<BTreeSet<_>>().len();

    // 2. Anonymise.
    let mut samples = Vec::with_capacity(parsed.rows.len());
    for row in parsed.rows {
        let mut session = masker.session();
        let mut messages = Vec::with_capacity(row.messages.len());
        let mut any = false;
        for m in row.messages {
            let masked = session.mask(&m.content);
            any |= !masked.findings.is_empty();
            report.anonymization.record(m.role, &masked);
            messages.push(Message { role: m.role, content: masked.text });
        }
        report.anonymization.rows_with_findings += usize::from(any);
        samples.push(Sample { id: String::new(), messages, category: row.category, source_line: row.line });
    }
    report.anonymization.finish(&options.pii_kinds);

    // 3. Deduplicate.
    let dd = dedup::dedup(&samples, options.near_dup_threshold);
    report.dedup = dd.report.clone();
    let removed: BTreeSet<usize> =
        if options.keep_duplicates { BTreeSet::new() } else { dd.exact_duplicates.iter().map(|&(dup, _)| dup).collect() };
    let keep_idx: Vec<usize> = (0..samples.len()).filter(|i| !removed.contains(i)).collect();
    report.counts.duplicates_removed = removed.len();

    // Stable, unique ids over what is written.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for &i in &keep_idx {
        let base = sample_hash(&samples[i]);
        let n = seen.entry(base.clone()).or_insert(0);
        *n += 1;
        samples[i].id = if *n == 1 { base } else { format!("{base}-{n}") };
    }

    // 4. Balance and 5. split, over the kept rows.
    let groups = dd.groups_of(&keep_idx);
    let side = split::split(&samples, &keep_idx, &groups, options.heldout, options.seed);
    let mut train = Vec::new();
    let mut heldout = Vec::new();
    for (&i, &h) in keep_idx.iter().zip(&side) {
        if h { heldout.push(samples[i].clone()) } else { train.push(samples[i].clone()) }
    }
    report.counts.kept = keep_idx.len();
    report.counts.train = train.len();
    report.counts.heldout = heldout.len();
    report.balance = Balance::compute(&train, &heldout, options.balance_warn_share);
    report.split.groups = groups.iter().collect::<BTreeSet<_>>().len();
    report.finish_warnings(options);

    if report.counts.rows_read == 0 {
        return Err(LoraError::Unparseable { path: path.to_path_buf(), reason: "the file has no rows".into() });
    }
    if report.counts.kept == 0 {
        let mut first = report.rejected.first().map(|r| format!(" (first: {r})")).unwrap_or_default();
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            first.push_str("; the file looks like one JSON array: convert it to JSONL, one object per line");
        }
        return Err(LoraError::Unparseable {
            path: path.to_path_buf(),
            reason: format!("no usable rows: {} rejected{first}", report.counts.rejected),
        });
    }
    Ok(Prepared { train, heldout, report })
}

/// Reads the file, runs the pipeline and writes `out/train.jsonl`, `out/heldout.jsonl` and
/// `out/report.json` atomically. Returns the report as written.
pub fn prepare(path: &Path, out: &Path, options: &Options) -> Result<Report> {
    prepare_with(path, out, options, &HeuristicTokens)
}

/// [`prepare`] with a caller-supplied token counter.
pub fn prepare_with(path: &Path, out: &Path, options: &Options, tokens: &dyn TokenCounter) -> Result<Report> {
    let prepared = check_with(path, options, tokens)?;
    write::write_dataset(out, prepared)
}

/// Reads a prepared `train.jsonl`/`heldout.jsonl` back. Every line must be a valid
/// [`Sample`]; the first bad line is an error naming file and line.
pub fn read_prepared(path: &Path) -> Result<Vec<Sample>> {
    let text = std::fs::read_to_string(path).map_err(|source| LoraError::Read { path: path.to_path_buf(), source })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let s: Sample = serde_json::from_str(line).map_err(|e| LoraError::Unparseable {
            path: path.to_path_buf(),
            reason: format!("line {}: not a prepared sample: {e}", i + 1),
        })?;
        if s.messages.last().map(|m| m.role) != Some(Role::Assistant) {
            return Err(LoraError::Unparseable {
                path: path.to_path_buf(),
                reason: format!("line {}: the last message must be the assistant's", i + 1),
            });
        }
        out.push(s);
    }
    Ok(out)
}

/// 16 hex digits of the SHA-256 of a sample's messages and category.
fn sample_hash(s: &Sample) -> String {
    let mut h = Sha256::new();
    for m in &s.messages {
        h.update(m.role.as_str().as_bytes());
        h.update([0u8]);
        h.update(m.content.as_bytes());
        h.update([0u8]);
    }
    h.update(s.category.as_deref().unwrap_or("").as_bytes());
    hex::encode(&h.finalize()[..8])
}

#[cfg(test)]
mod tests;
