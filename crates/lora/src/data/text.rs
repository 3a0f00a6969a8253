//! Text clean-up, normalisation keys and token estimates.

use super::FixKind;
use unicode_normalization::UnicodeNormalization;

/// Cleans one field's text and records what was changed: CRLF/CR → LF, control and
/// zero-width characters removed (tab and newline kept), Unicode NFC, leading/trailing
/// whitespace trimmed. Inner whitespace and line breaks are kept: formats matter in answers.
pub fn clean(text: &str, fixes: &mut Vec<FixKind>) -> String {
    let mut s = text.to_string();
    if s.contains('\r') {
        s = s.replace("\r\n", "\n").replace('\r', "\n");
        fixes.push(FixKind::LineEndings);
    }
    if s.chars().any(is_junk) {
        s = s.chars().filter(|c| !is_junk(*c)).collect();
        fixes.push(FixKind::ControlChars);
    }
    if !unicode_normalization::is_nfc(&s) {
        s = s.nfc().collect();
        fixes.push(FixKind::UnicodeNfc);
    }
    let trimmed = s.trim();
    if trimmed.len() != s.len() {
        s = trimmed.to_string();
        fixes.push(FixKind::TrimmedWhitespace);
    }
    s
}

/// Characters that carry no text: C0/C1 controls other than tab and newline, DEL, the byte
/// order mark and zero-width space (joiners are kept: emoji and some scripts need them).
fn is_junk(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t') || matches!(c, '\u{FEFF}' | '\u{200B}' | '\u{2060}')
}

/// The comparison key of a question: NFKC, lower case, whitespace runs collapsed to one
/// space, trimmed.
pub fn question_key(text: &str) -> String {
    let s: String = text.nfkc().collect::<String>().to_lowercase();
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Counts tokens of a text; the trainer supplies one backed by the model's tokenizer.
pub trait TokenCounter {
    /// The number of tokens `text` becomes (an upper estimate is fine; an under-estimate is not).
    fn count(&self, text: &str) -> usize;
    /// A short name for the report (`heuristic`, `qwen2.5 tokenizer` …).
    fn name(&self) -> String;
    /// Tokens a chat template adds around each message (role markers, separators).
    fn per_message_overhead(&self) -> usize {
        8
    }
}

/// A conservative token estimate without a tokenizer, tuned to over-count for byte-level BPE
/// vocabularies (Qwen, Llama, Gemma): digits and punctuation 1 token each, Cyrillic letters ½,
/// Latin letters ⅓, whitespace ¼, any other character 1.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeuristicTokens;

impl TokenCounter for HeuristicTokens {
    fn count(&self, text: &str) -> usize {
        // Counted in twelfths to stay in integers.
        let twelfths: usize = text
            .chars()
            .map(|c| match c {
                '0'..='9' => 12,
                'a'..='z' | 'A'..='Z' => 4,
                c if c.is_whitespace() => 3,
                '\u{0400}'..='\u{04FF}' => 6,
                c if c.is_ascii_punctuation() => 12,
                _ => 12,
            })
            .sum();
        twelfths.div_ceil(12)
    }

    fn name(&self) -> String {
        "heuristic (conservative)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_records_each_fix() {
        let mut f = Vec::new();
        assert_eq!(clean("  привет\r\nмир\u{200B}  ", &mut f), "привет\nмир");
        assert_eq!(f, vec![FixKind::LineEndings, FixKind::ControlChars, FixKind::TrimmedWhitespace]);
        let mut f = Vec::new();
        // "й" as и + combining breve becomes one code point.
        assert_eq!(clean("и\u{0306}", &mut f), "й");
        assert_eq!(f, vec![FixKind::UnicodeNfc]);
        let mut f = Vec::new();
        assert_eq!(clean("ok\ttab", &mut f), "ok\ttab");
        assert!(f.is_empty());
    }

    #[test]
    fn question_keys_ignore_case_and_spacing() {
        assert_eq!(question_key("  Как  СБРОСИТЬ\nпароль? "), "как сбросить пароль?");
        assert_eq!(question_key("ＡＢＣ"), "abc");
    }

    #[test]
    fn heuristic_over_counts() {
        let h = HeuristicTokens;
        assert_eq!(h.count(""), 0);
        assert_eq!(h.count("2490"), 4);
        // ~20 characters of Russian: real BPE tokenizers use about 5-7 tokens.
        let n = h.count("Здравствуйте, Павел!");
        assert!((8..=14).contains(&n), "{n}");
    }
}
