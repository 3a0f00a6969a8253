//! Knowledge-base tables: source files, documents and their versions, chunks, access groups
//! (owned by the RAG work).
//!
//! One knowledge base = one SQLite file (`kb.db` in the KB's folder). The write unit is one
//! document version: [`insert_version`] and its chunks go in one transaction together with the
//! [`upsert_file`] row that marks the source file as done, so a killed ingest leaves either the
//! whole version or nothing of it. Chunks carry an `indexed` flag for an external search index:
//! the index is updated after the transaction commits and the flag set afterwards, so a crash
//! between the two is repaired by re-adding the chunks still marked `indexed = 0`.

use crate::{Db, Result, StoreError};
use rusqlite::{Connection, OptionalExtension, params};

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
    if b.len() % 4 != 0 {
        return Err(StoreError::Corrupt { what: "kb_chunks.vector".into(), detail: format!("{} bytes is not a multiple of 4", b.len()) });
    }
    Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// Reads a `kb_meta` value.
pub fn meta_get(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn.query_row("SELECT value FROM kb_meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
}

/// Sets a `kb_meta` value.
pub fn meta_set(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.execute("INSERT INTO kb_meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value", params![key, value])?;
    Ok(())
}

/// The sync record of one source file.
pub fn file_get(conn: &Connection, path: &str) -> Result<Option<FileRecord>> {
    Ok(conn
        .query_row("SELECT path, content_hash, doc_id, version, ingested_at FROM kb_files WHERE path = ?1", [path], |r| {
            Ok(FileRecord { path: r.get(0)?, content_hash: r.get(1)?, doc_id: r.get(2)?, version: r.get(3)?, ingested_at: r.get(4)? })
        })
        .optional()?)
}

/// All source files, ordered by path.
pub fn files_all(conn: &Connection) -> Result<Vec<FileRecord>> {
    let mut st = conn.prepare("SELECT path, content_hash, doc_id, version, ingested_at FROM kb_files ORDER BY path")?;
    let rows = st.query_map([], |r| {
        Ok(FileRecord { path: r.get(0)?, content_hash: r.get(1)?, doc_id: r.get(2)?, version: r.get(3)?, ingested_at: r.get(4)? })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Records a source file as done (call inside the version's transaction).
pub fn upsert_file(conn: &Connection, f: &FileRecord) -> Result<()> {
    conn.execute(
        "INSERT INTO kb_files(path, content_hash, doc_id, version, ingested_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(path) DO UPDATE SET content_hash = excluded.content_hash, doc_id = excluded.doc_id,
             version = excluded.version, ingested_at = excluded.ingested_at",
        params![f.path, f.content_hash, f.doc_id, f.version, f.ingested_at],
    )?;
    Ok(())
}

/// The next free version number for a document.
pub fn next_version(conn: &Connection, doc_id: &str) -> Result<i64> {
    let v: Option<i64> = conn.query_row("SELECT MAX(version) FROM kb_versions WHERE doc_id = ?1", [doc_id], |r| r.get(0))?;
    Ok(v.unwrap_or(0) + 1)
}

/// Inserts a version (with its groups); versions from the same source become superseded.
/// Call [`recompute_current`] afterwards.
pub fn insert_version(conn: &Connection, v: &VersionRecord) -> Result<()> {
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

/// Marks as current the non-superseded version with the latest `valid_from` (ties: highest
/// version number); every other version of the document is not current.
pub fn recompute_current(conn: &Connection, doc_id: &str) -> Result<()> {
    conn.execute("UPDATE kb_versions SET current = 0 WHERE doc_id = ?1", [doc_id])?;
    conn.execute(
        "UPDATE kb_versions SET current = 1 WHERE doc_id = ?1 AND version = (
             SELECT version FROM kb_versions WHERE doc_id = ?1 AND superseded = 0
             ORDER BY valid_from DESC, version DESC LIMIT 1)",
        [doc_id],
    )?;
    Ok(())
}

/// Inserts one chunk (not yet indexed).
pub fn insert_chunk(conn: &Connection, c: &ChunkRecord) -> Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO kb_chunks(chunk_id, doc_id, version, ord, text, section, page, tokens, content_hash, vector, indexed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0)",
        params![c.chunk_id, c.doc_id, c.version, c.ord, c.text, c.section, c.page, c.tokens, c.content_hash, c.vector.as_deref().map(vec_to_blob)],
    )?;
    Ok(())
}

/// Marks chunks as present in the external index.
pub fn mark_indexed(conn: &Connection, chunk_ids: &[String]) -> Result<()> {
    let mut st = conn.prepare("UPDATE kb_chunks SET indexed = 1 WHERE chunk_id = ?1")?;
    for id in chunk_ids {
        st.execute([id])?;
    }
    Ok(())
}

/// Chunk ids still waiting for the external index.
pub fn unindexed_chunks(conn: &Connection) -> Result<Vec<String>> {
    let mut st = conn.prepare("SELECT chunk_id FROM kb_chunks WHERE indexed = 0 ORDER BY chunk_id")?;
    let rows = st.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Deletes every version that came from `path` (and their chunks) and the file record;
/// returns the ids of the deleted chunks and the affected document ids (current is recomputed).
pub fn delete_source(conn: &Connection, path: &str) -> Result<(Vec<String>, Vec<String>)> {
    let mut st = conn.prepare(
        "SELECT c.chunk_id FROM kb_chunks c JOIN kb_versions v ON v.doc_id = c.doc_id AND v.version = c.version WHERE v.source = ?1",
    )?;
    let chunks: Vec<String> = st.query_map([path], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    let mut st = conn.prepare("SELECT DISTINCT doc_id FROM kb_versions WHERE source = ?1")?;
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

/// All versions, ordered by document and version.
pub fn versions_all(conn: &Connection) -> Result<Vec<VersionRecord>> {
    let mut st = conn.prepare(&format!("SELECT {VERSION_COLS} FROM kb_versions ORDER BY doc_id, version"))?;
    let rows = st.query_map([], |r| version_from_row(conn, r))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// One version.
pub fn version_get(conn: &Connection, doc_id: &str, version: i64) -> Result<Option<VersionRecord>> {
    Ok(conn
        .query_row(&format!("SELECT {VERSION_COLS} FROM kb_versions WHERE doc_id = ?1 AND version = ?2"), params![doc_id, version], |r| {
            version_from_row(conn, r)
        })
        .optional()?)
}

/// Counts: (files, versions, current versions, chunks).
pub fn counts(conn: &Connection) -> Result<(i64, i64, i64, i64)> {
    Ok(conn.query_row(
        "SELECT (SELECT COUNT(*) FROM kb_files), (SELECT COUNT(*) FROM kb_versions),
                (SELECT COUNT(*) FROM kb_versions WHERE current = 1), (SELECT COUNT(*) FROM kb_chunks)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?)
}

/// `(chunk_id, content_hash)` of every chunk, sorted: a fingerprint of the KB's content.
pub fn chunk_fingerprint(conn: &Connection) -> Result<Vec<(String, String)>> {
    let mut st = conn.prepare("SELECT chunk_id, content_hash FROM kb_chunks ORDER BY chunk_id")?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

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

    #[test]
    fn current_follows_valid_from_not_ingest_order() {
        let mut db = Db::open_in_memory().unwrap();
        db.migrate(MIGRATIONS).unwrap();
        let c = db.conn();
        insert_version(c, &version("t", 1, "new.md", "2026-03-01")).unwrap();
        recompute_current(c, "t").unwrap();
        insert_version(c, &version("t", 2, "old.md", "2024-01-01")).unwrap();
        recompute_current(c, "t").unwrap();
        let vs = versions_all(c).unwrap();
        assert!(vs[0].current && !vs[1].current, "the 2026 version stays current: {vs:?}");
        // Deleting the newer source makes the older one current again.
        delete_source(c, "new.md").unwrap();
        let vs = versions_all(c).unwrap();
        assert_eq!(vs.len(), 1);
        assert!(vs[0].current);
    }

    #[test]
    fn same_source_supersedes_and_chunks_cascade() {
        let mut db = Db::open_in_memory().unwrap();
        db.migrate(MIGRATIONS).unwrap();
        let c = db.conn();
        insert_version(c, &version("d", 1, "a.md", "2026-01-01")).unwrap();
        let ch = ChunkRecord {
            chunk_id: "c1".into(),
            doc_id: "d".into(),
            version: 1,
            ord: 0,
            text: "x".into(),
            section: String::new(),
            page: None,
            tokens: 1,
            content_hash: "h".into(),
            vector: Some(vec![1.0, -2.5]),
        };
        insert_chunk(c, &ch).unwrap();
        insert_version(c, &version("d", 2, "a.md", "2025-01-01")).unwrap();
        recompute_current(c, "d").unwrap();
        let vs = versions_all(c).unwrap();
        assert!(!vs[0].current && vs[1].current, "a changed file's new content is current even with an older date");
        let blob: Vec<u8> = c.query_row("SELECT vector FROM kb_chunks", [], |r| r.get(0)).unwrap();
        assert_eq!(blob_to_vec(&blob).unwrap(), vec![1.0, -2.5]);
        let (gone, _) = delete_source(c, "a.md").unwrap();
        assert_eq!(gone, vec!["c1".to_string()]);
        assert_eq!(counts(c).unwrap().3, 0);
    }
}
