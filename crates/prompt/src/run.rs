//! Running a compiled prompt: generation, JSON Schema validation with a retry that shows the
//! model its validation error, two-stage generation (draft → refine with the sources) and
//! self-check (a second call verifies each claim against the sources).
//!
//! The flow is written against the small [`Generator`] trait so it can be driven by the real
//! engine ([`EngineGenerator`]) or, in control-flow unit tests, by a scripted generator.

use crate::compile::{Compiled, extract_answer, format_sources};
use crate::error::{PromptError, Result};
use crate::spec::{Language, Strategy};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use trident_engine::{AdapterRef, Backend, ChatMessage, GenerateRequest, Prompt, SamplingParams};

/// Settings of one generation call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenOptions {
    /// Most new tokens.
    pub max_tokens: u32,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Sampling temperature (0 = greedy).
    pub temperature: f32,
    /// Sampling seed.
    pub seed: Option<u64>,
}

/// Something that answers a conversation.
pub trait Generator {
    /// Generates the assistant's reply to `messages`.
    fn generate(&self, messages: &[ChatMessage], opts: &GenOptions) -> Result<String>;
}

/// The engine as a [`Generator`]: renders through the model's chat template and generates,
/// optionally under a LoRA adapter loaded in the backend.
pub struct EngineGenerator<'a> {
    /// The backend.
    pub backend: &'a dyn Backend,
    /// Adapter to apply (must be loaded in the backend).
    pub adapter: Option<AdapterRef>,
}

impl Generator for EngineGenerator<'_> {
    fn generate(&self, messages: &[ChatMessage], opts: &GenOptions) -> Result<String> {
        let mut sampling = SamplingParams::default();
        sampling.temperature = opts.temperature;
        sampling.seed = opts.seed;
        let req = GenerateRequest {
            prompt: Prompt::Chat(messages.to_vec()),
            sampling,
            max_tokens: opts.max_tokens as usize,
            stop: opts.stop.clone(),
            adapters: self.adapter.clone().into_iter().collect(),
            ..GenerateRequest::default()
        };
        Ok(self.backend.generate(&req, None)?.text)
    }
}

/// One generation attempt for the final answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// The raw model output.
    pub raw: String,
    /// The answer extracted from it (reasoning removed).
    pub answer: String,
    /// Validation errors (empty when valid or when there is no schema).
    pub errors: Vec<String>,
}

/// The verdict on one claim of the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimCheck {
    /// The claim.
    pub claim: String,
    /// Whether the sources support it.
    pub supported: bool,
    /// Source numbers that support it.
    #[serde(default)]
    pub sources: Vec<u32>,
}

/// Self-check outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelfCheck {
    /// Per-claim verdicts.
    pub claims: Vec<ClaimCheck>,
    /// The claims the sources do not support.
    pub unsupported: Vec<String>,
    /// The verifier's raw output (kept when it could not be parsed).
    pub raw: String,
    /// False when the verifier's output could not be parsed.
    pub parsed: bool,
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// The final answer text.
    pub answer: String,
    /// The answer parsed as JSON (when the output format has a schema and it parsed).
    pub json: Option<Value>,
    /// True when there is a schema and the final answer satisfies it; None without a schema.
    pub valid: Option<bool>,
    /// Every attempt at the final answer (more than one after JSON retries).
    pub attempts: Vec<Attempt>,
    /// The draft, with two-stage generation.
    pub draft: Option<String>,
    /// The self-check, when asked.
    pub self_check: Option<SelfCheck>,
}

/// Base generation options from a compiled prompt.
pub fn gen_options(compiled: &Compiled, temperature: Option<f32>, seed: Option<u64>) -> GenOptions {
    GenOptions { max_tokens: compiled.max_answer_tokens, stop: compiled.stop.clone(), temperature: temperature.unwrap_or(0.0), seed }
}

/// Finds the first JSON value in a model's output: the whole text, a fenced ```json block, or
/// the first `{`/`[` followed by a complete value (trailing text ignored).
pub fn extract_json(text: &str) -> Option<Value> {
    let t = text.trim();
    if let Ok(v) = serde_json::from_str::<Value>(t) {
        return Some(v);
    }
    let starts = t.char_indices().filter(|(_, c)| *c == '{' || *c == '[').map(|(i, _)| i);
    for i in starts {
        let mut it = serde_json::Deserializer::from_str(&t[i..]).into_iter::<Value>();
        if let Some(Ok(v)) = it.next() {
            return Some(v);
        }
    }
    None
}

/// Validates an answer against a schema: `(parsed value, error messages)`.
pub fn validate_json(schema: &Value, answer: &str, lang: Language) -> (Option<Value>, Vec<String>) {
    let Some(v) = extract_json(answer) else {
        let msg = match lang {
            Language::Ru => "ответ не содержит JSON",
            Language::En => "the answer contains no JSON",
        };
        return (None, vec![msg.to_string()]);
    };
    let validator = match jsonschema::validator_for(schema) {
        Ok(v) => v,
        Err(e) => return (Some(v), vec![format!("schema: {e}")]),
    };
    let errors: Vec<String> = validator
        .iter_errors(&v)
        .map(|e| {
            let path = e.instance_path().to_string();
            if path.is_empty() { e.to_string() } else { format!("{path}: {e}") }
        })
        .collect();
    (Some(v), errors)
}

fn retry_message(lang: Language, errors: &[String]) -> String {
    let list = errors.iter().map(|e| format!("- {e}")).collect::<Vec<_>>().join("\n");
    match lang {
        Language::Ru => format!("Ответ не прошёл проверку по JSON Schema:\n{list}\nИсправь ответ и верни только JSON-объект, соответствующий схеме."),
        Language::En => format!("The answer failed JSON Schema validation:\n{list}\nFix it and return only a JSON object that satisfies the schema."),
    }
}

fn refine_messages(compiled: &Compiled, draft: &str) -> Vec<ChatMessage> {
    let mut msgs = compiled.messages.clone();
    let sources = if compiled.sources.is_empty() { String::new() } else { format_sources(&compiled.sources) };
    let text = match compiled.language {
        Language::Ru => format!(
            "Вот черновик ответа:\n<draft>\n{draft}\n</draft>\n\n{}Улучши черновик: исправь ошибки и всё, что не подтверждается {}, сохрани требуемый формат. Верни только итоговый ответ.",
            if sources.is_empty() { String::new() } else { format!("Источники:\n{sources}\n\n") },
            if sources.is_empty() { "данными" } else { "источниками" }
        ),
        Language::En => format!(
            "Here is a draft answer:\n<draft>\n{draft}\n</draft>\n\n{}Improve the draft: fix mistakes and anything the {} do not support, keep the required format. Return only the final answer.",
            if sources.is_empty() { String::new() } else { format!("Sources:\n{sources}\n\n") },
            if sources.is_empty() { "data" } else { "sources" }
        ),
    };
    msgs.push(ChatMessage::assistant(draft.trim()));
    msgs.push(ChatMessage::user(text));
    msgs
}

fn self_check_messages(compiled: &Compiled, answer: &str) -> Vec<ChatMessage> {
    let sources = format_sources(&compiled.sources);
    let (sys, user) = match compiled.language {
        Language::Ru => (
            "Ты — строгий проверяющий фактов. Разбей ответ на отдельные утверждения и для каждого проверь, подтверждается ли оно источниками. Верни только JSON-массив объектов {\"claim\": строка, \"supported\": true|false, \"sources\": [номера источников]}.".to_string(),
            format!("Источники:\n{sources}\n\nОтвет для проверки:\n{answer}"),
        ),
        Language::En => (
            "You are a strict fact checker. Split the answer into separate claims and check each against the sources. Return only a JSON array of objects {\"claim\": string, \"supported\": true|false, \"sources\": [source numbers]}.".to_string(),
            format!("Sources:\n{sources}\n\nAnswer to check:\n{answer}"),
        ),
    };
    vec![ChatMessage::system(sys), ChatMessage::user(user)]
}

fn parse_claims(raw: &str) -> Option<Vec<ClaimCheck>> {
    let v = extract_json(raw)?;
    let items = match v {
        Value::Array(a) => a,
        Value::Object(mut m) => match m.remove("claims") {
            Some(Value::Array(a)) => a,
            _ => return None,
        },
        _ => return None,
    };
    let mut out = Vec::new();
    for it in items {
        let claim = it.get("claim")?.as_str()?.to_string();
        let supported = match it.get("supported")? {
            Value::Bool(b) => *b,
            Value::String(s) => matches!(s.to_lowercase().as_str(), "true" | "yes" | "да"),
            _ => return None,
        };
        let sources = it
            .get("sources")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|x| x.as_u64().map(|n| n as u32)).collect())
            .unwrap_or_default();
        out.push(ClaimCheck { claim, supported, sources });
    }
    Some(out)
}

/// Runs a compiled prompt with the spec's strategy.
pub fn run(generator: &dyn Generator, compiled: &Compiled, strategy: &Strategy, opts: &GenOptions) -> Result<RunResult> {
    let mut messages = compiled.messages.clone();
    let raw = generator.generate(&messages, opts)?;
    let mut draft = None;
    let mut raw = raw;
    if strategy.two_stage {
        let d = extract_answer(compiled.reasoning, &raw);
        messages = refine_messages(compiled, &d);
        raw = generator.generate(&messages, opts)?;
        draft = Some(d);
    }
    let mut attempts = Vec::new();
    let mut json = None;
    let mut valid = None;
    let mut retries_left = strategy.json_retries;
    loop {
        let answer = extract_answer(compiled.reasoning, &raw);
        let Some(schema) = &compiled.schema else {
            attempts.push(Attempt { raw, answer, errors: vec![] });
            break;
        };
        let (parsed, errors) = validate_json(schema, &answer, compiled.language);
        let ok = errors.is_empty();
        json = parsed;
        valid = Some(ok);
        attempts.push(Attempt { raw: raw.clone(), answer: answer.clone(), errors: errors.clone() });
        if ok || retries_left == 0 {
            break;
        }
        retries_left -= 1;
        messages.push(ChatMessage::assistant(raw.trim()));
        messages.push(ChatMessage::user(retry_message(compiled.language, &errors)));
        raw = generator.generate(&messages, opts)?;
    }
    let last = attempts.last().expect("at least one attempt is always recorded");
    let answer = match (&json, valid) {
        (Some(v), Some(true)) => serde_json::to_string(v).map_err(|e| PromptError::Generation(e.to_string()))?,
        _ => last.answer.clone(),
    };
    let self_check = if strategy.self_check {
        if compiled.sources.is_empty() {
            return Err(PromptError::invalid("strategy.self_check", "self-check needs sources: run with a knowledge base (--kb)"));
        }
        let raw = generator.generate(&self_check_messages(compiled, &answer), &GenOptions { stop: vec![], ..opts.clone() })?;
        Some(match parse_claims(&raw) {
            Some(claims) => {
                let unsupported = claims.iter().filter(|c| !c.supported).map(|c| c.claim.clone()).collect();
                SelfCheck { claims, unsupported, raw, parsed: true }
            }
            None => SelfCheck { claims: vec![], unsupported: vec![], raw, parsed: false },
        })
    } else {
        None
    };
    Ok(RunResult { answer, json, valid, attempts, draft, self_check })
}

#[cfg(test)]
mod tests {
    //! Control-flow tests with a scripted generator (a deterministic stand-in that returns
    //! canned replies in order and records what it was asked); the real-model path is tested
    //! in `tests/real_model.rs`.
    use super::*;
    use crate::compile::{CompileInput, compile};
    use crate::sources::CitedChunk;
    use crate::spec::{Format, PromptSpec};
    use std::cell::RefCell;

    struct Scripted {
        replies: RefCell<Vec<String>>,
        seen: RefCell<Vec<Vec<ChatMessage>>>,
    }

    impl Scripted {
        fn new(replies: &[&str]) -> Self {
            Scripted { replies: RefCell::new(replies.iter().rev().map(|s| s.to_string()).collect()), seen: RefCell::new(vec![]) }
        }
    }

    impl Generator for Scripted {
        fn generate(&self, messages: &[ChatMessage], _: &GenOptions) -> Result<String> {
            self.seen.borrow_mut().push(messages.to_vec());
            self.replies.borrow_mut().pop().ok_or_else(|| PromptError::Generation("script exhausted".into()))
        }
    }

    fn compiled(strategy: &str) -> (Compiled, Strategy) {
        let spec = PromptSpec::parse(
            &format!(
                r#"
name = "t"
role = "r"
task = "t"
data = "{{{{q}}}}"
{strategy}
[output_format]
json_schema = '{{"type":"object","properties":{{"category":{{"enum":["a","b"]}}}},"required":["category"]}}'
[[variables]]
name = "q"
"#
            ),
            Format::Toml,
            "t",
        )
        .unwrap();
        let v = serde_json::json!({"q": "вопрос"}).as_object().unwrap().clone();
        let src = CitedChunk { source: "s".into(), title: "T".into(), version: String::new(), section: String::new(), text: "факт".into() };
        (compile(&spec, &v, &CompileInput { sources: vec![src], ..Default::default() }).unwrap(), spec.strategy)
    }

    fn opts() -> GenOptions {
        GenOptions { max_tokens: 10, stop: vec![], temperature: 0.0, seed: None }
    }

    #[test]
    fn invalid_json_is_retried_once_with_the_error() {
        let (c, s) = compiled("");
        let g = Scripted::new(&["```json\n{\"category\": \"z\"}\n```", "{\"category\": \"a\"}"]);
        let r = run(&g, &c, &s, &opts()).unwrap();
        assert_eq!(r.valid, Some(true));
        assert_eq!(r.attempts.len(), 2);
        assert_eq!(r.answer, "{\"category\":\"a\"}");
        let second = &g.seen.borrow()[1];
        let last = &second.last().unwrap().content;
        assert!(last.contains("/category") && last.contains("JSON Schema"), "{last}");
    }

    #[test]
    fn still_invalid_after_retry_is_reported() {
        let (c, s) = compiled("");
        let g = Scripted::new(&["no json", "still none"]);
        let r = run(&g, &c, &s, &opts()).unwrap();
        assert_eq!(r.valid, Some(false));
        assert_eq!(r.attempts.len(), 2);
        assert!(!r.attempts[1].errors.is_empty());
    }

    #[test]
    fn retries_are_configurable() {
        let (c, s) = compiled("[strategy]\njson_retries = 0");
        assert_eq!(s.json_retries, 0);
        let g = Scripted::new(&["no json"]);
        let r = run(&g, &c, &s, &opts()).unwrap();
        assert_eq!((r.valid, r.attempts.len()), (Some(false), 1));
    }

    #[test]
    fn two_stage_refines_with_draft_and_sources() {
        let (c, s) = compiled("[strategy]\ntwo_stage = true");
        let g = Scripted::new(&["{\"category\": \"b\"} черновик", "{\"category\": \"a\"}"]);
        let r = run(&g, &c, &s, &opts()).unwrap();
        assert_eq!(r.draft.as_deref(), Some("{\"category\": \"b\"} черновик"));
        assert_eq!(r.json, Some(serde_json::json!({"category": "a"})));
        let refine = g.seen.borrow()[1].last().unwrap().content.clone();
        assert!(refine.contains("<draft>") && refine.contains("[1] T") && refine.contains("факт"), "{refine}");
    }

    #[test]
    fn self_check_flags_unsupported_claims() {
        let (c, s) = compiled("[strategy]\nself_check = true");
        let g = Scripted::new(&[
            "{\"category\": \"a\"}",
            r#"[{"claim": "x", "supported": true, "sources": [1]}, {"claim": "y", "supported": false}]"#,
        ]);
        let r = run(&g, &c, &s, &opts()).unwrap();
        let sc = r.self_check.unwrap();
        assert!(sc.parsed);
        assert_eq!(sc.unsupported, vec!["y".to_string()]);
        assert_eq!(sc.claims[0].sources, vec![1]);
    }

    #[test]
    fn extract_json_finds_embedded_values() {
        assert_eq!(extract_json("Вот ответ: {\"a\": [1, 2]} — готово"), Some(serde_json::json!({"a": [1, 2]})));
        assert_eq!(extract_json("nothing"), None);
    }
}
