//! `inspect` on broken files: every kind of damage gets its own typed, user-facing error and
//! never a panic or a huge allocation.

use std::path::{Path, PathBuf};

use trident_gguf::testing::write_tiny_model;
use trident_gguf::{Family, GgmlType, GgufError, GgufInfo, GgufWriter, MetadataValue, ValueType, inspect};

fn tiny(dir: &Path, family: Family) -> (PathBuf, GgufInfo) {
    let p = dir.join(format!("tiny-{family}.gguf"));
    write_tiny_model(family, &p, 11).unwrap();
    let info = inspect(&p).unwrap();
    (p, info)
}

fn write_bytes(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Re-write `src` through the writer with metadata edited by `edit` (tensor bytes copied).
fn rewrite(dir: &Path, src: &Path, name: &str, edit: impl FnOnce(&mut Vec<(String, MetadataValue)>)) -> PathBuf {
    let info = inspect(src).unwrap();
    let bytes = std::fs::read(src).unwrap();
    let mut meta: Vec<(String, MetadataValue)> = info.metadata_entries().to_vec();
    edit(&mut meta);
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w.set(k, v);
    }
    for t in info.tensors() {
        let start = (info.data_offset + t.offset) as usize;
        w.add_tensor_bytes(&t.name, &t.shape, t.ggml_type, bytes[start..start + t.n_bytes as usize].to_vec())
            .unwrap();
    }
    let p = dir.join(name);
    w.write(&p).unwrap();
    p
}

fn set(meta: &mut [(String, MetadataValue)], key: &str, v: MetadataValue) {
    meta.iter_mut().find(|(k, _)| k == key).unwrap_or_else(|| panic!("{key} present")).1 = v;
}

fn remove(meta: &mut Vec<(String, MetadataValue)>, key: &str) {
    meta.retain(|(k, _)| k != key);
}

fn err(p: &Path) -> GgufError {
    let e = inspect(p).expect_err("inspect must reject this file");
    assert!(e.is_user_error(), "{e}");
    assert_eq!(e.path(), Some(p), "error names the file: {e}");
    e
}

#[test]
fn missing_empty_and_not_gguf_files() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(err(&dir.path().join("nope.gguf")), GgufError::NotFound { .. }));
    assert!(matches!(err(dir.path()), GgufError::Unreadable { .. }));
    assert!(matches!(err(&write_bytes(dir.path(), "empty.gguf", b"")), GgufError::Empty { .. }));
    assert!(matches!(err(&write_bytes(dir.path(), "short", b"GG")), GgufError::BadMagic { .. }));
    let e = err(&write_bytes(dir.path(), "magic", b"GGML\x03\0\0\0rest of the file"));
    assert!(matches!(e, GgufError::BadMagic { .. }) && e.to_string().contains("not a GGUF file"), "{e}");
    // Random bytes (seeded, and not starting with "GGUF").
    let mut x = 0x1234_5678_9abc_def0u64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    assert!(matches!(err(&write_bytes(dir.path(), "random", &random)), GgufError::BadMagic { .. }));
}

#[test]
fn unsupported_versions() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = tiny(dir.path(), Family::Qwen2);
    let bytes = std::fs::read(&p).unwrap();
    for (v, hint) in [(1u32, "v1"), (4, ""), (0x0300_0000, "big-endian")] {
        let mut b = bytes.clone();
        b[4..8].copy_from_slice(&v.to_le_bytes());
        let e = err(&write_bytes(dir.path(), "v.gguf", &b));
        assert!(matches!(e, GgufError::UnsupportedVersion { version, .. } if version == v), "{e}");
        assert!(e.to_string().contains(hint), "{e}");
    }
}

#[test]
fn truncation_at_every_stage() {
    let dir = tempfile::tempdir().unwrap();
    let (p, info) = tiny(dir.path(), Family::Gemma3);
    let bytes = std::fs::read(&p).unwrap();
    let last = info.tensors().last().unwrap();
    let last_end = (info.data_offset + last.offset + last.n_bytes) as usize;
    let cases = [
        (6, "header"),                      // inside the version
        (20, "header"),                     // inside the counts
        (200, "header"),                    // inside the metadata
        (info.data_offset as usize - 40, "header"), // inside the tensor table
        (info.data_offset as usize, "data"),        // header complete, no data
        (bytes.len() / 2, "data"),
        (last_end - 1, "data"),             // the last tensor misses one byte
    ];
    for (cut, kind) in cases {
        let p = write_bytes(dir.path(), "cut.gguf", &bytes[..cut]);
        let e = err(&p);
        match kind {
            "header" => assert!(matches!(e, GgufError::TruncatedHeader { .. }), "cut {cut}: {e}"),
            _ => assert!(matches!(e, GgufError::TruncatedTensorData { .. }), "cut {cut}: {e}"),
        }
    }
    // Only the final padding missing: still complete (llama.cpp does not need it).
    inspect(&write_bytes(dir.path(), "pad.gguf", &bytes[..last_end])).unwrap();
}

/// Offset of the first metadata key's length field.
const FIRST_KEY: usize = 24;

#[test]
fn huge_lengths_do_not_allocate() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = tiny(dir.path(), Family::Llama);
    let bytes = std::fs::read(&p).unwrap();
    // Huge key length.
    let mut b = bytes.clone();
    b[FIRST_KEY..FIRST_KEY + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
    assert!(matches!(err(&write_bytes(dir.path(), "k.gguf", &b)), GgufError::TruncatedHeader { .. }));
    // Huge metadata / tensor counts.
    let mut b = bytes.clone();
    b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(err(&write_bytes(dir.path(), "n.gguf", &b)), GgufError::TruncatedHeader { .. }));
    let mut b = bytes.clone();
    b[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(matches!(err(&write_bytes(dir.path(), "t.gguf", &b)), GgufError::TruncatedHeader { .. }));

    // A hand-made file whose string value claims 2^40 bytes, and one whose array claims 2^50
    // elements.
    let mut raw = Vec::new();
    raw.extend_from_slice(b"GGUF");
    raw.extend_from_slice(&3u32.to_le_bytes());
    raw.extend_from_slice(&0u64.to_le_bytes());
    raw.extend_from_slice(&1u64.to_le_bytes());
    raw.extend_from_slice(&4u64.to_le_bytes());
    raw.extend_from_slice(b"name");
    let mut s = raw.clone();
    s.extend_from_slice(&8u32.to_le_bytes());
    s.extend_from_slice(&(1u64 << 40).to_le_bytes());
    s.extend_from_slice(&[b'x'; 100]);
    let e = err(&write_bytes(dir.path(), "s.gguf", &s));
    assert!(matches!(e, GgufError::TruncatedHeader { .. }), "{e}");
    let mut a = raw.clone();
    a.extend_from_slice(&9u32.to_le_bytes());
    a.extend_from_slice(&4u32.to_le_bytes());
    a.extend_from_slice(&(1u64 << 50).to_le_bytes());
    a.extend_from_slice(&[0; 100]);
    assert!(matches!(err(&write_bytes(dir.path(), "a.gguf", &a)), GgufError::TruncatedHeader { .. }));
    // Unknown value type and nested arrays.
    let mut t = raw.clone();
    t.extend_from_slice(&77u32.to_le_bytes());
    t.extend_from_slice(&[0; 16]);
    assert!(matches!(err(&write_bytes(dir.path(), "vt.gguf", &t)), GgufError::BadMetadata { .. }));
    let mut n = raw.clone();
    n.extend_from_slice(&9u32.to_le_bytes());
    n.extend_from_slice(&9u32.to_le_bytes());
    n.extend_from_slice(&1u64.to_le_bytes());
    n.extend_from_slice(&[0; 16]);
    assert!(matches!(err(&write_bytes(dir.path(), "na.gguf", &n)), GgufError::BadMetadata { .. }));
}

/// Position of the tensor-table entry of `name` (its name length field).
fn tensor_entry(bytes: &[u8], name: &str) -> usize {
    let mut needle = (name.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(name.as_bytes());
    bytes.windows(needle.len()).rposition(|w| w == needle.as_slice()).expect("tensor entry found")
}

#[test]
fn bad_tensor_types_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let (p, info) = tiny(dir.path(), Family::Qwen3);
    let bytes = std::fs::read(&p).unwrap();
    let t = &info.tensors()[1];
    let entry = tensor_entry(&bytes, &t.name);
    let type_pos = entry + 8 + t.name.len() + 4 + 8 * t.shape.len();
    let offset_pos = type_pos + 4;
    for bad_type in [4u32, 31, 43, 9999] {
        let mut b = bytes.clone();
        b[type_pos..type_pos + 4].copy_from_slice(&bad_type.to_le_bytes());
        let e = err(&write_bytes(dir.path(), "ty.gguf", &b));
        assert!(matches!(e, GgufError::UnknownTensorType { type_id, .. } if type_id == bad_type), "{e}");
    }
    let mut b = bytes.clone();
    b[offset_pos..offset_pos + 8].copy_from_slice(&(t.offset + 4).to_le_bytes());
    let e = err(&write_bytes(dir.path(), "mis.gguf", &b));
    assert!(matches!(e, GgufError::MisalignedOffset { .. }) && e.to_string().contains("alignment"), "{e}");
    let mut b = bytes.clone();
    b[offset_pos..offset_pos + 8].copy_from_slice(&(t.offset + 32).to_le_bytes());
    let e = err(&write_bytes(dir.path(), "gap.gguf", &b));
    assert!(matches!(e, GgufError::MisalignedOffset { .. }) && e.to_string().contains("expected"), "{e}");
    // A Q8_0 tensor whose row length is not a multiple of 32.
    let q = info.tensors().iter().find(|t| t.ggml_type == GgmlType::Q8_0).unwrap();
    let entry = tensor_entry(&bytes, &q.name);
    let ne0 = entry + 8 + q.name.len() + 4;
    let mut b = bytes.clone();
    b[ne0..ne0 + 8].copy_from_slice(&(q.shape[0] + 1).to_le_bytes());
    let e = err(&write_bytes(dir.path(), "blk.gguf", &b));
    assert!(matches!(e, GgufError::BadTensorInfo { .. }) && e.to_string().contains("block size"), "{e}");
}

#[test]
fn unknown_architecture_and_missing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = tiny(dir.path(), Family::Qwen2);
    let q = rewrite(dir.path(), &p, "arch.gguf", |m| set(m, "general.architecture", "qwen9".into()));
    assert!(matches!(err(&q), GgufError::UnknownArchitecture { architecture, .. } if architecture == "qwen9"));
    let q = rewrite(dir.path(), &p, "noarch.gguf", |m| remove(m, "general.architecture"));
    assert!(matches!(err(&q), GgufError::MissingKey { key, .. } if key == "general.architecture"));
    for key in ["qwen2.block_count", "qwen2.embedding_length", "qwen2.attention.head_count", "qwen2.attention.layer_norm_rms_epsilon", "qwen2.context_length"] {
        let q = rewrite(dir.path(), &p, "nokey.gguf", |m| remove(m, key));
        let e = err(&q);
        assert!(matches!(&e, GgufError::MissingKey { key: k, .. } if k == key), "{key}: {e}");
    }
    // Wrong value types for keys llama.cpp reads strictly (some with aborting getters).
    let q = rewrite(dir.path(), &p, "ty.gguf", |m| set(m, "qwen2.block_count", MetadataValue::F32(2.0)));
    assert!(matches!(err(&q), GgufError::BadMetadata { .. }));
    let q = rewrite(dir.path(), &p, "gt.gguf", |m| m.push(("general.type".into(), MetadataValue::U32(1))));
    assert!(matches!(err(&q), GgufError::BadMetadata { .. }));
    // Values llama.cpp asserts on.
    let q = rewrite(dir.path(), &p, "bc.gguf", |m| set(m, "qwen2.block_count", MetadataValue::U32(0)));
    assert!(matches!(err(&q), GgufError::BadMetadata { .. }));
    let q = rewrite(dir.path(), &p, "rope.gguf", |m| m.push(("qwen2.rope.scaling.type".into(), "warp".into())));
    assert!(matches!(err(&q), GgufError::BadMetadata { .. }));
}

#[test]
fn tokenizer_problems() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = tiny(dir.path(), Family::Llama);
    for key in ["tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.merges"] {
        let q = rewrite(dir.path(), &p, "tok.gguf", |m| remove(m, key));
        assert!(matches!(err(&q), GgufError::MissingTokenizer { .. }), "{key}");
    }
    let q = rewrite(dir.path(), &p, "model.gguf", |m| set(m, "tokenizer.ggml.model", "sentencepiece9".into()));
    assert!(matches!(err(&q), GgufError::MissingTokenizer { .. }));
    let q = rewrite(dir.path(), &p, "dup.gguf", |m| {
        let tokens = m.iter_mut().find(|(k, _)| k == "tokenizer.ggml.tokens").unwrap();
        if let MetadataValue::Array(_, items) = &mut tokens.1 {
            items[300] = items[65].clone();
        }
    });
    let e = err(&q);
    assert!(matches!(e, GgufError::MissingTokenizer { .. }) && e.to_string().contains("twice"), "{e}");
    let q = rewrite(dir.path(), &p, "tt.gguf", |m| set(m, "tokenizer.ggml.token_type", MetadataValue::Array(ValueType::I32, vec![])));
    assert!(matches!(err(&q), GgufError::MissingTokenizer { .. }));
}

#[test]
fn inconsistent_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let (p, info) = tiny(dir.path(), Family::Qwen2);
    let q = rewrite(dir.path(), &p, "embd.gguf", |m| set(m, "qwen2.embedding_length", MetadataValue::U32(128)));
    assert!(matches!(err(&q), GgufError::InconsistentShape { tensor, .. } if tensor == "token_embd.weight"));
    let n = info.vocab_size.unwrap() as usize;
    let q = rewrite(dir.path(), &p, "vocab.gguf", |m| {
        for key in ["tokenizer.ggml.tokens", "tokenizer.ggml.token_type"] {
            if let Some((_, MetadataValue::Array(_, items))) = m.iter_mut().find(|(k, _)| k == key) {
                items.truncate(n - 1);
            }
        }
    });
    let e = err(&q);
    assert!(matches!(e, GgufError::InconsistentShape { .. }) && e.to_string().contains(&format!("{}", n - 1)), "{e}");
}

#[test]
fn adapter_with_wrong_alpha_type_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = GgufWriter::new();
    w.set("general.architecture", "llama");
    w.set("general.type", "adapter");
    w.set("adapter.type", "lora");
    // llama.cpp reads alpha with gguf_get_val_f32, which aborts on any other type.
    w.set("adapter.lora.alpha", MetadataValue::F64(8.0));
    w.add_tensor("blk.0.attn_q.weight.lora_a", &[64, 2], &[0.0; 128], GgmlType::F32).unwrap();
    w.add_tensor("blk.0.attn_q.weight.lora_b", &[2, 64], &[0.0; 128], GgmlType::F32).unwrap();
    let p = dir.path().join("alpha.gguf");
    w.write(&p).unwrap();
    assert!(matches!(err(&p), GgufError::BadMetadata { key, .. } if key == "adapter.lora.alpha"));
    // A half pair.
    let mut w = GgufWriter::new();
    w.set("general.architecture", "llama");
    w.set("general.type", "adapter");
    w.set("adapter.type", "lora");
    w.add_tensor("blk.0.attn_q.weight.lora_a", &[64, 2], &[0.0; 128], GgmlType::F32).unwrap();
    w.write(&p).unwrap();
    assert!(matches!(err(&p), GgufError::BadTensorInfo { .. }));
}

#[test]
fn writer_round_trips_every_value_type() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = GgufWriter::new();
    let values = vec![
        ("u8", MetadataValue::U8(200)),
        ("i8", MetadataValue::I8(-5)),
        ("u16", MetadataValue::U16(60000)),
        ("i16", MetadataValue::I16(-300)),
        ("u32", MetadataValue::U32(4_000_000_000)),
        ("i32", MetadataValue::I32(-70000)),
        ("f32", MetadataValue::F32(1.5)),
        ("bool", MetadataValue::Bool(true)),
        ("str", MetadataValue::String("привет".into())),
        ("u64", MetadataValue::U64(u64::MAX)),
        ("i64", MetadataValue::I64(i64::MIN)),
        ("f64", MetadataValue::F64(-2.25)),
        ("arr", MetadataValue::Array(ValueType::String, vec!["a".into(), "".into()])),
        ("arr_i16", MetadataValue::Array(ValueType::I16, vec![MetadataValue::I16(-1), MetadataValue::I16(2)])),
        ("empty", MetadataValue::Array(ValueType::F32, vec![])),
    ];
    for (k, v) in &values {
        w.set(*k, v.clone());
    }
    let data: Vec<f32> = (0..128).map(|i| (i as f32 * 0.1).sin()).collect();
    w.add_tensor("a", &[32, 4], &data, GgmlType::F32).unwrap();
    w.add_tensor("b", &[32, 4], &data, GgmlType::F16).unwrap();
    w.add_tensor("c", &[32, 4], &data, GgmlType::Q8_0).unwrap();
    w.add_tensor("d", &[32, 2, 2], &data, GgmlType::Q4_0).unwrap();
    let p = dir.path().join("rt.gguf");
    w.write(&p).unwrap();
    let info = trident_gguf::read_metadata(&p).unwrap();
    for (k, v) in &values {
        assert_eq!(info.metadata(k), Some(v), "{k}");
    }
    assert_eq!(info.tensor_count, 4);
    assert_eq!(info.alignment, 32);
    assert_eq!(info.data_offset % 32, 0);
    let bytes = std::fs::read(&p).unwrap();
    for t in info.tensors() {
        assert_eq!(t.offset % 32, 0);
        if t.name == "a" {
            let s = (info.data_offset + t.offset) as usize;
            let back: Vec<f32> = bytes[s..s + 512].chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            assert_eq!(back, data);
        }
    }
    assert_eq!(info.tensor("d").unwrap().shape, vec![32, 2, 2]);
    assert_eq!(info.parameter_count, 4 * 128);
    // Not a model: inspect() wants an architecture.
    assert!(matches!(inspect(&p), Err(GgufError::MissingKey { .. })));
}
