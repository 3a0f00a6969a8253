//! Test helpers: seeded random tensors.

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};

/// A seeded normal(0, std) f32 tensor (Box–Muller on ChaCha8).
pub fn randn(dims: &[usize], std: f64, seed: u64) -> Tensor {
    let n: usize = dims.iter().product();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            let u1: f64 = rng.random_range(1e-12..1.0);
            let u2: f64 = rng.random::<f64>();
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
        })
        .collect();
    Tensor::from_vec(v, dims, &Device::Cpu).expect("shape matches element count")
}

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};

use crate::config::Family;

/// Dimensions of the tiny test models.
pub const TINY_VOCAB: usize = 96;
/// Hidden width of the tiny test models.
pub const TINY_HIDDEN: usize = 64;

/// Writes a tiny random-weight GGUF of `family` (2 layers, hidden 64, 4 query heads, 2 KV
/// heads of width 16, MLP 128, vocabulary 96; projections Q8_0, norms F32). Gemma gets a
/// sliding window of 4 so that short test sequences exercise it.
pub fn write_tiny_gguf(family: Family, path: &std::path::Path, seed: u64) {
    write_tiny_gguf_with(family, path, seed, GgmlDType::Q8_0)
}

/// As [`write_tiny_gguf`] with the projection/embedding weight type chosen (`F32` or `Q8_0`).
/// The file carries a minimal SentencePiece-style vocabulary so llama.cpp loads it too.
pub fn write_tiny_gguf_with(family: Family, path: &std::path::Path, seed: u64, wtype: GgmlDType) {
    let arch = family.arch();
    let (d, ffn, h, kvh, hd, layers) = (TINY_HIDDEN, 128usize, 4usize, 2usize, 16usize, 2usize);
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (format!("{arch}.block_count"), Value::U32(layers as u32)),
        (format!("{arch}.context_length"), Value::U32(256)),
        (format!("{arch}.embedding_length"), Value::U32(d as u32)),
        (format!("{arch}.feed_forward_length"), Value::U32(ffn as u32)),
        (format!("{arch}.attention.head_count"), Value::U32(h as u32)),
        (format!("{arch}.attention.head_count_kv"), Value::U32(kvh as u32)),
        (format!("{arch}.attention.key_length"), Value::U32(hd as u32)),
        (format!("{arch}.attention.value_length"), Value::U32(hd as u32)),
        (format!("{arch}.rope.freq_base"), Value::F32(10_000.0)),
        (format!("{arch}.attention.layer_norm_rms_epsilon"), Value::F32(1e-6)),
    ];
    if family == Family::Gemma3 {
        md.push((format!("{arch}.attention.sliding_window"), Value::U32(4)));
    }
    let mut tokens = vec![Value::String("<unk>".into()), Value::String("<s>".into()), Value::String("</s>".into())];
    tokens.extend((3..TINY_VOCAB).map(|i| Value::String(format!("t{i}"))));
    let mut types = vec![Value::I32(2), Value::I32(3), Value::I32(3)];
    types.extend((3..TINY_VOCAB).map(|_| Value::I32(1)));
    md.push(("tokenizer.ggml.model".into(), Value::String("llama".into())));
    md.push(("tokenizer.ggml.tokens".into(), Value::Array(tokens)));
    md.push(("tokenizer.ggml.scores".into(), Value::Array((0..TINY_VOCAB).map(|_| Value::F32(0.0)).collect())));
    md.push(("tokenizer.ggml.token_type".into(), Value::Array(types)));
    md.push(("tokenizer.ggml.unknown_token_id".into(), Value::U32(0)));
    md.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(1)));
    md.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(2)));
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_add(1);
        s
    };
    let q8 = |t: Tensor| QTensor::quantize(&t, wtype).expect("quantize");
    let f32q = |t: Tensor| QTensor::quantize(&t, GgmlDType::F32).expect("f32 qtensor");
    let norm = |n: usize, seed: u64| f32q((randn(&[n], 0.1, seed) + 1.0).expect("add"));
    let mut tensors: Vec<(String, QTensor)> = vec![
        ("token_embd.weight".into(), q8(randn(&[TINY_VOCAB, d], 0.5, next()))),
        ("output_norm.weight".into(), norm(d, next())),
    ];
    if family != Family::Gemma3 {
        tensors.push(("output.weight".into(), q8(randn(&[TINY_VOCAB, d], 0.2, next()))));
    }
    for i in 0..layers {
        let p = |s: &str| format!("blk.{i}.{s}");
        let sd = 0.15;
        tensors.push((p("attn_norm.weight"), norm(d, next())));
        tensors.push((p("attn_q.weight"), q8(randn(&[h * hd, d], sd, next()))));
        tensors.push((p("attn_k.weight"), q8(randn(&[kvh * hd, d], sd, next()))));
        tensors.push((p("attn_v.weight"), q8(randn(&[kvh * hd, d], sd, next()))));
        tensors.push((p("attn_output.weight"), q8(randn(&[d, h * hd], sd, next()))));
        tensors.push((p("ffn_norm.weight"), norm(d, next())));
        tensors.push((p("ffn_gate.weight"), q8(randn(&[ffn, d], sd, next()))));
        tensors.push((p("ffn_up.weight"), q8(randn(&[ffn, d], sd, next()))));
        tensors.push((p("ffn_down.weight"), q8(randn(&[d, ffn], sd, next()))));
        if family == Family::Qwen2 {
            tensors.push((p("attn_q.bias"), f32q(randn(&[h * hd], 0.1, next()))));
            tensors.push((p("attn_k.bias"), f32q(randn(&[kvh * hd], 0.1, next()))));
            tensors.push((p("attn_v.bias"), f32q(randn(&[kvh * hd], 0.1, next()))));
        }
        if matches!(family, Family::Qwen3 | Family::Gemma3) {
            tensors.push((p("attn_q_norm.weight"), norm(hd, next())));
            tensors.push((p("attn_k_norm.weight"), norm(hd, next())));
        }
        if family == Family::Gemma3 {
            tensors.push((p("post_attention_norm.weight"), norm(d, next())));
            tensors.push((p("post_ffw_norm.weight"), norm(d, next())));
        }
    }
    let mut f = std::fs::File::create(path).expect("create tiny gguf");
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut f, &md_refs, &t_refs).expect("write tiny gguf");
}
