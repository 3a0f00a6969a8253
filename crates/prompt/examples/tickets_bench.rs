//! Benchmark of the ticket-triage formula prompt (JSON Schema output + few-shot) on
//! `shared/lora/tickets-test.jsonl` with the real default model: JSON validity and category
//! accuracy. The same measurement is `trident prompt bench support-ticket-triage --data …`.
//!
//! ```text
//! TRIDENT_TEST_MODELS=/tmp/models/gguf cargo run -p trident-prompt --example tickets_bench -- \
//!     [--limit N] [--dynamic TRAIN.jsonl --k 3] [--offset N] [--out results.jsonl] [--threads N]
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use trident_engine::{LlamaBackend, LlamaConfig};
use trident_prompt::compile::{CompileInput, compile};
use trident_prompt::fewshot::{Lexical, load_examples, select};
use trident_prompt::run::{EngineGenerator, gen_options, run};
use trident_prompt::spec::ExampleSet;
use trident_prompt::{Values, library};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let models = std::env::var("TRIDENT_TEST_MODELS").map_err(|_| "set TRIDENT_TEST_MODELS to the folder with the default models")?;
    let model = Path::new(&models).join("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    let data = arg(&args, "--data").map(PathBuf::from).unwrap_or_else(|| shared.join("lora/tickets-test.jsonl"));
    let limit: usize = arg(&args, "--limit").map(|s| s.parse()).transpose()?.unwrap_or(usize::MAX);
    let offset: usize = arg(&args, "--offset").map(|s| s.parse()).transpose()?.unwrap_or(0);
    let threads: usize = arg(&args, "--threads").map(|s| s.parse()).transpose()?.unwrap_or(0);
    let spec = library::get("support-ticket-triage")?.spec;
    let pool = match arg(&args, "--dynamic") {
        Some(p) => {
            let set = ExampleSet { path: p.clone(), k: 3, input_field: "question".into(), output_field: "answer".into() };
            Some((load_examples(Path::new(&p), &set)?, arg(&args, "--k").map(|s| s.parse()).transpose()?.unwrap_or(3usize)))
        }
        None => None,
    };
    let backend = LlamaBackend::load(&model, &LlamaConfig::default().with_ctx(4096).with_threads(threads))?;
    let g = EngineGenerator { backend: &backend, adapter: None };
    let mut out = match arg(&args, "--out") {
        Some(p) => Some(std::fs::File::create(p)?),
        None => None,
    };
    let text = std::fs::read_to_string(&data)?;
    let rows: Vec<serde_json::Value> =
        text.lines().filter(|l| !l.trim().is_empty()).skip(offset).take(limit).map(serde_json::from_str).collect::<Result<_, _>>()?;
    let (mut first, mut valid, mut correct, mut prio) = (0usize, 0usize, 0usize, 0usize);
    let t0 = Instant::now();
    for (i, row) in rows.iter().enumerate() {
        let ticket = row["question"].as_str().ok_or("row without question")?;
        let mut v = Values::new();
        v.insert("ticket".into(), ticket.into());
        let mut input = CompileInput::default();
        if let Some((pool, k)) = &pool {
            input.extra_examples = select(&Lexical, ticket, pool, *k)?;
        }
        let c = compile(&spec, &v, &input)?;
        let t = Instant::now();
        let r = run(&g, &c, &spec.strategy, &gen_options(&c, None, None))?;
        first += r.attempts[0].errors.is_empty() as usize;
        valid += (r.valid == Some(true)) as usize;
        let got = r.json.as_ref().and_then(|j| j.get("category")).cloned();
        let ok = got.as_ref() == Some(&row["category"]);
        correct += ok as usize;
        let want_prio = serde_json::from_str::<serde_json::Value>(row["answer"].as_str().unwrap_or("{}")).ok().and_then(|a| a.get("priority").cloned());
        let prio_ok = want_prio.is_some() && r.json.as_ref().and_then(|j| j.get("priority")) == want_prio.as_ref();
        prio += prio_ok as usize;
        eprintln!(
            "[{}/{}] {:.1}s valid={} category {} (want {}) attempts={}",
            i + 1,
            rows.len(),
            t.elapsed().as_secs_f64(),
            r.valid == Some(true),
            got.map(|g| g.to_string()).unwrap_or("-".into()),
            row["category"],
            r.attempts.len()
        );
        if let Some(f) = out.as_mut() {
            writeln!(f, "{}", serde_json::json!({"row": offset + i + 1, "category": row["category"], "got": r.json, "valid": r.valid, "attempts": r.attempts.len(), "raw": r.attempts.last().map(|a| &a.raw)}))?;
        }
    }
    let n = rows.len().max(1) as f64;
    println!(
        "{}",
        serde_json::json!({
            "prompt": "support-ticket-triage",
            "model": model.file_name().map(|f| f.to_string_lossy().to_string()),
            "rows": rows.len(),
            "offset": offset,
            "dynamic_few_shot_k": pool.as_ref().map(|(_, k)| *k),
            "json_valid_first_attempt": first as f64 / n,
            "json_valid_after_retry": valid as f64 / n,
            "category_accuracy": correct as f64 / n,
            "priority_accuracy": prio as f64 / n,
            "seconds": t0.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}
