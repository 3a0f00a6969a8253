//! Streaming text assembly: token bytes → UTF-8 text (a character may span tokens) and
//! string-level stop sequences (a stop may span tokens; text that might be the start of a
//! stop is held back, so no partial stop text ever reaches the stream).

/// Collects token bytes and releases the longest valid UTF-8 prefix.
#[derive(Debug, Default, Clone)]
pub struct Utf8Assembler {
    pending: Vec<u8>,
}

impl Utf8Assembler {
    /// Adds bytes; returns the text that is complete so far.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        match std::str::from_utf8(&self.pending) {
            Ok(s) => {
                let out = s.to_string();
                self.pending.clear();
                out
            }
            Err(e) => {
                let valid = e.valid_up_to();
                // An invalid (not just incomplete) sequence: replace it and go on.
                if let Some(bad_len) = e.error_len() {
                    let mut out = String::from_utf8_lossy(&self.pending[..valid + bad_len]).into_owned();
                    self.pending.drain(..valid + bad_len);
                    out.push_str(&self.push(&[]));
                    return out;
                }
                let out = String::from_utf8_lossy(&self.pending[..valid]).into_owned();
                self.pending.drain(..valid);
                out
            }
        }
    }

    /// Releases whatever is left (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// What [`StopMatcher::push`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopStep {
    /// Text safe to emit now.
    pub emit: String,
    /// The stop sequence that matched, if one did (generation ends; the stop text itself and
    /// anything after it are not emitted).
    pub stopped: Option<String>,
}

/// Finds stop sequences in streamed text.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    /// A matcher for these stop strings (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self { stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(), held: String::new() }
    }

    /// Adds text; returns what can be emitted and whether a stop matched.
    pub fn push(&mut self, text: &str) -> StopStep {
        self.held.push_str(text);
        if self.stops.is_empty() {
            return StopStep { emit: std::mem::take(&mut self.held), stopped: None };
        }
        // Earliest full match wins.
        let mut best: Option<(usize, &String)> = None;
        for s in &self.stops {
            if let Some(i) = self.held.find(s.as_str()) {
                if best.is_none_or(|(b, _)| i < b) {
                    best = Some((i, s));
                }
            }
        }
        if let Some((i, s)) = best {
            let emit = self.held[..i].to_string();
            let stopped = Some(s.clone());
            self.held.clear();
            return StopStep { emit, stopped };
        }
        // Hold back the longest suffix that is a proper prefix of some stop.
        let mut hold_from = self.held.len();
        for (i, _) in self.held.char_indices().rev() {
            let suffix = &self.held[i..];
            if self.stops.iter().any(|s| s.starts_with(suffix)) {
                hold_from = i;
            }
            if self.held.len() - i >= self.max_stop_len() {
                break;
            }
        }
        let emit = self.held[..hold_from].to_string();
        self.held.drain(..hold_from);
        StopStep { emit, stopped: None }
    }

    fn max_stop_len(&self) -> usize {
        self.stops.iter().map(String::len).max().unwrap_or(0)
    }

    /// Releases held-back text at the end of generation (no stop matched).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, Option<String>) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = Vec::new();
        for p in pieces {
            let step = m.push(p);
            out.push(step.emit);
            if step.stopped.is_some() {
                return (out, step.stopped);
            }
        }
        out.push(m.finish());
        (out, None)
    }

    #[test]
    fn stop_split_across_tokens_is_found_and_not_leaked() {
        let (out, stop) = run(&["</answer>"], &["Yes", " it is</", "ans", "wer> tail"]);
        assert_eq!(stop.as_deref(), Some("</answer>"));
        assert_eq!(out.concat(), "Yes it is");
        // Nothing of the partial stop was emitted before the match.
        assert_eq!(out, vec!["Yes", " it is", "", ""]);
    }

    #[test]
    fn false_start_is_released() {
        let (out, stop) = run(&["STOP"], &["ST", "ART", "!"]);
        assert_eq!(stop, None);
        assert_eq!(out.concat(), "START!");
        assert_eq!(out[0], "");
    }

    #[test]
    fn earliest_of_several_stops() {
        let (out, stop) = run(&["b", "xyz"], &["axyzb"]);
        assert_eq!(stop.as_deref(), Some("xyz"));
        assert_eq!(out.concat(), "a");
    }

    #[test]
    fn no_stops_passes_through() {
        let (out, stop) = run(&[], &["a", "b"]);
        assert_eq!(stop, None);
        assert_eq!(out, vec!["a", "b", ""]);
    }

    #[test]
    fn utf8_split_across_tokens() {
        let bytes = "Привет".as_bytes();
        let mut a = Utf8Assembler::default();
        let mut s = a.push(&bytes[..3]);
        assert_eq!(s, "П");
        s.push_str(&a.push(&bytes[3..]));
        assert_eq!(s, "Привет");
        assert_eq!(a.push(&[0xD0]), "");
        assert_eq!(a.finish(), "\u{FFFD}");
        assert_eq!(a.push(&[b'a', 0xFF, b'b']), "a\u{FFFD}b");
    }
}
