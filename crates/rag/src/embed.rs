//! The embedder seen by the knowledge base.
//!
//! This mirrors `trident_embed::Embedder` (id, dim, embed_passages, embed_query, count_tokens)
//! so the RAG code does not wait for that crate; an adapter for any `trident_embed` model is one
//! `impl` of this trait. [`HashEmbedder`] is a model-free embedder (hashed character n-grams of
//! stemmed words) that keeps the vector side of hybrid search working without model files.

use crate::RagError;
use crate::text::{ApproxTokens, TokenCounter, terms};

/// A text embedder. The knowledge base records `id()` and `dim()` and refuses a different one.
pub trait Embedder: Send + Sync {
    /// Model identity (recorded by the index; a different id is a mismatch).
    fn id(&self) -> &str;
    /// Vector dimension.
    fn dim(&self) -> usize;
    /// Most tokens one input may have (e5: 512); chunks are sized to fit.
    fn max_tokens(&self) -> usize;
    /// Tokens of `text` as this model counts them.
    fn count_tokens(&self, text: &str) -> usize;
    /// Embeds passages (documents), batched; vectors are L2-normalised.
    fn embed_passages(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, RagError>;
    /// Embeds one query; L2-normalised.
    fn embed_query(&self, text: &str) -> Result<Vec<f32>, RagError>;
}

/// Adapts an [`Embedder`] to the chunker's token counter.
pub struct EmbedderTokens<'a>(pub &'a dyn Embedder);

impl TokenCounter for EmbedderTokens<'_> {
    fn count_tokens(&self, text: &str) -> usize {
        self.0.count_tokens(text)
    }
}

/// Hashed character 3-grams of stemmed words plus the stems themselves, 256 dimensions.
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
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if n > 0.0 {
            v.iter_mut().for_each(|x| *x /= n);
        }
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
    fn count_tokens(&self, text: &str) -> usize {
        ApproxTokens.count_tokens(text)
    }
    fn embed_passages(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, RagError> {
        Ok(texts.iter().map(|t| self.embed(t)).collect())
    }
    fn embed_query(&self, text: &str) -> Result<Vec<f32>, RagError> {
        Ok(self.embed(text))
    }
}

/// Cosine similarity of two L2-normalised vectors (their dot product).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
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
