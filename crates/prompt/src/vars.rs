//! Typed variables: declarations, type checks, defaults, `{{dotted.path}}` substitution.
//!
//! Substitution is deliberately not a template language: `{{ path }}` is replaced by the value at
//! `path`, nothing else is interpreted, so user data containing braces or Jinja syntax can never
//! execute anything and rendering stays deterministic.

use crate::error::{PromptError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::LazyLock;

/// Values for a spec's variables, by name.
pub type Values = Map<String, Value>;

/// A declared variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    /// Name used in `{{name}}` / `{{name.field}}`.
    pub name: String,
    /// Type.
    #[serde(rename = "type", default)]
    pub kind: VarType,
    /// Whether a value must be given (a default also satisfies it).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub required: bool,
    /// Value used when none is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// What the variable holds.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// An example value (used by `render --example` and the library's self-test).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<Value>,
}

fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}

/// A variable's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VarType {
    /// Text.
    #[default]
    String,
    /// A number.
    Number,
    /// true / false.
    Boolean,
    /// A list of values.
    List,
    /// An object (fields reachable as `{{name.field}}`).
    Object,
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

impl VarType {
    /// The type's name as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            VarType::String => "string",
            VarType::Number => "number",
            VarType::Boolean => "boolean",
            VarType::List => "list",
            VarType::Object => "object",
        }
    }

    /// Checks a JSON value against the type, strictly.
    pub fn check(self, name: &str, v: &Value) -> Result<()> {
        let ok = matches!(
            (self, v),
            (VarType::String, Value::String(_))
                | (VarType::Number, Value::Number(_))
                | (VarType::Boolean, Value::Bool(_))
                | (VarType::List, Value::Array(_))
                | (VarType::Object, Value::Object(_))
        );
        if ok {
            Ok(())
        } else {
            Err(PromptError::TypeMismatch { name: name.into(), expected: self.as_str().into(), found: describe(v) })
        }
    }

    /// Converts text from a flag or a CSV cell to the type: numbers and booleans are parsed,
    /// lists and objects are JSON (a list may also be comma-separated text).
    pub fn coerce_text(self, name: &str, text: &str) -> Result<Value> {
        let mismatch = || PromptError::TypeMismatch {
            name: name.into(),
            expected: self.as_str().into(),
            found: format!("{text:?}"),
        };
        match self {
            VarType::String => Ok(Value::String(text.into())),
            VarType::Number => {
                let t = text.trim().replace(',', ".");
                let n: f64 = t.parse().map_err(|_| mismatch())?;
                if !n.is_finite() {
                    return Err(mismatch());
                }
                Ok(if n.fract() == 0.0 && n.abs() < 9.0e15 {
                    Value::from(n as i64)
                } else {
                    serde_json::Number::from_f64(n).map(Value::Number).ok_or_else(mismatch)?
                })
            }
            VarType::Boolean => match text.trim().to_lowercase().as_str() {
                "true" | "yes" | "1" | "да" => Ok(Value::Bool(true)),
                "false" | "no" | "0" | "нет" => Ok(Value::Bool(false)),
                _ => Err(mismatch()),
            },
            VarType::List => {
                let t = text.trim();
                if t.starts_with('[') {
                    let v: Value = serde_json::from_str(t).map_err(|_| mismatch())?;
                    self.check(name, &v)?;
                    Ok(v)
                } else if t.is_empty() {
                    Ok(Value::Array(vec![]))
                } else {
                    Ok(Value::Array(t.split(',').map(|s| Value::String(s.trim().to_string())).collect()))
                }
            }
            VarType::Object => {
                let v: Value = serde_json::from_str(text.trim()).map_err(|_| mismatch())?;
                self.check(name, &v)?;
                Ok(v)
            }
        }
    }
}

fn describe(v: &Value) -> String {
    let s = v.to_string();
    let short: String = s.chars().take(40).collect();
    if short.len() < s.len() { format!("{} {short}…", kind_of(v)) } else { format!("{} {short}", kind_of(v)) }
}

/// True for `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_identifier(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_') && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

static PLACEHOLDER: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"\{\{\s*([^{}]*?)\s*\}\}").expect("the placeholder pattern is a valid regex"));

/// The `{{paths}}` a text uses, in order, or a message naming a malformed placeholder.
pub fn placeholders(text: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    for cap in PLACEHOLDER.captures_iter(text) {
        let path = &cap[1];
        if !path.split('.').all(is_identifier) {
            return Err(format!("malformed placeholder `{}`: expected {{{{name}}}} or {{{{name.field}}}}", &cap[0]));
        }
        out.push(path.to_string());
    }
    Ok(out)
}

/// How a value is written into a prompt: strings as-is, numbers and booleans as written, lists
/// of scalars as "- item" lines, other lists and objects as pretty JSON, null as nothing.
pub fn value_to_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) if items.iter().all(|i| !i.is_array() && !i.is_object()) => {
            items.iter().map(|i| format!("- {}", value_to_text(i))).collect::<Vec<_>>().join("\n")
        }
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}

/// Looks up a dotted path in the values.
pub fn lookup<'a>(values: &'a Values, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut cur = values.get(parts.next()?)?;
    for p in parts {
        cur = match cur {
            Value::Object(m) => m.get(p)?,
            Value::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Replaces every `{{path}}` in `text` with its value. `field` names the text in errors.
pub fn substitute(text: &str, values: &Values, field: &str) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for cap in PLACEHOLDER.captures_iter(text) {
        let m = cap.get(0).expect("capture 0 is the whole match");
        let path = &cap[1];
        let root = path.split('.').next().unwrap_or(path);
        if !values.contains_key(root) {
            return Err(PromptError::UnknownVariable {
                name: path.into(),
                field: field.into(),
                known: values.keys().cloned().collect(),
            });
        }
        let value = match lookup(values, path) {
            Some(v) => v,
            // A missing field of an optional object renders as nothing only when the root is null.
            None if values.get(root).is_some_and(Value::is_null) => &Value::Null,
            None => {
                return Err(PromptError::TypeMismatch {
                    name: path.into(),
                    expected: "a value at this path".into(),
                    found: format!("no field `{}` in {}", path.rsplit('.').next().unwrap_or(path), describe(&values[root])),
                });
            }
        };
        out.push_str(&text[last..m.start()]);
        out.push_str(&value_to_text(value));
        last = m.end();
    }
    out.push_str(&text[last..]);
    Ok(out)
}

/// Checks and completes values for the declared variables: rejects undeclared names, checks
/// types, applies defaults, fails on missing required ones; optional ones without a value are
/// null (rendered as nothing).
pub fn resolve(decls: &[Variable], given: &Values) -> Result<Values> {
    let known: Vec<String> = decls.iter().map(|v| v.name.clone()).collect();
    for k in given.keys() {
        if !known.contains(k) {
            return Err(PromptError::UnknownVariable { name: k.clone(), field: "the given values".into(), known });
        }
    }
    let mut out = Values::new();
    for d in decls {
        let v = match given.get(&d.name) {
            Some(v) if !v.is_null() => {
                d.kind.check(&d.name, v)?;
                v.clone()
            }
            _ => match &d.default {
                Some(def) => def.clone(),
                None if d.required => {
                    return Err(PromptError::MissingVariable {
                        name: d.name.clone(),
                        kind: d.kind.as_str().into(),
                        description: d.description.clone(),
                    });
                }
                None => Value::Null,
            },
        };
        out.insert(d.name.clone(), v);
    }
    Ok(out)
}

/// Parses `--var name=value` flags into typed values: the text is converted to the declared
/// type; `name.field=value` sets a field of an object variable; `name=@file` reads the value
/// from a file.
pub fn parse_flags(decls: &[Variable], flags: &[String]) -> Result<Values> {
    let known: Vec<String> = decls.iter().map(|v| v.name.clone()).collect();
    let mut out = Values::new();
    for flag in flags {
        let (key, raw) = flag.split_once('=').ok_or_else(|| PromptError::BadVarFlag(flag.clone()))?;
        let key = key.trim();
        if key.is_empty() || !key.split('.').all(is_identifier) {
            return Err(PromptError::BadVarFlag(flag.clone()));
        }
        let text = match raw.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path).map_err(|source| PromptError::Io { path: path.into(), source })?,
            None => raw.to_string(),
        };
        let (root, rest) = match key.split_once('.') {
            Some((r, rest)) => (r, Some(rest)),
            None => (key, None),
        };
        let decl = decls
            .iter()
            .find(|d| d.name == root)
            .ok_or_else(|| PromptError::UnknownVariable { name: key.into(), field: "--var".into(), known: known.clone() })?;
        match rest {
            None => {
                out.insert(root.into(), decl.kind.coerce_text(root, &text)?);
            }
            Some(path) => {
                if decl.kind != VarType::Object {
                    return Err(PromptError::TypeMismatch {
                        name: key.into(),
                        expected: "object (to set a field)".into(),
                        found: decl.kind.as_str().into(),
                    });
                }
                let mut cur = out.entry(root.to_string()).or_insert_with(|| Value::Object(Map::new()));
                let parts: Vec<&str> = path.split('.').collect();
                for (i, p) in parts.iter().enumerate() {
                    let Value::Object(m) = cur else {
                        return Err(PromptError::BadVarFlag(flag.clone()));
                    };
                    if i + 1 == parts.len() {
                        m.insert((*p).to_string(), Value::String(text.clone()));
                        break;
                    }
                    cur = m.entry((*p).to_string()).or_insert_with(|| Value::Object(Map::new()));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decl(name: &str, kind: VarType, required: bool, default: Option<Value>) -> Variable {
        Variable { name: name.into(), kind, required, default, description: String::new(), example: None }
    }

    #[test]
    fn substitutes_dotted_paths_and_lists() {
        let v: Values = json!({"client": {"name": "Анна", "tier": 2}, "items": ["a", "b"]}).as_object().unwrap().clone();
        let s = substitute("Здравствуйте, {{ client.name }} ({{client.tier}}):\n{{items}}", &v, "t").unwrap();
        assert_eq!(s, "Здравствуйте, Анна (2):\n- a\n- b");
    }

    #[test]
    fn braces_in_values_are_not_interpreted() {
        let v: Values = json!({"x": "{{y}} {% raise %}"}).as_object().unwrap().clone();
        assert_eq!(substitute("[{{x}}]", &v, "t").unwrap(), "[{{y}} {% raise %}]");
    }

    #[test]
    fn missing_field_is_an_error() {
        let v: Values = json!({"client": {"name": "A"}}).as_object().unwrap().clone();
        let e = substitute("{{client.phone}}", &v, "task").unwrap_err();
        assert!(e.to_string().contains("phone"), "{e}");
    }

    #[test]
    fn resolve_applies_defaults_and_checks() {
        let decls = vec![
            decl("n", VarType::Number, true, None),
            decl("tone", VarType::String, true, Some(json!("формальный"))),
            decl("note", VarType::String, false, None),
        ];
        let got = resolve(&decls, json!({"n": 3}).as_object().unwrap()).unwrap();
        assert_eq!(got["tone"], "формальный");
        assert!(got["note"].is_null());
        let e = resolve(&decls, json!({"n": "three"}).as_object().unwrap()).unwrap_err();
        assert!(matches!(e, PromptError::TypeMismatch { .. }), "{e}");
        let e = resolve(&decls, json!({}).as_object().unwrap()).unwrap_err();
        assert!(matches!(e, PromptError::MissingVariable { .. }), "{e}");
        let e = resolve(&decls, json!({"n": 1, "zzz": 1}).as_object().unwrap()).unwrap_err();
        assert!(matches!(e, PromptError::UnknownVariable { .. }), "{e}");
    }

    #[test]
    fn flags_are_coerced_to_declared_types() {
        let decls = vec![
            decl("n", VarType::Number, true, None),
            decl("ok", VarType::Boolean, true, None),
            decl("tags", VarType::List, true, None),
            decl("client", VarType::Object, true, None),
        ];
        let flags: Vec<String> =
            ["n=2,5", "ok=да", "tags=a, b", "client.name=Иван", "client.address.city=Москва"].iter().map(|s| s.to_string()).collect();
        let v = parse_flags(&decls, &flags).unwrap();
        assert_eq!(v["n"], json!(2.5));
        assert_eq!(v["ok"], json!(true));
        assert_eq!(v["tags"], json!(["a", "b"]));
        assert_eq!(v["client"], json!({"name": "Иван", "address": {"city": "Москва"}}));
        assert!(matches!(parse_flags(&decls, &["n=abc".into()]), Err(PromptError::TypeMismatch { .. })));
        assert!(matches!(parse_flags(&decls, &["novalue".into()]), Err(PromptError::BadVarFlag(_))));
        assert!(matches!(parse_flags(&decls, &["who=1".into()]), Err(PromptError::UnknownVariable { .. })));
    }

    #[test]
    fn malformed_placeholder_is_reported() {
        assert!(placeholders("{{ a b }}").is_err());
        assert_eq!(placeholders("{{a}} {{ b.c }}").unwrap(), vec!["a", "b.c"]);
    }
}
