use super::*;
use std::path::PathBuf;

fn kinds_of(text: &str) -> Vec<(PiiKind, String)> {
    detect(text).into_iter().map(|f| (f.kind, f.text)).collect()
}

fn one(text: &str, kind: PiiKind, matched: &str) {
    let found = kinds_of(text);
    assert_eq!(found, vec![(kind, matched.to_string())], "in {text:?}");
}

fn none(text: &str) {
    let found = detect(text);
    assert!(found.is_empty(), "false positive in {text:?}: {found:?}");
}

#[test]
fn russian_phone_formats() {
    for p in [
        "+7 (916) 123-45-67",
        "+79161234567",
        "+7 916 123 45 67",
        "+7-916-123-45-67",
        "8-903-765-43-21",
        "8 (903) 765-43-21",
        "8(903)7654321",
        "89037654321",
        "8 800 555 35 35",
        "+7 (495) 123 4567",
        "+7\u{00A0}916\u{00A0}123\u{00A0}45\u{00A0}67",
    ] {
        one(&format!("Мой телефон {p}. Спасибо"), PiiKind::Phone, p);
        one(p, PiiKind::Phone, p);
    }
    one("звоните: (916) 123-45-67", PiiKind::Phone, "(916) 123-45-67");
    one("тел. 916 123-45-67", PiiKind::Phone, "916 123-45-67");
    one("Телефон для связи: 916 123 45 67", PiiKind::Phone, "916 123 45 67");
}

#[test]
fn international_phones() {
    one("Call +44 20 7946 0958 today", PiiKind::Phone, "+44 20 7946 0958");
    one("WhatsApp +1 (415) 555-2671.", PiiKind::Phone, "+1 (415) 555-2671");
    one("+380441234567", PiiKind::Phone, "+380441234567");
    // +7 must have exactly 11 digits; E.164 allows at most 15.
    none("+7 12345");
    none("+1234567890123456789");
}

#[test]
fn phone_rejects() {
    // Wrong area code for an 8-prefixed number, too few/many digits, glued to other text.
    none("8 123 456 78 90");
    none("8-903-765-43-2");
    none("артикул 890376543219");
    none("ID A89037654321");
    // A bare ten-digit number without a phone word is not taken.
    none("Заказ 9161234567 отправлен");
}

#[test]
fn emails() {
    one("Email для связи yulia.35@corp-example.com. Спасибо", PiiKind::Email, "yulia.35@corp-example.com");
    one("пишите на иван.петров@почта.рф", PiiKind::Email, "иван.петров@почта.рф");
    one("<a.sidorov+crm@vektor-example.ru>", PiiKind::Email, "a.sidorov+crm@vektor-example.ru");
    none("user@localhost");
    none("@romashka");
    none("a@b");
}

#[test]
fn cards_with_and_without_luhn() {
    let luhn_ok = "4276 3800 1234 5679";
    assert!(luhn_valid("4276380012345679"));
    let f = detect(&format!("Карта {luhn_ok}"));
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].kind, PiiKind::Card);
    assert!(f[0].confidence >= 0.95);

    one("4111-1111-1111-1111", PiiKind::Card, "4111-1111-1111-1111");
    one("4111111111111111", PiiKind::Card, "4111111111111111");
    one("Amex 3782 822463 10005", PiiKind::Card, "3782 822463 10005");
    // Card-shaped but Luhn-invalid (the tickets' made-up cards): still masked, lower confidence.
    let f = detect("Карта 3479 4514 3036 5235, верните деньги");
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].kind, PiiKind::Card);
    assert!(f[0].confidence < 0.95 && f[0].confidence >= 0.5);
    // Contiguous digits that fail Luhn with no card word: an id, not a card.
    none("Номер заказа 3479451430365235");
    // Mixed separators or odd grouping are not card numbers.
    none("3479-4514 3036-5235");
    none("123 4567 890 12345");
}

#[test]
fn passports() {
    one("Паспорт: 4510 123456", PiiKind::Passport, "4510 123456");
    one("паспорт серия 45 08 № 123456 выдан", PiiKind::Passport, "45 08 № 123456");
    one("серия 4508 номер 123456", PiiKind::Passport, "4508 номер 123456");
    one("4508 № 123456", PiiKind::Passport, "4508 № 123456");
    one("Passport 4510123456", PiiKind::Passport, "4510123456");
    // Without any passport word a "dddd dddddd" pair is not confident enough.
    none("В 2025 году 123456 заявок");
}

#[test]
fn inn_checksums() {
    one("ИНН: 7707083893", PiiKind::Inn, "7707083893");
    one("ИНН 500100732259", PiiKind::Inn, "500100732259");
    // A labelled but mistyped INN is still masked (at lower confidence)…
    let f = detect("ИНН 7707083894");
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].kind, PiiKind::Inn);
    assert!(f[0].confidence < 0.9);
    // …an unlabelled one is not, even when the checksum happens to pass.
    none("код 7707083893 в заказе");
    none("7707083894");
}

#[test]
fn snils_checksums() {
    one("СНИЛС: 112-233-445 95", PiiKind::Snils, "112-233-445 95");
    one("112-233-445 95", PiiKind::Snils, "112-233-445 95");
    one("снилс 11223344595", PiiKind::Snils, "11223344595");
    none("112-233-445 96");
    none("11223344596");
}

#[test]
fn ogrn_iban_ip() {
    one("ОГРН 1027700132195", PiiKind::Ogrn, "1027700132195");
    one("ОГРНИП 304500116000157", PiiKind::Ogrn, "304500116000157");
    none("ОГРН: нет, 102770013219");
    one("IBAN: GB82 WEST 1234 5698 7654 32 (UK)", PiiKind::Iban, "GB82 WEST 1234 5698 7654 32");
    one("DE89370400440532013000", PiiKind::Iban, "DE89370400440532013000");
    none("GB82 WEST 1234 5698 7654 33");
    one("Вход с адреса 192.168.10.4 заблокирован", PiiKind::Ip, "192.168.10.4");
    one("client 2001:db8:85a3::8a2e:370:7334 connected", PiiKind::Ip, "2001:db8:85a3::8a2e:370:7334");
    none("платформа 1С версия 8.3.22.1");
    none("999.1.1.1");
    none("встреча в 12:30:45");
}

#[test]
fn no_false_positives_on_prices_dates_codes() {
    for t in [
        "Тариф «Корпоративный» стоит 4190 ₽ за пользователя в месяц, для 28 пользователей — 117320 ₽ в месяц.",
        "Скидка 15% до 31.12.2026, цена 2490 ₽.",
        "Ошибка E-503 означает, что HTTP-сервис 1С недоступен.",
        "Заказ № 12345 от 15.03.2026, сумма 1 234 567,89 руб.",
        "Возврат в течение 10 рабочих дней, 30 календарных дней с оплаты, 152-ФЗ.",
        "В 2024 году тариф стоил 990 ₽, в 2026 — 1290 ₽.",
        "Время 10:00–19:00 по Москве, SLA 99,9%.",
        "Версия 8.3.24.1467, сборка 2026-03-15.",
        "ISO 27001, ГОСТ Р 57580.1-2017.",
        "Для 100 пользователей скидка 20 000 ₽ в 2026 году.",
    ] {
        none(t);
    }
}

#[test]
fn overlaps_prefer_the_longer_span() {
    // An e-mail whose local part is a phone number: one e-mail, not a phone inside it.
    one("79161234567@mail-example.ru", PiiKind::Email, "79161234567@mail-example.ru");
    // A card number is not also reported as a phone.
    let f = detect("8408 1051 7725 6386");
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].kind, PiiKind::Card);
}

#[test]
fn spans_are_byte_offsets_into_the_text() {
    let t = "Клиент Ёлкин, тел. +7 916 123-45-67, почта ёлкин@пример.рф";
    for f in detect(t) {
        assert_eq!(&t[f.span()], f.text);
    }
    assert_eq!(detect(t).len(), 2);
}

#[test]
fn typed_masking() {
    let m = Masker::default();
    let r = m.mask("Мой телефон +79126103464, почта olga.79@mail-example.ru, карта 4111 1111 1111 1111.");
    assert_eq!(r.text, "Мой телефон [PHONE], почта [EMAIL], карта [CARD].");
    assert_eq!(r.findings.len(), 3);
}

#[test]
fn pseudonyms_are_consistent_within_a_document() {
    let m = Masker::new(Detector::default(), MaskStyle::Pseudonym);
    let mut s = m.session();
    let a = s.mask("Звоните +7 916 123-45-67 или 8 (903) 765-43-21; a@x-example.ru");
    let b = s.mask("Повторяю: 89161234567, почта A@X-example.ru");
    assert_eq!(a.text, "Звоните [PHONE_1] или [PHONE_2]; [EMAIL_1]");
    assert_eq!(b.text, "Повторяю: [PHONE_1], почта [EMAIL_1]");
    // A new document starts again from 1.
    assert_eq!(m.mask("8 (903) 765-43-21").text, "[PHONE_1]");
}

#[test]
fn allow_list_keeps_organisation_contacts() {
    let m = Masker::default().with_allow(["@romashka.example", "+7 800 555-35-35"]).expect("valid allow-list");
    let r = m.mask("Пишите на billing@romashka.example или support@help.romashka.example, звоните 8-800-555-35-35, клиент: u@mail-example.ru");
    assert_eq!(
        r.text,
        "Пишите на billing@romashka.example или support@help.romashka.example, звоните 8-800-555-35-35, клиент: [EMAIL]"
    );
    assert_eq!(r.allowed.len(), 3);
    assert!(Masker::default().with_allow(["@"]).is_err());
    assert!(Masker::default().with_allow(["hello"]).is_err());
}

#[test]
fn names_only_when_enabled() {
    let t = "Меня зовут Сергей. Это Павел. ФИО: Иванов Пётр Сергеевич";
    assert!(detect(t).is_empty());
    let d = Detector::new(PiiKind::ALL.into_iter().collect(), DEFAULT_MIN_CONFIDENCE).expect("valid");
    let m = Masker::new(d, MaskStyle::Typed);
    assert_eq!(m.mask(t).text, "Меня зовут [NAME]. Это [NAME]. ФИО: [NAME]");
    // "это" inside a sentence followed by a lower-case word is not a name.
    assert_eq!(m.mask("это важно для 152-ФЗ").text, "это важно для 152-ФЗ");
}

#[test]
fn kind_lists_parse() {
    assert_eq!(PiiKind::parse_list("phone, EMAIL").expect("ok").len(), 2);
    assert_eq!(PiiKind::parse_list("all").expect("ok").len(), 10);
    assert_eq!(PiiKind::parse_list("default").expect("ok"), PiiKind::defaults());
    let e = PiiKind::parse_list("phone,emial").expect_err("typo");
    assert!(e.is_user_error());
    assert!(Detector::new(PiiKind::defaults(), 1.5).is_err());
}

#[test]
fn client_cards_file_is_fully_masked() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/kb/docs/sales/kartochki-klientov.txt");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!("skipping: {} not found", path.display());
        return;
    };
    let r = Masker::default().mask(&text);
    let mut by_kind = std::collections::BTreeMap::new();
    for f in &r.findings {
        *by_kind.entry(f.kind).or_insert(0) += 1;
    }
    assert_eq!(by_kind.get(&PiiKind::Phone), Some(&2), "{:?}", r.findings);
    assert_eq!(by_kind.get(&PiiKind::Email), Some(&2));
    assert_eq!(by_kind.get(&PiiKind::Passport), Some(&1));
    assert_eq!(by_kind.get(&PiiKind::Inn), Some(&1));
    assert_eq!(by_kind.get(&PiiKind::Snils), Some(&1));
    assert_eq!(by_kind.get(&PiiKind::Card), Some(&1));
    for secret in ["123-45-67", "765-43-21", "vektor-example", "mail-example", "123456", "7707083893", "445 95", "5678"] {
        assert!(!r.text.contains(secret), "{secret} survived:\n{}", r.text);
    }
    // The business text around them survives.
    assert!(r.text.contains("35 пользователей"));
    assert!(r.text.contains("тариф «Старт», 3 пользователя"));
}

#[test]
fn no_false_positives_on_public_docs_and_salaries() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/kb/docs");
    let Ok(dir) = std::fs::read_dir(root.join("public")) else {
        eprintln!("skipping: {} not found", root.display());
        return;
    };
    let mut checked = 0;
    for entry in dir.flatten() {
        let p = entry.path();
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "md" | "txt" | "html") {
            continue;
        }
        let text = std::fs::read_to_string(&p).expect("public doc is UTF-8");
        // Public docs carry the organisation's own contacts, which the allow-list keeps;
        // anything else found there is a false positive.
        let m = Masker::default().with_allow(["@romashka.example", "8 800 555-01-23"]).expect("allow");
        let r = m.mask(&text);
        assert!(r.findings.is_empty(), "{}: {:?}", p.display(), r.findings);
        for f in &r.allowed {
            assert!(matches!(f.kind, PiiKind::Email | PiiKind::Phone), "{}: {f:?}", p.display());
        }
        checked += 1;
    }
    assert!(checked >= 4);
    if let Ok(csv) = std::fs::read_to_string(root.join("hr/zarplaty.csv")) {
        // Salaries and bonus percentages are not personal-data numbers (names are, but only
        // the Name kind looks for them, and only when asked).
        none(&csv);
    }
}

#[test]
fn lora_dataset_answers_have_no_false_positives_and_questions_are_covered() {
    for name in ["tickets-train.jsonl", "tickets-test.jsonl"] {
        check_dataset_file(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/lora").join(name));
    }
}

fn check_dataset_file(path: &std::path::Path) {
    let Ok(text) = std::fs::read_to_string(path) else {
        eprintln!("skipping: {} not found", path.display());
        return;
    };
    let email_re = regex::Regex::new(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+").expect("re");
    let digits_re = regex::Regex::new(r"\d[\d \-()]{8,}\d").expect("re");
    let m = Masker::default().with_allow(["@romashka.example"]).expect("allow");
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).expect("dataset line is JSON");
        let answer = v["answer"].as_str().expect("answer");
        let found: Vec<_> = detect(answer).into_iter().filter(|f| f.kind != PiiKind::Email).collect();
        assert!(found.is_empty(), "line {}: false positive in answer: {found:?}", i + 1);
        let q = m.mask(v["question"].as_str().expect("question")).text;
        assert!(!email_re.is_match(&q), "line {}: e-mail survived: {q}", i + 1);
        assert!(!digits_re.is_match(&q), "line {}: long number survived: {q}", i + 1);
    }
}
