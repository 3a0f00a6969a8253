//! The detectors: regex candidates, then structure, checksum and context checks that set a
//! confidence. Candidates of all kinds are merged so that no two findings overlap.

use super::checksum;
use super::{Finding, PiiKind};
use regex::Regex;
use std::sync::LazyLock;

/// Separators allowed inside a phone number: space, no-break space, dash, dot.
const SEP: &str = r"[ \u{00A0}\u{2011}\-.]";

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("built-in PII pattern compiles (a bug if not)")
}

static RU_PHONE: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"(?:\+[ \u{{00A0}}]?7|8|7){SEP}?(?:\([ \u{{00A0}}]?\d{{3}}[ \u{{00A0}}]?\)|\d{{3}}){SEP}?\d(?:{SEP}?\d){{6}}"
    ))
});
static RU_PHONE_PARENS: LazyLock<Regex> =
    LazyLock::new(|| re(&format!(r"\(\d{{3}}\)[ \u{{00A0}}]?\d{{3}}{SEP}?\d{{2}}{SEP}?\d{{2}}")));
static RU_MOBILE_BARE: LazyLock<Regex> =
    LazyLock::new(|| re(&format!(r"9\d{{2}}{SEP}?\d{{3}}{SEP}?\d{{2}}{SEP}?\d{{2}}")));
static INTL_PHONE: LazyLock<Regex> = LazyLock::new(|| re(r"\+[1-9][\d \u{00A0}\-.()]{6,24}"));
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    re(r"[\p{L}\p{N}._%+\-]+@[\p{L}\p{N}](?:[\p{L}\p{N}\-]*[\p{L}\p{N}])?(?:\.[\p{L}\p{N}](?:[\p{L}\p{N}\-]*[\p{L}\p{N}])?)*\.\p{L}{2,24}")
});
static CARD: LazyLock<Regex> = LazyLock::new(|| re(r"\d(?:[ \u{00A0}\-]?\d){12,18}"));
static PASSPORT: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(\d{2})([ \u{00A0}]?)(\d{2})[ \u{00A0}]*(№|N|No\.?|номер|н\.)?[ \u{00A0}]*(\d{6})")
});
static DIGIT_RUN: LazyLock<Regex> = LazyLock::new(|| re(r"\d{10,15}"));
static SNILS: LazyLock<Regex> =
    LazyLock::new(|| re(r"\d{3}([ \u{00A0}\-]?)\d{3}([ \u{00A0}\-]?)\d{3}([ \u{00A0}\-]?)\d{2}"));
static IBAN: LazyLock<Regex> = LazyLock::new(|| re(r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}"));
static IPV4: LazyLock<Regex> = LazyLock::new(|| re(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}"));
static IPV6: LazyLock<Regex> = LazyLock::new(|| re(r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}"));
static NAME_INTRO: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?:[Мм]еня зовут|[Мм]о[её] имя|[Mm]y name is|I am|I'm|[Tt]his is|[Ээ]то|[Сс] уважением,?|[Rr]egards,?)[ \u{00A0}]+(\p{Lu}\p{Ll}+(?:-\p{Lu}\p{Ll}+)?(?:[ \u{00A0}]+\p{Lu}\p{Ll}+){0,2})")
});
static NAME_LABEL: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?:ФИО|Ф\.И\.О\.|[Кк]онтактное лицо|[Сс]отрудник|[Зз]аявитель|[Ff]ull name|[Nn]ame)[ \u{00A0}]*:[ \u{00A0}]*(\p{Lu}\p{Ll}+(?:[ \u{00A0}]+\p{Lu}(?:\p{Ll}+|\.)){0,2})")
});

/// Words that, shortly before a number, say what it is.
const PHONE_CONTEXT: &[&str] = &["тел", "phone", "моб", "звон", "whatsapp", "telegram", "вотсап", "номер для связи", "call", "sms", "смс"];
const CARD_CONTEXT: &[&str] = &["карт", "card", "visa", "mastercard", "мир", "maestro", "cvv", "cvc", "оплат"];
const PASSPORT_CONTEXT: &[&str] = &["паспорт", "серия", "серии", "passport", "пасп"];
const INN_CONTEXT: &[&str] = &["инн", "inn", "taxpayer", "tin"];
const SNILS_CONTEXT: &[&str] = &["снилс", "snils", "страхов"];
const OGRN_CONTEXT: &[&str] = &["огрн", "ogrn"];
const VERSION_CONTEXT: &[&str] = &["верси", "version", "релиз", "release", "платформ", "сборк", "build", "ver", "1с", "1c"];

/// How many bytes before a candidate are searched for context words.
const CONTEXT_BYTES: usize = 48;

/// The lower-cased text shortly before `start` (whole characters only).
fn context_before(text: &str, start: usize) -> String {
    let mut from = start.saturating_sub(CONTEXT_BYTES);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    text[from..start].to_lowercase()
}

/// True when one of the last few words before `start` begins with one of `stems` (a stem
/// with a space is looked for as a phrase anywhere in the window).
fn has_context(text: &str, start: usize, stems: &[&str]) -> bool {
    let ctx = context_before(text, start);
    let words: Vec<&str> = ctx.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
    let recent = &words[words.len().saturating_sub(6)..];
    stems.iter().any(|stem| {
        if stem.contains(' ') { ctx.contains(stem) } else { recent.iter().any(|w| w.starts_with(stem)) }
    })
}

fn char_before(text: &str, i: usize) -> Option<char> {
    text[..i].chars().next_back()
}

fn char_after(text: &str, i: usize) -> Option<char> {
    text[i..].chars().next()
}

/// True when the number `start..end` is not part of a longer token: no letter or digit
/// touches it, and it is not continued by `-`/`.`/`/` and another digit.
fn number_bounded(text: &str, start: usize, end: usize) -> bool {
    if let Some(c) = char_before(text, start) {
        if c.is_alphanumeric() || c == '_' || c == '+' {
            return false;
        }
        if matches!(c, '-' | '.' | '/' | ',' | ':')
            && char_before(text, start - c.len_utf8()).is_some_and(|p| p.is_ascii_digit())
        {
            return false;
        }
    }
    if let Some(c) = char_after(text, end) {
        if c.is_alphanumeric() || c == '_' {
            return false;
        }
        if matches!(c, '-' | '.' | '/' | ',' | ':')
            && char_after(text, end + c.len_utf8()).is_some_and(|n| n.is_ascii_digit())
        {
            return false;
        }
    }
    true
}

fn only_digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

fn push(out: &mut Vec<Finding>, text: &str, kind: PiiKind, start: usize, end: usize, confidence: f32) {
    out.push(Finding { kind, start, end, text: text[start..end].to_string(), confidence: confidence.min(0.99) });
}

/// Every candidate of `kind` in `text`, overlapping or not, with its confidence.
pub(super) fn candidates(text: &str, kind: PiiKind, out: &mut Vec<Finding>) {
    match kind {
        PiiKind::Phone => phones(text, out),
        PiiKind::Email => emails(text, out),
        PiiKind::Card => cards(text, out),
        PiiKind::Passport => passports(text, out),
        PiiKind::Inn => digit_ids(text, PiiKind::Inn, out),
        PiiKind::Snils => snils(text, out),
        PiiKind::Ogrn => digit_ids(text, PiiKind::Ogrn, out),
        PiiKind::Iban => ibans(text, out),
        PiiKind::Ip => ips(text, out),
        PiiKind::Name => names(text, out),
    }
}

fn phones(text: &str, out: &mut Vec<Finding>) {
    for m in RU_PHONE.find_iter(text) {
        let (s, e) = (m.start(), m.end());
        if !number_bounded(text, s, e) {
            continue;
        }
        let raw = m.as_str();
        let digits = only_digits(raw);
        if digits.len() != 11 {
            continue;
        }
        let area = digits.as_bytes()[1];
        let mut conf = if raw.starts_with('+') {
            0.95
        } else if matches!(area, b'3' | b'4' | b'8' | b'9') {
            let formatted = raw.contains(['(', ' ', '-', '.', '\u{00A0}']);
            match (raw.starts_with('8'), formatted) {
                (true, true) => 0.85,
                (true, false) => 0.75,
                (false, true) => 0.7,
                (false, false) => 0.6,
            }
        } else {
            continue;
        };
        if has_context(text, s, PHONE_CONTEXT) {
            conf += 0.1;
        }
        push(out, text, PiiKind::Phone, s, e, conf);
    }
    for m in RU_PHONE_PARENS.find_iter(text) {
        if number_bounded(text, m.start(), m.end()) {
            let conf = if has_context(text, m.start(), PHONE_CONTEXT) { 0.85 } else { 0.7 };
            push(out, text, PiiKind::Phone, m.start(), m.end(), conf);
        }
    }
    for m in RU_MOBILE_BARE.find_iter(text) {
        // A bare ten-digit mobile number is only taken when the text says it is a phone.
        if number_bounded(text, m.start(), m.end()) && has_context(text, m.start(), PHONE_CONTEXT) {
            push(out, text, PiiKind::Phone, m.start(), m.end(), 0.7);
        }
    }
    for m in INTL_PHONE.find_iter(text) {
        let raw = m.as_str();
        // The class also takes trailing separators and brackets; keep up to the last digit.
        let Some(last) = raw.rfind(|c: char| c.is_ascii_digit()) else { continue };
        let raw = &raw[..=last];
        let (s, e) = (m.start(), m.start() + raw.len());
        if !number_bounded(text, s, e) || !well_formed_intl(raw) {
            continue;
        }
        let digits = only_digits(raw);
        if !(8..=15).contains(&digits.len()) || (digits.starts_with('7') && digits.len() != 11) {
            continue;
        }
        push(out, text, PiiKind::Phone, s, e, 0.9);
    }
}

/// No doubled separators, at most one balanced pair of parentheses.
fn well_formed_intl(raw: &str) -> bool {
    let opens = raw.matches('(').count();
    let closes = raw.matches(')').count();
    if opens != closes || opens > 1 {
        return false;
    }
    if let (Some(o), Some(c)) = (raw.find('('), raw.find(')'))
        && c < o
    {
        return false;
    }
    let seps: &[char] = &[' ', '\u{00A0}', '-', '.'];
    !raw.chars().zip(raw.chars().skip(1)).any(|(a, b)| seps.contains(&a) && seps.contains(&b))
}

fn emails(text: &str, out: &mut Vec<Finding>) {
    for m in EMAIL.find_iter(text) {
        let raw = m.as_str();
        // A local part cannot start with a dot or a dash ("…text.-a@b.ru").
        let skip = raw.len() - raw.trim_start_matches(['.', '-']).len();
        let s = m.start() + skip;
        if text[s..m.end()].starts_with('@') {
            continue;
        }
        push(out, text, PiiKind::Email, s, m.end(), 0.99);
    }
}

fn cards(text: &str, out: &mut Vec<Finding>) {
    for m in CARD.find_iter(text) {
        let (s, e) = (m.start(), m.end());
        if !number_bounded(text, s, e) {
            continue;
        }
        let raw = m.as_str();
        let digits = only_digits(raw);
        if !(13..=19).contains(&digits.len()) {
            continue;
        }
        let groups: Vec<usize> = raw.split([' ', '\u{00A0}', '-']).map(str::len).collect();
        let seps: Vec<char> = raw.chars().filter(|c| !c.is_ascii_digit()).collect();
        let consistent = seps.windows(2).all(|w| w[0] == w[1]);
        let grouped = groups.len() > 1;
        let card_groups = consistent
            && grouped
            && (groups[..groups.len() - 1].iter().all(|&g| g == 4) && (3..=4).contains(groups.last().unwrap_or(&0))
                || groups == [4, 6, 5]
                || groups == [4, 6, 4]);
        if grouped && !card_groups {
            continue;
        }
        let context = has_context(text, s, CARD_CONTEXT);
        let iin = matches!(digits.as_bytes()[0], b'2'..=b'6');
        let conf = match (checksum::luhn(&digits), card_groups) {
            (true, true) => 0.95,
            (true, false) if iin => 0.8,
            (true, false) => 0.6,
            // Card-shaped but failing Luhn: a mistyped or made-up card number is still
            // treated as one, since masking a look-alike costs nothing.
            (false, true) => 0.6,
            (false, false) if context => 0.55,
            (false, false) => continue,
        };
        let conf = if context { conf + 0.1 } else { conf };
        push(out, text, PiiKind::Card, s, e, conf);
    }
}

fn passports(text: &str, out: &mut Vec<Finding>) {
    for c in PASSPORT.captures_iter(text) {
        let Some(m) = c.get(0) else { continue };
        let (s, e) = (m.start(), m.end());
        if !number_bounded(text, s, e) || &c[1] == "00" {
            continue;
        }
        let spaced_series = !c[2].is_empty();
        let numero = c.get(4).is_some();
        let conf = if has_context(text, s, PASSPORT_CONTEXT) {
            0.9
        } else if numero {
            0.7
        } else if spaced_series {
            0.55
        } else if m.as_str().contains([' ', '\u{00A0}']) {
            0.45
        } else {
            0.3
        };
        push(out, text, PiiKind::Passport, s, e, conf);
    }
}

/// INN (10/12 digits) and OGRN (13/15 digits): contiguous digits with a checksum.
fn digit_ids(text: &str, kind: PiiKind, out: &mut Vec<Finding>) {
    type Spec = (&'static [usize], &'static [&'static str], fn(&str) -> bool);
    let (lens, ctx_words, check): Spec = match kind {
        PiiKind::Inn => (&[10, 12], INN_CONTEXT, checksum::inn),
        _ => (&[13, 15], OGRN_CONTEXT, checksum::ogrn),
    };
    for m in DIGIT_RUN.find_iter(text) {
        let (s, e) = (m.start(), m.end());
        if !lens.contains(&m.as_str().len()) || !number_bounded(text, s, e) {
            continue;
        }
        let context = has_context(text, s, ctx_words);
        let valid = check(m.as_str());
        let conf = match (valid, context) {
            (true, true) => 0.95,
            (false, true) => 0.5,
            (true, false) if m.as_str().len() == 12 || kind == PiiKind::Ogrn => 0.45,
            (true, false) => 0.4,
            (false, false) => continue,
        };
        push(out, text, kind, s, e, conf);
    }
}

fn snils(text: &str, out: &mut Vec<Finding>) {
    for c in SNILS.captures_iter(text) {
        let Some(m) = c.get(0) else { continue };
        let (s, e) = (m.start(), m.end());
        if !number_bounded(text, s, e) {
            continue;
        }
        let digits = only_digits(m.as_str());
        let formatted = !c[1].is_empty() && !c[2].is_empty();
        let context = has_context(text, s, SNILS_CONTEXT);
        let conf = match (checksum::snils(&digits), formatted, context) {
            (true, _, true) => 0.95,
            (true, true, false) => 0.9,
            (true, false, false) => 0.4,
            (false, _, true) => 0.5,
            (false, true, false) => 0.3,
            (false, false, false) => continue,
        };
        push(out, text, PiiKind::Snils, s, e, conf);
    }
}

fn ibans(text: &str, out: &mut Vec<Finding>) {
    for m in IBAN.find_iter(text) {
        let s = m.start();
        if char_before(text, s).is_some_and(|c| c.is_alphanumeric()) {
            continue;
        }
        // The pattern may run into a following word; try the longest prefix that checks out.
        let raw = m.as_str();
        let mut ends: Vec<usize> = raw.char_indices().filter(|&(_, c)| c == ' ').map(|(i, _)| i).collect();
        ends.push(raw.len());
        for &end in ends.iter().rev() {
            let compact: String = raw[..end].chars().filter(|c| *c != ' ').collect();
            if checksum::iban(&compact) && !char_after(text, s + end).is_some_and(|c| c.is_alphanumeric()) {
                push(out, text, PiiKind::Iban, s, s + end, 0.95);
                break;
            }
        }
    }
}

fn ips(text: &str, out: &mut Vec<Finding>) {
    for m in IPV4.find_iter(text) {
        let (s, e) = (m.start(), m.end());
        if !number_bounded(text, s, e) {
            continue;
        }
        let ok = m.as_str().split('.').all(|p| p.parse::<u16>().is_ok_and(|v| v <= 255) && (p == "0" || !p.starts_with('0')));
        if !ok {
            continue;
        }
        let conf = if has_context(text, s, VERSION_CONTEXT) { 0.2 } else { 0.7 };
        push(out, text, PiiKind::Ip, s, e, conf);
    }
    for m in IPV6.find_iter(text) {
        let raw = m.as_str();
        let (s, e) = (m.start(), m.end());
        let colons = raw.matches(':').count();
        if (colons < 7 && !raw.contains("::")) || raw.parse::<std::net::Ipv6Addr>().is_err() {
            continue;
        }
        if char_before(text, s).is_some_and(|c| c.is_alphanumeric() || c == ':')
            || char_after(text, e).is_some_and(|c| c.is_alphanumeric() || c == ':')
        {
            continue;
        }
        // "::" alone or "::1"-like fragments in code are too weak to call an address.
        if only_digits(raw).len() + raw.chars().filter(|c| c.is_ascii_alphabetic()).count() < 4 {
            continue;
        }
        push(out, text, PiiKind::Ip, s, e, 0.8);
    }
}

fn names(text: &str, out: &mut Vec<Finding>) {
    for re in [&*NAME_INTRO, &*NAME_LABEL] {
        for c in re.captures_iter(text) {
            let Some(m) = c.get(1) else { continue };
            // The introducing phrase must start a word ("Это", not "…это" inside "поэто").
            let Some(all) = c.get(0) else { continue };
            if char_before(text, all.start()).is_some_and(char::is_alphanumeric) {
                continue;
            }
            push(out, text, PiiKind::Name, m.start(), m.end(), 0.7);
        }
    }
}

/// Keeps the best of overlapping candidates: the longest span first, then the most confident,
/// then the earliest. Returns the kept findings in text order.
pub(super) fn resolve_overlaps(mut cands: Vec<Finding>) -> Vec<Finding> {
    cands.sort_by(|a, b| {
        (b.end - b.start)
            .cmp(&(a.end - a.start))
            .then(b.confidence.total_cmp(&a.confidence))
            .then(a.start.cmp(&b.start))
            .then(a.kind.cmp(&b.kind))
    });
    let mut kept: Vec<Finding> = Vec::new();
    for c in cands {
        if kept.iter().all(|k| c.end <= k.start || c.start >= k.end) {
            kept.push(c);
        }
    }
    kept.sort_by_key(|f| f.start);
    kept
}
