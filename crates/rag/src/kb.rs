//! A knowledge base on disk: the store (files, document versions, chunks, groups, vectors —
//! the record of truth; by default `kb.db`, SQLite, behind [`KbStore`]) and `index/` (the
//! retrieval index, by default `trident-search`'s tantivy BM25 + HNSW hybrid, behind
//! [`RetrievalIndex`]) in the KB's folder; ingestion, sync and ACL-filtered hybrid retrieval.
//!
//! **Write order (crash safety).** Each file is read, parsed, chunked and embedded first,
//! outside any transaction; then its version, chunks, groups, the file's sync record and an
//! "index pending" marker for the document are written as *one* unit
//! ([`KbStore::commit_version`]: one transaction). The document is then rewritten as a whole in
//! the retrieval index, and only after that index commits are the marker cleared and the chunks
//! flagged `indexed` ([`KbStore::mark_indexed`]). A `kill -9` therefore loses
//! at most the file being written (its sync record is absent, so the next run redoes exactly
//! that file) or leaves a marker, and every open re-indexes the marked documents. Chunk ids are
//! derived from (document, version, position, text), so the resumed run reaches the same final
//! state as an uninterrupted one.
//!
//! **Access groups** are part of every index query and applied inside both retrievers (BM25
//! and vectors); term statistics for the evidence score are counted over the asker's readable
//! chunks only, so an unreadable chunk never leaves the store, is never counted and never
//! shifts a score.

use crate::access::AccessMap;
use crate::chunk::{ChunkConfig, chunk_blocks};
use crate::embed::{Embedder, EmbedderTokens, dot};
use crate::index::{DocChunks, EmbeddedIndex, RetrievalIndex};
use crate::parse::{self, Limits};
use crate::text::{TokenCounter, detect_lang, index_terms};
use crate::{RagError, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use trident_store::kb::{ChunkRecord, FileRecord, KbStore, SearchChunk, SqliteKbStore, VersionCommit, VersionRecord};

/// Options of a knowledge base.
#[derive(Debug, Clone, Copy, Default)]
pub struct KbOptions {
    /// Chunk sizes (shrunk to the embedder's window).
    pub chunk: ChunkConfig,
    /// File-size and decompression limits.
    pub limits: Limits,
}

/// One ingested root (a file or folder) with its access settings; stored so `sync` can redo it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceSpec {
    /// Absolute path of the file or folder.
    pub path: PathBuf,
    /// Groups for every file (`--groups`), unless the access map says otherwise.
    pub groups: Option<Vec<String>>,
    /// Extra metadata for every file (`--meta k=v`).
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Folder → groups, relative to `path`.
    pub access: Option<AccessMap>,
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    /// New document or new version stored.
    Added,
    /// Content unchanged: nothing done.
    Unchanged,
    /// Content unchanged, access groups updated.
    GroupsUpdated,
    /// Not ingested (unsupported, corrupt, encrypted, empty, too large…); see `reason`.
    Skipped,
    /// The file disappeared: its chunks were removed.
    Removed,
}

/// The outcome for one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// The file.
    pub path: String,
    /// What happened.
    pub status: FileStatus,
    /// Document id, when stored.
    pub doc_id: Option<String>,
    /// Version number, when stored.
    pub version: Option<i64>,
    /// Chunks written.
    pub chunks: usize,
    /// Why it was skipped, or notes (e.g. encoding).
    pub reason: Option<String>,
}

/// The outcome of an ingest or sync.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestReport {
    /// Per-file outcomes, in processing order.
    pub files: Vec<FileReport>,
    /// Chunks written in total.
    pub chunks: usize,
    /// Pages (PDF) or documents parsed.
    pub pages: usize,
    /// Wall time in milliseconds.
    pub elapsed_ms: u128,
    /// Time spent reading and parsing files, ms (pages/s = pages / this).
    pub parse_ms: u128,
    /// Time spent embedding chunks, ms (chunks/s = chunks / this).
    pub embed_ms: u128,
    /// Time spent writing the retrieval index, ms.
    pub index_ms: u128,
}

impl IngestReport {
    /// Number of files with `status`.
    pub fn count(&self, status: FileStatus) -> usize {
        self.files.iter().filter(|f| f.status == status).count()
    }
}

/// Progress events for a progress bar.
#[derive(Debug, Clone)]
pub enum Progress {
    /// The run knows how many files it will look at.
    Start {
        /// Files to process.
        files: usize,
    },
    /// One file is done.
    File {
        /// Its report.
        report: FileReport,
        /// Chunks written so far in this run.
        chunks_total: usize,
    },
}

/// A search request.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    /// The query text.
    pub text: String,
    /// The asker's groups (`*` is always added: everyone reads public documents).
    pub groups: Vec<String>,
    /// Hits to return.
    pub k: usize,
    /// Search the versions in force on this date (`YYYY-MM-DD`) instead of the current ones.
    pub as_of: Option<String>,
    /// Search this version number instead of the current ones.
    pub version: Option<i64>,
    /// Only this document.
    pub doc: Option<String>,
    /// Only this language.
    pub lang: Option<String>,
    /// Only documents whose metadata has these key = value pairs.
    pub meta: Vec<(String, String)>,
    /// Personal-data values never masked besides those published in everyone-readable
    /// documents (the organisation's own contacts: values or `@domain`s).
    pub pii_allow: Vec<String>,
}

impl SearchRequest {
    /// A request over current versions for an asker with `groups`.
    pub fn new(text: impl Into<String>, groups: Vec<String>, k: usize) -> Self {
        Self { text: text.into(), groups, k, as_of: None, version: None, doc: None, lang: None, meta: Vec::new(), pii_allow: Vec::new() }
    }
}

/// One retrieved chunk (its text, title and section already masked for personal data).
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    /// Chunk id.
    pub chunk_id: String,
    /// Fused (reciprocal-rank) score: the ranking.
    pub score: f32,
    /// How well the chunk answers the query, 0..1 (see [`relevance`]): compared with the
    /// refusal threshold.
    pub relevance: f32,
    /// Share of the query's (IDF-weighted) terms found in the chunk, 0..1.
    pub evidence: f32,
    /// BM25 score (0 when the chunk came from the vector side only).
    pub bm25: f32,
    /// Cosine similarity with the query.
    pub cosine: Option<f32>,
    /// Document id.
    pub doc_id: String,
    /// Version number.
    pub version: i64,
    /// The document's own version label.
    pub label: Option<String>,
    /// Whether this is the current version.
    pub current: bool,
    /// Title.
    pub title: String,
    /// Source path.
    pub source: String,
    /// Section (heading path).
    pub section: String,
    /// Page.
    pub page: Option<i64>,
    /// Language.
    pub lang: String,
    /// The chunk text.
    pub text: String,
    /// Access groups of the chunk (kept internal: group names are not shown to askers).
    #[serde(skip)]
    pub groups: Vec<String>,
    /// Kinds of personal data masked in `text` (`phone`, `passport` …).
    pub masked: Vec<String>,
    /// Kinds of allow-listed personal data kept in `text`.
    #[serde(skip)]
    pub kept: Vec<String>,
}

/// The relevance of a chunk to a query, 0..1: the lexical evidence, i.e. the IDF-weighted
/// share of the query's content words the chunk (with its title and section) contains, the IDF
/// counted over the asker's readable chunks only.
///
/// Calibration on the sample KB (`bench/rag.md`) showed the e5 cosine does not separate
/// answerable from unanswerable questions (unrelated Russian texts score 0.72–0.86, answering
/// passages 0.77–0.92), while the evidence does (unanswerable ≤ 0.30, answerable ≥ 0.37 except
/// cross-language pairs); so the cosine ranks (through the fusion) but does not decide.
pub fn relevance(evidence: f32) -> f32 {
    evidence.clamp(0.0, 1.0)
}

fn date_to_unix(s: &str, end_of_day: bool) -> i64 {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return t.timestamp();
    }
    match chrono::NaiveDate::parse_from_str(s.get(..10).unwrap_or(s), "%Y-%m-%d") {
        Ok(d) => {
            let t = if end_of_day { d.and_hms_opt(23, 59, 59) } else { d.and_hms_opt(0, 0, 0) };
            t.map(|t| t.and_utc().timestamp()).unwrap_or(0)
        }
        Err(_) => 0,
    }
}

/// BM25's IDF of a term in `df` of `n` chunks.
fn idf(n: u64, df: u64) -> f32 {
    (1.0 + (n as f32 - df as f32 + 0.5) / (df as f32 + 0.5)).ln()
}

/// A knowledge base.
pub struct KnowledgeBase {
    dir: PathBuf,
    store: Box<dyn KbStore>,
    embedder: Arc<dyn Embedder>,
    index: Box<dyn RetrievalIndex>,
    opts: KbOptions,
    /// Documents written to the store but not yet to the index (flushed in batches: one index
    /// commit per batch, not per file; their pending markers cover a crash in between).
    unflushed: BTreeSet<String>,
    /// Per-run timings in µs (parse, embed, index), reset by each ingest/sync.
    timing: [u128; 3],
}

/// Documents per index commit during ingestion.
const INDEX_BATCH_DOCS: usize = 64;

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A front-matter date or version label as `YYYY-MM-DD`, if it looks like a date.
fn date_like(v: &serde_json::Value) -> Option<String> {
    let s = match v {
        serde_json::Value::String(s) => s.trim().to_string(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let re = regex::Regex::new(r"^(\d{4})(?:[-.](\d{1,2}))?(?:[-.](\d{1,2}))?").expect("static regex");
    let c = re.captures(&s)?;
    let y: u32 = c[1].parse().ok()?;
    let m: u32 = c.get(2).and_then(|m| m.as_str().parse().ok()).unwrap_or(1);
    let d: u32 = c.get(3).and_then(|d| d.as_str().parse().ok()).unwrap_or(1);
    if !(1900..=2200).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(format!("{y:04}-{m:02}-{d:02}"))
}

/// Validates a `--as-of` date.
pub fn parse_as_of(s: &str) -> Result<String> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| RagError::BadInput(format!("--as-of {s:?}: expected a date YYYY-MM-DD")))?;
    Ok(s.to_string())
}

fn list_files(root: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(root)?.collect::<std::io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let ft = e.file_type()?;
        if ft.is_dir() {
            list_files(&e.path(), out)?;
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
    Ok(())
}

impl KnowledgeBase {
    /// Opens (creating) the KB in `dir`. The KB records the embedder's id and dimension on
    /// first use; opening it later with another embedder is [`RagError::EmbedderMismatch`].
    pub fn open(dir: &Path, embedder: Arc<dyn Embedder>, opts: KbOptions) -> Result<Self> {
        opts.chunk.validate()?;
        std::fs::create_dir_all(dir).map_err(|source| RagError::Io { path: dir.to_path_buf(), source })?;
        let store = SqliteKbStore::open(&dir.join("kb.db"))?;
        Self::open_with_store(dir, Box::new(store), embedder, opts)
    }

    /// Like [`KnowledgeBase::open`] with another store implementation (the embedded SQLite
    /// store is the default; a server deployment can plug in PostgreSQL by implementing
    /// [`KbStore`]). The retrieval index is the embedded one in `dir/index`.
    pub fn open_with_store(dir: &Path, mut store: Box<dyn KbStore>, embedder: Arc<dyn Embedder>, opts: KbOptions) -> Result<Self> {
        opts.chunk.validate()?;
        std::fs::create_dir_all(dir).map_err(|source| RagError::Io { path: dir.to_path_buf(), source })?;
        match (store.meta_get("embedder_id")?, store.meta_get("embedder_dim")?) {
            (Some(id), Some(dim)) => {
                let dim: usize = dim.parse().unwrap_or(0);
                if id != embedder.id() || dim != embedder.dim() {
                    return Err(RagError::EmbedderMismatch { kb: dir.to_path_buf(), stored: id, stored_dim: dim, given: embedder.id().into(), given_dim: embedder.dim() });
                }
            }
            _ => {
                store.meta_set("embedder_id", embedder.id())?;
                store.meta_set("embedder_dim", &embedder.dim().to_string())?;
            }
        }
        let index = EmbeddedIndex::open(&dir.join("index"), embedder.id(), embedder.dim())?;
        let mut kb = Self { dir: dir.to_path_buf(), store, embedder, index: Box::new(index), opts, unflushed: BTreeSet::new(), timing: [0; 3] };
        kb.reconcile_index()?;
        Ok(kb)
    }

    /// Like [`KnowledgeBase::open`] with another retrieval index implementation (which must
    /// itself refuse vectors of another embedder).
    pub fn open_with_index(dir: &Path, embedder: Arc<dyn Embedder>, index: Box<dyn RetrievalIndex>, opts: KbOptions) -> Result<Self> {
        let mut kb = Self::open(dir, embedder, opts)?;
        kb.index = index;
        kb.reconcile_index()?;
        Ok(kb)
    }

    /// The embedder's model id.
    pub fn embedder_id(&self) -> &str {
        self.embedder.id()
    }

    /// Re-indexes documents whose last write did not reach the retrieval index (a crash between
    /// the store commit and the index commit), and chunks never flagged as indexed.
    fn reconcile_index(&mut self) -> Result<()> {
        let mut docs: BTreeSet<String> = self.store.unindexed_docs()?.into_iter().collect();
        // An empty index next to a filled store (index folder deleted): rebuild it all.
        if self.index.is_empty()? {
            docs.extend(self.store.docs_with_chunks()?);
        }
        if !docs.is_empty() {
            tracing::info!(docs = docs.len(), "re-indexing documents after an interrupted write");
            self.reindex_docs(&docs.into_iter().collect::<Vec<_>>())?;
        }
        Ok(())
    }

    /// Writes the documents changed since the last flush to the retrieval index.
    fn flush_index(&mut self) -> Result<()> {
        if self.unflushed.is_empty() {
            return Ok(());
        }
        let docs: Vec<String> = std::mem::take(&mut self.unflushed).into_iter().collect();
        let t = Instant::now();
        self.reindex_docs(&docs)?;
        self.timing[2] += t.elapsed().as_micros();
        Ok(())
    }

    /// Rewrites `docs` in the retrieval index from the store (every version and chunk, the
    /// current flag, groups), then clears their pending markers and flags their chunks indexed.
    fn reindex_docs(&mut self, docs: &[String]) -> Result<()> {
        let mut out = Vec::with_capacity(docs.len());
        for doc in docs {
            let mut chunks = Vec::new();
            let mut current = None;
            for v in self.store.versions_of(doc)? {
                if v.current {
                    current = Some(v.version as u32);
                }
                let mut metadata: BTreeMap<String, String> = BTreeMap::new();
                if let serde_json::Value::Object(m) = &v.meta {
                    for (k, val) in m {
                        let val = match val {
                            serde_json::Value::String(s) => s.clone(),
                            serde_json::Value::Number(n) => n.to_string(),
                            serde_json::Value::Bool(b) => b.to_string(),
                            _ => continue,
                        };
                        // The index forbids U+001F in metadata (its key/value separator).
                        if !k.contains('\u{1f}') && !val.contains('\u{1f}') {
                            metadata.insert(k.clone(), val);
                        }
                    }
                }
                metadata.insert("lang".into(), v.lang.clone());
                metadata.insert("source".into(), v.source.clone());
                if let Some(l) = &v.label {
                    metadata.insert("version_label".into(), l.clone());
                }
                for c in self.store.chunks_of(doc, v.version)? {
                    let Some(vector) = c.vector else { continue };
                    // Title and section are searchable too: a chunk of «Тарифы 2026» matches «тариф».
                    let indexed_text =
                        if c.section.is_empty() { format!("{}\n{}", v.title, c.text) } else { format!("{}\n{}\n{}", v.title, c.section, c.text) };
                    chunks.push(trident_search::IndexChunk {
                        chunk_id: c.chunk_id,
                        doc_id: doc.clone(),
                        version: v.version as u32,
                        current: v.current,
                        text: indexed_text,
                        vector,
                        groups: v.groups.clone(),
                        lang: v.lang.clone(),
                        valid_from: date_to_unix(&v.valid_from, false),
                        ingested_at: date_to_unix(&v.ingested_at, false),
                        metadata: metadata.clone(),
                    });
                }
            }
            out.push(DocChunks { doc_id: doc.clone(), chunks, current });
        }
        self.index.replace_docs(&out)?;
        self.store.mark_indexed(docs)?;
        Ok(())
    }

    /// The KB's embedder id as recorded in an existing KB folder (None when it has none yet).
    pub fn recorded_embedder(dir: &Path) -> Result<Option<String>> {
        if !dir.join("kb.db").exists() {
            return Ok(None);
        }
        let store = SqliteKbStore::open(&dir.join("kb.db"))?;
        Ok(store.meta_get("embedder_id")?)
    }

    /// The KB's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The store (read access for reports and tests).
    pub fn store(&self) -> &dyn KbStore {
        self.store.as_ref()
    }

    /// The effective chunk sizes (after fitting the embedder's window).
    pub fn chunk_config(&self) -> ChunkConfig {
        self.opts.chunk.fit_window(self.embedder.max_tokens(), 48)
    }

    /// The stored roots.
    pub fn sources(&self) -> Result<Vec<SourceSpec>> {
        match self.store.meta_get("sources")? {
            Some(s) => serde_json::from_str(&s).map_err(|e| trident_store::StoreError::Corrupt { what: "kb_meta.sources".into(), detail: e.to_string() }.into()),
            None => Ok(Vec::new()),
        }
    }

    /// Ingests files and folders: records them as roots (for `sync`), then syncs them: new or
    /// changed files are (re-)ingested, unchanged ones skipped, vanished ones removed.
    pub fn ingest(&mut self, specs: Vec<SourceSpec>, progress: &mut dyn FnMut(Progress)) -> Result<IngestReport> {
        let mut specs_abs = Vec::new();
        for mut s in specs {
            s.path = std::fs::canonicalize(&s.path).map_err(|source| RagError::Io { path: s.path.clone(), source })?;
            if let Some(g) = &s.groups {
                for x in g {
                    crate::access::validate_group(x).map_err(RagError::BadInput)?;
                }
            }
            specs_abs.push(s);
        }
        let mut all = self.sources()?;
        for s in &specs_abs {
            all.retain(|x| x.path != s.path);
            all.push(s.clone());
        }
        self.store.meta_set("sources", &serde_json::to_string(&all).map_err(|e| RagError::BadInput(e.to_string()))?)?;
        self.sync_specs(&specs_abs, progress)
    }

    /// Re-syncs every recorded root. Idempotent: an unchanged tree writes nothing.
    pub fn sync(&mut self, progress: &mut dyn FnMut(Progress)) -> Result<IngestReport> {
        let specs = self.sources()?;
        self.sync_specs(&specs, progress)
    }

    fn sync_specs(&mut self, specs: &[SourceSpec], progress: &mut dyn FnMut(Progress)) -> Result<IngestReport> {
        let t0 = Instant::now();
        self.timing = [0; 3];
        let mut report = IngestReport::default();
        // Files per root (a missing root is reported, and nothing under it is deleted).
        let mut work: Vec<(PathBuf, PathBuf, &SourceSpec)> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut roots_ok: Vec<&Path> = Vec::new();
        for s in specs {
            if s.path.is_dir() {
                let mut files = Vec::new();
                list_files(&s.path, &mut files).map_err(|source| RagError::Io { path: s.path.clone(), source })?;
                for f in files {
                    let rel = f.strip_prefix(&s.path).unwrap_or(&f).to_path_buf();
                    seen.insert(f.to_string_lossy().into_owned());
                    work.push((f, rel, s));
                }
                roots_ok.push(&s.path);
            } else if s.path.is_file() {
                let rel = PathBuf::from(s.path.file_name().unwrap_or_default());
                seen.insert(s.path.to_string_lossy().into_owned());
                work.push((s.path.clone(), rel, s));
                roots_ok.push(&s.path);
            } else {
                roots_ok.push(&s.path); // vanished single file or folder: its files go
            }
        }
        progress(Progress::Start { files: work.len() });
        // Removed files.
        for f in self.store.files_all()? {
            let p = Path::new(&f.path);
            if !seen.contains(&f.path) && roots_ok.iter().any(|r| p.starts_with(r)) {
                let removed = self.store.delete_source(&f.path)?;
                self.unflushed.extend(removed.docs);
                self.flush_index()?;
                let r = FileReport { path: f.path.clone(), status: FileStatus::Removed, doc_id: Some(f.doc_id), version: None, chunks: 0, reason: None };
                report.files.push(r.clone());
                progress(Progress::File { report: r, chunks_total: report.chunks });
            }
        }
        for (path, rel, spec) in work {
            let r = match self.ingest_file(&path, &rel, spec, &mut report.pages) {
                Ok(r) => r,
                Err(e) if e.is_user_error() => FileReport {
                    path: path.to_string_lossy().into_owned(),
                    status: FileStatus::Skipped,
                    doc_id: None,
                    version: None,
                    chunks: 0,
                    reason: Some(e.to_string()),
                },
                Err(e) => return Err(e),
            };
            report.chunks += r.chunks;
            report.files.push(r.clone());
            if self.unflushed.len() >= INDEX_BATCH_DOCS {
                self.flush_index()?;
            }
            progress(Progress::File { report: r, chunks_total: report.chunks });
        }
        self.flush_index()?;
        report.elapsed_ms = t0.elapsed().as_millis();
        [report.parse_ms, report.embed_ms, report.index_ms] = self.timing.map(|us| us / 1000);
        Ok(report)
    }

    fn groups_for(spec: &SourceSpec, rel: &Path, meta: &serde_json::Map<String, serde_json::Value>) -> Result<Vec<String>> {
        if let Some(g) = spec.access.as_ref().and_then(|a| a.groups_for(rel)) {
            return Ok(g);
        }
        if let Some(g) = &spec.groups {
            return Ok(g.clone());
        }
        // The document's own `access`/`groups` front matter, when nothing else says.
        for key in ["groups", "access"] {
            match meta.get(key) {
                Some(serde_json::Value::String(s)) => return crate::access::parse_groups(s),
                Some(serde_json::Value::Array(a)) => {
                    let s: Vec<String> = a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
                    return crate::access::parse_groups(&s.join(","));
                }
                _ => {}
            }
        }
        Ok(vec!["*".to_string()])
    }

    fn ingest_file(&mut self, path: &Path, rel: &Path, spec: &SourceSpec, pages: &mut usize) -> Result<FileReport> {
        let path_s = path.to_string_lossy().into_owned();
        if !parse::is_supported(path) {
            return Err(RagError::Unsupported { path: path.to_path_buf(), ext: path.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default() });
        }
        let size = std::fs::metadata(path).map_err(|source| RagError::Io { path: path.to_path_buf(), source })?.len();
        if size > self.opts.limits.max_file_bytes {
            return Err(RagError::TooLarge { path: path.to_path_buf(), size, limit: self.opts.limits.max_file_bytes });
        }
        let t_parse = Instant::now();
        let bytes = std::fs::read(path).map_err(|source| RagError::Io { path: path.to_path_buf(), source })?;
        let hash = sha256_hex(&bytes);
        let existing = self.store.file_get(&path_s)?;
        let doc = parse::parse_bytes(path, &bytes, &self.opts.limits);
        self.timing[0] += t_parse.elapsed().as_micros();
        if let Some(ex) = &existing
            && ex.content_hash == hash
        {
            // Unchanged content; access groups may still have changed.
            let meta = doc.as_ref().map(|d| d.meta.clone()).unwrap_or_default();
            let want = Self::groups_for(spec, rel, &meta)?;
            let have = self.store.version_get(&ex.doc_id, ex.version)?.map(|v| v.groups).unwrap_or_default();
            let mut want_sorted = want.clone();
            want_sorted.sort();
            want_sorted.dedup();
            if want_sorted != have {
                self.store.set_source_groups(&ex.doc_id, &path_s, &want)?;
                self.unflushed.insert(ex.doc_id.clone());
                return Ok(FileReport { path: path_s, status: FileStatus::GroupsUpdated, doc_id: Some(ex.doc_id.clone()), version: Some(ex.version), chunks: 0, reason: None });
            }
            return Ok(FileReport { path: path_s, status: FileStatus::Unchanged, doc_id: Some(ex.doc_id.clone()), version: Some(ex.version), chunks: 0, reason: None });
        }
        let doc = doc?;
        *pages += doc.blocks.iter().filter_map(|b| b.page).max().unwrap_or(1) as usize;
        let mut meta = doc.meta.clone();
        for (k, v) in &spec.meta {
            meta.insert(k.clone(), serde_json::Value::String(v.clone()));
        }
        let groups = Self::groups_for(spec, rel, &meta)?;
        let rel_s = rel.to_string_lossy().replace('\\', "/");
        let fm_str = |k: &str| meta.get(k).and_then(|v| v.as_str().map(str::to_string).or_else(|| v.as_i64().map(|n| n.to_string())));
        let doc_id = fm_str("id").or_else(|| fm_str("title")).unwrap_or_else(|| rel_s.clone());
        let title = doc.title.clone().unwrap_or_else(|| rel_s.clone());
        let label = fm_str("version");
        let ingested_at = now_rfc3339();
        let valid_from = ["valid_from", "effective", "date", "version"].iter().find_map(|k| meta.get(*k).and_then(date_like)).unwrap_or_else(|| ingested_at.clone());
        let superseded = matches!(fm_str("status").as_deref(), Some("superseded" | "archived" | "obsolete"));
        let all_text: String = doc.blocks.iter().map(|b| b.text.as_str()).collect::<Vec<_>>().join("\n");
        let lang = detect_lang(&all_text).to_string();
        // Chunk and embed before touching the database.
        let counter = EmbedderTokens(self.embedder.as_ref());
        let reserved = EmbedderTokens(self.embedder.as_ref()).count_tokens(&title) + 8;
        let cfg = self.opts.chunk.fit_window(self.embedder.max_tokens(), reserved);
        let chunks = chunk_blocks(&doc.blocks, &cfg, &counter);
        let embed_texts: Vec<String> = chunks.iter().map(|c| format!("{title}\n{}", c.text)).collect();
        let t_embed = Instant::now();
        let mut vectors = Vec::with_capacity(chunks.len());
        for batch in embed_texts.chunks(64) {
            let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
            let vs = self.embedder.embed_passages(&refs).map_err(|e| RagError::Embed(format!("{}: {e}", path.display())))?;
            if vs.len() != refs.len() || vs.iter().any(|v| v.len() != self.embedder.dim()) {
                return Err(RagError::Embed(format!("{} returned a wrong number or size of vectors", self.embedder.id())));
            }
            vectors.extend(vs);
        }
        self.timing[1] += t_embed.elapsed().as_micros();
        let version = self.store.next_version(&doc_id)?;
        let mut vmeta = serde_json::Value::Object(meta.clone());
        if let Some(o) = vmeta.as_object_mut() {
            o.insert("path".into(), rel_s.clone().into());
            if !doc.notes.is_empty() {
                o.insert("notes".into(), doc.notes.clone().into());
            }
        }
        let records: Vec<ChunkRecord> = chunks
            .iter()
            .zip(vectors)
            .map(|(c, v)| ChunkRecord {
                chunk_id: sha256_hex(format!("{doc_id}\0{version}\0{}\0{}", c.ord, c.text).as_bytes())[..24].to_string(),
                doc_id: doc_id.clone(),
                version,
                ord: c.ord as i64,
                text: c.text.clone(),
                section: c.section.clone(),
                page: c.page.map(i64::from),
                tokens: c.tokens as i64,
                content_hash: sha256_hex(c.text.as_bytes()),
                vector: Some(v),
            })
            .collect();
        // One unit: the version, its groups and chunks, and the file record marking it done
        // (a file that became another document drops the old one's versions in the same unit).
        let touched = self.store.commit_version(&VersionCommit {
            version: VersionRecord {
                doc_id: doc_id.clone(),
                version,
                label,
                title,
                source: path_s.clone(),
                content_hash: hash.clone(),
                meta: vmeta,
                lang,
                valid_from,
                ingested_at: ingested_at.clone(),
                groups,
                current: false,
            },
            superseded,
            chunks: records,
            file: FileRecord { path: path_s.clone(), content_hash: hash, doc_id: doc_id.clone(), version, ingested_at },
        })?;
        self.unflushed.extend(touched);
        tracing::info!(file = %path_s, doc = %doc_id, version, chunks = chunks.len(), "ingested");
        let reason = (!doc.notes.is_empty()).then(|| doc.notes.join("; "));
        Ok(FileReport { path: path_s, status: FileStatus::Added, doc_id: Some(doc_id), version: Some(version), chunks: chunks.len(), reason })
    }

    /// The index query for `req` (groups, versions, filters; no text or vector yet).
    fn index_query(&self, req: &SearchRequest) -> Result<trident_search::SearchQuery> {
        let mut groups: Vec<String> = req.groups.clone();
        for g in &groups {
            crate::access::validate_group(g).map_err(RagError::BadInput)?;
        }
        if !groups.iter().any(|g| g == "*") {
            groups.push("*".into());
        }
        let version = if let Some(n) = req.version {
            let n = u32::try_from(n).map_err(|_| RagError::BadInput(format!("--version {n}: expected a positive version number")))?;
            trident_search::VersionFilter::Version(req.doc.clone(), n)
        } else if let Some(d) = &req.as_of {
            trident_search::VersionFilter::AsOf(date_to_unix(d, true))
        } else {
            trident_search::VersionFilter::CurrentOnly
        };
        let mut metadata: BTreeMap<String, String> = req.meta.iter().cloned().collect();
        if let Some(l) = &req.lang {
            metadata.insert("lang".into(), l.clone());
        }
        let mut q = trident_search::SearchQuery { text: String::new(), vector: None, groups, version, metadata, k: req.k };
        if req.doc.is_some() && req.version.is_none() {
            // The index filters by document only together with a version number; otherwise the
            // hits are narrowed to the document after the search, from a wider list.
            q.k = req.k.max(50);
        }
        Ok(q)
    }

    /// The query's evidence terms (as the index analyzes them) with their IDF over the chunks
    /// the asker may read: what [`relevance`] weighs, and what the answerer uses to pick the
    /// sentences of a chunk that matter.
    pub fn query_weights(&self, req: &SearchRequest) -> Result<Vec<(String, f32)>> {
        let q = self.index_query(req)?;
        let terms = index_terms(&req.text);
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let (n, dfs) = self.index.doc_freqs(&q, &terms)?;
        Ok(terms.into_iter().zip(dfs).map(|(t, df)| (t, idf(n, df))).collect())
    }

    /// Hybrid search (BM25 + vectors, reciprocal-rank fusion, inside the retrieval index) over
    /// the chunks the asker may read, in the versions asked for (current by default). Hits carry
    /// their relevance (0..1) and have personal data masked.
    pub fn search(&self, req: &SearchRequest) -> Result<Vec<Hit>> {
        let mut q = self.index_query(req)?;
        if req.k == 0 || req.text.trim().is_empty() {
            return Ok(Vec::new());
        }
        q.text = req.text.clone();
        let qv = self.embedder.embed_query(&req.text).map_err(|e| RagError::Embed(format!("query: {e}")))?;
        q.vector = Some(qv.clone());
        let found = self.index.search(&q)?;
        // IDF of the query's terms over the asker's readable chunks only.
        let qterms = index_terms(&req.text);
        let (n, dfs) = if qterms.is_empty() { (0, Vec::new()) } else { self.index.doc_freqs(&q, &qterms)? };
        let idf: Vec<f32> = dfs.iter().map(|&df| idf(n, df)).collect();
        let idf_total: f32 = idf.iter().sum();
        // The store is the record of truth: a hit it no longer holds is skipped.
        let ids: Vec<String> = found.iter().filter(|f| req.doc.as_ref().is_none_or(|d| &f.doc_id == d)).map(|f| f.chunk_id.clone()).collect();
        let mut rows: HashMap<String, SearchChunk> = self.store.search_chunks(&ids)?.into_iter().map(|c| (c.chunk_id.clone(), c)).collect();
        let mut hits = Vec::with_capacity(found.len());
        for f in found {
            let Some(row) = rows.remove(&f.chunk_id) else { continue };
            let SearchChunk { text, section, page, vector, label, current, title, source, lang, groups, .. } = row;
            let cosine = match (&f.similarity, vector) {
                (Some(s), _) => Some(*s),
                (None, Some(v)) => Some(dot(&qv, &v)),
                (None, None) => None,
            };
            let chunk_terms: HashSet<String> = index_terms(&format!("{title}\n{section}\n{text}")).into_iter().collect();
            let found_w: f32 = qterms.iter().zip(&idf).filter(|(t, _)| chunk_terms.contains(*t)).map(|(_, w)| *w).sum();
            let evidence = if idf_total > 0.0 { found_w / idf_total } else { 0.0 };
            hits.push(Hit {
                chunk_id: f.chunk_id,
                score: f.score,
                relevance: relevance(evidence),
                evidence,
                bm25: f.bm25_score.unwrap_or(0.0),
                cosine,
                doc_id: f.doc_id,
                version: f.version as i64,
                label,
                current,
                title,
                source,
                section,
                page,
                lang,
                text,
                groups,
                masked: Vec::new(),
                kept: Vec::new(),
            });
            if hits.len() == req.k {
                break;
            }
        }
        crate::pii::mask_hits(&mut hits, &req.pii_allow);
        tracing::debug!(hits = hits.len(), "search");
        Ok(hits)
    }

    /// Versions of every document (for `kb versions` / reports).
    pub fn versions(&self) -> Result<Vec<VersionRecord>> {
        Ok(self.store.versions_all()?)
    }

    /// Counts: (files, versions, current versions, chunks).
    pub fn stats(&self) -> Result<(i64, i64, i64, i64)> {
        let n = self.store.counts()?;
        Ok((n.files, n.versions, n.current, n.chunks))
    }

    /// `(chunk_id, content_hash)` of every chunk, sorted (compare two KBs' content).
    pub fn fingerprint(&self) -> Result<Vec<(String, String)>> {
        Ok(self.store.chunk_fingerprint()?)
    }
}
