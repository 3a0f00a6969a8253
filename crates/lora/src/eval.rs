//! `trident lora eval`: an adapter against the base model, side by side, on held-out data.
//!
//! Three variants are scored on the same samples through the inference engine (the same
//! llama.cpp path that serves the adapter):
//! - `base`: the base model, the samples' own prompts;
//! - `base+prompt`: the base model with a system prompt you give (when given);
//! - `adapter`: the base model with the adapter, the samples' own prompts.
//!
//! Per variant: held-out loss and perplexity over the answer tokens (teacher-forced, one
//! [`Backend::score`] pass per sample, same token mask as training), and greedy generations
//! scored with exact match, token F1, chrF and — when reference answers are JSON objects —
//! JSON validity, exact key set and per-key accuracy.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use trident_engine::{AdapterRef, Backend, ChatMessage, GenerateRequest, SamplingParams};

use crate::data::Sample;
use crate::tokens;
use crate::{LoraError, Result};

/// One variant to score.
#[derive(Debug, Clone)]
pub struct Variant {
    /// Label in the report (`base`, `base+prompt`, `adapter`).
    pub label: String,
    /// The adapter (loaded in the backend) to apply, if any.
    pub adapter: Option<AdapterRef>,
    /// A system prompt replacing the samples' own, if any.
    pub system: Option<String>,
}

/// Options of [`evaluate`].
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Most tokens generated per answer.
    pub max_tokens: usize,
    /// Requests submitted to the engine at once (≤ the backend's sequences).
    pub parallel: usize,
    /// Examples (prompt, reference, prediction) kept per variant in the report.
    pub examples: usize,
    /// Skip generation (loss and perplexity only).
    pub no_generate: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self { max_tokens: 256, parallel: 4, examples: 3, no_generate: false }
    }
}

/// Held-out loss of one variant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LossMetrics {
    /// Mean answer-token negative log-likelihood (nats).
    pub loss: f64,
    /// `exp(loss)`.
    pub perplexity: f64,
    /// Answer tokens scored.
    pub tokens: usize,
}

/// JSON-answer metrics (shares of the samples whose reference is a JSON object).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JsonMetrics {
    /// Samples with a JSON-object reference.
    pub samples: usize,
    /// Share of predictions that parse as a JSON object.
    pub valid: f64,
    /// Share of predictions with exactly the reference's key set.
    pub exact_keys: f64,
    /// Per reference key: share of predictions whose value equals the reference's.
    pub field_accuracy: BTreeMap<String, f64>,
}

/// Generation metrics of one variant (means over samples; shares in 0..1, chrF in 0..100).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenMetrics {
    /// Samples generated.
    pub samples: usize,
    /// Share of answers equal to the reference (after trimming).
    pub exact_match: f64,
    /// Mean token F1 (lower-cased word tokens).
    pub token_f1: f64,
    /// Mean sentence chrF (β = 2, character n-grams 1..6, whitespace ignored), 0..100.
    pub chrf: f64,
    /// JSON metrics, when references are JSON objects.
    pub json: Option<JsonMetrics>,
    /// Generated tokens per second (whole variant, wall clock).
    pub tokens_per_s: f64,
}

/// One example of a variant's output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Example {
    /// Sample id.
    pub id: String,
    /// The reference answer.
    pub reference: String,
    /// The generated answer.
    pub prediction: String,
}

/// The scores of one variant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariantReport {
    /// Label.
    pub label: String,
    /// Adapter name and scale, if any.
    pub adapter: Option<String>,
    /// System prompt, if replaced.
    pub system: Option<String>,
    /// Held-out loss.
    pub loss: LossMetrics,
    /// Generation metrics (absent with `no_generate`).
    pub generation: Option<GenMetrics>,
    /// A few examples.
    pub examples: Vec<Example>,
}

/// Lower-cased word tokens (letters and digits; everything else separates).
pub fn word_tokens(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(|w| w.to_lowercase()).collect()
}

/// Token F1 between a prediction and a reference (SQuAD style; 1 when both are empty).
pub fn token_f1(pred: &str, reference: &str) -> f64 {
    let p = word_tokens(pred);
    let r = word_tokens(reference);
    if p.is_empty() || r.is_empty() {
        return if p.is_empty() && r.is_empty() { 1.0 } else { 0.0 };
    }
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for t in &r {
        *counts.entry(t).or_default() += 1;
    }
    let mut common = 0i64;
    for t in &p {
        if let Some(c) = counts.get_mut(t.as_str()) {
            if *c > 0 {
                *c -= 1;
                common += 1;
            }
        }
    }
    if common == 0 {
        return 0.0;
    }
    let prec = common as f64 / p.len() as f64;
    let rec = common as f64 / r.len() as f64;
    2.0 * prec * rec / (prec + rec)
}

fn char_grams(v: &[char], n: usize) -> HashMap<&[char], i64> {
    let mut m = HashMap::new();
    if v.len() >= n {
        for w in v.windows(n) {
            *m.entry(w).or_default() += 1;
        }
    }
    m
}

/// Sentence chrF (β = 2, n = 1..6, whitespace removed, as sacrebleu's default), 0..100.
pub fn chrf(pred: &str, reference: &str) -> f64 {
    let p: Vec<char> = pred.chars().filter(|c| !c.is_whitespace()).collect();
    let r: Vec<char> = reference.chars().filter(|c| !c.is_whitespace()).collect();
    if p.is_empty() && r.is_empty() {
        return 100.0;
    }
    let beta2 = 4.0;
    let (mut psum, mut rsum, mut nn) = (0.0, 0.0, 0);
    for n in 1..=6 {
        let (gp, gr) = (char_grams(&p, n), char_grams(&r, n));
        let (tp, tr): (i64, i64) = (gp.values().sum(), gr.values().sum());
        if tp == 0 || tr == 0 {
            // sacrebleu skips orders that neither side reaches; one-sided absence scores 0.
            if tp == 0 && tr == 0 {
                continue;
            }
            nn += 1;
            continue;
        }
        let m: i64 = gp.iter().map(|(g, c)| (*c).min(*gr.get(g).unwrap_or(&0))).sum();
        psum += m as f64 / tp as f64;
        rsum += m as f64 / tr as f64;
        nn += 1;
    }
    if nn == 0 {
        return 0.0;
    }
    let (prec, rec) = (psum / nn as f64, rsum / nn as f64);
    if prec + rec == 0.0 {
        return 0.0;
    }
    100.0 * (1.0 + beta2) * prec * rec / (beta2 * prec + rec)
}

/// Parses a model answer as a JSON object (surrounding whitespace allowed, nothing else).
pub fn parse_json_object(s: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_str::<serde_json::Value>(s.trim()) {
        Ok(serde_json::Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// Scores predictions against references.
pub fn generation_metrics(pairs: &[(&str, &str)], tokens_per_s: f64) -> GenMetrics {
    let n = pairs.len().max(1) as f64;
    let exact = pairs.iter().filter(|(p, r)| p.trim() == r.trim()).count() as f64 / n;
    let f1 = pairs.iter().map(|(p, r)| token_f1(p, r)).sum::<f64>() / n;
    let cf = pairs.iter().map(|(p, r)| chrf(p, r)).sum::<f64>() / n;
    let json_pairs: Vec<(Option<serde_json::Map<String, serde_json::Value>>, serde_json::Map<String, serde_json::Value>)> =
        pairs.iter().filter_map(|(p, r)| parse_json_object(r).map(|rm| (parse_json_object(p), rm))).collect();
    let json = (!json_pairs.is_empty()).then(|| {
        let jn = json_pairs.len() as f64;
        let valid = json_pairs.iter().filter(|(p, _)| p.is_some()).count() as f64 / jn;
        let exact_keys = json_pairs
            .iter()
            .filter(|(p, r)| p.as_ref().is_some_and(|p| p.len() == r.len() && r.keys().all(|k| p.contains_key(k))))
            .count() as f64
            / jn;
        let mut hits: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (p, r) in &json_pairs {
            for (k, v) in r {
                let e = hits.entry(k.clone()).or_default();
                e.1 += 1;
                if p.as_ref().and_then(|p| p.get(k)) == Some(v) {
                    e.0 += 1;
                }
            }
        }
        JsonMetrics {
            samples: json_pairs.len(),
            valid,
            exact_keys,
            field_accuracy: hits.into_iter().map(|(k, (h, t))| (k, h as f64 / t as f64)).collect(),
        }
    });
    GenMetrics { samples: pairs.len(), exact_match: exact, token_f1: f1, chrf: cf, json, tokens_per_s }
}

/// The conversation of a variant: prompt (with the variant's system prompt) + reference answer.
fn variant_messages(s: &Sample, v: &Variant) -> Vec<ChatMessage> {
    let mut m = tokens::prompt_messages(s, v.system.as_deref());
    m.push(ChatMessage::assistant(tokens::reference(s)));
    m
}

/// Teacher-forced loss of a variant over the samples' answer tokens.
///
/// # Errors
/// Template/tokenizer/scoring failures, samples over the context window.
pub fn variant_loss(backend: &dyn Backend, samples: &[Sample], v: &Variant) -> Result<LossMetrics> {
    let mut sum = 0f64;
    let mut n = 0usize;
    for s in samples {
        let enc = tokens::encode(backend, &variant_messages(s, v)).map_err(|reason| LoraError::BadSample {
            path: std::path::PathBuf::from("<eval>"),
            id: s.id.clone(),
            line: s.source_line,
            reason,
        })?;
        let scored = backend.score(&enc.ids[..enc.target_end], 0, v.adapter.as_ref())?;
        for pos in &scored {
            let predicted = pos.position + 1;
            if predicted >= enc.target_start && predicted < enc.target_end {
                if let Some(lp) = pos.next_logprob {
                    sum -= lp as f64;
                    n += 1;
                }
            }
        }
    }
    let loss = if n > 0 { sum / n as f64 } else { f64::NAN };
    Ok(LossMetrics { loss, perplexity: loss.exp(), tokens: n })
}

/// Greedy generations of a variant, in sample order.
///
/// # Errors
/// The first failed request.
pub fn variant_generate(
    backend: &dyn Backend,
    samples: &[Sample],
    v: &Variant,
    opts: &EvalOptions,
    on_progress: &mut dyn FnMut(usize),
) -> Result<(Vec<String>, usize, f64)> {
    let t0 = std::time::Instant::now();
    let mut out = Vec::with_capacity(samples.len());
    let mut gen_tokens = 0usize;
    for chunk in samples.chunks(opts.parallel.max(1)) {
        let reqs: Vec<GenerateRequest> = chunk
            .iter()
            .map(|s| {
                let mut r = GenerateRequest::chat(tokens::prompt_messages(s, v.system.as_deref()))
                    .with_max_tokens(opts.max_tokens)
                    .with_sampling(SamplingParams::greedy());
                r.adapters = v.adapter.iter().cloned().collect();
                r
            })
            .collect();
        for r in backend.generate_batch(&reqs) {
            let g = r?;
            gen_tokens += g.usage.completion_tokens;
            out.push(g.text);
        }
        on_progress(out.len());
    }
    Ok((out, gen_tokens, t0.elapsed().as_secs_f64()))
}

/// Scores every variant on `samples`. `on_progress(label, done, total)` is called as
/// generations complete.
///
/// # Errors
/// Engine failures (unknown adapter, context overflow, …).
pub fn evaluate(
    backend: &dyn Backend,
    samples: &[Sample],
    variants: &[Variant],
    opts: &EvalOptions,
    on_progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Vec<VariantReport>> {
    let mut reports = Vec::new();
    for v in variants {
        let loss = variant_loss(backend, samples, v)?;
        let (generation, examples) = if opts.no_generate {
            (None, Vec::new())
        } else {
            let mut cb = |done: usize| on_progress(&v.label, done, samples.len());
            let (preds, toks, secs) = variant_generate(backend, samples, v, opts, &mut cb)?;
            let pairs: Vec<(&str, &str)> = preds.iter().map(|p| p.as_str()).zip(samples.iter().map(tokens::reference)).collect();
            let m = generation_metrics(&pairs, toks as f64 / secs.max(1e-9));
            let ex = samples
                .iter()
                .zip(&preds)
                .take(opts.examples)
                .map(|(s, p)| Example { id: s.id.clone(), reference: tokens::reference(s).to_string(), prediction: p.clone() })
                .collect();
            (Some(m), ex)
        };
        reports.push(VariantReport {
            label: v.label.clone(),
            adapter: v.adapter.as_ref().map(|a| format!("{}:{}", a.name, a.scale)),
            system: v.system.clone(),
            loss,
            generation,
            examples,
        });
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_f1_and_chrf_behave() {
        assert_eq!(token_f1("Привет, мир!", "привет мир"), 1.0);
        assert_eq!(token_f1("a b", "c d"), 0.0);
        let f = token_f1("a b c", "a b d e");
        assert!((f - 2.0 * (2.0 / 3.0) * 0.5 / (2.0 / 3.0 + 0.5)).abs() < 1e-12);
        assert!((chrf("тариф стоит", "тариф стоит") - 100.0).abs() < 1e-9);
        assert_eq!(chrf("abc", "xyz"), 0.0);
        let c = chrf("the cat sat", "the cat sat on the mat");
        assert!(c > 30.0 && c < 100.0, "{c}");
    }

    #[test]
    fn json_metrics_check_validity_keys_and_fields() {
        let r = r#"{"category": "сбой", "priority": "высокий", "reply": "x"}"#;
        let pairs = [
            (r#"{"category": "сбой", "priority": "обычный", "reply": "y"}"#, r),
            (r#"{"category": "сбой", "reply": "x"}"#, r),
            ("not json", r),
            (r#" {"category":"тарифы","priority":"высокий","reply":"x"} "#, r),
        ];
        let m = generation_metrics(&pairs, 1.0);
        let j = m.json.unwrap();
        assert_eq!(j.samples, 4);
        assert_eq!(j.valid, 0.75);
        assert_eq!(j.exact_keys, 0.5);
        assert_eq!(j.field_accuracy["category"], 0.5);
        assert_eq!(j.field_accuracy["priority"], 0.25);
        assert_eq!(m.exact_match, 0.0);
        assert!(generation_metrics(&[("a", "a")], 1.0).json.is_none());
    }
}
