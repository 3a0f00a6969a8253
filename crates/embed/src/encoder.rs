//! Which runtime runs a loaded BERT encoder: llama.cpp (default) or candle.

use crate::bert::{Bert, BertConfig};
use crate::ggml::GgmlBert;
use trident_gguf::GgmlType;
use crate::{EmbedError, Result};

/// The runtime that runs an encoder's forward pass. The tokenizer, weights and pooling are the
/// same on each; see the variants for how far their vectors are from candle's f32 encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderRuntime {
    /// llama.cpp/ggml with f32 weights: about twice candle's throughput on CPU, cosine
    /// ≥ 0.9999 to candle (the difference is ggml's tanh-form GELU).
    Llama,
    /// llama.cpp/ggml with bf16 projection weights (activations are rounded to bf16 for the
    /// matmuls): on CPUs with AVX-512 BF16 about 1.3× the f32 throughput; cosine to candle
    /// 0.99997 (MiniLM) and 0.999995 (e5) on the test texts.
    LlamaBf16,
    /// candle, Trident's own encoder code (`bert.rs`), f32.
    Candle,
}

impl Default for EncoderRuntime {
    /// [`EncoderRuntime::LlamaBf16`] when the build targets AVX-512 BF16 (so llama.cpp was
    /// compiled with its bf16 kernels; `scripts/cpu-rustflags` enables it where the CPU has
    /// it), else [`EncoderRuntime::Llama`]: without those kernels bf16 would be slower.
    fn default() -> Self {
        if cfg!(all(target_arch = "x86_64", target_feature = "avx512bf16")) { Self::LlamaBf16 } else { Self::Llama }
    }
}

impl EncoderRuntime {
    /// `TRIDENT_EMBED_RUNTIME` (`llama`, `llama-bf16` or `candle`), else the default.
    pub fn from_env() -> Result<Self> {
        match std::env::var("TRIDENT_EMBED_RUNTIME") {
            Ok(v) => v.parse(),
            Err(_) => Ok(Self::default()),
        }
    }
}

impl std::str::FromStr for EncoderRuntime {
    type Err = EmbedError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "llama" | "llama.cpp" | "ggml" => Ok(Self::Llama),
            "llama-bf16" | "bf16" => Ok(Self::LlamaBf16),
            "candle" => Ok(Self::Candle),
            other => Err(EmbedError::Config(format!(
                "TRIDENT_EMBED_RUNTIME: unknown encoder runtime '{other}' (expected llama, llama-bf16 or candle)"
            ))),
        }
    }
}

enum Run {
    Candle(Bert),
    Llama(GgmlBert, EncoderRuntime),
}

/// A loaded encoder on its runtime.
pub(crate) struct Encoder {
    pub cfg: BertConfig,
    /// Rows of the word-embedding table (token ids must be below it).
    pub rows: usize,
    run: Run,
}

impl Encoder {
    /// Puts `bert` on `runtime` (for llama.cpp the candle weights are dropped once copied).
    pub(crate) fn new(bert: Bert, runtime: EncoderRuntime, name: &str, max_batch: usize, token_budget: usize) -> Result<Self> {
        let (cfg, rows) = (bert.cfg, bert.word.rows());
        let weights = match runtime {
            EncoderRuntime::Candle => None,
            EncoderRuntime::Llama => Some(GgmlType::F32),
            EncoderRuntime::LlamaBf16 => Some(GgmlType::BF16),
        };
        let run = match weights {
            None => Run::Candle(bert),
            Some(wt) => match GgmlBert::from_bert(&bert, name, wt, max_batch, token_budget) {
                Ok(g) => Run::Llama(g, runtime),
                // e.g. an unwritable temp folder: the same model still runs, only slower.
                Err(e) => {
                    tracing::warn!("{name}: llama.cpp encoder unavailable ({e}); running it on candle");
                    Run::Candle(bert)
                }
            },
        };
        Ok(Encoder { cfg, rows, run })
    }

    /// The runtime in use.
    pub(crate) fn runtime(&self) -> EncoderRuntime {
        match self.run {
            Run::Candle(_) => EncoderRuntime::Candle,
            Run::Llama(_, rt) => rt,
        }
    }

    /// Each sequence's mean final hidden state, not normalised (see [`Bert::mean_pooled`]).
    pub(crate) fn mean_pooled(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        match &self.run {
            Run::Candle(b) => b.mean_pooled(batch),
            Run::Llama(g, _) => g.mean_pooled(batch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BertEmbedder, E5Embedder, Embedder, cosine};

    const TEXTS: [&str; 5] = [
        "Тариф «Бизнес» стоит 4 900 рублей в месяц и включает приоритетную поддержку.",
        "Отпуск оформляется заявлением не позднее чем за две недели; заявление согласует руководитель.",
        "The Business plan costs 4,900 rubles per month.",
        "Employees request vacation two weeks ahead through the HR portal.",
        "коротко",
    ];

    /// Worst cosine between `runtime`'s passage vectors and candle's for TEXTS (one batch).
    fn worst_cosine(a: &dyn Embedder, b: &dyn Embedder) -> f32 {
        let x = a.embed_passages(&TEXTS).expect("embed");
        let y = b.embed_passages(&TEXTS).expect("embed");
        x.iter().zip(&y).map(|(p, q)| cosine(p, q)).fold(1.0, f32::min)
    }

    #[test]
    fn runtimes_agree_on_real_models() {
        if let Ok(p) = std::env::var("TRIDENT_TEST_E5") {
            let candle = E5Embedder::load_on(&p, EncoderRuntime::Candle).expect("candle");
            let llama = E5Embedder::load_on(&p, EncoderRuntime::Llama).expect("llama");
            let bf16 = E5Embedder::load_on(&p, EncoderRuntime::LlamaBf16).expect("llama bf16");
            assert_eq!(llama.runtime(), EncoderRuntime::Llama);
            let (f, h) = (worst_cosine(&llama, &candle), worst_cosine(&bf16, &candle));
            eprintln!("e5: llama f32 vs candle {f:.6}, llama bf16 vs candle {h:.6}");
            assert!(f > 0.9999, "e5 llama f32 vs candle: cosine {f}");
            assert!(h > 0.998, "e5 llama bf16 vs candle: cosine {h}");
            // queries too (another prefix, one text)
            let q = cosine(&llama.embed_query("сколько стоит тариф").expect("q"), &candle.embed_query("сколько стоит тариф").expect("q"));
            assert!(q > 0.9999, "e5 query: cosine {q}");
        } else {
            eprintln!("TRIDENT_TEST_E5 is unset: skipping the e5 runtime comparison");
        }
        if let Ok(d) = std::env::var("TRIDENT_TEST_MINILM") {
            let candle = BertEmbedder::load_on(&d, EncoderRuntime::Candle).expect("candle");
            let llama = BertEmbedder::load_on(&d, EncoderRuntime::Llama).expect("llama");
            let bf16 = BertEmbedder::load_on(&d, EncoderRuntime::LlamaBf16).expect("llama bf16");
            let (f, h) = (worst_cosine(&llama, &candle), worst_cosine(&bf16, &candle));
            eprintln!("MiniLM: llama f32 vs candle {f:.6}, llama bf16 vs candle {h:.6}");
            assert!(f > 0.9999, "MiniLM llama f32 vs candle: cosine {f}");
            assert!(h > 0.998, "MiniLM llama bf16 vs candle: cosine {h}");
        } else {
            eprintln!("TRIDENT_TEST_MINILM is unset: skipping the MiniLM runtime comparison");
        }
    }

    #[test]
    fn runtime_names_parse_and_unknown_is_a_config_error() {
        assert_eq!("llama".parse::<EncoderRuntime>().expect("llama"), EncoderRuntime::Llama);
        assert_eq!("Candle".parse::<EncoderRuntime>().expect("candle"), EncoderRuntime::Candle);
        assert_eq!("llama-bf16".parse::<EncoderRuntime>().expect("bf16"), EncoderRuntime::LlamaBf16);
        let e = "onnx".parse::<EncoderRuntime>().expect_err("unknown");
        assert!(e.is_user_error() && e.to_string().contains("onnx"), "{e}");
    }
}
