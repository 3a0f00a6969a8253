//! The prompt formula as a typed spec: Role + Task + Context + Data + Constraints + Output format
//! + Quality criteria, with few-shot examples, reasoning mode, typed variables and generation
//! settings. Specs are TOML or YAML files; the store keeps their text verbatim.

use crate::error::{PromptError, Result};
use crate::vars::{VarType, Variable, placeholders};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A prompt spec: the formula as typed fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptSpec {
    /// Unique name (`[a-z0-9][a-z0-9._-]*`).
    pub name: String,
    /// Human title.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
    /// What the prompt is for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Library category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    /// Tags for search.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Language of the generated scaffolding (section headings, instructions).
    #[serde(default, skip_serializing_if = "Language::is_default")]
    pub language: Language,
    /// Role: who the model is ("Ты — опытный HR-специалист…").
    #[serde(default)]
    pub role: String,
    /// Task: what to do.
    #[serde(default)]
    pub task: String,
    /// Context: background the model needs.
    #[serde(default)]
    pub context: String,
    /// Data: the input to work on (usually a `{{variable}}`); becomes the user message.
    #[serde(default)]
    pub data: String,
    /// Constraints, one per item.
    #[serde(default)]
    pub constraints: Vec<String>,
    /// Output format: free text and/or a JSON Schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_format: Option<OutputFormat>,
    /// Quality criteria, one per item.
    #[serde(default)]
    pub quality_criteria: Vec<String>,
    /// "If unsure, say so": the exact phrase the model must answer with when it cannot answer
    /// from the data (None: no such instruction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_unsure: Option<String>,
    /// Answer length limit in words (None: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_words: Option<u32>,
    /// Reasoning mode.
    #[serde(default, skip_serializing_if = "Reasoning::is_off")]
    pub reasoning: Reasoning,
    /// Replaces the generated system message; the formula then goes into the user message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Most tokens the answer may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_answer_tokens: Option<u32>,
    /// Sampling temperature (None: the engine's default, greedy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Static few-shot examples (input → output), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<Example>,
    /// A set to pick few-shot examples from by similarity to the input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example_set: Option<ExampleSet>,
    /// Generation strategy (JSON retries, two-stage, self-check).
    #[serde(default, skip_serializing_if = "Strategy::is_default")]
    pub strategy: Strategy,
    /// Typed variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<Variable>,
}

/// Library categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Category {
    /// People: hiring, onboarding, reviews.
    HR,
    /// Data: analysis, SQL, reports.
    Data,
    /// Marketing: copy, campaigns, audiences.
    Marketing,
    /// Management: meetings, plans, decisions.
    Management,
    /// Sales: leads, offers, objections.
    Sales,
    /// Text: editing, summaries, translation.
    Text,
    /// Finance: budgets, invoices, variance.
    Finance,
    /// Support: tickets, replies, FAQs.
    Support,
    /// Legal: contracts, policies, claims.
    Legal,
}

impl Category {
    /// All categories, in display order.
    pub const ALL: [Category; 9] = [
        Category::HR,
        Category::Data,
        Category::Marketing,
        Category::Management,
        Category::Sales,
        Category::Text,
        Category::Finance,
        Category::Support,
        Category::Legal,
    ];

    /// The category's name as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::HR => "HR",
            Category::Data => "Data",
            Category::Marketing => "Marketing",
            Category::Management => "Management",
            Category::Sales => "Sales",
            Category::Text => "Text",
            Category::Finance => "Finance",
            Category::Support => "Support",
            Category::Legal => "Legal",
        }
    }

    /// Parses a category name, case-insensitively.
    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str().eq_ignore_ascii_case(s))
    }
}

/// Language of the scaffolding text the compiler adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Russian (default).
    #[default]
    Ru,
    /// English.
    En,
}

impl Language {
    fn is_default(&self) -> bool {
        *self == Language::Ru
    }
}

/// How the model should reason before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reasoning {
    /// Answer directly.
    #[default]
    Off,
    /// Think step by step, visibly, then answer.
    StepByStep,
    /// Think in a hidden scratchpad, then answer; the scratchpad is removed from the answer.
    Scratchpad,
}

impl Reasoning {
    fn is_off(&self) -> bool {
        *self == Reasoning::Off
    }
}

/// The output format: a description and/or a JSON Schema the answer must satisfy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputFormat {
    /// Free-text description of the format.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub text: String,
    /// JSON Schema, as JSON text or as an inline table/mapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<SchemaSource>,
}

/// A JSON Schema written as JSON text or inline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SchemaSource {
    /// JSON text.
    Text(String),
    /// An inline TOML table / YAML mapping.
    Inline(serde_json::Value),
}

/// One few-shot example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    /// The user turn.
    pub input: String,
    /// The ideal assistant turn.
    pub output: String,
}

/// A file of examples to choose few-shot examples from by similarity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExampleSet {
    /// JSONL file (relative paths resolve against the current directory).
    pub path: String,
    /// How many to pick.
    #[serde(default = "default_k")]
    pub k: usize,
    /// Field holding the example input.
    #[serde(default = "default_input_field")]
    pub input_field: String,
    /// Field holding the example output (a string, or any JSON value written compactly).
    #[serde(default = "default_output_field")]
    pub output_field: String,
}

fn default_k() -> usize {
    3
}
fn default_input_field() -> String {
    "question".into()
}
fn default_output_field() -> String {
    "answer".into()
}

/// Generation strategy settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Strategy {
    /// Retries with the validation error when the answer fails the JSON Schema.
    #[serde(default = "default_retries")]
    pub json_retries: u32,
    /// Draft, then refine with the draft and the sources.
    #[serde(default)]
    pub two_stage: bool,
    /// Verify each claim of the answer against the sources in a second call.
    #[serde(default)]
    pub self_check: bool,
}

fn default_retries() -> u32 {
    1
}

impl Default for Strategy {
    fn default() -> Self {
        Strategy { json_retries: 1, two_stage: false, self_check: false }
    }
}

impl Strategy {
    fn is_default(&self) -> bool {
        *self == Strategy::default()
    }
}

/// A spec file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// TOML.
    Toml,
    /// YAML.
    Yaml,
}

impl Format {
    /// From a file extension (`toml`, `yaml`, `yml`).
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "toml" => Some(Format::Toml),
            "yaml" | "yml" => Some(Format::Yaml),
            _ => None,
        }
    }

    /// `toml` or `yaml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Toml => "toml",
            Format::Yaml => "yaml",
        }
    }

    /// Parses `toml` / `yaml`.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "toml" => Some(Format::Toml),
            "yaml" | "yml" => Some(Format::Yaml),
            _ => None,
        }
    }
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

impl PromptSpec {
    /// Parses a spec from text and validates it. `origin` names the source in errors.
    pub fn parse(text: &str, format: Format, origin: &str) -> Result<PromptSpec> {
        let spec: PromptSpec = match format {
            Format::Toml => toml::from_str(text).map_err(|e| {
                let (line, column) = match e.span() {
                    Some(span) => {
                        let (l, c) = line_col(text, span.start);
                        (Some(l), Some(c))
                    }
                    None => (None, None),
                };
                PromptError::Parse { origin: origin.into(), line, column, message: e.message().trim().to_string() }
            })?,
            Format::Yaml => serde_yaml_ng::from_str(text).map_err(|e| {
                let loc = e.location();
                PromptError::Parse {
                    origin: origin.into(),
                    line: loc.as_ref().map(|l| l.line()),
                    column: loc.as_ref().map(|l| l.column()),
                    message: strip_yaml_location(&e.to_string()),
                }
            })?,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Reads and parses a spec file (format from its extension).
    pub fn load(path: &Path) -> Result<(PromptSpec, String, Format)> {
        let format = Format::from_path(path).ok_or_else(|| PromptError::Parse {
            origin: path.display().to_string(),
            line: None,
            column: None,
            message: "unknown spec format: use a .toml, .yaml or .yml file".into(),
        })?;
        let text = std::fs::read_to_string(path).map_err(|source| PromptError::Io { path: path.into(), source })?;
        let spec = PromptSpec::parse(&text, format, &path.display().to_string())?;
        Ok((spec, text, format))
    }

    /// Writes the spec as TOML or YAML text.
    pub fn to_text(&self, format: Format) -> Result<String> {
        match format {
            Format::Toml => toml::to_string_pretty(self).map_err(|e| PromptError::invalid("<spec>", e.to_string())),
            Format::Yaml => serde_yaml_ng::to_string(self).map_err(|e| PromptError::invalid("<spec>", e.to_string())),
        }
    }

    /// Checks consistency: name, variables (unique, valid defaults), every placeholder declared,
    /// the JSON Schema parses and compiles, examples present when reasoning needs them.
    pub fn validate(&self) -> Result<()> {
        trident_store::prompts::check_name("prompt", &self.name).map_err(|e| PromptError::invalid("name", e.to_string()))?;
        let mut seen = std::collections::BTreeSet::new();
        for v in &self.variables {
            if !crate::vars::is_identifier(&v.name) {
                return Err(PromptError::invalid(
                    format!("variables.{}", v.name),
                    "a variable name must be a letter or '_' followed by letters, digits or '_'",
                ));
            }
            if !seen.insert(v.name.as_str()) {
                return Err(PromptError::invalid(format!("variables.{}", v.name), "declared twice"));
            }
            if let Some(d) = &v.default {
                v.kind.check(&v.name, d)?;
            }
            if let Some(d) = &v.example {
                v.kind.check(&v.name, d)?;
            }
        }
        let known: Vec<String> = self.variables.iter().map(|v| v.name.clone()).collect();
        for (field, text) in self.text_fields() {
            for p in placeholders(text).map_err(|m| PromptError::invalid(field.clone(), m))? {
                let root = p.split('.').next().unwrap_or(&p);
                match self.variables.iter().find(|v| v.name == root) {
                    None => return Err(PromptError::UnknownVariable { name: p.clone(), field, known }),
                    Some(v) if p.contains('.') && !matches!(v.kind, VarType::Object) => {
                        return Err(PromptError::invalid(
                            field,
                            format!("`{{{{{p}}}}}` reads a field of `{root}`, which is a {}, not an object", v.kind.as_str()),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        self.schema()?;
        if let Some(set) = &self.example_set {
            if set.k == 0 {
                return Err(PromptError::invalid("example_set.k", "must be at least 1"));
            }
        }
        if self.max_words == Some(0) {
            return Err(PromptError::invalid("max_words", "must be at least 1"));
        }
        if self.max_answer_tokens == Some(0) {
            return Err(PromptError::invalid("max_answer_tokens", "must be at least 1"));
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(PromptError::invalid("temperature", "must be between 0 and 2"));
        }
        Ok(())
    }

    /// The parsed and compiled JSON Schema of the output format, if any.
    pub fn schema(&self) -> Result<Option<serde_json::Value>> {
        let Some(src) = self.output_format.as_ref().and_then(|o| o.json_schema.as_ref()) else {
            return Ok(None);
        };
        let value = match src {
            SchemaSource::Text(t) => serde_json::from_str::<serde_json::Value>(t).map_err(|e| {
                PromptError::Schema(format!("not valid JSON at line {} column {}: {e}", e.line(), e.column()))
            })?,
            SchemaSource::Inline(v) => v.clone(),
        };
        jsonschema::validator_for(&value).map_err(|e| PromptError::Schema(format!("not a valid JSON Schema: {e}")))?;
        Ok(Some(value))
    }

    /// Every text field that may hold `{{variables}}`, with its name.
    pub fn text_fields(&self) -> Vec<(String, &str)> {
        let mut out: Vec<(String, &str)> = vec![
            ("role".into(), self.role.as_str()),
            ("task".into(), self.task.as_str()),
            ("context".into(), self.context.as_str()),
            ("data".into(), self.data.as_str()),
        ];
        for (i, c) in self.constraints.iter().enumerate() {
            out.push((format!("constraints[{i}]"), c));
        }
        if let Some(o) = &self.output_format {
            out.push(("output_format.text".into(), &o.text));
        }
        for (i, c) in self.quality_criteria.iter().enumerate() {
            out.push((format!("quality_criteria[{i}]"), c));
        }
        if let Some(s) = &self.system {
            out.push(("system".into(), s));
        }
        if let Some(s) = &self.if_unsure {
            out.push(("if_unsure".into(), s));
        }
        for (i, e) in self.examples.iter().enumerate() {
            out.push((format!("examples[{i}].input"), &e.input));
            out.push((format!("examples[{i}].output"), &e.output));
        }
        out
    }

    /// The variables' example values (for `render --example` and library checks).
    pub fn example_values(&self) -> serde_json::Map<String, serde_json::Value> {
        self.variables.iter().filter_map(|v| v.example.clone().map(|e| (v.name.clone(), e))).collect()
    }
}

fn strip_yaml_location(msg: &str) -> String {
    // serde_yaml_ng appends " at line L column C"; the error carries them separately.
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
name = "greet"
role = "Ты — вежливый ассистент."
task = "Поприветствуй клиента {{client.name}}."
data = "{{message}}"

[[variables]]
name = "client"
type = "object"

[[variables]]
name = "message"
type = "string"
required = false
default = "Привет"
"#;

    #[test]
    fn parses_and_validates() {
        let s = PromptSpec::parse(MIN, Format::Toml, "t.toml").unwrap();
        assert_eq!(s.variables.len(), 2);
        assert_eq!(s.reasoning, Reasoning::Off);
    }

    #[test]
    fn malformed_toml_has_line_and_column() {
        let bad = "name = \"x\"\nrole = \"a\"\ntask = \n";
        let e = PromptSpec::parse(bad, Format::Toml, "bad.toml").unwrap_err();
        match &e {
            PromptError::Parse { line, column, .. } => {
                assert_eq!(*line, Some(3));
                assert!(column.is_some());
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().starts_with("bad.toml:3:"), "{e}");
        assert!(e.is_user_error());
    }

    #[test]
    fn malformed_yaml_has_line_and_column() {
        let bad = "name: x\nrole: a\nconstraints: [a, b\ntask: t\n";
        let e = PromptSpec::parse(bad, Format::Yaml, "bad.yaml").unwrap_err();
        let PromptError::Parse { line, column, .. } = &e else { panic!("{e:?}") };
        assert!(line.is_some() && column.is_some(), "{e}");
    }

    #[test]
    fn unknown_field_is_reported_with_position() {
        let bad = "name = \"x\"\nrole = \"a\"\nrol = \"b\"\n";
        let e = PromptSpec::parse(bad, Format::Toml, "f.toml").unwrap_err();
        assert!(e.to_string().contains("f.toml:3:1"), "{e}");
        assert!(e.to_string().contains("rol"), "{e}");
    }

    #[test]
    fn unknown_variable_is_an_error() {
        let bad = "name = \"x\"\ntask = \"Hi {{who}}\"\n";
        let e = PromptSpec::parse(bad, Format::Toml, "f").unwrap_err();
        assert!(matches!(e, PromptError::UnknownVariable { ref name, .. } if name == "who"), "{e}");
    }

    #[test]
    fn dotted_path_into_a_string_is_an_error() {
        let bad = "name = \"x\"\ntask = \"Hi {{who.name}}\"\n[[variables]]\nname = \"who\"\ntype = \"string\"\n";
        let e = PromptSpec::parse(bad, Format::Toml, "f").unwrap_err();
        assert!(e.to_string().contains("not an object"), "{e}");
    }

    #[test]
    fn bad_default_type_is_an_error() {
        let bad = "name = \"x\"\n[[variables]]\nname = \"n\"\ntype = \"number\"\ndefault = \"ten\"\n";
        let e = PromptSpec::parse(bad, Format::Toml, "f").unwrap_err();
        assert!(matches!(e, PromptError::TypeMismatch { .. }), "{e}");
    }

    #[test]
    fn schema_that_does_not_parse_is_an_error() {
        let bad = "name = \"x\"\n[output_format]\njson_schema = '{\"type\": \"object\",'\n";
        let e = PromptSpec::parse(bad, Format::Toml, "f").unwrap_err();
        assert!(matches!(e, PromptError::Schema(_)), "{e}");
        let bad = "name = \"x\"\n[output_format]\njson_schema = '{\"type\": \"objekt\"}'\n";
        let e = PromptSpec::parse(bad, Format::Toml, "f").unwrap_err();
        assert!(e.to_string().contains("not a valid JSON Schema"), "{e}");
    }

    #[test]
    fn inline_schema_in_yaml() {
        let y = "name: x\noutput_format:\n  json_schema:\n    type: object\n    required: [a]\n";
        let s = PromptSpec::parse(y, Format::Yaml, "f").unwrap();
        assert_eq!(s.schema().unwrap().unwrap()["required"][0], "a");
    }

    #[test]
    fn serialize_round_trips_in_both_formats() {
        let s = PromptSpec::parse(MIN, Format::Toml, "t.toml").unwrap();
        for f in [Format::Toml, Format::Yaml] {
            let text = s.to_text(f).unwrap();
            let back = PromptSpec::parse(&text, f, "rt").unwrap();
            assert_eq!(back, s, "{text}");
        }
    }

    #[test]
    fn line_col_counts_chars() {
        assert_eq!(line_col("ab\nйцу", 5), (2, 2));
        assert_eq!(line_col("x", 0), (1, 1));
    }
}
