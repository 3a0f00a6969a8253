//! End-to-end tests of the engine commands (`generate`, `chat`, `bench llm`, `models add`) on
//! tiny random-weight models written by the test, plus the bad-input paths that must end with a
//! clear message and exit code 2 — never a panic or a llama.cpp abort.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{code, run, stderr, stdout, trident};
use trident_gguf::testing::write_tiny_model;
use trident_gguf::{Family, inspect};

fn tiny(dir: &Path, family: Family) -> PathBuf {
    let p = dir.join(format!("tiny-{family}.gguf"));
    write_tiny_model(family, &p, 5).unwrap();
    p
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(&stdout(out)).unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(out), stderr(out)))
}

#[test]
fn generate_greedy_json_is_reproducible_for_every_family() {
    let home = tempfile::tempdir().unwrap();
    for family in [Family::Qwen2, Family::Qwen3, Family::Llama, Family::Gemma3] {
        let model = tiny(home.path(), family);
        let gen_once = || {
            let out = run(trident(home.path())
                .args(["generate", "--json", "--greedy", "-n", "6", "--threads", "1", "--logprobs", "3", "--model"])
                .arg(&model)
                .arg("hello world"));
            assert_eq!(code(&out), 0, "{family}: {}", stderr(&out));
            json(&out)
        };
        let a = gen_once();
        let b = gen_once();
        assert_eq!(a["tokens"], b["tokens"], "{family}: greedy output differs between runs");
        let n = a["usage"]["completion_tokens"].as_u64().unwrap();
        assert!((1..=6).contains(&n), "{family}: {a}");
        assert_eq!(a["tokens"].as_array().unwrap().len() as u64, n);
        let lps = a["logprobs"].as_array().unwrap();
        assert_eq!(lps.len() as u64, n);
        assert_eq!(lps[0]["top"].as_array().unwrap().len(), 3);
    }
}

#[test]
fn seed_and_logit_bias_flags_take_effect() {
    let home = tempfile::tempdir().unwrap();
    let model = tiny(home.path(), Family::Llama);
    let sample = |extra: &[&str]| {
        let out = run(trident(home.path())
            .args(["generate", "--json", "-n", "8", "--threads", "1", "--temperature", "1.5", "--top-k", "0", "--top-p", "1", "--min-p", "0"])
            .args(extra)
            .arg("--model")
            .arg(&model)
            .arg("abc"));
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        json(&out)["tokens"].clone()
    };
    assert_eq!(sample(&["--seed", "3"]), sample(&["--seed", "3"]), "same seed, same tokens");
    assert_ne!(sample(&["--seed", "3"]), sample(&["--seed", "4"]), "another seed, other tokens");
    let forced = sample(&["--seed", "3", "--logit-bias", "7=100"]);
    assert!(forced.as_array().unwrap().iter().all(|t| t == 7), "{forced}");
}

#[test]
fn chat_reads_a_script_from_stdin_and_resets() {
    let home = tempfile::tempdir().unwrap();
    let model = tiny(home.path(), Family::Qwen2);
    let mut child = trident(home.path())
        .args(["chat", "--json", "--greedy", "-n", "4", "--threads", "1", "--system", "Be brief.", "--model"])
        .arg(&model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all("hi\nand again\n/reset\nhi\n/exit\nnever read\n".as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v = json(&out);
    let turns = v["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 3, "{v}");
    assert_eq!(turns[0]["user"], "hi");
    // The second turn carries the first in its prompt; after /reset the prompt is the first
    // turn's again, so the greedy reply repeats and the prompt is as short as the first one.
    assert!(turns[1]["usage"]["prompt_tokens"].as_u64() > turns[0]["usage"]["prompt_tokens"].as_u64());
    assert_eq!(turns[2]["usage"]["prompt_tokens"], turns[0]["usage"]["prompt_tokens"]);
    assert_eq!(turns[2]["assistant"], turns[0]["assistant"]);
}

#[test]
fn models_add_registers_and_lists() {
    let home = tempfile::tempdir().unwrap();
    let model = tiny(home.path(), Family::Gemma3);
    let out = run(trident(home.path()).args(["models", "add"]).arg(&model).args(["--name", "tiny-gemma"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = run(trident(home.path()).args(["models", "list", "--json"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let list = json(&out);
    let entry = list.as_array().unwrap().iter().find(|m| m["name"] == "tiny-gemma").unwrap_or_else(|| panic!("{list}"));
    assert_eq!(entry["architecture"], "gemma3");
    // The registered name works as --model.
    let out = run(trident(home.path()).args(["generate", "--json", "--greedy", "-n", "2", "--threads", "1", "--model", "tiny-gemma", "x"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn bench_llm_reports_every_figure() {
    let home = tempfile::tempdir().unwrap();
    let model = tiny(home.path(), Family::Qwen2);
    let out_file = home.path().join("bench.json");
    let out = run(trident(home.path())
        .args(["bench", "llm", "--json", "--runs", "1", "--prompt-tokens", "32", "--gen-tokens", "4", "--prefix-tokens", "48", "--streams", "3", "--threads", "1", "--model"])
        .arg(&model)
        .arg("--out")
        .arg(&out_file));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r = json(&out);
    for k in ["prefill_tok_s", "decode_tok_s", "ttft_no_cache_ms", "ttft_cached_prefix_ms", "aggregate_tok_s"] {
        assert!(r["median"][k].as_f64().is_some_and(|v| v > 0.0), "{k}: {r}");
    }
    assert!(r["peak_rss_mib"].as_f64().unwrap() > 0.0);
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(saved["median"], r["median"]);
}

/// Runs `generate` on `model` and expects exit code 2 with `needle` in the message.
fn expect_bad(home: &Path, model: &Path, needle: &str) {
    let out = run(trident(home).args(["generate", "--greedy", "-n", "2", "--threads", "1", "--model"]).arg(model).arg("hi"));
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{}: {err}", model.display());
    assert!(err.to_lowercase().contains(&needle.to_lowercase()), "{}: expected {needle:?} in: {err}", model.display());
    assert!(!err.contains("panicked"), "{err}");
}

/// Position of the tensor-table entry of `name` in a GGUF file's bytes.
fn tensor_entry(bytes: &[u8], name: &str) -> usize {
    let mut needle = (name.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(name.as_bytes());
    bytes.windows(needle.len()).rposition(|w| w == needle.as_slice()).expect("tensor entry found")
}

#[test]
fn bad_models_are_clear_errors_with_exit_code_2() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path();
    let good = tiny(dir, Family::Qwen2);
    let bytes = std::fs::read(&good).unwrap();

    expect_bad(dir, &dir.join("missing.gguf"), "not found");

    let truncated = dir.join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    expect_bad(dir, &truncated, "truncated");

    let empty = dir.join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    expect_bad(dir, &empty, "empty.gguf");

    // Architecture renamed everywhere (value and key prefixes): unknown to llama.cpp.
    let renamed: Vec<u8> = {
        let mut b = bytes.clone();
        let mut i = 0;
        while i + 5 <= b.len() {
            if &b[i..i + 5] == b"qwen2" {
                b[i..i + 5].copy_from_slice(b"qwen9");
                i += 5;
            } else {
                i += 1;
            }
        }
        b
    };
    let unknown = dir.join("unknown-arch.gguf");
    std::fs::write(&unknown, renamed).unwrap();
    expect_bad(dir, &unknown, "qwen9");

    // A tensor stored in a quantization type that does not exist.
    let info = inspect(&good).unwrap();
    let t = &info.tensors()[1];
    let type_pos = tensor_entry(&bytes, &t.name) + 8 + t.name.len() + 4 + 8 * t.shape.len();
    let mut b = bytes.clone();
    b[type_pos..type_pos + 4].copy_from_slice(&9999u32.to_le_bytes());
    let bad_type = dir.join("bad-type.gguf");
    std::fs::write(&bad_type, b).unwrap();
    expect_bad(dir, &bad_type, "9999");

    // Not a GGUF at all.
    let text = dir.join("notes.gguf");
    std::fs::write(&text, "just some text, not a model").unwrap();
    expect_bad(dir, &text, "notes.gguf");
}

#[test]
fn prompt_over_the_context_is_an_error_not_a_truncation() {
    let home = tempfile::tempdir().unwrap();
    let model = tiny(home.path(), Family::Llama);
    let long = "word ".repeat(400);
    let out = run(trident(home.path()).args(["generate", "--greedy", "-n", "2", "--threads", "1", "--ctx", "64", "--model"]).arg(&model).arg(&long));
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(err.contains("64"), "the message names the limit: {err}");
    // --json errors are JSON too.
    let out = run(trident(home.path()).args(["--json", "generate", "-n", "2", "--threads", "1", "--ctx", "64", "--model"]).arg(&model).arg(&long));
    assert_eq!(code(&out), 2);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).or_else(|_| serde_json::from_str(&stderr(&out))).unwrap();
    assert_eq!(v["exit_code"], 2, "{v}");
}

#[test]
fn bad_sampling_flags_exit_2() {
    let home = tempfile::tempdir().unwrap();
    let model = tiny(home.path(), Family::Qwen2);
    for flags in [
        vec!["--top-p", "1.5"],
        vec!["--temperature", "-1"],
        vec!["--logit-bias", "notanumber"],
        vec!["--logit-bias", "99999999=1"],
    ] {
        let out = run(trident(home.path()).args(["generate", "-n", "2", "--threads", "1"]).args(&flags).arg("--model").arg(&model).arg("hi"));
        assert_eq!(code(&out), 2, "{flags:?}: {}", stderr(&out));
    }
}
