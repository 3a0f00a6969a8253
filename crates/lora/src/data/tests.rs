use super::*;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write fixture");
    p
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn rejected_at(r: &Report) -> Vec<(usize, Option<&str>, RejectKind)> {
    r.rejected.iter().map(|x| (x.line, x.field.as_deref(), x.kind)).collect()
}

const QA_FIXTURE: &str = concat!(
    r#"{"question": "Сколько стоит тариф Бизнес?", "answer": "2490 ₽ за пользователя в месяц.", "category": "тарифы"}"#, "\n",
    r#"{"question": "Как вернуть деньги?", "answer": "Напишите на billing@romashka.example.", "category": "возврат"}"#, "\n",
    "\n",
    r#"{"question": "broken", "answer": }"#, "\n",
    r#"{"question": "Где ответ?", "category": "тарифы"}"#, "\n",
    r#"{"question": "Пустой ответ", "answer": "   ", "category": "тарифы"}"#, "\n",
    r#"{"question": "Число", "answer": 42}"#, "\n",
    r#"["not", "an", "object"]"#, "\n",
    r#"{"question": "Категория-число", "answer": "ok", "category": 7}"#, "\n",
    r#"{"question": "  Мой телефон +7 916 123-45-67, почта ivan@mail-example.ru  ", "answer": "Здравствуйте!\r\nПерезвоним.", "category": "доступ"}"#, "\n",
    r#"{"question": "JSON-ответ", "answer": {"category": "сбой", "priority": "высокий"}, "category": "сбой"}"#, "\n",
    r#"{"foo": 1, "bar": 2}"#, "\n",
    r#"{"prompt": "Алиас prompt", "completion": "Алиас completion"}"#, "\n",
);

#[test]
fn qa_rows_are_validated_with_line_and_field() {
    let d = tmp();
    let p = write(d.path(), "qa.jsonl", QA_FIXTURE);
    let r = check(&p, &Options::default()).expect("check").report;
    assert_eq!(
        rejected_at(&r),
        vec![
            (4, None, RejectKind::BadJson),
            (5, Some("answer"), RejectKind::MissingField),
            (6, Some("answer"), RejectKind::Empty),
            (7, Some("answer"), RejectKind::WrongType),
            (8, None, RejectKind::NotObject),
            (9, Some("category"), RejectKind::WrongType),
            (12, None, RejectKind::UnknownShape),
        ]
    );
    assert!(r.rejected.iter().all(|x| x.file.ends_with("qa.jsonl")));
    assert_eq!(r.counts.rows_read, 12);
    assert_eq!(r.counts.blank_lines, 1);
    assert_eq!(r.counts.kept, 5);
    assert_eq!(r.counts.rejected, 7);
    assert_eq!(r.counts.rows_read, r.counts.kept + r.counts.rejected + r.counts.duplicates_removed);
    // Line 10: trimmed + CRLF; line 11: answer object serialised.
    let fixed: BTreeSet<(usize, FixKind)> = r.fixes.iter().map(|f| (f.line, f.kind)).collect();
    assert!(fixed.contains(&(10, FixKind::TrimmedWhitespace)));
    assert!(fixed.contains(&(10, FixKind::LineEndings)));
    assert!(fixed.contains(&(11, FixKind::StringifiedJson)));
    assert_eq!(r.counts.fixed, 2);
    assert_eq!(r.source.format, "jsonl:qa");
    // The rejection message names the file and line.
    assert!(r.rejected[0].to_string().contains("qa.jsonl:4:"), "{}", r.rejected[0]);
}

#[test]
fn anonymisation_happens_before_output_and_is_counted() {
    let d = tmp();
    let p = write(d.path(), "qa.jsonl", QA_FIXTURE);
    let prepared = check(&p, &Options::default()).expect("check");
    let all: Vec<&Sample> = prepared.train.iter().chain(&prepared.heldout).collect();
    let row10 = all.iter().find(|s| s.source_line == 10).expect("line 10 kept");
    assert_eq!(row10.messages[0].content, "Мой телефон [PHONE], почта [EMAIL]");
    assert_eq!(row10.messages[1].content, "Здравствуйте!\nПерезвоним.");
    let a = &prepared.report.anonymization;
    assert_eq!(a.findings_by_kind.get(&PiiKind::Phone), Some(&1));
    // billing@romashka.example is masked too unless allowed.
    assert_eq!(a.findings_by_kind.get(&PiiKind::Email), Some(&2));
    assert_eq!(a.rows_with_findings, 2);

    let opts = Options { pii_allow: vec!["@romashka.example".into()], ..Options::default() };
    let prepared = check(&p, &opts).expect("check");
    let row2 = prepared.train.iter().chain(&prepared.heldout).find(|s| s.source_line == 2).expect("line 2");
    assert_eq!(row2.answer(), "Напишите на billing@romashka.example.");
    assert_eq!(prepared.report.anonymization.allowed_by_kind.get(&PiiKind::Email), Some(&1));
}

#[test]
fn too_long_samples_are_rejected_with_estimate() {
    let d = tmp();
    let long = "слово ".repeat(500);
    let text = format!("{{\"question\": \"{long}\", \"answer\": \"ok\"}}\n{{\"question\": \"short\", \"answer\": \"ok\"}}\n");
    let p = write(d.path(), "long.jsonl", &text);
    let r = check(&p, &Options { max_tokens: Some(200), ..Options::default() }).expect("check").report;
    assert_eq!(rejected_at(&r), vec![(1, None, RejectKind::TooLong)]);
    assert!(r.rejected[0].reason.contains("--max-tokens 200"));

    struct Words;
    impl TokenCounter for Words {
        fn count(&self, text: &str) -> usize {
            text.split_whitespace().count()
        }
        fn name(&self) -> String {
            "words".into()
        }
    }
    let r = check_with(&p, &Options { max_tokens: Some(600), ..Options::default() }, &Words).expect("check").report;
    assert!(r.rejected.is_empty());
    assert_eq!(r.tool.token_counter, "words");
}

#[test]
fn instruction_shape() {
    let d = tmp();
    let text = concat!(
        r#"{"instruction": "Переведи на английский", "input": "Привет", "output": "Hello", "system": "Ты переводчик"}"#, "\n",
        r#"{"instruction": "Скажи привет", "output": "Привет"}"#, "\n",
        r#"{"instruction": "Без ответа", "input": "x"}"#, "\n",
        r#"{"instruction": "", "output": "x"}"#, "\n",
    );
    let p = write(d.path(), "ins.jsonl", text);
    let pr = check(&p, &Options { heldout: 0.0, ..Options::default() }).expect("check");
    assert_eq!(rejected_at(&pr.report), vec![(3, Some("output"), RejectKind::MissingField), (4, Some("instruction"), RejectKind::Empty)]);
    let first = &pr.train[0];
    assert_eq!(first.messages.iter().map(|m| m.role).collect::<Vec<_>>(), vec![Role::System, Role::User, Role::Assistant]);
    assert_eq!(first.messages[1].content, "Переведи на английский\n\nПривет");
    assert_eq!(pr.train[1].messages[0].content, "Скажи привет");
    assert_eq!(pr.report.source.format, "jsonl:instruction");
    // Forcing another shape turns the rows into missing-field rejections.
    let r = check(&p, &Options { format: InputFormat::Qa, ..Options::default() });
    assert!(matches!(r, Err(LoraError::Unparseable { .. })));
}

#[test]
fn messages_shape() {
    let d = tmp();
    let text = concat!(
        r#"{"messages": [{"role": "user", "content": "Привет"}, {"role": "assistant", "content": "Здравствуйте!"}], "category": "прочее"}"#, "\n",
        r#"{"system": "Будь краток", "messages": [{"role": "user", "content": [{"type": "text", "text": "Часть 1. "}, {"type": "text", "text": "Часть 2."}]}, {"role": "assistant", "content": "Ок"}]}"#, "\n",
        r#"{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]}"#, "\n",
        r#"{"messages": [{"role": "user", "content": "a"}]}"#, "\n",
        r#"{"messages": [{"role": "tool", "content": "a"}]}"#, "\n",
        r#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]}"#, "\n",
        r#"{"messages": "text"}"#, "\n",
        r#"{"messages": [{"role": "user", "content": "Вопрос"}, {"role": "assistant", "content": "Ответ"}, {"role": "user", "content": "Ещё"}, {"role": "assistant", "content": "Ещё ответ"}]}"#, "\n",
        r#"{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}], "system": "other"}"#, "\n",
    );
    let p = write(d.path(), "chat.jsonl", text);
    let pr = check(&p, &Options { heldout: 0.0, ..Options::default() }).expect("check");
    assert_eq!(
        rejected_at(&pr.report),
        vec![
            (3, Some("messages[1].role"), RejectKind::BadRoles),
            (4, Some("messages"), RejectKind::BadRoles),
            (5, Some("messages[0].role"), RejectKind::BadRoles),
            (6, Some("messages[1].content"), RejectKind::Empty),
            (7, Some("messages"), RejectKind::WrongType),
            (9, Some("system"), RejectKind::BadRoles),
        ]
    );
    let second = pr.train.iter().find(|s| s.source_line == 2).expect("line 2");
    assert_eq!(second.messages[0], Message { role: Role::System, content: "Будь краток".into() });
    assert_eq!(second.messages[1].content, "Часть 1. Часть 2.");
    assert!(pr.report.fixes.iter().any(|f| f.line == 2 && f.kind == FixKind::JoinedContentParts));
    let multi = pr.train.iter().find(|s| s.source_line == 8).expect("line 8");
    assert_eq!(multi.messages.len(), 4);
    assert_eq!(multi.question(), "Вопрос\nЕщё");
}

#[test]
fn csv_with_mapping_and_broken_records() {
    let d = tmp();
    let text = "\u{FEFF}Вопрос;Ответ;Тема\n\
                Как сбросить пароль?;Настройки — Пользователи;доступ\n\
                \"Многострочный\nвопрос\";\"Ответ; с точкой с запятой\";доступ\n\
                Лишнее поле;ответ;доступ;лишнее\n\
                Без ответа;;доступ\n\
                Карта 4111 1111 1111 1111;Спасибо;возврат\n";
    let p = write(d.path(), "data.csv", text);
    // Without a mapping the header has no known columns: the whole file is refused.
    let e = check(&p, &Options::default()).expect_err("no mapping");
    assert!(e.is_user_error());
    assert!(e.to_string().contains("--map"), "{e}");
    let map = FieldMap::parse("question=Вопрос,answer=Ответ,category=Тема").expect("map");
    let pr = check(&p, &Options { map, heldout: 0.0, ..Options::default() }).expect("check");
    assert_eq!(rejected_at(&pr.report), vec![(5, None, RejectKind::BadCsv), (6, Some("Ответ"), RejectKind::Empty)]);
    assert_eq!(pr.report.source.format, "csv:qa");
    assert_eq!(pr.train.len(), 3);
    assert_eq!(pr.train[1].messages[0].content, "Многострочный\nвопрос");
    assert_eq!(pr.train[1].source_line, 3);
    assert_eq!(pr.train[2].messages[0].content, "Карта [CARD]");
    assert_eq!(pr.train[0].category.as_deref(), Some("доступ"));
    assert!(pr.report.fixes.iter().any(|f| f.kind == FixKind::ByteOrderMark));
    // A mapping to a column that does not exist is a file-level error.
    let bad = Options { map: FieldMap::parse("question=Q,answer=A").expect("map"), ..Options::default() };
    assert!(matches!(check(&p, &bad), Err(LoraError::Unparseable { .. })));
}

#[test]
fn csv_default_columns_and_jsonl_map() {
    let d = tmp();
    let p = write(d.path(), "plain.csv", "question,answer,category\nq1,a1,x\nq2,a2,y\n");
    let pr = check(&p, &Options::default()).expect("check");
    assert_eq!(pr.report.counts.kept, 2);
    let p = write(d.path(), "renamed.jsonl", "{\"ticket\": \"t\", \"reply\": \"r\"}\n");
    let opts = Options { map: FieldMap::parse("question=ticket,answer=reply").expect("map"), ..Options::default() };
    let pr = check(&p, &opts).expect("check");
    assert_eq!(pr.train.len() + pr.heldout.len(), 1);
    assert!(FieldMap::parse("question").is_err());
    assert!(FieldMap::parse("questoin=x").is_err());
    assert!(FieldMap::parse("question=a,question=b").is_err());
}

#[test]
fn unreadable_files_are_user_errors() {
    let d = tmp();
    let e = check(&d.path().join("missing.jsonl"), &Options::default()).expect_err("missing");
    assert!(e.is_user_error(), "{e}");
    let p = write(d.path(), "garbage.jsonl", "this is not json\nnor this\n");
    let e = check(&p, &Options::default()).expect_err("garbage");
    assert!(e.is_user_error());
    assert!(e.to_string().contains("garbage.jsonl:1: bad JSON"), "{e}");
    let p = write(d.path(), "empty.jsonl", "");
    assert!(check(&p, &Options::default()).expect_err("empty").is_user_error());
    let p = write(d.path(), "binary.jsonl", "\u{0}\u{1}\u{2}");
    assert!(check(&p, &Options::default()).is_err());
    let bad = Options { heldout: 1.5, ..Options::default() };
    assert!(check(&p, &bad).expect_err("heldout").is_user_error());
}

#[test]
fn prepare_writes_atomically_and_deterministically() {
    let d = tmp();
    let mut text = String::new();
    for i in 0..60 {
        let cat = ["a", "b", "c"][i % 3];
        text.push_str(&format!("{{\"question\": \"Вопрос номер {i} про тему {cat} и что-то ещё {}\", \"answer\": \"Ответ {i}\", \"category\": \"{cat}\"}}\n", i * 7919 % 1000));
    }
    let p = write(d.path(), "in.jsonl", &text);
    let out = d.path().join("out");
    let opts = Options { heldout: 0.2, seed: 5, near_dup_threshold: 0.95, ..Options::default() };
    let r1 = prepare(&p, &out, &opts).expect("prepare");
    let train1 = std::fs::read(out.join("train.jsonl")).expect("train");
    let held1 = std::fs::read(out.join("heldout.jsonl")).expect("heldout");
    let report: Report = serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("report")).expect("report parses");
    assert_eq!(report.dataset_sha256, r1.dataset_sha256);
    assert_eq!(report.source.sha256.len(), 64);
    assert_eq!(report.counts.train + report.counts.heldout, 60);
    assert_eq!(read_prepared(&out.join("train.jsonl")).expect("read back").len(), report.counts.train);
    for c in report.balance.categories.values() {
        assert_eq!(c.heldout, 4, "{:?}", report.balance);
    }
    // Same seed → same bytes (in a fresh directory and replacing the old one).
    let r2 = prepare(&p, &out, &opts).expect("again");
    assert_eq!(std::fs::read(out.join("train.jsonl")).expect("train"), train1);
    assert_eq!(std::fs::read(out.join("heldout.jsonl")).expect("held"), held1);
    assert_eq!(r1.dataset_sha256, r2.dataset_sha256);
    // Another seed → another split.
    let out2 = d.path().join("out2");
    let r3 = prepare(&p, &out2, &Options { seed: 6, ..opts.clone() }).expect("seed 6");
    assert_ne!(r3.dataset_sha256, r1.dataset_sha256);
    // No temporary directories are left behind.
    let names: Vec<String> = std::fs::read_dir(d.path()).expect("ls").map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");

    // A failing prepare leaves the existing directory untouched.
    let bad = write(d.path(), "bad.jsonl", "not json\n");
    assert!(prepare(&bad, &out, &opts).is_err());
    assert_eq!(std::fs::read(out.join("train.jsonl")).expect("train"), train1);
    // A directory with foreign files is refused, and left as it was.
    let foreign = d.path().join("foreign");
    std::fs::create_dir(&foreign).expect("mkdir");
    write(&foreign, "notes.txt", "keep me");
    let e = prepare(&p, &foreign, &opts).expect_err("foreign dir");
    assert!(e.is_user_error());
    assert_eq!(std::fs::read_to_string(foreign.join("notes.txt")).expect("kept"), "keep me");
    assert!(!foreign.join("train.jsonl").exists());
}

#[test]
fn duplicates_are_removed_listed_and_never_split() {
    let d = tmp();
    let mut text = String::new();
    for i in 0..40 {
        text.push_str(&format!("{{\"question\": \"Уникальный вопрос {i} о {}\", \"answer\": \"a{i}\", \"category\": \"c\"}}\n", i * 31));
    }
    // Phones differ, so the rows differ — until anonymisation makes them equal.
    text.push_str("{\"question\": \"Забыл пароль. Мой телефон +79161112233\", \"answer\": \"Сбросьте пароль.\", \"category\": \"c\"}\n");
    text.push_str("{\"question\": \"Забыл пароль. Мой телефон +79164445566\", \"answer\": \"Сбросьте пароль.\", \"category\": \"c\"}\n");
    text.push_str("{\"question\": \"забыл  пароль. мой телефон +79167778899\", \"answer\": \"Другой ответ.\", \"category\": \"c\"}\n");
    let p = write(d.path(), "dups.jsonl", &text);
    let pr = check(&p, &Options { heldout: 0.5, ..Options::default() }).expect("check");
    let r = &pr.report;
    assert_eq!(r.dedup.exact_duplicates.len(), 1);
    assert_eq!((r.dedup.exact_duplicates[0].line, r.dedup.exact_duplicates[0].duplicate_of), (42, 41));
    assert_eq!(r.counts.duplicates_removed, 1);
    assert_eq!(r.dedup.conflicting_answers, vec![vec![41, 43]]);
    let side = |line| pr.heldout.iter().any(|s| s.source_line == line);
    assert_eq!(side(41), side(43));
    let keep = check(&p, &Options { keep_duplicates: true, ..Options::default() }).expect("keep");
    assert_eq!(keep.report.counts.kept, 43);
    let ids: BTreeSet<&str> = keep.train.iter().chain(&keep.heldout).map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), 43, "ids are unique even for kept duplicates");
}

#[test]
fn balance_warns_above_the_share() {
    let d = tmp();
    let mut text = String::new();
    for i in 0..20 {
        let cat = if i < 18 { "тарифы" } else { "сбой" };
        text.push_str(&format!("{{\"question\": \"Вопрос {i} {}\", \"answer\": \"a\", \"category\": \"{cat}\"}}\n", i * 977));
    }
    let p = write(d.path(), "skew.jsonl", &text);
    let r = check(&p, &Options::default()).expect("check").report;
    assert!((r.balance.max_share - 0.9).abs() < 1e-9);
    assert_eq!(r.balance.max_category.as_deref(), Some("тарифы"));
    assert!(r.warnings.iter().any(|w| w.contains("тарифы") && w.contains("90%")), "{:?}", r.warnings);
    let r = check(&p, &Options { balance_warn_share: 0.95, ..Options::default() }).expect("check").report;
    assert!(!r.warnings.iter().any(|w| w.contains("90%")));
}

/// Independent patterns for what must not survive `prepare` (not the guard's detectors).
fn leaks(text: &str) -> Vec<String> {
    let pats = [
        r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
        r"(?:\+7|\b8)[\s(-]*\d{3}[\s)-]*\d{3}[\s-]*\d{2}[\s-]*\d{2}",
        r"\b\d{4}[ -]?\d{4}[ -]?\d{4}[ -]?\d{4}\b",
    ];
    let mut out = Vec::new();
    for p in pats {
        let re = regex::Regex::new(p).expect("test regex");
        out.extend(re.find_iter(text).map(|m| m.as_str().to_string()));
    }
    out
}

#[test]
fn end_to_end_on_tickets_train() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/lora/tickets-train.jsonl");
    if !src.exists() {
        eprintln!("skipping: {} not found", src.display());
        return;
    }
    let d = tmp();
    let out = d.path().join("tickets");
    let opts = Options { seed: 7, ..Options::default() };
    let r = prepare(&src, &out, &opts).expect("prepare tickets");
    eprintln!(
        "tickets-train: read {} kept {} fixed {} rejected {} duplicates {} train {} heldout {}; findings {:?}; near pairs {}; groups {}; warnings {:?}",
        r.counts.rows_read,
        r.counts.kept,
        r.counts.fixed,
        r.counts.rejected,
        r.counts.duplicates_removed,
        r.counts.train,
        r.counts.heldout,
        r.anonymization.findings_by_kind,
        r.dedup.near_pairs_total,
        r.split.groups,
        r.warnings
    );
    // Every row is accounted for: nothing rejected; the only removals are listed duplicates.
    assert_eq!(r.counts.rows_read, 750);
    assert_eq!(r.counts.rejected, 0, "{:?}", r.rejected);
    assert_eq!(r.counts.kept + r.counts.duplicates_removed, 750);
    assert_eq!(r.dedup.exact_duplicates.len(), r.counts.duplicates_removed);

    // No phone, e-mail or card of the input survives (the company's address is masked too by
    // default and reported as a candidate for --allow).
    // Only the texts: ids are hex digests, which the independent patterns could mistake for numbers.
    let contents = |file: &str| -> String {
        let samples = read_prepared(&out.join(file)).expect("read back");
        samples.iter().flat_map(|s| s.messages.iter().map(|m| m.content.clone())).collect::<Vec<_>>().join("\n")
    };
    let train_text = contents("train.jsonl");
    let held_text = contents("heldout.jsonl");
    let source = std::fs::read_to_string(&src).expect("source");
    let secrets: BTreeSet<String> = source
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["question"].as_str().unwrap_or("").to_string())
        .flat_map(|q| leaks(&q))
        .collect();
    assert!(secrets.len() > 300, "the independent patterns find the input's personal data ({})", secrets.len());
    for s in &secrets {
        assert!(!train_text.contains(s.as_str()) && !held_text.contains(s.as_str()), "{s} survived");
    }
    assert!(leaks(&train_text).is_empty(), "{:?}", leaks(&train_text));
    assert!(leaks(&held_text).is_empty(), "{:?}", leaks(&held_text));
    assert!(r.anonymization.suggest_allow.contains(&"billing@romashka.example".to_string()));

    // Deterministic for a seed.
    let out2 = d.path().join("tickets2");
    let r2 = prepare(&src, &out2, &opts).expect("again");
    assert_eq!(r.dataset_sha256, r2.dataset_sha256);

    // Stratified: every category is held out near the requested share.
    for (cat, c) in &r.balance.categories {
        let share = c.heldout as f64 / c.count as f64;
        assert!((0.05..=0.15).contains(&share), "{cat}: {c:?}");
    }
    // No (normalised) question on both sides, and no near-duplicate pair split apart.
    let train = read_prepared(&out.join("train.jsonl")).expect("train");
    let held = read_prepared(&out.join("heldout.jsonl")).expect("held");
    let tq: BTreeSet<String> = train.iter().map(|s| text::question_key(&s.question())).collect();
    for s in &held {
        assert!(!tq.contains(&text::question_key(&s.question())), "question on both sides: line {}", s.source_line);
    }
    let held_lines: BTreeSet<usize> = held.iter().map(|s| s.source_line).collect();
    for p in &r.dedup.near_pairs {
        assert_eq!(held_lines.contains(&p.a), held_lines.contains(&p.b), "near pair {p:?} split");
    }
    // First names are not personal data to mask here: replies keep greeting by name.
    let greeting = regex::Regex::new(r"Здравствуйте, \p{Lu}\p{Ll}+!").expect("re");
    assert!(train.iter().filter(|s| greeting.is_match(s.answer())).count() > 100);
    // Answers keep their JSON format after masking.
    for s in train.iter().chain(&held) {
        let v: serde_json::Value = serde_json::from_str(s.answer()).expect("answer is still JSON");
        assert_eq!(v.as_object().map(|o| o.len()), Some(3));
    }

    // With the company's address allowed, it survives in replies and nothing else does.
    let out3 = d.path().join("tickets3");
    let opts3 = Options { pii_allow: vec!["@romashka.example".into()], ..opts };
    let r3 = prepare(&src, &out3, &opts3).expect("allow");
    let t3: String = read_prepared(&out3.join("train.jsonl"))
        .expect("read back")
        .iter()
        .flat_map(|s| s.messages.iter().map(|m| m.content.clone()))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(t3.contains("billing@romashka.example"));
    assert!(leaks(&t3).iter().all(|l| l == "billing@romashka.example"), "{:?}", leaks(&t3));
    assert_eq!(r3.anonymization.allowed_by_kind.get(&PiiKind::Email).copied(), Some(84));
}
