//! Conversations → training tokens with a loss mask, through the engine's own chat template
//! and tokenizer (the *one tokenizer, one template* invariant: training sees exactly the
//! tokens that inference will feed the model).
//!
//! A sample is rendered twice: the conversation up to the last assistant turn with the
//! generation prompt (what `Prompt::Chat` sends at inference), and the whole conversation.
//! The tokens after the common prefix up to and including the first end-of-generation token
//! (`<|im_end|>`, `<end_of_turn>` …) are the targets, so the model learns to stop; whatever
//! the template appends after that token (a newline) is not trained on.

use trident_engine::{Backend, ChatMessage};

use crate::data::{Role, Sample};

/// One sample as token ids and the span of target tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The full token sequence (prompt, answer, end-of-generation token).
    pub ids: Vec<u32>,
    /// Index of the first target token in `ids` (= length of the prompt).
    pub target_start: usize,
    /// One past the last target token.
    pub target_end: usize,
}

impl Encoded {
    /// Number of tokens that are trained on.
    pub fn n_targets(&self) -> usize {
        self.target_end - self.target_start
    }

    /// Tokens the model must be fed to predict every target (`ids[..target_end]`), the last
    /// one excluded because nothing after it is predicted.
    pub fn input_len(&self) -> usize {
        self.target_end - 1
    }
}

/// The engine's chat messages of a dataset sample.
pub fn chat_messages(sample: &Sample) -> Vec<ChatMessage> {
    sample.messages.iter().map(|m| ChatMessage::new(m.role.as_str(), m.content.clone())).collect()
}

/// The messages of a sample without its final assistant turn (the prompt at inference), with
/// an optional system prompt replacing the sample's own.
pub fn prompt_messages(sample: &Sample, system: Option<&str>) -> Vec<ChatMessage> {
    let mut msgs: Vec<ChatMessage> = Vec::new();
    if let Some(s) = system {
        msgs.push(ChatMessage::system(s));
    }
    let n = sample.messages.len().saturating_sub(1);
    for m in &sample.messages[..n] {
        if system.is_some() && m.role == Role::System {
            continue;
        }
        msgs.push(ChatMessage::new(m.role.as_str(), m.content.clone()));
    }
    msgs
}

/// The reference answer of a sample (its last assistant message).
pub fn reference(sample: &Sample) -> &str {
    sample.messages.last().map(|m| m.content.as_str()).unwrap_or("")
}

/// Encodes a conversation whose last message is the assistant's answer.
///
/// # Errors
/// A reason string (the caller adds file/line context) when the conversation does not end
/// with the assistant, the template fails, or the template renders the prompt in a way that
/// is not a prefix of the full conversation.
pub fn encode(backend: &dyn Backend, messages: &[ChatMessage]) -> Result<Encoded, String> {
    let Some(last) = messages.last() else { return Err("empty conversation".into()) };
    if last.role != "assistant" {
        return Err("the last message must be the assistant's answer".into());
    }
    let prompt = &messages[..messages.len() - 1];
    let prompt_text = backend.render_chat(prompt, true).map_err(|e| e.to_string())?;
    let full_text = backend.render_chat(messages, false).map_err(|e| e.to_string())?;
    if !full_text.starts_with(&prompt_text) {
        return Err("the chat template renders the prompt differently inside the full conversation; \
                    the answer tokens cannot be located"
            .into());
    }
    let p = backend.tokenize(&prompt_text, true, true).map_err(|e| e.to_string())?;
    let ids = backend.tokenize(&full_text, true, true).map_err(|e| e.to_string())?;
    // Token-level prefix: BPE may merge across the boundary; the shared tokens are the prompt.
    let start = p.iter().zip(&ids).take_while(|(a, b)| a == b).count();
    if start == 0 || start >= ids.len() {
        return Err("no answer tokens after the prompt".into());
    }
    let end = ids[start..].iter().position(|&t| backend.is_eog(t)).map(|i| start + i + 1).unwrap_or(ids.len());
    Ok(Encoded { ids, target_start: start, target_end: end })
}
