//! Tests with the real default model (Qwen2.5-Coder-0.5B-Instruct Q4_K_M) through the engine.
//! Skipped with a notice when `TRIDENT_TEST_MODELS` is unset.

use std::path::{Path, PathBuf};
use trident_engine::{Backend, LlamaBackend, LlamaConfig};
use trident_prompt::compile::{CompileInput, compile};
use trident_prompt::lint::{BackendCounter, EstimateCounter, TokenCounter, lint};
use trident_prompt::run::{EngineGenerator, gen_options, run};
use trident_prompt::{Values, library};

fn qwen() -> Option<LlamaBackend> {
    let Ok(dir) = std::env::var("TRIDENT_TEST_MODELS") else {
        eprintln!("TRIDENT_TEST_MODELS is unset: skipping the real-model test");
        return None;
    };
    let path = Path::new(&dir).join("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
    if !path.exists() {
        eprintln!("{} is missing: skipping the real-model test", path.display());
        return None;
    }
    Some(LlamaBackend::load(&path, &LlamaConfig::default().with_ctx(4096)).expect("the default Qwen model loads"))
}

fn shared() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    if p.exists() {
        Some(p)
    } else {
        eprintln!("{} is absent: skipping", p.display());
        None
    }
}

#[test]
fn fixture_template_is_the_one_in_the_gguf() {
    let Some(b) = qwen() else { return };
    let fixture = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/templates/qwen2.jinja")).unwrap();
    assert_eq!(b.chat_template().source(), fixture, "tests/templates/qwen2.jinja must be the GGUF's tokenizer.chat_template");
}

#[test]
fn lint_counts_tokens_with_the_model_tokenizer() {
    let Some(b) = qwen() else { return };
    let spec = library::get("support-ticket-triage").unwrap().spec;
    let render = |c: &trident_prompt::Compiled| -> trident_prompt::Result<String> { Ok(b.render_chat(&c.messages, true)?) };
    let counter = BackendCounter(&b);
    let report = lint(&spec, None, &counter as &dyn TokenCounter, Some(&render), Some(4096), None);
    assert!(report.tokens_exact);
    let c = compile(&spec, &spec.example_values(), &CompileInput::default()).unwrap();
    let exact = b.tokenize(&b.render_chat(&c.messages, true).unwrap(), true, true).unwrap().len();
    assert_eq!(report.prompt_tokens, Some(exact));
    let est = lint(&spec, None, &EstimateCounter, None, Some(4096), None).prompt_tokens.unwrap();
    eprintln!("triage prompt: {exact} tokens (Qwen tokenizer), estimate {est}");
    // The estimate is within a factor of two of the real count.
    assert!(est * 2 > exact && est < exact * 2, "estimate {est} vs exact {exact}");
}

#[test]
fn triage_prompt_gives_schema_valid_json_on_real_tickets() {
    let Some(b) = qwen() else { return };
    let Some(shared) = shared() else { return };
    let text = std::fs::read_to_string(shared.join("lora/tickets-test.jsonl")).unwrap();
    let spec = library::get("support-ticket-triage").unwrap().spec;
    let g = EngineGenerator { backend: &b, adapter: None };
    let (mut valid, mut correct, mut n) = (0, 0, 0);
    for line in text.lines().take(4) {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let mut v = Values::new();
        v.insert("ticket".into(), row["question"].clone());
        let c = compile(&spec, &v, &CompileInput::default()).unwrap();
        let r = run(&g, &c, &spec.strategy, &gen_options(&c, None, None)).unwrap();
        n += 1;
        valid += (r.valid == Some(true)) as usize;
        correct += (r.json.as_ref().and_then(|j| j.get("category")) == Some(&row["category"])) as usize;
        eprintln!("{} -> {}", row["question"], r.answer);
    }
    eprintln!("real Qwen: {valid}/{n} valid, {correct}/{n} category correct");
    assert!(valid >= n - 1, "only {valid}/{n} answers satisfied the schema");
}
