//! Architectures llama.cpp knows, the model families Trident tests, and the metadata keys each
//! family needs.

use serde::Serialize;

/// Every `general.architecture` value the llama.cpp vendored by `llama-cpp-sys-2` 0.1.161 can
/// load as a model (from its `llama-arch.cpp`; the `clip` placeholder, which only
/// `llama-quantize` uses, is left out).
pub const KNOWN_ARCHITECTURES: &[&str] = &[
    "llama", "llama4", "deci", "falcon", "grok", "gpt2", "gptj", "gptneox", "mpt", "baichuan",
    "starcoder", "refact", "bert", "modern-bert", "nomic-bert", "nomic-bert-moe", "neo-bert",
    "jina-bert-v2", "jina-bert-v3", "eurobert", "bloom", "stablelm", "qwen", "qwen2", "qwen2moe",
    "qwen2vl", "qwen3", "qwen3moe", "qwen3next", "qwen3vl", "qwen3vlmoe", "qwen35", "qwen35moe",
    "clef", "qwen4exp", "phi2", "phi3", "phimoe", "plamo", "plamo2", "plamo3", "codeshell",
    "orion", "internlm2", "minicpm", "minicpm3", "gemma", "gemma2", "gemma3", "gemma3n", "gemma4",
    "gemma4-assistant", "gemma-embedding", "starcoder2", "mamba", "mamba2", "maple", "jamba",
    "falcon-h1", "xverse", "command-r", "cohere2", "cohere2moe", "dbrx", "olmo", "olmo2", "olmoe",
    "muse-glimmer", "openelm", "arctic", "deepseek", "deepseek2", "deepseek2-ocr", "deepseek32",
    "deepseek4", "chatglm", "glm4", "glm4moe", "glm-dsa", "bitnet", "t5", "t5encoder", "jais",
    "jais2", "nemotron", "nemotron_h", "nemotron_h_moe", "exaone", "exaone4", "exaone-moe",
    "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7", "granite", "granitemoe", "granitehybrid",
    "graniteswitch", "granite_swa", "chameleon", "wavtokenizer-dec", "plm", "bailingmoe",
    "bailingmoe2", "bailingmoe3", "dots1", "dots3note", "arcee", "afmoe", "laguna", "ernie4_5",
    "ernie4_5-moe", "hunyuan-moe", "hunyuan-dense", "hunyuan_vl", "hy_v3", "hy_v4", "smollm3",
    "gpt-oss", "lfm2", "lfm2moe", "dream", "smallthinker", "llada", "llada-moe", "seed_oss",
    "grovemoe", "apertus", "minimax-01", "hrm_text", "minimax-m2", "minimax-m3", "cogvlm", "rnd1",
    "pangu-embedded", "mistral3", "eagle3", "dflash", "mistral4", "paddleocr", "mimo2", "step35",
    "spark2_5", "llama-embed", "maincoder", "kimi-linear", "kimi-k3", "glm5-next", "talkie",
    "mellum", "nanbeige", "qwen3tts", "pockettts"
];

/// True when llama.cpp can load a model of this architecture.
pub fn is_known_architecture(arch: &str) -> bool {
    KNOWN_ARCHITECTURES.contains(&arch)
}

/// The model families Trident supports end to end (llama.cpp inference, candle training code,
/// tiny test models).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Qwen2 / Qwen2.5 (`general.architecture = "qwen2"`): q/k/v biases, no q/k norms.
    Qwen2,
    /// Qwen3 (`"qwen3"`): per-head RMS q/k norms, no biases, explicit head_dim.
    Qwen3,
    /// Llama 2/3 and look-alikes (`"llama"`).
    Llama,
    /// Gemma 3 (`"gemma3"`): sandwich norms, q/k norms, sliding-window layers, GELU, scaled
    /// embeddings, tied output.
    Gemma3,
}

impl Family {
    /// All supported families.
    pub const ALL: [Family; 4] = [Family::Qwen2, Family::Qwen3, Family::Llama, Family::Gemma3];

    /// The family for a `general.architecture` string, `None` when Trident has no model code
    /// for it (llama.cpp may still run it).
    pub fn from_architecture(arch: &str) -> Option<Family> {
        match arch {
            "qwen2" => Some(Family::Qwen2),
            "qwen3" => Some(Family::Qwen3),
            "llama" => Some(Family::Llama),
            "gemma3" => Some(Family::Gemma3),
            _ => None,
        }
    }

    /// The `general.architecture` string of this family.
    pub fn architecture(self) -> &'static str {
        match self {
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
            Family::Llama => "llama",
            Family::Gemma3 => "gemma3",
        }
    }

    /// The `{arch}.`-relative metadata keys llama.cpp requires (throws or asserts without)
    /// for this family, beyond the tokenizer: e.g. `"block_count"` means
    /// `"qwen2.block_count"`.
    pub fn required_keys(self) -> &'static [&'static str] {
        &[
            "context_length",
            "embedding_length",
            "block_count",
            "feed_forward_length",
            "attention.head_count",
            "attention.layer_norm_rms_epsilon",
        ]
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.architecture())
    }
}

/// `{arch}.`-relative keys llama.cpp's generic loader requires for every model architecture.
pub const GENERIC_REQUIRED_KEYS: &[&str] = &["context_length", "embedding_length", "block_count"];

/// `tokenizer.ggml.model` values llama.cpp accepts.
pub const KNOWN_TOKENIZER_MODELS: &[&str] = &[
    "llama", "bert", "gpt2", "hybriddna", "whitespace", "t5", "rwkv", "test", "plamo2", "gemma4",
    "no_vocab", "none",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_known_architectures_and_round_trip() {
        for f in Family::ALL {
            assert!(is_known_architecture(f.architecture()));
            assert_eq!(Family::from_architecture(f.architecture()), Some(f));
        }
        assert!(is_known_architecture("gpt-oss"));
        assert!(!is_known_architecture("clip"));
        assert!(!is_known_architecture("qwen9"));
        assert_eq!(Family::from_architecture("phi3"), None);
    }
}
