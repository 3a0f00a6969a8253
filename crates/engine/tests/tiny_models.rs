//! Tests on tiny random-weight models of every supported family, written by the tests
//! themselves (`trident_gguf::testing`), so they need no download.

use std::path::{Path, PathBuf};

use trident_engine::{
    AdapterRef, Backend, ChatMessage, EngineError, FinishReason, GenerateRequest, LlamaBackend,
    LlamaConfig, SamplingParams,
};
use trident_gguf::testing::{TinyModel, write_tiny_model};
use trident_gguf::{Family, LoraAdapterSpec, LoraTensorPair, GgmlType};

fn tiny(family: Family, dir: &Path) -> (TinyModel, PathBuf) {
    let path = dir.join(format!("tiny-{}.gguf", family.architecture()));
    let m = write_tiny_model(family, &path, 7).expect("tiny model written");
    (m, path)
}

fn load(path: &Path, n_seq: usize) -> LlamaBackend {
    LlamaBackend::load(path, &LlamaConfig::default().with_ctx(256).with_seqs(n_seq).with_threads(1))
        .expect("tiny model loads")
}

#[test]
fn every_family_loads_and_generates() {
    let dir = tempfile::tempdir().unwrap();
    for family in Family::ALL {
        let (m, path) = tiny(family, dir.path());
        let b = load(&path, 2);
        assert_eq!(b.info().architecture, family.architecture());
        assert_eq!(b.info().n_vocab, m.vocab_size);
        assert!(b.info().has_chat_template, "{family:?}");
        // Template from the GGUF renders through minijinja.
        let text = b.render_chat(&[ChatMessage::user("hi")], true).unwrap();
        assert!(text.contains("hi"), "{family:?}: {text}");
        // Greedy generation, no EOS stop, exact length; deterministic.
        let req = GenerateRequest { ignore_eos: true, ..GenerateRequest::text("hello world").with_max_tokens(10) };
        let g = b.generate(&req, None).unwrap();
        assert_eq!(g.tokens.len(), 10, "{family:?}");
        assert_eq!(g.finish_reason, FinishReason::Length);
        assert_eq!(b.generate(&req, None).unwrap().tokens, g.tokens, "{family:?}");
        // Chat prompt path.
        let c = b.generate(&GenerateRequest::chat(vec![ChatMessage::user("hi")]).with_max_tokens(4), None).unwrap();
        assert!(c.usage.prompt_tokens > 2);
        // BOS handling follows the model's rule.
        let with = b.tokenize("hello", true, false).unwrap();
        let without = b.tokenize("hello", false, false).unwrap();
        if b.info().add_bos {
            assert_eq!(with[0], m.bos_token_id, "{family:?}");
            assert_eq!(&with[1..], &without[..]);
        } else {
            assert_eq!(with, without);
        }
        assert!(b.is_eog(m.eot_token_id) || b.is_eog(m.eos_token_id), "{family:?}");
    }
}

#[test]
fn batched_equals_sequential_on_tiny_models() {
    let dir = tempfile::tempdir().unwrap();
    for family in [Family::Qwen2, Family::Gemma3] {
        let (_, path) = tiny(family, dir.path());
        let b = load(&path, 4);
        let prompts = ["a b c", "hello world", "the quick brown fox", "zzz"];
        let reqs: Vec<_> = prompts
            .iter()
            .map(|p| GenerateRequest { ignore_eos: true, ..GenerateRequest::text(*p).with_max_tokens(12) })
            .collect();
        let seq: Vec<_> = reqs.iter().map(|r| b.generate(r, None).unwrap().tokens).collect();
        let fresh = load(&path, 4);
        let bat: Vec<_> = fresh.generate_batch(&reqs).into_iter().map(|r| r.unwrap().tokens).collect();
        assert_eq!(bat, seq, "{family:?}");
    }
}

#[test]
fn seeded_sampling_and_prefix_reuse_on_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = tiny(Family::Llama, dir.path());
    let b = load(&path, 1);
    let s = SamplingParams { temperature: 1.0, seed: Some(3), ..Default::default() };
    let req = GenerateRequest { ignore_eos: true, ..GenerateRequest::text("one two three").with_max_tokens(16).with_sampling(s) };
    let a = b.generate(&req, None).unwrap();
    let c = b.generate(&req, None).unwrap();
    assert_eq!(a.tokens, c.tokens);
    assert!(c.usage.cached_tokens > 0, "second request reuses the prompt: {:?}", c.usage);
    // The prompt extended by the first reply: everything before is cached.
    let mut ext = b.tokenize("one two three", true, false).unwrap();
    ext.extend(&a.tokens);
    let d = b.generate(&GenerateRequest::tokens(ext.clone()).with_max_tokens(2), None).unwrap();
    assert!(d.usage.cached_tokens >= ext.len() - a.tokens.len(), "{:?}", d.usage);
    // Clearing drops the idle slot's cache: the same request then starts from nothing and
    // still gives the same tokens.
    let dropped = b.clear_prefix_cache().unwrap();
    assert!(dropped >= ext.len() - 1, "dropped {dropped} of {}", ext.len());
    assert_eq!(b.clear_prefix_cache().unwrap(), 0, "nothing left to drop");
    let e = b.generate(&req, None).unwrap();
    assert_eq!(e.usage.cached_tokens, 0, "{:?}", e.usage);
    assert_eq!(e.tokens, a.tokens);
}

#[test]
fn context_overflow_names_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = tiny(Family::Qwen2, dir.path());
    let b = load(&path, 1);
    let err = b.generate(&GenerateRequest::tokens(vec![1; 300]), None).unwrap_err();
    match &err {
        EngineError::ContextOverflow { prompt_tokens, limit } => assert_eq!((*prompt_tokens, *limit), (300, 256)),
        other => panic!("{other}"),
    }
    assert!(err.is_user_error());
    let err = b.generate(&GenerateRequest::tokens(vec![u32::MAX - 1]), None).unwrap_err();
    assert!(matches!(err, EngineError::InvalidRequest { .. }), "{err}");
    let err = b.generate(&GenerateRequest::tokens(vec![]), None).unwrap_err();
    assert!(matches!(err, EngineError::InvalidRequest { .. }), "{err}");
}

#[test]
fn bad_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LlamaConfig::default().with_ctx(64);
    let missing = dir.path().join("missing.gguf");
    assert!(matches!(LlamaBackend::load(&missing, &cfg), Err(EngineError::FileNotFound { .. })));
    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(LlamaBackend::load(&empty, &cfg), Err(EngineError::InvalidGguf { .. })));
    let text = dir.path().join("notes.gguf");
    std::fs::write(&text, "just some text, definitely not a model").unwrap();
    assert!(matches!(LlamaBackend::load(&text, &cfg), Err(EngineError::InvalidGguf { .. })));
    let (_, path) = tiny(Family::Qwen2, dir.path());
    let bytes = std::fs::read(&path).unwrap();
    for cut in [bytes.len() / 2, bytes.len() - 1, 100] {
        let t = dir.path().join(format!("trunc{cut}.gguf"));
        std::fs::write(&t, &bytes[..cut]).unwrap();
        let e = LlamaBackend::load(&t, &cfg).unwrap_err();
        assert!(matches!(e, EngineError::InvalidGguf { .. }), "{e}");
        assert!(e.is_user_error());
    }
}

/// A random adapter on layer 0's q and down projections.
fn write_adapter(base: &Path, arch: &str, path: &Path, seed: u32) {
    let info = trident_gguf::inspect(base).unwrap();
    let mut tensors = Vec::new();
    let mut x = seed.wrapping_mul(2654435761).max(1);
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        (x as f32 / u32::MAX as f32) - 0.5
    };
    for name in ["blk.0.attn_q.weight", "blk.0.ffn_down.weight"] {
        let t = info.tensor(name).expect("base tensor");
        let (n_in, n_out) = (t.shape[0] as usize, t.shape[1] as usize);
        let r = 4;
        tensors.push(LoraTensorPair {
            base: name.into(),
            rank: r,
            in_features: n_in,
            out_features: n_out,
            a: (0..r * n_in).map(|_| rnd()).collect(),
            b: (0..n_out * r).map(|_| rnd()).collect(),
        });
    }
    let spec = LoraAdapterSpec { architecture: arch.into(), alpha: 8.0, name: None, dtype: GgmlType::F32, tensors };
    trident_gguf::write_lora_adapter(path, &spec).unwrap();
}

#[test]
fn lora_adapters_per_request_without_reloading() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = tiny(Family::Qwen2, dir.path());
    let a1 = dir.path().join("a1.gguf");
    let a2 = dir.path().join("a2.gguf");
    write_adapter(&path, "qwen2", &a1, 1);
    write_adapter(&path, "qwen2", &a2, 2);
    let b = load(&path, 2);
    let ctx = b.tokenize("hello world and more", true, false).unwrap();
    let base = b.next_token_logprobs(&ctx, None).unwrap();
    b.load_adapter("one", &a1).unwrap();
    b.load_adapter("two", &a2).unwrap();
    assert_eq!(b.adapters(), vec!["one".to_string(), "two".to_string()]);
    let with1 = b.next_token_logprobs(&ctx, Some(&AdapterRef::new("one", 1.0))).unwrap();
    let with2 = b.next_token_logprobs(&ctx, Some(&AdapterRef::new("two", 1.0))).unwrap();
    let half1 = b.next_token_logprobs(&ctx, Some(&AdapterRef::new("one", 0.5))).unwrap();
    let maxdiff = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(maxdiff(&base, &with1) > 1e-3, "adapter changes the logits");
    assert!(maxdiff(&with1, &with2) > 1e-3, "different adapters differ");
    assert!(maxdiff(&with1, &half1) > 1e-4, "scale matters");
    // Back to the base: bit-identical.
    let again = b.next_token_logprobs(&ctx, None).unwrap();
    assert_eq!(again, base);
    // Scale 0 is the base model.
    let zero = b.next_token_logprobs(&ctx, Some(&AdapterRef::new("one", 0.0))).unwrap();
    assert_eq!(zero, base);
    // The adapter's cache is kept apart from the base's: same result again with the adapter.
    let with1_again = b.next_token_logprobs(&ctx, Some(&AdapterRef::new("one", 1.0))).unwrap();
    assert!(maxdiff(&with1, &with1_again) < 1e-4);
    // Generation under an adapter, mixed with base requests in one batch call.
    let reqs = vec![
        GenerateRequest { ignore_eos: true, ..GenerateRequest::text("hello").with_max_tokens(6) },
        GenerateRequest {
            ignore_eos: true,
            adapters: vec![AdapterRef::new("one", 1.0)],
            ..GenerateRequest::text("hello").with_max_tokens(6)
        },
    ];
    let out = b.generate_batch(&reqs);
    assert!(out.iter().all(|r| r.is_ok()));
    // Errors: unknown adapter, duplicate name, missing file, adapter for another architecture.
    let e = b.next_token_logprobs(&ctx, Some(&AdapterRef::new("nope", 1.0))).unwrap_err();
    assert!(matches!(e, EngineError::UnknownAdapter { .. }), "{e}");
    assert!(b.load_adapter("one", &a1).is_err());
    let e = b.load_adapter("x", &dir.path().join("missing.gguf")).unwrap_err();
    assert!(matches!(e, EngineError::Adapter { .. }) && e.is_user_error(), "{e}");
    let (_, llama_path) = tiny(Family::Llama, dir.path());
    let foreign = dir.path().join("foreign.gguf");
    write_adapter(&llama_path, "llama", &foreign, 3);
    assert!(b.load_adapter("foreign", &foreign).is_err());
    // A model file is not an adapter and vice versa.
    assert!(b.load_adapter("model", &path).is_err());
    assert!(LlamaBackend::load(&a1, &LlamaConfig::default()).is_err());
}

#[test]
fn score_agrees_with_next_token_distribution() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = tiny(Family::Llama, dir.path());
    let b = load(&path, 2);
    let tokens = b.tokenize("one two three four five six", true, false).unwrap();
    let scored = b.score(&tokens, 5, None).unwrap();
    assert_eq!(scored.len(), tokens.len());
    for (i, s) in scored.iter().enumerate() {
        assert_eq!(s.position, i);
        assert_eq!(s.top.len(), 5);
        assert!(s.top.windows(2).all(|w| w[0].logprob >= w[1].logprob));
        // The log-prob of the token that really follows, from the same row.
        match tokens.get(i + 1) {
            Some(&next) => {
                let lp = s.next_logprob.expect("a next token");
                assert!(lp <= 0.0);
                if let Some(t) = s.top.iter().find(|t| t.token == next) {
                    assert!((t.logprob - lp).abs() < 1e-5);
                }
            }
            None => assert!(s.next_logprob.is_none()),
        }
        // Position by position, the incremental distribution picks the same best token with
        // (nearly) the same log-prob: one pass and many passes compute the same model.
        let row = b.next_token_logprobs(&tokens[..=i], None).unwrap();
        let best = trident_engine::sampling::argmax(&row).unwrap();
        assert!((row[best as usize] - s.top[0].logprob).abs() < 1e-2, "position {i}");
    }
    assert!(b.score(&[], 5, None).is_err());
    let over: Vec<u32> = std::iter::repeat_n(tokens[1], 300).collect();
    assert!(matches!(b.score(&over, 1, None), Err(EngineError::ContextOverflow { .. })));
}
