//! The candle model code against llama.cpp on the same tiny random GGUF files, every family,
//! every position. This is what ties the model that is trained to the model that is served.
//!
//! Tolerances (stated): with F32 weights (llama.cpp then multiplies in f32; KV cache F32,
//! flash attention off) max |Δlogit| ≤ 2e-3; with Q8_0 weights llama.cpp quantizes the
//! activations to Q8_0, so `Dequantized` gets ≤ 5e-2 and candle's `Quantized` mode (the same
//! Q8_0×Q8_0 scheme) ≤ 2e-2. Logits of these models are O(1–5).

use std::num::NonZeroU32;
use std::sync::OnceLock;

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use llama_cpp_2::context::params::{KvCacheType, LlamaContextParams};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use crate::config::Family;
use crate::testutil::{write_tiny_gguf_with, TINY_VOCAB};
use crate::{load_decoder, CausalLm, LoadOptions, Precision};

fn backend() -> &'static LlamaBackend {
    static B: OnceLock<LlamaBackend> = OnceLock::new();
    B.get_or_init(|| {
        llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default().with_logs_enabled(false));
        LlamaBackend::init().expect("llama.cpp backend init")
    })
}

/// All-position logits from llama.cpp, `[seq][vocab]`.
fn llama_logits(path: &std::path::Path, ids: &[u32]) -> Vec<Vec<f32>> {
    let be = backend();
    let model = LlamaModel::load_from_file(be, path, &LlamaModelParams::default()).expect("llama.cpp loads the tiny model");
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(64))
        .with_n_batch(64)
        .with_n_ubatch(64)
        .with_n_threads(2)
        .with_n_threads_batch(2)
        .with_type_k(KvCacheType::F32)
        .with_type_v(KvCacheType::F32)
        .with_flash_attention_policy(llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED);
    let mut ctx = model.new_context(be, params).expect("context");
    let mut batch = LlamaBatch::new(ids.len(), 1);
    for (i, &t) in ids.iter().enumerate() {
        batch.add(LlamaToken(t as i32), i as i32, &[0], true).expect("batch add");
    }
    ctx.decode(&mut batch).expect("decode");
    (0..ids.len()).map(|i| ctx.get_logits_ith(i as i32).to_vec()).collect()
}

fn compare(family: Family, wtype: GgmlDType, precision: Precision) -> f32 {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join(format!("tiny-{}.gguf", family.arch()));
    write_tiny_gguf_with(family, &p, 7, wtype);
    // 12 tokens: longer than gemma's sliding window of 4.
    let ids: Vec<u32> = (0..12u32).map(|i| 3 + (i * 37 + 11) % (TINY_VOCAB as u32 - 3)).collect();
    let reference = llama_logits(&p, &ids);
    let opts = LoadOptions { precision, ..Default::default() };
    let m = load_decoder(&p, &opts).expect("load tiny");
    let x = Tensor::from_vec(ids.clone(), (1, ids.len()), &Device::Cpu).expect("ids");
    let ours = m.forward(&x, false).expect("forward").squeeze(0).expect("squeeze").to_vec2::<f32>().expect("vec");
    let mut max = 0f32;
    for (a, b) in ours.iter().zip(&reference) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            max = max.max((x - y).abs());
        }
    }
    max
}

#[test]
fn tiny_models_match_llama_cpp_logits() {
    let mut report = Vec::new();
    for family in [Family::Qwen2, Family::Qwen3, Family::Llama, Family::Gemma3] {
        let f32_exact = compare(family, GgmlDType::F32, Precision::Dequantized);
        let q8_exact = compare(family, GgmlDType::Q8_0, Precision::Dequantized);
        let q8_quant = compare(family, GgmlDType::Q8_0, Precision::Quantized);
        report.push(format!("{family:?}: F32 {f32_exact:.2e}, Q8_0/Dequantized {q8_exact:.2e}, Q8_0/Quantized {q8_quant:.2e}"));
        assert!(f32_exact <= 2e-3, "{family:?} F32 weights: max |Δlogit| {f32_exact}");
        assert!(q8_exact <= 5e-2, "{family:?} Q8_0 weights, Dequantized: {q8_exact}");
        assert!(q8_quant <= 2e-2, "{family:?} Q8_0 weights, Quantized: {q8_quant}");
    }
    println!("max |Δlogit| vs llama.cpp:\n{}", report.join("\n"));
}
