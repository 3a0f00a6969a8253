//! Lint: empty formula fields, unfilled or unused variables, constraints that contradict the
//! output format, the context budget, token count and cost per 1,000 calls.

use crate::compile::{CompileInput, compile};
use crate::error::Result;
use crate::spec::{PromptSpec, Reasoning};
use crate::vars::{Values, placeholders};
use serde::{Deserialize, Serialize};

/// Counts tokens of a prompt.
pub trait TokenCounter {
    /// Tokens in `text` (a fully rendered prompt).
    fn count(&self, text: &str) -> Result<usize>;
    /// True when the count comes from the model's own tokenizer, false for an estimate.
    fn exact(&self) -> bool;
}

/// A tokenizer-free estimate: about 4 characters per token for Latin text and 2.5 for
/// Cyrillic (BPE vocabularies of small multilingual models split Russian more finely).
#[derive(Debug, Clone, Copy, Default)]
pub struct EstimateCounter;

impl TokenCounter for EstimateCounter {
    fn count(&self, text: &str) -> Result<usize> {
        let (mut cyr, mut other) = (0usize, 0usize);
        for c in text.chars() {
            if ('\u{0400}'..='\u{04FF}').contains(&c) { cyr += 1 } else { other += 1 }
        }
        Ok((cyr as f64 / 2.5 + other as f64 / 4.0).ceil() as usize)
    }
    fn exact(&self) -> bool {
        false
    }
}

/// The engine's tokenizer, with the model's chat template.
pub struct BackendCounter<'a>(pub &'a dyn trident_engine::Backend);

impl TokenCounter for BackendCounter<'_> {
    fn count(&self, text: &str) -> Result<usize> {
        Ok(self.0.tokenize(text, true, true)?.len())
    }
    fn exact(&self) -> bool {
        true
    }
}

/// Prices for the cost estimate, per 1,000 tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Price {
    /// Price of 1,000 prompt tokens.
    pub input_per_1k: f64,
    /// Price of 1,000 answer tokens.
    pub output_per_1k: f64,
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Likely to break the prompt.
    Error,
    /// Worth fixing.
    Warning,
}

/// One lint finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// How serious.
    pub severity: Severity,
    /// Stable code (`empty-field`, `unused-variable`, …).
    pub code: String,
    /// The field concerned.
    pub field: String,
    /// Explanation.
    pub message: String,
}

/// The lint report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LintReport {
    /// Findings, in field order.
    pub findings: Vec<Finding>,
    /// Tokens of the rendered prompt (None when it could not be rendered).
    pub prompt_tokens: Option<usize>,
    /// True when counted by the model's tokenizer, false when estimated.
    pub tokens_exact: bool,
    /// Tokens reserved for the answer.
    pub max_answer_tokens: u32,
    /// Context limit checked against, when known.
    pub context_limit: Option<usize>,
    /// Estimated cost per 1,000 calls (prompt + full answer budget), when a price was given.
    pub cost_per_1000_calls: Option<f64>,
}

impl LintReport {
    /// True when there is an error-level finding.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}

fn find(sev: Severity, code: &str, field: &str, message: impl Into<String>) -> Finding {
    Finding { severity: sev, code: code.into(), field: field.into(), message: message.into() }
}

const FREE_FORM_WORDS: &[&str] = &[
    "markdown", "таблиц", "списком", "маркированн", "bullet", "plain text", "простым текстом", "свободной форме",
    "абзац", "paragraph", "html",
];

/// Lints a spec. `values` (when given) are checked like a render would; `render` turns the
/// compiled messages into the exact prompt text for counting (the chat template), or `None`
/// to count the messages joined.
pub fn lint(
    spec: &PromptSpec,
    values: Option<&Values>,
    counter: &dyn TokenCounter,
    render: Option<&dyn Fn(&crate::compile::Compiled) -> Result<String>>,
    context_limit: Option<usize>,
    price: Option<Price>,
) -> LintReport {
    use Severity::*;
    let mut f = Vec::new();
    for (name, value) in [("role", &spec.role), ("task", &spec.task), ("context", &spec.context), ("data", &spec.data)] {
        if value.trim().is_empty() {
            f.push(find(Warning, "empty-field", name, format!("`{name}` is empty")));
        }
    }
    if spec.constraints.is_empty() {
        f.push(find(Warning, "empty-field", "constraints", "no constraints"));
    }
    if spec.quality_criteria.is_empty() {
        f.push(find(Warning, "empty-field", "quality_criteria", "no quality criteria"));
    }
    let has_format = spec.output_format.as_ref().is_some_and(|o| !o.text.trim().is_empty() || o.json_schema.is_some());
    if !has_format {
        f.push(find(Warning, "empty-field", "output_format", "no output format"));
    }

    // Variables: used but undeclared is a parse error already; declared but unused here.
    let mut used = std::collections::BTreeSet::new();
    for (_, text) in spec.text_fields() {
        if let Ok(ps) = placeholders(text) {
            for p in ps {
                used.insert(p.split('.').next().unwrap_or(&p).to_string());
            }
        }
    }
    for v in &spec.variables {
        if !used.contains(&v.name) {
            f.push(find(Warning, "unused-variable", &format!("variables.{}", v.name), format!("`{}` is declared but never used", v.name)));
        }
        if v.required && v.default.is_none() && v.example.is_none() {
            f.push(find(
                Warning,
                "no-example",
                &format!("variables.{}", v.name),
                format!("required `{}` has neither a default nor an example value", v.name),
            ));
        }
    }

    // Contradictions between constraints and the output format.
    let schema = spec.schema().ok().flatten();
    if schema.is_some() {
        for (i, c) in spec.constraints.iter().enumerate() {
            let lc = c.to_lowercase();
            if let Some(w) = FREE_FORM_WORDS.iter().find(|w| lc.contains(*w)) {
                f.push(find(
                    Warning,
                    "format-conflict",
                    &format!("constraints[{i}]"),
                    format!("asks for free-form output ({w:?}) but the output format is a JSON Schema"),
                ));
            }
        }
        if spec.reasoning == Reasoning::StepByStep {
            f.push(find(
                Warning,
                "format-conflict",
                "reasoning",
                "visible step-by-step reasoning breaks a JSON-only answer; use `scratchpad`",
            ));
        }
        if let Some(n) = spec.max_words
            && n < 5
        {
            f.push(find(Warning, "format-conflict", "max_words", format!("{n} words cannot hold a JSON object")));
        }
    } else if let Some(o) = &spec.output_format {
        let lt = o.text.to_lowercase();
        for (i, c) in spec.constraints.iter().enumerate() {
            let lc = c.to_lowercase();
            let no_json = lc.contains("без json") || lc.contains("no json") || lc.contains("не используй json");
            if no_json && lt.contains("json") {
                f.push(find(Warning, "format-conflict", &format!("constraints[{i}]"), "forbids JSON but the output format asks for it"));
            }
        }
    }
    if let (Some(words), Some(tokens)) = (spec.max_words, spec.max_answer_tokens)
        && (tokens as f64) < words as f64 * 1.3
    {
        f.push(find(
            Warning,
            "length-conflict",
            "max_answer_tokens",
            format!("{tokens} tokens may cut an answer of up to {words} words (about {} tokens)", (words as f64 * 2.5).ceil()),
        ));
    }

    // Render and count.
    let given = values.cloned().unwrap_or_else(|| spec.example_values());
    let max_answer_tokens = spec.max_answer_tokens.unwrap_or(crate::compile::DEFAULT_MAX_ANSWER_TOKENS);
    let mut prompt_tokens = None;
    match compile(spec, &given, &CompileInput::default()) {
        Err(e) => f.push(find(Error, "unfilled-variable", "variables", format!("cannot render: {e}"))),
        Ok(c) => {
            let text = match render {
                Some(r) => r(&c),
                None => Ok(c.messages.iter().map(|m| format!("{}: {}", m.role, m.content)).collect::<Vec<_>>().join("\n\n")),
            };
            match text.and_then(|t| counter.count(&t)) {
                Ok(n) => prompt_tokens = Some(n),
                Err(e) => f.push(find(Error, "render-failed", "template", e.to_string())),
            }
        }
    }
    if let (Some(n), Some(limit)) = (prompt_tokens, context_limit) {
        let total = n + max_answer_tokens as usize;
        if total > limit {
            f.push(find(
                Error,
                "over-budget",
                "context",
                format!("{n} prompt tokens + {max_answer_tokens} answer tokens = {total}, over the context limit of {limit}"),
            ));
        } else if total as f64 > limit as f64 * 0.8 {
            f.push(find(Warning, "near-budget", "context", format!("{total} of {limit} context tokens used")));
        }
    }
    let cost = match (prompt_tokens, price) {
        (Some(n), Some(p)) => Some(1000.0 * (n as f64 * p.input_per_1k + max_answer_tokens as f64 * p.output_per_1k) / 1000.0),
        _ => None,
    };
    LintReport {
        findings: f,
        prompt_tokens,
        tokens_exact: counter.exact(),
        max_answer_tokens,
        context_limit,
        cost_per_1000_calls: cost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Format;

    #[test]
    fn finds_the_documented_problems() {
        let spec = PromptSpec::parse(
            r#"
name = "x"
role = "r"
task = "{{a}}"
constraints = ["Оформи ответ таблицей Markdown"]
reasoning = "step_by_step"
max_words = 300
max_answer_tokens = 100
[output_format]
json_schema = '{"type": "object"}'
[[variables]]
name = "a"
example = "пример"
[[variables]]
name = "unused"
required = false
"#,
            Format::Toml,
            "t",
        )
        .unwrap();
        let r = lint(&spec, None, &EstimateCounter, None, Some(4096), Some(Price { input_per_1k: 0.1, output_per_1k: 0.2 }));
        let codes: Vec<&str> = r.findings.iter().map(|f| f.code.as_str()).collect();
        for c in ["empty-field", "unused-variable", "format-conflict", "length-conflict"] {
            assert!(codes.contains(&c), "{c} missing in {codes:?}");
        }
        assert!(!r.tokens_exact);
        let n = r.prompt_tokens.unwrap();
        let want = 1000.0 * (n as f64 * 0.1 + 100.0 * 0.2) / 1000.0;
        assert!((r.cost_per_1000_calls.unwrap() - want).abs() < 1e-9);
        assert!(!r.has_errors());
    }

    #[test]
    fn over_budget_and_unfilled_are_errors() {
        let spec = PromptSpec::parse("name = \"x\"\ntask = \"{{a}}\"\n[[variables]]\nname = \"a\"\n", Format::Toml, "t").unwrap();
        let r = lint(&spec, None, &EstimateCounter, None, None, None);
        assert!(r.findings.iter().any(|f| f.code == "unfilled-variable"), "{:?}", r.findings);
        let mut v = Values::new();
        v.insert("a".into(), serde_json::Value::String("слово ".repeat(2000)));
        let r = lint(&spec, Some(&v), &EstimateCounter, None, Some(1000), None);
        assert!(r.findings.iter().any(|f| f.code == "over-budget"), "{:?}", r.findings);
        assert!(r.has_errors());
    }

    #[test]
    fn estimate_counts_cyrillic_denser() {
        let ru = EstimateCounter.count("абвгдеёжзи").unwrap();
        let en = EstimateCounter.count("abcdefghij").unwrap();
        assert!(ru > en);
    }
}
