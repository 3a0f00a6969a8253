//! End-to-end tests of `trident lora` on tiny random models written by the tests: train →
//! list/show → export → `generate --adapter`, JSON progress, resume after `kill -9`, import of
//! a PEFT directory, evaluation side by side, and bad input (exit code 2).

mod common;

use common::{code, run, stderr, stdout, trident};
use std::path::{Path, PathBuf};
use trident_gguf::Family;

struct Env {
    dir: tempfile::TempDir,
    base: PathBuf,
    data: PathBuf,
}

impl Env {
    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }
}

fn env(family: Family, n: usize) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("tiny.gguf");
    trident_gguf::testing::write_tiny_model(family, &base, 5).unwrap();
    let data = dir.path().join("tickets.jsonl");
    let cats = ["billing", "outage", "access"];
    let lines: Vec<String> = (0..n)
        .map(|i| {
            serde_json::json!({
                "question": format!("ticket {i}: help with {}", cats[i % 3]),
                "answer": format!("{{\"category\": \"{}\"}}", cats[i % 3]),
                "category": cats[i % 3],
            })
            .to_string()
        })
        .collect();
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    Env { dir, base, data }
}

fn train_args<'a>(e: &'a Env, name: &'a str, extra: &[&'a str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "lora", "train", "--base", e.base.to_str().unwrap(), "--data", e.data.to_str().unwrap(), "--out", name, "--rank", "4",
        "--alpha", "8", "--lr", "1e-2", "--batch", "2", "--max-len", "128", "--seed", "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[test]
fn train_list_show_export_generate_and_remove() {
    let e = env(Family::Qwen2, 6);
    let out = run(trident(&e.home()).arg("--json").args(train_args(&e, "tone", &["--epochs", "3", "--heldout", e.data.to_str().unwrap(), "--eval-every", "2"])));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let lines = json_lines(&stdout(&out));
    let steps: Vec<&serde_json::Value> = lines.iter().filter(|v| v.get("step").is_some() && v.get("event").is_none()).collect();
    assert!(steps.len() >= 6, "{}", stdout(&out));
    for s in &steps {
        assert!(s["loss"].is_f64() && s["tokens_per_s"].is_f64(), "{s}");
    }
    assert!(steps.iter().any(|s| s["heldout_loss"].is_f64()), "held-out loss is reported when measured");
    let done = lines.iter().find(|v| v["event"] == "done").expect("summary line");
    assert_eq!(done["version"], 1);
    let heldout = &done["heldout"];
    assert!(heldout["loss"].as_f64().unwrap() < heldout["base_loss"].as_f64().unwrap(), "{heldout}");

    let out = run(trident(&e.home()).args(["--json", "lora", "list"]));
    assert_eq!(code(&out), 0);
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(list[0]["name"], "tone");
    let out = run(trident(&e.home()).args(["--json", "lora", "show", "tone@1"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let show: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(show["adapter_config"]["peft_type"], "LORA");
    assert_eq!(show["adapter_config"]["target_modules"].as_array().unwrap().len(), 7);
    assert!(show["trident"]["base"]["sha256"].as_str().unwrap().len() == 64);
    assert!(show["trident"]["dataset"]["sha256"].as_str().unwrap().len() == 64);
    let vdir = PathBuf::from(show["dir"].as_str().unwrap());
    assert!(vdir.join("loss.svg").is_file() && vdir.join("loss.csv").is_file());

    let gg = e.dir.path().join("tone.gguf");
    let out = run(trident(&e.home()).args(["lora", "export", "tone", "--gguf", gg.to_str().unwrap()]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(trident_gguf::inspect(&gg).unwrap().is_lora_adapter);

    // Generation with the stored adapter, by name and by exported file.
    for spec in ["tone@1:0.5".to_string(), "tone".to_string(), gg.display().to_string()] {
        let out = run(trident(&e.home()).args(["--json", "generate", "-m", e.base.to_str().unwrap(), "--greedy", "-n", "4", "--adapter", &spec, "ticket 1:"]));
        assert_eq!(code(&out), 0, "{spec}: {}", stderr(&out));
    }
    let out = run(trident(&e.home()).args(["generate", "-m", e.base.to_str().unwrap(), "-n", "2", "--adapter", "nope@3", "x"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("tone@1"), "{}", stderr(&out));

    let out = run(trident(&e.home()).args(["lora", "rm", "tone@1"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = run(trident(&e.home()).args(["lora", "show", "tone"]));
    assert_eq!(code(&out), 2);
}

#[test]
fn resume_after_kill_9_gives_the_same_adapter() {
    let e = env(Family::Llama, 8);
    let extra = ["--epochs", "300", "--save-every", "1", "--dropout", "0.1", "--grad-accum", "2"];
    let out = run(trident(&e.home()).args(train_args(&e, "whole", &extra)));
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let mut child = trident(&e.home())
        .args(train_args(&e, "cut", &extra))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let state = e.home().join("adapters/cut/.train/state.json");
    let t0 = std::time::Instant::now();
    while !state.exists() && t0.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(status.code().is_none(), "the run must be killed mid-way (make it longer if this fails)");
    assert!(!e.home().join("adapters/cut/v1").exists());

    let out = run(trident(&e.home()).arg("--json").args(train_args(&e, "cut", &extra)));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let ready = json_lines(&stdout(&out)).into_iter().find(|v| v["event"] == "ready").unwrap();
    assert!(ready["start_step"].as_u64().unwrap() > 0, "{ready}");
    let a = std::fs::read(e.home().join("adapters/whole/v1/adapter_model.safetensors")).unwrap();
    let b = std::fs::read(e.home().join("adapters/cut/v1/adapter_model.safetensors")).unwrap();
    assert!(a == b, "resumed weights differ from the uninterrupted run");
}

#[test]
fn import_peft_directory_and_evaluate_side_by_side() {
    let e = env(Family::Qwen2, 6);
    let out = run(trident(&e.home()).args(train_args(&e, "src", &["--epochs", "2"])));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // A plain PEFT directory: the two PEFT files only.
    let peft = e.dir.path().join("from-elsewhere");
    std::fs::create_dir(&peft).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(e.home().join("adapters/src/v1").join(f), peft.join(f)).unwrap();
    }
    let out = run(trident(&e.home()).args(["lora", "import", peft.to_str().unwrap(), "--base", e.base.to_str().unwrap()]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("from-elsewhere@1"), "{}", stdout(&out));

    let out = run(trident(&e.home()).args([
        "--json", "lora", "eval", "from-elsewhere", "--data", e.data.to_str().unwrap(), "--prompt", "Answer with JSON.", "--max-tokens", "8",
        "--parallel", "2",
    ]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let labels: Vec<&str> = r["variants"].as_array().unwrap().iter().map(|v| v["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["base", "base+prompt", "adapter"]);
    let base_loss = r["variants"][0]["loss"]["loss"].as_f64().unwrap();
    let ad_loss = r["variants"][2]["loss"]["loss"].as_f64().unwrap();
    assert!(ad_loss < base_loss, "adapter {ad_loss} vs base {base_loss}");
    let g = &r["variants"][2]["generation"];
    for k in ["exact_match", "token_f1", "chrf"] {
        assert!(g[k].is_f64(), "{k}: {g}");
    }
    assert!(g["json"]["valid"].is_f64() && g["json"]["field_accuracy"]["category"].is_f64(), "{g}");
}

#[test]
fn bad_input_exits_with_code_2() {
    let e = env(Family::Qwen2, 3);
    let other = e.dir.path().join("other.gguf");
    trident_gguf::testing::write_tiny_model(Family::Llama, &other, 9).unwrap();
    for extra in [&["--rank", "0"][..], &["--targets", "q,lm_head"], &["--dropout", "1.5"], &["--patience", "2"], &["--epochs", "0"], &["--device", "tpu"]] {
        let out = run(trident(&e.home()).args(train_args(&e, "x", extra)));
        assert_eq!(code(&out), 2, "{extra:?}: {}", stderr(&out));
    }
    // A GPU this build cannot drive (no `cuda` feature), or that is not there (CI has none).
    let out = run(trident(&e.home()).args(train_args(&e, "x", &["--device", "cuda:0"])));
    if !cfg!(feature = "cuda") {
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        assert!(stderr(&out).contains("--features cuda"), "{}", stderr(&out));
    }
    assert!(!e.home().join("adapters/x").exists());
    // The device is checked first: no model lookup (or fetch) before that error.
    let early = ["lora", "train", "--base", "/nonexistent.gguf", "--data", "/nonexistent.jsonl", "--out", "x", "--device", "tpu"];
    let out = run(trident(&e.home()).args(early));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("--device") && !stderr(&out).contains("nonexistent"), "{}", stderr(&out));
    if !cfg!(feature = "cuda") {
        let out = run(trident(&e.home()).args(early.map(|a| if a == "tpu" { "cuda" } else { a })));
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        assert!(stderr(&out).contains("--features cuda") && !stderr(&out).contains("nonexistent"), "{}", stderr(&out));
    }
    let out = run(trident(&e.home()).args(train_args(&e, "bad/name", &[])));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let missing = ["lora", "train", "--base", e.base.to_str().unwrap(), "--data", "/nonexistent.jsonl", "--out", "x"];
    assert_eq!(code(&run(trident(&e.home()).args(missing))), 2);

    let out = run(trident(&e.home()).args(train_args(&e, "ok", &[])));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Adapter for another base.
    let out = run(trident(&e.home()).args(["generate", "-m", other.to_str().unwrap(), "-n", "2", "--adapter", "ok", "x"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("does not fit base model"), "{}", stderr(&out));
    // Truncated tensors file.
    let t = e.home().join("adapters/ok/v1/adapter_model.safetensors");
    let bytes = std::fs::read(&t).unwrap();
    std::fs::write(&t, &bytes[..bytes.len() / 2]).unwrap();
    let out = run(trident(&e.home()).args(["generate", "-m", e.base.to_str().unwrap(), "-n", "2", "--adapter", "ok", "x"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("adapter_model.safetensors"), "{}", stderr(&out));
    let out = run(trident(&e.home()).args(["lora", "import", e.dir.path().to_str().unwrap(), "--base", e.base.to_str().unwrap(), "--name", "y"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(!Path::new(&e.home().join("adapters/y")).join("v1").exists());
}

#[test]
fn logits_with_an_adapter_differ_from_the_base() {
    let e = env(Family::Qwen2, 4);
    let out = run(trident(&e.home()).args(train_args(&e, "tone", &["--epochs", "2"])));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let base = e.base.to_str().unwrap();
    let logits = |spec: &str, extra: &[&str]| -> serde_json::Value {
        let out = run(trident(&e.home()).args(["--json", "lora", "logits", spec, "--base", base, "--top", "5"]).args(extra));
        assert_eq!(code(&out), 0, "{spec} {extra:?}: {}", stderr(&out));
        serde_json::from_str(&stdout(&out)).unwrap_or_else(|err| panic!("{err}: {}", stdout(&out)))
    };
    let toks = ["--tokens", "3,17,42,8,99"];
    let plain = logits("none", &toks);
    let tuned = logits("tone@1", &toks);
    assert_eq!(plain["kind"], "logits");
    assert_eq!(tuned["adapter"], "tone@1");
    assert_eq!(tuned["tokens"], serde_json::json!([3, 17, 42, 8, 99]));
    let positions = tuned["positions"].as_array().unwrap();
    assert_eq!(positions.len(), 5);
    assert!(positions.iter().all(|p| p["top_ids"].as_array().unwrap().len() == 5 && p["top_logits"].as_array().unwrap().len() == 5));
    assert_ne!(plain["positions"], tuned["positions"], "the adapter must change the logits");
    // The same adapter as a plain PEFT directory gives the same numbers.
    let dir = e.home().join("adapters/tone/v1");
    assert_eq!(logits(dir.to_str().unwrap(), &toks)["positions"], tuned["positions"]);
    // llama.cpp: log-probs, and the adapter changes them too.
    let ll = logits("tone", &["--tokens", "3,17,42,8,99", "--engine", "llama"]);
    assert_eq!(ll["kind"], "logprobs");
    assert_ne!(ll["positions"], logits("none", &["--tokens", "3,17,42,8,99", "--engine", "llama"])["positions"]);
    // Text through the model's tokenizer; plain output.
    assert!(!logits("tone", &["--text", "ticket 1: help"])["tokens"].as_array().unwrap().is_empty());
    let out = run(trident(&e.home()).args(["lora", "logits", "tone", "--base", base, "--tokens", "3,4"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("candle logits, adapter tone@1"), "{}", stdout(&out));
    // Bad input: exit code 2.
    for bad in [&["--tokens", "3,4", "--top", "0"][..], &["--tokens", "99999999"], &["--tokens", "x"], &[]] {
        let out = run(trident(&e.home()).args(["lora", "logits", "tone", "--base", base]).args(bad));
        assert_eq!(code(&out), 2, "{bad:?}: {}", stderr(&out));
    }
    let out = run(trident(&e.home()).args(["lora", "logits", "nope", "--base", base, "--tokens", "3"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}
