//! The Russian + English text analyzer used for BM25.
//!
//! Words are split on non-alphanumerics, over-long tokens dropped, lower-cased, `ё` folded to
//! `е`, then stemmed by the Russian and then the English Snowball stemmer. Each stemmer only
//! touches words in its own alphabet (the Russian one looks for Cyrillic vowels, the English one
//! for Latin ones), so mixed Russian/English text is stemmed per word without language detection:
//! «тарифа» → «тариф», «скидки»/«скидка» → «скидк», "prices" → "price".

use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, TextAnalyzer, Token, TokenFilter,
    TokenStream, Tokenizer,
};

/// Name under which the analyzer is registered on every opened index.
pub const ANALYZER: &str = "trident_ru_en";

/// Builds the analyzer.
pub fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(60))
        .filter(LowerCaser)
        .filter(YoFolder)
        .filter(Stemmer::new(Language::Russian))
        .filter(Stemmer::new(Language::English))
        .build()
}

/// Tokens of `text` as the index sees them (used to build queries).
pub fn analyze(text: &str) -> Vec<String> {
    let mut a = analyzer();
    let mut stream = a.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

/// Folds `ё` to `е` (Russian texts use both spellings of the same word).
#[derive(Clone, Copy)]
struct YoFolder;

impl TokenFilter for YoFolder {
    type Tokenizer<T: Tokenizer> = YoFolderFilter<T>;
    fn transform<T: Tokenizer>(self, tokenizer: T) -> YoFolderFilter<T> {
        YoFolderFilter(tokenizer)
    }
}

#[derive(Clone)]
struct YoFolderFilter<T>(T);

impl<T: Tokenizer> Tokenizer for YoFolderFilter<T> {
    type TokenStream<'a> = YoFolderStream<T::TokenStream<'a>>;
    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        YoFolderStream(self.0.token_stream(text))
    }
}

struct YoFolderStream<S>(S);

impl<S: TokenStream> TokenStream for YoFolderStream<S> {
    fn advance(&mut self) -> bool {
        if !self.0.advance() {
            return false;
        }
        let t = self.0.token_mut();
        if t.text.contains('ё') {
            t.text = t.text.replace('ё', "е");
        }
        true
    }
    fn token(&self) -> &Token {
        self.0.token()
    }
    fn token_mut(&mut self) -> &mut Token {
        self.0.token_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn russian_and_english_forms_meet() {
        let pairs = [
            ("тарифа", "тариф"),
            ("скидки", "скидка"),
            ("сотрудникам", "сотрудник"),
            ("отпуска", "отпуск"),
            ("ёлки", "елка"),
            ("prices", "price"),
            ("discounts", "discount"),
            ("running", "run"),
        ];
        for (a, b) in pairs {
            assert_eq!(analyze(a), analyze(b), "{a} vs {b}");
        }
        // mixed text keeps both languages; English stemmer leaves Cyrillic alone and vice versa
        let t = analyze("Тарифы Kubernetes-кластера updated");
        assert_eq!(t.len(), 4, "{t:?}");
        assert!(t.contains(&"kubernet".to_string()) || t.contains(&"kubernetes".to_string()), "{t:?}");
        assert_ne!(analyze("скидка"), analyze("склад"));
    }
}
