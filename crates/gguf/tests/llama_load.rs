//! Proof that the tiny models and LoRA adapters this crate writes are accepted and run by
//! llama.cpp (through `llama-cpp-2`), and that `inspect_adapter_against` rejects what
//! llama.cpp would reject.
//!
//! Set `TRIDENT_LLAMA_LOGS=1` to see llama.cpp's own log.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::OnceLock;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::token::LlamaToken;
use rand::{Rng, SeedableRng};
use trident_gguf::testing::{TinyConfig, write_tiny_model, write_tiny_model_with};
use trident_gguf::{
    Family, GgmlType, GgufError, LoraAdapterSpec, LoraTensorPair, inspect, inspect_adapter_against,
    write_lora_adapter,
};

fn backend() -> &'static LlamaBackend {
    static BACKEND: OnceLock<LlamaBackend> = OnceLock::new();
    BACKEND.get_or_init(|| {
        let mut b = LlamaBackend::init().expect("llama.cpp backend initialises once per process");
        if std::env::var_os("TRIDENT_LLAMA_LOGS").is_none() {
            b.void_logs();
        }
        b
    })
}

fn load(path: &Path) -> LlamaModel {
    LlamaModel::load_from_file(backend(), path, &LlamaModelParams::default())
        .unwrap_or_else(|e| panic!("llama.cpp refused {}: {e} (rerun with TRIDENT_LLAMA_LOGS=1)", path.display()))
}

/// Logits after evaluating `tokens` (last position), then `steps` greedy tokens; returns the
/// first logits row and the generated ids. Every logits row is checked to be finite.
fn run(model: &LlamaModel, tokens: &[LlamaToken], steps: usize, lora: Option<(&mut llama_cpp_2::model::LlamaLoraAdapter, f32)>) -> (Vec<f32>, Vec<i32>) {
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(256))
        .with_n_batch(256)
        .with_n_threads(2)
        .with_n_threads_batch(2);
    let mut ctx = model.new_context(backend(), params).expect("context");
    if let Some((adapter, scale)) = lora {
        ctx.lora_adapter_set(adapter, scale).expect("lora_adapter_set");
    }
    let mut batch = LlamaBatch::new(256, 1);
    let last = tokens.len() - 1;
    for (i, t) in tokens.iter().enumerate() {
        batch.add(*t, i as i32, &[0], i == last).unwrap();
    }
    ctx.decode(&mut batch).expect("decode prompt");
    let n_vocab = model.n_vocab() as usize;
    let first = ctx.get_logits_ith(batch.n_tokens() - 1).to_vec();
    assert_eq!(first.len(), n_vocab);
    let mut logits = first.clone();
    let mut generated = Vec::new();
    let mut pos = tokens.len() as i32;
    for _ in 0..steps {
        assert!(logits.iter().all(|x| x.is_finite()), "non-finite logits");
        let next = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as i32)
            .unwrap();
        generated.push(next);
        batch.clear();
        batch.add(LlamaToken(next), pos, &[0], true).unwrap();
        pos += 1;
        ctx.decode(&mut batch).expect("decode step");
        logits = ctx.get_logits_ith(0).to_vec();
    }
    assert!(logits.iter().all(|x| x.is_finite()));
    (first, generated)
}

fn check_family(family: Family) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("tiny-{family}.gguf"));
    let tiny = write_tiny_model(family, &path, 1234).unwrap();
    let info = inspect(&path).unwrap();
    assert_eq!(info.family(), Some(family));

    let model = load(&path);
    assert_eq!(model.n_vocab() as usize, tiny.vocab_size);
    assert_eq!(model.n_layer(), 2);
    assert_eq!(model.n_embd(), 64);
    let vocab = model.vocab();
    assert_eq!(vocab.bos().0 as u32, tiny.bos_token_id);
    assert_eq!(vocab.eos().0 as u32, tiny.eos_token_id);
    assert!(vocab.is_eog(LlamaToken(tiny.eot_token_id as i32)), "{family}: end-of-turn token is end-of-generation");

    // Tokenize: mixed English / Russian round-trips; BOS only where the family adds it.
    let text = "Hello world, привет мир! The pass\u{2011}word is 42.";
    let ids = vocab.tokenize(text.as_bytes(), true, false);
    assert!(!ids.is_empty());
    let adds_bos = matches!(family, Family::Llama | Family::Gemma3);
    assert_eq!(ids[0].0 as u32 == tiny.bos_token_id, adds_bos, "{family}: BOS handling, ids {ids:?}");
    let body: Vec<LlamaToken> = ids.iter().copied().filter(|t| t.0 as u32 != tiny.bos_token_id).collect();
    let back = String::from_utf8(vocab.detokenize(&body, false, false)).unwrap();
    assert_eq!(back, text, "{family}: detokenize(tokenize(text)) == text");
    // Known pieces become single tokens, fewer tokens than bytes.
    assert!(body.len() < text.len(), "{family}: {} tokens for {} bytes", body.len(), text.len());

    // Special tokens parse as one id each when parse_special is on.
    let (marker, marker_id) = tiny
        .special_tokens
        .iter()
        .find(|(s, _)| s.contains("start"))
        .cloned()
        .expect("every family has a turn-start token");
    let special = vocab.tokenize(format!("{marker}user").as_bytes(), false, true);
    assert_eq!(special[0].0 as u32, marker_id, "{family}: {marker} parsed as a special token");

    // Run: prompt + 6 greedy steps, logits finite, and they depend on the weights.
    let (logits, generated) = run(&model, &ids, 6, None);
    assert_eq!(generated.len(), 6);
    let spread = logits.iter().cloned().fold(f32::MIN, f32::max) - logits.iter().cloned().fold(f32::MAX, f32::min);
    assert!(spread > 1e-3, "{family}: logits are not constant (spread {spread})");

    let other = dir.path().join("other.gguf");
    write_tiny_model(family, &other, 99).unwrap();
    let (logits2, _) = run(&load(&other), &ids, 0, None);
    let diff = logits.iter().zip(&logits2).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff > 1e-3, "{family}: a different seed gives different logits");

    // The all-F32 variant loads and runs too.
    let f32_path = dir.path().join("f32.gguf");
    write_tiny_model_with(family, &f32_path, 1234, &TinyConfig::for_family(family).all_f32()).unwrap();
    run(&load(&f32_path), &ids, 2, None);
}

#[test]
fn tiny_qwen2_runs_in_llama_cpp() {
    check_family(Family::Qwen2);
}

#[test]
fn tiny_qwen3_runs_in_llama_cpp() {
    check_family(Family::Qwen3);
}

#[test]
fn tiny_llama_runs_in_llama_cpp() {
    check_family(Family::Llama);
}

#[test]
fn tiny_gemma3_runs_in_llama_cpp() {
    check_family(Family::Gemma3);
}

fn random_pair(rng: &mut rand_chacha::ChaCha8Rng, base: &str, rank: usize, n_in: usize, n_out: usize) -> LoraTensorPair {
    LoraTensorPair {
        base: base.to_string(),
        rank,
        in_features: n_in,
        out_features: n_out,
        a: (0..rank * n_in).map(|_| rng.random_range(-0.5f32..0.5)).collect(),
        b: (0..n_out * rank).map(|_| rng.random_range(-0.5f32..0.5)).collect(),
    }
}

#[test]
fn lora_adapter_loads_in_llama_cpp_and_changes_logits() {
    let dir = tempfile::tempdir().unwrap();
    let base_path = dir.path().join("base.gguf");
    write_tiny_model(Family::Qwen2, &base_path, 5).unwrap();
    let base = inspect(&base_path).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut pairs = Vec::new();
    for l in 0..2 {
        for (name, n_in, n_out) in [("attn_q", 64, 64), ("attn_v", 64, 32), ("ffn_down", 128, 64), ("ffn_up", 64, 128)] {
            pairs.push(random_pair(&mut rng, &format!("blk.{l}.{name}.weight"), 4, n_in, n_out));
        }
    }
    let spec = LoraAdapterSpec {
        architecture: "qwen2".into(),
        alpha: 8.0,
        name: Some("test adapter".into()),
        dtype: GgmlType::F32,
        tensors: pairs,
    };
    let adapter_path = dir.path().join("adapter.gguf");
    write_lora_adapter(&adapter_path, &spec).unwrap();
    let info = inspect_adapter_against(&adapter_path, &base).unwrap();
    assert!(info.is_lora_adapter);
    assert_eq!(info.lora_alpha, Some(8.0));
    assert_eq!(info.tensor_count, 16);

    let mut model = load(&base_path);
    let ids = model.vocab().tokenize("Hello world".as_bytes(), true, false);
    let (base_logits, _) = run(&model, &ids, 0, None);
    let mut adapter = model.lora_adapter_init(&adapter_path).expect("llama.cpp accepts the adapter");
    let (lora_logits, _) = run(&model, &ids, 2, Some((&mut adapter, 1.0)));
    let diff = base_logits.iter().zip(&lora_logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff > 1e-2, "adapter changes the logits (max diff {diff})");
    let (zero_logits, _) = run(&model, &ids, 0, Some((&mut adapter, 0.0)));
    let diff0 = base_logits.iter().zip(&zero_logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff0 < 1e-4, "scale 0 gives the base logits (max diff {diff0})");

    // F16 adapters load too.
    let f16_path = dir.path().join("adapter-f16.gguf");
    write_lora_adapter(&f16_path, &LoraAdapterSpec { dtype: GgmlType::F16, ..spec }).unwrap();
    inspect_adapter_against(&f16_path, &base).unwrap();
    model.lora_adapter_init(&f16_path).expect("llama.cpp accepts the F16 adapter");
}

#[test]
fn wrong_adapters_are_rejected_before_llama_cpp_and_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let base_path = dir.path().join("base.gguf");
    write_tiny_model(Family::Llama, &base_path, 5).unwrap();
    let base = inspect(&base_path).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    let mut model = load(&base_path);

    let cases: Vec<(&str, LoraAdapterSpec)> = vec![
        (
            "n_in + 1",
            LoraAdapterSpec {
                architecture: "llama".into(),
                alpha: 4.0,
                name: None,
                dtype: GgmlType::F32,
                tensors: vec![random_pair(&mut rng, "blk.0.attn_q.weight", 2, 65, 64)],
            },
        ),
        (
            "n_out swapped",
            LoraAdapterSpec {
                architecture: "llama".into(),
                alpha: 4.0,
                name: None,
                dtype: GgmlType::F32,
                tensors: vec![random_pair(&mut rng, "blk.0.ffn_down.weight", 2, 64, 128)],
            },
        ),
        (
            "missing target",
            LoraAdapterSpec {
                architecture: "llama".into(),
                alpha: 4.0,
                name: None,
                dtype: GgmlType::F32,
                tensors: vec![random_pair(&mut rng, "blk.7.attn_q.weight", 2, 64, 64)],
            },
        ),
        (
            "other architecture",
            LoraAdapterSpec {
                architecture: "qwen2".into(),
                alpha: 4.0,
                name: None,
                dtype: GgmlType::F32,
                tensors: vec![random_pair(&mut rng, "blk.0.attn_q.weight", 2, 64, 64)],
            },
        ),
    ];
    for (what, spec) in cases {
        let p = dir.path().join(format!("{}.gguf", what.replace(' ', "_")));
        write_lora_adapter(&p, &spec).unwrap();
        let err = inspect_adapter_against(&p, &base).unwrap_err();
        assert!(matches!(err, GgufError::AdapterMismatch { .. }), "{what}: {err}");
        assert!(err.is_user_error());
        println!("{what}: {err}");
        // llama.cpp agrees (it returns an error for these; it does not abort).
        assert!(model.lora_adapter_init(&p).is_err(), "{what}: llama.cpp rejects it too");
    }

    // A model is not an adapter.
    let err = inspect_adapter_against(&base_path, &base).unwrap_err();
    assert!(err.to_string().contains("not a LoRA adapter"), "{err}");
}
