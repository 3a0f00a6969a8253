//! Embedders as the knowledge base sees them: [`trident_embed::Embedder`] (E5, BERT folders,
//! OpenAI endpoints), plus the token-counter adapter the chunker needs.
//!
//! [`HashEmbedder`] (hashed character n-grams of stemmed words) exists only with the `testing`
//! feature, which only this crate's own tests enable: it lets unit tests that must not need the
//! model file exercise the vector side of hybrid search. The product path (the CLI) never has
//! it, so a knowledge base is always built with a real model.

use crate::text::{ApproxTokens, TokenCounter};
pub use trident_embed::Embedder;

/// Adapts an [`Embedder`] to the chunker's token counter. The embedder's tokenizer cannot fail on
/// valid UTF-8 in practice; if it ever does, the approximate count keeps chunking going (the
/// chunk may then be windowed by the embedder, never truncated).
pub struct EmbedderTokens<'a>(pub &'a dyn Embedder);

impl TokenCounter for EmbedderTokens<'_> {
    fn count_tokens(&self, text: &str) -> usize {
        self.0.count_tokens(text).unwrap_or_else(|_| ApproxTokens.count_tokens(text))
    }
}

/// Cosine similarity of two L2-normalised vectors (their dot product).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(any(test, feature = "testing"))]
pub use hash::HashEmbedder;

#[cfg(any(test, feature = "testing"))]
mod hash {
    use crate::text::{ApproxTokens, TokenCounter, terms};
    use trident_embed::Embedder;

    /// Test-only embedder: hashed character 3-grams of stemmed words plus the stems, 256 dims.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct HashEmbedder;

    const HASH_DIM: usize = 256;

    fn fnv(s: &str) -> u64 {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in s.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        h
    }

    impl HashEmbedder {
        fn embed(&self, text: &str) -> Vec<f32> {
            let mut v = vec![0f32; HASH_DIM];
            for t in terms(text) {
                let h = fnv(&t);
                v[(h % HASH_DIM as u64) as usize] += if h & 0x100 == 0 { 1.0 } else { -1.0 };
                let chars: Vec<char> = format!("<{t}>").chars().collect();
                for w in chars.windows(3) {
                    let g: String = w.iter().collect();
                    let h = fnv(&g);
                    v[(h % HASH_DIM as u64) as usize] += if h & 0x100 == 0 { 0.5 } else { -0.5 };
                }
            }
            // A text without words still needs a valid (non-zero) vector for the index.
            v[0] += 1e-3;
            trident_embed::l2_normalize(&mut v);
            v
        }
    }

    impl Embedder for HashEmbedder {
        fn id(&self) -> &str {
            "trident-hash-ngram-256-v1"
        }
        fn dim(&self) -> usize {
            HASH_DIM
        }
        fn max_tokens(&self) -> usize {
            8192
        }
        fn count_tokens(&self, text: &str) -> trident_embed::Result<usize> {
            Ok(ApproxTokens.count_tokens(text))
        }
        fn embed_passages(&self, texts: &[&str]) -> trident_embed::Result<Vec<Vec<f32>>> {
            Ok(texts.iter().map(|t| self.embed(t)).collect())
        }
        fn embed_query(&self, text: &str) -> trident_embed::Result<Vec<f32>> {
            Ok(self.embed(text))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similar_texts_are_closer() {
        let e = HashEmbedder;
        let q = e.embed_query("цена тарифа Бизнес").unwrap();
        let p = e.embed_passages(&["Тариф Бизнес стоит 2490 ₽ в месяц", "Резервные копии хранятся 35 дней"]).unwrap();
        assert!(dot(&q, &p[0]) > dot(&q, &p[1]));
        assert!((dot(&p[0], &p[0]) - 1.0).abs() < 1e-4);
    }
}
