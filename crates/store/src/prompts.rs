//! Prompt tables: specs, immutable versions, labels (owned by the prompt work).
//!
//! A prompt is a name with numbered versions (1, 2, …). A version stores the spec file's text
//! verbatim (so file → store → file is byte-for-byte lossless), its format (`toml`/`yaml`), the
//! author, a message, a UTC timestamp and the SHA-256 of the text. Versions are immutable: the
//! schema refuses UPDATE and DELETE with triggers, so not even a buggy caller can rewrite history.
//! Labels (`production`, `staging`, any name) point at one version each and move only through
//! [`set_label`], which records every move in `prompt_label_events`; a rollback is a label move.
//!
//! This module stores text and metadata only; parsing and validating specs is the prompt crate's
//! job (it validates before calling [`save_versions`]).

use crate::{Db, Result, StoreError};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The prompt tables' migrations, applied by [`migrate`].
pub const MIGRATIONS: &[(&str, &str)] = &[(
    "prompts_1",
    "CREATE TABLE prompt_versions (
         name TEXT NOT NULL,
         version INTEGER NOT NULL CHECK (version >= 1),
         format TEXT NOT NULL CHECK (format IN ('toml', 'yaml')),
         content TEXT NOT NULL,
         content_hash TEXT NOT NULL,
         author TEXT NOT NULL,
         message TEXT NOT NULL,
         created_at TEXT NOT NULL,
         category TEXT NOT NULL DEFAULT '',
         tags TEXT NOT NULL DEFAULT '[]',
         title TEXT NOT NULL DEFAULT '',
         PRIMARY KEY (name, version)
     );
     CREATE TRIGGER prompt_versions_no_update BEFORE UPDATE ON prompt_versions
     BEGIN SELECT RAISE(ABORT, 'prompt versions are immutable'); END;
     CREATE TRIGGER prompt_versions_no_delete BEFORE DELETE ON prompt_versions
     BEGIN SELECT RAISE(ABORT, 'prompt versions are immutable'); END;
     CREATE TABLE prompt_labels (
         name TEXT NOT NULL,
         label TEXT NOT NULL,
         version INTEGER NOT NULL,
         updated_at TEXT NOT NULL,
         PRIMARY KEY (name, label),
         FOREIGN KEY (name, version) REFERENCES prompt_versions(name, version)
     );
     CREATE TABLE prompt_label_events (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         name TEXT NOT NULL,
         label TEXT NOT NULL,
         from_version INTEGER,
         to_version INTEGER NOT NULL,
         author TEXT NOT NULL,
         message TEXT NOT NULL,
         at TEXT NOT NULL
     );
     CREATE INDEX prompt_label_events_by_name ON prompt_label_events(name, label, id);",
)];

/// Applies the prompt tables' migrations (idempotent).
pub fn migrate(db: &mut Db) -> Result<()> {
    db.migrate(MIGRATIONS)
}

/// A version to be saved.
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// Prompt name (`[a-z0-9][a-z0-9._-]*`, at most 100 characters).
    pub name: String,
    /// `toml` or `yaml`.
    pub format: String,
    /// The spec file's text, stored verbatim.
    pub content: String,
    /// Who saved it.
    pub author: String,
    /// Why (like a commit message).
    pub message: String,
    /// Library category, for listing and search ("" when none).
    pub category: String,
    /// Tags, for listing and search.
    pub tags: Vec<String>,
    /// Human title ("" when none).
    pub title: String,
}

/// One stored, immutable version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRow {
    /// Prompt name.
    pub name: String,
    /// Version number, from 1.
    pub version: i64,
    /// `toml` or `yaml`.
    pub format: String,
    /// The spec text exactly as saved.
    pub content: String,
    /// SHA-256 of `content`, hex.
    pub content_hash: String,
    /// Who saved it.
    pub author: String,
    /// The save message.
    pub message: String,
    /// UTC timestamp (RFC 3339).
    pub created_at: String,
    /// Library category.
    pub category: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Title.
    pub title: String,
}

/// What [`save_versions`] did with one input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    /// Prompt name.
    pub name: String,
    /// The version that now holds this content.
    pub version: i64,
    /// False when the content equalled the latest version's and nothing was written.
    pub created: bool,
    /// SHA-256 of the content.
    pub content_hash: String,
}

/// A label and the version it points at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelRow {
    /// Prompt name.
    pub name: String,
    /// Label name.
    pub label: String,
    /// Version it points at.
    pub version: i64,
    /// When it last moved.
    pub updated_at: String,
}

/// One recorded label move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelEvent {
    /// Prompt name.
    pub name: String,
    /// Label name.
    pub label: String,
    /// Where it pointed before (None when the label was new).
    pub from_version: Option<i64>,
    /// Where it points after.
    pub to_version: i64,
    /// Who moved it.
    pub author: String,
    /// Why.
    pub message: String,
    /// When (UTC, RFC 3339).
    pub at: String,
}

/// A summary of one prompt for listings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptSummary {
    /// Prompt name.
    pub name: String,
    /// Latest version number.
    pub latest: i64,
    /// Title of the latest version.
    pub title: String,
    /// Category of the latest version.
    pub category: String,
    /// Tags of the latest version.
    pub tags: Vec<String>,
    /// When the latest version was saved.
    pub updated_at: String,
    /// Labels and their versions.
    pub labels: Vec<(String, i64)>,
}

/// SHA-256 of a text, hex.
pub fn content_hash(content: &str) -> String {
    hex::encode(Sha256::digest(content.as_bytes()))
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Checks a prompt or label name: lowercase ASCII letters, digits, `.`, `_`, `-`, 1–100 chars.
pub fn check_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "invalid {kind} name {name:?}: use 1-100 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
        )))
    }
}

/// Saves each input as a new version of its prompt, all in one transaction (all or nothing).
/// Content identical to the prompt's latest version creates nothing (`created: false`).
pub fn save_versions(db: &mut Db, inputs: &[NewVersion]) -> Result<Vec<Saved>> {
    for v in inputs {
        check_name("prompt", &v.name)?;
        if v.format != "toml" && v.format != "yaml" {
            return Err(StoreError::Invalid(format!("prompt {}: format must be toml or yaml, not {:?}", v.name, v.format)));
        }
    }
    let tx = db.conn_mut().transaction()?;
    let mut out = Vec::with_capacity(inputs.len());
    for v in inputs {
        let hash = content_hash(&v.content);
        let latest: Option<(i64, String)> = tx
            .query_row(
                "SELECT version, content_hash FROM prompt_versions WHERE name = ?1 ORDER BY version DESC LIMIT 1",
                [&v.name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((n, h)) = &latest
            && *h == hash
        {
            out.push(Saved { name: v.name.clone(), version: *n, created: false, content_hash: hash });
            continue;
        }
        let version = latest.map_or(1, |(n, _)| n + 1);
        let tags = serde_json::to_string(&v.tags).map_err(|e| StoreError::Invalid(e.to_string()))?;
        tx.execute(
            "INSERT INTO prompt_versions (name, version, format, content, content_hash, author, message, created_at, category, tags, title)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![v.name, version, v.format, v.content, hash, v.author, v.message, now(), v.category, tags, v.title],
        )?;
        out.push(Saved { name: v.name.clone(), version, created: true, content_hash: hash });
    }
    tx.commit()?;
    Ok(out)
}

fn row_to_version(r: &rusqlite::Row<'_>) -> rusqlite::Result<(VersionRow, String)> {
    Ok((
        VersionRow {
            name: r.get(0)?,
            version: r.get(1)?,
            format: r.get(2)?,
            content: r.get(3)?,
            content_hash: r.get(4)?,
            author: r.get(5)?,
            message: r.get(6)?,
            created_at: r.get(7)?,
            category: r.get(8)?,
            tags: Vec::new(),
            title: r.get(10)?,
        },
        r.get(9)?,
    ))
}

fn decode(pair: (VersionRow, String)) -> Result<VersionRow> {
    let (mut row, tags) = pair;
    row.tags = serde_json::from_str(&tags)
        .map_err(|e| StoreError::Corrupt { what: format!("prompt_versions.tags of {}@{}", row.name, row.version), detail: e.to_string() })?;
    Ok(row)
}

const COLS: &str = "name, version, format, content, content_hash, author, message, created_at, category, tags, title";

/// One version (`None` for the latest).
pub fn get_version(db: &Db, name: &str, version: Option<i64>) -> Result<VersionRow> {
    let row = match version {
        Some(n) => db
            .conn()
            .query_row(&format!("SELECT {COLS} FROM prompt_versions WHERE name = ?1 AND version = ?2"), params![name, n], row_to_version)
            .optional()?,
        None => db
            .conn()
            .query_row(
                &format!("SELECT {COLS} FROM prompt_versions WHERE name = ?1 ORDER BY version DESC LIMIT 1"),
                [name],
                row_to_version,
            )
            .optional()?,
    };
    match row {
        Some(pair) => decode(pair),
        None => Err(StoreError::NotFound {
            kind: "prompt",
            name: match version {
                Some(n) => format!("{name}@{n}"),
                None => name.to_string(),
            },
        }),
    }
}

/// All versions of a prompt, newest first.
pub fn log(db: &Db, name: &str) -> Result<Vec<VersionRow>> {
    let mut stmt = db.conn().prepare(&format!("SELECT {COLS} FROM prompt_versions WHERE name = ?1 ORDER BY version DESC"))?;
    let rows = stmt.query_map([name], row_to_version)?.collect::<rusqlite::Result<Vec<_>>>()?;
    if rows.is_empty() {
        return Err(StoreError::NotFound { kind: "prompt", name: name.to_string() });
    }
    rows.into_iter().map(decode).collect()
}

/// Every prompt's latest version summary, by name.
pub fn list(db: &Db) -> Result<Vec<PromptSummary>> {
    let mut stmt = db.conn().prepare(&format!(
        "SELECT {COLS} FROM prompt_versions v WHERE version = (SELECT MAX(version) FROM prompt_versions w WHERE w.name = v.name) ORDER BY name"
    ))?;
    let rows = stmt.query_map([], row_to_version)?.collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for pair in rows {
        let row = decode(pair)?;
        let labels = labels(db, &row.name)?.into_iter().map(|l| (l.label, l.version)).collect();
        out.push(PromptSummary {
            name: row.name,
            latest: row.version,
            title: row.title,
            category: row.category,
            tags: row.tags,
            updated_at: row.created_at,
            labels,
        });
    }
    Ok(out)
}

/// The labels of a prompt, by label name.
pub fn labels(db: &Db, name: &str) -> Result<Vec<LabelRow>> {
    let mut stmt = db.conn().prepare("SELECT name, label, version, updated_at FROM prompt_labels WHERE name = ?1 ORDER BY label")?;
    let rows = stmt
        .query_map([name], |r| Ok(LabelRow { name: r.get(0)?, label: r.get(1)?, version: r.get(2)?, updated_at: r.get(3)? }))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The version a label points at.
pub fn resolve_label(db: &Db, name: &str, label: &str) -> Result<i64> {
    db.conn()
        .query_row("SELECT version FROM prompt_labels WHERE name = ?1 AND label = ?2", [name, label], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::NotFound { kind: "label", name: format!("{name}@{label}") })
}

/// Points `label` at `version` (creating the label if needed) and records the move.
/// Returns the recorded event. Moving a label to where it already points records nothing.
pub fn set_label(db: &mut Db, name: &str, label: &str, version: i64, author: &str, message: &str) -> Result<LabelEvent> {
    check_name("label", label)?;
    if label.chars().all(|c| c.is_ascii_digit()) {
        return Err(StoreError::Invalid(format!("label {label:?} would be confused with a version number")));
    }
    // Fails with NotFound when the version does not exist.
    get_version(db, name, Some(version))?;
    let tx = db.conn_mut().transaction()?;
    let from: Option<i64> = tx
        .query_row("SELECT version FROM prompt_labels WHERE name = ?1 AND label = ?2", [name, label], |r| r.get(0))
        .optional()?;
    let at = now();
    let event = LabelEvent {
        name: name.into(),
        label: label.into(),
        from_version: from,
        to_version: version,
        author: author.into(),
        message: message.into(),
        at: at.clone(),
    };
    if from == Some(version) {
        return Ok(event);
    }
    tx.execute(
        "INSERT INTO prompt_labels (name, label, version, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(name, label) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at",
        params![name, label, version, at],
    )?;
    tx.execute(
        "INSERT INTO prompt_label_events (name, label, from_version, to_version, author, message, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![name, label, from, version, author, message, at],
    )?;
    tx.commit()?;
    Ok(event)
}

/// The history of label moves for a prompt (optionally one label), oldest first.
pub fn label_history(db: &Db, name: &str, label: Option<&str>) -> Result<Vec<LabelEvent>> {
    let mut stmt = db.conn().prepare(
        "SELECT name, label, from_version, to_version, author, message, at FROM prompt_label_events
         WHERE name = ?1 AND (?2 IS NULL OR label = ?2) ORDER BY id",
    )?;
    let rows = stmt
        .query_map(params![name, label], |r| {
            Ok(LabelEvent {
                name: r.get(0)?,
                label: r.get(1)?,
                from_version: r.get(2)?,
                to_version: r.get(3)?,
                author: r.get(4)?,
                message: r.get(5)?,
                at: r.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Db {
        let mut db = Db::open_in_memory().unwrap();
        migrate(&mut db).unwrap();
        db
    }

    fn nv(name: &str, content: &str) -> NewVersion {
        NewVersion {
            name: name.into(),
            format: "toml".into(),
            content: content.into(),
            author: "ann".into(),
            message: "m".into(),
            category: "HR".into(),
            tags: vec!["a".into()],
            title: "T".into(),
        }
    }

    #[test]
    fn versions_are_numbered_and_deduplicated() {
        let mut db = db();
        let s = save_versions(&mut db, &[nv("p", "a = 1\n")]).unwrap();
        assert_eq!((s[0].version, s[0].created), (1, true));
        let s = save_versions(&mut db, &[nv("p", "a = 1\n")]).unwrap();
        assert_eq!((s[0].version, s[0].created), (1, false));
        let s = save_versions(&mut db, &[nv("p", "a = 2\n")]).unwrap();
        assert_eq!((s[0].version, s[0].created), (2, true));
        assert_eq!(get_version(&db, "p", Some(1)).unwrap().content, "a = 1\n");
        assert_eq!(get_version(&db, "p", None).unwrap().version, 2);
        assert_eq!(log(&db, "p").unwrap().len(), 2);
        assert_eq!(get_version(&db, "p", None).unwrap().tags, vec!["a".to_string()]);
    }

    #[test]
    fn versions_cannot_be_rewritten() {
        let mut db = db();
        save_versions(&mut db, &[nv("p", "x")]).unwrap();
        let e = db.conn().execute("UPDATE prompt_versions SET content = 'y'", []);
        assert!(e.is_err());
        let e = db.conn().execute("DELETE FROM prompt_versions", []);
        assert!(e.is_err());
        assert_eq!(get_version(&db, "p", Some(1)).unwrap().content, "x");
    }

    #[test]
    fn batch_is_all_or_nothing() {
        let mut db = db();
        let err = save_versions(&mut db, &[nv("good", "x"), nv("Bad Name", "y")]);
        assert!(err.is_err());
        assert!(list(&db).unwrap().is_empty());
    }

    #[test]
    fn labels_move_with_history() {
        let mut db = db();
        save_versions(&mut db, &[nv("p", "1")]).unwrap();
        save_versions(&mut db, &[nv("p", "2")]).unwrap();
        set_label(&mut db, "p", "production", 1, "ann", "first").unwrap();
        set_label(&mut db, "p", "production", 2, "ann", "promote").unwrap();
        assert_eq!(resolve_label(&db, "p", "production").unwrap(), 2);
        // Rollback is a label move.
        let ev = set_label(&mut db, "p", "production", 1, "bob", "rollback").unwrap();
        assert_eq!(ev.from_version, Some(2));
        let hist = label_history(&db, "p", Some("production")).unwrap();
        assert_eq!(hist.iter().map(|e| e.to_version).collect::<Vec<_>>(), vec![1, 2, 1]);
        assert!(matches!(set_label(&mut db, "p", "production", 9, "a", ""), Err(StoreError::NotFound { .. })));
        assert!(matches!(set_label(&mut db, "p", "12", 1, "a", ""), Err(StoreError::Invalid(_))));
        let l = list(&db).unwrap();
        assert_eq!(l[0].labels, vec![("production".to_string(), 1)]);
    }
}
