//! Chat templates: conversations become text only here, by rendering the GGUF's
//! `tokenizer.chat_template` (a Jinja template written for HF transformers) with minijinja.
//!
//! The environment mirrors what transformers gives templates: Python string methods
//! (`.strip()`, `.startswith()`, … via `minijinja-contrib`'s pycompat), `raise_exception`,
//! `strftime_now`, `bos_token`/`eos_token`, `messages` and `add_generation_prompt`, with
//! `trim_blocks` and `lstrip_blocks` on. Models whose GGUF carries no template fall back to
//! ChatML (see [`ChatTemplate::is_fallback`]).

use minijinja::{Environment, Error as JinjaError, ErrorKind, Value, context};
use serde::{Deserialize, Serialize};

use crate::error::EngineError;

/// One message of a conversation (`role` is `system`, `user`, `assistant` or `tool`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who speaks: `system`, `user`, `assistant`, `tool`.
    pub role: String,
    /// What is said.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }
    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// The ChatML template used when a model carries no `tokenizer.chat_template`.
pub const CHATML_TEMPLATE: &str = "{%- for message in messages -%}\
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}";

/// A compiled chat template with the model's BOS/EOS token texts.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
    fallback: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("fallback", &self.fallback)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("source_len", &self.source.len())
            .finish()
    }
}

const TEMPLATE_NAME: &str = "chat";

fn raise_exception(msg: String) -> Result<Value, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
}

fn strftime_now(format: String) -> Result<Value, JinjaError> {
    use std::fmt::Write;
    let now = chrono::Local::now();
    let mut out = String::new();
    write!(out, "{}", now.format(&format)).map_err(|_| {
        JinjaError::new(ErrorKind::InvalidOperation, format!("bad strftime format {format:?}"))
    })?;
    Ok(Value::from(out))
}

impl ChatTemplate {
    /// Compiles `source` (a Jinja chat template) with the model's BOS/EOS token texts.
    ///
    /// # Errors
    /// [`EngineError::Template`] when the template does not parse.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, EngineError> {
        Self::build(source, bos_token, eos_token, false)
    }

    /// The built-in ChatML template (for models whose GGUF has no chat template).
    pub fn chatml(bos_token: &str, eos_token: &str) -> Self {
        Self::build(CHATML_TEMPLATE, bos_token, eos_token, true)
            .expect("the built-in ChatML template parses")
    }

    /// `new(source)` when the model has a template, else the ChatML fallback.
    ///
    /// # Errors
    /// [`EngineError::Template`] when the model's template does not parse.
    pub fn from_model(
        source: Option<&str>,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<Self, EngineError> {
        match source {
            Some(s) if !s.trim().is_empty() => Self::new(s, bos_token, eos_token),
            _ => Ok(Self::chatml(bos_token, eos_token)),
        }
    }

    fn build(
        source: &str,
        bos_token: &str,
        eos_token: &str,
        fallback: bool,
    ) -> Result<Self, EngineError> {
        let mut env = Environment::new();
        // transformers renders with trim_blocks and lstrip_blocks (see its `_compile_jinja_template`).
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| EngineError::Template { message: format!("syntax config: {e}") })?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        minijinja_contrib::add_to_environment(&mut env);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(TEMPLATE_NAME.to_string(), source.to_string())
            .map_err(|e| EngineError::Template { message: format!("does not parse: {e:#}") })?;
        Ok(Self {
            env,
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            fallback,
        })
    }

    /// True when this is the built-in ChatML fallback (the model carries no template).
    pub fn is_fallback(&self) -> bool {
        self.fallback
    }

    /// The template source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders a conversation; with `add_generation_prompt` the text ends where the assistant's
    /// next reply begins.
    ///
    /// # Errors
    /// [`EngineError::Template`] when rendering fails (including `raise_exception` calls, e.g.
    /// a template that rejects a role order).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, EngineError> {
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| EngineError::Template { message: e.to_string() })?;
        tmpl.render(context! {
            messages => minijinja::Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(|e| EngineError::Template { message: format!("rendering failed: {e:#}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation() -> Vec<ChatMessage> {
        vec![
            ChatMessage::system("Be brief."),
            ChatMessage::user("Hi"),
            ChatMessage::assistant("Hello."),
            ChatMessage::user("Bye?"),
        ]
    }

    #[test]
    fn chatml_fallback_renders_chatml() {
        let t = ChatTemplate::chatml("", "");
        assert!(t.is_fallback());
        let s = t.render(&conversation(), true).unwrap();
        assert_eq!(
            s,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBye?<|im_end|>\n<|im_start|>assistant\n"
        );
        let s2 = t.render(&conversation(), false).unwrap();
        assert!(!s2.ends_with("assistant\n"));
    }

    #[test]
    fn pycompat_methods_and_bos() {
        let t = ChatTemplate::new(
            "{{ bos_token }}{% for m in messages %}{{ m.content.strip().upper() }}|{{ m.role.startswith('us') }};{% endfor %}",
            "<s>",
            "</s>",
        )
        .unwrap();
        assert!(!t.is_fallback());
        let s = t.render(&[ChatMessage::user("  hi  ")], false).unwrap();
        assert_eq!(s, "<s>HI|True;", "Python Jinja prints booleans capitalised");
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = ChatTemplate::new(
            "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}ok",
            "",
            "",
        )
        .unwrap();
        let err = t.render(&[ChatMessage::system("x")], false).unwrap_err();
        assert!(err.to_string().contains("first must be user"), "{err}");
        assert_eq!(t.render(&[ChatMessage::user("x")], false).unwrap(), "ok");
    }

    #[test]
    fn strftime_now_works() {
        let t = ChatTemplate::new("{{ strftime_now('%Y') }}", "", "").unwrap();
        let s = t.render(&[], false).unwrap();
        assert_eq!(s.len(), 4);
        assert!(s.chars().all(|c| c.is_ascii_digit()));
    }

    #[test]
    fn bad_template_is_an_error() {
        let err = ChatTemplate::new("{% for %}", "", "").unwrap_err();
        assert!(matches!(err, EngineError::Template { .. }));
        assert!(err.is_user_error());
    }

    #[test]
    fn trim_and_lstrip_blocks_like_transformers() {
        let t = ChatTemplate::new("{% for m in messages %}\n  {% if true %}\n{{ m.content }}\n  {% endif %}\n{% endfor %}", "", "").unwrap();
        assert_eq!(t.render(&[ChatMessage::user("a")], false).unwrap(), "a\n");
    }
}
