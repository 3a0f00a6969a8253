//! Embedding throughput (texts/s) on 256-token passages.
//!
//! `cargo bench -p trident-embed --bench embed_throughput -- --minilm DIR --e5 FILE [--n 256]
//!  [--out bench/work/passages_minilm.txt] [--runtime llama|llama-bf16|candle|all]`
//! Passages are built from a fixed word list until the model's tokenizer counts 256 tokens
//! (special tokens included); the MiniLM passages are written to `--out` so that
//! `st_baseline.py` embeds exactly the same texts with sentence-transformers.

use std::time::Instant;

use trident_embed::{BertEmbedder, E5Embedder, Embedder, EncoderRuntime};

const EN: &str = "the company policy requires every employee to submit expense reports within thirty days of \
travel and managers approve them after checking receipts against the budget of the department while \
finance reconciles payments at the end of each quarter customers who renew their annual plan receive \
a discount on support services and priority access to new features during the beta period";
const RU: &str = "политика компании требует чтобы каждый сотрудник сдавал авансовый отчет в течение тридцати \
дней после командировки а руководитель утверждал его после проверки чеков бухгалтерия сверяет платежи \
в конце квартала клиенты продлившие годовой тариф получают скидку на поддержку и ранний доступ к новым функциям";

fn passages(e: &dyn Embedder, n: usize, target: usize, words: &[&str]) -> Vec<String> {
    (0..n)
        .map(|i| {
            let mut text = String::new();
            let mut j = i * 7;
            loop {
                let w = words[j % words.len()];
                let cand = if text.is_empty() { w.to_string() } else { format!("{text} {w}") };
                if e.count_tokens(&cand).unwrap_or(usize::MAX) > target {
                    break;
                }
                text = cand;
                j += 1;
            }
            text
        })
        .collect()
}

fn measure(name: &str, e: &dyn Embedder, texts: &[String]) {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    e.embed_passages(&refs[..refs.len().min(32)]).expect("warm-up");
    let t = Instant::now();
    let out = e.embed_passages(&refs).expect("embed");
    let s = t.elapsed().as_secs_f64();
    let toks: usize = texts.iter().map(|t| e.count_tokens(t).unwrap_or(0)).sum();
    println!(
        "{name}: {} passages x {:.0} tokens avg in {s:.2} s = {:.1} texts/s (dim {})",
        out.len(),
        toks as f64 / texts.len() as f64,
        out.len() as f64 / s,
        out[0].len()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let n: usize = get("--n").and_then(|v| v.parse().ok()).unwrap_or(256);
    let runtimes: Vec<EncoderRuntime> = match get("--runtime").as_deref() {
        None | Some("all") => vec![EncoderRuntime::Llama, EncoderRuntime::LlamaBf16, EncoderRuntime::Candle],
        Some(r) => vec![r.parse().expect("--runtime llama|llama-bf16|candle|all")],
    };
    println!("threads: {}", rayon::current_num_threads());
    for rt in runtimes {
        run(&get, n, rt);
    }
}

fn run(get: &dyn Fn(&str) -> Option<String>, n: usize, rt: EncoderRuntime) {
    let label = match rt {
        EncoderRuntime::Llama => "llama.cpp f32",
        EncoderRuntime::LlamaBf16 => "llama.cpp bf16",
        EncoderRuntime::Candle => "candle",
    };
    if let Some(dir) = get("--minilm") {
        let e = BertEmbedder::load_on(&dir, rt).expect("load all-MiniLM-L6-v2");
        let words: Vec<&str> = EN.split_whitespace().collect();
        let texts = passages(&e, n, 256, &words);
        if let Some(out) = get("--out") {
            if let Some(p) = std::path::Path::new(&out).parent() {
                std::fs::create_dir_all(p).expect("create output folder");
            }
            std::fs::write(&out, texts.join("\n") + "\n").expect("write passages");
        }
        measure(&format!("all-MiniLM-L6-v2 (trident, {label})"), &e, &texts);
    }
    if let Some(path) = get("--e5") {
        let e = E5Embedder::load_on(&path, rt).expect("load e5");
        let mut words: Vec<&str> = RU.split_whitespace().collect();
        words.extend(EN.split_whitespace().take(20));
        let texts = passages(&e, n.min(128), 256, &words);
        measure(&format!("multilingual-e5-small q4 (trident, {label})"), &e, &texts);
    }
}
