//! The quickstart's RAG part: write the example knowledge base that ships in the repo
//! (`examples/kb`, embedded in the binary), ingest it with its access map, and answer its
//! questions with citations.

use crate::answer::{Answer, AnswerConfig, Generator, answer};
use crate::embed::Embedder;
use crate::eval::{Question, asker_groups, load_questions};
use crate::kb::{IngestReport, KbOptions, KnowledgeBase, Progress, SearchRequest, SourceSpec};
use crate::{AccessMap, RagError, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The example files, relative to `examples/kb`, with their bytes.
pub const EXAMPLE_FILES: &[(&str, &[u8])] = &[
    ("README.md", include_bytes!("../../../examples/kb/README.md")),
    ("access.json", include_bytes!("../../../examples/kb/access.json")),
    ("questions.jsonl", include_bytes!("../../../examples/kb/questions.jsonl")),
    ("docs/public/tarify.md", include_bytes!("../../../examples/kb/docs/public/tarify.md")),
    ("docs/public/dostavka-faq.txt", include_bytes!("../../../examples/kb/docs/public/dostavka-faq.txt")),
    ("docs/public/returns-policy-en.md", include_bytes!("../../../examples/kb/docs/public/returns-policy-en.md")),
    ("docs/public/garantiya.html", include_bytes!("../../../examples/kb/docs/public/garantiya.html")),
    ("docs/public/sla.docx", include_bytes!("../../../examples/kb/docs/public/sla.docx")),
    ("docs/public/api-guide.pdf", include_bytes!("../../../examples/kb/docs/public/api-guide.pdf")),
    ("docs/finance/byudzhet-2026.csv", include_bytes!("../../../examples/kb/docs/finance/byudzhet-2026.csv")),
];

/// Writes the example knowledge base under `dir` (overwriting the example files only).
pub fn write_example(dir: &Path) -> Result<()> {
    for (rel, bytes) in EXAMPLE_FILES {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|source| RagError::Io { path: parent.to_path_buf(), source })?;
        }
        // Rewriting identical bytes would not change the hash, but skip it to keep mtimes.
        if std::fs::read(&p).ok().as_deref() != Some(*bytes) {
            std::fs::write(&p, bytes).map_err(|source| RagError::Io { path: p.clone(), source })?;
        }
    }
    Ok(())
}

/// What the quickstart did.
#[derive(Debug, serde::Serialize)]
pub struct QuickstartReport {
    /// Where the example files were written.
    pub example_dir: PathBuf,
    /// The KB folder.
    pub kb_dir: PathBuf,
    /// The ingest outcome.
    pub ingest: IngestReport,
    /// Each question with its asker groups and answer.
    pub answers: Vec<(Question, Answer)>,
}

/// Writes the example KB to `example_dir`, ingests `example_dir/docs` into the KB at `kb_dir`
/// (with `access.json`), and answers the example questions as their askers, printing each
/// answer and its citations to `out` (nothing when `out` is `None`). Pass the engine as
/// `generator`; without one, answers are extractive (the best-matching sentence, cited).
pub fn run_example(
    example_dir: &Path,
    kb_dir: &Path,
    embedder: Arc<dyn Embedder>,
    generator: Option<&dyn Generator>,
    mut out: Option<&mut dyn Write>,
) -> Result<QuickstartReport> {
    write_example(example_dir)?;
    let access = AccessMap::load(&example_dir.join("access.json"))?;
    let mut kb = KnowledgeBase::open(kb_dir, embedder, KbOptions::default())?;
    let spec = SourceSpec { path: example_dir.join("docs"), groups: None, meta: Default::default(), access: Some(access) };
    let ingest = kb.ingest(vec![spec], &mut |_p: Progress| {})?;
    let questions = load_questions(&example_dir.join("questions.jsonl"))?;
    let mut answers = Vec::new();
    for q in questions {
        let groups = asker_groups(&q);
        let req = SearchRequest::new(q.question.clone(), groups.clone(), 5);
        let a = answer(&kb, &q.question, &req, generator, &AnswerConfig::default())?;
        if let Some(w) = out.as_deref_mut() {
            let who = if groups.is_empty() { "everyone".to_string() } else { groups.join(",") };
            let _ = writeln!(w, "\n? {}  (as {who})", q.question);
            let _ = writeln!(w, "  {}", a.answer);
            for c in &a.citations {
                let label = c.version_label.as_deref().map(|l| format!(", {l}")).unwrap_or_default();
                let rel = Path::new(&c.source).strip_prefix(example_dir).map(|p| p.display().to_string()).unwrap_or_else(|_| c.source.clone());
                let _ = writeln!(w, "  [{}] {} — {} (v{}{label})", c.n, c.title, rel, c.version);
            }
        }
        answers.push((q, a));
    }
    Ok(QuickstartReport { example_dir: example_dir.to_path_buf(), kb_dir: kb_dir.to_path_buf(), ingest, answers })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real models, from `TRIDENT_TEST_E5` (e5 container) and `TRIDENT_TEST_MODELS`
    /// (folder with the default GGUF); None (with a notice) when either is unset.
    fn real_models() -> Option<(std::path::PathBuf, std::path::PathBuf)> {
        match (std::env::var_os("TRIDENT_TEST_E5"), std::env::var_os("TRIDENT_TEST_MODELS")) {
            (Some(e5), Some(models)) => Some((e5.into(), Path::new(&models).join("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"))),
            _ => {
                eprintln!("notice: TRIDENT_TEST_E5 / TRIDENT_TEST_MODELS unset: skipping the quickstart test that needs the real models");
                None
            }
        }
    }

    #[test]
    fn example_kb_ingests_and_answers() {
        let Some((e5, llm)) = real_models() else { return };
        let embedder: Arc<dyn Embedder> = Arc::new(trident_embed::E5Embedder::load(&e5).unwrap());
        let generator = crate::EngineGenerator::load(&llm, &trident_engine::LlamaConfig::default().with_ctx(4096)).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let mut buf = Vec::new();
        let r = run_example(&tmp.path().join("ex"), &tmp.path().join("kb"), embedder.clone(), Some(&generator), Some(&mut buf)).unwrap();
        let text = String::from_utf8(buf).unwrap();
        eprintln!("{text}");
        let skipped: Vec<_> = r.ingest.files.iter().filter(|f| f.status == crate::FileStatus::Skipped).collect();
        assert!(skipped.is_empty(), "every example file parses: {skipped:?}");
        assert_eq!(r.ingest.count(crate::FileStatus::Added), 7);
        let mut correct = 0;
        for (q, a) in &r.answers {
            let ok = match q.expect.as_str() {
                "answer" => !a.refused && q.answers.iter().any(|x| a.answer.contains(x.as_str())) && !a.citations.is_empty(),
                _ => a.refused,
            };
            correct += ok as usize;
            for f in &q.forbidden {
                assert!(!a.answer.contains(f.as_str()), "{} leaked {f}", q.id);
            }
            if q.expect != "answer" {
                assert!(a.refused, "{} must be declined: {}", q.id, a.answer);
            }
        }
        // The 0.5B model may miss a fact; retrieval, citations and refusals may not.
        assert!(correct * 4 >= r.answers.len() * 3, "{correct}/{} correct:\n{text}", r.answers.len());
        assert!(text.contains("[1]"));
        // Running again changes nothing.
        let r2 = run_example(&tmp.path().join("ex"), &tmp.path().join("kb"), embedder, None, None).unwrap();
        assert_eq!(r2.ingest.count(crate::FileStatus::Unchanged), 7);
    }
}
