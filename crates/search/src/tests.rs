//! Tests of the hybrid index (unit tests next to the code, per crate convention).

use std::collections::{BTreeMap, BTreeSet};

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use crate::*;

const DIM: usize = 8;

fn meta() -> IndexMeta {
    IndexMeta { embedder_id: "test-embedder@0".into(), dim: DIM }
}

fn axis(i: usize) -> Vec<f32> {
    let mut v = vec![0.0; DIM];
    v[i % DIM] = 1.0;
    v
}

fn chunk(id: &str, doc: &str, version: u32, text: &str, vector: Vec<f32>, groups: &[&str]) -> IndexChunk {
    IndexChunk {
        chunk_id: id.into(),
        doc_id: doc.into(),
        version,
        current: true,
        text: text.into(),
        vector,
        groups: groups.iter().map(|s| s.to_string()).collect(),
        lang: "ru".into(),
        valid_from: 0,
        ingested_at: 0,
        metadata: BTreeMap::new(),
    }
}

fn query(text: &str, vector: Option<Vec<f32>>, groups: &[&str], k: usize) -> SearchQuery {
    SearchQuery {
        text: text.into(),
        vector,
        groups: groups.iter().map(|s| s.to_string()).collect(),
        k,
        ..Default::default()
    }
}

fn ids(hits: &[Hit]) -> Vec<&str> {
    hits.iter().map(|h| h.chunk_id.as_str()).collect()
}

#[test]
fn russian_and_english_morphology_recall() {
    let dir = tempfile::tempdir().expect("tmp");
    let idx = HybridIndex::open_or_create(dir.path(), &meta()).expect("open");
    idx.add(&[
        chunk("t", "tarify", 1, "Тариф «Бизнес» стоит 4900 рублей в месяц.", axis(0), &["*"]),
        chunk("s", "skidki", 1, "Скидка постоянным клиентам составляет десять процентов.", axis(1), &["*"]),
        chunk("e", "prices", 1, "The price list was updated for enterprise customers.", axis(2), &["*"]),
        chunk("o", "other", 1, "Отпуск оформляется заявлением за две недели.", axis(3), &["*"]),
    ])
    .expect("add");
    idx.commit().expect("commit");
    for (q, want) in [("стоимость тарифа", "t"), ("какие скидки есть", "s"), ("скидкам", "s"), ("prices", "e"), ("отпуска", "o")] {
        let hits = idx.search(&query(q, None, &[], 5)).expect("search");
        assert_eq!(hits.first().map(|h| h.chunk_id.as_str()), Some(want), "query {q:?}: {:?}", ids(&hits));
        assert!(hits[0].bm25_rank == Some(1) && hits[0].vector_rank.is_none());
    }
}

#[test]
fn reciprocal_rank_fusion_scores_and_order() {
    let dir = tempfile::tempdir().expect("tmp");
    let idx = HybridIndex::open_or_create(dir.path(), &meta()).expect("open");
    // BM25 order for "alpha": a (3 hits) > b (2) > c (1); vector order for axis 0: b > c > a
    let near = |w: f32| {
        let mut v = axis(0);
        v[1] = w;
        v
    };
    idx.add(&[
        chunk("a", "d1", 1, "alpha alpha alpha", near(3.0), &["*"]),
        chunk("b", "d2", 1, "alpha alpha beta", near(0.1), &["*"]),
        chunk("c", "d3", 1, "alpha beta gamma", near(1.0), &["*"]),
        chunk("z", "d4", 1, "unrelated words", axis(5), &["*"]),
    ])
    .expect("add");
    idx.commit().expect("commit");
    let hits = idx.search(&query("alpha", Some(axis(0)), &[], 4)).expect("search");
    let r = |x: u32| 1.0 / (60.0 + x as f32);
    for h in &hits {
        let want = h.bm25_rank.map(r).unwrap_or(0.0) + h.vector_rank.map(r).unwrap_or(0.0);
        assert!((h.score - want).abs() < 1e-6, "{h:?}");
    }
    let a = hits.iter().find(|h| h.chunk_id == "a").expect("a");
    let c = hits.iter().find(|h| h.chunk_id == "c").expect("c");
    assert_eq!((a.bm25_rank, c.bm25_rank), (Some(1), Some(3)));
    assert_eq!((c.vector_rank, a.vector_rank), (Some(2), Some(3)));
    // b: 1/62 + 1/61 > a: 1/61 + 1/63 > c: 1/63 + 1/62 > z: 1/64
    assert_eq!(ids(&hits), vec!["b", "a", "c", "z"]);
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    assert_eq!(hits.last().map(|h| h.chunk_id.as_str()), Some("z"));
    assert!(hits[0].similarity.is_some_and(|s| s > 0.0 && s <= 1.0001));
    // k is respected; a different rrf_k changes the scores accordingly
    assert_eq!(idx.search(&query("alpha", Some(axis(0)), &[], 2)).expect("search").len(), 2);
    drop(idx);
    let cfg = SearchConfig { rrf_k: 1.0, ..Default::default() };
    let idx = HybridIndex::open_with(dir.path(), &meta(), cfg).expect("open");
    let hits = idx.search(&query("alpha", Some(axis(0)), &[], 4)).expect("search");
    let b = hits.iter().find(|h| h.chunk_id == "b").expect("b");
    assert!((b.score - (1.0 / 3.0 + 1.0 / 2.0)).abs() < 1e-6, "{b:?}");
}

#[test]
fn access_groups_randomized() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let groups = ["hr", "sales", "it", "finance", "board", "legal"];
    let words = ["тариф", "скидка", "зарплата", "отпуск", "договор", "сервер", "price", "salary", "contract", "server"];
    let dir = tempfile::tempdir().expect("tmp");
    let idx = HybridIndex::open_or_create(dir.path(), &meta()).expect("open");
    let mut acl: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut chunks = Vec::new();
    for i in 0..600 {
        let mut g: BTreeSet<String> = BTreeSet::new();
        if rng.random_bool(0.25) {
            g.insert("*".into());
        } else {
            for _ in 0..rng.random_range(1..3) {
                g.insert(groups.choose(&mut rng).expect("non-empty").to_string());
            }
        }
        let text: Vec<&str> = (0..6).map(|_| *words.choose(&mut rng).expect("non-empty")).collect();
        let v: Vec<f32> = (0..DIM).map(|_| rng.random::<f32>() - 0.5).collect();
        let id = format!("c{i}");
        acl.insert(id.clone(), g.clone());
        let gs: Vec<&str> = g.iter().map(String::as_str).collect();
        chunks.push(chunk(&id, &format!("d{}", i / 3), 1, &text.join(" "), v, &gs));
    }
    idx.add(&chunks).expect("add");
    idx.commit().expect("commit");
    // both vector paths: exact scan (default threshold) and the HNSW graph (threshold 0)
    for exact_threshold in [4096, 0] {
        let cfg = SearchConfig { exact_threshold, ..Default::default() };
        let idx = if exact_threshold == 0 {
            HybridIndex::open_with(dir.path(), &meta(), cfg).expect("reopen")
        } else {
            HybridIndex::open_or_create(dir.path(), &meta()).expect("reopen")
        };
        let mut total = 0;
        for _ in 0..300 {
            let user: Vec<&str> = groups.iter().copied().filter(|_| rng.random_bool(0.3)).collect();
            let readable = acl.values().filter(|g| g.contains("*") || user.iter().any(|u| g.contains(*u))).count();
            let q: Vec<&str> = (0..2).map(|_| *words.choose(&mut rng).expect("non-empty")).collect();
            let v: Vec<f32> = (0..DIM).map(|_| rng.random::<f32>() - 0.5).collect();
            let k = rng.random_range(1..40);
            let vec = if rng.random_bool(0.8) { Some(v) } else { None };
            let hits = idx.search(&query(&q.join(" "), vec.clone(), &user, k)).expect("search");
            assert!(hits.len() <= k.min(readable));
            if vec.is_some() && exact_threshold > 0 {
                assert_eq!(hits.len(), k.min(readable), "vector search must fill k from readable chunks");
            }
            for h in &hits {
                let g = &acl[&h.chunk_id];
                assert!(
                    g.contains("*") || user.iter().any(|u| g.contains(*u)),
                    "user {user:?} got {} with groups {g:?}",
                    h.chunk_id
                );
            }
            total += hits.len();
        }
        assert!(total > 1000);
    }
    // a user with an empty or unknown group list sees only "*" chunks
    let hits = idx.search(&query("зарплата salary", Some(axis(0)), &["nobody"], 50)).expect("search");
    assert!(hits.iter().all(|h| acl[&h.chunk_id].contains("*")));
}

#[test]
fn version_filters_and_set_current() {
    let dir = tempfile::tempdir().expect("tmp");
    let idx = HybridIndex::open_or_create(dir.path(), &meta()).expect("open");
    let mut v1 = chunk("tarify#1#0", "tarify", 1, "Тариф Бизнес стоит 3900 рублей", axis(0), &["*"]);
    v1.valid_from = 100;
    idx.add(&[v1]).expect("add");
    idx.commit().expect("commit");
    let mut v2 = chunk("tarify#2#0", "tarify", 2, "Тариф Бизнес стоит 4900 рублей", axis(0), &["*"]);
    v2.valid_from = 200;
    idx.add(&[v2]).expect("add");
    idx.commit().expect("commit");
    let run = |vf: VersionFilter| {
        let mut q = query("тариф", Some(axis(0)), &[], 5);
        q.version = vf;
        idx.search(&q).expect("search").into_iter().map(|h| (h.chunk_id, h.version)).collect::<Vec<_>>()
    };
    assert_eq!(run(VersionFilter::CurrentOnly), vec![("tarify#2#0".to_string(), 2)]);
    assert_eq!(run(VersionFilter::AsOf(150)), vec![("tarify#1#0".to_string(), 1)]);
    assert_eq!(run(VersionFilter::AsOf(200)), vec![("tarify#2#0".to_string(), 2)]);
    assert_eq!(run(VersionFilter::AsOf(99)), vec![]);
    assert_eq!(run(VersionFilter::Version(Some("tarify".into()), 1)), vec![("tarify#1#0".to_string(), 1)]);
    assert_eq!(run(VersionFilter::Version(Some("other".into()), 1)), vec![]);
    assert_eq!(run(VersionFilter::All).len(), 2);
    idx.set_current("tarify", 1);
    idx.commit().expect("commit");
    assert_eq!(run(VersionFilter::CurrentOnly), vec![("tarify#1#0".to_string(), 1)]);
    idx.remove_doc_versions("tarify", &[1]);
    idx.commit().expect("commit");
    assert_eq!(run(VersionFilter::CurrentOnly), vec![]);
    assert_eq!(run(VersionFilter::All), vec![("tarify#2#0".to_string(), 2)]);
    idx.remove_doc("tarify");
    idx.commit().expect("commit");
    assert_eq!(run(VersionFilter::All), vec![]);
}

#[test]
fn metadata_filter_remove_and_rerank() {
    let dir = tempfile::tempdir().expect("tmp");
    let idx = HybridIndex::open_or_create(dir.path(), &meta()).expect("open");
    let mut a = chunk("a", "d1", 1, "договор поставки", axis(0), &["*"]);
    a.metadata.insert("source".into(), "legal/a.md".into());
    let mut b = chunk("b", "d2", 1, "договор аренды", axis(0), &["*"]);
    b.metadata.insert("source".into(), "legal/b.md".into());
    idx.add(&[a, b]).expect("add");
    idx.commit().expect("commit");
    let mut q = query("договор", Some(axis(0)), &[], 5);
    q.metadata.insert("source".into(), "legal/b.md".into());
    assert_eq!(ids(&idx.search(&q).expect("search")), vec!["b"]);
    q.metadata.clear();
    struct Reverse;
    impl Reranker for Reverse {
        fn rerank(&self, _q: &str, c: &[RerankCandidate]) -> std::result::Result<Vec<f32>, String> {
            Ok(c.iter().map(|c| if c.text.contains("аренды") { 10.0 } else { 1.0 }).collect())
        }
    }
    let hits = idx.search_with(&q, Some(&Reverse)).expect("search");
    assert_eq!(ids(&hits), vec!["b", "a"]);
    assert_eq!(hits[0].score, 10.0);
    idx.remove(&["b".to_string()]);
    idx.commit().expect("commit");
    assert_eq!(ids(&idx.search(&q).expect("search")), vec!["a"]);
    assert_eq!(idx.stats().chunks, 1);
}

#[test]
fn persistence_crash_and_embedder_mismatch() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let idx = HybridIndex::open_or_create(dir.path(), &meta()).expect("open");
        idx.add(&(0..50).map(|i| chunk(&format!("c{i}"), &format!("d{i}"), 1, &format!("слово{i} общий"), axis(i), &["*"])).collect::<Vec<_>>())
            .expect("add");
        idx.commit().expect("commit");
        // queued but never committed: lost, like a killed process
        idx.add(&[chunk("lost", "dl", 1, "общий потерянный", axis(0), &["*"])]).expect("add");
    }
    let idx = HybridIndex::open_or_create(dir.path(), &meta()).expect("reopen");
    assert_eq!(idx.stats().chunks, 50);
    let hits = idx.search(&query("общий", Some(axis(3)), &[], 100)).expect("search");
    assert_eq!(hits.len(), 50);
    assert!(!ids(&hits).contains(&"lost"));
    assert!(hits.iter().any(|h| h.vector_rank == Some(1) && h.similarity.is_some_and(|s| s > 0.99)));
    drop(idx);
    // crash after the text commit but before the vector dump: vectors are restored on open
    std::fs::remove_file(dir.path().join("ann.json")).expect("rm");
    let idx = HybridIndex::open_or_create(dir.path(), &meta()).expect("reopen");
    assert_eq!(idx.stats().vectors, 50);
    let hits = idx.search(&query("", Some(axis(3)), &[], 3)).expect("search");
    assert!(hits[0].similarity.is_some_and(|s| s > 0.99));
    // ids keep growing after reopen (no reuse)
    idx.add(&[chunk("new", "dn", 1, "новый", axis(7), &["*"])]).expect("add");
    idx.commit().expect("commit");
    assert_eq!(idx.stats().vectors, 51);
    drop(idx);
    let other = IndexMeta { embedder_id: "other-model@1".into(), dim: DIM };
    match HybridIndex::open_or_create(dir.path(), &other) {
        Err(e @ SearchError::EmbedderMismatch { .. }) => {
            assert!(e.is_user_error());
            let s = e.to_string();
            assert!(s.contains("test-embedder@0") && s.contains("other-model@1"), "{s}");
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("mismatch accepted"),
    }
}

#[test]
fn bad_input_is_rejected_whole() {
    let dir = tempfile::tempdir().expect("tmp");
    let idx = HybridIndex::open_or_create(dir.path(), &meta()).expect("open");
    let good = chunk("g", "d", 1, "текст", axis(0), &["*"]);
    let short = chunk("s", "d", 1, "текст", vec![1.0; 3], &["*"]);
    let e = idx.add(&[good.clone(), short]).err().expect("bad dim");
    assert!(e.is_user_error() && e.to_string().contains("dimension"), "{e}");
    assert!(!idx.has_pending());
    assert!(idx.add(&[chunk("n", "d", 1, "x", vec![0.0; DIM], &["*"])]).is_err());
    assert!(idx.add(&[chunk("n", "d", 1, "x", axis(0), &[])]).is_err());
    let mut q = query("текст", Some(vec![1.0; 3]), &[], 3);
    assert!(idx.search(&q).is_err());
    q.vector = None;
    assert!(idx.search(&q).expect("empty index").is_empty());
    assert!(HybridIndex::open_or_create(dir.path().join("x"), &IndexMeta { embedder_id: "".into(), dim: 4 }).is_err());
}

#[test]
fn doc_freqs_count_only_readable_chunks() {
    let dir = tempfile::tempdir().expect("tmp");
    let idx = HybridIndex::open_or_create(dir.path(), &meta()).expect("open");
    idx.add(&[
        chunk("a", "d1", 1, "оклад директора", axis(0), &["hr"]),
        chunk("b", "d2", 1, "оклад и тариф", axis(1), &["*"]),
        chunk("c", "d3", 1, "тариф Бизнес", axis(2), &["*"]),
    ])
    .expect("add");
    idx.commit().expect("commit");
    let terms: Vec<String> = ["оклад", "директор", "тариф"].iter().map(|w| analyze(w).remove(0)).collect();
    let (n, df) = idx.doc_freqs(&query("", None, &[], 5), &terms).expect("df");
    assert_eq!((n, df), (2, vec![1, 0, 2]), "the hr chunk is never counted for an outsider");
    let (n, df) = idx.doc_freqs(&query("", None, &["hr"], 5), &terms).expect("df");
    assert_eq!((n, df), (3, vec![2, 1, 2]));
}

#[test]
fn bm25_scores_ignore_unreadable_chunks() {
    // The same readable chunks score identically whether or not unreadable ones sit beside them.
    let readable = [
        chunk("a", "d1", 1, "тариф Бизнес стоит 2490 рублей", axis(0), &["*"]),
        chunk("b", "d2", 1, "тариф Старт и тариф Бизнес", axis(1), &["*"]),
    ];
    let hidden = [
        chunk("h1", "d3", 1, "оклад директора тариф тариф тариф секрет секрет секрет секрет", axis(2), &["hr"]),
        chunk("h2", "d4", 1, "бизнес бизнес бизнес", axis(3), &["hr"]),
    ];
    let d1 = tempfile::tempdir().expect("tmp");
    let d2 = tempfile::tempdir().expect("tmp");
    let all = HybridIndex::open_or_create(d1.path(), &meta()).expect("open");
    all.add(&readable).expect("add");
    all.add(&hidden).expect("add");
    all.commit().expect("commit");
    let only = HybridIndex::open_or_create(d2.path(), &meta()).expect("open");
    only.add(&readable).expect("add");
    only.commit().expect("commit");
    let q = query("тариф бизнес", None, &[], 5);
    let s1: Vec<(String, Option<f32>)> = all.search(&q).expect("search").into_iter().map(|h| (h.chunk_id, h.bm25_score)).collect();
    let s2: Vec<(String, Option<f32>)> = only.search(&q).expect("search").into_iter().map(|h| (h.chunk_id, h.bm25_score)).collect();
    assert_eq!(s1, s2);
}
