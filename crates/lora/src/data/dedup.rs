//! Deduplication: exact duplicates, same question with different answers, and near-duplicate
//! questions (MinHash + LSH over character 5-grams, confirmed by exact Jaccard).
//!
//! Rows that share a question (exactly, after [`question_key`]) or are near-duplicates are put
//! in one group; the split keeps each group on one side.

use super::report::{DedupReport, Duplicate, NearPair};
use super::text::question_key;
use super::Sample;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Signature length of MinHash.
const PERMUTATIONS: usize = 128;
/// Characters per shingle.
const SHINGLE: usize = 5;
/// Near-duplicate pairs listed in the report (all are counted).
const MAX_LISTED_PAIRS: usize = 1000;

/// The result of [`dedup`].
#[derive(Debug, Clone)]
pub struct Dedup {
    /// `(duplicate, first occurrence)` as indices into the samples.
    pub exact_duplicates: Vec<(usize, usize)>,
    /// The report section (line numbers).
    pub report: DedupReport,
    parent: Vec<usize>,
}

impl Dedup {
    fn find(&self, mut x: usize) -> usize {
        while self.parent[x] != x {
            x = self.parent[x];
        }
        x
    }

    /// The group of each of `indices` (a sample index standing for the group).
    pub fn groups_of(&self, indices: &[usize]) -> Vec<usize> {
        indices.iter().map(|&i| self.find(i)).collect()
    }
}

fn union(parent: &mut [usize], a: usize, b: usize) {
    let find = |p: &[usize], mut x: usize| {
        while p[x] != x {
            x = p[x];
        }
        x
    };
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        // The smaller index becomes the root, so groups do not depend on union order.
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        parent[hi] = lo;
    }
}

/// The full-sample key: roles, whitespace-collapsed contents and category.
fn sample_key(s: &Sample) -> String {
    let mut k = String::new();
    for m in &s.messages {
        k.push_str(m.role.as_str());
        k.push('\u{1}');
        k.push_str(&m.content.split_whitespace().collect::<Vec<_>>().join(" "));
        k.push('\u{1}');
    }
    k.push_str(s.category.as_deref().unwrap_or(""));
    k
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Hashes of the character 5-grams of a normalised question (the whole text if shorter).
pub fn shingles(key: &str) -> Vec<u64> {
    let chars: Vec<char> = key.chars().collect();
    let mut out: Vec<u64> = if chars.len() <= SHINGLE {
        vec![fnv1a(key.as_bytes())]
    } else {
        chars.windows(SHINGLE).map(|w| fnv1a(w.iter().collect::<String>().as_bytes())).collect()
    };
    out.sort_unstable();
    out.dedup();
    out
}

/// Exact Jaccard similarity of two sorted, deduplicated hash sets.
pub fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    let (mut i, mut j, mut inter) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = a.len() + b.len() - inter;
    if union == 0 { 1.0 } else { inter as f64 / union as f64 }
}

fn minhash(sh: &[u64]) -> Vec<u64> {
    (0..PERMUTATIONS)
        .map(|k| {
            let salt = splitmix(k as u64 ^ 0x5eed);
            sh.iter().map(|&h| splitmix(h ^ salt)).min().unwrap_or(u64::MAX)
        })
        .collect()
}

/// Pairs of indices (into `sets`) with Jaccard ≥ `threshold`, found through MinHash LSH and
/// confirmed exactly; `i < j`, sorted.
pub fn near_pairs(sets: &[Vec<u64>], threshold: f64) -> Vec<(usize, usize, f64)> {
    // r rows per band: the probability that a pair at the threshold shares a band is
    // 1 - (1 - t^r)^(128/r) ≥ 0.999 for t ≥ 0.5 with r = 4, and for lower t with r = 2.
    let rows = if threshold >= 0.5 { 4 } else { 2 };
    let sigs: Vec<Vec<u64>> = sets.iter().map(|s| minhash(s)).collect();
    let mut candidates: HashSet<(usize, usize)> = HashSet::new();
    for band in 0..PERMUTATIONS / rows {
        let mut buckets: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, sig) in sigs.iter().enumerate() {
            let mut h = splitmix(band as u64);
            for &v in &sig[band * rows..(band + 1) * rows] {
                h = splitmix(h ^ v);
            }
            buckets.entry(h).or_default().push(i);
        }
        for members in buckets.values() {
            for (x, &i) in members.iter().enumerate() {
                for &j in &members[x + 1..] {
                    candidates.insert((i.min(j), i.max(j)));
                }
            }
        }
    }
    let mut out: Vec<(usize, usize, f64)> = candidates
        .into_iter()
        .filter_map(|(i, j)| {
            let s = jaccard(&sets[i], &sets[j]);
            (s >= threshold).then_some((i, j, s))
        })
        .collect();
    out.sort_by_key(|&(i, j, _)| (i, j));
    out
}

/// Finds exact duplicates, conflicting answers and near-duplicate questions among `samples`
/// (anonymised), and groups rows for the split.
pub fn dedup(samples: &[Sample], near_threshold: f64) -> Dedup {
    let mut parent: Vec<usize> = (0..samples.len()).collect();
    let mut report = DedupReport { near_threshold, ..DedupReport::default() };

    // Exact duplicates of the whole sample.
    let mut first: HashMap<String, usize> = HashMap::new();
    let mut exact = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        match first.get(&sample_key(s)) {
            Some(&f) => {
                exact.push((i, f));
                report.exact_duplicates.push(Duplicate { line: s.source_line, duplicate_of: samples[f].source_line });
                union(&mut parent, i, f);
            }
            None => {
                first.insert(sample_key(s), i);
            }
        }
    }
    let dup_set: BTreeSet<usize> = exact.iter().map(|&(d, _)| d).collect();

    // Same question: one group; different answers are flagged.
    let mut by_question: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, s) in samples.iter().enumerate() {
        by_question.entry(question_key(&s.question())).or_default().push(i);
    }
    for members in by_question.values() {
        for &m in &members[1..] {
            union(&mut parent, members[0], m);
        }
        let distinct: Vec<usize> = members.iter().copied().filter(|i| !dup_set.contains(i)).collect();
        let answers: BTreeSet<String> =
            distinct.iter().map(|&i| samples[i].answer().split_whitespace().collect::<Vec<_>>().join(" ")).collect();
        if answers.len() > 1 {
            report.conflicting_answers.push(distinct.iter().map(|&i| samples[i].source_line).collect());
        }
    }
    report.conflicting_answers.sort();

    // Near-duplicates among distinct questions (one representative each).
    let reps: Vec<(&String, usize)> = by_question.iter().map(|(k, v)| (k, v[0])).collect();
    let sets: Vec<Vec<u64>> = reps.iter().map(|(k, _)| shingles(k)).collect();
    let mut pairs: Vec<NearPair> = Vec::new();
    for (a, b, s) in near_pairs(&sets, near_threshold) {
        let (ia, ib) = (reps[a].1, reps[b].1);
        union(&mut parent, ia, ib);
        let (la, lb) = (samples[ia].source_line, samples[ib].source_line);
        pairs.push(NearPair { a: la.min(lb), b: la.max(lb), jaccard: (s * 1000.0).round() / 1000.0 });
    }
    pairs.sort_by_key(|p| (p.a, p.b));
    report.near_pairs_total = pairs.len();
    pairs.truncate(MAX_LISTED_PAIRS);
    report.near_pairs = pairs;
    Dedup { exact_duplicates: exact, report, parent }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Message, Role};

    fn s(line: usize, q: &str, a: &str) -> Sample {
        Sample {
            id: String::new(),
            messages: vec![Message { role: Role::User, content: q.into() }, Message { role: Role::Assistant, content: a.into() }],
            category: None,
            source_line: line,
        }
    }

    #[test]
    fn jaccard_basics() {
        let a = shingles("как сбросить пароль сотруднику");
        assert!((jaccard(&a, &a) - 1.0).abs() < 1e-12);
        let b = shingles("совсем другой вопрос про тарифы");
        assert!(jaccard(&a, &b) < 0.1);
    }

    #[test]
    fn lsh_finds_every_pair_above_threshold() {
        // Compare LSH against brute force on variants of a few templates.
        let mut texts = Vec::new();
        for n in 0..30 {
            texts.push(format!("прошу оформить возврат средств. тариф старт, оплата была {n} дней назад"));
            texts.push(format!("подскажите цену тарифа бизнес, у нас команда {n} человек."));
            texts.push(format!("обмен с 1с падает с ошибкой e-50{}, что делать? это {n}", n % 4));
        }
        let sets: Vec<Vec<u64>> = texts.iter().map(|t| shingles(t)).collect();
        for t in [0.6, 0.8, 0.9] {
            let lsh = near_pairs(&sets, t);
            let mut brute = Vec::new();
            for i in 0..sets.len() {
                for j in i + 1..sets.len() {
                    if jaccard(&sets[i], &sets[j]) >= t {
                        brute.push((i, j));
                    }
                }
            }
            let got: Vec<(usize, usize)> = lsh.iter().map(|&(i, j, _)| (i, j)).collect();
            assert_eq!(got, brute, "threshold {t}");
        }
    }

    #[test]
    fn exact_conflicts_and_near_groups() {
        let rows = vec![
            s(1, "Как сбросить пароль?", "Настройки → Пользователи."),
            s(2, "как  сбросить пароль?", "Настройки → Пользователи."), // same question key, same answer
            s(3, "Как сбросить пароль?", "Настройки → Пользователи."), // exact duplicate of 1
            s(4, "Как сбросить пароль?", "Обратитесь к администратору."), // conflict
            s(5, "Прошу оформить возврат средств. Тариф Старт, оплата была 7 дней назад", "Да."),
            s(6, "Прошу оформить возврат средств. Тариф Старт, оплата была 9 дней назад", "Да."),
            s(7, "Где физически хранятся наши данные?", "В России."),
        ];
        let d = dedup(&rows, 0.8);
        assert_eq!(d.report.exact_duplicates, vec![Duplicate { line: 3, duplicate_of: 1 }]);
        assert_eq!(d.report.conflicting_answers, vec![vec![1, 2, 4]]);
        assert!(d.report.near_pairs.iter().any(|p| p.a == 5 && p.b == 6), "{:?}", d.report.near_pairs);
        let g = d.groups_of(&[0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(g[0], g[1]);
        assert_eq!(g[0], g[3]);
        assert_eq!(g[4], g[5]);
        assert_ne!(g[0], g[4]);
        assert_ne!(g[6], g[4]);
        assert_ne!(g[6], g[0]);
    }
}
