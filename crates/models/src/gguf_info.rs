//! The GGUF facts the catalogue needs, through `trident_gguf` (the one GGUF reader).

use crate::error::{Error, Result};
use std::path::Path;

/// What `models list` shows about a GGUF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufFacts {
    /// `general.architecture`.
    pub architecture: String,
    /// Quantization label from `general.file_type` (`Q4_K_M`), or `?` when absent.
    pub quantization: String,
    /// `general.name`, when present.
    pub name: Option<String>,
}

impl From<trident_gguf::GgufInfo> for GgufFacts {
    fn from(info: trident_gguf::GgufInfo) -> Self {
        GgufFacts {
            architecture: info.architecture,
            quantization: info.file_type_label.unwrap_or_else(|| "?".into()),
            name: info.name,
        }
    }
}

/// Reads the structure of a GGUF file (header, metadata, tensor table) for listing.
pub fn read_facts(path: &Path) -> Result<GgufFacts> {
    Ok(trident_gguf::read_metadata(path)?.into())
}

/// Fully validates a GGUF model (as before handing it to llama.cpp): readable, a known
/// architecture, the keys and tokenizer llama.cpp needs, and not a LoRA adapter.
pub fn validate_llm(path: &Path) -> Result<GgufFacts> {
    let info = trident_gguf::inspect(path)?;
    if info.is_lora_adapter {
        return Err(Error::InvalidGguf {
            path: path.into(),
            message: "this is a LoRA adapter, not a base model (adapters are used with --adapter)".into(),
        });
    }
    Ok(info.into())
}

/// Test helpers: tiny valid GGUF models, and one with an unknown architecture.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;
    use trident_gguf::Family;

    /// A tiny random llama model.
    pub fn write_tiny(path: &Path) {
        trident_gguf::testing::write_tiny_model(Family::Llama, path, 7).unwrap();
    }

    /// A tiny model whose `general.architecture` is renamed to `zzzzz` (same length, so the
    /// file stays structurally valid).
    pub fn write_unknown_arch(path: &Path) {
        write_tiny(path);
        let mut bytes = std::fs::read(path).unwrap();
        let key = b"general.architecture";
        let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len();
        // u32 type (8 = string), u64 length (5), then "llama".
        let value = at + 4 + 8;
        assert_eq!(&bytes[value..value + 5], b"llama");
        bytes[value..value + 5].copy_from_slice(b"zzzzz");
        std::fs::write(path, bytes).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_architecture_and_validates() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        testing::write_tiny(&p);
        let f = validate_llm(&p).unwrap();
        assert_eq!(f.architecture, "llama");
        assert_eq!(read_facts(&p).unwrap(), f);
    }

    #[test]
    fn unknown_architecture_and_foreign_files_are_user_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        testing::write_unknown_arch(&p);
        let e = validate_llm(&p).unwrap_err();
        assert!(e.is_user_error() && e.to_string().contains("zzzzz"), "{e}");
        std::fs::write(&p, b"PK\x03\x04 not a model at all").unwrap();
        let e = validate_llm(&p).unwrap_err();
        assert!(e.is_user_error(), "{e}");
    }

    #[test]
    fn real_default_models_when_available() {
        let Some(dir) = std::env::var_os("TRIDENT_TEST_MODELS") else {
            eprintln!("TRIDENT_TEST_MODELS not set: skipping the real-model check");
            return;
        };
        let dir = Path::new(&dir);
        let q = validate_llm(&dir.join("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")).unwrap();
        assert_eq!((q.architecture.as_str(), q.quantization.as_str()), ("qwen2", "Q4_K_M"));
        let g = validate_llm(&dir.join("gemma-3-270m-q4_k_m.gguf")).unwrap();
        assert_eq!(g.architecture, "gemma3");
    }
}
