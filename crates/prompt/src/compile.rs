//! Compiling a spec with values into chat messages (system, few-shot pairs, user) and rendering
//! them through the model's chat template.
//!
//! Layout: the system message holds the instructions (role, task, context, constraints, "if
//! unsure", length, output format with its schema, quality criteria, reasoning mode); each
//! few-shot example is a user/assistant pair; the final user message is the `data` field (with
//! retrieved sources appended). A spec without `data` sends its task as the user message. With
//! a `system` override the override is the system message and the formula goes to the user.

use crate::error::{PromptError, Result};
use crate::sources::CitedChunk;
use crate::spec::{Example, Language, PromptSpec, Reasoning};
use crate::vars::{Values, resolve, substitute};
use serde::{Deserialize, Serialize};
use trident_engine::{ChatMessage, ChatTemplate};

/// A compiled prompt: the messages and the generation settings that go with them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compiled {
    /// The prompt's name.
    pub name: String,
    /// System, few-shot pairs, user.
    pub messages: Vec<ChatMessage>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Answer token limit.
    pub max_answer_tokens: u32,
    /// The output JSON Schema, if any.
    pub schema: Option<serde_json::Value>,
    /// Reasoning mode (decides how the answer is extracted).
    pub reasoning: Reasoning,
    /// Scaffolding language.
    pub language: Language,
    /// The values used (after defaults).
    pub values: Values,
    /// The sources appended to the data, numbered from 1.
    pub sources: Vec<CitedChunk>,
}

/// Default answer token limit when the spec sets none.
pub const DEFAULT_MAX_ANSWER_TOKENS: u32 = 512;

/// Extra input for compilation.
#[derive(Debug, Clone, Default)]
pub struct CompileInput {
    /// Few-shot examples chosen dynamically (used after the spec's static ones).
    pub extra_examples: Vec<Example>,
    /// Retrieved sources to append to the data.
    pub sources: Vec<CitedChunk>,
}

struct Words {
    task: &'static str,
    context: &'static str,
    constraints: &'static str,
    format: &'static str,
    quality: &'static str,
    sources: &'static str,
    unsure: &'static str,
    length: &'static str,
    json_only: &'static str,
    step: &'static str,
    scratch: &'static str,
    cite: &'static str,
}

const RU: Words = Words {
    task: "Задача",
    context: "Контекст",
    constraints: "Ограничения",
    format: "Формат ответа",
    quality: "Критерии качества",
    sources: "Источники",
    unsure: "Если данных недостаточно или ты не уверен в ответе, не выдумывай — так и скажи, дословно этой фразой:",
    length: "Объём ответа — не более {n} слов.",
    json_only: "Верни только JSON-объект, соответствующий этой JSON Schema, без пояснений и без Markdown:",
    step: "Рассуждай по шагам: сначала кратко распиши ход решения, затем дай итоговый ответ после строки «Ответ:».",
    scratch: "Сначала подумай в блоке <scratchpad>…</scratchpad> (его не увидит пользователь), затем после блока дай только итоговый ответ.",
    cite: "Опирайся только на источники ниже и ссылайся на них номерами в квадратных скобках, например [1].",
};

const EN: Words = Words {
    task: "Task",
    context: "Context",
    constraints: "Constraints",
    format: "Output format",
    quality: "Quality criteria",
    sources: "Sources",
    unsure: "If the data is insufficient or you are not sure, do not make things up — say so with exactly this phrase:",
    length: "Keep the answer under {n} words.",
    json_only: "Return only a JSON object that satisfies this JSON Schema, with no explanations and no Markdown:",
    step: "Think step by step: first outline your reasoning briefly, then give the final answer after a line \"Answer:\".",
    scratch: "First think inside a <scratchpad>…</scratchpad> block (the user will not see it), then give only the final answer after the block.",
    cite: "Use only the sources below and cite them by number in square brackets, e.g. [1].",
};

fn words(lang: Language) -> &'static Words {
    match lang {
        Language::Ru => &RU,
        Language::En => &EN,
    }
}

fn section(out: &mut String, heading: &str, body: &str) {
    let body = body.trim();
    if body.is_empty() {
        return;
    }
    if !out.is_empty() {
        out.push_str("\n\n");
    }
    out.push_str("## ");
    out.push_str(heading);
    out.push('\n');
    out.push_str(body);
}

fn bullets(items: &[String]) -> String {
    items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).map(|s| format!("- {s}")).collect::<Vec<_>>().join("\n")
}

/// Formats retrieved chunks as a numbered source list.
pub fn format_sources(chunks: &[CitedChunk]) -> String {
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut head = format!("[{}] {}", i + 1, if c.title.is_empty() { &c.source } else { &c.title });
            let mut meta = Vec::new();
            if !c.title.is_empty() && !c.source.is_empty() {
                meta.push(c.source.clone());
            }
            if !c.version.is_empty() {
                meta.push(format!("v{}", c.version.trim_start_matches('v')));
            }
            if !c.section.is_empty() {
                meta.push(c.section.clone());
            }
            if !meta.is_empty() {
                head.push_str(&format!(" ({})", meta.join(", ")));
            }
            format!("{head}\n{}", c.text.trim())
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Compiles a spec with the given (not yet resolved) values.
pub fn compile(spec: &PromptSpec, given: &Values, input: &CompileInput) -> Result<Compiled> {
    let values = resolve(&spec.variables, given)?;
    let w = words(spec.language);
    let sub = |field: &str, text: &str| substitute(text, &values, field);

    let role = sub("role", &spec.role)?;
    let task = sub("task", &spec.task)?;
    let context = sub("context", &spec.context)?;
    let data = sub("data", &spec.data)?;
    let mut constraints = Vec::new();
    for (i, c) in spec.constraints.iter().enumerate() {
        constraints.push(sub(&format!("constraints[{i}]"), c)?);
    }
    if let Some(u) = &spec.if_unsure {
        constraints.push(format!("{} «{}»", w.unsure, sub("if_unsure", u)?.trim()));
    }
    if let Some(n) = spec.max_words {
        constraints.push(w.length.replace("{n}", &n.to_string()));
    }
    if !input.sources.is_empty() {
        constraints.push(w.cite.to_string());
    }
    let mut quality = Vec::new();
    for (i, c) in spec.quality_criteria.iter().enumerate() {
        quality.push(sub(&format!("quality_criteria[{i}]"), c)?);
    }
    let schema = spec.schema()?;
    let mut format = String::new();
    if let Some(of) = &spec.output_format {
        format.push_str(sub("output_format.text", &of.text)?.trim());
    }
    if let Some(s) = &schema {
        if !format.is_empty() {
            format.push_str("\n\n");
        }
        format.push_str(w.json_only);
        format.push('\n');
        format.push_str(&serde_json::to_string(s).map_err(|e| PromptError::Schema(e.to_string()))?);
    }
    let reasoning = match spec.reasoning {
        Reasoning::Off => "",
        Reasoning::StepByStep => w.step,
        Reasoning::Scratchpad => w.scratch,
    };

    // The formula sections (everything but role and data), in the formula's order.
    let mut formula = String::new();
    let user_gets_task = data.trim().is_empty() && input.sources.is_empty();
    if !user_gets_task || spec.system.is_some() {
        section(&mut formula, w.task, &task);
    }
    section(&mut formula, w.context, &context);
    section(&mut formula, w.constraints, &bullets(&constraints));
    section(&mut formula, w.format, &format);
    section(&mut formula, w.quality, &bullets(&quality));
    if !reasoning.is_empty() {
        formula.push_str("\n\n");
        formula.push_str(reasoning);
    }
    let formula = formula.trim().to_string();

    let mut user = if user_gets_task && spec.system.is_none() { task.trim().to_string() } else { data.trim().to_string() };
    if !input.sources.is_empty() {
        if !user.is_empty() {
            user.push_str("\n\n");
        }
        user.push_str(&format!("## {}\n{}", w.sources, format_sources(&input.sources)));
    }

    let mut messages = Vec::new();
    match &spec.system {
        Some(sys) => {
            let sys = sub("system", sys)?;
            messages.push(ChatMessage::system(sys.trim()));
            let mut u = String::new();
            if !role.trim().is_empty() {
                u.push_str(role.trim());
            }
            if !formula.is_empty() {
                if !u.is_empty() {
                    u.push_str("\n\n");
                }
                u.push_str(&formula);
            }
            if !user.is_empty() {
                if !u.is_empty() {
                    u.push_str("\n\n");
                }
                u.push_str(&user);
            }
            user = u;
        }
        None => {
            let mut sys = role.trim().to_string();
            if !formula.is_empty() {
                if !sys.is_empty() {
                    sys.push_str("\n\n");
                }
                sys.push_str(&formula);
            }
            if !sys.is_empty() {
                messages.push(ChatMessage::system(sys));
            }
        }
    }
    for (i, e) in spec.examples.iter().enumerate() {
        messages.push(ChatMessage::user(sub(&format!("examples[{i}].input"), &e.input)?.trim()));
        messages.push(ChatMessage::assistant(sub(&format!("examples[{i}].output"), &e.output)?.trim()));
    }
    for e in &input.extra_examples {
        messages.push(ChatMessage::user(e.input.trim()));
        messages.push(ChatMessage::assistant(e.output.trim()));
    }
    if user.trim().is_empty() {
        return Err(PromptError::invalid("data", "the prompt has no user message: fill `data` or `task`"));
    }
    messages.push(ChatMessage::user(user));

    Ok(Compiled {
        name: spec.name.clone(),
        messages,
        stop: spec.stop.clone(),
        max_answer_tokens: spec.max_answer_tokens.unwrap_or(DEFAULT_MAX_ANSWER_TOKENS),
        schema,
        reasoning: spec.reasoning,
        language: spec.language,
        values,
        sources: input.sources.clone(),
    })
}

/// Renders compiled messages to the exact prompt text through a chat template (with the
/// assistant generation prompt appended).
pub fn render_text(template: &ChatTemplate, compiled: &Compiled) -> Result<String> {
    Ok(template.render(&compiled.messages, true)?)
}

/// Removes the reasoning from an answer: for a scratchpad, everything up to `</scratchpad>`;
/// for step-by-step, everything up to the last "Ответ:"/"Answer:" line (the whole answer when
/// the marker is missing).
pub fn extract_answer(reasoning: Reasoning, raw: &str) -> String {
    match reasoning {
        Reasoning::Off => raw.trim().to_string(),
        Reasoning::Scratchpad => match raw.rfind("</scratchpad>") {
            Some(i) => raw[i + "</scratchpad>".len()..].trim().to_string(),
            None => match raw.find("<scratchpad>") {
                // An unclosed scratchpad: no answer was given after it.
                Some(_) => String::new(),
                None => raw.trim().to_string(),
            },
        },
        Reasoning::StepByStep => {
            let markers = ["Ответ:", "Answer:", "**Ответ:**", "**Answer:**"];
            let best = markers.iter().filter_map(|m| raw.rfind(m).map(|i| i + m.len())).max();
            match best {
                Some(i) => raw[i..].trim().trim_start_matches("**").trim().to_string(),
                None => raw.trim().to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Format;
    use serde_json::json;

    fn spec() -> PromptSpec {
        PromptSpec::parse(
            r#"
name = "t"
role = "Ты — аналитик."
task = "Оцени обращение клиента {{client.name}}."
context = "Компания продаёт CRM."
data = "{{ticket}}"
constraints = ["Пиши кратко."]
quality_criteria = ["Тон вежливый."]
if_unsure = "Не знаю"
max_words = 50

[output_format]
text = "JSON"
json_schema = '{"type":"object","required":["a"]}'

[[examples]]
input = "Пример"
output = '{"a": 1}'

[[variables]]
name = "client"
type = "object"

[[variables]]
name = "ticket"
"#,
            Format::Toml,
            "t",
        )
        .unwrap()
    }

    #[test]
    fn layout_is_system_pairs_user() {
        let v = json!({"client": {"name": "Анна"}, "ticket": "Не работает вход"}).as_object().unwrap().clone();
        let c = compile(&spec(), &v, &CompileInput::default()).unwrap();
        let roles: Vec<&str> = c.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        let sys = &c.messages[0].content;
        assert!(sys.starts_with("Ты — аналитик.\n\n## Задача\nОцени обращение клиента Анна."), "{sys}");
        assert!(sys.contains("«Не знаю»") && sys.contains("не более 50 слов"), "{sys}");
        assert!(sys.contains(r#"{"type":"object","required":["a"]}"#), "{sys}");
        assert_eq!(c.messages[3].content, "Не работает вход");
    }

    #[test]
    fn sources_are_numbered_and_cited() {
        let v = json!({"client": {"name": "А"}, "ticket": "Q"}).as_object().unwrap().clone();
        let src = CitedChunk {
            source: "kb/refunds.md".into(),
            title: "Возвраты".into(),
            version: "3".into(),
            section: "Сроки".into(),
            text: "Возврат за 14 дней.".into(),
        };
        let c = compile(&spec(), &v, &CompileInput { sources: vec![src], ..Default::default() }).unwrap();
        let user = &c.messages.last().unwrap().content;
        assert!(user.contains("[1] Возвраты (kb/refunds.md, v3, Сроки)\nВозврат за 14 дней."), "{user}");
        assert!(c.messages[0].content.contains("[1]"));
    }

    #[test]
    fn deterministic() {
        let v = json!({"client": {"name": "А"}, "ticket": "Q"}).as_object().unwrap().clone();
        let a = compile(&spec(), &v, &CompileInput::default()).unwrap();
        let b = compile(&spec(), &v, &CompileInput::default()).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn extracts_answers() {
        assert_eq!(extract_answer(Reasoning::Scratchpad, "<scratchpad>hm</scratchpad>\n{\"a\":1}"), "{\"a\":1}");
        assert_eq!(extract_answer(Reasoning::Scratchpad, "<scratchpad>hm"), "");
        assert_eq!(extract_answer(Reasoning::StepByStep, "1. x\n2. y\nОтвет: 42"), "42");
    }
}
