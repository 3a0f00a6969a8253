//! `inspect` on the two real default models (env `TRIDENT_TEST_MODELS`; skipped with a
//! notice when unset), and on truncated copies of them. Expected facts come from
//! `shared/notes/peer-baseline.md` §Models.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use trident_gguf::{Family, GgufError, inspect};

const QWEN: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";
const GEMMA: &str = "gemma-3-270m-q4_k_m.gguf";

fn model(name: &str) -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("TRIDENT_TEST_MODELS") else {
        eprintln!("TRIDENT_TEST_MODELS is not set: skipping the real-model test");
        return None;
    };
    let p = Path::new(&dir).join(name);
    if !p.exists() {
        eprintln!("{} not found: skipping", p.display());
        return None;
    }
    Some(p)
}

fn counts(info: &trident_gguf::GgufInfo) -> Vec<(String, u64)> {
    info.tensor_types.iter().map(|(k, v)| (k.clone(), *v)).collect()
}

fn pairs(v: &[(&str, u64)]) -> Vec<(String, u64)> {
    v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

#[test]
fn qwen_facts() {
    let Some(p) = model(QWEN) else { return };
    let t = Instant::now();
    let info = inspect(&p).unwrap();
    eprintln!("inspect {QWEN}: {:?}", t.elapsed());
    assert_eq!(info.architecture, "qwen2");
    assert_eq!(info.family(), Some(Family::Qwen2));
    assert_eq!(info.version, 3);
    assert_eq!(info.name.as_deref(), Some("Qwen2.5 Coder 0.5B Instruct AWQ"));
    assert_eq!(info.file_type, Some(15));
    assert_eq!(info.file_type_label.as_deref(), Some("Q4_K_M"));
    assert_eq!(info.block_count, Some(24));
    assert_eq!(info.embedding_length, Some(896));
    assert_eq!(info.head_count, Some(14));
    assert_eq!(info.head_count_kv, Some(2));
    assert_eq!(info.head_dim(), Some(64));
    assert_eq!(info.vocab_size, Some(151936));
    assert_eq!(info.tokenizer_model.as_deref(), Some("gpt2"));
    assert_eq!(info.tokenizer_pre.as_deref(), Some("qwen2"));
    assert!(info.tensor("output.weight").is_some(), "separate output.weight");
    assert_eq!(
        counts(&info),
        pairs(&[("F32", 121), ("Q4_K", 12), ("Q5_0", 133), ("Q6_K", 12), ("Q8_0", 13)])
    );
    assert_eq!(info.tensor_count, 291);
    assert!(info.chat_template.as_deref().unwrap_or_default().contains("<|im_start|>"));
    assert!(!info.is_lora_adapter);
    // 494 M parameters plus the separate 136 M-element output matrix (151936 x 896).
    assert!((600_000_000..660_000_000).contains(&info.parameter_count), "{}", info.parameter_count);
    assert_eq!(info.tensor("output.weight").unwrap().shape, vec![896, 151936]);
    assert!(info.data_offset + info.tensor_data_bytes <= info.file_size);
    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(json["file_type_label"], "Q4_K_M");
    assert_eq!(json["tensor_types"]["Q5_0"], 133);
}

#[test]
fn gemma_facts() {
    let Some(p) = model(GEMMA) else { return };
    let info = inspect(&p).unwrap();
    assert_eq!(info.architecture, "gemma3");
    assert_eq!(info.family(), Some(Family::Gemma3));
    assert!(info.name.as_deref().unwrap_or_default().contains("Gemma 3 270m"), "{:?}", info.name);
    assert_eq!(info.file_type_label.as_deref(), Some("Q4_K_M"));
    assert_eq!(info.block_count, Some(18));
    assert_eq!(info.embedding_length, Some(640));
    assert_eq!(info.metadata_u64("gemma3.attention.sliding_window"), Some(512));
    assert!(info.tensor("output.weight").is_none(), "tied output");
    assert_eq!(
        counts(&info),
        pairs(&[("F32", 109), ("Q4_K", 27), ("Q5_0", 81), ("Q6_K", 9), ("Q8_0", 10)])
    );
    assert_eq!(info.tokenizer_model.as_deref(), Some("llama"));
    assert!(info.bos_token_id.is_some() && info.eos_token_id.is_some());
    // The base (not instruction-tuned) model ships no chat template.
    assert_eq!(info.chat_template, None);
    assert_eq!(info.metadata_str("tokenizer.ggml.pre"), Some("default"));
    assert_eq!(info.arch_u64("attention.key_length"), Some(256));
    assert_eq!(info.head_dim(), Some(256));
}

fn copy_prefix(src: &Path, dst: &Path, len: u64) {
    let mut r = std::fs::File::open(src).unwrap().take(len);
    let mut w = std::fs::File::create(dst).unwrap();
    std::io::copy(&mut r, &mut w).unwrap();
    w.flush().unwrap();
}

#[test]
fn truncated_real_model() {
    let Some(p) = model(QWEN) else { return };
    let size = std::fs::metadata(&p).unwrap().len();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.gguf");
    // The three cuts from notes/llama-cpp-2.md §4: inside the metadata, mid-data, tail.
    for (len, header) in [(1 << 20, true), (100 << 20, false), (size - 400_000, false)] {
        copy_prefix(&p, &cut, len);
        let e = inspect(&cut).unwrap_err();
        assert!(e.is_user_error());
        if header {
            assert!(matches!(e, GgufError::TruncatedHeader { .. }), "{len}: {e}");
        } else {
            assert!(matches!(e, GgufError::TruncatedTensorData { .. }), "{len}: {e}");
            assert!(e.to_string().contains("truncated"), "{e}");
        }
        eprintln!("cut at {len}: {e}");
    }
}
