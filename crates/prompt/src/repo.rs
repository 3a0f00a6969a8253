//! Prompt versions in the store: save (validated first), import (all or nothing), show by
//! `NAME`, `NAME@N` or `NAME@label`, log, diff, labels with history, rollback.

use crate::error::{PromptError, Result};
use crate::spec::{Format, PromptSpec};
use std::path::Path;
use trident_store::Db;
use trident_store::prompts::{self as tables, LabelEvent, LabelRow, NewVersion, PromptSummary, Saved, VersionRow};

/// A reference to a version: `name`, `name@3` or `name@production`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionRef {
    /// The latest version.
    Latest(String),
    /// A version number.
    Number(String, i64),
    /// A label.
    Label(String, String),
}

impl VersionRef {
    /// Parses `name`, `name@N` or `name@label`.
    pub fn parse(s: &str) -> Result<VersionRef> {
        let bad = |m: &str| PromptError::invalid("reference", format!("{s:?}: {m}"));
        match s.split_once('@') {
            None if !s.is_empty() => Ok(VersionRef::Latest(s.into())),
            None => Err(bad("empty name")),
            Some((n, v)) if n.is_empty() || v.is_empty() => Err(bad("expected NAME, NAME@VERSION or NAME@LABEL")),
            Some((n, v)) => match v.parse::<i64>() {
                Ok(k) if k >= 1 => Ok(VersionRef::Number(n.into(), k)),
                Ok(_) => Err(bad("versions start at 1")),
                Err(_) => Ok(VersionRef::Label(n.into(), v.into())),
            },
        }
    }

    /// The prompt name.
    pub fn name(&self) -> &str {
        match self {
            VersionRef::Latest(n) | VersionRef::Number(n, _) | VersionRef::Label(n, _) => n,
        }
    }
}

/// A stored version with its parsed spec.
#[derive(Debug, Clone)]
pub struct StoredPrompt {
    /// The version row (text, author, message, hash, …).
    pub row: VersionRow,
    /// The parsed spec.
    pub spec: PromptSpec,
    /// The format of the stored text.
    pub format: Format,
}

/// The prompt store.
pub struct PromptRepo {
    db: Db,
}

impl PromptRepo {
    /// Opens `trident.db` under `home` and applies the prompt migrations.
    pub fn open(home: &Path) -> Result<PromptRepo> {
        let mut db = Db::open(&home.join("trident.db"))?;
        tables::migrate(&mut db)?;
        Ok(PromptRepo { db })
    }

    /// Wraps an open database (applying the prompt migrations).
    pub fn from_db(mut db: Db) -> Result<PromptRepo> {
        tables::migrate(&mut db)?;
        Ok(PromptRepo { db })
    }

    fn new_version(text: &str, format: Format, origin: &str, author: &str, message: &str) -> Result<NewVersion> {
        let spec = PromptSpec::parse(text, format, origin)?;
        Ok(NewVersion {
            name: spec.name.clone(),
            format: format.as_str().into(),
            content: text.into(),
            author: author.into(),
            message: message.into(),
            category: spec.category.map(|c| c.as_str().to_string()).unwrap_or_default(),
            tags: spec.tags.clone(),
            title: spec.title.clone(),
        })
    }

    /// Validates and saves a spec text as a new version (no new version when unchanged).
    pub fn save(&mut self, text: &str, format: Format, origin: &str, author: &str, message: &str) -> Result<Saved> {
        let nv = Self::new_version(text, format, origin, author, message)?;
        let mut saved = tables::save_versions(&mut self.db, &[nv])?;
        Ok(saved.remove(0))
    }

    /// Validates every input first, then saves them all in one transaction.
    pub fn import(&mut self, items: &[(String, Format, String)], author: &str, message: &str) -> Result<Vec<Saved>> {
        let mut batch = Vec::with_capacity(items.len());
        let mut names = std::collections::BTreeSet::new();
        for (text, format, origin) in items {
            let nv = Self::new_version(text, *format, origin, author, message)?;
            if !names.insert(nv.name.clone()) {
                return Err(PromptError::invalid("name", format!("{origin}: prompt {:?} appears twice in the import", nv.name)));
            }
            batch.push(nv);
        }
        Ok(tables::save_versions(&mut self.db, &batch)?)
    }

    /// Imports the built-in library.
    pub fn import_library(&mut self, author: &str) -> Result<Vec<Saved>> {
        let items: Vec<(String, Format, String)> =
            crate::library::entries()?.into_iter().map(|e| (e.text.to_string(), e.format, format!("library/{}", e.path))).collect();
        self.import(&items, author, "import from the built-in library")
    }

    /// Resolves a reference to a version number.
    pub fn resolve(&self, r: &VersionRef) -> Result<i64> {
        Ok(match r {
            VersionRef::Latest(n) => tables::get_version(&self.db, n, None)?.version,
            VersionRef::Number(n, k) => tables::get_version(&self.db, n, Some(*k))?.version,
            VersionRef::Label(n, l) => tables::resolve_label(&self.db, n, l)?,
        })
    }

    /// One stored version, parsed.
    pub fn get(&self, reference: &str) -> Result<StoredPrompt> {
        let r = VersionRef::parse(reference)?;
        let n = self.resolve(&r)?;
        let row = tables::get_version(&self.db, r.name(), Some(n))?;
        let format = Format::parse(&row.format)
            .ok_or_else(|| trident_store::StoreError::Corrupt { what: "prompt_versions.format".into(), detail: row.format.clone() })?;
        let spec = PromptSpec::parse(&row.content, format, &format!("{}@{}", row.name, row.version))?;
        Ok(StoredPrompt { row, spec, format })
    }

    /// All versions of a prompt, newest first.
    pub fn log(&self, name: &str) -> Result<Vec<VersionRow>> {
        Ok(tables::log(&self.db, name)?)
    }

    /// Every prompt's latest version.
    pub fn list(&self) -> Result<Vec<PromptSummary>> {
        Ok(tables::list(&self.db)?)
    }

    /// Stored prompts ranked by a query, optionally filtered by category and tag.
    pub fn search(&self, query: &str, category: Option<crate::spec::Category>, tag: Option<&str>) -> Result<Vec<PromptSummary>> {
        let mut out = Vec::new();
        for s in self.list()? {
            let p = self.get(&format!("{}@{}", s.name, s.latest))?;
            if category.is_some_and(|c| p.spec.category != Some(c)) {
                continue;
            }
            if tag.is_some_and(|t| !p.spec.tags.iter().any(|x| x.eq_ignore_ascii_case(t))) {
                continue;
            }
            let score = if query.trim().is_empty() { 1 } else { crate::library::relevance(&p.spec, query) };
            if score > 0 {
                out.push((score, s));
            }
        }
        out.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.name.cmp(&b.1.name)));
        Ok(out.into_iter().map(|(_, s)| s).collect())
    }

    /// The labels of a prompt.
    pub fn labels(&self, name: &str) -> Result<Vec<LabelRow>> {
        Ok(tables::labels(&self.db, name)?)
    }

    /// Points a label at the version `target` refers to (a number, another label or latest).
    pub fn set_label(&mut self, name: &str, label: &str, target: &str, author: &str, message: &str) -> Result<LabelEvent> {
        let r = match target.parse::<i64>() {
            Ok(n) => VersionRef::Number(name.into(), n),
            Err(_) if target == "latest" => VersionRef::Latest(name.into()),
            Err(_) => VersionRef::Label(name.into(), target.into()),
        };
        let v = self.resolve(&r)?;
        Ok(tables::set_label(&mut self.db, name, label, v, author, message)?)
    }

    /// Label moves, oldest first.
    pub fn label_history(&self, name: &str, label: Option<&str>) -> Result<Vec<LabelEvent>> {
        Ok(tables::label_history(&self.db, name, label)?)
    }

    /// A unified line diff between two references' stored texts.
    pub fn diff(&self, a: &str, b: &str) -> Result<String> {
        let pa = self.get(a)?;
        let pb = self.get(b)?;
        Ok(unified_diff(
            &format!("{}@{}", pa.row.name, pa.row.version),
            &format!("{}@{}", pb.row.name, pb.row.version),
            &pa.row.content,
            &pb.row.content,
        ))
    }
}

/// A unified diff of two texts by lines (LCS), with 3 lines of context.
pub fn unified_diff(a_name: &str, b_name: &str, a: &str, b: &str) -> String {
    let x: Vec<&str> = a.lines().collect();
    let y: Vec<&str> = b.lines().collect();
    let (n, m) = (x.len(), y.len());
    let mut l = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            l[i][j] = if x[i] == y[j] { l[i + 1][j + 1] + 1 } else { l[i + 1][j].max(l[i][j + 1]) };
        }
    }
    // ops: (' ' | '-' | '+', line)
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && x[i] == y[j] {
            ops.push((' ', x[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || l[i][j + 1] >= l[i + 1][j]) {
            ops.push(('+', y[j]));
            j += 1;
        } else {
            ops.push(('-', x[i]));
            i += 1;
        }
    }
    if ops.iter().all(|(c, _)| *c == ' ') {
        return String::new();
    }
    let mut out = format!("--- {a_name}\n+++ {b_name}\n");
    let ctx = 3;
    let changed: Vec<usize> = ops.iter().enumerate().filter(|(_, (c, _))| *c != ' ').map(|(k, _)| k).collect();
    let mut k = 0;
    while k < changed.len() {
        let start = changed[k].saturating_sub(ctx);
        let mut end = changed[k];
        while k < changed.len() && changed[k] <= end + 2 * ctx + 1 {
            end = changed[k];
            k += 1;
        }
        let end = (end + ctx + 1).min(ops.len());
        let a_start = ops[..start].iter().filter(|(c, _)| *c != '+').count();
        let b_start = ops[..start].iter().filter(|(c, _)| *c != '-').count();
        let a_len = ops[start..end].iter().filter(|(c, _)| *c != '+').count();
        let b_len = ops[start..end].iter().filter(|(c, _)| *c != '-').count();
        out.push_str(&format!("@@ -{},{} +{},{} @@\n", a_start + 1, a_len, b_start + 1, b_len));
        for (c, line) in &ops[start..end] {
            out.push(*c);
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{CompileInput, compile};

    const V1: &str = "# Приветствие\nname = \"hello\"\nrole = \"Ты — бот.\"\ntask = \"Поздоровайся с {{who}}.\"\n\n[[variables]]\nname = \"who\"\nexample = \"Анна\"\n";

    fn repo() -> PromptRepo {
        PromptRepo::from_db(Db::open_in_memory().unwrap()).unwrap()
    }

    #[test]
    fn file_to_store_to_file_is_lossless() {
        let mut r = repo();
        let s = r.save(V1, Format::Toml, "hello.toml", "ann", "first").unwrap();
        assert_eq!(s.version, 1);
        let back = r.get("hello@1").unwrap();
        assert_eq!(back.row.content, V1, "stored text must be byte-identical, comments included");
        assert_eq!(back.spec, PromptSpec::parse(V1, Format::Toml, "f").unwrap());
        assert_eq!(back.row.content_hash, trident_store::prompts::content_hash(V1));
    }

    #[test]
    fn editing_creates_a_new_version_and_the_old_renders_as_before() {
        let mut r = repo();
        r.save(V1, Format::Toml, "f", "ann", "v1").unwrap();
        let vals = serde_json::json!({"who": "Олег"}).as_object().unwrap().clone();
        let before = compile(&r.get("hello@1").unwrap().spec, &vals, &CompileInput::default()).unwrap();
        let v2 = V1.replace("Поздоровайся", "Тепло поздоровайся");
        assert_eq!(r.save(&v2, Format::Toml, "f", "bob", "warmer").unwrap().version, 2);
        let after = compile(&r.get("hello@1").unwrap().spec, &vals, &CompileInput::default()).unwrap();
        assert_eq!(before, after);
        assert_ne!(compile(&r.get("hello").unwrap().spec, &vals, &CompileInput::default()).unwrap(), before);
        let log = r.log("hello").unwrap();
        assert_eq!((log[0].version, log[0].author.as_str(), log[0].message.as_str()), (2, "bob", "warmer"));
        let d = r.diff("hello@1", "hello@2").unwrap();
        assert!(d.contains("-task = \"Поздоровайся") && d.contains("+task = \"Тепло"), "{d}");
        assert!(d.starts_with("--- hello@1\n+++ hello@2\n@@ -1,"), "{d}");
    }

    #[test]
    fn labels_and_rollback() {
        let mut r = repo();
        r.save(V1, Format::Toml, "f", "a", "1").unwrap();
        r.save(&V1.replace("бот", "робот"), Format::Toml, "f", "a", "2").unwrap();
        r.set_label("hello", "production", "1", "a", "ship").unwrap();
        r.set_label("hello", "staging", "latest", "a", "try").unwrap();
        r.set_label("hello", "production", "staging", "a", "promote").unwrap();
        assert_eq!(r.get("hello@production").unwrap().row.version, 2);
        r.set_label("hello", "production", "1", "a", "rollback").unwrap();
        assert_eq!(r.get("hello@production").unwrap().row.version, 1);
        assert_eq!(r.label_history("hello", Some("production")).unwrap().len(), 3);
        assert!(r.get("hello@nolabel").is_err());
        assert!(r.get("hello@0").is_err());
    }

    #[test]
    fn bad_import_writes_nothing() {
        let mut r = repo();
        let items = vec![
            (V1.to_string(), Format::Toml, "a.toml".to_string()),
            ("name = \"b\"\ntask = \"{{nope}}\"\n".to_string(), Format::Toml, "b.toml".to_string()),
        ];
        let e = r.import(&items, "a", "m").unwrap_err();
        assert!(matches!(e, PromptError::UnknownVariable { .. }), "{e}");
        assert!(r.list().unwrap().is_empty());
    }

    #[test]
    fn library_imports_and_searches() {
        let mut r = repo();
        let saved = r.import_library("test").unwrap();
        assert!(saved.len() >= 25);
        assert!(saved.iter().all(|s| s.created && s.version == 1));
        // Re-import is a no-op.
        assert!(r.import_library("test").unwrap().iter().all(|s| !s.created));
        let hits = r.search("тикет поддержка", Some(crate::spec::Category::Support), None).unwrap();
        assert!(hits.iter().any(|h| h.name == "support-ticket-triage"), "{hits:?}");
    }

    #[test]
    fn refs_parse() {
        assert_eq!(VersionRef::parse("a@2").unwrap(), VersionRef::Number("a".into(), 2));
        assert_eq!(VersionRef::parse("a@prod").unwrap(), VersionRef::Label("a".into(), "prod".into()));
        assert!(VersionRef::parse("@x").is_err());
    }
}
