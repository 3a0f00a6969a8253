//! Personal-data (PII) detection and masking.
//!
//! # What is detected
//!
//! | kind | examples | how it is confirmed |
//! |---|---|---|
//! | [`PiiKind::Phone`] | `+7 (916) 123-45-67`, `8-903-765-43-21`, `+79161234567`, `(916) 123-45-67`, `+44 20 7946 0958` | Russian: 11 digits after `+7`/`8`/`7`, area code 3xx/4xx/8xx/9xx unless `+7`; international: `+`, 8–15 digits (E.164); a bare `9xx xxx xx xx` only after a word like «тел.» |
//! | [`PiiKind::Email`] | `a.sidorov@vektor-example.ru`, `иван@почта.рф` | shape |
//! | [`PiiKind::Card`] | `4276 3800 1234 5679`, `4111-1111-1111-1111` | 13–19 digits, card grouping, Luhn; a 4-4-4-4 group that fails Luhn is still masked (confidence 0.6) — a mistyped card is a card |
//! | [`PiiKind::Passport`] | `4510 123456`, `серия 45 08 № 123456` | series + number; confident only after «паспорт»/«серия» or with «№» |
//! | [`PiiKind::Inn`] | `7707083893`, `500100732259` | 10/12 digits, both check digits; confident after «ИНН» |
//! | [`PiiKind::Snils`] | `112-233-445 95` | 11 digits, checksum; confident when formatted or after «СНИЛС» |
//! | [`PiiKind::Ogrn`] | `1027700132195` | 13/15 digits, checksum; confident after «ОГРН» |
//! | [`PiiKind::Iban`] | `DE89 3704 0044 0532 0130 00` | mod-97 |
//! | [`PiiKind::Ip`] | `192.168.10.4`, `2001:db8::1` | octets ≤ 255; not after «версия»/«v»/«1С» (version numbers) |
//! | [`PiiKind::Name`] (off by default) | «Меня зовут **Павел**», «Это **Павел**.», «ФИО: **Иванов Пётр Сергеевич**» | only a capitalised name introduced by such a phrase or label |
//!
//! Each [`Finding`] carries a confidence in 0..1; a [`Detector`] keeps findings at or above
//! its threshold (default [`DEFAULT_MIN_CONFIDENCE`] = 0.5). Checksum-valid numbers with their
//! label score ≥ 0.9; bare 10–12-digit runs that merely pass a checksum score below 0.5, so
//! order numbers and other ids survive unless the text names them («ИНН», «паспорт» …).
//! Overlapping candidates are merged: the longer span wins, then the more confident.
//!
//! # What is not detected
//!
//! Names in free text (only the introduced/labelled forms above, and only when
//! [`PiiKind::Name`] is enabled), addresses, dates of birth, car plates, bank account
//! numbers (20-digit «р/с»), BIC, driver's licences, foreign passports, local phone numbers
//! without area code (`123-45-67`), phones written with `00` instead of `+`, numbers spelled
//! out in words or split by other text. Prices (`2490 ₽`), percentages, years, dates and
//! codes such as `E-503` are never matched: every numeric detector needs at least 10 digits
//! or an explicit label.
//!
//! # Masking
//!
//! [`Masker::mask`] replaces each finding with a placeholder, by [`MaskStyle`]:
//! - [`MaskStyle::Typed`]: `[PHONE]`, `[EMAIL]`, `[CARD]`, `[PASSPORT]`, `[INN]`, `[SNILS]`,
//!   `[OGRN]`, `[IBAN]`, `[IP]`, `[NAME]` — English, upper-case, in square brackets, the same in
//!   Russian and English text ([`PiiKind::placeholder`]).
//! - [`MaskStyle::Pseudonym`]: `[PHONE_1]`, `[PHONE_2]`, `[EMAIL_1]` … numbered per document,
//!   the same value getting the same number (phones compared by digits, `8…` = `+7…`; e-mails
//!   case-insensitively). A [`MaskSession`] keeps the numbering across several texts of one
//!   document (e.g. the turns of a conversation).
//!
//! Values on the [`Masker`]'s allow-list (an organisation's own support address, say) are
//! reported but kept.

mod checksum;
mod detect;

pub use checksum::{iban as iban_valid, inn as inn_valid, luhn as luhn_valid, ogrn as ogrn_valid, snils as snils_valid};

use crate::{GuardError, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

/// The default confidence threshold of [`Detector`] and [`Masker`].
pub const DEFAULT_MIN_CONFIDENCE: f32 = 0.5;

/// A kind of personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PiiKind {
    /// Phone number (Russian or international).
    Phone,
    /// E-mail address.
    Email,
    /// Bank card number.
    Card,
    /// Russian internal passport (series and number).
    Passport,
    /// Russian taxpayer number (ИНН).
    Inn,
    /// Russian pension insurance number (СНИЛС).
    Snils,
    /// Russian state registration number (ОГРН/ОГРНИП).
    Ogrn,
    /// International bank account number.
    Iban,
    /// IPv4 or IPv6 address.
    Ip,
    /// A personal name introduced by a phrase or a label (off by default).
    Name,
}

impl PiiKind {
    /// Every kind, in a fixed order.
    pub const ALL: [PiiKind; 10] = [
        PiiKind::Phone,
        PiiKind::Email,
        PiiKind::Card,
        PiiKind::Passport,
        PiiKind::Inn,
        PiiKind::Snils,
        PiiKind::Ogrn,
        PiiKind::Iban,
        PiiKind::Ip,
        PiiKind::Name,
    ];

    /// The kinds enabled by default: all but [`PiiKind::Name`].
    pub fn defaults() -> BTreeSet<PiiKind> {
        PiiKind::ALL.into_iter().filter(|k| *k != PiiKind::Name).collect()
    }

    /// The lower-case name used in reports and on the command line (`phone`, `email` …).
    pub fn name(self) -> &'static str {
        match self {
            PiiKind::Phone => "phone",
            PiiKind::Email => "email",
            PiiKind::Card => "card",
            PiiKind::Passport => "passport",
            PiiKind::Inn => "inn",
            PiiKind::Snils => "snils",
            PiiKind::Ogrn => "ogrn",
            PiiKind::Iban => "iban",
            PiiKind::Ip => "ip",
            PiiKind::Name => "name",
        }
    }

    /// The typed placeholder: `[PHONE]`, `[EMAIL]` …
    pub fn placeholder(self) -> String {
        format!("[{}]", self.name().to_uppercase())
    }

    /// Parses a name as written by [`PiiKind::name`] (case-insensitive).
    pub fn parse(name: &str) -> Result<PiiKind> {
        let n = name.trim().to_lowercase();
        PiiKind::ALL.into_iter().find(|k| k.name() == n).ok_or_else(|| GuardError::UnknownKind {
            name: name.to_string(),
            known: PiiKind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(","),
        })
    }

    /// Parses a comma-separated list (`phone,email,card`); `all` and `default` are accepted.
    pub fn parse_list(list: &str) -> Result<BTreeSet<PiiKind>> {
        let mut out = BTreeSet::new();
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.to_lowercase().as_str() {
                "all" => out.extend(PiiKind::ALL),
                "default" => out.extend(PiiKind::defaults()),
                _ => {
                    out.insert(PiiKind::parse(part)?);
                }
            }
        }
        Ok(out)
    }
}

impl std::fmt::Display for PiiKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One piece of personal data found in a text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// What it is.
    pub kind: PiiKind,
    /// Byte offset of its first byte in the searched text.
    pub start: usize,
    /// Byte offset one past its last byte.
    pub end: usize,
    /// The matched text (`text[start..end]`).
    pub text: String,
    /// How sure the detector is, 0..1 (see the module docs).
    pub confidence: f32,
}

impl Finding {
    /// The byte span in the searched text.
    pub fn span(&self) -> std::ops::Range<usize> {
        self.start..self.end
    }

    /// The value in a canonical form, for comparing two findings of the same kind: digits only
    /// for numbers (a Russian `8…` phone as `7…`), lower case for e-mails and IBANs.
    pub fn normalized(&self) -> String {
        normalize_value(self.kind, &self.text)
    }
}

fn normalize_value(kind: PiiKind, text: &str) -> String {
    match kind {
        PiiKind::Email | PiiKind::Name | PiiKind::Ip => text.trim().to_lowercase(),
        PiiKind::Iban => text.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_uppercase(),
        PiiKind::Phone => {
            let d: String = text.chars().filter(char::is_ascii_digit).collect();
            if d.len() == 11 && d.starts_with('8') { format!("7{}", &d[1..]) } else { d }
        }
        _ => text.chars().filter(char::is_ascii_digit).collect(),
    }
}

/// Finds personal data of the enabled kinds at or above a confidence threshold.
#[derive(Debug, Clone)]
pub struct Detector {
    kinds: BTreeSet<PiiKind>,
    min_confidence: f32,
}

impl Default for Detector {
    fn default() -> Self {
        Self { kinds: PiiKind::defaults(), min_confidence: DEFAULT_MIN_CONFIDENCE }
    }
}

impl Detector {
    /// A detector for `kinds`, keeping findings with confidence ≥ `min_confidence`.
    pub fn new(kinds: BTreeSet<PiiKind>, min_confidence: f32) -> Result<Self> {
        if !(0.0..=1.0).contains(&min_confidence) || min_confidence.is_nan() {
            return Err(GuardError::BadThreshold(min_confidence));
        }
        Ok(Self { kinds, min_confidence })
    }

    /// The enabled kinds.
    pub fn kinds(&self) -> &BTreeSet<PiiKind> {
        &self.kinds
    }

    /// The confidence threshold.
    pub fn min_confidence(&self) -> f32 {
        self.min_confidence
    }

    /// Non-overlapping findings at or above the threshold, in text order.
    pub fn detect(&self, text: &str) -> Vec<Finding> {
        let mut cands = Vec::new();
        for &kind in &self.kinds {
            detect::candidates(text, kind, &mut cands);
        }
        cands.retain(|f| f.confidence >= self.min_confidence);
        detect::resolve_overlaps(cands)
    }

    /// Every candidate of the enabled kinds, whatever its confidence, overlapping or not
    /// (for diagnostics and tuning).
    pub fn candidates(&self, text: &str) -> Vec<Finding> {
        let mut cands = Vec::new();
        for &kind in &self.kinds {
            detect::candidates(text, kind, &mut cands);
        }
        cands.sort_by_key(|f| (f.start, f.end));
        cands
    }
}

/// Finds personal data of the default kinds at the default threshold.
pub fn detect(text: &str) -> Vec<Finding> {
    Detector::default().detect(text)
}

/// Masks personal data of the default kinds with typed placeholders (`[PHONE]` …).
pub fn mask(text: &str) -> Masked {
    Masker::default().mask(text)
}

/// How a [`Masker`] replaces what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskStyle {
    /// `[PHONE]`, `[EMAIL]` … (default).
    #[default]
    Typed,
    /// `[PHONE_1]`, `[EMAIL_2]` … numbered per document, same value → same number.
    Pseudonym,
}

impl MaskStyle {
    /// Parses `typed` or `pseudonym`.
    pub fn parse(s: &str) -> Option<MaskStyle> {
        match s.trim().to_lowercase().as_str() {
            "typed" => Some(MaskStyle::Typed),
            "pseudonym" | "pseudonyms" => Some(MaskStyle::Pseudonym),
            _ => None,
        }
    }
}

/// An allow-list entry: a value that is found but kept (not personal data of a customer, such
/// as the organisation's own support address).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allow {
    /// `@romashka.example`: every e-mail at this domain or its subdomains.
    EmailDomain(String),
    /// An exact value, compared in normalised form (phone digits, lower-case e-mail).
    Value(String),
}

/// The result of masking one text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Masked {
    /// The text with every finding replaced.
    pub text: String,
    /// The masked findings, with spans into the *original* text.
    pub findings: Vec<Finding>,
    /// Findings kept because they are on the allow-list (spans into the original text).
    pub allowed: Vec<Finding>,
}

/// Masks personal data: a [`Detector`], a [`MaskStyle`] and an allow-list.
///
/// ```
/// use trident_guard::pii::{Detector, MaskStyle, Masker, PiiKind};
///
/// let masked = Masker::default().mask("Звоните +7 916 123-45-67, цена 2490 ₽");
/// assert_eq!(masked.text, "Звоните [PHONE], цена 2490 ₽");
/// assert_eq!(masked.findings[0].kind, PiiKind::Phone);
///
/// let masker = Masker::new(Detector::default(), MaskStyle::Pseudonym).with_allow(["@romashka.example"])?;
/// let mut doc = masker.session();
/// assert_eq!(doc.mask("a@mail-example.ru, b@mail-example.ru").text, "[EMAIL_1], [EMAIL_2]");
/// assert_eq!(doc.mask("снова a@mail-example.ru; support@romashka.example").text, "снова [EMAIL_1]; support@romashka.example");
/// # Ok::<(), trident_guard::GuardError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Masker {
    detector: Detector,
    style: MaskStyle,
    allow: Vec<Allow>,
}

impl Masker {
    /// A masker with the given detector and style and an empty allow-list.
    pub fn new(detector: Detector, style: MaskStyle) -> Self {
        Self { detector, style, allow: Vec::new() }
    }

    /// Adds allow-list entries: `@domain` keeps every e-mail at that domain (and subdomains),
    /// anything else is an exact value (an e-mail, a phone in any format …).
    pub fn with_allow<I, S>(mut self, entries: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for e in entries {
            let e = e.as_ref().trim();
            if let Some(domain) = e.strip_prefix('@') {
                if domain.is_empty() || !domain.contains('.') || domain.contains(char::is_whitespace) {
                    return Err(GuardError::InvalidAllow { entry: e.into(), reason: "expected @domain.tld".into() });
                }
                self.allow.push(Allow::EmailDomain(domain.to_lowercase()));
            } else if e.is_empty() {
                return Err(GuardError::InvalidAllow { entry: e.into(), reason: "empty".into() });
            } else {
                let found = self.detector.candidates(e);
                let kind = found.iter().find(|f| f.start == 0 && f.end == e.len()).map(|f| f.kind);
                let norm = match kind {
                    Some(k) => normalize_value(k, e),
                    None if e.contains('@') => e.to_lowercase(),
                    None => {
                        return Err(GuardError::InvalidAllow {
                            entry: e.into(),
                            reason: "not recognised as an e-mail, phone or other detected value".into(),
                        });
                    }
                };
                self.allow.push(Allow::Value(norm));
            }
        }
        Ok(self)
    }

    /// The detector in use.
    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    /// The masking style.
    pub fn style(&self) -> MaskStyle {
        self.style
    }

    fn is_allowed(&self, f: &Finding) -> bool {
        let norm = f.normalized();
        self.allow.iter().any(|a| match a {
            Allow::Value(v) => *v == norm,
            Allow::EmailDomain(d) => {
                f.kind == PiiKind::Email
                    && norm.rsplit_once('@').is_some_and(|(_, dom)| dom == d || dom.ends_with(&format!(".{d}")))
            }
        })
    }

    /// Masks one text as one document (pseudonyms numbered from 1).
    pub fn mask(&self, text: &str) -> Masked {
        self.session().mask(text)
    }

    /// A session: several texts of one document sharing pseudonym numbering.
    pub fn session(&self) -> MaskSession<'_> {
        MaskSession { masker: self, numbers: HashMap::new(), next: HashMap::new() }
    }
}

/// Masks several texts of one document with shared pseudonym numbering (a value gets the same
/// `[EMAIL_1]` in every turn of a conversation).
#[derive(Debug)]
pub struct MaskSession<'a> {
    masker: &'a Masker,
    numbers: HashMap<(PiiKind, String), usize>,
    next: HashMap<PiiKind, usize>,
}

impl MaskSession<'_> {
    /// Masks `text`, continuing this session's numbering.
    pub fn mask(&mut self, text: &str) -> Masked {
        let found = self.masker.detector.detect(text);
        let mut out = String::with_capacity(text.len());
        let mut findings = Vec::new();
        let mut allowed = Vec::new();
        let mut pos = 0;
        for f in found {
            if self.masker.is_allowed(&f) {
                allowed.push(f);
                continue;
            }
            out.push_str(&text[pos..f.start]);
            match self.masker.style {
                MaskStyle::Typed => out.push_str(&f.kind.placeholder()),
                MaskStyle::Pseudonym => {
                    let key = (f.kind, f.normalized());
                    let n = match self.numbers.get(&key) {
                        Some(&n) => n,
                        None => {
                            let c = self.next.entry(f.kind).or_insert(0);
                            *c += 1;
                            self.numbers.insert(key, *c);
                            *c
                        }
                    };
                    out.push_str(&format!("[{}_{n}]", f.kind.name().to_uppercase()));
                }
            }
            pos = f.end;
            findings.push(f);
        }
        out.push_str(&text[pos..]);
        Masked { text: out, findings, allowed }
    }
}

#[cfg(test)]
mod tests;
