//! Personal data in retrieved text and answers, masked with `trident-guard` before it reaches a
//! model or an asker.
//!
//! **Allow-list.** Values published in a document everyone may read (`*`) are the organisation's
//! own contacts (a support phone, a billing address): masking them would protect nothing from
//! the asker, who may read that document anyway, and would break plain questions such as "what
//! is the support phone?". They are kept, as are values on the configured allow-list; every
//! other phone, e-mail, card, passport, INN, SNILS… is replaced by a typed placeholder
//! (`[PHONE]`, `[CARD]` …).
//!
//! **Requests for personal data.** A question that asks for a kind of personal data the sources
//! hold only masked (a client's passport, a card number) is declined without calling the model:
//! the value is not disclosed, and a model shown only `[PASSPORT]` would answer with nonsense.

use crate::kb::Hit;
use trident_guard::pii::{Detector, Masker, PiiKind};

/// A masker whose allow-list holds the personal-data values found in everyone-readable hits
/// plus `extra` (values or `@domain`s; unrecognisable entries are ignored).
pub fn masker_for(hits: &[Hit], extra: &[String]) -> Masker {
    let detector = Detector::default();
    let mut masker = Masker::default();
    let mut entries: Vec<String> = extra.to_vec();
    for h in hits.iter().filter(|h| h.groups.iter().any(|g| g == "*")) {
        entries.extend(detector.detect(&h.text).into_iter().map(|f| f.text));
    }
    for e in entries {
        // One entry at a time: a value the guard does not recognise is skipped, not fatal.
        if let Ok(m) = masker.clone().with_allow([e.as_str()]) {
            masker = m;
        }
    }
    masker
}

/// Masks the text, title and section of every hit in place and records, per hit, the kinds
/// masked (`masked`) and the allow-listed kinds kept (`kept`).
pub fn mask_hits(hits: &mut [Hit], extra_allow: &[String]) {
    let masker = masker_for(hits, extra_allow);
    for h in hits.iter_mut() {
        let m = masker.mask(&h.text);
        h.masked = kinds(m.findings.iter().map(|f| f.kind));
        h.kept = kinds(m.allowed.iter().map(|f| f.kind));
        h.text = m.text;
        h.title = masker.mask(&h.title).text;
        h.section = masker.mask(&h.section).text;
    }
}

fn kinds(it: impl Iterator<Item = PiiKind>) -> Vec<String> {
    let mut v: Vec<String> = it.map(|k| k.name().to_string()).collect();
    v.sort();
    v.dedup();
    v
}

/// The kinds of personal data a question asks for (by keyword, Russian and English).
pub fn requested_kinds(question: &str) -> Vec<PiiKind> {
    let q = question.to_lowercase();
    let words: Vec<&str> = q.split(|c: char| !c.is_alphanumeric() && c != '-').filter(|w| !w.is_empty()).collect();
    let has = |pred: &dyn Fn(&str) -> bool| words.iter().any(|w| pred(w));
    let mut out = Vec::new();
    if has(&|w| w.starts_with("паспорт") || w == "passport") {
        out.push(PiiKind::Passport);
    }
    // «карта», «карты», «карту» (not «карточки», the client-card export).
    if has(&|w| matches!(w, "карта" | "карты" | "карту" | "карте" | "картой" | "card")) {
        out.push(PiiKind::Card);
    }
    if has(&|w| w.starts_with("снилс") || w == "snils") {
        out.push(PiiKind::Snils);
    }
    if has(&|w| w == "инн" || w == "inn") {
        out.push(PiiKind::Inn);
    }
    if has(&|w| w.starts_with("телефон") || w == "phone") {
        out.push(PiiKind::Phone);
    }
    if has(&|w| w == "email" || w == "e-mail" || w.starts_with("почт") || w == "mail") {
        out.push(PiiKind::Email);
    }
    out
}

/// The kind of personal data the question asks for that the given (masked) hits hold only
/// masked, if any: such a question is declined.
pub fn withheld_request(question: &str, hits: &[Hit]) -> Option<PiiKind> {
    requested_kinds(question).into_iter().find(|k| {
        let name = k.name();
        hits.iter().any(|h| h.masked.iter().any(|m| m == name)) && !hits.iter().any(|h| h.kept.iter().any(|m| m == name))
    })
}

/// Masks an answer with the same allow-list as its sources.
pub fn mask_answer(answer: &str, hits: &[Hit], extra_allow: &[String]) -> String {
    masker_for(hits, extra_allow).mask(answer).text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_for_personal_data_are_recognised() {
        assert_eq!(requested_kinds("Какой паспорт у Сидорова?"), vec![PiiKind::Passport]);
        assert_eq!(requested_kinds("Дай номер карты для автоплатежа"), vec![PiiKind::Card]);
        assert!(requested_kinds("Покажи карточки клиентов").is_empty());
        assert_eq!(requested_kinds("Какой телефон поддержки?"), vec![PiiKind::Phone]);
    }
}
