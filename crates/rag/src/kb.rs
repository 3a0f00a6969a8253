//! A knowledge base on disk: `kb.db` (SQLite: files, document versions, chunks, groups,
//! vectors) in the KB's folder; ingestion, sync and ACL-filtered hybrid retrieval.
//!
//! **Write order (crash safety).** Each file is read, parsed, chunked and embedded first,
//! outside any transaction; then its version, chunks, groups and the file's sync record are
//! written in *one* SQLite transaction. A `kill -9` therefore loses at most the file being
//! written, whose sync record is absent, so the next `ingest`/`sync` redoes exactly that file.
//! Chunk ids are derived from (document, version, position, text), so the resumed run reaches
//! the same final state as an uninterrupted one. Chunks carry an `indexed` flag for an external
//! index (trident-search): it is set only after that index commits, and chunks still unflagged
//! are re-added at the start of every run.
//!
//! **Access groups** are applied in the SQL that selects candidate chunks; term statistics,
//! scores and evidence are computed over the asker's visible chunks only, so an unreadable
//! chunk never leaves the store, is never counted and never shifts a score.

use crate::access::AccessMap;
use crate::chunk::{ChunkConfig, chunk_blocks};
use crate::embed::{Embedder, EmbedderTokens, dot};
use crate::parse::{self, Limits};
use crate::text::{detect_lang, terms};
use crate::{RagError, Result};
use rusqlite::params;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use trident_store::kb as store;

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
}

impl SearchRequest {
    /// A request over current versions for an asker with `groups`.
    pub fn new(text: impl Into<String>, groups: Vec<String>, k: usize) -> Self {
        Self { text: text.into(), groups, k, as_of: None, version: None, doc: None, lang: None, meta: Vec::new() }
    }
}

/// One retrieved chunk.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    /// Chunk id.
    pub chunk_id: String,
    /// Fused (reciprocal-rank) score.
    pub score: f32,
    /// Share of the query's (IDF-weighted) terms found in the chunk, 0..1.
    pub evidence: f32,
    /// BM25 score.
    pub bm25: f32,
    /// Cosine similarity with the query, when vectors exist.
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
}

/// A knowledge base.
pub struct KnowledgeBase {
    dir: PathBuf,
    db: trident_store::Db,
    embedder: Arc<dyn Embedder>,
    opts: KbOptions,
}

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
        let db = store::open(&dir.join("kb.db"))?;
        let c = db.conn();
        match (store::meta_get(c, "embedder_id")?, store::meta_get(c, "embedder_dim")?) {
            (Some(id), Some(dim)) => {
                let dim: usize = dim.parse().unwrap_or(0);
                if id != embedder.id() || dim != embedder.dim() {
                    return Err(RagError::EmbedderMismatch { kb: dir.to_path_buf(), stored: id, stored_dim: dim, given: embedder.id().into(), given_dim: embedder.dim() });
                }
            }
            _ => {
                store::meta_set(c, "embedder_id", embedder.id())?;
                store::meta_set(c, "embedder_dim", &embedder.dim().to_string())?;
            }
        }
        Ok(Self { dir: dir.to_path_buf(), db, embedder, opts })
    }

    /// The KB's embedder id as recorded in an existing KB folder (None when it has none yet).
    pub fn recorded_embedder(dir: &Path) -> Result<Option<String>> {
        if !dir.join("kb.db").exists() {
            return Ok(None);
        }
        let db = store::open(&dir.join("kb.db"))?;
        Ok(store::meta_get(db.conn(), "embedder_id")?)
    }

    /// The KB's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The database (read access for reports and tests).
    pub fn db(&self) -> &trident_store::Db {
        &self.db
    }

    /// The effective chunk sizes (after fitting the embedder's window).
    pub fn chunk_config(&self) -> ChunkConfig {
        self.opts.chunk.fit_window(self.embedder.max_tokens(), 48)
    }

    /// The stored roots.
    pub fn sources(&self) -> Result<Vec<SourceSpec>> {
        match store::meta_get(self.db.conn(), "sources")? {
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
        store::meta_set(self.db.conn(), "sources", &serde_json::to_string(&all).map_err(|e| RagError::BadInput(e.to_string()))?)?;
        self.sync_specs(&specs_abs, progress)
    }

    /// Re-syncs every recorded root. Idempotent: an unchanged tree writes nothing.
    pub fn sync(&mut self, progress: &mut dyn FnMut(Progress)) -> Result<IngestReport> {
        let specs = self.sources()?;
        self.sync_specs(&specs, progress)
    }

    fn sync_specs(&mut self, specs: &[SourceSpec], progress: &mut dyn FnMut(Progress)) -> Result<IngestReport> {
        let t0 = Instant::now();
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
        for f in store::files_all(self.db.conn())? {
            let p = Path::new(&f.path);
            if !seen.contains(&f.path) && roots_ok.iter().any(|r| p.starts_with(r)) {
                let tx = self.db.conn_mut().transaction()?;
                store::delete_source(&tx, &f.path)?;
                tx.commit()?;
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
            progress(Progress::File { report: r, chunks_total: report.chunks });
        }
        report.elapsed_ms = t0.elapsed().as_millis();
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
        let bytes = std::fs::read(path).map_err(|source| RagError::Io { path: path.to_path_buf(), source })?;
        let hash = sha256_hex(&bytes);
        let existing = store::file_get(self.db.conn(), &path_s)?;
        let doc = parse::parse_bytes(path, &bytes, &self.opts.limits);
        if let Some(ex) = &existing {
            if ex.content_hash == hash {
                // Unchanged content; access groups may still have changed.
                let meta = doc.as_ref().map(|d| d.meta.clone()).unwrap_or_default();
                let want = Self::groups_for(spec, rel, &meta)?;
                let have = store::version_get(self.db.conn(), &ex.doc_id, ex.version)?.map(|v| v.groups).unwrap_or_default();
                let mut want_sorted = want.clone();
                want_sorted.sort();
                if want_sorted != have {
                    let tx = self.db.conn_mut().transaction()?;
                    tx.execute("DELETE FROM kb_version_groups WHERE doc_id = ?1 AND version IN (SELECT version FROM kb_versions WHERE doc_id = ?1 AND source = ?2)", params![ex.doc_id, path_s])?;
                    for g in &want {
                        tx.execute(
                            "INSERT OR IGNORE INTO kb_version_groups(doc_id, version, grp) SELECT doc_id, version, ?3 FROM kb_versions WHERE doc_id = ?1 AND source = ?2",
                            params![ex.doc_id, path_s, g],
                        )?;
                    }
                    tx.commit()?;
                    return Ok(FileReport { path: path_s, status: FileStatus::GroupsUpdated, doc_id: Some(ex.doc_id.clone()), version: Some(ex.version), chunks: 0, reason: None });
                }
                return Ok(FileReport { path: path_s, status: FileStatus::Unchanged, doc_id: Some(ex.doc_id.clone()), version: Some(ex.version), chunks: 0, reason: None });
            }
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
        let reserved = self.embedder.count_tokens(&title) + 8;
        let cfg = self.opts.chunk.fit_window(self.embedder.max_tokens(), reserved);
        let chunks = chunk_blocks(&doc.blocks, &cfg, &counter);
        let embed_texts: Vec<String> = chunks.iter().map(|c| format!("{title}\n{}", c.text)).collect();
        let mut vectors = Vec::with_capacity(chunks.len());
        for batch in embed_texts.chunks(16) {
            let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
            let vs = self.embedder.embed_passages(&refs)?;
            if vs.len() != refs.len() || vs.iter().any(|v| v.len() != self.embedder.dim()) {
                return Err(RagError::Embed(format!("{} returned a wrong number or size of vectors", self.embedder.id())));
            }
            vectors.extend(vs);
        }
        let tx = self.db.conn_mut().transaction()?;
        if let Some(ex) = &existing {
            if ex.doc_id != doc_id {
                store::delete_source(&tx, &path_s)?;
            }
        }
        let version = store::next_version(&tx, &doc_id)?;
        let mut vmeta = serde_json::Value::Object(meta.clone());
        if let Some(o) = vmeta.as_object_mut() {
            o.insert("path".into(), rel_s.clone().into());
            if !doc.notes.is_empty() {
                o.insert("notes".into(), doc.notes.clone().into());
            }
        }
        store::insert_version(
            &tx,
            &store::VersionRecord {
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
        )?;
        if superseded {
            tx.execute("UPDATE kb_versions SET superseded = 1 WHERE doc_id = ?1 AND version = ?2", params![doc_id, version])?;
        }
        for (c, v) in chunks.iter().zip(vectors) {
            let chunk_id = sha256_hex(format!("{doc_id}\0{version}\0{}\0{}", c.ord, c.text).as_bytes())[..24].to_string();
            store::insert_chunk(
                &tx,
                &store::ChunkRecord {
                    chunk_id,
                    doc_id: doc_id.clone(),
                    version,
                    ord: c.ord as i64,
                    text: c.text.clone(),
                    section: c.section.clone(),
                    page: c.page.map(i64::from),
                    tokens: c.tokens as i64,
                    content_hash: sha256_hex(c.text.as_bytes()),
                    vector: Some(v),
                },
            )?;
        }
        // No external index yet: the SQLite store is the index, so chunks are indexed on commit.
        tx.execute("UPDATE kb_chunks SET indexed = 1 WHERE doc_id = ?1 AND version = ?2", params![doc_id, version])?;
        store::recompute_current(&tx, &doc_id)?;
        store::upsert_file(&tx, &store::FileRecord { path: path_s.clone(), content_hash: hash, doc_id: doc_id.clone(), version, ingested_at })?;
        tx.commit()?;
        tracing::info!(file = %path_s, doc = %doc_id, version, chunks = chunks.len(), "ingested");
        let reason = (!doc.notes.is_empty()).then(|| doc.notes.join("; "));
        Ok(FileReport { path: path_s, status: FileStatus::Added, doc_id: Some(doc_id), version: Some(version), chunks: chunks.len(), reason })
    }

    /// Hybrid search (BM25 + vectors, reciprocal-rank fusion) over the chunks the asker may
    /// read, in the versions asked for (current by default).
    pub fn search(&self, req: &SearchRequest) -> Result<Vec<Hit>> {
        let mut groups: Vec<String> = req.groups.clone();
        for g in &groups {
            crate::access::validate_group(g).map_err(RagError::BadInput)?;
        }
        if !groups.iter().any(|g| g == "*") {
            groups.push("*".into());
        }
        let groups_json = serde_json::to_string(&groups).map_err(|e| RagError::BadInput(e.to_string()))?;
        let mut sql = String::from(
            "SELECT c.chunk_id, c.text, c.section, c.page, c.vector, v.doc_id, v.version, v.label, v.current, v.title, v.source, v.lang
             FROM kb_chunks c JOIN kb_versions v ON v.doc_id = c.doc_id AND v.version = c.version
             WHERE EXISTS (SELECT 1 FROM kb_version_groups g WHERE g.doc_id = v.doc_id AND g.version = v.version
                           AND g.grp IN (SELECT value FROM json_each(?1)))",
        );
        let mut args: Vec<rusqlite::types::Value> = vec![groups_json.into()];
        if let Some(n) = req.version {
            args.push(n.into());
            sql.push_str(&format!(" AND v.version = ?{}", args.len()));
        } else if let Some(d) = &req.as_of {
            let end = if d.len() == 10 { format!("{d}T23:59:59Z") } else { d.clone() };
            args.push(end.into());
            sql.push_str(&format!(
                " AND v.version = (SELECT v2.version FROM kb_versions v2 WHERE v2.doc_id = v.doc_id AND v2.valid_from <= ?{n}
                   ORDER BY v2.valid_from DESC, v2.version DESC LIMIT 1)",
                n = args.len()
            ));
        } else {
            sql.push_str(" AND v.current = 1");
        }
        if let Some(doc) = &req.doc {
            args.push(doc.clone().into());
            sql.push_str(&format!(" AND v.doc_id = ?{}", args.len()));
        }
        if let Some(lang) = &req.lang {
            args.push(lang.clone().into());
            sql.push_str(&format!(" AND v.lang = ?{}", args.len()));
        }
        for (k, val) in &req.meta {
            args.push(format!("$.\"{}\"", k.replace('"', "")).into());
            args.push(val.clone().into());
            sql.push_str(&format!(" AND json_extract(v.meta, ?{}) = ?{}", args.len() - 1, args.len()));
        }
        let conn = self.db.conn();
        let mut st = conn.prepare(&sql)?;
        struct Cand {
            hit: Hit,
            vector: Option<Vec<f32>>,
            tf: HashMap<String, usize>,
            len: usize,
        }
        let mut cands: Vec<Cand> = Vec::new();
        let mut rows = st.query(rusqlite::params_from_iter(args.iter()))?;
        while let Some(r) = rows.next()? {
            let text: String = r.get(1)?;
            let title: String = r.get(9)?;
            let blob: Option<Vec<u8>> = r.get(4)?;
            let vector = match blob {
                Some(b) => Some(store::blob_to_vec(&b)?),
                None => None,
            };
            let ts = terms(&format!("{title}\n{text}"));
            let len = ts.len();
            let mut tf = HashMap::new();
            for t in ts {
                *tf.entry(t).or_insert(0) += 1;
            }
            cands.push(Cand {
                hit: Hit {
                    chunk_id: r.get(0)?,
                    score: 0.0,
                    evidence: 0.0,
                    bm25: 0.0,
                    cosine: None,
                    doc_id: r.get(5)?,
                    version: r.get(6)?,
                    label: r.get(7)?,
                    current: r.get::<_, i64>(8)? != 0,
                    title,
                    source: r.get(10)?,
                    section: r.get(2)?,
                    page: r.get(3)?,
                    lang: r.get(11)?,
                    text,
                },
                vector,
                tf,
                len,
            });
        }
        if cands.is_empty() || req.k == 0 {
            return Ok(Vec::new());
        }
        // BM25 over the visible chunks only.
        let mut qterms = terms(&req.text);
        qterms.sort();
        qterms.dedup();
        let n = cands.len() as f32;
        let avg_len = cands.iter().map(|c| c.len).sum::<usize>() as f32 / n;
        let idf: HashMap<&str, f32> = qterms
            .iter()
            .map(|t| {
                let df = cands.iter().filter(|c| c.tf.contains_key(t)).count() as f32;
                (t.as_str(), (1.0 + (n - df + 0.5) / (df + 0.5)).ln())
            })
            .collect();
        let idf_total: f32 = idf.values().sum();
        let (k1, b) = (1.2f32, 0.75f32);
        let qvec = if cands.iter().any(|c| c.vector.is_some()) { Some(self.embedder.embed_query(&req.text)?) } else { None };
        for c in cands.iter_mut() {
            let mut s = 0.0;
            let mut found = 0.0;
            for t in &qterms {
                if let Some(&f) = c.tf.get(t) {
                    let f = f as f32;
                    let w = idf[t.as_str()];
                    s += w * f * (k1 + 1.0) / (f + k1 * (1.0 - b + b * c.len as f32 / avg_len.max(1.0)));
                    found += w;
                }
            }
            c.hit.bm25 = s;
            c.hit.evidence = if idf_total > 0.0 { found / idf_total } else { 0.0 };
            if let (Some(q), Some(v)) = (&qvec, &c.vector) {
                if q.len() == v.len() {
                    c.hit.cosine = Some(dot(q, v));
                }
            }
        }
        // Reciprocal-rank fusion (k = 60) of the BM25 ranking and the vector ranking.
        let mut by_bm25: Vec<usize> = (0..cands.len()).filter(|&i| cands[i].hit.bm25 > 0.0).collect();
        by_bm25.sort_by(|&a, &b| cands[b].hit.bm25.total_cmp(&cands[a].hit.bm25));
        let mut by_vec: Vec<usize> = (0..cands.len()).filter(|&i| cands[i].hit.cosine.is_some()).collect();
        by_vec.sort_by(|&a, &b| cands[b].hit.cosine.unwrap_or(0.0).total_cmp(&cands[a].hit.cosine.unwrap_or(0.0)));
        for (rank, &i) in by_bm25.iter().enumerate() {
            cands[i].hit.score += 1.0 / (60.0 + rank as f32 + 1.0);
        }
        for (rank, &i) in by_vec.iter().enumerate() {
            cands[i].hit.score += 1.0 / (60.0 + rank as f32 + 1.0);
        }
        let mut hits: Vec<Hit> = cands.into_iter().map(|c| c.hit).filter(|h| h.score > 0.0).collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.chunk_id.cmp(&b.chunk_id)));
        hits.truncate(req.k);
        tracing::debug!(hits = hits.len(), "search");
        Ok(hits)
    }

    /// Versions of every document (for `kb versions` / reports).
    pub fn versions(&self) -> Result<Vec<store::VersionRecord>> {
        Ok(store::versions_all(self.db.conn())?)
    }

    /// Counts: (files, versions, current versions, chunks).
    pub fn stats(&self) -> Result<(i64, i64, i64, i64)> {
        Ok(store::counts(self.db.conn())?)
    }

    /// `(chunk_id, content_hash)` of every chunk, sorted (compare two KBs' content).
    pub fn fingerprint(&self) -> Result<Vec<(String, String)>> {
        Ok(store::chunk_fingerprint(self.db.conn())?)
    }
}
