//! The decoder-only transformer shared by all families, driven by [`ModelConfig`] switches,
//! with gradient checkpointing per layer and a fused, vocabulary-chunked loss.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Shape, Tensor, Var, D};

use crate::config::{Activation, ModelConfig, RopeStyle};
use crate::error::{NnError, Result};
use crate::lora::{splitmix64, LoraLinear, LoraTarget};
use crate::ggml_gemm::Bf16Matrix;
use crate::qlinear::{cpu_storage, cpu_tensor, dequantize_rows, with_f32_slice, Precision, QLinear};

/// Additive mask value for disallowed attention (finite so fully masked rows stay finite).
const MASK_VALUE: f32 = -1e9;

/// Weights of one decoder layer.
#[derive(Clone)]
pub(crate) struct Block {
    pub idx: usize,
    pub cfg: Arc<ModelConfig>,
    pub attn_norm: Tensor,
    pub q: LoraLinear,
    pub k: LoraLinear,
    pub v: LoraLinear,
    pub o: LoraLinear,
    pub q_norm: Option<Tensor>,
    pub k_norm: Option<Tensor>,
    pub post_attn_norm: Option<Tensor>,
    pub ffn_norm: Tensor,
    pub gate: LoraLinear,
    pub up: LoraLinear,
    pub down: LoraLinear,
    pub post_ffn_norm: Option<Tensor>,
}

/// LoRA `A`/`B` tensors of one layer, by [`LoraTarget::ALL`] index.
type LayerAb = [Option<(Tensor, Tensor)>; 7];

/// Per-call inputs shared by all layers: rope tables, masks, dropout seed.
pub(crate) struct Ctx {
    /// `(cos, sin)` of shape `[b, 1, s, rope_dim/2]` for global layers.
    rope_global: (Tensor, Tensor),
    /// The same for local layers (different base), when the family has them.
    rope_local: Option<(Tensor, Tensor)>,
    /// Additive mask `[b, 1, 1, s, s]` (causal + padding).
    mask: Tensor,
    /// Additive mask with the sliding window as well, when the family has local layers.
    mask_local: Option<Tensor>,
    /// `Some(seed)` in train mode: LoRA dropout masks derive from it.
    dropout_seed: Option<u64>,
    /// User multiplier of every adapter's `alpha / r`.
    lora_scale: f64,
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    if x.track_op() {
        // candle-nn's fused rms_norm has no backward: use differentiable ops.
        let n = x.dim(D::Minus1)? as f64;
        let ms = (x.sqr()?.sum_keepdim(D::Minus1)? / n)?;
        let r = (ms + eps)?.sqrt()?.recip()?;
        x.broadcast_mul(&r)?.broadcast_mul(w)
    } else {
        candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32)
    }
}

fn softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.track_op() {
        candle_nn::ops::softmax(x, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(&x.contiguous()?)
    }
}

/// Applies rope to `x: [b, h, s, hd]` with `cos/sin: [b, 1, s, rope_dim/2]`.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, style: RopeStyle, rope_dim: usize) -> candle_core::Result<Tensor> {
    let hd = x.dim(D::Minus1)?;
    let half = rope_dim / 2;
    let (rot, pass) = if rope_dim < hd {
        (x.narrow(D::Minus1, 0, rope_dim)?, Some(x.narrow(D::Minus1, rope_dim, hd - rope_dim)?))
    } else {
        (x.clone(), None)
    };
    let out = match style {
        RopeStyle::Neox => {
            let x1 = rot.narrow(D::Minus1, 0, half)?;
            let x2 = rot.narrow(D::Minus1, half, half)?;
            let a = (x1.broadcast_mul(cos)? - x2.broadcast_mul(sin)?)?;
            let b = (x2.broadcast_mul(cos)? + x1.broadcast_mul(sin)?)?;
            Tensor::cat(&[a, b], D::Minus1)?
        }
        RopeStyle::Interleaved => {
            let mut dims = rot.dims().to_vec();
            dims.pop();
            let mut pair_dims = dims.clone();
            pair_dims.push(half);
            pair_dims.push(2);
            let r = rot.reshape(pair_dims)?;
            let x0 = r.narrow(D::Minus1, 0, 1)?.squeeze(D::Minus1)?;
            let x1 = r.narrow(D::Minus1, 1, 1)?.squeeze(D::Minus1)?;
            let a = (x0.broadcast_mul(cos)? - x1.broadcast_mul(sin)?)?;
            let b = (x0.broadcast_mul(sin)? + x1.broadcast_mul(cos)?)?;
            let mut full = dims;
            full.push(rope_dim);
            Tensor::stack(&[a, b], D::Minus1)?.reshape(full)?
        }
    };
    match pass {
        Some(p) => Tensor::cat(&[out, p], D::Minus1),
        None => Ok(out),
    }
}

impl Block {
    /// The layer's own LoRA tensors (the variables themselves, or detached copies).
    fn own_ab(&self, detach: bool) -> LayerAb {
        let mut out: LayerAb = Default::default();
        for (i, t) in LoraTarget::ALL.iter().enumerate() {
            if let Some(l) = &self.proj(*t).lora {
                let (a, b) = (l.a.as_tensor().clone(), l.b.as_tensor().clone());
                out[i] = Some(if detach { (a.detach(), b.detach()) } else { (a, b) });
            }
        }
        out
    }

    pub(crate) fn proj(&self, t: LoraTarget) -> &LoraLinear {
        match t {
            LoraTarget::Q => &self.q,
            LoraTarget::K => &self.k,
            LoraTarget::V => &self.v,
            LoraTarget::O => &self.o,
            LoraTarget::Gate => &self.gate,
            LoraTarget::Up => &self.up,
            LoraTarget::Down => &self.down,
        }
    }

    pub(crate) fn proj_mut(&mut self, t: LoraTarget) -> &mut LoraLinear {
        match t {
            LoraTarget::Q => &mut self.q,
            LoraTarget::K => &mut self.k,
            LoraTarget::V => &mut self.v,
            LoraTarget::O => &mut self.o,
            LoraTarget::Gate => &mut self.gate,
            LoraTarget::Up => &mut self.up,
            LoraTarget::Down => &mut self.down,
        }
    }

    fn lin(&self, t: LoraTarget, x: &Tensor, ab: &LayerAb, ctx: &Ctx) -> candle_core::Result<Tensor> {
        let i = t as usize;
        let seed = ctx.dropout_seed.map(|s| splitmix64(s ^ ((self.idx as u64) << 8 | i as u64)));
        let ab_ref = ab[i].as_ref().map(|(a, b)| (a, b));
        self.proj(t).forward_with(x, ab_ref, seed, ctx.lora_scale)
    }

    /// The layer: `[b, s, hidden] → [b, s, hidden]`.
    fn forward(&self, x: &Tensor, ctx: &Ctx, ab: &LayerAb) -> candle_core::Result<Tensor> {
        let c = &self.cfg;
        let (b, s, _) = x.dims3()?;
        let (h, kvh, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let local = c.is_local_layer(self.idx);

        let xn = rms_norm(x, &self.attn_norm, c.rms_eps)?;
        let q = self.lin(LoraTarget::Q, &xn, ab, ctx)?.reshape((b, s, h, hd))?;
        let k = self.lin(LoraTarget::K, &xn, ab, ctx)?.reshape((b, s, kvh, hd))?;
        let v = self.lin(LoraTarget::V, &xn, ab, ctx)?.reshape((b, s, kvh, hd))?;
        let (q, k) = match (&self.q_norm, &self.k_norm) {
            (Some(qn), Some(kn)) => (rms_norm(&q, qn, c.rms_eps)?, rms_norm(&k, kn, c.rms_eps)?),
            _ => (q, k),
        };
        let q = q.transpose(1, 2)?.contiguous()?; // [b, h, s, hd]
        let k = k.transpose(1, 2)?.contiguous()?; // [b, kvh, s, hd]
        let v = v.transpose(1, 2)?.contiguous()?;
        let (cos, sin) = match (&ctx.rope_local, local) {
            (Some(r), true) => r,
            _ => &ctx.rope_global,
        };
        let q = rope(&q, cos, sin, c.rope_style, c.rope_dim)?;
        let k = rope(&k, cos, sin, c.rope_style, c.rope_dim)?;
        // Grouped-query attention without copying K/V: fold the query heads of one KV head
        // into the row dimension. Head j uses KV head j / n_rep (HF `repeat_kv`).
        let n_rep = h / kvh;
        let q = (q * c.attn_scale)?.reshape((b, kvh, n_rep * s, hd))?;
        let scores = q.matmul(&k.t()?)?; // [b, kvh, n_rep*s, s]
        let scores = match c.attn_logit_softcap {
            Some(cap) => ((scores / cap)?.tanh()? * cap)?,
            None => scores,
        };
        let mask = match (&ctx.mask_local, local) {
            (Some(m), true) => m,
            _ => &ctx.mask,
        };
        let scores = scores.reshape((b, kvh, n_rep, s, s))?.broadcast_add(mask)?;
        let probs = softmax_last(&scores)?.reshape((b, kvh, n_rep * s, s))?;
        let attn = probs.matmul(&v)?; // [b, kvh, n_rep*s, hd]
        let attn = attn.reshape((b, h, s, hd))?.transpose(1, 2)?.reshape((b, s, h * hd))?;
        let attn = self.lin(LoraTarget::O, &attn, ab, ctx)?;
        let attn = match &self.post_attn_norm {
            Some(w) => rms_norm(&attn, w, c.rms_eps)?,
            None => attn,
        };
        let x = (x + attn)?;

        let xn = rms_norm(&x, &self.ffn_norm, c.rms_eps)?;
        let g = self.lin(LoraTarget::Gate, &xn, ab, ctx)?;
        let u = self.lin(LoraTarget::Up, &xn, ab, ctx)?;
        let g = match c.activation {
            Activation::Silu => g.silu()?,
            Activation::GeluTanh => g.gelu()?,
        };
        let m = self.lin(LoraTarget::Down, &(g * u)?, ab, ctx)?;
        let m = match &self.post_ffn_norm {
            Some(w) => rms_norm(&m, w, c.rms_eps)?,
            None => m,
        };
        x + m
    }
}

/// Gradient checkpointing of one layer: forward keeps only the layer input; backward
/// recomputes the layer with tracking and back-propagates through it. Argument 2 is the
/// concatenation of the layer's flattened LoRA tensors, so their gradients flow back to the
/// variables through `cat`.
struct CheckpointOp {
    block: Arc<Block>,
    ctx: Arc<Ctx>,
    /// `(target index, A shape, B shape)` in the order of the flattened parameters.
    parts: Vec<(usize, (usize, usize), (usize, usize))>,
}

impl CheckpointOp {
    fn split(&self, flat: &Tensor) -> candle_core::Result<LayerAb> {
        let mut out: LayerAb = Default::default();
        let mut off = 0;
        for (i, (ar, ac), (br, bc)) in &self.parts {
            let a = flat.narrow(0, off, ar * ac)?.reshape((*ar, *ac))?;
            off += ar * ac;
            let b = flat.narrow(0, off, br * bc)?.reshape((*br, *bc))?;
            off += br * bc;
            out[*i] = Some((a, b));
        }
        Ok(out)
    }
}

impl CustomOp2 for CheckpointOp {
    fn name(&self) -> &'static str {
        "trident-checkpointed-layer"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu_tensor(s1, l1)?;
        let flat = cpu_tensor(s2, l2)?;
        let y = self.block.forward(&x, &self.ctx, &self.split(&flat)?)?;
        cpu_storage(&y)
    }

    fn bwd(&self, arg1: &Tensor, arg2: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let _cache = crate::qlinear::DequantCacheGuard::new();
        let x = Var::from_tensor(&arg1.detach())?;
        let flat = Var::from_tensor(&arg2.detach())?;
        let y = self.block.forward(x.as_tensor(), &self.ctx, &self.split(flat.as_tensor())?)?;
        let obj = (y * grad_res.detach())?.sum_all()?;
        let grads = obj.backward()?;
        let gx = grads.get(x.as_tensor()).cloned();
        let gflat = grads.get(flat.as_tensor()).cloned();
        Ok((gx, gflat))
    }
}

/// Fused output head + cross-entropy over selected rows, chunked over the vocabulary so the
/// `[tokens, vocab]` logits never exist in full. When the input is tracked, the gradient is
/// accumulated during the forward pass with online-softmax rescaling (flash-attention style),
/// so the head costs two matmuls per chunk and the backward pass only scales it.
struct LossOp {
    head: Arc<QTensor>,
    softcap: Option<f64>,
    targets: Vec<u32>,
    /// Per-row weights already divided by their sum.
    weights: Vec<f32>,
    chunk: usize,
    /// Multiply on ggml's bf16 kernels (the head's [`Precision::Bf16`]).
    bf16: bool,
    want_grad: bool,
    grad: Arc<std::sync::Mutex<Option<Tensor>>>,
    nll: Arc<std::sync::Mutex<Vec<f32>>>,
}

impl LossOp {
    fn run(&self, h: &Tensor) -> candle_core::Result<f32> {
        let (n, d) = h.dims2()?;
        let vocab = self.head.shape().dims2()?.0;
        let mut m = vec![f32::NEG_INFINITY; n];
        let mut ssum = vec![0f32; n];
        let mut tlogit = vec![0f32; n];
        let mut tderiv = vec![1f32; n];
        let mut acc = if self.want_grad { Some(Tensor::zeros((n, d), DType::F32, &Device::Cpu)?) } else { None };
        let hv = if self.bf16 { with_f32_slice(h, |s| Ok(s.to_vec()))? } else { Vec::new() };
        let mut v0 = 0;
        while v0 < vocab {
            let v1 = (v0 + self.chunk).min(vocab);
            let c = v1 - v0;
            let w = dequantize_rows(&self.head, v0, v1)?; // [c, d]
            // bf16 mode: the chunk as stored (for the logits) and transposed (for the
            // gradient), both from the one f32 dequantization.
            let wb = if self.bf16 {
                Some(with_f32_slice(&w, |s| {
                    Ok((Bf16Matrix::from_f32(s, c, d), self.want_grad.then(|| Bf16Matrix::transposed_from_f32(s, c, d))))
                })?)
            } else {
                None
            };
            let z = if let Some((wb, _)) = &wb {
                let z = crate::ggml_gemm::matmul_bf16_wt(&hv, n, wb, rayon::current_num_threads())?;
                Tensor::from_vec(z, (n, c), &Device::Cpu)?
            } else {
                h.matmul(&w.t()?)? // [n, c]
            };
            let (logits, deriv) = match self.softcap {
                Some(cap) => {
                    let t = (z / cap)?.tanh()?;
                    let d = t.sqr()?.affine(-1.0, 1.0)?;
                    ((t * cap)?, Some(d))
                }
                None => (z, None),
            };
            let cmax = logits.max(D::Minus1)?.to_vec1::<f32>()?;
            let mut new_m = m.clone();
            for i in 0..n {
                new_m[i] = m[i].max(cmax[i]);
            }
            let nm = Tensor::from_slice(&new_m, (n, 1), &Device::Cpu)?;
            let p = logits.broadcast_sub(&nm)?.exp()?; // [n, c]
            let psum = p.sum(D::Minus1)?.to_vec1::<f32>()?;
            let rescale: Vec<f32> = (0..n).map(|i| if m[i].is_finite() { (m[i] - new_m[i]).exp() } else { 0.0 }).collect();
            for i in 0..n {
                ssum[i] = ssum[i] * rescale[i] + psum[i];
            }
            // Target logits (and soft-cap derivatives) that fall in this chunk.
            let rows: Vec<usize> = (0..n).filter(|&i| (v0..v1).contains(&(self.targets[i] as usize))).collect();
            if !rows.is_empty() {
                let lv = logits.flatten_all()?;
                let idx: Vec<u32> = rows.iter().map(|&i| (i * c + self.targets[i] as usize - v0) as u32).collect();
                let idx_t = Tensor::from_slice(&idx, idx.len(), &Device::Cpu)?;
                let got = lv.index_select(&idx_t, 0)?.to_vec1::<f32>()?;
                let dv = match &deriv {
                    Some(d) => Some(d.flatten_all()?.index_select(&idx_t, 0)?.to_vec1::<f32>()?),
                    None => None,
                };
                for (j, &i) in rows.iter().enumerate() {
                    tlogit[i] = got[j];
                    if let Some(dv) = &dv {
                        tderiv[i] = dv[j];
                    }
                }
            }
            if let Some(a) = acc.as_mut() {
                let p = match &deriv {
                    Some(d) => (p * d)?,
                    None => p,
                };
                let rs = Tensor::from_slice(&rescale, (n, 1), &Device::Cpu)?;
                let pw = if let Some((_, Some(wt))) = &wb {
                    let pw = with_f32_slice(&p, |pv| crate::ggml_gemm::matmul_bf16_wt(pv, n, wt, rayon::current_num_threads()))?;
                    Tensor::from_vec(pw, (n, d), &Device::Cpu)?
                } else {
                    p.matmul(&w)?
                };
                *a = (a.broadcast_mul(&rs)? + pw)?;
            }
            m = new_m;
            v0 = v1;
        }
        let mut loss = 0f64;
        let mut nll = vec![0f32; n];
        for i in 0..n {
            let lse = m[i] + ssum[i].ln();
            nll[i] = lse - tlogit[i];
            loss += self.weights[i] as f64 * nll[i] as f64;
        }
        if let Some(a) = acc {
            // grad_i = w_i · (Σ_j softmax_ij · dz_ij · W_j − dz_it · W_t)
            let inv: Vec<f32> = (0..n).map(|i| self.weights[i] / ssum[i]).collect();
            let inv = Tensor::from_slice(&inv, (n, 1), &Device::Cpu)?;
            let ids = Tensor::from_slice(&self.targets, n, &Device::Cpu)?;
            let wt = self.head.embedding(&ids)?; // rows W_t, [n, d]
            let coef: Vec<f32> = (0..n).map(|i| self.weights[i] * tderiv[i]).collect();
            let coef = Tensor::from_slice(&coef, (n, 1), &Device::Cpu)?;
            let g = (a.broadcast_mul(&inv)? - wt.broadcast_mul(&coef)?)?;
            *self.grad.lock().map_err(|_| candle_core::Error::Msg("loss gradient lock poisoned".into()))? = Some(g);
        }
        if let Ok(mut g) = self.nll.lock() {
            *g = nll;
        }
        Ok(loss as f32)
    }
}

impl CustomOp1 for LossOp {
    fn name(&self) -> &'static str {
        "trident-fused-cross-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let h = cpu_tensor(s, l)?;
        let loss = self.run(&h)?;
        Ok((CpuStorage::F32(vec![loss]), Shape::from(())))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let g = self.grad.lock().map_err(|_| candle_core::Error::Msg("loss gradient lock poisoned".into()))?.clone();
        match g {
            Some(g) => Ok(Some(g.broadcast_mul(&grad_res.reshape((1, 1))?)?)),
            None => candle_core::bail!("fused loss: gradient requested but not prepared"),
        }
    }
}

/// A loss batch: next-token targets and weights for every position.
#[derive(Debug, Clone)]
pub struct LossBatch {
    /// Input token ids `[batch, seq]`, `u32`.
    pub input_ids: Tensor,
    /// Optional `[batch, seq]` mask (1 = real token, 0 = padding; any numeric dtype). Padding
    /// keys are never attended to; rope positions count real tokens only (left padding works).
    pub attention_mask: Option<Tensor>,
    /// Target token at each position `[batch, seq]`, `u32` (usually `input_ids` shifted left).
    pub targets: Tensor,
    /// Loss weight at each position `[batch, seq]`, `f32` (0 = ignore: prompt or padding).
    pub weights: Tensor,
}

/// The result of [`crate::CausalLm::loss`].
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// `Σ wᵢ·nllᵢ / Σ wᵢ` as a scalar tensor; call `backward()` on it in train mode.
    pub loss: Tensor,
    /// Sum of weights (for averaging across micro-batches).
    pub weight_sum: f64,
    /// Per-position negative log-likelihoods of the weighted positions, in row-major order
    /// of the positions with non-zero weight.
    pub token_nll: Vec<f32>,
}

/// A decoder-only model of any supported family.
pub struct DecoderModel {
    pub(crate) cfg: Arc<ModelConfig>,
    pub(crate) embed: Arc<QTensor>,
    pub(crate) layers: Vec<Arc<Block>>,
    pub(crate) final_norm: Tensor,
    pub(crate) head: QLinear,
    pub(crate) lora_scale: f64,
    pub(crate) checkpointing: bool,
    pub(crate) device: Device,
    /// Device-portable kernels (standard candle ops plus [`QLinear`]'s portable path): always
    /// off CPU; on CPU only when asked for (to compare with the CPU kernels).
    pub(crate) portable: bool,
    pub(crate) step: AtomicU64,
    pub(crate) dropout_seed: u64,
}

impl std::fmt::Debug for DecoderModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecoderModel")
            .field("config", &self.cfg)
            .field("lora_scale", &self.lora_scale)
            .field("checkpointing", &self.checkpointing)
            .finish_non_exhaustive()
    }
}

impl DecoderModel {
    fn check_ids(&self, ids: &Tensor) -> Result<(usize, usize, Vec<Vec<u32>>)> {
        let (b, s) = ids.dims2().map_err(|_| NnError::Input(format!("input_ids must be [batch, seq], got {:?}", ids.shape())))?;
        if b == 0 || s == 0 {
            return Err(NnError::Input("empty batch".into()));
        }
        let rows = ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        for row in &rows {
            if let Some(bad) = row.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
                return Err(NnError::Input(format!("token id {bad} out of range (vocabulary {})", self.cfg.vocab_size)));
            }
        }
        Ok((b, s, rows))
    }

    fn rope_table(&self, pos: &[Vec<f32>], theta: f64, linear: f64) -> candle_core::Result<(Tensor, Tensor)> {
        let c = &self.cfg;
        let half = c.rope_dim / 2;
        // As HF: inv_freq in f32, angle = pos·inv_freq in f32, then cos/sin.
        let inv: Vec<f32> = (0..half)
            .map(|i| {
                let f = (1.0 / theta.powf((2 * i) as f64 / c.rope_dim as f64)) as f32;
                let f = match &c.rope_freq_factors {
                    Some(ff) => f / ff.get(i).copied().unwrap_or(1.0),
                    None => f,
                };
                (f as f64 / linear) as f32
            })
            .collect();
        let (b, s) = (pos.len(), pos[0].len());
        let mut cos = Vec::with_capacity(b * s * half);
        let mut sin = Vec::with_capacity(b * s * half);
        for row in pos {
            for &p in row {
                for &f in &inv {
                    let a = p * f;
                    cos.push((a as f64).cos() as f32);
                    sin.push((a as f64).sin() as f32);
                }
            }
        }
        Ok((Tensor::from_vec(cos, (b, 1, s, half), &self.device)?, Tensor::from_vec(sin, (b, 1, s, half), &self.device)?))
    }

    fn make_ctx(&self, b: usize, s: usize, attention_mask: Option<&Tensor>, train: bool) -> Result<Ctx> {
        let keep: Vec<Vec<bool>> = match attention_mask {
            Some(m) => {
                if m.dims() != [b, s] {
                    return Err(NnError::Input(format!("attention_mask shape {:?} != input_ids [{b}, {s}]", m.shape())));
                }
                m.to_dtype(DType::F32)?.to_vec2::<f32>()?.into_iter().map(|r| r.into_iter().map(|v| v != 0.0).collect()).collect()
            }
            None => vec![vec![true; s]; b],
        };
        let pos: Vec<Vec<f32>> = keep
            .iter()
            .map(|r| {
                let mut n = 0f32;
                r.iter()
                    .map(|&k| {
                        let p = if k { n } else { n.max(1.0) - 1.0 };
                        if k {
                            n += 1.0;
                        }
                        p
                    })
                    .collect()
            })
            .collect();
        let c = &self.cfg;
        let build = |window: Option<usize>| -> candle_core::Result<Tensor> {
            let mut v = vec![0f32; b * s * s];
            for bi in 0..b {
                for i in 0..s {
                    for j in 0..s {
                        let ok = j <= i && keep[bi][j] && window.is_none_or(|w| i - j < w);
                        if !ok {
                            v[(bi * s + i) * s + j] = MASK_VALUE;
                        }
                    }
                }
            }
            Tensor::from_vec(v, (b, 1, 1, s, s), &self.device)
        };
        let mask = build(None)?;
        let mask_local = match c.sliding_window {
            Some(w) if s > w => Some(build(Some(w))?),
            Some(_) => Some(mask.clone()),
            None => None,
        };
        let rope_global = self.rope_table(&pos, c.rope_theta, c.rope_linear_factor)?;
        let rope_local = match c.rope_theta_local {
            Some(t) => Some(self.rope_table(&pos, t, 1.0)?),
            None => None,
        };
        let dropout_seed = if train {
            let step = self.step.fetch_add(1, Ordering::Relaxed);
            Some(splitmix64(self.dropout_seed ^ splitmix64(step)))
        } else {
            None
        };
        if let (Some(seed), false) = (dropout_seed, self.device.is_cpu()) {
            // GPU dropout masks come from the device's generator, in forward order.
            self.device.set_seed(seed)?;
        }
        Ok(Ctx { rope_global, rope_local, mask, mask_local, dropout_seed, lora_scale: self.lora_scale })
    }

    /// Final hidden states after the last norm, `[b, s, hidden]`.
    pub(crate) fn hidden(&self, ids: &Tensor, attention_mask: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let (b, s, rows) = self.check_ids(ids)?;
        let ctx = Arc::new(self.make_ctx(b, s, attention_mask, train)?);
        let flat_ids: Vec<u32> = rows.into_iter().flatten().collect();
        let ids_t = Tensor::from_vec(flat_ids, b * s, &self.device)?;
        let mut x = self.embed.embedding(&ids_t)?.reshape((b, s, self.cfg.hidden_size))?;
        if let Some(sc) = self.cfg.embed_scale {
            x = (x * (sc as f32) as f64)?;
        }
        for layer in &self.layers {
            let ab = layer.own_ab(!train);
            let any_lora = ab.iter().any(|p| p.is_some());
            // The checkpoint op is a CPU kernel; the portable path keeps the whole graph.
            if train && any_lora && self.checkpointing && !self.portable {
                let mut parts = Vec::new();
                let mut flats = Vec::new();
                for (i, p) in ab.iter().enumerate() {
                    if let Some((a, bb)) = p {
                        parts.push((i, a.dims2()?, bb.dims2()?));
                        flats.push(a.flatten_all()?);
                        flats.push(bb.flatten_all()?);
                    }
                }
                let flat = Tensor::cat(&flats, 0)?;
                let op = CheckpointOp { block: layer.clone(), ctx: ctx.clone(), parts };
                x = x.contiguous()?.apply_op2(&flat, op)?;
            } else {
                x = layer.forward(&x, &ctx, &ab)?;
            }
        }
        Ok(rms_norm(&x, &self.final_norm, self.cfg.rms_eps)?)
    }

    pub(crate) fn logits(&self, ids: &Tensor, attention_mask: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let h = self.hidden(ids, attention_mask, train)?;
        let z = self.head.forward(&h)?;
        Ok(match self.cfg.final_logit_softcap {
            Some(cap) => ((z / cap)?.tanh()? * cap)?,
            None => z,
        })
    }

    pub(crate) fn loss(&self, batch: &LossBatch, train: bool) -> Result<LossOutput> {
        let (b, s) = batch.input_ids.dims2().map_err(|_| NnError::Input("input_ids must be [batch, seq]".into()))?;
        if batch.targets.dims() != [b, s] || batch.weights.dims() != [b, s] {
            return Err(NnError::Input(format!(
                "targets {:?} and weights {:?} must both be [{b}, {s}]",
                batch.targets.shape(),
                batch.weights.shape()
            )));
        }
        let t: Vec<u32> = batch.targets.to_dtype(DType::U32)?.flatten_all()?.to_vec1()?;
        let w: Vec<f32> = batch.weights.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let mut rows = Vec::new();
        for i in 0..b * s {
            if w[i] != 0.0 {
                if !w[i].is_finite() || w[i] < 0.0 {
                    return Err(NnError::Input(format!("loss weight {} at position {i} is not a finite non-negative number", w[i])));
                }
                if t[i] as usize >= self.cfg.vocab_size {
                    return Err(NnError::Input(format!("target id {} out of range (vocabulary {})", t[i], self.cfg.vocab_size)));
                }
                rows.push(i);
            }
        }
        if rows.is_empty() {
            return Err(NnError::Input("no position has a non-zero loss weight".into()));
        }
        let wsum: f64 = rows.iter().map(|&i| w[i] as f64).sum();
        let h = self.hidden(&batch.input_ids, batch.attention_mask.as_ref(), train)?;
        let h = h.reshape((b * s, self.cfg.hidden_size))?;
        let idx: Vec<u32> = rows.iter().map(|&i| i as u32).collect();
        let idx = Tensor::from_vec(idx, rows.len(), &self.device)?;
        let h = h.index_select(&idx, 0)?.contiguous()?;
        let targets: Vec<u32> = rows.iter().map(|&i| t[i]).collect();
        let weights: Vec<f32> = rows.iter().map(|&i| (w[i] as f64 / wsum) as f32).collect();
        if self.portable {
            return self.loss_portable(&h, targets, weights, wsum);
        }
        let want_grad = h.track_op();
        let nll = Arc::new(std::sync::Mutex::new(Vec::new()));
        let op = LossOp {
            head: self.head.weight().clone(),
            softcap: self.cfg.final_logit_softcap,
            targets,
            weights,
            // Vocabulary rows per chunk: keeps each `[tokens, chunk]` buffer ≤ 16 MiB, under
            // glibc's largest mmap threshold, so chunks reuse heap pages instead of faulting
            // in freshly zeroed ones every time; a multiple of 256 keeps the bf16 products on
            // ggml's tiled kernels (they need inner sizes in multiples of 32).
            chunk: (16 * 1024 * 1024 / 4 / rows.len().max(1)).clamp(1024, 16_384) / 256 * 256,
            bf16: self.head.precision() == Precision::Bf16,
            want_grad,
            grad: Arc::new(std::sync::Mutex::new(None)),
            nll: nll.clone(),
        };
        let loss = h.apply_op1(op)?;
        let token_nll = nll.lock().map(|g| g.clone()).unwrap_or_default();
        Ok(LossOutput { loss, weight_sum: wsum, token_nll })
    }

    /// The loss on the device-portable path: full logits of the selected rows, then
    /// log-softmax and a gather, all differentiable candle ops. It holds the `[rows, vocab]`
    /// logits (and their softmax for the backward pass), which the fused CPU op never does;
    /// on a GPU that is a few GiB at most for one micro-batch.
    fn loss_portable(&self, h: &Tensor, targets: Vec<u32>, weights: Vec<f32>, wsum: f64) -> Result<LossOutput> {
        let n = targets.len();
        let z = self.head.forward(h)?;
        let z = match self.cfg.final_logit_softcap {
            Some(cap) => ((z / cap)?.tanh()? * cap)?,
            None => z,
        };
        let lsm = candle_nn::ops::log_softmax(&z, D::Minus1)?;
        let t = Tensor::from_vec(targets, (n, 1), &self.device)?;
        let nll = lsm.gather(&t, 1)?.squeeze(1)?.neg()?;
        let w = Tensor::from_vec(weights, n, &self.device)?;
        let loss = (&nll * &w)?.sum_all()?;
        let token_nll = nll.detach().to_vec1::<f32>()?;
        Ok(LossOutput { loss, weight_sum: wsum, token_nll })
    }

    pub(crate) fn lora_vars(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        for layer in &self.layers {
            for t in LoraTarget::ALL {
                if let Some(l) = &layer.proj(t).lora {
                    out.push((peft_name(layer.idx, t, "A"), l.a.clone()));
                    out.push((peft_name(layer.idx, t, "B"), l.b.clone()));
                }
            }
        }
        out
    }

    pub(crate) fn load_lora(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let vars = self.lora_vars();
        // Validate everything first, then write: nothing is changed on bad input.
        for (name, var) in &vars {
            let t = tensors.get(name).ok_or_else(|| NnError::LoraTensor { name: name.clone(), reason: "missing".into() })?;
            if t.dims() != var.as_tensor().dims() {
                return Err(NnError::LoraTensor {
                    name: name.clone(),
                    reason: format!("shape {:?}, the model expects {:?}", t.dims(), var.as_tensor().dims()),
                });
            }
        }
        let known: std::collections::HashSet<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
        if let Some(extra) = tensors.keys().find(|k| !known.contains(k.as_str())) {
            return Err(NnError::LoraTensor { name: extra.clone(), reason: "not a LoRA tensor of this model/configuration".into() });
        }
        for (name, var) in &vars {
            let t = &tensors[name];
            // copy(): a tensor sharing the variable's storage cannot be assigned to it.
            var.set(&t.to_dtype(DType::F32)?.to_device(&self.device)?.copy()?)?;
        }
        Ok(())
    }

    pub(crate) fn set_precision(&mut self, p: Precision) {
        for layer in &mut self.layers {
            // Clones the layer (sharing tensors and LoRA variables) if a live graph holds it.
            let l = Arc::make_mut(layer);
            for t in LoraTarget::ALL {
                l.proj_mut(t).base.set_precision(p);
            }
        }
        self.head.set_precision(p);
    }

    /// Whether the model runs on the device-portable path (see [`crate::LoadOptions::portable`]).
    pub fn is_portable(&self) -> bool {
        self.portable
    }
}

/// The PEFT tensor name of a LoRA matrix: `base_model.model.model.layers.{i}.{module}.lora_{A|B}.weight`.
pub fn peft_name(layer: usize, t: LoraTarget, which: &str) -> String {
    format!("base_model.model.model.layers.{layer}.{}.lora_{which}.weight", t.peft_module())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Family;
    use crate::lora::LoraConfig;
    use crate::testutil::{randn, write_tiny_gguf, TINY_VOCAB};
    use crate::{load_decoder, CausalLm, LoadOptions};
    use candle_nn::Optimizer;

    const FAMILIES: [Family; 4] = [Family::Qwen2, Family::Qwen3, Family::Llama, Family::Gemma3];

    fn tiny(family: Family, lora: Option<LoraConfig>, checkpointing: bool) -> (tempfile::TempDir, DecoderModel) {
        tiny_with(family, LoadOptions { lora, checkpointing, ..Default::default() })
    }

    fn tiny_with(family: Family, opts: LoadOptions) -> (tempfile::TempDir, DecoderModel) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tiny.gguf");
        write_tiny_gguf(family, &p, 42);
        let m = load_decoder(&p, &opts).unwrap();
        (dir, m)
    }

    fn lora_all(dropout: f64) -> LoraConfig {
        LoraConfig { rank: 4, alpha: 8.0, dropout, targets: LoraTarget::ALL.to_vec(), init_seed: 5 }
    }

    /// Gives every B a random non-zero value so that all LoRA paths carry gradient.
    fn randomize_b(m: &mut DecoderModel, seed: u64) {
        let mut map = HashMap::new();
        for (i, (name, v)) in m.lora_vars().into_iter().enumerate() {
            let t = if name.contains("lora_B") { randn(v.as_tensor().dims(), 0.05, seed + i as u64) } else { v.as_tensor().clone() };
            map.insert(name, t);
        }
        m.load_lora(&map).unwrap();
    }

    fn ids(b: usize, s: usize, seed: u64) -> Tensor {
        let v: Vec<u32> = (0..b * s).map(|i| (splitmix64(seed ^ i as u64) % TINY_VOCAB as u64) as u32).collect();
        Tensor::from_vec(v, (b, s), &Device::Cpu).unwrap()
    }

    fn batch(b: usize, s: usize, seed: u64) -> LossBatch {
        let input_ids = ids(b, s, seed);
        let targets = ids(b, s, seed + 100);
        let w: Vec<f32> = (0..b * s).map(|i| if i % 3 == 0 { 0.0 } else { 1.0 }).collect();
        LossBatch { input_ids, attention_mask: None, targets, weights: Tensor::from_vec(w, (b, s), &Device::Cpu).unwrap() }
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn every_family_loads_and_gives_finite_logits() {
        for f in FAMILIES {
            let (_d, m) = tiny(f, None, true);
            let z = m.forward(&ids(2, 7, 1), false).unwrap();
            assert_eq!(z.dims(), &[2, 7, TINY_VOCAB]);
            let v = z.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(v.iter().all(|x| x.is_finite()), "{f:?}");
            assert!(m.cfg.family == f);
        }
    }

    /// The fused chunked loss equals cross-entropy computed from the full logits, and so do
    /// its gradients w.r.t. every LoRA variable.
    #[test]
    fn fused_loss_matches_full_logits_cross_entropy() {
        for f in [Family::Qwen2, Family::Gemma3] {
            let (_d, mut m) = tiny(f, Some(lora_all(0.0)), false);
            randomize_b(&mut m, 9);
            let bt = batch(2, 6, 3);
            let op_chunk = m.loss(&bt, true).unwrap();
            // Reference: log_softmax over full logits.
            let z = m.forward(&bt.input_ids, true).unwrap();
            let lsm = candle_nn::ops::log_softmax(&z, D::Minus1).unwrap();
            let nll = lsm.gather(&bt.targets.unsqueeze(2).unwrap(), 2).unwrap().squeeze(2).unwrap().neg().unwrap();
            let w = &bt.weights;
            let reference = ((nll * w).unwrap().sum_all().unwrap() / w.sum_all().unwrap().to_scalar::<f32>().unwrap() as f64).unwrap();
            let a = op_chunk.loss.to_scalar::<f32>().unwrap();
            let r = reference.to_scalar::<f32>().unwrap();
            assert!((a - r).abs() < 1e-5 * r.abs().max(1.0), "{f:?}: fused {a} vs {r}");
            let g1 = op_chunk.loss.backward().unwrap();
            let g2 = reference.backward().unwrap();
            for (name, v) in m.lora_vars() {
                let x = g1.get(v.as_tensor()).unwrap_or_else(|| panic!("no grad for {name}"));
                let y = g2.get(v.as_tensor()).unwrap();
                let scale = y.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
                assert!(max_diff(x, y) <= 1e-4 * scale.max(1e-3), "{f:?} {name}");
            }
            assert_eq!(op_chunk.token_nll.len(), 8);
            assert_eq!(op_chunk.weight_sum, 8.0);
        }
    }

    /// Gradient checkpointing changes memory, not gradients.
    #[test]
    fn checkpointing_gives_the_same_gradients() {
        for f in FAMILIES {
            let (_d1, mut a) = tiny(f, Some(lora_all(0.1)), true);
            let (_d2, mut b) = tiny(f, Some(lora_all(0.1)), false);
            randomize_b(&mut a, 4);
            randomize_b(&mut b, 4);
            let bt = batch(2, 9, 8);
            let la = a.loss(&bt, true).unwrap().loss;
            let lb = b.loss(&bt, true).unwrap().loss;
            assert!((la.to_scalar::<f32>().unwrap() - lb.to_scalar::<f32>().unwrap()).abs() < 1e-5);
            let (ga, gb) = (la.backward().unwrap(), lb.backward().unwrap());
            for ((na, va), (_, vb)) in a.lora_vars().into_iter().zip(b.lora_vars()) {
                let x = ga.get(va.as_tensor()).unwrap_or_else(|| panic!("{f:?}: no grad for {na}"));
                let y = gb.get(vb.as_tensor()).unwrap();
                let scale = y.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
                assert!(scale > 0.0, "{f:?} {na}: zero gradient");
                assert!(max_diff(x, y) <= 1e-4 * scale, "{f:?} {na}: {} vs scale {scale}", max_diff(x, y));
            }
        }
    }

    /// Asserts that `other` (the portable path, on any device) gives `cpu`'s logits and loss
    /// within `tol` relative, per-token NLL within `10·tol` and every LoRA gradient within
    /// `10·tol` of its largest entry (non-zero). `other`'s results are compared on the CPU.
    fn assert_matches_cpu_kernels(f: Family, cpu: &DecoderModel, other: &DecoderModel, tol: f32) {
        let to_cpu = |t: &Tensor| t.to_device(&Device::Cpu).unwrap();
        let x = ids(2, 7, 2);
        let (za, zb) = (cpu.forward(&x, false).unwrap(), to_cpu(&other.forward(&x, false).unwrap()));
        let zscale = za.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(max_diff(&za, &zb) <= tol * zscale.max(1.0), "{f:?} logits: {}", max_diff(&za, &zb));
        let bt = batch(2, 9, 8);
        let (la, lb) = (cpu.loss(&bt, true).unwrap(), other.loss(&bt, true).unwrap());
        let (va, vb) = (la.loss.to_scalar::<f32>().unwrap(), lb.loss.to_scalar::<f32>().unwrap());
        assert!((va - vb).abs() < tol * va.abs().max(1.0), "{f:?}: loss {va} vs {vb}");
        assert_eq!(la.token_nll.len(), lb.token_nll.len());
        for (p, q) in la.token_nll.iter().zip(&lb.token_nll) {
            assert!((p - q).abs() < 10.0 * tol, "{f:?}: token nll {p} vs {q}");
        }
        assert_eq!(la.weight_sum, lb.weight_sum);
        let (ga, gb) = (la.loss.backward().unwrap(), lb.loss.backward().unwrap());
        for ((na, xa), (_, xb)) in cpu.lora_vars().into_iter().zip(other.lora_vars()) {
            let x = ga.get(xa.as_tensor()).unwrap_or_else(|| panic!("{f:?}: no grad for {na}"));
            let y = to_cpu(gb.get(xb.as_tensor()).unwrap_or_else(|| panic!("{f:?}: no portable grad for {na}")));
            let scale = x.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            assert!(scale > 0.0, "{f:?} {na}: zero gradient");
            assert!(max_diff(x, &y) <= 10.0 * tol * scale, "{f:?} {na}: {} vs scale {scale}", max_diff(x, &y));
        }
    }

    /// The device-portable path (how the model runs on CUDA: backend GEMM over weights
    /// dequantized per call, full-logit loss, no checkpointing) gives the CPU kernels' logits,
    /// loss, per-token NLL and LoRA gradients, dropout included.
    #[test]
    fn portable_path_matches_the_cpu_kernels() {
        for f in FAMILIES {
            let cpu = LoadOptions { lora: Some(lora_all(0.1)), checkpointing: true, dropout_seed: 3, ..Default::default() };
            let (_d1, mut a) = tiny_with(f, cpu.clone());
            let (_d2, mut b) = tiny_with(f, LoadOptions { portable: true, ..cpu });
            assert!(!a.is_portable() && b.is_portable());
            randomize_b(&mut a, 6);
            randomize_b(&mut b, 6);
            assert_matches_cpu_kernels(f, &a, &b, 1e-5);
        }
    }

    /// On a CUDA build with a GPU: the model on the GPU gives the CPU kernels' logits, loss and
    /// LoRA gradients, and AdamW steps on the GPU lower the loss. Compiled only with the
    /// `cuda` feature (never in CI); says so and returns where no GPU opens.
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_matches_the_cpu_kernels() {
        let dev = match crate::ComputeDevice::Cuda(0).open() {
            Ok(d) => d,
            Err(e) => {
                eprintln!("cuda_matches_the_cpu_kernels: no GPU here ({e}); nothing compared");
                return;
            }
        };
        for f in FAMILIES {
            // Without dropout: GPU and CPU masks are drawn differently.
            let cpu = LoadOptions { lora: Some(lora_all(0.0)), checkpointing: true, dropout_seed: 3, ..Default::default() };
            let (_d1, mut a) = tiny_with(f, cpu.clone());
            let (_d2, mut g) = tiny_with(f, LoadOptions { device: dev.clone(), ..cpu.clone() });
            assert!(g.is_portable());
            randomize_b(&mut a, 6);
            randomize_b(&mut g, 6);
            assert_matches_cpu_kernels(f, &a, &g, 1e-4);
            let bt = batch(2, 9, 8);
            let vars: Vec<Var> = g.lora_vars().into_iter().map(|(_, v)| v).collect();
            let mut opt = candle_nn::AdamW::new(vars, candle_nn::ParamsAdamW { lr: 1e-2, ..Default::default() }).unwrap();
            let first = g.loss(&bt, false).unwrap().loss.to_scalar::<f32>().unwrap();
            for _ in 0..8 {
                opt.backward_step(&g.loss(&bt, true).unwrap().loss).unwrap();
            }
            let last = g.loss(&bt, false).unwrap().loss.to_scalar::<f32>().unwrap();
            assert!(last < first - 0.1, "{f:?} on the GPU: loss {first} -> {last}");
            // Dropout on the GPU: the same step gives the same loss (exact resume), another
            // step another mask.
            let (_d3, mut h) = tiny_with(f, LoadOptions { device: dev.clone(), lora: Some(lora_all(0.3)), ..cpu });
            randomize_b(&mut h, 6);
            let at = |step: u64| {
                CausalLm::set_dropout_step(&h, step);
                h.loss(&bt, true).unwrap().loss.to_scalar::<f32>().unwrap()
            };
            assert_eq!(at(5), at(5), "{f:?}: GPU dropout is not reproducible");
            assert_ne!(at(5), at(6), "{f:?}: GPU dropout ignores the step");
        }
    }

    /// Whole-model gradient check: analytic gradients of a few LoRA entries (through every
    /// frozen quantized layer above them) against central finite differences of the loss.
    #[test]
    fn whole_model_lora_gradients_match_finite_differences() {
        for f in FAMILIES {
            let (_d, mut m) = tiny(f, Some(lora_all(0.0)), true);
            randomize_b(&mut m, 21);
            let bt = batch(2, 5, 13);
            let out = m.loss(&bt, true).unwrap();
            let grads = out.loss.backward().unwrap();
            let vars = m.lora_vars();
            // Layer 0 q (deepest: gradient crosses every layer) and layer 1 down.
            let picks = [("layers.0.self_attn.q_proj.lora_A", 0usize), ("layers.0.self_attn.q_proj.lora_B", 3), ("layers.1.mlp.down_proj.lora_A", 7)];
            for (pat, flat_i) in picks {
                let (name, var) = vars.iter().find(|(n, _)| n.contains(pat)).unwrap();
                let g = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()[flat_i] as f64;
                let base: HashMap<String, Tensor> = vars.iter().map(|(n, v)| (n.clone(), v.as_tensor().copy().unwrap())).collect();
                let eps = 2e-3;
                let eval = |delta: f64| -> f64 {
                    let mut map = base.clone();
                    let t = &map[name];
                    let mut v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    v[flat_i] += delta as f32;
                    map.insert(name.clone(), Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap());
                    m.load_lora(&map).unwrap();
                    m.loss(&bt, false).unwrap().loss.to_scalar::<f32>().unwrap() as f64
                };
                let fd = (eval(eps) - eval(-eps)) / (2.0 * eps);
                m.load_lora(&base).unwrap();
                let err = (fd - g).abs();
                assert!(err <= 2e-2 * g.abs() + 2e-4, "{f:?} {name}[{flat_i}]: analytic {g}, finite difference {fd}");
            }
        }
    }

    #[test]
    fn padding_mask_reproduces_unpadded_rows() {
        for f in FAMILIES {
            let (_d, m) = tiny(f, None, true);
            let row = ids(1, 6, 77);
            let alone = m.forward(&row, false).unwrap().squeeze(0).unwrap();
            let pad = Tensor::new(&[[0u32, 0]], &Device::Cpu).unwrap();
            let right = Tensor::cat(&[row.clone(), pad.clone()], 1).unwrap();
            let left = Tensor::cat(&[pad, row.clone()], 1).unwrap();
            let input = Tensor::cat(&[right, left], 0).unwrap();
            let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1, 1, 1]], &Device::Cpu).unwrap();
            let z = m.forward_masked(&input, Some(&mask), false).unwrap();
            let r = z.get(0).unwrap().narrow(0, 0, 6).unwrap();
            let l = z.get(1).unwrap().narrow(0, 2, 6).unwrap();
            assert!(max_diff(&r, &alone) < 1e-4, "{f:?} right padding");
            assert!(max_diff(&l, &alone) < 1e-4, "{f:?} left padding");
        }
    }

    #[test]
    fn adamw_steps_reduce_the_loss() {
        for (f, portable) in [(Family::Qwen2, false), (Family::Llama, false), (Family::Qwen3, true)] {
            let (_d, m) = tiny_with(f, LoadOptions { lora: Some(lora_all(0.0)), portable, ..Default::default() });
            let vars: Vec<Var> = m.lora_vars().into_iter().map(|(_, v)| v).collect();
            let params = candle_nn::ParamsAdamW { lr: 1e-2, ..Default::default() };
            let mut opt = candle_nn::AdamW::new(vars, params).unwrap();
            let bt = batch(2, 8, 5);
            let first = m.loss(&bt, false).unwrap().loss.to_scalar::<f32>().unwrap();
            for _ in 0..8 {
                let l = m.loss(&bt, true).unwrap().loss;
                opt.backward_step(&l).unwrap();
            }
            let last = m.loss(&bt, false).unwrap().loss.to_scalar::<f32>().unwrap();
            assert!(last < first - 0.1, "{f:?} (portable: {portable}): loss {first} -> {last}");
        }
    }

    #[test]
    fn lora_starts_as_identity_and_scale_and_load_work() {
        let (_d, base) = tiny(Family::Qwen3, None, true);
        let (_d2, mut m) = tiny(Family::Qwen3, Some(lora_all(0.0)), true);
        let x = ids(1, 5, 3);
        assert!(max_diff(&base.forward(&x, false).unwrap(), &m.forward(&x, false).unwrap()) == 0.0);
        randomize_b(&mut m, 1);
        let with = m.forward(&x, false).unwrap();
        assert!(max_diff(&base.forward(&x, false).unwrap(), &with) > 1e-3);
        CausalLm::set_lora_scale(&mut m, 0.0);
        assert!(max_diff(&base.forward(&x, false).unwrap(), &m.forward(&x, false).unwrap()) == 0.0);
        CausalLm::set_lora_scale(&mut m, 1.0);
        // PEFT names, fixed order.
        let names: Vec<String> = m.lora_vars().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), 2 * 7 * 2);
        assert_eq!(names[0], "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
        assert_eq!(names[13], "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight");
        // Bad maps are rejected without changing anything.
        let mut map: HashMap<String, Tensor> = m.lora_vars().into_iter().map(|(n, v)| (n, v.as_tensor().copy().unwrap())).collect();
        map.insert(names[0].clone(), Tensor::zeros((3, 3), DType::F32, &Device::Cpu).unwrap());
        assert!(m.load_lora(&map).unwrap_err().is_user_error());
        map.remove(&names[0]);
        assert!(m.load_lora(&map).is_err());
        assert!(max_diff(&m.forward(&x, false).unwrap(), &with) == 0.0);
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let (_d, m) = tiny(Family::Llama, None, true);
        let e = m.forward(&Tensor::new(&[[1u32, 500]], &Device::Cpu).unwrap(), false).unwrap_err();
        assert!(e.is_user_error() && e.to_string().contains("out of range"), "{e}");
        let bt = LossBatch { weights: Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap(), ..batch(2, 4, 1) };
        assert!(m.loss(&bt, false).unwrap_err().is_user_error());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.gguf");
        std::fs::write(&p, b"GGUF\x03\x00\x00\x00garbage").unwrap();
        assert!(load_decoder(&p, &LoadOptions::default()).is_err());
        assert!(load_decoder(&dir.path().join("missing.gguf"), &LoadOptions::default()).is_err());
        let bad = LoadOptions { lora: Some(LoraConfig { rank: 0, ..Default::default() }), ..Default::default() };
        write_tiny_gguf(Family::Llama, &p, 1);
        assert!(load_decoder(&p, &bad).unwrap_err().is_user_error());
    }

    #[test]
    fn sliding_window_limits_local_layers() {
        // With a window of 4, the logits at position 9 must not depend on token 0 through a
        // local layer; global layers (none in a 2-layer gemma3 with pattern 6) would leak it.
        let (_d, m) = tiny(Family::Gemma3, None, true);
        assert!(m.cfg.is_local_layer(0) && m.cfg.is_local_layer(1));
        let a = ids(1, 10, 5);
        let mut v = a.flatten_all().unwrap().to_vec1::<u32>().unwrap();
        v[0] = (v[0] + 1) % TINY_VOCAB as u32;
        let b = Tensor::from_vec(v, (1, 10), &Device::Cpu).unwrap();
        let za = m.forward(&a, false).unwrap();
        let zb = m.forward(&b, false).unwrap();
        // Two local layers of window 4 reach back at most 2·3 = 6 positions: 9 is unaffected, 5 is affected.
        assert!(max_diff(&za.get(0).unwrap().get(9).unwrap(), &zb.get(0).unwrap().get(9).unwrap()) == 0.0);
        assert!(max_diff(&za.get(0).unwrap().get(5).unwrap(), &zb.get(0).unwrap().get(5).unwrap()) > 0.0);
    }
}
