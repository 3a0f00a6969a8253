//! The starter library: prompt specs shipped inside the binary (files under `library/`,
//! embedded at build time), with categories, tags and search.

use crate::error::{PromptError, Result};
use crate::spec::{Category, Format, PromptSpec};

include!(concat!(env!("OUT_DIR"), "/library.rs"));

/// One library entry.
#[derive(Debug, Clone)]
pub struct LibraryEntry {
    /// Path under `library/`.
    pub path: &'static str,
    /// The file's text.
    pub text: &'static str,
    /// Its format.
    pub format: Format,
    /// The parsed spec.
    pub spec: PromptSpec,
}

/// Every library entry, parsed and validated, by path.
pub fn entries() -> Result<Vec<LibraryEntry>> {
    FILES
        .iter()
        .map(|&(path, text)| {
            let format = Format::from_path(std::path::Path::new(path))
                .ok_or_else(|| PromptError::invalid(format!("library/{path}"), "unknown format"))?;
            let spec = PromptSpec::parse(text, format, &format!("library/{path}"))?;
            Ok(LibraryEntry { path, text, format, spec })
        })
        .collect()
}

/// One library entry by prompt name.
pub fn get(name: &str) -> Result<LibraryEntry> {
    entries()?.into_iter().find(|e| e.spec.name == name).ok_or_else(|| PromptError::NotFound { kind: "library prompt", name: name.into() })
}

/// Relevance of a spec to a free-text query: the number of query words found in its name,
/// title, description, tags and task (case-insensitive, with a 5-letter prefix match so that
/// Russian word forms match). 0 means no match.
pub fn relevance(spec: &PromptSpec, query: &str) -> usize {
    let hay = format!(
        "{} {} {} {} {} {}",
        spec.name,
        spec.title,
        spec.description,
        spec.tags.join(" "),
        spec.category.map(|c| c.as_str()).unwrap_or(""),
        spec.task
    )
    .to_lowercase();
    query
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .filter(|w| {
            let stem: String = w.chars().take(5).collect();
            hay.contains(w) || (w.chars().count() > 5 && hay.contains(&stem))
        })
        .count()
}

/// Library entries filtered by category and/or tag and ranked by a query (all when empty).
pub fn search(query: &str, category: Option<Category>, tag: Option<&str>) -> Result<Vec<LibraryEntry>> {
    let mut scored: Vec<(usize, LibraryEntry)> = entries()?
        .into_iter()
        .filter(|e| category.is_none_or(|c| e.spec.category == Some(c)))
        .filter(|e| tag.is_none_or(|t| e.spec.tags.iter().any(|x| x.eq_ignore_ascii_case(t))))
        .map(|e| (if query.trim().is_empty() { 1 } else { relevance(&e.spec, query) }, e))
        .filter(|(s, _)| *s > 0)
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.spec.name.cmp(&b.1.spec.name)));
    Ok(scored.into_iter().map(|(_, e)| e).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{CompileInput, compile};
    use crate::lint::{EstimateCounter, lint};

    #[test]
    fn library_is_complete_and_renders_with_example_values() {
        let all = entries().unwrap();
        assert!(all.len() >= 25, "only {} library prompts", all.len());
        let mut names = std::collections::BTreeSet::new();
        for e in &all {
            assert!(names.insert(e.spec.name.clone()), "duplicate name {}", e.spec.name);
            let s = &e.spec;
            assert!(s.category.is_some(), "{}: no category", e.path);
            assert!(!s.title.is_empty() && !s.tags.is_empty(), "{}: title/tags", e.path);
            let c = compile(s, &s.example_values(), &CompileInput::default())
                .unwrap_or_else(|err| panic!("{}: does not render with its example values: {err}", e.path));
            assert!(c.messages.len() >= 2, "{}", e.path);
            // Every library prompt is a complete formula: lint finds nothing.
            let r = lint(s, None, &EstimateCounter, None, Some(4096), None);
            assert!(r.findings.is_empty(), "{}: {:?}", e.path, r.findings);
        }
        for c in Category::ALL {
            assert!(all.iter().any(|e| e.spec.category == Some(c)), "no prompt in {c:?}");
        }
        let en = all.iter().filter(|e| e.spec.language == crate::spec::Language::En).count();
        assert!(en >= 3, "want some English prompts, have {en}");
    }

    #[test]
    fn search_ranks_and_filters() {
        let hits = search("вакансия", None, None).unwrap();
        assert!(!hits.is_empty());
        assert_eq!(hits[0].spec.category, Some(Category::HR));
        let support = search("", Some(Category::Support), None).unwrap();
        assert!(support.iter().all(|e| e.spec.category == Some(Category::Support)));
        assert!(get("support-ticket-triage").is_ok());
        assert!(matches!(get("nope"), Err(PromptError::NotFound { .. })));
    }
}
