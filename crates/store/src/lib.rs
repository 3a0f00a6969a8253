//! Storage: the embedded SQLite database shared by the knowledge base, prompts and adapters.
//!
//! One file (`trident.db` under `$TRIDENT_HOME` or a KB folder) in WAL mode. Each concern owns
//! its tables in its own module and registers its migrations by name; [`Db::migrate`] applies
//! the ones not yet applied, each in one transaction, so a crash never leaves half a schema.

pub mod kb;
pub mod prompts;

use rusqlite::Connection;
use std::path::{Path, PathBuf};

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or created.
    #[error("cannot open database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// A query failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value could not be decoded.
    #[error("corrupt stored value in {what}: {detail}")]
    Corrupt {
        /// Which table/column.
        what: String,
        /// What was wrong.
        detail: String,
    },
    /// A named object does not exist.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// The kind of object ("prompt", "document", …).
        kind: &'static str,
        /// Its name or id.
        name: String,
    },
    /// The caller asked for something invalid (bad name, conflicting version, …).
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    /// True when the error comes from the caller's input rather than the system.
    pub fn is_user_error(&self) -> bool {
        matches!(self, StoreError::NotFound { .. } | StoreError::Invalid(_))
    }
}

/// Result alias for the store.
pub type Result<T> = std::result::Result<T, StoreError>;

/// An open SQLite database with Trident's pragmas applied.
pub struct Db {
    conn: Connection,
    path: PathBuf,
}

impl Db {
    /// Opens (creating if needed) the database at `path`, in WAL mode with foreign keys on.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent() {
            // A missing parent is reported by SQLite below with the path; ignore this error.
            let _ = std::fs::create_dir_all(parent);
        }
        let conn = Connection::open(path).map_err(|source| StoreError::Open { path: path.to_path_buf(), source })?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;",
        )?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 name TEXT PRIMARY KEY,
                 applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
             );",
        )?;
        Ok(Self { conn, path: path.to_path_buf() })
    }

    /// Opens a private in-memory database (tests).
    pub fn open_in_memory() -> Result<Self> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch("PRAGMA foreign_keys=ON; CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')));")?;
        Ok(Self { conn, path: PathBuf::from(":memory:") })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying connection.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The underlying connection, mutably (for transactions).
    pub fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Applies each `(name, sql)` migration not applied before, in order, each in its own
    /// transaction. Names must be unique across the whole database (prefix them with the concern).
    pub fn migrate(&mut self, migrations: &[(&str, &str)]) -> Result<()> {
        for (name, sql) in migrations {
            let tx = self.conn.transaction()?;
            let done: bool = tx.query_row("SELECT EXISTS(SELECT 1 FROM schema_migrations WHERE name = ?1)", [name], |r| r.get(0))?;
            if !done {
                tx.execute_batch(sql)?;
                tx.execute("INSERT INTO schema_migrations(name) VALUES (?1)", [name])?;
            }
            tx.commit()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once() {
        let mut db = Db::open_in_memory().unwrap();
        let m = [("t_1", "CREATE TABLE t (x INTEGER);")];
        db.migrate(&m).unwrap();
        // Applying again must not fail with "table t already exists".
        db.migrate(&m).unwrap();
        let n: i64 = db.conn().query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn failed_migration_leaves_nothing_behind() {
        let mut db = Db::open_in_memory().unwrap();
        let bad = [("bad_1", "CREATE TABLE a (x INTEGER); THIS IS NOT SQL;")];
        assert!(db.migrate(&bad).is_err());
        let n: i64 = db.conn().query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = 'a'", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0, "a failed migration must roll back its tables");
    }
}
