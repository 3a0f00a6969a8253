//! Acceptance: the candle model code against HF transformers (f32 on the dequantized GGUF),
//! from `../shared/ref/*.json`, on the real default models (`TRIDENT_TEST_MODELS`).
//!
//! Tolerances (stated): in `Dequantized` mode top-1 identical at ≥ 99% of positions and
//! max |Δlogit| over the reference top-20 ≤ 1e-2. In `Quantized` mode (activations quantized
//! to Q8_K by candle's kernels) only top-1 agreement ≥ 90% is required; the measured max
//! |Δlogit| is printed.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use trident_nn::{load_model, CausalLm, LoadOptions, Precision};

fn models_dir() -> Option<PathBuf> {
    match std::env::var_os("TRIDENT_TEST_MODELS") {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            eprintln!("TRIDENT_TEST_MODELS is not set: skipping the real-model reference test");
            None
        }
    }
}

fn shared_ref(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/ref").join(name);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("{} not found: skipping", p.display());
        None
    }
}

struct Stats {
    positions: usize,
    top1_same: usize,
    max_abs: f32,
}

fn compare(model: &dyn CausalLm, reference: &serde_json::Value) -> Stats {
    let mut st = Stats { positions: 0, top1_same: 0, max_abs: 0.0 };
    for seq in reference["logits"].as_array().expect("logits array") {
        let ids: Vec<u32> = seq["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let n = ids.len();
        let input = Tensor::from_vec(ids, (1, n), &Device::Cpu).unwrap();
        let logits = model.forward(&input, false).unwrap().squeeze(0).unwrap().to_vec2::<f32>().unwrap();
        for (pos, p) in seq["positions"].as_array().unwrap().iter().enumerate() {
            let top_ids: Vec<usize> = p["top_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
            let top_logits: Vec<f32> = p["top_logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            let row = &logits[pos];
            let argmax = row.iter().enumerate().fold((0, f32::MIN), |a, (i, &v)| if v > a.1 { (i, v) } else { a }).0;
            st.positions += 1;
            if argmax == top_ids[0] {
                st.top1_same += 1;
            }
            for (id, l) in top_ids.iter().zip(&top_logits) {
                st.max_abs = st.max_abs.max((row[*id] - l).abs());
            }
        }
    }
    st
}

fn check(file: &str, json: &str) {
    let Some(dir) = models_dir() else { return };
    let Some(refp) = shared_ref(json) else { return };
    let gguf = dir.join(file);
    if !gguf.exists() {
        eprintln!("{} not found: skipping", gguf.display());
        return;
    }
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(refp).unwrap()).unwrap();
    let mut model = load_model(&gguf, &LoadOptions::default()).unwrap();
    let t = std::time::Instant::now();
    let st = compare(model.as_ref(), &reference);
    let frac = st.top1_same as f64 / st.positions as f64;
    println!(
        "{file} Dequantized: top-1 {}/{} ({:.2}%), max |Δlogit| over top-20 = {:.2e} ({:.1} s)",
        st.top1_same,
        st.positions,
        100.0 * frac,
        st.max_abs,
        t.elapsed().as_secs_f64()
    );
    assert!(frac >= 0.99, "top-1 agreement {frac}");
    assert!(st.max_abs <= 1e-2, "max |Δlogit| {}", st.max_abs);

    model.set_precision(Precision::Quantized);
    let t = std::time::Instant::now();
    let sq = compare(model.as_ref(), &reference);
    let fq = sq.top1_same as f64 / sq.positions as f64;
    println!(
        "{file} Quantized: top-1 {}/{} ({:.2}%), max |Δlogit| over top-20 = {:.3} ({:.1} s)",
        sq.top1_same,
        sq.positions,
        100.0 * fq,
        sq.max_abs,
        t.elapsed().as_secs_f64()
    );
    assert!(fq >= 0.9, "quantized top-1 agreement {fq}");
}

#[test]
fn qwen25_coder_matches_transformers_reference() {
    check("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "qwen2.5-coder-0.5b-instruct-q4_k_m.json");
}

#[test]
fn gemma3_270m_matches_transformers_reference() {
    check("gemma-3-270m-q4_k_m.gguf", "gemma-3-270m-q4_k_m.json");
}
