use super::*;
use crate::data::{Message, Role};
use trident_gguf::Family;

/// A tiny random model and a small prepared dataset in a temporary directory.
pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
    pub base: PathBuf,
    pub data: PathBuf,
}

pub(crate) fn sample(i: usize) -> Sample {
    let cats = ["billing", "outage", "access"];
    Sample {
        id: format!("{i:016x}"),
        messages: vec![
            Message { role: Role::User, content: format!("ticket {i}: please help with {}", cats[i % 3]) },
            Message { role: Role::Assistant, content: format!("{{\"category\": \"{}\"}}", cats[i % 3]) },
        ],
        category: Some(cats[i % 3].to_string()),
        source_line: i + 1,
    }
}

pub(crate) fn write_samples(path: &Path, range: std::ops::Range<usize>) {
    let lines: Vec<String> = range.map(|i| serde_json::to_string(&sample(i)).unwrap()).collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

pub(crate) fn fixture(family: Family, n: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("tiny.gguf");
    trident_gguf::testing::write_tiny_model(family, &base, 7).unwrap();
    let data = dir.path().join("train.jsonl");
    write_samples(&data, 0..n);
    Fixture { dir, base, data }
}

fn opts(f: &Fixture) -> TrainOptions {
    TrainOptions {
        base: f.base.clone(),
        data: f.data.clone(),
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        lr: 1e-2,
        epochs: 3,
        batch: 2,
        max_len: 128,
        seed: 3,
        warmup: 0.1,
        save_every: 0,
        ..Default::default()
    }
}

fn go(_: &TrainEvent) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

#[test]
fn loss_mask_covers_the_answer_and_end_of_turn_only() {
    let f = fixture(Family::Qwen2, 1);
    let be = tokenizer_backend(&f.base, 128).unwrap();
    let e = tokens::encode(&be, &tokens::chat_messages(&sample(0))).unwrap();
    let answer = be.detokenize(&e.ids[e.target_start..e.target_end]).unwrap();
    assert!(answer.starts_with("{\"category\": \"billing\"}"), "{answer:?}");
    assert!(be.is_eog(e.ids[e.target_end - 1]), "the last target is the end-of-turn token");
    let prompt = be.detokenize(&e.ids[..e.target_start]).unwrap();
    assert!(prompt.contains("ticket 0") && !prompt.contains("category"), "{prompt:?}");
    // The batch weights select exactly those targets.
    let (b, real) = make_batch(&[&e]).unwrap();
    assert_eq!(real, e.input_len());
    let w: Vec<f32> = b.weights.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(w.iter().filter(|&&x| x == 1.0).count(), e.n_targets());
    let t: Vec<u32> = b.targets.flatten_all().unwrap().to_vec1().unwrap();
    let picked: Vec<u32> = w.iter().zip(&t).filter(|(w, _)| **w == 1.0).map(|(_, t)| *t).collect();
    assert_eq!(picked, e.ids[e.target_start..e.target_end].to_vec());
}

#[test]
fn a_few_steps_lower_the_loss() {
    // Both ways of multiplying the frozen base (bf16 runs on ggml's kernels, emulated where
    // the CPU lacks AVX-512 BF16).
    for (family, precision) in
        [(Family::Qwen2, Precision::Dequantized), (Family::Gemma3, Precision::Dequantized), (Family::Qwen2, Precision::Bf16)]
    {
        let f = fixture(family, 6);
        let store = AdapterStore::new(f.dir.path());
        let o = TrainOptions { heldout: Some(f.data.clone()), eval_every: 3, precision, ..opts(&f) };
        let out = train(&store, "t", &o, false, &mut go).unwrap();
        let h = out.heldout.expect("held-out metrics");
        let base = h.base_loss.unwrap();
        assert!(h.loss < base - 0.1, "{family:?}: held-out loss {} vs base {base}", h.loss);
        let first = out.log.first().unwrap().loss;
        let last = out.log.last().unwrap().loss;
        assert!(last < first, "{family:?}: training loss {first} -> {last}");
        let stored = out.stored.unwrap();
        assert_eq!(stored.version, 1);
        for f in ["adapter_config.json", "adapter_model.safetensors", "trident.json", "loss.csv", "loss.svg"] {
            assert!(stored.dir.join(f).is_file(), "{f}");
        }
        assert!(!store.run_dir("t").exists(), "checkpoints are removed after a complete run");
        let csv = std::fs::read_to_string(stored.dir.join("loss.csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + out.log.len());
    }
}

/// Resume after a simulated crash (the callback aborts without writing anything, like
/// `kill -9`) ends with bit-identical weights to an uninterrupted run with the same seed.
#[test]
fn resume_after_crash_equals_an_uninterrupted_run() {
    for precision in [Precision::Dequantized, Precision::Bf16] {
        resume_equals_uninterrupted(precision);
    }
}

fn resume_equals_uninterrupted(precision: Precision) {
    let f = fixture(Family::Llama, 7);
    let store = AdapterStore::new(f.dir.path());
    let o = TrainOptions { dropout: 0.1, grad_accum: 2, epochs: 3, save_every: 2, precision, ..opts(&f) };
    let full = train(&store, "full", &o, false, &mut go).unwrap();
    let total = full.stats.steps;
    assert!(total >= 5, "{total} steps");

    let mut crash = |ev: &TrainEvent| match ev {
        TrainEvent::Step(s) if s.step == 3 => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    };
    let cut = train(&store, "resumed", &o, false, &mut crash).unwrap();
    assert!(cut.stored.is_none());
    assert!(store.run_dir("resumed").join("state.json").is_file(), "a checkpoint was written at step 2");

    // A different run of the same name is refused, not silently mixed in.
    let other = TrainOptions { lr: 5e-3, ..o.clone() };
    let e = train(&store, "resumed", &other, false, &mut go).unwrap_err();
    assert!(matches!(e, LoraError::Training { .. }) && e.is_user_error() && e.to_string().contains("--restart"), "{e}");

    let mut started_at = None;
    let mut watch = |ev: &TrainEvent| {
        if let TrainEvent::Ready { start_step, .. } = ev {
            started_at = Some(*start_step);
        }
        ControlFlow::Continue(())
    };
    let resumed = train(&store, "resumed", &o, false, &mut watch).unwrap();
    assert_eq!(started_at, Some(2));
    assert_eq!(resumed.stats.resumed, 1);
    assert_eq!(resumed.stats.steps, total);
    let a = Adapter::read_dir(&full.stored.unwrap().dir).unwrap();
    let b = Adapter::read_dir(&resumed.stored.unwrap().dir).unwrap();
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (name, m) in &a.tensors {
        assert!(m.data == b.tensors[name].data, "{name} differs after resume");
    }
    let la: Vec<f64> = full.log.iter().map(|p| p.loss).collect();
    let lb: Vec<f64> = resumed.log.iter().map(|p| p.loss).collect();
    assert_eq!(la, lb, "the same losses step by step");
}

#[test]
fn early_stopping_keeps_the_best_weights() {
    let f = fixture(Family::Qwen2, 4);
    let held = f.dir.path().join("held.jsonl");
    write_samples(&held, 100..103);
    let store = AdapterStore::new(f.dir.path());
    // A huge learning rate overfits/diverges on held-out quickly.
    let o = TrainOptions { heldout: Some(held), eval_every: 1, patience: 2, epochs: 20, lr: 5e-2, ..opts(&f) };
    let mut stopped = None;
    let mut cb = |ev: &TrainEvent| {
        if let TrainEvent::EarlyStop { step, best_step } = ev {
            stopped = Some((*step, *best_step));
        }
        ControlFlow::Continue(())
    };
    let out = train(&store, "es", &o, false, &mut cb).unwrap();
    if let Some((step, best)) = stopped {
        assert!(out.stats.stopped_early && step == best + 2 && out.stats.kept_step == best);
        let best_logged = out.log.iter().filter_map(|p| p.heldout_loss).fold(f64::INFINITY, f64::min);
        let kept = out.heldout.unwrap().loss;
        assert!((kept - best_logged).abs() < 1e-4, "kept {kept} vs best {best_logged}");
    } else {
        assert_eq!(out.stats.steps, out.stats.planned_steps);
    }
}

#[test]
fn bad_options_are_clear_user_errors() {
    let f = fixture(Family::Qwen2, 2);
    let store = AdapterStore::new(f.dir.path());
    let cases = [
        TrainOptions { rank: 0, ..opts(&f) },
        TrainOptions { targets: vec![], ..opts(&f) },
        TrainOptions { lr: -1.0, ..opts(&f) },
        TrainOptions { batch: 0, ..opts(&f) },
        TrainOptions { patience: 2, ..opts(&f) },
        TrainOptions { max_len: 10, ..opts(&f) },
    ];
    for o in cases {
        let e = train(&store, "x", &o, false, &mut go).unwrap_err();
        assert!(e.is_user_error(), "{e}");
    }
    assert!(train(&store, "../evil", &opts(&f), false, &mut go).unwrap_err().is_user_error());
    let missing = TrainOptions { data: f.dir.path().join("nope.jsonl"), ..opts(&f) };
    assert!(train(&store, "x", &missing, false, &mut go).unwrap_err().is_user_error());
    assert!(LoraTarget::parse_list("q,foo").is_err());
    assert!(store.list().unwrap().is_empty(), "nothing stored on bad input");
}

#[test]
fn schedule_warms_up_then_decays_to_zero() {
    assert!((lr_at(1.0, 0, 100, 10) - 0.1).abs() < 1e-12);
    assert!((lr_at(1.0, 9, 100, 10) - 1.0).abs() < 1e-12);
    assert!((lr_at(1.0, 10, 100, 10) - 1.0).abs() < 1e-12);
    assert!(lr_at(1.0, 55, 100, 10) < 0.51 && lr_at(1.0, 55, 100, 10) > 0.49);
    assert!(lr_at(1.0, 99, 100, 10) < 0.001);
    assert_eq!(epoch_order(10, 1, 0), epoch_order(10, 1, 0));
    assert_ne!(epoch_order(10, 1, 0), epoch_order(10, 1, 1));
}

/// Speed of real training steps on a real model (not CI): set `TRIDENT_LORA_BENCH_MODEL` to a
/// GGUF and run with `--ignored --nocapture`.
#[test]
#[ignore]
fn bench_real_model_steps() {
    let Some(model) = std::env::var_os("TRIDENT_LORA_BENCH_MODEL") else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d.jsonl");
    let long = "Обмен с 1С падает с ошибкой E-503, что делать? ".repeat(4);
    let lines: Vec<String> = (0..8)
        .map(|i| {
            let mut s = sample(i);
            s.messages[0].content = format!("{long} {i}");
            s.messages[1].content = format!("{{\"category\": \"интеграция\", \"reply\": \"{long}\"}}");
            serde_json::to_string(&s).unwrap()
        })
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    let batch: usize = std::env::var("BENCH_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let checkpointing = std::env::var("BENCH_CKPT").map(|v| v != "0").unwrap_or(true);
    let o = TrainOptions { base: PathBuf::from(model), data, max_len: 512, batch, max_steps: Some(3), save_every: 0, checkpointing, ..Default::default() };
    let store = AdapterStore::new(dir.path());
    let t = std::time::Instant::now();
    let mut cb = |ev: &TrainEvent| {
        eprintln!("{:.1}s {ev:?}", t.elapsed().as_secs_f64());
        ControlFlow::Continue(())
    };
    train(&store, "bench", &o, false, &mut cb).unwrap();
}
