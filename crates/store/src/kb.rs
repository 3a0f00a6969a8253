//! Knowledge-base storage: source files, documents and their versions, chunks, access groups
//! (owned by the RAG work), behind the [`KbStore`] trait.
//!
//! The knowledge base talks to its store only through [`KbStore`], whose operations are stated
//! at the level of the KB's invariants, not of SQL; the embedded implementation is
//! [`SqliteKbStore`] (one SQLite file, `kb.db`, in the KB's folder). A server deployment can add
//! PostgreSQL (+ pgvector) by implementing the same trait.
//!
//! **Invariants every implementation keeps.**
//! - *The write unit is one document version*: [`KbStore::commit_version`] writes the version
//!   row, its access groups, its chunks and the file record that marks the source as done in one
//!   transaction, so a killed ingest leaves either the whole version or nothing of it (and, with
//!   no file record, the next sync redoes exactly that file).
//! - *Index flags are repaired on open*: every write marks the documents it touched "index
//!   pending" in the same transaction, and chunks are stored "not indexed"; the external
//!   retrieval index is written after the store commits and only then are the documents
//!   confirmed with [`KbStore::mark_indexed`]. A crash in between leaves the marks, and the KB
//!   re-indexes [`KbStore::unindexed_docs`] when it opens.
//! - *The store is the record of truth*: the retrieval index is derived from it and can be
//!   rebuilt from it at any time; a search hit the store no longer holds is dropped.
//! - *Access groups are stored per version*: every version has at least one group (`*` =
//!   everyone), and the chunks of a version are readable by exactly its groups.

use crate::{Db, Result, StoreError};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeSet;
use std::path::Path;

/// The `kb_meta` key prefix marking a document whose last write has not reached the retrieval
/// index yet (`index_pending:<doc_id>`; kept as is so existing KB folders still reconcile).
const PENDING_PREFIX: &str = "index_pending:";
/// The KB migrations, in order (names are prefixed `kb_`).
pub const MIGRATIONS: &[(&str, &str)] = &[(
    "kb_0001_init",
    "CREATE TABLE kb_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE kb_files (
         path TEXT PRIMARY KEY,
         content_hash TEXT NOT NULL,
         doc_id TEXT NOT NULL,
         version INTEGER NOT NULL,
         ingested_at TEXT NOT NULL
     );
     CREATE TABLE kb_versions (
         doc_id TEXT NOT NULL,
         version INTEGER NOT NULL,
         label TEXT,
         title TEXT NOT NULL,
         source TEXT NOT NULL,
         content_hash TEXT NOT NULL,
         meta TEXT NOT NULL,
         lang TEXT NOT NULL,
         valid_from TEXT NOT NULL,
         ingested_at TEXT NOT NULL,
         superseded INTEGER NOT NULL DEFAULT 0,
         current INTEGER NOT NULL DEFAULT 0,
         PRIMARY KEY (doc_id, version)
     );
     CREATE INDEX kb_versions_source ON kb_versions(source);
     CREATE TABLE kb_version_groups (
         doc_id TEXT NOT NULL,
         version INTEGER NOT NULL,
         grp TEXT NOT NULL,
         PRIMARY KEY (doc_id, version, grp),
         FOREIGN KEY (doc_id, version) REFERENCES kb_versions(doc_id, version) ON DELETE CASCADE
     );
     CREATE INDEX kb_version_groups_grp ON kb_version_groups(grp);
     CREATE TABLE kb_chunks (
         chunk_id TEXT PRIMARY KEY,
         doc_id TEXT NOT NULL,
         version INTEGER NOT NULL,
         ord INTEGER NOT NULL,
         text TEXT NOT NULL,
         section TEXT NOT NULL,
         page INTEGER,
         tokens INTEGER NOT NULL,
         content_hash TEXT NOT NULL,
         vector BLOB,
         indexed INTEGER NOT NULL DEFAULT 0,
         FOREIGN KEY (doc_id, version) REFERENCES kb_versions(doc_id, version) ON DELETE CASCADE
     );
     CREATE INDEX kb_chunks_doc ON kb_chunks(doc_id, version);",
)];

/// Opens (creating) a KB database and applies the KB migrations.
pub fn open(path: &std::path::Path) -> Result<Db> {
    let mut db = Db::open(path)?;
    db.migrate(MIGRATIONS)?;
    Ok(db)
}

/// A source file the KB has ingested (the sync state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// The source path, as stored (absolute).
    pub path: String,
    /// SHA-256 of the file bytes.
    pub content_hash: String,
    /// The document this file became.
    pub doc_id: String,
    /// The version it became.
    pub version: i64,
    /// When (RFC 3339).
    pub ingested_at: String,
}

/// One stored version of a document.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionRecord {
    /// Document id (front matter `id`/`title`, or the path).
    pub doc_id: String,
    /// Version number, 1-based, per document.
    pub version: i64,
    /// The document's own version label (front matter `version`), if any.
    pub label: Option<String>,
    /// Title.
    pub title: String,
    /// Source path.
    pub source: String,
    /// SHA-256 of the source bytes.
    pub content_hash: String,
    /// Metadata as a JSON object (front matter, `--meta`).
    pub meta: serde_json::Value,
    /// Detected language (`ru`, `en`, …).
    pub lang: String,
    /// Date from which this version is in force (RFC 3339 or `YYYY-MM-DD`).
    pub valid_from: String,
    /// When it was ingested (RFC 3339).
    pub ingested_at: String,
    /// Access groups (`*` = everyone).
    pub groups: Vec<String>,
    /// Whether this is the document's current version.
    pub current: bool,
}

/// One stored chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRecord {
    /// Stable chunk id (hash of document, version, position and content).
    pub chunk_id: String,
    /// Document id.
    pub doc_id: String,
    /// Version number.
    pub version: i64,
    /// Position in the document.
    pub ord: i64,
    /// The chunk text.
    pub text: String,
    /// Heading path ("A > B") or sheet/section name.
    pub section: String,
    /// 1-based page, for paged formats.
    pub page: Option<i64>,
    /// Token count (model tokens).
    pub tokens: i64,
    /// SHA-256 of the text.
    pub content_hash: String,
    /// Embedding, if the KB has an embedder.
    pub vector: Option<Vec<f32>>,
}

fn vec_to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Decodes a little-endian f32 blob.
pub fn blob_to_vec(b: &[u8]) -> Result<Vec<f32>> {
    if !b.len().is_multiple_of(4) {
        return Err(StoreError::Corrupt { what: "kb_chunks.vector".into(), detail: format!("{} bytes is not a multiple of 4", b.len()) });
    }
    Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// One document version as [`KbStore::commit_version`] writes it: one unit, one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionCommit {
    /// The version row with its access groups (its `current` field is ignored: the store
    /// computes which version is current). Earlier versions of the same document from the same
    /// source become superseded.
    pub version: VersionRecord,
    /// Whether the version is superseded from the start (front matter `status: superseded`):
    /// stored, but never current.
    pub superseded: bool,
    /// The version's chunks (same `doc_id` and `version`), stored "not indexed".
    pub chunks: Vec<ChunkRecord>,
    /// The sync record marking the source file as done (same path, document and version).
    pub file: FileRecord,
}

/// What [`KbStore::delete_source`] removed: what the retrieval index must drop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceRemoval {
    /// Ids of the deleted chunks.
    pub chunk_ids: Vec<String>,
    /// Documents that lost versions (their current version is recomputed and they are marked
    /// index-pending).
    pub docs: Vec<String>,
}

/// Row counts of a knowledge base.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KbCounts {
    /// Source files recorded as done.
    pub files: i64,
    /// Stored versions (all documents).
    pub versions: i64,
    /// Current versions (at most one per document).
    pub current: i64,
    /// Stored chunks (all versions).
    pub chunks: i64,
}

/// A chunk with what a search hit shows about it and its version.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchChunk {
    /// Chunk id.
    pub chunk_id: String,
    /// Document id.
    pub doc_id: String,
    /// Version number.
    pub version: i64,
    /// The chunk text.
    pub text: String,
    /// Heading path or section name.
    pub section: String,
    /// 1-based page, for paged formats.
    pub page: Option<i64>,
    /// Embedding, if stored.
    pub vector: Option<Vec<f32>>,
    /// The version's own label.
    pub label: Option<String>,
    /// Whether the version is the document's current one.
    pub current: bool,
    /// The version's title.
    pub title: String,
    /// The version's source path.
    pub source: String,
    /// The version's language.
    pub lang: String,
    /// The version's access groups, sorted.
    pub groups: Vec<String>,
}

/// The knowledge base's storage: documents, versions, chunks, access groups, sync records and
/// metadata. Object-safe; the KB holds a `Box<dyn KbStore>`.
///
/// Every method is one unit: a method that writes either applies all of its effect or none of
/// it (one transaction), and every write that changes what the retrieval index must hold marks
/// the affected documents *index-pending* in that same unit, until [`KbStore::mark_indexed`]
/// confirms them. See the module documentation for the invariants an implementation keeps.
pub trait KbStore: Send {
    /// A KB-wide setting (embedder id, recorded roots …).
    fn meta_get(&self, key: &str) -> Result<Option<String>>;
    /// Sets a KB-wide setting.
    fn meta_set(&mut self, key: &str, value: &str) -> Result<()>;

    /// The sync record of one source file (its path as stored).
    fn file_get(&self, path: &str) -> Result<Option<FileRecord>>;
    /// Every sync record, ordered by path.
    fn files_all(&self) -> Result<Vec<FileRecord>>;

    /// The next free version number of a document (1 for a new one).
    fn next_version(&self, doc_id: &str) -> Result<i64>;
    /// Commits one document version atomically: the version with its groups and chunks, the
    /// current version recomputed, and the file record. When the file was recorded as another
    /// document before, that document's versions from this source are deleted in the same unit.
    /// Every touched document is marked index-pending. Returns the touched documents (the
    /// version's own first). An invalid commit (no groups, chunks or file of another version,
    /// a version or chunk id already stored) is an error that writes nothing.
    fn commit_version(&mut self, commit: &VersionCommit) -> Result<Vec<String>>;
    /// Replaces the access groups of every version of `doc_id` that came from `source` (content
    /// unchanged, access changed) and marks the document index-pending.
    fn set_source_groups(&mut self, doc_id: &str, source: &str, groups: &[String]) -> Result<()>;
    /// Deletes every version that came from `source` (with chunks and groups) and its file
    /// record; recomputes the affected documents' current versions and marks them
    /// index-pending.
    fn delete_source(&mut self, source: &str) -> Result<SourceRemoval>;
    /// Marks as current the non-superseded version with the latest `valid_from` (ties: the
    /// highest number); no other version of the document is current.
    fn recompute_current(&mut self, doc_id: &str) -> Result<()>;

    /// Documents the retrieval index may not reflect: marked index-pending, or holding chunks
    /// not flagged indexed. Sorted.
    fn unindexed_docs(&self) -> Result<Vec<String>>;
    /// Every document that has chunks (to rebuild a lost index). Sorted.
    fn docs_with_chunks(&self) -> Result<Vec<String>>;
    /// Confirms that the retrieval index now holds `docs` as stored: clears their pending marks
    /// and flags their chunks indexed.
    fn mark_indexed(&mut self, docs: &[String]) -> Result<()>;

    /// All versions, ordered by document and version.
    fn versions_all(&self) -> Result<Vec<VersionRecord>>;
    /// The versions of one document, ordered by version.
    fn versions_of(&self, doc_id: &str) -> Result<Vec<VersionRecord>>;
    /// One version.
    fn version_get(&self, doc_id: &str, version: i64) -> Result<Option<VersionRecord>>;
    /// The chunks of one version, in document order.
    fn chunks_of(&self, doc_id: &str, version: i64) -> Result<Vec<ChunkRecord>>;
    /// The chunks with these ids, with their versions' fields, in the order asked; ids the store
    /// does not hold are left out.
    fn search_chunks(&self, chunk_ids: &[String]) -> Result<Vec<SearchChunk>>;

    /// Row counts.
    fn counts(&self) -> Result<KbCounts>;
    /// `(chunk_id, content_hash)` of every chunk, sorted by id: a fingerprint of the content.
    fn chunk_fingerprint(&self) -> Result<Vec<(String, String)>>;
}

/// The embedded [`KbStore`]: one SQLite file (`kb.db`) with the `kb_` tables.
pub struct SqliteKbStore {
    db: Db,
}

impl SqliteKbStore {
    /// Opens (creating) the KB database at `path` and applies the KB migrations.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self { db: open(path)? })
    }

    /// A private in-memory store (tests).
    pub fn open_in_memory() -> Result<Self> {
        let mut db = Db::open_in_memory()?;
        db.migrate(MIGRATIONS)?;
        Ok(Self { db })
    }

    /// The database (read access for diagnostics and tests).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Runs `f` in one transaction: committed when it returns `Ok`, rolled back otherwise.
    fn write<T>(&mut self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let tx = self.db.conn_mut().transaction()?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

impl KbStore for SqliteKbStore {
    fn meta_get(&self, key: &str) -> Result<Option<String>> {
        meta_get(self.db.conn(), key)
    }

    fn meta_set(&mut self, key: &str, value: &str) -> Result<()> {
        meta_set(self.db.conn(), key, value)
    }

    fn file_get(&self, path: &str) -> Result<Option<FileRecord>> {
        file_get(self.db.conn(), path)
    }

    fn files_all(&self) -> Result<Vec<FileRecord>> {
        files_all(self.db.conn())
    }

    fn next_version(&self, doc_id: &str) -> Result<i64> {
        next_version(self.db.conn(), doc_id)
    }

    fn commit_version(&mut self, commit: &VersionCommit) -> Result<Vec<String>> {
        let v = &commit.version;
        let what = || format!("document {:?} version {}", v.doc_id, v.version);
        if let Some(c) = commit.chunks.iter().find(|c| c.doc_id != v.doc_id || c.version != v.version) {
            return Err(StoreError::Invalid(format!("{}: chunk {} belongs to {:?} version {}", what(), c.chunk_id, c.doc_id, c.version)));
        }
        let f = &commit.file;
        if f.doc_id != v.doc_id || f.version != v.version || f.path != v.source {
            return Err(StoreError::Invalid(format!("{}: file record {:?} is for {:?} version {}", what(), f.path, f.doc_id, f.version)));
        }
        self.write(|tx| {
            let mut touched = vec![v.doc_id.clone()];
            if let Some(ex) = file_get(tx, &f.path)?
                && ex.doc_id != v.doc_id
            {
                // The file became another document: its old document's versions go.
                let (_, docs) = delete_source(tx, &f.path)?;
                touched.extend(docs.into_iter().filter(|d| *d != v.doc_id));
            }
            for d in &touched {
                mark_pending(tx, d)?;
            }
            insert_version(tx, v)?;
            if commit.superseded {
                tx.execute("UPDATE kb_versions SET superseded = 1 WHERE doc_id = ?1 AND version = ?2", params![v.doc_id, v.version])?;
            }
            for c in &commit.chunks {
                insert_chunk(tx, c)?;
            }
            recompute_current(tx, &v.doc_id)?;
            upsert_file(tx, f)?;
            Ok(touched)
        })
    }

    fn set_source_groups(&mut self, doc_id: &str, source: &str, groups: &[String]) -> Result<()> {
        if groups.is_empty() {
            return Err(StoreError::Invalid(format!("document {doc_id:?} from {source}: no access groups")));
        }
        self.write(|tx| {
            tx.execute(
                "DELETE FROM kb_version_groups WHERE doc_id = ?1 AND version IN (SELECT version FROM kb_versions WHERE doc_id = ?1 AND source = ?2)",
                params![doc_id, source],
            )?;
            for g in groups {
                tx.execute(
                    "INSERT OR IGNORE INTO kb_version_groups(doc_id, version, grp) SELECT doc_id, version, ?3 FROM kb_versions WHERE doc_id = ?1 AND source = ?2",
                    params![doc_id, source, g],
                )?;
            }
            mark_pending(tx, doc_id)
        })
    }

    fn delete_source(&mut self, source: &str) -> Result<SourceRemoval> {
        self.write(|tx| {
            let (chunk_ids, docs) = delete_source(tx, source)?;
            for d in &docs {
                mark_pending(tx, d)?;
            }
            Ok(SourceRemoval { chunk_ids, docs })
        })
    }

    fn recompute_current(&mut self, doc_id: &str) -> Result<()> {
        self.write(|tx| recompute_current(tx, doc_id))
    }

    fn unindexed_docs(&self) -> Result<Vec<String>> {
        let c = self.db.conn();
        let mut docs = BTreeSet::new();
        let mut st = c.prepare("SELECT substr(key, ?1) FROM kb_meta WHERE substr(key, 1, ?2) = ?3")?;
        let n = PENDING_PREFIX.len() as i64;
        for r in st.query_map(params![n + 1, n, PENDING_PREFIX], |r| r.get::<_, String>(0))? {
            docs.insert(r?);
        }
        let mut st = c.prepare("SELECT DISTINCT doc_id FROM kb_chunks WHERE indexed = 0")?;
        for r in st.query_map([], |r| r.get::<_, String>(0))? {
            docs.insert(r?);
        }
        Ok(docs.into_iter().collect())
    }

    fn docs_with_chunks(&self) -> Result<Vec<String>> {
        let mut st = self.db.conn().prepare("SELECT DISTINCT doc_id FROM kb_chunks ORDER BY doc_id")?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn mark_indexed(&mut self, docs: &[String]) -> Result<()> {
        self.write(|tx| {
            for d in docs {
                tx.execute("DELETE FROM kb_meta WHERE key = ?1", [format!("{PENDING_PREFIX}{d}")])?;
                tx.execute("UPDATE kb_chunks SET indexed = 1 WHERE doc_id = ?1", [d])?;
            }
            Ok(())
        })
    }

    fn versions_all(&self) -> Result<Vec<VersionRecord>> {
        let c = self.db.conn();
        let mut st = c.prepare(&format!("SELECT {VERSION_COLS} FROM kb_versions ORDER BY doc_id, version"))?;
        let rows = st.query_map([], |r| version_from_row(c, r))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn versions_of(&self, doc_id: &str) -> Result<Vec<VersionRecord>> {
        let c = self.db.conn();
        let mut st = c.prepare_cached(&format!("SELECT {VERSION_COLS} FROM kb_versions WHERE doc_id = ?1 ORDER BY version"))?;
        let rows = st.query_map([doc_id], |r| version_from_row(c, r))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn version_get(&self, doc_id: &str, version: i64) -> Result<Option<VersionRecord>> {
        let c = self.db.conn();
        Ok(c.query_row(&format!("SELECT {VERSION_COLS} FROM kb_versions WHERE doc_id = ?1 AND version = ?2"), params![doc_id, version], |r| {
            version_from_row(c, r)
        })
        .optional()?)
    }

    fn chunks_of(&self, doc_id: &str, version: i64) -> Result<Vec<ChunkRecord>> {
        let mut st = self.db.conn().prepare_cached(
            "SELECT chunk_id, ord, text, section, page, tokens, content_hash, vector FROM kb_chunks WHERE doc_id = ?1 AND version = ?2 ORDER BY ord",
        )?;
        let rows = st.query_map(params![doc_id, version], |r| {
            Ok((
                ChunkRecord {
                    chunk_id: r.get(0)?,
                    doc_id: doc_id.to_string(),
                    version,
                    ord: r.get(1)?,
                    text: r.get(2)?,
                    section: r.get(3)?,
                    page: r.get(4)?,
                    tokens: r.get(5)?,
                    content_hash: r.get(6)?,
                    vector: None,
                },
                r.get::<_, Option<Vec<u8>>>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (mut chunk, blob) = row?;
            chunk.vector = blob.as_deref().map(blob_to_vec).transpose()?;
            out.push(chunk);
        }
        Ok(out)
    }

    fn search_chunks(&self, chunk_ids: &[String]) -> Result<Vec<SearchChunk>> {
        let c = self.db.conn();
        let mut st = c.prepare_cached(
            "SELECT c.doc_id, c.version, c.text, c.section, c.page, c.vector, v.label, v.current, v.title, v.source, v.lang
             FROM kb_chunks c JOIN kb_versions v ON v.doc_id = c.doc_id AND v.version = c.version WHERE c.chunk_id = ?1",
        )?;
        let mut gst = c.prepare_cached("SELECT grp FROM kb_version_groups WHERE doc_id = ?1 AND version = ?2 ORDER BY grp")?;
        let mut out = Vec::with_capacity(chunk_ids.len());
        for id in chunk_ids {
            let row = st
                .query_row([id], |r| {
                    Ok((
                        SearchChunk {
                            chunk_id: id.clone(),
                            doc_id: r.get(0)?,
                            version: r.get(1)?,
                            text: r.get(2)?,
                            section: r.get(3)?,
                            page: r.get(4)?,
                            vector: None,
                            label: r.get(6)?,
                            current: r.get::<_, i64>(7)? != 0,
                            title: r.get(8)?,
                            source: r.get(9)?,
                            lang: r.get(10)?,
                            groups: Vec::new(),
                        },
                        r.get::<_, Option<Vec<u8>>>(5)?,
                    ))
                })
                .optional()?;
            let Some((mut chunk, blob)) = row else { continue };
            chunk.vector = blob.as_deref().map(blob_to_vec).transpose()?;
            chunk.groups = gst.query_map(params![chunk.doc_id, chunk.version], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            out.push(chunk);
        }
        Ok(out)
    }

    fn counts(&self) -> Result<KbCounts> {
        Ok(self.db.conn().query_row(
            "SELECT (SELECT COUNT(*) FROM kb_files), (SELECT COUNT(*) FROM kb_versions),
                    (SELECT COUNT(*) FROM kb_versions WHERE current = 1), (SELECT COUNT(*) FROM kb_chunks)",
            [],
            |r| Ok(KbCounts { files: r.get(0)?, versions: r.get(1)?, current: r.get(2)?, chunks: r.get(3)? }),
        )?)
    }

    fn chunk_fingerprint(&self) -> Result<Vec<(String, String)>> {
        let mut st = self.db.conn().prepare("SELECT chunk_id, content_hash FROM kb_chunks ORDER BY chunk_id")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

// The SQL behind `SqliteKbStore`: each takes a connection (or an open transaction).

fn meta_get(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn.query_row("SELECT value FROM kb_meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
}

fn meta_set(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.execute("INSERT INTO kb_meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value", params![key, value])?;
    Ok(())
}

fn mark_pending(conn: &Connection, doc_id: &str) -> Result<()> {
    meta_set(conn, &format!("{PENDING_PREFIX}{doc_id}"), "1")
}

fn file_get(conn: &Connection, path: &str) -> Result<Option<FileRecord>> {
    Ok(conn
        .query_row("SELECT path, content_hash, doc_id, version, ingested_at FROM kb_files WHERE path = ?1", [path], |r| {
            Ok(FileRecord { path: r.get(0)?, content_hash: r.get(1)?, doc_id: r.get(2)?, version: r.get(3)?, ingested_at: r.get(4)? })
        })
        .optional()?)
}

fn files_all(conn: &Connection) -> Result<Vec<FileRecord>> {
    let mut st = conn.prepare("SELECT path, content_hash, doc_id, version, ingested_at FROM kb_files ORDER BY path")?;
    let rows = st.query_map([], |r| {
        Ok(FileRecord { path: r.get(0)?, content_hash: r.get(1)?, doc_id: r.get(2)?, version: r.get(3)?, ingested_at: r.get(4)? })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Records a source file as done (inside the version's transaction).
fn upsert_file(conn: &Connection, f: &FileRecord) -> Result<()> {
    conn.execute(
        "INSERT INTO kb_files(path, content_hash, doc_id, version, ingested_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(path) DO UPDATE SET content_hash = excluded.content_hash, doc_id = excluded.doc_id,
             version = excluded.version, ingested_at = excluded.ingested_at",
        params![f.path, f.content_hash, f.doc_id, f.version, f.ingested_at],
    )?;
    Ok(())
}

fn next_version(conn: &Connection, doc_id: &str) -> Result<i64> {
    let v: Option<i64> = conn.query_row("SELECT MAX(version) FROM kb_versions WHERE doc_id = ?1", [doc_id], |r| r.get(0))?;
    Ok(v.unwrap_or(0) + 1)
}

/// Inserts a version (with its groups); versions from the same source become superseded.
/// Call [`recompute_current`] afterwards.
fn insert_version(conn: &Connection, v: &VersionRecord) -> Result<()> {
    if v.groups.is_empty() {
        return Err(StoreError::Invalid(format!("document {:?} version {} has no access groups", v.doc_id, v.version)));
    }
    conn.execute("UPDATE kb_versions SET superseded = 1, current = 0 WHERE source = ?1 AND doc_id = ?2", params![v.source, v.doc_id])?;
    conn.execute(
        "INSERT INTO kb_versions(doc_id, version, label, title, source, content_hash, meta, lang, valid_from, ingested_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![v.doc_id, v.version, v.label, v.title, v.source, v.content_hash, v.meta.to_string(), v.lang, v.valid_from, v.ingested_at],
    )?;
    for g in &v.groups {
        conn.execute("INSERT OR IGNORE INTO kb_version_groups(doc_id, version, grp) VALUES (?1, ?2, ?3)", params![v.doc_id, v.version, g])?;
    }
    Ok(())
}

fn recompute_current(conn: &Connection, doc_id: &str) -> Result<()> {
    conn.execute("UPDATE kb_versions SET current = 0 WHERE doc_id = ?1", [doc_id])?;
    conn.execute(
        "UPDATE kb_versions SET current = 1 WHERE doc_id = ?1 AND version = (
             SELECT version FROM kb_versions WHERE doc_id = ?1 AND superseded = 0
             ORDER BY valid_from DESC, version DESC LIMIT 1)",
        [doc_id],
    )?;
    Ok(())
}

/// Inserts one chunk (not yet indexed). A chunk id already stored is an error (chunk ids are
/// derived from document, version, position and text, so a clash is a bug, never an update).
fn insert_chunk(conn: &Connection, c: &ChunkRecord) -> Result<()> {
    conn.execute(
        "INSERT INTO kb_chunks(chunk_id, doc_id, version, ord, text, section, page, tokens, content_hash, vector, indexed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0)",
        params![c.chunk_id, c.doc_id, c.version, c.ord, c.text, c.section, c.page, c.tokens, c.content_hash, c.vector.as_deref().map(vec_to_blob)],
    )?;
    Ok(())
}

/// Deletes every version that came from `path` (and their chunks) and the file record;
/// returns the ids of the deleted chunks and the affected document ids (current is recomputed).
fn delete_source(conn: &Connection, path: &str) -> Result<(Vec<String>, Vec<String>)> {
    let mut st = conn.prepare(
        "SELECT c.chunk_id FROM kb_chunks c JOIN kb_versions v ON v.doc_id = c.doc_id AND v.version = c.version WHERE v.source = ?1 ORDER BY c.chunk_id",
    )?;
    let chunks: Vec<String> = st.query_map([path], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    let mut st = conn.prepare("SELECT DISTINCT doc_id FROM kb_versions WHERE source = ?1 ORDER BY doc_id")?;
    let docs: Vec<String> = st.query_map([path], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    conn.execute("DELETE FROM kb_versions WHERE source = ?1", [path])?;
    conn.execute("DELETE FROM kb_files WHERE path = ?1", [path])?;
    for d in &docs {
        recompute_current(conn, d)?;
    }
    Ok((chunks, docs))
}

fn version_from_row(conn: &Connection, r: &rusqlite::Row<'_>) -> rusqlite::Result<VersionRecord> {
    let doc_id: String = r.get(0)?;
    let version: i64 = r.get(1)?;
    let meta: String = r.get(6)?;
    let mut st = conn.prepare_cached("SELECT grp FROM kb_version_groups WHERE doc_id = ?1 AND version = ?2 ORDER BY grp")?;
    let groups = st.query_map(params![doc_id, version], |g| g.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(VersionRecord {
        doc_id,
        version,
        label: r.get(2)?,
        title: r.get(3)?,
        source: r.get(4)?,
        content_hash: r.get(5)?,
        meta: serde_json::from_str(&meta).unwrap_or(serde_json::Value::Null),
        lang: r.get(7)?,
        valid_from: r.get(8)?,
        ingested_at: r.get(9)?,
        current: r.get::<_, i64>(10)? != 0,
        groups,
    })
}

const VERSION_COLS: &str = "doc_id, version, label, title, source, content_hash, meta, lang, valid_from, ingested_at, current";

#[cfg(test)]
mod tests {
    use super::*;

    fn version(doc: &str, v: i64, source: &str, valid_from: &str) -> VersionRecord {
        VersionRecord {
            doc_id: doc.into(),
            version: v,
            label: None,
            title: doc.into(),
            source: source.into(),
            content_hash: format!("h{v}"),
            meta: serde_json::json!({}),
            lang: "ru".into(),
            valid_from: valid_from.into(),
            ingested_at: "2026-01-01T00:00:00Z".into(),
            groups: vec!["*".into()],
            current: false,
        }
    }

    fn chunk(id: &str, doc: &str, v: i64, ord: i64) -> ChunkRecord {
        ChunkRecord {
            chunk_id: id.into(),
            doc_id: doc.into(),
            version: v,
            ord,
            text: format!("text of {id}"),
            section: "S".into(),
            page: Some(ord + 1),
            tokens: 3,
            content_hash: format!("hash-{id}"),
            vector: Some(vec![ord as f32, -2.5]),
        }
    }

    fn commit(doc: &str, v: i64, source: &str, valid_from: &str, chunks: &[&str]) -> VersionCommit {
        VersionCommit {
            version: version(doc, v, source, valid_from),
            superseded: false,
            chunks: chunks.iter().enumerate().map(|(i, id)| chunk(id, doc, v, i as i64)).collect(),
            file: FileRecord { path: source.into(), content_hash: format!("h{v}"), doc_id: doc.into(), version: v, ingested_at: "2026-01-01T00:00:00Z".into() },
        }
    }

    fn store() -> Box<dyn KbStore> {
        Box::new(SqliteKbStore::open_in_memory().unwrap())
    }

    fn rows(s: &SqliteKbStore, table: &str) -> i64 {
        s.db().conn().query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn current_follows_valid_from_not_ingest_order() {
        let mut s = store();
        s.commit_version(&commit("t", 1, "new.md", "2026-03-01", &["a"])).unwrap();
        assert_eq!(s.next_version("t").unwrap(), 2);
        s.commit_version(&commit("t", 2, "old.md", "2024-01-01", &["b"])).unwrap();
        let vs = s.versions_all().unwrap();
        assert!(vs[0].current && !vs[1].current, "the 2026 version stays current: {vs:?}");
        // Deleting the newer source makes the older one current again.
        s.delete_source("new.md").unwrap();
        let vs = s.versions_of("t").unwrap();
        assert_eq!(vs.len(), 1);
        assert!(vs[0].current);
    }

    #[test]
    fn same_source_supersedes_and_chunks_cascade() {
        let mut s = store();
        s.commit_version(&commit("d", 1, "a.md", "2026-01-01", &["c1"])).unwrap();
        s.commit_version(&commit("d", 2, "a.md", "2025-01-01", &["c2"])).unwrap();
        let vs = s.versions_all().unwrap();
        assert!(!vs[0].current && vs[1].current, "a changed file's new content is current even with an older date");
        assert_eq!(s.file_get("a.md").unwrap().unwrap().version, 2);
        let cs = s.chunks_of("d", 1).unwrap();
        assert_eq!(cs, vec![chunk("c1", "d", 1, 0)], "the vector and every field round-trip");
        let gone = s.delete_source("a.md").unwrap();
        assert_eq!(gone, SourceRemoval { chunk_ids: vec!["c1".into(), "c2".into()], docs: vec!["d".into()] });
        assert_eq!(s.counts().unwrap(), KbCounts::default());
    }

    #[test]
    fn superseded_commit_is_stored_but_never_current() {
        let mut s = store();
        s.commit_version(&commit("d", 1, "a.md", "2026-01-01", &["c1"])).unwrap();
        let mut c = commit("d", 2, "b.md", "2027-01-01", &["c2"]);
        c.superseded = true;
        s.commit_version(&c).unwrap();
        let vs = s.versions_all().unwrap();
        assert_eq!(vs.len(), 2);
        assert!(vs[0].current && !vs[1].current, "{vs:?}");
    }

    #[test]
    fn commit_version_is_atomic() {
        let mut s = SqliteKbStore::open_in_memory().unwrap();
        s.commit_version(&commit("a", 1, "a.md", "2026-01-01", &["x"])).unwrap();
        s.mark_indexed(&["a".to_string()]).unwrap();
        let before = (s.counts().unwrap(), s.chunk_fingerprint().unwrap());
        // A duplicate chunk id inside the version, then one clashing with another document's chunk:
        // the failing chunk insert comes after the version row, its groups and the pending mark.
        for bad in [commit("b", 1, "b.md", "2026-01-01", &["y", "y"]), commit("b", 1, "b.md", "2026-01-01", &["y", "x"])] {
            let err = s.commit_version(&bad).unwrap_err();
            assert!(matches!(err, StoreError::Sqlite(_)), "{err}");
            assert_eq!(s.version_get("b", 1).unwrap(), None, "no version row");
            assert_eq!(s.file_get("b.md").unwrap(), None, "no file row");
            assert_eq!((s.counts().unwrap(), s.chunk_fingerprint().unwrap()), before);
            assert_eq!(rows(&s, "kb_version_groups"), 1, "no group rows");
            assert!(s.unindexed_docs().unwrap().is_empty(), "no pending mark");
        }
        // A version number already stored: nothing of the second commit is written either.
        let err = s.commit_version(&commit("a", 1, "a2.md", "2027-01-01", &["z"])).unwrap_err();
        assert!(matches!(err, StoreError::Sqlite(_)), "{err}");
        assert_eq!(s.file_get("a2.md").unwrap(), None);
        assert_eq!((s.counts().unwrap(), s.chunk_fingerprint().unwrap()), before);
        // The same version then commits fine.
        s.commit_version(&commit("b", 1, "b.md", "2026-01-01", &["y"])).unwrap();
        assert_eq!(s.counts().unwrap(), KbCounts { files: 2, versions: 2, current: 2, chunks: 2 });
    }

    #[test]
    fn inconsistent_commits_are_refused_before_writing() {
        let mut s = store();
        let mut c = commit("d", 1, "a.md", "2026-01-01", &["c1"]);
        c.chunks[0].version = 2;
        assert!(s.commit_version(&c).unwrap_err().is_user_error());
        let mut c = commit("d", 1, "a.md", "2026-01-01", &["c1"]);
        c.file.path = "other.md".into();
        assert!(s.commit_version(&c).unwrap_err().is_user_error());
        let mut c = commit("d", 1, "a.md", "2026-01-01", &["c1"]);
        c.version.groups.clear();
        assert!(s.commit_version(&c).unwrap_err().is_user_error());
        assert_eq!(s.counts().unwrap(), KbCounts::default());
        assert!(s.unindexed_docs().unwrap().is_empty());
    }

    #[test]
    fn a_file_that_becomes_another_document_drops_the_old_one() {
        let mut s = store();
        s.commit_version(&commit("old", 1, "p.md", "2026-01-01", &["c1"])).unwrap();
        s.mark_indexed(&["old".to_string()]).unwrap();
        let touched = s.commit_version(&commit("new", 1, "p.md", "2026-01-01", &["c2"])).unwrap();
        assert_eq!(touched, vec!["new".to_string(), "old".to_string()]);
        assert!(s.versions_of("old").unwrap().is_empty());
        assert_eq!(s.unindexed_docs().unwrap(), vec!["new".to_string(), "old".to_string()], "the index must drop the old document");
        assert_eq!(s.counts().unwrap(), KbCounts { files: 1, versions: 1, current: 1, chunks: 1 });
    }

    #[test]
    fn delete_source_removes_chunks_and_groups() {
        let mut s = SqliteKbStore::open_in_memory().unwrap();
        let mut c = commit("d", 1, "a.md", "2026-01-01", &["c1", "c2"]);
        c.version.groups = vec!["hr".into(), "legal".into()];
        s.commit_version(&c).unwrap();
        s.commit_version(&commit("e", 1, "b.md", "2026-01-01", &["c3"])).unwrap();
        s.mark_indexed(&["d".to_string(), "e".to_string()]).unwrap();
        assert_eq!(rows(&s, "kb_version_groups"), 3);
        let gone = s.delete_source("a.md").unwrap();
        assert_eq!(gone.chunk_ids, vec!["c1".to_string(), "c2".to_string()]);
        assert_eq!(gone.docs, vec!["d".to_string()]);
        assert_eq!(rows(&s, "kb_version_groups"), 1, "the deleted version's groups go with it");
        assert_eq!(s.chunk_fingerprint().unwrap(), vec![("c3".to_string(), "hash-c3".to_string())]);
        assert_eq!(s.file_get("a.md").unwrap(), None);
        assert_eq!(s.docs_with_chunks().unwrap(), vec!["e".to_string()]);
        assert_eq!(s.unindexed_docs().unwrap(), vec!["d".to_string()], "the index must drop d");
        // Deleting an unknown source is a no-op.
        assert_eq!(s.delete_source("nothing.md").unwrap(), SourceRemoval::default());
    }

    #[test]
    fn counts_and_fingerprint_are_consistent() {
        let mut s = store();
        s.commit_version(&commit("d", 1, "a.md", "2026-01-01", &["c2", "c1"])).unwrap();
        s.commit_version(&commit("d", 2, "a.md", "2026-02-01", &["c3"])).unwrap();
        s.commit_version(&commit("e", 1, "b.md", "2026-01-01", &["c0"])).unwrap();
        let n = s.counts().unwrap();
        assert_eq!(n, KbCounts { files: 2, versions: 3, current: 2, chunks: 4 });
        let fp = s.chunk_fingerprint().unwrap();
        assert_eq!(fp.len() as i64, n.chunks);
        let ids: Vec<&str> = fp.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["c0", "c1", "c2", "c3"], "sorted by id");
        assert!(fp.iter().all(|(id, h)| *h == format!("hash-{id}")));
        let per_version: usize = s.versions_all().unwrap().iter().map(|v| s.chunks_of(&v.doc_id, v.version).unwrap().len()).sum();
        assert_eq!(per_version as i64, n.chunks);
        assert_eq!(s.versions_all().unwrap().iter().filter(|v| v.current).count() as i64, n.current);
        assert_eq!(s.files_all().unwrap().len() as i64, n.files);
    }

    #[test]
    fn index_flags_and_groups() {
        let mut s = store();
        s.commit_version(&commit("d", 1, "a.md", "2026-01-01", &["c1", "c2"])).unwrap();
        assert_eq!(s.unindexed_docs().unwrap(), vec!["d".to_string()]);
        s.mark_indexed(&["d".to_string()]).unwrap();
        assert!(s.unindexed_docs().unwrap().is_empty());
        s.set_source_groups("d", "a.md", &["b".to_string(), "a".to_string()]).unwrap();
        assert_eq!(s.version_get("d", 1).unwrap().unwrap().groups, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(s.unindexed_docs().unwrap(), vec!["d".to_string()], "a groups change must reach the index");
        assert!(s.set_source_groups("d", "a.md", &[]).unwrap_err().is_user_error(), "a version always has a group");
        let hits = s.search_chunks(&["c2".to_string(), "missing".to_string(), "c1".to_string()]).unwrap();
        let ids: Vec<&str> = hits.iter().map(|h| h.chunk_id.as_str()).collect();
        assert_eq!(ids, ["c2", "c1"], "in the order asked, unknown ids left out");
        let h = &hits[0];
        assert_eq!((h.doc_id.as_str(), h.version, h.current, h.page), ("d", 1, true, Some(2)));
        assert_eq!((h.title.as_str(), h.source.as_str(), h.lang.as_str(), h.section.as_str()), ("d", "a.md", "ru", "S"));
        assert_eq!(h.vector, Some(vec![1.0, -2.5]));
        assert_eq!(h.groups, vec!["a".to_string(), "b".to_string()]);
        s.meta_set("k", "v1").unwrap();
        s.meta_set("k", "v2").unwrap();
        assert_eq!(s.meta_get("k").unwrap().as_deref(), Some("v2"));
        assert_eq!(s.meta_get("absent").unwrap(), None);
    }

    #[test]
    fn reopening_keeps_everything() {
        let dir = std::env::temp_dir().join(format!("trident-store-kb-{}-{:?}", std::process::id(), std::thread::current().id()));
        let path = dir.join("kb.db");
        let _ = std::fs::remove_dir_all(&dir);
        {
            let mut s = SqliteKbStore::open(&path).unwrap();
            s.commit_version(&commit("d", 1, "a.md", "2026-01-01", &["c1"])).unwrap();
        }
        let s = SqliteKbStore::open(&path).unwrap();
        assert_eq!(s.counts().unwrap(), KbCounts { files: 1, versions: 1, current: 1, chunks: 1 });
        assert_eq!(s.unindexed_docs().unwrap(), vec!["d".to_string()], "a write never confirmed is re-indexed after a reopen");
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
