//! The prompt crate's error type.

use std::path::PathBuf;

/// Errors from specs, variables, sources, rendering, generation and the prompt store.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// A spec file is not valid TOML/YAML or does not match the spec's shape.
    #[error("{origin}{}: {message}", location(.line, .column))]
    Parse {
        /// File name or `<input>`.
        origin: String,
        /// 1-based line, when the parser knows it.
        line: Option<usize>,
        /// 1-based column, when the parser knows it.
        column: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// A spec parses but is inconsistent (empty name, duplicate variable, bad default, …).
    #[error("invalid prompt spec: field `{field}`: {message}")]
    Invalid {
        /// The offending field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A template refers to a variable the spec does not declare, or a value was given for one.
    #[error("unknown variable `{name}` in {field}{}", hint_list(.known))]
    UnknownVariable {
        /// The variable (root name or dotted path).
        name: String,
        /// Where it was used or given.
        field: String,
        /// The declared variables.
        known: Vec<String>,
    },
    /// A required variable has no value and no default.
    #[error("missing value for required variable `{name}` ({kind}){}", suffix(.description))]
    MissingVariable {
        /// The variable.
        name: String,
        /// Its declared type.
        kind: String,
        /// Its description.
        description: String,
    },
    /// A value does not have the variable's declared type.
    #[error("variable `{name}`: expected {expected}, got {found}")]
    TypeMismatch {
        /// The variable (or dotted path).
        name: String,
        /// The declared type.
        expected: String,
        /// What was given.
        found: String,
    },
    /// A `--var` flag is not `name=value`.
    #[error("bad --var {0:?}: expected NAME=VALUE")]
    BadVarFlag(String),
    /// The output JSON Schema does not parse or is not a valid schema.
    #[error("output_format.json_schema: {0}")]
    Schema(String),
    /// A variable source (file, CSV, KB) failed because of its content.
    #[error("variable source {source_name}: {message}")]
    Source {
        /// The file or source.
        source_name: String,
        /// What failed.
        message: String,
    },
    /// An HTTP variable source failed (unreachable, timeout, bad status, not JSON).
    #[error("HTTP source {url}: {message}")]
    Http {
        /// The URL (never with its token).
        url: String,
        /// What failed.
        message: String,
        /// True for client-side problems (bad URL, 4xx, non-JSON body).
        user: bool,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A rendered prompt does not fit the model's context.
    #[error("prompt is {tokens} tokens + {answer} answer tokens, over the context limit of {limit} tokens")]
    OverBudget {
        /// Prompt tokens.
        tokens: usize,
        /// Reserved answer tokens.
        answer: usize,
        /// Context limit.
        limit: usize,
    },
    /// The chat template or the engine failed.
    #[error("engine: {0}")]
    Engine(#[from] trident_engine::EngineError),
    /// Generation failed.
    #[error("generation failed: {0}")]
    Generation(String),
    /// A named prompt or library entry does not exist.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// What was looked for.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The prompt store failed.
    #[error(transparent)]
    Store(#[from] trident_store::StoreError),
}

fn location(line: &Option<usize>, column: &Option<usize>) -> String {
    match (*line, *column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

fn suffix(description: &str) -> String {
    if description.is_empty() { String::new() } else { format!(": {description}") }
}

fn hint_list(known: &[String]) -> String {
    if known.is_empty() { " (the spec declares no variables)".into() } else { format!(" (declared: {})", known.join(", ")) }
}

impl PromptError {
    /// True when the error comes from the caller's input (exit code 2) rather than the system.
    pub fn is_user_error(&self) -> bool {
        match self {
            PromptError::Parse { .. }
            | PromptError::Invalid { .. }
            | PromptError::UnknownVariable { .. }
            | PromptError::MissingVariable { .. }
            | PromptError::TypeMismatch { .. }
            | PromptError::BadVarFlag(_)
            | PromptError::Schema(_)
            | PromptError::Source { .. }
            | PromptError::OverBudget { .. }
            | PromptError::NotFound { .. } => true,
            PromptError::Http { user, .. } => *user,
            PromptError::Store(e) => e.is_user_error(),
            PromptError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            PromptError::Engine(e) => e.is_user_error(),
            PromptError::Generation(_) => false,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        PromptError::Invalid { field: field.into(), message: message.into() }
    }
}

/// Result alias for the prompt crate.
pub type Result<T> = std::result::Result<T, PromptError>;
