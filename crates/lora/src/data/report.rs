//! The dataset report (`report.json`): what happened to every row, and the lineage.
//!
//! The report never holds personal data: rejections name line, field and reason but not
//! content, and anonymisation is counted by kind. The one exception is
//! [`Anonymization::suggest_allow`], values masked in the *assistant's* replies of several rows
//! (an organisation's own contacts, typically), listed so the user can decide to keep them.

use super::{Options, Role, Sample};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use trident_guard::pii::{Masked, PiiKind};

/// Why a row was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectKind {
    /// The line is not valid JSON.
    BadJson,
    /// The line is not valid UTF-8.
    NotUtf8,
    /// The line is JSON but not an object.
    NotObject,
    /// The object's keys match no known shape.
    UnknownShape,
    /// A required field is missing or null.
    MissingField,
    /// A field has the wrong JSON type.
    WrongType,
    /// A required field is empty (after trimming).
    Empty,
    /// Message roles are unknown or out of order.
    BadRoles,
    /// The sample is estimated above `--max-tokens`.
    TooLong,
    /// A CSV record could not be read (bad quoting, wrong number of fields).
    BadCsv,
}

/// One rejected row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The input file.
    pub file: String,
    /// 1-based line (CSV: the record's first line).
    pub line: usize,
    /// The field at fault (`answer`, `messages[2].content` …), when one is.
    pub field: Option<String>,
    /// The kind of problem.
    pub kind: RejectKind,
    /// A human-readable reason.
    pub reason: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}:{}: {field}: {}", self.file, self.line, self.reason),
            None => write!(f, "{}:{}: {}", self.file, self.line, self.reason),
        }
    }
}

/// A kind of automatic fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FixKind {
    /// Leading/trailing whitespace removed.
    TrimmedWhitespace,
    /// Text normalised to Unicode NFC.
    UnicodeNfc,
    /// CRLF/CR line endings turned into LF.
    LineEndings,
    /// Control or zero-width characters removed.
    ControlChars,
    /// A JSON object/array answer serialised to a string.
    StringifiedJson,
    /// A list of content parts joined into one string.
    JoinedContentParts,
    /// A UTF-8 byte order mark at the start of the file removed.
    ByteOrderMark,
}

/// One fix applied to a row's field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fix {
    /// 1-based line.
    pub line: usize,
    /// The field fixed.
    pub field: String,
    /// What was done.
    pub kind: FixKind,
}

/// Row counts. `rows_read = kept + rejected + duplicates_removed`; `kept = train + heldout`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Non-blank rows in the input.
    pub rows_read: usize,
    /// Blank lines ignored.
    pub blank_lines: usize,
    /// Rows written (train + held-out).
    pub kept: usize,
    /// Rows among those read with at least one fix (kept or later removed as duplicates).
    pub fixed: usize,
    /// Rows rejected by validation.
    pub rejected: usize,
    /// Exact duplicates removed.
    pub duplicates_removed: usize,
    /// Rows in `train.jsonl`.
    pub train: usize,
    /// Rows in `heldout.jsonl`.
    pub heldout: usize,
}

/// Personal data found and masked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Anonymization {
    /// Kinds looked for.
    pub kinds: Vec<PiiKind>,
    /// Placeholder style.
    pub style: String,
    /// Confidence threshold.
    pub min_confidence: f32,
    /// Allow-list entries.
    pub allow: Vec<String>,
    /// Masked findings by kind.
    pub findings_by_kind: BTreeMap<PiiKind, usize>,
    /// Masked findings by the role of the message they were in.
    pub findings_by_role: BTreeMap<Role, usize>,
    /// Rows with at least one masked finding.
    pub rows_with_findings: usize,
    /// Findings kept because of the allow-list, by kind.
    pub allowed_by_kind: BTreeMap<PiiKind, usize>,
    /// Phones/e-mails masked in assistant replies of ≥ 3 rows: probably the organisation's
    /// own contacts, which the model should learn to give; pass them as `--allow` to keep them.
    pub suggest_allow: Vec<String>,
    #[serde(skip)]
    assistant_values: BTreeMap<String, usize>,
}

impl Anonymization {
    /// Counts one masked message.
    pub fn record(&mut self, role: Role, masked: &Masked) {
        for f in &masked.findings {
            *self.findings_by_kind.entry(f.kind).or_default() += 1;
            *self.findings_by_role.entry(role).or_default() += 1;
        }
        for f in &masked.allowed {
            *self.allowed_by_kind.entry(f.kind).or_default() += 1;
        }
        if role == Role::Assistant {
            let distinct: BTreeSet<String> = masked
                .findings
                .iter()
                .filter(|f| matches!(f.kind, PiiKind::Email | PiiKind::Phone))
                .map(|f| f.text.clone())
                .collect();
            for v in distinct {
                *self.assistant_values.entry(v).or_default() += 1;
            }
        }
    }

    /// Fills in the suggestions once every row is recorded.
    pub(super) fn finish(&mut self, kinds: &BTreeSet<PiiKind>) {
        self.kinds = kinds.iter().copied().collect();
        self.suggest_allow =
            self.assistant_values.iter().filter(|&(_, &n)| n >= 3).map(|(v, _)| v.clone()).collect();
    }
}

/// A row removed as an exact duplicate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Duplicate {
    /// The removed row's line.
    pub line: usize,
    /// The line of the first occurrence, which is kept.
    pub duplicate_of: usize,
}

/// Two rows with near-duplicate questions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NearPair {
    /// Line of the first row.
    pub a: usize,
    /// Line of the second row.
    pub b: usize,
    /// Jaccard similarity of their questions' character 5-gram sets.
    pub jaccard: f64,
}

/// What deduplication found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DedupReport {
    /// Exact duplicates (same messages after normalisation and anonymisation), with the line
    /// they repeat. Removed unless `keep_duplicates`.
    pub exact_duplicates: Vec<Duplicate>,
    /// Lines sharing one question but with different answers (kept, same split side).
    pub conflicting_answers: Vec<Vec<usize>>,
    /// Near-duplicate threshold used.
    pub near_threshold: f64,
    /// Number of near-duplicate pairs.
    pub near_pairs_total: usize,
    /// The pairs (the first 1000, by line).
    pub near_pairs: Vec<NearPair>,
}

/// Per-category counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CategoryStats {
    /// Kept rows.
    pub count: usize,
    /// Share of kept rows.
    pub share: f64,
    /// Rows in train.
    pub train: usize,
    /// Rows held out.
    pub heldout: usize,
}

/// Category balance of the kept rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Balance {
    /// By category (`(none)` for rows without one).
    pub categories: BTreeMap<String, CategoryStats>,
    /// The largest share.
    pub max_share: f64,
    /// The category with the largest share.
    pub max_category: Option<String>,
    /// The warning threshold.
    pub warn_share: f64,
}

/// The label used for rows without a category.
pub const NO_CATEGORY: &str = "(none)";

impl Balance {
    /// Counts categories over both sides of the split.
    pub fn compute(train: &[Sample], heldout: &[Sample], warn_share: f64) -> Balance {
        let mut categories: BTreeMap<String, CategoryStats> = BTreeMap::new();
        for (side, held) in [(train, false), (heldout, true)] {
            for s in side {
                let c = categories.entry(s.category.clone().unwrap_or_else(|| NO_CATEGORY.into())).or_default();
                c.count += 1;
                if held { c.heldout += 1 } else { c.train += 1 }
            }
        }
        let total = (train.len() + heldout.len()).max(1) as f64;
        let mut max_share = 0.0;
        let mut max_category = None;
        for (name, c) in &mut categories {
            c.share = c.count as f64 / total;
            if c.share > max_share {
                max_share = c.share;
                max_category = Some(name.clone());
            }
        }
        Balance { categories, max_share, max_category, warn_share }
    }
}

/// The split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitInfo {
    /// Seed.
    pub seed: u64,
    /// Requested held-out share.
    pub heldout_ratio: f64,
    /// Groups (rows with the same or near-duplicate question) that were split as units.
    pub groups: usize,
    /// How strata were formed.
    pub stratified_by: String,
}

/// The input file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// Path as given.
    pub path: String,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: usize,
    /// The format used (`csv`, or the JSONL shapes seen: `qa`, `instruction`, `messages`).
    pub format: String,
}

/// One written file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Rows.
    pub rows: usize,
    /// SHA-256 of its bytes.
    pub sha256: String,
}

/// The tool that produced the dataset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tool {
    /// `trident`.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The token counter used for `max_tokens`.
    pub token_counter: String,
}

/// `report.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// SHA-256 of `train.jsonl` bytes followed by `heldout.jsonl` bytes (set by `prepare`).
    pub dataset_sha256: Option<String>,
    /// When the report was made (RFC 3339, UTC).
    pub created_at: String,
    /// Tool and version.
    pub tool: Tool,
    /// Input file.
    pub source: Source,
    /// Options used.
    pub options: serde_json::Value,
    /// Row counts.
    pub counts: Counts,
    /// Rejected rows with reasons.
    pub rejected: Vec<Rejection>,
    /// Fixes applied.
    pub fixes: Vec<Fix>,
    /// Fixes by kind.
    pub fixes_by_kind: BTreeMap<FixKind, usize>,
    /// Personal data.
    pub anonymization: Anonymization,
    /// Duplicates.
    pub dedup: DedupReport,
    /// Category balance.
    pub balance: Balance,
    /// The split.
    pub split: SplitInfo,
    /// Written files (set by `prepare`).
    pub outputs: BTreeMap<String, OutputFile>,
    /// Things the user should look at.
    pub warnings: Vec<String>,
}

impl Report {
    pub(super) fn new(
        path: &Path,
        bytes: &[u8],
        sha256: String,
        options: &Options,
        token_counter: String,
        format: String,
    ) -> Report {
        Report {
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            tool: Tool { name: "trident".into(), version: env!("CARGO_PKG_VERSION").into(), token_counter },
            source: Source { path: path.display().to_string(), sha256, bytes: bytes.len(), format },
            options: serde_json::to_value(options).unwrap_or(serde_json::Value::Null),
            anonymization: Anonymization {
                style: format!("{:?}", options.pii_style).to_lowercase(),
                min_confidence: options.pii_min_confidence,
                allow: options.pii_allow.clone(),
                ..Anonymization::default()
            },
            split: SplitInfo {
                seed: options.seed,
                heldout_ratio: options.heldout,
                groups: 0,
                stratified_by: "category".into(),
            },
            ..Report::default()
        }
    }

    pub(super) fn finish_warnings(&mut self, options: &Options) {
        for f in &self.fixes {
            *self.fixes_by_kind.entry(f.kind).or_default() += 1;
        }
        let mut w = Vec::new();
        if self.counts.rejected > 0 {
            w.push(format!("{} row(s) rejected; see `rejected` for file, line and reason", self.counts.rejected));
        }
        if options.pii_kinds.is_empty() {
            w.push("anonymisation is OFF: personal data in the input is written as is".into());
        }
        if !self.anonymization.suggest_allow.is_empty() {
            w.push(format!(
                "masked in the assistant's replies of 3+ rows (organisation contacts?): {}; pass --allow to keep them",
                self.anonymization.suggest_allow.join(", ")
            ));
        }
        if self.balance.max_share > self.balance.warn_share {
            w.push(format!(
                "category {:?} holds {:.0}% of the rows (warning above {:.0}%): the model may learn to answer it by default",
                self.balance.max_category.as_deref().unwrap_or(NO_CATEGORY),
                self.balance.max_share * 100.0,
                self.balance.warn_share * 100.0
            ));
        }
        if options.heldout > 0.0 {
            for (name, c) in &self.balance.categories {
                if c.heldout == 0 {
                    w.push(format!("category {name:?} has no held-out rows ({} row(s) in all)", c.count));
                }
            }
        }
        if !self.dedup.conflicting_answers.is_empty() {
            w.push(format!(
                "{} question(s) appear with different answers; see dedup.conflicting_answers",
                self.dedup.conflicting_answers.len()
            ));
        }
        self.warnings = w;
    }
}
