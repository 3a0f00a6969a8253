use super::*;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use trident_engine::{AdapterRef, Backend, GenerateRequest, LlamaBackend, LlamaConfig, SamplingParams};
use trident_gguf::testing::{write_tiny_model_with, TinyConfig};
use trident_gguf::Family;
use trident_nn::{LoadOptions, LoraConfig};

fn tiny(dir: &Path, file: &str, family: Family, seed: u64, f32_weights: bool) -> PathBuf {
    let p = dir.join(file);
    let mut cfg = TinyConfig::for_family(family);
    if f32_weights {
        cfg = cfg.all_f32();
    }
    write_tiny_model_with(family, &p, seed, &cfg).unwrap();
    p
}

/// An adapter with random A and B (B scaled by `b_scale`) for `base`, shaped by the model code.
fn random_adapter(base: &Path, targets: &[LoraTarget], rank: usize, seed: u64, b_scale: f32) -> Adapter {
    let lc = LoraConfig { rank, alpha: 2.0 * rank as f64, dropout: 0.0, targets: targets.to_vec(), init_seed: 1 };
    let m = trident_nn::load_model(base, &LoadOptions { lora: Some(lc), ..Default::default() }).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut tensors = BTreeMap::new();
    for (name, var) in m.lora_vars() {
        let (r, c) = var.as_tensor().dims2().unwrap();
        let s = if name.contains("lora_B") { b_scale } else { 0.3 };
        let data = (0..r * c).map(|_| rng.random_range(-1.0f32..1.0) * s).collect();
        tensors.insert(name, LoraMatrix { shape: [r, c], data });
    }
    let info = trident_gguf::inspect(base).unwrap();
    Adapter {
        config: PeftConfig::new(rank, 2.0 * rank as f64, 0.0, targets, "tiny.gguf"),
        meta: TridentMeta {
            format: 1,
            name: String::new(),
            version: 0,
            created: String::new(),
            source: "trained".into(),
            base: BaseRef { path: base.display().to_string(), sha256: file_sha256(base).unwrap(), architecture: info.architecture },
            dataset: None,
            hyper: None,
            heldout: None,
            training: None,
            imported_from: None,
            tool_version: "test".into(),
        },
        tensors,
    }
}

#[test]
fn spec_parsing() {
    let p = AdapterSpec::parse("support-tone@3:0.5").unwrap();
    assert_eq!((p.name.as_str(), p.version, p.scale), ("support-tone", Some(3), Some(0.5)));
    assert_eq!(AdapterSpec::parse("a@v2").unwrap().version, Some(2));
    assert_eq!(AdapterSpec::parse("a:2").unwrap(), AdapterSpec { name: "a".into(), version: None, scale: Some(2.0) });
    assert_eq!(AdapterSpec::parse("/tmp/x.gguf").unwrap().name, "/tmp/x.gguf");
    for bad in ["", "@3", "a@x", "a@0", "a:zz"] {
        assert!(AdapterSpec::parse(bad).unwrap_err().is_user_error(), "{bad}");
    }
    assert!(validate_name("ok-name_1.2").is_ok());
    assert!(validate_name("../x").is_err() && validate_name(".hidden").is_err());
    assert_eq!(
        parse_peft_name("base_model.model.model.layers.12.mlp.down_proj.lora_B.weight"),
        Some((12, LoraTarget::Down, Half::B))
    );
    assert_eq!(parse_peft_name("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"), Some((0, LoraTarget::Q, Half::A)));
    assert_eq!(parse_peft_name("base_model.model.lm_head.lora_A.weight"), None);
    assert_eq!(parse_peft_name("base_model.model.model.layers.0.mlp.q_proj.lora_A.weight"), None);
}

#[test]
fn save_then_load_round_trips_bit_exactly_with_versions() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny(dir.path(), "base.gguf", Family::Qwen2, 1, false);
    let store = AdapterStore::new(dir.path());
    let mut a = random_adapter(&base, &LoraTarget::ALL, 4, 9, 0.1);
    // Values that would not survive a lossy format.
    let first = a.tensors.keys().next().unwrap().clone();
    a.tensors.get_mut(&first).unwrap().data[0] = f32::from_bits(0x3f80_0001);
    a.tensors.get_mut(&first).unwrap().data[1] = 1e-42; // subnormal
    let v1 = store.save("tone", &mut a, &[]).unwrap();
    let v2 = store.save("tone", &mut a.clone(), &[]).unwrap();
    assert_eq!((v1.version, v2.version), (1, 2));
    let back = Adapter::read_dir(&v1.dir).unwrap();
    assert_eq!(back.tensors.len(), a.tensors.len());
    for (n, m) in &a.tensors {
        let b = &back.tensors[n];
        assert_eq!(m.shape, b.shape);
        assert!(m.data.iter().zip(&b.data).all(|(x, y)| x.to_bits() == y.to_bits()), "{n}");
    }
    a.meta.version = 1;
    a.meta.created = back.meta.created.clone();
    assert_eq!(back.meta, a.meta);
    assert_eq!(back.config, a.config);
    // PEFT layout on disk.
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(v1.dir.join(CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["task_type"], "CAUSAL_LM");
    assert_eq!(cfg["r"], 4);
    assert_eq!(cfg["target_modules"][0], "q_proj");
    let bytes = std::fs::read(v1.dir.join(TENSORS_FILE)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight").unwrap();
    assert_eq!(t.shape(), &[4, 64]);
    assert_eq!(st.tensor("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight").unwrap().shape(), &[64, 4]);
    // Store queries.
    assert_eq!(store.find(&AdapterSpec::parse("tone").unwrap()).unwrap().version, 2);
    assert_eq!(store.find(&AdapterSpec::parse("tone@1").unwrap()).unwrap().version, 1);
    let e = store.find(&AdapterSpec::parse("tone@7").unwrap()).unwrap_err();
    assert!(e.is_user_error() && e.to_string().contains("tone@1"), "{e}");
    assert_eq!(store.list().unwrap().len(), 2);
    assert_eq!(store.remove("tone", Some(1)).unwrap(), vec![1]);
    assert_eq!(store.versions("tone").unwrap(), vec![2]);
    assert_eq!(store.remove("tone", None).unwrap(), vec![2]);
    assert!(store.list().unwrap().is_empty());
    // The same tensors load into the training model code unchanged.
    let lc = LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0, targets: LoraTarget::ALL.to_vec(), init_seed: 0 };
    let mut m = trident_nn::load_model(&base, &LoadOptions { lora: Some(lc), ..Default::default() }).unwrap();
    m.load_lora(&back.to_tensors().unwrap()).unwrap();
    for (n, v) in m.lora_vars() {
        let got: Vec<f32> = v.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        assert!(got.iter().zip(&back.tensors[&n].data).all(|(x, y)| x.to_bits() == y.to_bits()), "{n}");
    }
}

#[test]
fn broken_adapters_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny(dir.path(), "base.gguf", Family::Qwen2, 1, false);
    let store = AdapterStore::new(dir.path());
    let mut a = random_adapter(&base, &[LoraTarget::Q, LoraTarget::V], 2, 3, 0.1);
    let v = store.save("x", &mut a, &[]).unwrap();
    let tpath = v.dir.join(TENSORS_FILE);
    let bytes = std::fs::read(&tpath).unwrap();

    let expect_bad = |what: &str| {
        let e = Adapter::read_dir(&v.dir).unwrap_err();
        assert!(matches!(e, LoraError::BadAdapter { .. }) && e.is_user_error(), "{what}: {e}");
        e.to_string()
    };
    std::fs::write(&tpath, &bytes[..bytes.len() - 10]).unwrap();
    let msg = expect_bad("truncated");
    assert!(msg.contains("adapter_model.safetensors"), "{msg}");
    std::fs::write(&tpath, &bytes[..20]).unwrap();
    expect_bad("truncated header");
    std::fs::write(&tpath, &bytes).unwrap();
    Adapter::read_dir(&v.dir).unwrap();

    let cpath = v.dir.join(CONFIG_FILE);
    let cfg = std::fs::read_to_string(&cpath).unwrap();
    std::fs::write(&cpath, cfg.replace("\"r\": 2", "\"r\": 0")).unwrap();
    assert!(expect_bad("rank 0").contains("r is 0"));
    std::fs::write(&cpath, cfg.replace("\"r\": 2", "\"r\": 3")).unwrap();
    assert!(expect_bad("rank mismatch").contains("rank 2"));
    std::fs::write(&cpath, cfg.replace("\"q_proj\"", "\"lm_head\"")).unwrap();
    assert!(expect_bad("unknown target").contains("lm_head"));
    std::fs::write(&cpath, cfg.replace("\"v_proj\"", "\"o_proj\"")).unwrap();
    assert!(expect_bad("tensor outside targets").contains("v_proj"));
    std::fs::write(&cpath, "{not json").unwrap();
    expect_bad("bad json");
    std::fs::remove_file(&cpath).unwrap();
    expect_bad("missing config");
}

#[test]
fn adapters_for_another_base_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny(dir.path(), "base.gguf", Family::Qwen2, 1, false);
    let other_weights = tiny(dir.path(), "other.gguf", Family::Qwen2, 2, false);
    let llama = tiny(dir.path(), "llama.gguf", Family::Llama, 1, false);
    let wider = dir.path().join("wide.gguf");
    let mut wc = TinyConfig::for_family(Family::Qwen2);
    wc.hidden = 128;
    wc.head_dim = 32;
    write_tiny_model_with(Family::Qwen2, &wider, 1, &wc).unwrap();
    let store = AdapterStore::new(dir.path());
    let mut a = random_adapter(&base, &LoraTarget::ALL, 2, 3, 0.1);
    store.save("x", &mut a, &[]).unwrap();
    resolve_adapter(dir.path(), "x", &base).unwrap();
    for (b, needle) in [(&other_weights, "SHA-256"), (&llama, "architecture"), (&wider, "shape")] {
        let e = resolve_adapter(dir.path(), "x@1:0.5", b).unwrap_err();
        assert!(matches!(e, LoraError::WrongBase { .. }) && e.is_user_error(), "{e}");
        assert!(e.to_string().contains(needle), "{e}");
    }
    // Without a recorded hash (an imported adapter) the shapes still decide.
    let peft = dir.path().join("peft");
    let mut plain = a.clone();
    plain.meta.base.sha256.clear();
    plain.write_dir(&peft, &[]).unwrap();
    std::fs::remove_file(peft.join(META_FILE)).unwrap();
    let e = store.import(&peft, "imp", &wider).unwrap_err();
    assert!(matches!(e, LoraError::WrongBase { .. }), "{e}");
    assert!(store.versions("imp").unwrap().is_empty(), "nothing stored on a failed import");
    let e = resolve_adapter(dir.path(), "nope", &base).unwrap_err();
    assert!(matches!(e, LoraError::UnknownAdapter { .. }) && e.to_string().contains("x@1"), "{e}");
}

#[test]
fn peft_directories_import_with_half_precision_and_new_versions() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny(dir.path(), "base.gguf", Family::Qwen3, 1, false);
    let a = random_adapter(&base, &[LoraTarget::Q, LoraTarget::Down], 2, 5, 0.1);
    // A PEFT directory as `save_pretrained` writes it: bf16 tensors, no trident.json.
    let peft = dir.path().join("support-tone");
    std::fs::create_dir(&peft).unwrap();
    let cfg = serde_json::json!({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 2, "lora_alpha": 4, "lora_dropout": 0.05,
        "target_modules": ["down_proj", "q_proj"], "base_model_name_or_path": "Qwen/Qwen3-tiny",
        "bias": "none", "fan_in_fan_out": false, "inference_mode": true, "revision": null, "modules_to_save": null
    });
    std::fs::write(peft.join(CONFIG_FILE), serde_json::to_vec(&cfg).unwrap()).unwrap();
    let owned: Vec<(String, Vec<u8>, Vec<usize>)> = a
        .tensors
        .iter()
        .map(|(n, m)| (n.clone(), m.data.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect(), m.shape.to_vec()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, b, s)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(peft.join(TENSORS_FILE), safetensors::serialize(views, None).unwrap()).unwrap();

    let store = AdapterStore::new(dir.path());
    let v1 = store.import(&peft, "support-tone", &base).unwrap();
    let v2 = store.import(&peft, "support-tone", &base).unwrap();
    assert_eq!((v1.version, v2.version), (1, 2));
    let got = Adapter::read_dir(&v1.dir).unwrap();
    assert_eq!(got.meta.source, "imported");
    assert_eq!(got.meta.base.sha256, file_sha256(&base).unwrap());
    assert_eq!(got.config.lora_alpha, 4.0);
    assert_eq!(got.config.extra.get("revision"), Some(&serde_json::Value::Null), "unknown PEFT fields are kept");
    for (n, m) in &a.tensors {
        let want: Vec<f32> = m.data.iter().map(|v| half::bf16::from_f32(*v).to_f32()).collect();
        assert_eq!(got.tensors[n].data, want, "{n}");
    }
    let r = resolve_adapter(dir.path(), "support-tone@1:0.25", &base).unwrap();
    assert_eq!((r.key.as_str(), r.scale), ("support-tone@1", 0.25));
    assert!(r.gguf.is_file());
    // The export is cached: a second resolve reuses it.
    let mtime = std::fs::metadata(&r.gguf).unwrap().modified().unwrap();
    let r2 = resolve_adapter(dir.path(), "support-tone@1", &base).unwrap();
    assert_eq!(std::fs::metadata(&r2.gguf).unwrap().modified().unwrap(), mtime);
}

fn greedy(prompt: &str, adapter: Option<&str>) -> GenerateRequest {
    let mut r = GenerateRequest::text(prompt).with_max_tokens(12).with_sampling(SamplingParams::greedy());
    r.ignore_eos = true;
    r.adapters = adapter.map(|a| AdapterRef::new(a, 1.0)).into_iter().collect();
    r
}

/// Exported GGUF-LoRA files load in llama.cpp, change its next-token distribution the way the
/// training model code says they should, and several resident adapters are applied per request:
/// concurrent and batched requests each get their own adapter's output, equal to sequential runs.
#[test]
fn exported_adapters_load_in_the_engine_and_switch_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny(dir.path(), "base.gguf", Family::Qwen2, 11, true);
    let store = AdapterStore::new(dir.path());
    let mut a = random_adapter(&base, &LoraTarget::ALL, 4, 21, 0.5);
    let mut b = random_adapter(&base, &[LoraTarget::V, LoraTarget::Up], 4, 22, 0.8);
    store.save("alpha", &mut a, &[]).unwrap();
    store.save("beta", &mut b, &[]).unwrap();
    let ra = resolve_adapter(dir.path(), "alpha", &base).unwrap();
    let rb = resolve_adapter(dir.path(), "beta", &base).unwrap();

    let be = Arc::new(LlamaBackend::load(&base, &LlamaConfig { n_ctx: 128, n_seq: 4, threads: 1, ..Default::default() }).unwrap());
    be.load_adapter(&ra.key, &ra.gguf).unwrap();
    be.load_adapter(&rb.key, &rb.gguf).unwrap();

    // llama.cpp with the adapter ≈ the training model code with the same tensors.
    let ids = be.tokenize("hello world, this is", true, false).unwrap();
    let lc = LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0, targets: LoraTarget::ALL.to_vec(), init_seed: 0 };
    let mut m = trident_nn::load_model(&base, &LoadOptions { lora: Some(lc), ..Default::default() }).unwrap();
    m.load_lora(&a.to_tensors().unwrap()).unwrap();
    let x = candle_core::Tensor::from_slice(&ids, (1, ids.len()), &candle_core::Device::Cpu).unwrap();
    let logits = m.forward(&x, false).unwrap().squeeze(0).unwrap();
    let last = logits.get(ids.len() - 1).unwrap();
    let ours: Vec<f32> = candle_nn::ops::log_softmax(&last, 0).unwrap().to_vec1().unwrap();
    m.set_lora_scale(0.0);
    let base_last = m.forward(&x, false).unwrap().squeeze(0).unwrap().get(ids.len() - 1).unwrap();
    let ours_base: Vec<f32> = candle_nn::ops::log_softmax(&base_last, 0).unwrap().to_vec1().unwrap();
    let theirs = be.next_token_logprobs(&ids, Some(&AdapterRef::new(&ra.key, 1.0))).unwrap();
    let delta: f32 = ours.iter().zip(&ours_base).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    let diff: f32 = ours.iter().zip(&theirs).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    assert!(delta > 0.05, "the adapter must matter (max log-prob change {delta})");
    assert!(diff < 0.02 * delta.max(1.0), "llama.cpp vs model code with the adapter: max |Δ log-prob| {diff} (adapter effect {delta})");

    let prompts = ["hello world", "the quick brown fox", "once upon a time"];
    let choices = [None, Some(ra.key.as_str()), Some(rb.key.as_str())];
    let mut sequential = HashMap::new();
    for p in prompts {
        for c in choices {
            sequential.insert((p, c), be.generate(&greedy(p, c), None).unwrap().text);
        }
    }
    for p in prompts {
        assert_ne!(sequential[&(p, None)], "", "generation produced text");
    }
    let differs = |x: Option<&str>, y: Option<&str>| prompts.iter().any(|p| sequential[&(*p, x)] != sequential[&(*p, y)]);
    assert!(differs(None, choices[1]) && differs(choices[1], choices[2]), "adapters change the output: {sequential:?}");

    // Batched: one mixed batch.
    let mut reqs = Vec::new();
    let mut keys = Vec::new();
    for c in choices {
        for p in prompts {
            reqs.push(greedy(p, c));
            keys.push((p, c));
        }
    }
    for (k, r) in keys.iter().zip(be.generate_batch(&reqs)) {
        assert_eq!(r.unwrap().text, sequential[k], "batched {k:?}");
    }
    // Concurrent: one thread per (prompt, adapter).
    let handles: Vec<_> = keys
        .iter()
        .map(|&(p, c)| {
            let be = be.clone();
            let c = c.map(String::from);
            std::thread::spawn(move || be.generate(&greedy(p, c.as_deref()), None).unwrap().text)
        })
        .collect();
    for (k, h) in keys.iter().zip(handles) {
        assert_eq!(h.join().unwrap(), sequential[k], "concurrent {k:?}");
    }
}
