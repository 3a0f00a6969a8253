//! End-to-end tests of `trident kb`, `trident ask` and `trident eval rag` through the real
//! binary: e5 embeddings (`TRIDENT_TEST_E5`), the hybrid index, and the default LLM
//! (`TRIDENT_TEST_MODELS`) where an answer is generated. Each test prints a notice and passes
//! when a model it needs is unset.

mod common;

use common::{code, run, stderr, stdout, trident};
use std::path::{Path, PathBuf};

fn e5() -> Option<PathBuf> {
    let p = std::env::var_os("TRIDENT_TEST_E5").map(PathBuf::from);
    if p.is_none() {
        eprintln!("notice: TRIDENT_TEST_E5 unset: skipping a test that needs e5-small-q4.bin");
    }
    p
}

fn llm() -> Option<PathBuf> {
    let p = std::env::var_os("TRIDENT_TEST_MODELS").map(|d| Path::new(&d).join("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"));
    if p.is_none() {
        eprintln!("notice: TRIDENT_TEST_MODELS unset: skipping a test that needs the default LLM");
    }
    p
}

/// `trident` in `home` with the e5 container as the embedder (and the LLM when given).
fn cmd(home: &Path, e5: &Path, llm: Option<&Path>) -> std::process::Command {
    let mut c = trident(home);
    c.env("TRIDENT_RAG_EMBEDDER", e5);
    if let Some(m) = llm {
        c.env("TRIDENT_ENGINE_MODEL", m);
        c.env("TRIDENT_ENGINE_CTX", "4096");
    }
    c
}

fn write(p: &Path, text: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert_eq!(code(out), 0, "stdout: {}\nstderr: {}", stdout(out), stderr(out));
    serde_json::from_str(&stdout(out)).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

fn docs(root: &Path) -> PathBuf {
    let d = root.join("docs");
    write(&d.join("public/tarify.md"), "---\ntitle: Тарифы\nversion: 2026-01\n---\n# Цены\n\nТариф «Оптима» стоит 590 рублей в месяц. Тариф «Макси» стоит 1490 рублей в месяц.\n");
    write(&d.join("public/faq.txt"), "Как связаться с поддержкой?\nТелефон поддержки 8 800 555-01-23, email help@example.org.\n");
    write(&d.join("hr/oklady.csv"), "должность,оклад\nдиректор,870000\nбухгалтер,120000\n");
    write(&d.join("sales/klienty.txt"), "Клиент: ООО «Альфа», контакт Петров, телефон +7 (916) 765-43-21, email petrov@alfa-example.ru. Обсуждается тариф «Макси» на 12 пользователей.\n");
    write(&root.join("access.json"), r#"{"public": ["*"], "hr": ["hr"], "sales": ["sales"]}"#);
    d
}

#[test]
fn ingest_then_ask_json_answers_with_citations() {
    let (Some(e5), Some(llm)) = (e5(), llm()) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let d = docs(tmp.path());
    let out = run(cmd(tmp.path(), &e5, None).args(["--json", "kb", "ingest"]).arg(&d).arg("--access").arg(tmp.path().join("access.json")));
    let r = json(&out);
    assert_eq!(r["files"].as_array().unwrap().len(), 4, "{r}");
    let out = run(cmd(tmp.path(), &e5, Some(&llm)).args(["--json", "ask", "Сколько стоит тариф Оптима?"]));
    let a = json(&out);
    assert_eq!(a["refused"], false, "{a}");
    assert!(a["answer"].as_str().unwrap().contains("590"), "{a}");
    assert!(a["answer"].as_str().unwrap().contains("[1]"), "inline citation: {a}");
    let c = &a["citations"][0];
    for field in ["source", "title", "version", "section", "chunk_id", "score"] {
        assert!(!c[field].is_null(), "citation field {field}: {a}");
    }
    assert!(c["source"].as_str().unwrap().ends_with("public/tarify.md") && c["version"] == 1, "{a}");
    assert!(a["timings"]["retrieve_ms"].is_u64() && a["timings"]["generate_ms"].as_u64().unwrap() > 0, "{a}");
    // Human output lists the sources.
    let out = run(cmd(tmp.path(), &e5, Some(&llm)).args(["ask", "Сколько стоит тариф Макси?"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("1490") && stdout(&out).contains("Sources:") && stdout(&out).contains("tarify.md"), "{}", stdout(&out));
    // Weak evidence → "I don't know" without the model.
    let a = json(&run(cmd(tmp.path(), &e5, Some(&llm)).args(["--json", "ask", "Кто выиграл чемпионат мира по хоккею?"])));
    assert_eq!(a["refused"], true, "{a}");
    assert_eq!(a["timings"]["generate_ms"], 0, "{a}");
    // Salaries: not retrievable without the group, so declined; a client's phone is masked.
    let a = json(&run(cmd(tmp.path(), &e5, Some(&llm)).args(["--json", "ask", "Какой оклад у директора?", "--as-groups", "sales"])));
    assert!(a["refused"] == true && !a.to_string().contains("870000"), "{a}");
    let a = json(&run(cmd(tmp.path(), &e5, Some(&llm)).args(["--json", "ask", "Какой телефон у Петрова из ООО Альфа?", "--as-groups", "sales"])));
    assert!(!a.to_string().contains("765-43-21") && !a.to_string().contains("petrov@"), "{a}");
    // The support phone, published for everyone, is kept.
    let a = json(&run(cmd(tmp.path(), &e5, Some(&llm)).args(["--json", "ask", "Какой телефон поддержки?"])));
    assert!(a["answer"].as_str().unwrap().contains("555-01-23"), "{a}");
}

#[test]
fn changed_document_switches_versions_and_deleted_file_goes() {
    let Some(e5) = e5() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let d = docs(tmp.path());
    let ingest = run(cmd(tmp.path(), &e5, None).args(["kb", "ingest", "--kb", "t"]).arg(&d).arg("--access").arg(tmp.path().join("access.json")));
    assert_eq!(code(&ingest), 0, "{}", stderr(&ingest));
    let search = |extra: &[&str]| json(&run(cmd(tmp.path(), &e5, None).args(["--json", "kb", "search", "цена тарифа Оптима", "--kb", "t"]).args(extra)));
    let hits = search(&[]);
    assert!(hits[0]["text"].as_str().unwrap().contains("590") && hits[0]["version"] == 1, "{hits}");
    write(&d.join("public/tarify.md"), "---\ntitle: Тарифы\nversion: 2026-06\n---\n# Цены\n\nТариф «Оптима» стоит 690 рублей в месяц.\n");
    let sync = json(&run(cmd(tmp.path(), &e5, None).args(["--json", "kb", "sync", "--kb", "t"])));
    assert_eq!(sync["chunks"].as_u64().unwrap() > 0, true, "{sync}");
    let hits = search(&[]);
    assert!(hits[0]["text"].as_str().unwrap().contains("690") && hits[0]["version"] == 2, "{hits}");
    assert!(!hits.to_string().contains("590"), "old price not current: {hits}");
    assert!(search(&["--version", "1"])[0]["text"].as_str().unwrap().contains("590"));
    assert!(search(&["--as-of", "2026-03-01"])[0]["text"].as_str().unwrap().contains("590"));
    // An unchanged sync writes nothing.
    let again = json(&run(cmd(tmp.path(), &e5, None).args(["--json", "kb", "sync", "--kb", "t"])));
    assert_eq!(again["chunks"], 0, "{again}");
    std::fs::remove_file(d.join("public/tarify.md")).unwrap();
    let sync = json(&run(cmd(tmp.path(), &e5, None).args(["--json", "kb", "sync", "--kb", "t"])));
    assert!(sync.to_string().contains("removed"), "{sync}");
    for extra in [&[][..], &["--version", "1"][..]] {
        assert!(!search(extra).to_string().contains("tarify.md"), "deleted file's chunks are gone");
    }
    // Access groups inside retrieval: salaries only for hr; client data only for sales.
    let s = json(&run(cmd(tmp.path(), &e5, None).args(["--json", "kb", "search", "оклад директора", "--kb", "t", "--k", "20"])));
    assert!(!s.to_string().contains("870000") && !s.to_string().contains("Альфа"), "{s}");
    let s = json(&run(cmd(tmp.path(), &e5, None).args(["--json", "kb", "search", "оклад директора", "--kb", "t", "--as-groups", "hr"])));
    assert!(s.to_string().contains("870000"), "{s}");
    let s = json(&run(cmd(tmp.path(), &e5, None).args(["--json", "kb", "search", "клиент Альфа", "--kb", "t", "--as-groups", "sales"])));
    assert!(s.to_string().contains("Альфа") && !s.to_string().contains("765-43-21") && s.to_string().contains("[PHONE]"), "{s}");
}

#[test]
fn bad_usage_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(trident(tmp.path()).args(["ask", "вопрос", "--kb", "nope", "--no-model"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    let out = run(trident(tmp.path()).args(["kb", "search", "x", "--kb", "../etc"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let out = run(trident(tmp.path()).args(["ask", "вопрос", "--refusal-threshold", "2", "--no-model"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}
