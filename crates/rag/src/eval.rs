//! `trident eval rag`: retrieval and answer quality over a questions file in the format of
//! `shared/kb/questions.jsonl` (id, question, lang, groups, expect, answers, forbidden, sources).

use crate::answer::{AnswerConfig, Generator, answer};
use crate::kb::{KnowledgeBase, SearchRequest};
use crate::{RagError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One evaluation question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    /// Id.
    pub id: String,
    /// The question.
    pub question: String,
    /// `ru` / `en`.
    #[serde(default)]
    pub lang: Option<String>,
    /// The asker's groups (`["*"]` = no special group).
    #[serde(default)]
    pub groups: Vec<String>,
    /// `answer`, `refuse` or `unknown`.
    pub expect: String,
    /// Accepted spellings of the key fact (any one, case-insensitive).
    #[serde(default)]
    pub answers: Vec<String>,
    /// Strings that must never be shown to this asker.
    #[serde(default)]
    pub forbidden: Vec<String>,
    /// Documents holding the answer, relative to the docs root.
    #[serde(default)]
    pub sources: Vec<String>,
}

/// Reads a questions file, reporting the line of any bad entry.
pub fn load_questions(path: &Path) -> Result<Vec<Question>> {
    let text = std::fs::read_to_string(path).map_err(|source| RagError::Io { path: path.to_path_buf(), source })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let q: Question = serde_json::from_str(line).map_err(|e| RagError::BadInput(format!("{}:{}: {e}", path.display(), i + 1)))?;
        if !matches!(q.expect.as_str(), "answer" | "refuse" | "unknown") {
            return Err(RagError::BadInput(format!("{}:{}: expect must be answer, refuse or unknown, not {:?}", path.display(), i + 1, q.expect)));
        }
        out.push(q);
    }
    if out.is_empty() {
        return Err(RagError::BadInput(format!("{}: no questions", path.display())));
    }
    Ok(out)
}

/// Evaluation settings.
#[derive(Debug, Clone, Default)]
pub struct EvalConfig {
    /// Answering settings (its `k` is also the recall cut-off).
    pub answer: AnswerConfig,
    /// Sources whose personal data is masked by the guard (not counted as leaks here; reported
    /// separately until the guard masks them).
    pub pii_exempt_sources: Vec<String>,
}

/// The result for one question.
#[derive(Debug, Clone, Serialize)]
pub struct QuestionResult {
    /// Question id.
    pub id: String,
    /// Expected behaviour.
    pub expect: String,
    /// 1-based rank of the first chunk from a gold source in the top k, if any.
    pub gold_rank: Option<usize>,
    /// Whether the behaviour was right (fact present / declined / said it does not know).
    pub correct: bool,
    /// Whether the system declined.
    pub refused: bool,
    /// Whether a gold source is among the citations.
    pub cited_gold: bool,
    /// Forbidden strings found in anything shown to the asker.
    pub leaks: Vec<String>,
    /// Forbidden strings found only in guard-owned personal data.
    pub pii_leaks: Vec<String>,
    /// The answer text.
    pub answer: String,
    /// Retrieval ms.
    pub retrieve_ms: u64,
    /// Generation ms.
    pub generate_ms: u64,
}

/// Aggregate figures.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Questions.
    pub questions: usize,
    /// k used for recall.
    pub k: usize,
    /// Share of "answer" questions with a gold source in the top k.
    pub recall_at_k: f64,
    /// Mean reciprocal rank of the first gold chunk ("answer" questions).
    pub mrr: f64,
    /// Share of "answer" questions whose answer contains an accepted fact.
    pub answer_accuracy: f64,
    /// Share of answered "answer" questions citing a gold source.
    pub citation_rate: f64,
    /// Share of "refuse" questions declined.
    pub correct_refusal_rate: f64,
    /// Share of "unknown" questions answered "I don't know".
    pub unknown_rate: f64,
    /// Forbidden strings shown, in total (all questions).
    pub forbidden_leaks: usize,
    /// Forbidden strings shown that sit in guard-owned personal data.
    pub pii_leaks_pending_guard: usize,
    /// Latency percentiles of the whole answer, ms: p50, p95, max.
    pub latency_ms: [u64; 3],
    /// Retrieval latency percentiles, ms: p50, p95, max.
    pub retrieve_ms: [u64; 3],
    /// The generator used ("extractive" without a model).
    pub generator: String,
    /// Per question.
    pub results: Vec<QuestionResult>,
}

fn pct(mut v: Vec<u64>) -> [u64; 3] {
    if v.is_empty() {
        return [0; 3];
    }
    v.sort_unstable();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    [at(0.5), at(0.95), at(1.0)]
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn source_matches(source: &str, gold: &str) -> bool {
    let s = source.replace('\\', "/");
    s == gold || s.ends_with(&format!("/{gold}"))
}

/// Asker groups from a question: `["*"]` means no special group.
pub fn asker_groups(q: &Question) -> Vec<String> {
    q.groups.iter().filter(|g| g.as_str() != "*").cloned().collect()
}

/// Runs every question through search and answer and scores the outcome.
pub fn run(kb: &KnowledgeBase, questions: &[Question], generator: Option<&dyn Generator>, cfg: &EvalConfig, progress: &mut dyn FnMut(usize, &QuestionResult)) -> Result<EvalReport> {
    let k = cfg.answer.k;
    let mut results = Vec::new();
    for (i, q) in questions.iter().enumerate() {
        let req = SearchRequest::new(q.question.clone(), asker_groups(q), k);
        let hits = kb.search(&req)?;
        let gold_rank = hits.iter().position(|h| q.sources.iter().any(|g| source_matches(&h.source, g))).map(|p| p + 1);
        let a = answer(kb, &q.question, &req, generator, &cfg.answer)?;
        // Everything the asker is shown: the answer, its citations, the search results.
        let mut shown = vec![a.answer.clone()];
        for c in &a.citations {
            shown.push(format!("{} {} {} {}", c.source, c.title, c.section, c.version_label.clone().unwrap_or_default()));
        }
        let mut exempt_text = String::new();
        for h in &hits {
            if cfg.pii_exempt_sources.iter().any(|g| source_matches(&h.source, g)) {
                exempt_text.push_str(&h.text.to_lowercase());
            } else {
                shown.push(h.text.clone());
                shown.push(h.title.clone());
            }
        }
        let shown_lc = shown.join("\n").to_lowercase();
        let answer_lc = a.answer.to_lowercase();
        let mut leaks = Vec::new();
        let mut pii_leaks = Vec::new();
        for f in &q.forbidden {
            let f_lc = f.to_lowercase();
            let in_answer_from_exempt = answer_lc.contains(&f_lc) && exempt_text.contains(&f_lc);
            if shown_lc.contains(&f_lc) && !in_answer_from_exempt {
                leaks.push(f.clone());
            } else if exempt_text.contains(&f_lc) {
                pii_leaks.push(f.clone());
            }
        }
        let fact = q.answers.iter().any(|x| answer_lc.contains(&x.to_lowercase()));
        let correct = match q.expect.as_str() {
            "answer" => !a.refused && fact,
            _ => a.refused && leaks.is_empty(),
        };
        let cited_gold = a.citations.iter().any(|c| q.sources.iter().any(|g| source_matches(&c.source, g)));
        let r = QuestionResult {
            id: q.id.clone(),
            expect: q.expect.clone(),
            gold_rank,
            correct,
            refused: a.refused,
            cited_gold,
            leaks,
            pii_leaks,
            answer: a.answer,
            retrieve_ms: a.timings.retrieve_ms,
            generate_ms: a.timings.generate_ms,
        };
        progress(i, &r);
        results.push(r);
    }
    fn of<'a>(results: &'a [QuestionResult], e: &'a str) -> impl Iterator<Item = &'a QuestionResult> + 'a {
        results.iter().filter(move |r| r.expect == e)
    }
    let of = |e: &'static str| of(&results, e);
    let n_answer = of("answer").count();
    let answered: Vec<&QuestionResult> = of("answer").filter(|r| !r.refused).collect();
    Ok(EvalReport {
        questions: results.len(),
        k,
        recall_at_k: ratio(of("answer").filter(|r| r.gold_rank.is_some()).count(), n_answer),
        mrr: if n_answer == 0 { 0.0 } else { of("answer").map(|r| r.gold_rank.map(|x| 1.0 / x as f64).unwrap_or(0.0)).sum::<f64>() / n_answer as f64 },
        answer_accuracy: ratio(of("answer").filter(|r| r.correct).count(), n_answer),
        citation_rate: ratio(answered.iter().filter(|r| r.cited_gold).count(), answered.len()),
        correct_refusal_rate: ratio(of("refuse").filter(|r| r.correct).count(), of("refuse").count()),
        unknown_rate: ratio(of("unknown").filter(|r| r.correct).count(), of("unknown").count()),
        forbidden_leaks: results.iter().map(|r| r.leaks.len()).sum(),
        pii_leaks_pending_guard: results.iter().map(|r| r.pii_leaks.len()).sum(),
        latency_ms: pct(results.iter().map(|r| r.retrieve_ms + r.generate_ms).collect()),
        retrieve_ms: pct(results.iter().map(|r| r.retrieve_ms).collect()),
        generator: generator.map(|g| g.name().to_string()).unwrap_or_else(|| "extractive".into()),
        results,
    })
}
