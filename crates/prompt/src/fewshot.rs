//! Dynamic few-shot: pick the examples most similar to the input from an example set.
//!
//! Similarity is pluggable through [`Similarity`]. The built-in [`Lexical`] scorer is cosine
//! over character 3-gram and word counts (robust to Russian inflection without a stemmer);
//! an embedding-based scorer (the `embed` crate's `Embedder`) can implement the same trait
//! later without touching callers.

use crate::error::{PromptError, Result};
use crate::spec::{Example, ExampleSet};
use std::collections::HashMap;
use std::path::Path;

/// Scores how similar two texts are (higher is more similar).
pub trait Similarity {
    /// Scores each candidate against the query; one score per candidate, in order.
    fn scores(&self, query: &str, candidates: &[&str]) -> Result<Vec<f32>>;
}

/// Lexical cosine similarity over lower-cased words and character 3-grams.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lexical;

fn features(text: &str) -> HashMap<String, f32> {
    let mut f = HashMap::new();
    let lower = text.to_lowercase();
    for word in lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        *f.entry(format!("w:{word}")).or_insert(0.0) += 1.0;
        let chars: Vec<char> = format!(" {word} ").chars().collect();
        for g in chars.windows(3) {
            *f.entry(g.iter().collect::<String>()).or_insert(0.0) += 1.0;
        }
    }
    f
}

fn cosine(a: &HashMap<String, f32>, b: &HashMap<String, f32>) -> f32 {
    let dot: f32 = a.iter().filter_map(|(k, v)| b.get(k).map(|w| v * w)).sum();
    let na: f32 = a.values().map(|v| v * v).sum::<f32>().sqrt();
    let nb: f32 = b.values().map(|v| v * v).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot / (na * nb) }
}

impl Similarity for Lexical {
    fn scores(&self, query: &str, candidates: &[&str]) -> Result<Vec<f32>> {
        let q = features(query);
        Ok(candidates.iter().map(|c| cosine(&q, &features(c))).collect())
    }
}

/// Loads an example set from a JSONL file: each line an object with the input and output
/// fields (a non-string output is written as compact JSON).
pub fn load_examples(path: &Path, set: &ExampleSet) -> Result<Vec<Example>> {
    let text = std::fs::read_to_string(path).map_err(|source| PromptError::Io { path: path.into(), source })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| PromptError::Source { source_name: at(), message: format!("not JSON: {e}") })?;
        let get = |field: &str| -> Result<String> {
            match v.get(field) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(other) => Ok(other.to_string()),
                None => Err(PromptError::Source { source_name: at(), message: format!("missing field {field:?}") }),
            }
        };
        out.push(Example { input: get(&set.input_field)?, output: get(&set.output_field)? });
    }
    Ok(out)
}

/// The `k` examples most similar to `query`, most similar last (closest to the question, where
/// small models attend most). Ties keep file order; an input identical to the query is skipped
/// (it would leak the answer when the query comes from the same set).
pub fn select(sim: &dyn Similarity, query: &str, pool: &[Example], k: usize) -> Result<Vec<Example>> {
    let inputs: Vec<&str> = pool.iter().map(|e| e.input.as_str()).collect();
    let scores = sim.scores(query, &inputs)?;
    let mut idx: Vec<usize> = (0..pool.len()).filter(|&i| pool[i].input.trim() != query.trim()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx.reverse();
    Ok(idx.into_iter().map(|i| pool[i].clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(i: &str) -> Example {
        Example { input: i.into(), output: format!("out:{i}") }
    }

    #[test]
    fn picks_the_most_similar() {
        let pool = vec![
            ex("Как сбросить пароль сотруднику?"),
            ex("Верните деньги за тариф"),
            ex("CRM не открывается, ошибка 502"),
            ex("Хочу вернуть оплату за год"),
        ];
        let got = select(&Lexical, "Прошу вернуть деньги за оплату тарифа", &pool, 2).unwrap();
        let inputs: Vec<&str> = got.iter().map(|e| e.input.as_str()).collect();
        assert_eq!(inputs.len(), 2);
        assert!(inputs.contains(&"Верните деньги за тариф") && inputs.contains(&"Хочу вернуть оплату за год"), "{inputs:?}");
        // Most similar last.
        let s = Lexical.scores("Прошу вернуть деньги за оплату тарифа", &inputs).unwrap();
        assert!(s[1] >= s[0]);
    }

    #[test]
    fn identical_input_is_skipped() {
        let pool = vec![ex("a b c"), ex("a b d")];
        let got = select(&Lexical, "a b c", &pool, 2).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].input, "a b d");
    }
}
