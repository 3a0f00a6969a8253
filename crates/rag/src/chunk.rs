//! Chunking by model tokens along the document's structure.
//!
//! Blocks (headings, paragraphs, list items, table rows) are packed greedily into chunks of
//! `min_tokens..=max_tokens`; a heading starts a new chunk once the current one reached
//! `min_tokens`; consecutive chunks share up to `overlap_tokens` of trailing blocks. A block
//! longer than `max_tokens` is split at sentence ends, then between words — never inside a word.
//! Table rows keep their header: a chunk holding rows of a table starts with the header line.
//!
//! **The embedding window.** e5 reads at most 512 tokens per input; what is not read is not
//! embedded. Rather than let the embedder truncate silently, the knowledge base shrinks
//! `max_tokens` to the embedder's window ([`ChunkConfig::fit_window`]) so every chunk is
//! embedded whole; BM25 sees the same text.

use crate::RagError;
use crate::parse::{Block, BlockKind};
use crate::text::TokenCounter;

/// Chunk sizes, in model tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkConfig {
    /// A heading closes the current chunk only once it has at least this many tokens.
    pub min_tokens: usize,
    /// No chunk is longer than this.
    pub max_tokens: usize,
    /// Tokens of trailing blocks repeated at the start of the next chunk.
    pub overlap_tokens: usize,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        Self { min_tokens: 500, max_tokens: 1200, overlap_tokens: 100 }
    }
}

impl ChunkConfig {
    /// Checks that the sizes make sense.
    pub fn validate(&self) -> Result<(), RagError> {
        if self.max_tokens < 16 || self.min_tokens > self.max_tokens || self.overlap_tokens * 2 > self.max_tokens {
            return Err(RagError::BadInput(format!(
                "chunk sizes must satisfy 16 <= max, min <= max, 2*overlap <= max (got min {}, max {}, overlap {})",
                self.min_tokens, self.max_tokens, self.overlap_tokens
            )));
        }
        Ok(())
    }

    /// Shrinks the sizes so a chunk plus `reserved` tokens (prefix, title line) fits an
    /// embedding window of `window` tokens.
    pub fn fit_window(self, window: usize, reserved: usize) -> Self {
        let cap = window.saturating_sub(reserved).max(16);
        if self.max_tokens <= cap {
            return self;
        }
        let max_tokens = cap;
        Self { max_tokens, min_tokens: self.min_tokens.min(max_tokens / 2), overlap_tokens: self.overlap_tokens.min(max_tokens / 4) }
    }
}

/// One chunk of a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Position in the document, from 0.
    pub ord: usize,
    /// The text (blocks joined by newlines).
    pub text: String,
    /// The heading path of its first block.
    pub section: String,
    /// Page of its first block, for paged formats.
    pub page: Option<u32>,
    /// Its size in model tokens.
    pub tokens: usize,
}

#[derive(Debug, Clone)]
struct Piece {
    kind: BlockKind,
    text: String,
    section: String,
    page: Option<u32>,
    header: Option<String>,
    tokens: usize,
}

/// Splits `text` into sentence-ended pieces (after `.`, `!`, `?`, `…` followed by a space).
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut prev_end = false;
    for (i, c) in text.char_indices() {
        if prev_end && c.is_whitespace() {
            out.push(text[start..i].trim());
            start = i;
        }
        prev_end = matches!(c, '.' | '!' | '?' | '…' | ';');
    }
    out.push(text[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

/// Splits `text` into parts of at most `max` tokens, at sentence ends where possible and
/// otherwise between words.
fn split_long(text: &str, max: usize, counter: &dyn TokenCounter) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut cur_tokens = 0usize;
    let push_unit = |unit: &str, out: &mut Vec<String>, cur: &mut String, cur_tokens: &mut usize| {
        let t = counter.count_tokens(unit);
        if *cur_tokens + t > max && !cur.is_empty() {
            out.push(std::mem::take(cur));
            *cur_tokens = 0;
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(unit);
        *cur_tokens += t;
    };
    for s in sentences(text) {
        if counter.count_tokens(s) <= max {
            push_unit(s, &mut out, &mut cur, &mut cur_tokens);
        } else {
            for w in s.split_whitespace() {
                push_unit(w, &mut out, &mut cur, &mut cur_tokens);
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Packs `blocks` into chunks. `reserved` tokens of every chunk's budget are kept free for
/// what gets prepended at embedding time (title line, "passage: ").
pub fn chunk_blocks(blocks: &[Block], cfg: &ChunkConfig, counter: &dyn TokenCounter) -> Vec<Chunk> {
    let max = cfg.max_tokens.max(16);
    let mut pieces = Vec::new();
    for b in blocks {
        let header_tokens = b.header.as_deref().map(|h| counter.count_tokens(h) + 1).unwrap_or(0);
        let t = counter.count_tokens(&b.text);
        if t + header_tokens <= max {
            pieces.push(Piece { kind: b.kind, text: b.text.clone(), section: b.section.clone(), page: b.page, header: b.header.clone(), tokens: t });
        } else {
            for part in split_long(&b.text, max.saturating_sub(header_tokens).max(8), counter) {
                let tokens = counter.count_tokens(&part);
                pieces.push(Piece { kind: b.kind, text: part, section: b.section.clone(), page: b.page, header: b.header.clone(), tokens });
            }
        }
    }
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut cur: Vec<Piece> = Vec::new();
    let mut cur_tokens = 0usize;
    let cost = |cur: &[Piece], p: &Piece| -> usize {
        // A table row whose header is not yet in the chunk brings the header along.
        let needs_header = p.kind == BlockKind::TableRow
            && p.header.is_some()
            && cur.last().map(|l| l.kind != BlockKind::TableRow || l.header != p.header).unwrap_or(true);
        p.tokens + if needs_header { p.header.as_deref().map(|h| counter.count_tokens(h)).unwrap_or(0) } else { 0 }
    };
    let flush = |cur: &mut Vec<Piece>, cur_tokens: &mut usize, chunks: &mut Vec<Chunk>, keep_overlap: bool| {
        if cur.is_empty() {
            return;
        }
        let mut text = String::new();
        let mut last_header: Option<&str> = None;
        for p in cur.iter() {
            if p.kind == BlockKind::TableRow {
                if let Some(h) = p.header.as_deref() {
                    if last_header != Some(h) {
                        text.push_str(h);
                        text.push('\n');
                        last_header = Some(h);
                    }
                }
            } else {
                last_header = None;
            }
            text.push_str(&p.text);
            text.push('\n');
        }
        let first = cur.iter().find(|p| p.kind != BlockKind::Heading).unwrap_or(&cur[0]);
        let tokens = counter.count_tokens(&text);
        chunks.push(Chunk { ord: chunks.len(), text: text.trim_end().to_string(), section: first.section.clone(), page: first.page, tokens });
        // Overlap: carry the trailing non-heading pieces that fit the overlap budget.
        let mut carry: Vec<Piece> = Vec::new();
        if keep_overlap && cfg.overlap_tokens > 0 {
            let mut t = 0;
            for p in cur.iter().rev() {
                if p.kind == BlockKind::Heading || t + p.tokens > cfg.overlap_tokens {
                    break;
                }
                t += p.tokens;
                carry.insert(0, p.clone());
            }
            // Never carry the whole chunk (that would repeat it).
            if carry.len() == cur.len() {
                carry.clear();
            }
        }
        *cur_tokens = carry.iter().map(|p| p.tokens).sum();
        *cur = carry;
    };
    for p in pieces {
        if p.kind == BlockKind::Heading && cur_tokens >= cfg.min_tokens {
            flush(&mut cur, &mut cur_tokens, &mut chunks, false);
        }
        let c = cost(&cur, &p);
        if cur_tokens + c > max && !cur.is_empty() {
            flush(&mut cur, &mut cur_tokens, &mut chunks, p.kind != BlockKind::Heading);
            if cur_tokens + cost(&cur, &p) > max {
                cur.clear();
                cur_tokens = 0;
            }
        }
        cur_tokens += cost(&cur, &p);
        cur.push(p);
    }
    // Drop a trailing chunk made only of overlap already present in the previous chunk.
    let only_overlap = !chunks.is_empty() && !cur.is_empty() && {
        let last = &chunks[chunks.len() - 1].text;
        cur.iter().all(|p| last.contains(&p.text))
    };
    if !only_overlap {
        flush(&mut cur, &mut cur_tokens, &mut chunks, false);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::ApproxTokens;

    fn para(t: &str, section: &str) -> Block {
        Block { kind: BlockKind::Paragraph, text: t.into(), section: section.into(), page: None, header: None }
    }

    #[test]
    fn respects_max_and_never_splits_words() {
        let words: Vec<String> = (0..3000).map(|i| format!("слово{i}")).collect();
        let blocks = vec![para(&words.join(" "), "S")];
        let cfg = ChunkConfig { min_tokens: 50, max_tokens: 120, overlap_tokens: 20 };
        let chunks = chunk_blocks(&blocks, &cfg, &ApproxTokens);
        assert!(chunks.len() > 10);
        for c in &chunks {
            assert!(c.tokens <= cfg.max_tokens, "chunk of {} tokens", c.tokens);
            for w in c.text.split_whitespace() {
                assert!(words.iter().any(|x| x == w), "split word {w:?}");
            }
        }
        // Every word is somewhere.
        let all: String = chunks.iter().map(|c| c.text.clone()).collect::<Vec<_>>().join(" ");
        assert!(all.contains("слово0 ") && all.contains("слово2999"));
    }

    #[test]
    fn headings_start_chunks_after_min() {
        let mut blocks = Vec::new();
        for s in 0..3 {
            blocks.push(Block { kind: BlockKind::Heading, text: format!("Раздел {s}"), section: format!("Раздел {s}"), page: None, header: None });
            for p in 0..4 {
                blocks.push(para(&format!("Абзац {p} раздела {s} с некоторым текстом о тарифах и ценах."), &format!("Раздел {s}")));
            }
        }
        let cfg = ChunkConfig { min_tokens: 20, max_tokens: 400, overlap_tokens: 0 };
        let chunks = chunk_blocks(&blocks, &cfg, &ApproxTokens);
        assert_eq!(chunks.len(), 3);
        assert!(chunks[1].text.starts_with("Раздел 1"));
        assert_eq!(chunks[1].section, "Раздел 1");
    }

    #[test]
    fn table_rows_carry_header_into_each_chunk() {
        let blocks: Vec<Block> = (0..60)
            .map(|i| Block { kind: BlockKind::TableRow, text: format!("имя: Сотрудник{i}; оклад: {i}000"), section: String::new(), page: None, header: Some("имя | оклад".into()) })
            .collect();
        let cfg = ChunkConfig { min_tokens: 20, max_tokens: 80, overlap_tokens: 10 };
        let chunks = chunk_blocks(&blocks, &cfg, &ApproxTokens);
        assert!(chunks.len() > 3);
        for c in &chunks {
            assert!(c.text.starts_with("имя | оклад\n"), "{}", c.text);
            assert!(c.tokens <= 80);
        }
    }

    #[test]
    fn fit_window_shrinks() {
        let c = ChunkConfig::default().fit_window(512, 40);
        assert_eq!(c.max_tokens, 472);
        assert!(c.min_tokens <= 236 && c.validate().is_ok());
        assert!(ChunkConfig { min_tokens: 10, max_tokens: 5, overlap_tokens: 0 }.validate().is_err());
    }
}
