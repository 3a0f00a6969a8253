//! Reading and validating input rows: JSONL in three shapes, and CSV.
//!
//! Every row becomes either a [`Row`] (messages in order, cleaned) or a [`Rejection`] naming
//! file, line and field. Only a file that cannot be read as JSONL/CSV at all is an error.

use super::text::{clean, TokenCounter};
use super::{FieldMap, Fix, FixKind, InputFormat, Message, Options, RejectKind, Rejection, Role};
use crate::{LoraError, Result};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::path::Path;

/// A valid row, before anonymisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// 1-based line in the input.
    pub line: usize,
    /// System? then alternating user/assistant, ending with the assistant.
    pub messages: Vec<Message>,
    /// Category label.
    pub category: Option<String>,
}

/// Everything read from one file.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    /// Valid rows in input order.
    pub rows: Vec<Row>,
    /// Rejected rows in input order.
    pub rejected: Vec<Rejection>,
    /// Fixes applied to the valid rows.
    pub fixes: Vec<Fix>,
    /// Blank lines skipped.
    pub blank_lines: usize,
    /// `csv` or `jsonl:` + the shapes seen (`jsonl:qa`, `jsonl:messages+qa` …).
    pub format_used: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Shape {
    Qa,
    Instruction,
    Messages,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Qa => "qa",
            Shape::Instruction => "instruction",
            Shape::Messages => "messages",
        }
    }
}

/// A row problem before the file name is attached.
struct Bad {
    field: Option<String>,
    kind: RejectKind,
    reason: String,
}

fn bad(field: impl Into<Option<String>>, kind: RejectKind, reason: impl Into<String>) -> Bad {
    Bad { field: field.into(), kind, reason: reason.into() }
}

/// Reads and validates every row of `bytes` (the contents of `path`).
pub fn parse(path: &Path, bytes: &[u8], options: &Options, tokens: &dyn TokenCounter) -> Result<Parsed> {
    let is_csv = match options.format {
        InputFormat::Csv => true,
        InputFormat::Auto => path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("csv") || e.eq_ignore_ascii_case("tsv")),
        _ => false,
    };
    let (bytes, bom) = match bytes.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) => (rest, true),
        None => (bytes, false),
    };
    let mut parsed = if is_csv { parse_csv(path, bytes, options, tokens)? } else { parse_jsonl(path, bytes, options, tokens) };
    if bom && let Some(first) = parsed.rows.first() {
        parsed.fixes.insert(0, Fix { line: first.line, field: "(file)".into(), kind: FixKind::ByteOrderMark });
    }
    Ok(parsed)
}

fn parse_jsonl(path: &Path, bytes: &[u8], options: &Options, tokens: &dyn TokenCounter) -> Parsed {
    let file = path.display().to_string();
    let mut out = Parsed::default();
    let mut shapes = BTreeSet::new();
    let forced = match options.format {
        InputFormat::Qa => Some(Shape::Qa),
        InputFormat::Instruction => Some(Shape::Instruction),
        InputFormat::Messages => Some(Shape::Messages),
        _ => None,
    };
    let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    let n_lines = lines.len();
    for (i, raw) in lines.into_iter().enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            // The final newline leaves an empty tail that is not a line.
            if !(raw.is_empty() && i + 1 == n_lines) {
                out.blank_lines += 1;
            }
            continue;
        }
        let result = std::str::from_utf8(raw)
            .map_err(|e| bad(None, RejectKind::NotUtf8, format!("not valid UTF-8 (byte {} of the line)", e.valid_up_to() + 1)))
            .and_then(|text| {
                serde_json::from_str::<Value>(text).map_err(|e| {
                    let msg = e.to_string();
                    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
                    bad(None, RejectKind::BadJson, format!("bad JSON at column {}: {msg}", e.column()))
                })
            })
            .and_then(|v| match v {
                Value::Object(obj) => Ok(obj),
                other => Err(bad(None, RejectKind::NotObject, format!("expected a JSON object, got {}", type_name(&other)))),
            })
            .and_then(|obj| {
                let shape = match forced {
                    Some(s) => s,
                    None => detect_shape(&obj, &options.map)?,
                };
                let mut fixes = Vec::new();
                let row = row_from_object(&obj, shape, line, options, tokens, &mut fixes)?;
                Ok((shape, row, fixes))
            });
        match result {
            Ok((shape, row, fixes)) => {
                shapes.insert(shape);
                out.fixes.extend(fixes.into_iter().map(|(field, kind)| Fix { line, field, kind }));
                out.rows.push(row);
            }
            Err(b) => out.rejected.push(Rejection { file: file.clone(), line, field: b.field, kind: b.kind, reason: b.reason }),
        }
    }
    out.format_used = format!("jsonl:{}", shapes.iter().map(|s| s.name()).collect::<Vec<_>>().join("+"));
    out
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

const QUESTION_ALIASES: &[&str] = &["question", "prompt", "query"];
const ANSWER_ALIASES: &[&str] = &["answer", "response", "completion"];

/// The source key of a canonical field: the mapped name, else the first alias present.
fn key_for<'a>(obj: &Map<String, Value>, map: &'a FieldMap, canonical: &'a str) -> &'a str {
    if map.is_mapped(canonical) {
        return map.source(canonical);
    }
    let aliases: &[&str] = match canonical {
        "question" => QUESTION_ALIASES,
        "answer" => ANSWER_ALIASES,
        _ => return map.source(canonical),
    };
    aliases.iter().copied().find(|k| obj.contains_key(*k)).unwrap_or(canonical)
}

fn detect_shape(obj: &Map<String, Value>, map: &FieldMap) -> std::result::Result<Shape, Bad> {
    let has = |c: &str| obj.contains_key(key_for(obj, map, c));
    if has("messages") {
        return Ok(Shape::Messages);
    }
    if has("question") || has("answer") {
        return Ok(Shape::Qa); // a missing half is reported by row_from_object
    }
    if has("instruction") || has("output") {
        return Ok(Shape::Instruction);
    }
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    Err(bad(
        None,
        RejectKind::UnknownShape,
        format!("no known fields (question/answer, instruction/output or messages); found: {}", keys.join(", ")),
    ))
}

type RowFixes = Vec<(String, FixKind)>;

/// A string field: `Ok(None)` when absent/null/empty and not required.
fn text_field(
    obj: &Map<String, Value>,
    key: &str,
    required: bool,
    target: bool,
    fixes: &mut RowFixes,
) -> std::result::Result<Option<String>, Bad> {
    let raw = match obj.get(key) {
        None | Some(Value::Null) if required => {
            return Err(bad(key.to_string(), RejectKind::MissingField, "missing required field"));
        }
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(v @ (Value::Object(_) | Value::Array(_))) if target => {
            fixes.push((key.to_string(), FixKind::StringifiedJson));
            serde_json::to_string(v).map_err(|e| bad(key.to_string(), RejectKind::WrongType, e.to_string()))?
        }
        Some(v) => {
            return Err(bad(key.to_string(), RejectKind::WrongType, format!("expected a string, got {}", type_name(v))));
        }
    };
    let mut kinds = Vec::new();
    let text = clean(&raw, &mut kinds);
    fixes.extend(kinds.into_iter().map(|k| (key.to_string(), k)));
    if text.is_empty() {
        if required {
            let what = if target { "empty answer" } else { "empty text" };
            return Err(bad(key.to_string(), RejectKind::Empty, what));
        }
        return Ok(None);
    }
    Ok(Some(text))
}

fn row_from_object(
    obj: &Map<String, Value>,
    shape: Shape,
    line: usize,
    options: &Options,
    tokens: &dyn TokenCounter,
    fixes: &mut RowFixes,
) -> std::result::Result<Row, Bad> {
    let map = &options.map;
    let system_key = key_for(obj, map, "system");
    let system = text_field(obj, system_key, false, false, fixes)?;
    let mut messages = Vec::new();
    match shape {
        Shape::Qa => {
            let q = text_field(obj, key_for(obj, map, "question"), true, false, fixes)?;
            let a = text_field(obj, key_for(obj, map, "answer"), true, true, fixes)?;
            if let Some(s) = system {
                messages.push(Message { role: Role::System, content: s });
            }
            messages.push(Message { role: Role::User, content: q.unwrap_or_default() });
            messages.push(Message { role: Role::Assistant, content: a.unwrap_or_default() });
        }
        Shape::Instruction => {
            let ins = text_field(obj, key_for(obj, map, "instruction"), true, false, fixes)?.unwrap_or_default();
            let input = text_field(obj, key_for(obj, map, "input"), false, false, fixes)?;
            let out = text_field(obj, key_for(obj, map, "output"), true, true, fixes)?.unwrap_or_default();
            if let Some(s) = system {
                messages.push(Message { role: Role::System, content: s });
            }
            let user = match input {
                Some(inp) => format!("{ins}\n\n{inp}"),
                None => ins,
            };
            messages.push(Message { role: Role::User, content: user });
            messages.push(Message { role: Role::Assistant, content: out });
        }
        Shape::Messages => {
            let key = key_for(obj, map, "messages");
            messages = parse_messages(obj.get(key), key, fixes)?;
            if let Some(s) = system {
                match messages.first() {
                    Some(m) if m.role == Role::System && m.content != s => {
                        return Err(bad(
                            system_key.to_string(),
                            RejectKind::BadRoles,
                            "both a `system` field and a different system message",
                        ));
                    }
                    Some(m) if m.role == Role::System => {}
                    _ => messages.insert(0, Message { role: Role::System, content: s }),
                }
            }
        }
    }
    let cat_key = key_for(obj, map, "category");
    let category = text_field(obj, cat_key, false, false, fixes)?;
    if let Some(max) = options.max_tokens {
        let n: usize = messages.iter().map(|m| tokens.count(&m.content) + tokens.per_message_overhead()).sum();
        if n > max {
            return Err(bad(
                None,
                RejectKind::TooLong,
                format!("sample is about {n} tokens ({}), over --max-tokens {max}", tokens.name()),
            ));
        }
    }
    Ok(Row { line, messages, category })
}

fn parse_messages(v: Option<&Value>, key: &str, fixes: &mut RowFixes) -> std::result::Result<Vec<Message>, Bad> {
    let arr = match v {
        None | Some(Value::Null) => return Err(bad(key.to_string(), RejectKind::MissingField, "missing required field")),
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(bad(key.to_string(), RejectKind::WrongType, format!("expected an array, got {}", type_name(other))));
        }
    };
    let mut out: Vec<Message> = Vec::with_capacity(arr.len());
    for (i, m) in arr.iter().enumerate() {
        let field = |f: &str| format!("{key}[{i}]{f}");
        let Value::Object(m) = m else {
            return Err(bad(field(""), RejectKind::WrongType, format!("expected an object, got {}", type_name(m))));
        };
        let role = match m.get("role") {
            Some(Value::String(r)) => match r.trim().to_lowercase().as_str() {
                "system" | "developer" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => {
                    return Err(bad(
                        field(".role"),
                        RejectKind::BadRoles,
                        format!("unsupported role {other:?} (expected system, user or assistant)"),
                    ));
                }
            },
            None | Some(Value::Null) => return Err(bad(field(".role"), RejectKind::MissingField, "missing role")),
            Some(v) => return Err(bad(field(".role"), RejectKind::WrongType, format!("expected a string, got {}", type_name(v)))),
        };
        let content_field = field(".content");
        let raw = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => {
                let mut texts = Vec::new();
                for p in parts {
                    match p.get("text").and_then(Value::as_str) {
                        Some(t) if p.get("type").and_then(Value::as_str).is_none_or(|t| t == "text") => texts.push(t.to_string()),
                        _ => {
                            return Err(bad(content_field, RejectKind::WrongType, "only text content parts are supported"));
                        }
                    }
                }
                fixes.push((content_field.clone(), FixKind::JoinedContentParts));
                texts.join("")
            }
            None | Some(Value::Null) => return Err(bad(content_field, RejectKind::MissingField, "missing content")),
            Some(v) => return Err(bad(content_field, RejectKind::WrongType, format!("expected a string, got {}", type_name(v)))),
        };
        let mut kinds = Vec::new();
        let content = clean(&raw, &mut kinds);
        fixes.extend(kinds.into_iter().map(|k| (content_field.clone(), k)));
        if content.is_empty() {
            let what = if role == Role::Assistant { "empty answer" } else { "empty message" };
            return Err(bad(content_field, RejectKind::Empty, what));
        }
        // Order: an optional system message first, then user/assistant alternating.
        let expected = match out.last().map(|m| m.role) {
            None => None,
            Some(Role::System) | Some(Role::Assistant) => Some(Role::User),
            Some(Role::User) => Some(Role::Assistant),
        };
        let ok = match (expected, role) {
            (None, Role::System | Role::User) => true,
            (Some(e), r) => e == r,
            (None, Role::Assistant) => false,
        };
        if !ok {
            let want = expected.map_or("system or user", Role::as_str);
            return Err(bad(
                field(".role"),
                RejectKind::BadRoles,
                format!("{} where {want} was expected (system first, then user and assistant alternating)", role.as_str()),
            ));
        }
        out.push(Message { role, content });
    }
    match out.last().map(|m| m.role) {
        Some(Role::Assistant) => Ok(out),
        Some(_) => Err(bad(key.to_string(), RejectKind::BadRoles, "the last message must be the assistant's (the training target)")),
        None => Err(bad(key.to_string(), RejectKind::Empty, "no messages")),
    }
}

fn sniff_delimiter(bytes: &[u8]) -> u8 {
    let first = bytes.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let count = |d: u8| first.iter().filter(|&&b| b == d).count();
    [b',', b';', b'\t'].into_iter().max_by_key(|&d| (count(d), d == b',')).unwrap_or(b',')
}

fn parse_csv(path: &Path, bytes: &[u8], options: &Options, tokens: &dyn TokenCounter) -> Result<Parsed> {
    let file = path.display().to_string();
    let unparseable = |reason: String| LoraError::Unparseable { path: path.to_path_buf(), reason };
    let mut rdr = csv::ReaderBuilder::new().delimiter(sniff_delimiter(bytes)).flexible(true).has_headers(true).from_reader(bytes);
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| unparseable(format!("cannot read the CSV header: {e}")))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if headers.iter().all(String::is_empty) {
        return Err(unparseable("empty file or empty CSV header".into()));
    }
    let mut seen = BTreeSet::new();
    for h in &headers {
        if !h.is_empty() && !seen.insert(h.as_str()) {
            return Err(unparseable(format!("column {h:?} appears twice in the header")));
        }
    }
    for (canon, col) in &options.map.0 {
        if !headers.contains(col) {
            return Err(unparseable(format!("--map {canon}={col}: no column {col:?} in the header ({})", headers.join(", "))));
        }
    }
    let probe: Map<String, Value> = headers.iter().map(|h| (h.clone(), Value::String(String::new()))).collect();
    let shape = match options.format {
        InputFormat::Qa => Shape::Qa,
        InputFormat::Instruction => Shape::Instruction,
        _ => detect_shape(&probe, &options.map).map_err(|_| {
            unparseable(format!(
                "no question/answer (or instruction/output) columns in the header ({}); name them with --map question=COLUMN,answer=COLUMN",
                headers.join(", ")
            ))
        })?,
    };
    if shape == Shape::Messages {
        return Err(unparseable("a `messages` column is not supported in CSV; use JSONL".into()));
    }
    let mut out = Parsed { format_used: format!("csv:{}", shape.name()), ..Parsed::default() };
    for rec in rdr.records() {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                let kind = if matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) { RejectKind::NotUtf8 } else { RejectKind::BadCsv };
                out.rejected.push(Rejection { file: file.clone(), line, field: None, kind, reason: format!("bad CSV record: {e}") });
                continue;
            }
        };
        let line = rec.position().map_or(0, |p| p.line() as usize);
        if rec.iter().all(|f| f.trim().is_empty()) {
            out.blank_lines += 1;
            continue;
        }
        if rec.len() != headers.len() {
            out.rejected.push(Rejection {
                file: file.clone(),
                line,
                field: None,
                kind: RejectKind::BadCsv,
                reason: format!("expected {} fields (as in the header), got {}", headers.len(), rec.len()),
            });
            continue;
        }
        let obj: Map<String, Value> = headers.iter().cloned().zip(rec.iter().map(|f| Value::String(f.to_string()))).collect();
        let mut fixes = Vec::new();
        match row_from_object(&obj, shape, line, options, tokens, &mut fixes) {
            Ok(row) => {
                out.fixes.extend(fixes.into_iter().map(|(field, kind)| Fix { line, field, kind }));
                out.rows.push(row);
            }
            Err(b) => out.rejected.push(Rejection { file: file.clone(), line, field: b.field, kind: b.kind, reason: b.reason }),
        }
    }
    Ok(out)
}
