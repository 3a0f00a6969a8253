//! End-to-end tests of the knowledge base: the shared sample KB (parsers, access groups,
//! versions, retrieval quality), bad files, sync and deletion, group and document changes, a
//! lost index, a randomized ACL test, and a `kill -9` during ingest.

mod common;
use common::shared_kb;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use trident_rag::eval::{EvalConfig, load_questions};
use trident_rag::kb::{FileStatus, SearchRequest, SourceSpec};
use trident_rag::{AccessMap, AnswerConfig, Embedder, HashEmbedder, KbOptions, KnowledgeBase, RagError};


fn embedder() -> Arc<dyn Embedder> {
    Arc::new(HashEmbedder)
}

fn ingest_shared(dir: &Path, shared: &Path) -> KnowledgeBase {
    let mut kb = KnowledgeBase::open(dir, embedder(), KbOptions::default()).unwrap();
    let access = AccessMap::load(&shared.join("access.json")).unwrap();
    let spec = SourceSpec { path: shared.join("docs"), groups: None, meta: Default::default(), access: Some(access) };
    let r = kb.ingest(vec![spec], &mut |_| {}).unwrap();
    let skipped: Vec<_> = r.files.iter().filter(|f| f.status == FileStatus::Skipped).collect();
    assert!(skipped.is_empty(), "every shared document parses: {skipped:?}");
    kb
}

#[test]
fn shared_kb_parses_every_format() {
    let Some(shared) = shared_kb() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let kb = ingest_shared(tmp.path(), &shared);
    let all = |q: &str, groups: &[&str]| kb.search(&SearchRequest::new(q, groups.iter().map(|s| s.to_string()).collect(), 50)).unwrap();
    // PDF text layer with pages.
    let h = all("ошибка E-503 обмен 1С", &[]);
    let pdf = h.iter().find(|h| h.source.ends_with("integraciya-1c.pdf")).expect("PDF chunk");
    assert!(pdf.page.is_some());
    // DOCX table rows.
    let h = all("время реакции критический инцидент", &[]);
    assert!(h.iter().any(|h| h.source.ends_with("sla.docx") && h.text.contains("30 минут")), "{h:#?}");
    // HTML without nav/footer.
    let h = all("возврат средств", &[]);
    let html = h.iter().find(|h| h.source.ends_with("vozvrat.html")).expect("HTML chunk");
    assert!(!html.text.contains("Главная | Документы") && !html.text.contains("Все права защищены"), "{}", html.text);
    // CSV rows with their header, only for hr.
    let h = all("оклад генерального директора", &["hr"]);
    let csv = h.iter().find(|h| h.source.ends_with("zarplaty.csv")).expect("CSV chunk for hr");
    assert!(csv.text.contains("оклад_руб_в_месяц: 950000"), "{}", csv.text);
    // English detected.
    let h = all("API rate limit", &[]);
    assert_eq!(h.iter().find(|h| h.source.ends_with("onboarding-en.md")).unwrap().lang, "en");
}

#[test]
fn superseded_prices_are_never_current() {
    let Some(shared) = shared_kb() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let kb = ingest_shared(tmp.path(), &shared);
    let hits = kb.search(&SearchRequest::new("Сколько стоит тариф Бизнес цена", vec![], 50)).unwrap();
    assert!(hits.iter().any(|h| h.text.contains("2490")));
    assert!(hits.iter().all(|h| !h.text.contains("1990")), "the 2024 price list must not be retrievable by default");
    // The old version is still there for --as-of / --version.
    let mut old = SearchRequest::new("тариф Бизнес цена", vec![], 5);
    old.as_of = Some("2025-06-01".into());
    let hits = kb.search(&old).unwrap();
    let t = hits.iter().find(|h| h.doc_id == "Тарифы Ромашка CRM").expect("tariffs as of 2025");
    assert!(t.text.contains("1990") && !t.current && t.label.as_deref() == Some("2024-01"));
    let vs: Vec<_> = kb.versions().unwrap().into_iter().filter(|v| v.doc_id == "Тарифы Ромашка CRM").collect();
    assert_eq!(vs.len(), 2);
    assert_eq!(vs.iter().filter(|v| v.current).map(|v| v.label.clone().unwrap()).collect::<Vec<_>>(), vec!["2026-03"]);
    let mut v = SearchRequest::new("тариф", vec![], 5);
    v.doc = Some("Тарифы Ромашка CRM".into());
    v.version = Some(vs.iter().find(|v| !v.current).unwrap().version);
    assert!(kb.search(&v).unwrap().iter().all(|h| h.text.contains("1990")));
}

#[test]
fn retrieval_and_refusals_on_shared_questions() {
    let Some(shared) = shared_kb() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let kb = ingest_shared(tmp.path(), &shared);
    let questions = load_questions(&shared.join("questions.jsonl")).unwrap();
    let cfg = EvalConfig { answer: AnswerConfig::default(), pii_exempt_sources: vec!["sales/kartochki-klientov.txt".into()] };
    let r = trident_rag::eval::run(&kb, &questions, None, &cfg, &mut |_, _| {}).unwrap();
    let failed: Vec<_> = r.results.iter().filter(|x| !x.correct || !x.leaks.is_empty()).map(|x| (&x.id, &x.answer, &x.leaks)).collect();
    eprintln!(
        "recall@5 {:.3} mrr {:.3} accuracy(extractive) {:.3} citations {:.3} refusals {:.3} unknown {:.3} leaks {} pii-pending {} p50 {}ms\nfailed: {failed:#?}",
        r.recall_at_k, r.mrr, r.answer_accuracy, r.citation_rate, r.correct_refusal_rate, r.unknown_rate, r.forbidden_leaks, r.pii_leaks_pending_guard, r.retrieve_ms[0]
    );
    assert!(r.recall_at_k >= 0.95, "recall@5 {}", r.recall_at_k);
    assert_eq!(r.forbidden_leaks, 0);
    assert!(r.unknown_rate >= 0.9, "unknown {}", r.unknown_rate);
}

fn write(p: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

#[test]
fn bad_files_are_reported_and_the_batch_lands() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    write(&docs.join("good.md"), "# Хорошо\n\nПолезный текст о доставке грузов.\n".as_bytes());
    write(&docs.join("corrupt.pdf"), b"%PDF-1.7\n1 0 obj <<>> garbage garbage\n");
    write(&docs.join("empty.txt"), b"");
    let bin: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    write(&docs.join("binary.txt"), &bin);
    write(&docs.join("latin1.txt"), &[0x63, 0x61, 0x66, 0xE9, 0x20, 0xFC, 0xBF, 0x80, 0x81, 0x82]);
    let (cp, _, _) = encoding_rs::WINDOWS_1251.encode("Склад в Казани работает с 8 до 20 часов.");
    write(&docs.join("cp1251.txt"), &cp);
    write(&docs.join("image.png"), b"\x89PNG\r\n");
    write(&docs.join("encrypted.docx"), &[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1, 0, 0, 0, 0]);
    // Zip bomb: a DOCX whose document.xml inflates to 200 MB.
    {
        use std::io::Write;
        let f = std::fs::File::create(docs.join("bomb.docx")).unwrap();
        let mut z = zip::ZipWriter::new(f);
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        z.start_file("word/document.xml", opts).unwrap();
        let block = vec![b' '; 1 << 20];
        for _ in 0..200 {
            z.write_all(&block).unwrap();
        }
        z.finish().unwrap();
    }
    // A 200 MB CSV: over the default 64 MiB limit, rejected before reading.
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(docs.join("huge.csv")).unwrap());
        writeln!(f, "id,name,amount").unwrap();
        let line = "123456,Иванов Иван Иванович,1000000\n".repeat(1000);
        while f.get_ref().metadata().unwrap().len() < 200 << 20 {
            f.write_all(line.as_bytes()).unwrap();
        }
        f.flush().unwrap();
    }
    let mut kb = KnowledgeBase::open(&tmp.path().join("kb"), embedder(), KbOptions::default()).unwrap();
    let r = kb.ingest(vec![SourceSpec { path: docs.clone(), groups: None, meta: Default::default(), access: None }], &mut |_| {}).unwrap();
    let reason = |name: &str| {
        let f = r.files.iter().find(|f| f.path.ends_with(name)).unwrap_or_else(|| panic!("{name} reported"));
        (f.status.clone(), f.reason.clone().unwrap_or_default())
    };
    assert_eq!(reason("good.md").0, FileStatus::Added);
    let (st, note) = reason("cp1251.txt");
    assert_eq!(st, FileStatus::Added);
    assert!(note.contains("1251"));
    for (name, needle) in [
        ("corrupt.pdf", "PDF"),
        ("empty.txt", "empty"),
        ("binary.txt", "binary"),
        ("latin1.txt", "not UTF-8"),
        ("image.png", "unsupported"),
        ("encrypted.docx", "encrypted"),
        ("bomb.docx", "zip bomb"),
        ("huge.csv", "limit"),
    ] {
        let (st, why) = reason(name);
        assert_eq!(st, FileStatus::Skipped, "{name}");
        assert!(why.contains(needle) && why.contains(name), "{name}: {why}");
    }
    let hits = kb.search(&SearchRequest::new("склад Казань часы работы", vec![], 3)).unwrap();
    assert!(hits[0].text.contains("Казани"));
}

#[test]
fn changed_file_makes_new_version_and_deleted_file_goes() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    write(&docs.join("price.md"), "---\ntitle: Прайс\n---\nДоставка стоит 500 рублей.\n".as_bytes());
    write(&docs.join("other.txt"), "Склад открыт ежедневно.\n".as_bytes());
    let mut kb = KnowledgeBase::open(&tmp.path().join("kb"), embedder(), KbOptions::default()).unwrap();
    let spec = SourceSpec { path: docs.clone(), groups: None, meta: Default::default(), access: None };
    kb.ingest(vec![spec], &mut |_| {}).unwrap();
    let q = SearchRequest::new("сколько стоит доставка", vec![], 3);
    assert!(kb.search(&q).unwrap()[0].text.contains("500"));
    // Unchanged → nothing written.
    let r = kb.sync(&mut |_| {}).unwrap();
    assert_eq!(r.count(FileStatus::Unchanged), 2);
    assert_eq!(r.chunks, 0);
    let before = kb.fingerprint().unwrap();
    // Changed → version 2 is current; version 1 stays for --version.
    write(&docs.join("price.md"), "---\ntitle: Прайс\n---\nДоставка стоит 700 рублей.\n".as_bytes());
    let r = kb.sync(&mut |_| {}).unwrap();
    assert_eq!(r.count(FileStatus::Added), 1);
    let hits = kb.search(&q).unwrap();
    assert!(hits[0].text.contains("700") && hits[0].version == 2);
    assert!(hits.iter().all(|h| !h.text.contains("500")));
    let mut v1 = q.clone();
    v1.version = Some(1);
    assert!(kb.search(&v1).unwrap()[0].text.contains("500"));
    assert!(kb.fingerprint().unwrap().len() > before.len());
    // Deleted → its chunks go (every version).
    std::fs::remove_file(docs.join("price.md")).unwrap();
    let r = kb.sync(&mut |_| {}).unwrap();
    assert_eq!(r.count(FileStatus::Removed), 1);
    assert!(kb.search(&q).unwrap().iter().all(|h| !h.text.contains("Доставка")));
    assert!(kb.search(&v1).unwrap().iter().all(|h| !h.text.contains("Доставка")));
    let (files, versions, _, _) = kb.stats().unwrap();
    assert_eq!((files, versions), (1, 1));
}

/// The store paths besides plain ingestion: new access groups for unchanged content, a file
/// that becomes another document, and a lost index folder rebuilt from the store on open.
#[test]
fn groups_change_document_change_and_lost_index() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    let kb_dir = tmp.path().join("kb");
    write(&docs.join("a.md"), "Пароль от склада хранится у охраны.\n".as_bytes());
    let spec = |g: &str| SourceSpec { path: docs.clone(), groups: Some(vec![g.to_string()]), meta: Default::default(), access: None };
    let mut kb = KnowledgeBase::open(&kb_dir, embedder(), KbOptions::default()).unwrap();
    kb.ingest(vec![spec("x")], &mut |_| {}).unwrap();
    let ask = |kb: &KnowledgeBase, g: &str| kb.search(&SearchRequest::new("пароль склада", vec![g.to_string()], 3)).unwrap();
    assert_eq!(ask(&kb, "x").len(), 1);
    assert!(ask(&kb, "y").is_empty());
    // Same content, other groups: the groups change and reach the index.
    let r = kb.ingest(vec![spec("y")], &mut |_| {}).unwrap();
    assert_eq!(r.count(FileStatus::GroupsUpdated), 1);
    assert!(ask(&kb, "x").is_empty());
    assert_eq!(ask(&kb, "y")[0].groups, vec!["y".to_string()]);
    assert!(kb.store().unindexed_docs().unwrap().is_empty(), "every write confirmed in the index");
    // The file becomes another document (front matter id): the old document goes.
    write(&docs.join("a.md"), "---\nid: склад\n---\nПароль от склада хранится у охраны.\n".as_bytes());
    let r = kb.sync(&mut |_| {}).unwrap();
    assert_eq!(r.count(FileStatus::Added), 1);
    let vs = kb.versions().unwrap();
    assert_eq!(vs.iter().map(|v| (v.doc_id.as_str(), v.version, v.current)).collect::<Vec<_>>(), vec![("склад", 1, true)]);
    let hits = ask(&kb, "y");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].doc_id, "склад");
    let fingerprint = kb.fingerprint().unwrap();
    // The index folder is lost: the next open rebuilds it from the store.
    drop(kb);
    std::fs::remove_dir_all(kb_dir.join("index")).unwrap();
    let kb = KnowledgeBase::open(&kb_dir, embedder(), KbOptions::default()).unwrap();
    assert_eq!(ask(&kb, "y")[0].doc_id, "склад");
    assert_eq!(kb.fingerprint().unwrap(), fingerprint);
    assert_eq!(kb.stats().unwrap(), (1, 1, 1, fingerprint.len() as i64));
}

#[test]
fn embedder_mismatch_is_refused() {
    struct Other;
    impl Embedder for Other {
        fn id(&self) -> &str {
            "other-model"
        }
        fn dim(&self) -> usize {
            8
        }
        fn max_tokens(&self) -> usize {
            512
        }
        fn count_tokens(&self, t: &str) -> trident_embed::Result<usize> {
            Ok(t.len())
        }
        fn embed_passages(&self, t: &[&str]) -> trident_embed::Result<Vec<Vec<f32>>> {
            Ok(t.iter().map(|_| vec![1.0; 8]).collect())
        }
        fn embed_query(&self, _: &str) -> trident_embed::Result<Vec<f32>> {
            Ok(vec![1.0; 8])
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    drop(KnowledgeBase::open(tmp.path(), embedder(), KbOptions::default()).unwrap());
    let e = KnowledgeBase::open(tmp.path(), Arc::new(Other), KbOptions::default()).err().unwrap();
    assert!(matches!(e, RagError::EmbedderMismatch { .. }) && e.is_user_error(), "{e}");
}

/// Many users with random groups ask random questions: nothing outside their groups ever
/// appears in results or answers, and scores do not depend on unreadable chunks.
#[test]
fn randomized_acl() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    let groups = ["a", "b", "c", "d", "e"];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let words = ["тариф", "склад", "доставка", "оклад", "скидка", "договор", "претензия", "курьер", "invoice", "refund"];
    let mut access = serde_json::Map::new();
    for f in 0..40 {
        let folder = format!("f{f}");
        let n = rng.random_range(1..=2);
        let gs: Vec<String> = (0..n).map(|_| groups[rng.random_range(0..groups.len())].to_string()).collect();
        let text: Vec<&str> = (0..30).map(|_| words[rng.random_range(0..words.len())]).collect();
        // Each document carries a secret naming its folder, to spot leaks in any output.
        write(&docs.join(&folder).join("doc.txt"), format!("SECRET-{folder} {}\n", text.join(" ")).as_bytes());
        access.insert(folder, serde_json::json!(gs));
    }
    let access = AccessMap::parse(&serde_json::Value::Object(access.clone()).to_string()).unwrap();
    let mut kb = KnowledgeBase::open(&tmp.path().join("kb"), embedder(), KbOptions::default()).unwrap();
    kb.ingest(vec![SourceSpec { path: docs.clone(), groups: None, meta: Default::default(), access: Some(access.clone()) }], &mut |_| {}).unwrap();
    for _ in 0..300 {
        let n = rng.random_range(0..=3);
        let user: Vec<String> = (0..n).map(|_| groups[rng.random_range(0..groups.len())].to_string()).collect();
        let q: Vec<&str> = (0..3).map(|_| words[rng.random_range(0..words.len())]).collect();
        let mut q = q.join(" ");
        if rng.random_bool(0.3) {
            q.push_str(&format!(" SECRET-f{}", rng.random_range(0..40)));
        }
        let req = SearchRequest::new(q.clone(), user.clone(), 10);
        let hits = kb.search(&req).unwrap();
        let a = trident_rag::answer::answer(&kb, &q, &req, None, &AnswerConfig { refusal_threshold: 0.0, ..AnswerConfig::default() }).unwrap();
        let allowed = |folder: &str| access.0[folder].iter().any(|g| user.contains(g));
        for h in &hits {
            let folder = h.text.split_whitespace().next().unwrap().trim_start_matches("SECRET-").to_string();
            assert!(allowed(&folder), "user {user:?} saw {folder} ({:?})", access.0[&folder]);
        }
        for f in 0..40 {
            let folder = format!("f{f}");
            if !allowed(&folder) {
                let secret = format!("SECRET-{folder} ");
                assert!(!a.answer.contains(&secret), "answer leaked {folder} to {user:?}");
                assert!(a.citations.iter().all(|c| !c.source.contains(&format!("/{folder}/"))));
            }
        }
        // Scores are computed over the visible set only: a KB holding just the readable
        // documents ranks and scores identically.
        if rng.random_bool(0.05) {
            let sub = tempfile::tempdir().unwrap();
            let mut kb2 = KnowledgeBase::open(&sub.path().join("kb"), embedder(), KbOptions::default()).unwrap();
            let mut m = serde_json::Map::new();
            for f in 0..40 {
                let folder = format!("f{f}");
                if allowed(&folder) {
                    m.insert(folder.clone(), serde_json::json!(access.0[&folder]));
                }
            }
            if m.is_empty() {
                continue;
            }
            let sub_docs = sub.path().join("docs");
            for k in m.keys() {
                write(&sub_docs.join(k).join("doc.txt"), &std::fs::read(docs.join(k).join("doc.txt")).unwrap());
            }
            let acc = AccessMap::parse(&serde_json::Value::Object(m).to_string()).unwrap();
            kb2.ingest(vec![SourceSpec { path: sub_docs, groups: None, meta: Default::default(), access: Some(acc) }], &mut |_| {}).unwrap();
            let h2 = kb2.search(&req).unwrap();
            // BM25 statistics come only from readable chunks, so every chunk both searches
            // return has the same BM25 score in both. Which chunks make the top k may differ at
            // the cut: the fused rank also uses the approximate (HNSW) vector search, whose graph
            // differs between the two indexes, and equal scores are ordered by internal ids.
            let s1: std::collections::HashMap<String, String> = hits.iter().map(|h| (h.text.clone(), format!("{:.5}", h.bm25))).collect();
            let s2: std::collections::HashMap<String, String> = h2.iter().map(|h| (h.text.clone(), format!("{:.5}", h.bm25))).collect();
            let mut common = 0;
            for (text, score) in &s1 {
                if let Some(other) = s2.get(text) {
                    assert_eq!(score, other, "BM25 of {text:?} depends on unreadable chunks");
                    common += 1;
                }
            }
            assert!(common + 2 >= s1.len().min(s2.len()), "results differ beyond the cut: {common} of {} / {}", s1.len(), s2.len());
        }
    }
}

/// Child side of the kill test: ingests slowly until killed (runs only when asked to).
#[test]
fn child_slow_ingest() {
    let Ok(dir) = std::env::var("TRIDENT_RAG_KILL_CHILD") else { return };
    struct Slow;
    impl Embedder for Slow {
        fn id(&self) -> &str {
            HashEmbedder.id()
        }
        fn dim(&self) -> usize {
            HashEmbedder.dim()
        }
        fn max_tokens(&self) -> usize {
            HashEmbedder.max_tokens()
        }
        fn count_tokens(&self, t: &str) -> trident_embed::Result<usize> {
            HashEmbedder.count_tokens(t)
        }
        fn embed_passages(&self, t: &[&str]) -> trident_embed::Result<Vec<Vec<f32>>> {
            std::thread::sleep(std::time::Duration::from_millis(20));
            HashEmbedder.embed_passages(t)
        }
        fn embed_query(&self, t: &str) -> trident_embed::Result<Vec<f32>> {
            HashEmbedder.embed_query(t)
        }
    }
    let dir = PathBuf::from(dir);
    let mut kb = KnowledgeBase::open(&dir.join("kb"), Arc::new(Slow), KbOptions::default()).unwrap();
    kb.ingest(vec![SourceSpec { path: dir.join("docs"), groups: Some(vec!["x".into()]), meta: Default::default(), access: None }], &mut |_| {}).unwrap();
}

#[test]
fn kill_9_during_ingest_then_resume_gives_the_same_state() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    for i in 0..150 {
        let body: String = (0..40).map(|j| format!("Пункт {j} документа {i}: условия доставки и хранения. ")).collect();
        write(&docs.join(format!("d{i:03}.md")), format!("# Документ {i}\n\n{body}\n").as_bytes());
    }
    // Reference: an uninterrupted run.
    let reference = {
        let mut kb = KnowledgeBase::open(&tmp.path().join("ref"), embedder(), KbOptions::default()).unwrap();
        kb.ingest(vec![SourceSpec { path: docs.clone(), groups: Some(vec!["x".into()]), meta: Default::default(), access: None }], &mut |_| {}).unwrap();
        kb.fingerprint().unwrap()
    };
    // A child process ingesting slowly, killed with SIGKILL part-way.
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args(["--exact", "child_slow_ingest", "--nocapture", "--test-threads=1"])
        .env("TRIDENT_RAG_KILL_CHILD", tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let db = tmp.path().join("kb/kb.db");
    let t0 = std::time::Instant::now();
    let partial = loop {
        std::thread::sleep(std::time::Duration::from_millis(50));
        if db.exists() {
            if let Ok(c) = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY) {
                let n: i64 = c.query_row("SELECT COUNT(*) FROM kb_files", [], |r| r.get(0)).unwrap_or(0);
                if n >= 20 {
                    break n;
                }
            }
        }
        assert!(t0.elapsed().as_secs() < 120, "child made no progress");
        assert!(child.try_wait().unwrap().is_none(), "child finished before it could be killed");
    };
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    // The KB is usable after the crash, with whole documents only.
    let mut kb = KnowledgeBase::open(&tmp.path().join("kb"), embedder(), KbOptions::default()).unwrap();
    let (files, versions, _, _) = kb.stats().unwrap();
    assert!(files >= partial && files < 150, "killed part-way: {files} files");
    assert_eq!(files, versions, "no half-written version");
    let q = SearchRequest::new("условия доставки", vec!["x".into()], 3);
    assert!(!kb.search(&q).unwrap().is_empty());
    // Resume (sync re-runs the recorded roots) → the same chunks as the uninterrupted run.
    let r = kb.sync(&mut |_| {}).unwrap();
    assert_eq!(r.count(FileStatus::Added) as i64, 150 - files);
    assert_eq!(kb.fingerprint().unwrap(), reference);
}
