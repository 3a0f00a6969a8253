//! Hybrid query latency at 10k and 100k synthetic chunks (query embedding excluded).
//!
//! `cargo bench -p trident-search --bench hybrid_query [-- SIZES...]` (default 10000 100000).
//! The corpus is generated here: Russian/English texts drawn from a Zipf-like vocabulary,
//! 384-d unit vectors around 256 topic centroids, 8 access groups (25 % of chunks readable by
//! everyone), 10 % of documents with an older version. Queries: 3 words + a vector near a random
//! chunk, asked by users with random groups, k = 5, current versions only.

use std::collections::BTreeMap;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use trident_search::{HybridIndex, IndexChunk, IndexMeta, SearchQuery, VersionFilter};

const DIM: usize = 384;

fn unit(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

fn gauss(rng: &mut impl Rng) -> f32 {
    // Box–Muller
    let u1: f32 = rng.random::<f32>().max(1e-9);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if args.is_empty() { vec![10_000, 100_000] } else { args };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let stems = [
        "тариф", "скидк", "договор", "отпуск", "сотрудник", "клиент", "сервер", "кластер", "оплат", "счет", "налог",
        "отчет", "склад", "поставк", "гарант", "возврат", "доставк", "заказ", "проект", "бюджет",
    ];
    let ends = ["", "а", "ы", "ов", "ами", "е", "у", "ом"];
    let en = [
        "price", "discount", "contract", "vacation", "employee", "customer", "server", "cluster", "payment", "invoice",
        "tax", "report", "warehouse", "delivery", "warranty", "refund", "order", "project", "budget", "policy",
    ];
    let mut vocab: Vec<String> = Vec::new();
    for s in stems {
        for e in ends {
            vocab.push(format!("{s}{e}"));
        }
    }
    vocab.extend(en.iter().map(|s| s.to_string()));
    for i in 0..3000 {
        vocab.push(format!("термин{i}"));
    }
    let zipf = |rng: &mut rand_chacha::ChaCha8Rng| -> usize {
        let u: f64 = rng.random::<f64>();
        ((vocab.len() as f64).powf(u) as usize).saturating_sub(1).min(vocab.len() - 1)
    };
    let groups = ["hr", "sales", "it", "finance", "board", "legal", "support", "ops"];
    let centroids: Vec<Vec<f32>> = (0..256)
        .map(|_| {
            let mut v: Vec<f32> = (0..DIM).map(|_| gauss(&mut rng)).collect();
            unit(&mut v);
            v
        })
        .collect();
    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_default();
    println!("machine: {machine}, {} threads", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    for &n in &sizes {
        let dir = tempfile::tempdir().expect("temp dir");
        let meta = IndexMeta { embedder_id: "synthetic@bench".into(), dim: DIM };
        let idx = HybridIndex::open_or_create(dir.path(), &meta).expect("open");
        let mut vectors = Vec::with_capacity(n);
        let t0 = Instant::now();
        let mut batch = Vec::new();
        for i in 0..n {
            let c = &centroids[rng.random_range(0..centroids.len())];
            let mut v: Vec<f32> = c.iter().map(|x| x + 0.06 * gauss(&mut rng)).collect();
            unit(&mut v);
            vectors.push(v.clone());
            let len = rng.random_range(80..200);
            let text: Vec<&str> = (0..len).map(|_| vocab[zipf(&mut rng)].as_str()).collect();
            let g: Vec<String> = if rng.random_bool(0.25) {
                vec!["*".into()]
            } else {
                vec![groups[rng.random_range(0..groups.len())].to_string()]
            };
            let doc = i / 8;
            let old = doc % 10 == 0 && i % 8 < 4;
            let mut metadata = BTreeMap::new();
            metadata.insert("source".to_string(), format!("docs/{doc}.md"));
            batch.push(IndexChunk {
                chunk_id: format!("c{i}"),
                doc_id: format!("d{doc}"),
                version: if old { 1 } else { 2 },
                current: !old,
                text: text.join(" "),
                vector: v,
                groups: g,
                lang: "ru".into(),
                valid_from: if old { 1_600_000_000 } else { 1_700_000_000 },
                ingested_at: 1_700_000_000,
                metadata,
            });
            if batch.len() == 10_000 {
                idx.add(&batch).expect("add");
                batch.clear();
            }
        }
        idx.add(&batch).expect("add");
        idx.commit().expect("commit");
        let build = t0.elapsed();
        drop(idx);
        let t1 = Instant::now();
        // HQ_EXACT_THRESHOLD overrides the exact-vs-graph switch (readable chunks), for tuning.
        let mut config = trident_search::SearchConfig::default();
        if let Some(t) = std::env::var("HQ_EXACT_THRESHOLD").ok().and_then(|v| v.parse().ok()) {
            config.exact_threshold = t;
        }
        let idx = HybridIndex::open_with(dir.path(), &meta, config).expect("reopen");
        let reopen = t1.elapsed();
        let queries: Vec<SearchQuery> = (0..400)
            .map(|_| {
                let base = &vectors[rng.random_range(0..n)];
                let mut v: Vec<f32> = base.iter().map(|x| x + 0.03 * gauss(&mut rng)).collect();
                unit(&mut v);
                let words: Vec<&str> = (0..3).map(|_| vocab[zipf(&mut rng)].as_str()).collect();
                let user: Vec<String> = groups.iter().filter(|_| rng.random_bool(0.3)).map(|s| s.to_string()).collect();
                SearchQuery { text: words.join(" "), vector: Some(v), groups: user, version: VersionFilter::CurrentOnly, k: 5, ..Default::default() }
            })
            .collect();
        for q in queries.iter().take(50) {
            idx.search(q).expect("warm-up");
        }
        // HQ_PROFILE_SECS=N: first repeat the queries for N seconds (attach a profiler then).
        if let Some(secs) = std::env::var("HQ_PROFILE_SECS").ok().and_then(|v| v.parse::<u64>().ok()) {
            eprintln!("profiling window: {secs} s of queries (pid {})", std::process::id());
            let until = Instant::now() + std::time::Duration::from_secs(secs);
            while Instant::now() < until {
                for q in &queries {
                    idx.search(q).expect("search");
                }
            }
        }
        let mut lat: Vec<f64> = Vec::with_capacity(queries.len());
        let mut returned = 0;
        for q in &queries {
            let t = Instant::now();
            returned += idx.search(q).expect("search").len();
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        lat.sort_by(f64::total_cmp);
        let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
        println!(
            "chunks {n:>7}: query p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  (k=5, {} queries, {:.1} hits/query) | build+commit {:.1} s, reopen {:.2} s",
            p(0.5),
            p(0.95),
            p(0.99),
            lat.len(),
            returned as f64 / lat.len() as f64,
            build.as_secs_f64(),
            reopen.as_secs_f64()
        );
    }
}
