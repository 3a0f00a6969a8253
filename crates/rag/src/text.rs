//! Text utilities: language detection, search terms (Snowball stemming for Russian and
//! English), and an approximate token counter used when no model tokenizer is supplied.

use rust_stemmers::{Algorithm, Stemmer};
use std::sync::OnceLock;

/// Detects the language of a text by script: `ru` when Cyrillic letters dominate, `en` when
/// Latin letters do, `und` when there are too few letters to tell.
pub fn detect_lang(text: &str) -> &'static str {
    let (mut cyr, mut lat) = (0usize, 0usize);
    for c in text.chars().take(20_000) {
        if matches!(c, 'А'..='я' | 'Ё' | 'ё') {
            cyr += 1;
        } else if c.is_ascii_alphabetic() {
            lat += 1;
        }
    }
    if cyr + lat < 3 {
        "und"
    } else if cyr * 2 >= lat {
        // Russian business text is full of Latin product names and codes: Cyrillic wins at 1/3.
        "ru"
    } else {
        "en"
    }
}

/// Counts tokens. The knowledge base sizes chunks with the embedding model's own counter when
/// it has one; [`ApproxTokens`] stands in otherwise.
pub trait TokenCounter: Send + Sync {
    /// Number of model tokens in `text` (without special tokens).
    fn count_tokens(&self, text: &str) -> usize;
}

/// An approximation of a multilingual SentencePiece tokenizer (XLM-R / e5): about one token per
/// 3.5 Cyrillic or 4.5 Latin characters of each word, one per digit group and punctuation mark.
/// It errs on the high side so chunks sized with it still fit the real model's window.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApproxTokens;

impl TokenCounter for ApproxTokens {
    fn count_tokens(&self, text: &str) -> usize {
        let mut n = 0usize;
        for word in text.split_whitespace() {
            let mut letters_cyr = 0usize;
            let mut letters_lat = 0usize;
            let mut other = 0usize;
            for c in word.chars() {
                if matches!(c, 'А'..='я' | 'Ё' | 'ё') {
                    letters_cyr += 1;
                } else if c.is_alphabetic() {
                    letters_lat += 1;
                } else if c.is_ascii_digit() {
                    letters_lat += 1;
                } else {
                    other += 1;
                }
            }
            n += letters_cyr.div_ceil(3) + (letters_lat * 2).div_ceil(9) + other;
            n = n.max(1);
        }
        n
    }
}

fn stemmers() -> &'static (Stemmer, Stemmer) {
    static S: OnceLock<(Stemmer, Stemmer)> = OnceLock::new();
    S.get_or_init(|| (Stemmer::create(Algorithm::Russian), Stemmer::create(Algorithm::English)))
}

/// Question and function words that carry no evidence (Russian and English).
const STOPWORDS: &[&str] = &[
    "и", "в", "во", "не", "что", "он", "на", "я", "с", "со", "как", "а", "то", "все", "всех", "она", "так", "его", "но", "да", "ты", "к", "у",
    "же", "вы", "за", "бы", "по", "только", "ее", "её", "мне", "было", "вот", "от", "меня", "еще", "ещё", "нет", "о", "из", "ему", "теперь",
    "когда", "даже", "ну", "ли", "если", "уже", "или", "ни", "быть", "был", "него", "до", "вас", "нибудь", "опять", "уж", "вам", "ведь",
    "там", "потом", "себя", "ничего", "ей", "может", "они", "тут", "где", "есть", "надо", "ней", "для", "мы", "тебя", "их", "чем", "была",
    "сам", "чтоб", "без", "будто", "чего", "раз", "тоже", "себе", "под", "будет", "ж", "тогда", "кто", "этот", "того", "потому", "этого",
    "какой", "какая", "какое", "какие", "каких", "какую", "каком", "сколько", "совсем", "ним", "здесь", "этом", "один", "почти", "мой",
    "тем", "чтобы", "нее", "неё", "сейчас", "были", "куда", "зачем", "всего", "можно", "при", "наконец", "два", "об", "другой", "хоть",
    "после", "над", "тот", "через", "эти", "нас", "про", "них", "какая", "много", "разве", "три", "эту", "моя", "впрочем",
    "хорошо", "свою", "этой", "перед", "иногда", "лучше", "чуть", "том", "нельзя", "такой", "им", "всегда", "конечно", "всю",
    "между", "нужно", "ли", "в течение", "течение", "часто", "как", "the", "a", "an", "is", "are", "was", "were", "be", "of", "to", "in",
    "on", "for", "and", "or", "what", "which", "who", "how", "when", "where", "does", "do", "did", "can", "i", "you", "it", "its", "my",
    "your", "with", "by", "at", "from", "this", "that", "there", "long", "much", "many", "large", "has", "have",
];

/// Whether a lower-cased word is a question or function word (no evidence).
pub fn is_stopword(w: &str) -> bool {
    STOPWORDS.contains(&w)
}

/// The evidence terms of `text` exactly as the search index analyzes its text (so they can be
/// counted there): stop words dropped, then the index's Russian/English analyzer; de-duplicated.
pub fn index_terms(text: &str) -> Vec<String> {
    let kept: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase().replace('ё', "е"))
        .filter(|w| !is_stopword(w))
        .collect();
    let mut out = trident_search::analyze(&kept.join(" "));
    out.sort();
    out.dedup();
    out
}

/// Lower-cased, stemmed search terms of `text` (stop words dropped). Letters and digits make
/// words; Cyrillic words get the Russian stemmer, others the English one.
pub fn terms(text: &str) -> Vec<String> {
    let (ru, en) = stemmers();
    let mut out = Vec::new();
    for raw in text.split(|c: char| !c.is_alphanumeric()) {
        if raw.is_empty() {
            continue;
        }
        let w = raw.to_lowercase().replace('ё', "е");
        if is_stopword(&w) {
            continue;
        }
        let cyr = w.chars().any(|c| matches!(c, 'а'..='я'));
        let stem = if cyr { ru.stem(&w).into_owned() } else if w.chars().all(|c| c.is_ascii_digit()) { w.clone() } else { en.stem(&w).into_owned() };
        out.push(stem);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lang_by_script() {
        assert_eq!(detect_lang("Тарифы Ромашка CRM для бизнеса"), "ru");
        assert_eq!(detect_lang("The API rate limit is 600 requests"), "en");
        assert_eq!(detect_lang("12 34"), "und");
    }

    #[test]
    fn terms_stem_both_languages() {
        let t = terms("Какая цена тарифов? The imports are limited");
        assert_eq!(t, vec!["цен", "тариф", "import", "limit"]);
        assert_eq!(terms("Ёлка"), terms("елка"));
    }

    #[test]
    fn approx_tokens_grow_with_text() {
        let c = ApproxTokens;
        assert!(c.count_tokens("привет") >= 2);
        assert!(c.count_tokens("a b c") == 3);
        assert!(c.count_tokens(&"слово ".repeat(100)) >= 200);
    }
}
