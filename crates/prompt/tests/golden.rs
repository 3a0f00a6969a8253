//! Golden tests: sample specs compiled and rendered through each supported chat-template family
//! (Qwen2 — the template embedded in the default Qwen GGUF; Gemma 3; Llama 3; Qwen3) must match
//! the committed files in `tests/golden/`. Regenerate with `TRIDENT_UPDATE_GOLDEN=1`.

use std::path::{Path, PathBuf};
use trident_engine::ChatTemplate;
use trident_prompt::compile::{CompileInput, compile, render_text};
use trident_prompt::fewshot::{Lexical, select};
use trident_prompt::spec::Example;
use trident_prompt::{CitedChunk, PromptSpec, library};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// (family, template file, bos, eos)
const FAMILIES: &[(&str, &str, &str, &str)] = &[
    ("qwen2", "qwen2.jinja", "<|endoftext|>", "<|im_end|>"),
    ("gemma3", "gemma3.jinja", "<bos>", "<eos>"),
    ("llama3", "llama3.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    ("qwen3", "qwen3.jinja", "<|endoftext|>", "<|im_end|>"),
];

/// The sample cases: (case name, compiled prompt).
fn cases() -> Vec<(String, trident_prompt::Compiled)> {
    let mut out = Vec::new();
    // 1. The ticket-triage formula: JSON Schema, static few-shot, "if unsure".
    let triage = library::get("support-ticket-triage").unwrap().spec;
    out.push(("triage".to_string(), compile(&triage, &triage.example_values(), &CompileInput::default()).unwrap()));
    // 2. The same with dynamic few-shot picked by similarity and retrieved sources.
    let pool = vec![
        Example { input: "Верните деньги за тариф Бизнес".into(), output: r#"{"category": "возврат"}"#.into() },
        Example { input: "Как добавить нового сотрудника?".into(), output: r#"{"category": "доступ"}"#.into() },
        Example { input: "Как пригласить сотрудника в CRM?".into(), output: r#"{"category": "доступ"}"#.into() },
    ];
    let values = triage.example_values();
    let picked = select(&Lexical, values["ticket"].as_str().unwrap(), &pool, 2).unwrap();
    let sources = vec![CitedChunk {
        source: "public/faq-podderzhka.txt".into(),
        title: "FAQ поддержки".into(),
        version: "2026-03".into(),
        section: "Пользователи".into(),
        text: "Администратор приглашает сотрудника в разделе «Настройки — Пользователи».".into(),
    }];
    out.push((
        "triage-dynamic-rag".to_string(),
        compile(&triage, &values, &CompileInput { extra_examples: picked, sources }).unwrap(),
    ));
    // 3. A system override, a hidden scratchpad, an object variable, a default.
    let (spec, _, _) = PromptSpec::load(&dir().join("specs/override-scratchpad.yaml")).unwrap();
    out.push(("override-scratchpad".to_string(), compile(&spec, &spec.example_values(), &CompileInput::default()).unwrap()));
    // 4. An English prompt.
    let en = library::get("hr-candidate-rejection-en").unwrap().spec;
    out.push(("english".to_string(), compile(&en, &en.example_values(), &CompileInput::default()).unwrap()));
    out
}

#[test]
fn rendering_matches_golden_files_for_each_family() {
    let update = std::env::var("TRIDENT_UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    for (family, file, bos, eos) in FAMILIES {
        let src = std::fs::read_to_string(dir().join("templates").join(file)).unwrap();
        let tmpl = ChatTemplate::new(&src, bos, eos).unwrap();
        for (case, compiled) in cases() {
            let text = render_text(&tmpl, &compiled).unwrap();
            // Deterministic: rendering twice gives the same bytes.
            assert_eq!(text, render_text(&tmpl, &compiled).unwrap());
            let path = dir().join("golden").join(format!("{family}__{case}.txt"));
            if update {
                std::fs::write(&path, &text).unwrap();
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(want) if want == text => {}
                Ok(_) => failures.push(format!("{} differs (set TRIDENT_UPDATE_GOLDEN=1 to regenerate after review)", path.display())),
                Err(_) => failures.push(format!("{} missing (set TRIDENT_UPDATE_GOLDEN=1 to create)", path.display())),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn golden_files_show_the_family_markers() {
    // A sanity check that the golden files really are per-family renderings.
    let expect = [("qwen2", "<|im_start|>system\n"), ("gemma3", "<start_of_turn>user\n"), ("llama3", "<|start_header_id|>system<|end_header_id|>"), ("qwen3", "<|im_start|>assistant\n")];
    for (family, marker) in expect {
        let p = dir().join("golden").join(format!("{family}__triage.txt"));
        let Ok(text) = std::fs::read_to_string(&p) else { continue };
        assert!(text.contains(marker), "{family}: {marker:?} not in {}", p.display());
    }
}
