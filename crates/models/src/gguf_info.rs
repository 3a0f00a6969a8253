//! The few GGUF facts the catalogue shows (architecture, quantization, name).
//!
//! Stand-in until `trident_gguf::inspect` (full validation: header, metadata, tensor bounds,
//! supported types) is available: this reads only the header and the metadata key/values,
//! with bounds checks, and never trusts a length it has not checked against the file size.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

/// Architectures llama.cpp runs and Trident accepts in `models add`.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &[
    "llama", "llama4", "qwen2", "qwen2moe", "qwen3", "qwen3moe", "gemma", "gemma2", "gemma3",
    "gemma3n", "phi2", "phi3", "mistral3", "granite", "granitemoe", "olmo", "olmo2", "smollm3",
    "stablelm", "starcoder2", "deepseek2", "internlm2", "minicpm", "exaone", "command-r",
    "cohere2", "falcon", "gpt2", "bloom", "mpt", "chatglm", "glm4", "nemotron",
];

/// What `models list` shows about a GGUF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufFacts {
    /// GGUF format version (2 or 3).
    pub version: u32,
    /// `general.architecture`.
    pub architecture: String,
    /// Quantization label from `general.file_type` (`Q4_K_M`), or `?` when absent.
    pub quantization: String,
    /// `general.name`, when present.
    pub name: Option<String>,
    /// Number of tensors in the file.
    pub tensor_count: u64,
}

/// Reads the header and metadata of a GGUF file.
pub fn read_facts(path: &Path) -> Result<GgufFacts> {
    let file = File::open(path).map_err(|e| Error::InvalidGguf { path: path.into(), message: format!("cannot open: {e}") })?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut r = Reader { inner: BufReader::with_capacity(1 << 16, file), len, path };
    let magic = r.bytes_exact(4)?;
    if magic != b"GGUF" {
        return Err(r.bad(format!("magic bytes are {magic:02x?}, expected \"GGUF\"")));
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(r.bad(format!("unsupported GGUF version {version} (supported: 2, 3)")));
    }
    let tensor_count = r.u64()?;
    let kv_count = r.u64()?;
    if kv_count > len / 8 || tensor_count > len / 8 {
        return Err(r.bad(format!("header claims {tensor_count} tensors and {kv_count} metadata keys, more than the file can hold")));
    }
    let (mut architecture, mut file_type, mut name) = (None, None, None);
    for _ in 0..kv_count {
        let key = r.string()?;
        let ty = r.u32()?;
        match (key.as_str(), ty) {
            ("general.architecture", 8) => architecture = Some(r.string()?),
            ("general.name", 8) => name = Some(r.string()?),
            ("general.file_type", 4 | 5) => file_type = Some(r.u32()?),
            _ => r.skip_value(ty, 0)?,
        }
    }
    let architecture = architecture.ok_or_else(|| r.bad("metadata has no general.architecture".into()))?;
    let quantization = file_type.and_then(file_type_label).unwrap_or("?").to_string();
    Ok(GgufFacts { version, architecture, quantization, name, tensor_count })
}

/// Checks that a GGUF file is readable and of a supported architecture.
pub fn validate_llm(path: &Path) -> Result<GgufFacts> {
    let facts = read_facts(path)?;
    if !SUPPORTED_ARCHITECTURES.contains(&facts.architecture.as_str()) {
        return Err(Error::UnknownArchitecture {
            path: path.into(),
            architecture: facts.architecture,
            supported: SUPPORTED_ARCHITECTURES.iter().map(|s| s.to_string()).collect(),
        });
    }
    Ok(facts)
}

/// llama.cpp's `llama_ftype` names.
pub fn file_type_label(ft: u32) -> Option<&'static str> {
    Some(match ft {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        _ => return None,
    })
}

struct Reader<'a> {
    inner: BufReader<File>,
    len: u64,
    path: &'a Path,
}

impl Reader<'_> {
    fn bad(&self, message: String) -> Error {
        Error::InvalidGguf { path: self.path.into(), message }
    }

    fn pos(&mut self) -> u64 {
        self.inner.stream_position().unwrap_or(u64::MAX)
    }

    fn ensure(&mut self, n: u64) -> Result<()> {
        let pos = self.pos();
        if pos.checked_add(n).is_none_or(|end| end > self.len) {
            return Err(self.bad(format!("truncated: needs {n} more bytes at offset {pos}, file is {} bytes", self.len)));
        }
        Ok(())
    }

    fn bytes_exact(&mut self, n: usize) -> Result<Vec<u8>> {
        self.ensure(n as u64)?;
        let mut buf = vec![0u8; n];
        self.inner.read_exact(&mut buf).map_err(|e| self.bad(format!("read error: {e}")))?;
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.bytes_exact(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.bytes_exact(8)?;
        Ok(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }

    fn string(&mut self) -> Result<String> {
        let n = self.u64()?;
        self.ensure(n)?;
        let b = self.bytes_exact(n as usize)?;
        String::from_utf8(b).map_err(|_| self.bad("a metadata string is not UTF-8".into()))
    }

    fn skip(&mut self, n: u64) -> Result<()> {
        self.ensure(n)?;
        let n = i64::try_from(n).map_err(|_| self.bad("length overflow".into()))?;
        self.inner.seek_relative(n).map_err(|e| self.bad(format!("seek error: {e}")))
    }

    fn skip_value(&mut self, ty: u32, depth: u32) -> Result<()> {
        match ty {
            0 | 1 | 7 => self.skip(1),
            2 | 3 => self.skip(2),
            4..=6 => self.skip(4),
            10..=12 => self.skip(8),
            8 => {
                let n = self.u64()?;
                self.skip(n)
            }
            9 => {
                if depth > 4 {
                    return Err(self.bad("arrays nested too deeply".into()));
                }
                let elem = self.u32()?;
                let n = self.u64()?;
                let fixed = match elem {
                    0 | 1 | 7 => Some(1),
                    2 | 3 => Some(2),
                    4..=6 => Some(4),
                    10..=12 => Some(8),
                    _ => None,
                };
                match fixed {
                    Some(size) => {
                        let total = n.checked_mul(size).ok_or_else(|| self.bad("array length overflow".into()))?;
                        self.skip(total)
                    }
                    None => {
                        if n > self.len {
                            return Err(self.bad(format!("array of {n} elements is longer than the file")));
                        }
                        for _ in 0..n {
                            self.skip_value(elem, depth + 1)?;
                        }
                        Ok(())
                    }
                }
            }
            other => Err(self.bad(format!("unknown metadata value type {other}"))),
        }
    }
}

/// Writes a minimal GGUF (header and metadata, no tensors) for tests.
#[doc(hidden)]
pub fn write_test_gguf(path: &Path, architecture: &str, file_type: Option<u32>) -> std::io::Result<()> {
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    let kvs = 3 + u64::from(file_type.is_some());
    out.extend_from_slice(&kvs.to_le_bytes());
    let put_str = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    // An array of strings first, so the reader has to skip it.
    put_str(&mut out, "tokenizer.ggml.tokens");
    out.extend_from_slice(&9u32.to_le_bytes());
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&2u64.to_le_bytes());
    put_str(&mut out, "<s>");
    put_str(&mut out, "привет");
    put_str(&mut out, "general.architecture");
    out.extend_from_slice(&8u32.to_le_bytes());
    put_str(&mut out, architecture);
    put_str(&mut out, "general.name");
    out.extend_from_slice(&8u32.to_le_bytes());
    put_str(&mut out, "test model");
    if let Some(ft) = file_type {
        put_str(&mut out, "general.file_type");
        out.extend_from_slice(&4u32.to_le_bytes());
        out.extend_from_slice(&ft.to_le_bytes());
    }
    std::fs::write(path, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_architecture_and_quantization() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        write_test_gguf(&p, "qwen2", Some(15)).unwrap();
        let f = read_facts(&p).unwrap();
        assert_eq!(f.architecture, "qwen2");
        assert_eq!(f.quantization, "Q4_K_M");
        assert_eq!(f.name.as_deref(), Some("test model"));
        write_test_gguf(&p, "llama", None).unwrap();
        assert_eq!(read_facts(&p).unwrap().quantization, "?");
    }

    #[test]
    fn truncated_and_foreign_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        write_test_gguf(&p, "qwen2", Some(15)).unwrap();
        let full = std::fs::read(&p).unwrap();
        for cut in [0, 3, 10, 30, full.len() - 1] {
            std::fs::write(&p, &full[..cut]).unwrap();
            let e = read_facts(&p).unwrap_err();
            assert!(matches!(e, Error::InvalidGguf { .. }), "cut {cut}: {e}");
        }
        std::fs::write(&p, b"PK\x03\x04 not a model at all").unwrap();
        assert!(read_facts(&p).unwrap_err().to_string().contains("magic"));
    }

    #[test]
    fn unknown_architecture_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        write_test_gguf(&p, "frobnicator", Some(15)).unwrap();
        let e = validate_llm(&p).unwrap_err();
        assert!(matches!(e, Error::UnknownArchitecture { .. }) && e.is_user_error(), "{e}");
        assert!(e.to_string().contains("frobnicator"));
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
