//! Training throughput and memory of the candle model code: LoRA on a frozen quantized base.
//!
//! `cargo run -p trident-nn --example train_bench -- MODEL.gguf [BATCH] [SEQ] [STEPS] [dequantized|quantized] [nockpt]`
//!
//! Runs 1 warm-up and STEPS timed steps of fused loss → backward → AdamW on random token ids
//! (LoRA r=16, alpha 32, dropout 0, targets q,k,v,o,gate,up,down, loss on every position),
//! then prints tokens/s and peak RSS (VmHWM). Threads: set `RAYON_NUM_THREADS`.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::Optimizer;
use trident_nn::{load_model, LoadOptions, LoraConfig, LoraTarget, LossBatch, Precision};

fn vm_hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM")).map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")))
        .unwrap_or_else(|| "?".into())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = PathBuf::from(args.first().ok_or("usage: train_bench MODEL.gguf [BATCH] [SEQ] [STEPS] [dequantized|quantized] [nockpt]")?);
    let batch: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(4);
    let seq: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(256);
    let steps: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let precision = match args.get(4).map(String::as_str) {
        Some("quantized") => Precision::Quantized,
        _ => Precision::Dequantized,
    };
    let checkpointing = args.get(5).map(String::as_str) != Some("nockpt");
    trident_nn::memory::keep_freed_memory();
    let lora = LoraConfig { rank: 16, alpha: 32.0, dropout: 0.0, targets: LoraTarget::ALL.to_vec(), init_seed: 1 };
    let t0 = Instant::now();
    let model = load_model(&path, &LoadOptions { lora: Some(lora), precision, checkpointing, ..Default::default() })?;
    println!("loaded in {:.2} s, RSS peak {}", t0.elapsed().as_secs_f64(), vm_hwm());
    let vars: Vec<_> = model.lora_vars().into_iter().map(|(_, v)| v).collect();
    let n_params: usize = vars.iter().map(|v| v.as_tensor().elem_count()).sum();
    let mut opt = candle_nn::AdamW::new(vars, candle_nn::ParamsAdamW { lr: 1e-4, ..Default::default() })?;
    let vocab = model.config().vocab_size as u64;
    let mut state = 12345u64;
    let mut rand_ids = |n: usize| -> Vec<u32> {
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 33) % vocab.min(20_000)) as u32
            })
            .collect()
    };
    let mut step_times = Vec::new();
    for step in 0..=steps {
        let ids = rand_ids(batch * (seq + 1));
        let all = Tensor::from_vec(ids, (batch, seq + 1), &Device::Cpu)?;
        let b = LossBatch {
            input_ids: all.narrow(1, 0, seq)?,
            attention_mask: None,
            targets: all.narrow(1, 1, seq)?,
            weights: Tensor::ones((batch, seq), candle_core::DType::F32, &Device::Cpu)?,
        };
        let t = Instant::now();
        let out = model.loss(&b, true)?;
        let tf = t.elapsed().as_secs_f64();
        let grads = out.loss.backward()?;
        let tb = t.elapsed().as_secs_f64() - tf;
        opt.step(&grads)?;
        let dt = t.elapsed().as_secs_f64();
        println!(
            "step {step}{}: loss {:.4}, {:.2} s (forward {:.2}, backward {:.2}), {:.1} tok/s, RSS peak {}",
            if step == 0 { " (warm-up)" } else { "" },
            out.loss.to_scalar::<f32>()?,
            dt,
            tf,
            tb,
            (batch * seq) as f64 / dt,
            vm_hwm()
        );
        if step > 0 {
            step_times.push(dt);
        }
    }
    let mean = step_times.iter().sum::<f64>() / step_times.len().max(1) as f64;
    println!(
        "RESULT batch {batch}x{seq}, {precision:?}, checkpointing {checkpointing}, trainable {n_params}, threads {}: {:.1} tok/s (mean of {} steps), peak RSS {}",
        rayon::current_num_threads(),
        (batch * seq) as f64 / mean,
        step_times.len(),
        vm_hwm()
    );
    Ok(())
}
