//! Scope conflicts: a source that is about a *different* thing of the kind the question asks
//! about ("the St Petersburg office" asked, "the Moscow office" found).
//!
//! Lexical evidence cannot see this: such a source shares almost every word of the question
//! (kb-045 of the shared set: 0.61, above every answerable threshold), and a small model then
//! answers from it — quoting the Moscow code word to a question about St Petersburg. The rule
//! here is structural and language-aware: the question qualifies a noun with an adjective
//! ("петербургском офисе", "четвёртого квартала"), the source qualifies the same noun only with
//! other adjectives ("московского офиса", "третьего квартала") and never uses the question's
//! adjective at all. Such a source answers a different question and is not evidence.
//!
//! Deliberately narrow: only adjective + noun pairs count (so "IV квартала" in a source does
//! not conflict with "четвёртого квартала"), determiners and quantifiers are no qualifiers
//! ("одного пользователя" vs "каждого пользователя"), and a source that mentions the
//! question's qualifier anywhere never conflicts.

use rust_stemmers::{Algorithm, Stemmer};
use std::collections::HashSet;
use std::sync::OnceLock;

/// A noun the question and a source qualify differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeConflict {
    /// The question's phrase, e.g. "петербургском офисе".
    pub asked: String,
    /// The source's phrase for the same noun, e.g. "московского офиса".
    pub found: String,
}

fn stemmer() -> &'static Stemmer {
    static S: OnceLock<Stemmer> = OnceLock::new();
    S.get_or_init(|| Stemmer::create(Algorithm::Russian))
}

/// Russian adjective (and participle) endings, longest first.
const ADJ_ENDINGS: &[&str] = &[
    "ыми", "ими", "ого", "его", "ому", "ему", "ий", "ый", "ой", "ая", "яя", "ое", "ее", "ом", "ем", "ых", "их", "ым", "им", "ую", "юю",
];

/// Stems of pronouns, determiners, quantifiers and question words that take adjective endings
/// but do not restrict what a noun refers to.
const NOT_QUALIFIERS: &[&str] = &[
    "один", "одн", "кажд", "весь", "вс", "любой", "люб", "этот", "эт", "тот", "т", "так", "сво", "свой", "наш", "ваш", "мо", "мой", "тво",
    "как", "каков", "котор", "друг", "сам", "сем", "чей", "чь", "никак", "некотор", "ин", "иной", "нужн", "должн", "возможн",
];

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '-')
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase().replace('ё', "е"))
        .collect()
}

fn is_cyrillic_word(w: &str) -> bool {
    w.chars().count() >= 4 && w.chars().all(|c| matches!(c, 'а'..='я' | '-'))
}

fn stem(w: &str) -> String {
    stemmer().stem(w).into_owned()
}

/// A qualifying adjective: Cyrillic, an adjective ending, and not a determiner/quantifier.
fn is_qualifier(w: &str) -> bool {
    if !is_cyrillic_word(w) || crate::text::is_stopword(w) || !ADJ_ENDINGS.iter().any(|e| w.ends_with(e)) {
        return false;
    }
    let s = stem(w);
    !NOT_QUALIFIERS.contains(&s.as_str()) && !NOT_QUALIFIERS.contains(&w)
}

/// `(qualifier, noun)` pairs of adjacent words: an adjective directly before a Cyrillic noun.
fn qualified_nouns(ws: &[String]) -> Vec<(usize, usize)> {
    (1..ws.len())
        .filter(|&i| is_cyrillic_word(&ws[i]) && !crate::text::is_stopword(&ws[i]) && is_qualifier(&ws[i - 1]))
        .map(|i| (i - 1, i))
        .collect()
}

/// The first noun the question qualifies one way and `source` only other ways, if any.
pub fn conflict(question: &str, source: &str) -> Option<ScopeConflict> {
    let qw = words(question);
    let sw = words(source);
    let source_stems: HashSet<String> = sw.iter().map(|w| stem(w)).collect();
    let s_pairs: Vec<(String, String, usize)> =
        qualified_nouns(&sw).into_iter().map(|(a, n)| (stem(&sw[a]), stem(&sw[n]), a)).collect();
    for (a, n) in qualified_nouns(&qw) {
        let (q_adj, q_noun) = (stem(&qw[a]), stem(&qw[n]));
        if q_adj == q_noun || source_stems.contains(&q_adj) {
            continue;
        }
        // The source must qualify the same noun, with a different adjective.
        if let Some((_, _, at)) = s_pairs.iter().find(|(adj, noun, _)| *noun == q_noun && *adj != q_adj) {
            return Some(ScopeConflict { asked: format!("{} {}", qw[a], qw[n]), found: format!("{} {}", sw[*at], sw[*at + 1]) });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOSCOW: &str = "Правила скидок для менеджеров московского офиса\nТолько для сотрудников московского офиса.\n\
        - Скидка свыше 10% согласуется с коммерческим директором московского офиса.\n\
        - Кодовое слово акции IV квартала для московских клиентов — «ВЕСНА-МСК».";

    #[test]
    fn another_office_conflicts() {
        let c = conflict("Какое кодовое слово акции четвёртого квартала в петербургском офисе?", MOSCOW).unwrap();
        assert_eq!(c.asked, "петербургском офисе");
        assert_eq!(c.found, "московского офиса");
    }

    #[test]
    fn same_scope_or_unqualified_source_does_not_conflict() {
        // Same office.
        assert_eq!(conflict("Какую скидку менеджер московского офиса может дать?", MOSCOW), None);
        // "IV квартала" is no adjective: a source naming the quarter differently still answers.
        assert_eq!(conflict("Какое кодовое слово акции четвёртого квартала?", MOSCOW), None);
        // Determiners and quantifiers are no qualifiers.
        assert_eq!(conflict("Сколько стоит тариф за одного пользователя?", "Цена за каждого пользователя — 2490 ₽"), None);
        // The source mentions the asked qualifier somewhere: it may well answer.
        assert_eq!(conflict("Скидки петербургского офиса?", "Скидки московского офиса и петербургского тоже"), None);
    }

    #[test]
    fn another_quarter_conflicts() {
        let c = conflict("План продаж четвёртого квартала?", "План продаж третьего квартала — 12 млн ₽.").unwrap();
        assert_eq!((c.asked.as_str(), c.found.as_str()), ("четвертого квартала", "третьего квартала"));
    }
}
