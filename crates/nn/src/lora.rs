//! LoRA-ready projections: a frozen [`QLinear`] plus an optional trainable low-rank delta.
//!
//! `y = x·Wᵀ + b + scale · (dropout(x)·Aᵀ)·Bᵀ` with `A: (r, in)` (Kaiming-uniform, as PEFT's
//! `kaiming_uniform_(a=√5)`, i.e. `U(−1/√in, 1/√in)`), `B: (out, r)` (zeros), and
//! `scale = alpha / r × user_scale`. These are PEFT's `lora_A.weight` / `lora_B.weight`
//! layouts, so tensors round-trip to `adapter_model.safetensors` unchanged.
//!
//! Dropout masks are a pure function of `(seed, element index)` (a counter-based hash), so a
//! recomputed forward (gradient checkpointing) sees exactly the same mask.

use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::error::{NnError, Result};
use crate::qlinear::QLinear;

/// A projection that LoRA can target. Names follow PEFT's short names for
/// Llama-style models (`q_proj` → `q`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum LoraTarget {
    /// Attention query projection (`self_attn.q_proj`).
    Q,
    /// Attention key projection (`self_attn.k_proj`).
    K,
    /// Attention value projection (`self_attn.v_proj`).
    V,
    /// Attention output projection (`self_attn.o_proj`).
    O,
    /// MLP gate projection (`mlp.gate_proj`).
    Gate,
    /// MLP up projection (`mlp.up_proj`).
    Up,
    /// MLP down projection (`mlp.down_proj`).
    Down,
}

impl LoraTarget {
    /// All targets in canonical order (the order of parameters inside a layer).
    pub const ALL: [LoraTarget; 7] = [Self::Q, Self::K, Self::V, Self::O, Self::Gate, Self::Up, Self::Down];

    /// Parses `q`, `k`, `v`, `o`, `gate`, `up`, `down` (also the PEFT module names
    /// `q_proj` … `down_proj`), case-insensitively.
    pub fn parse(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        let t = t.strip_suffix("_proj").unwrap_or(&t);
        Ok(match t {
            "q" => Self::Q,
            "k" => Self::K,
            "v" => Self::V,
            "o" => Self::O,
            "gate" => Self::Gate,
            "up" => Self::Up,
            "down" => Self::Down,
            _ => {
                return Err(NnError::LoraConfig(format!(
                    "unknown LoRA target `{s}` (expected q, k, v, o, gate, up, down)"
                )));
            }
        })
    }

    /// Parses a comma-separated list such as `q,k,v,o,gate,up,down` (duplicates removed).
    pub fn parse_list(s: &str) -> Result<Vec<Self>> {
        let mut v = s.split(',').filter(|p| !p.trim().is_empty()).map(Self::parse).collect::<Result<Vec<_>>>()?;
        v.sort();
        v.dedup();
        if v.is_empty() {
            return Err(NnError::LoraConfig("no LoRA targets given".into()));
        }
        Ok(v)
    }

    /// The PEFT module path inside a decoder layer, e.g. `self_attn.q_proj`.
    pub fn peft_module(self) -> &'static str {
        match self {
            Self::Q => "self_attn.q_proj",
            Self::K => "self_attn.k_proj",
            Self::V => "self_attn.v_proj",
            Self::O => "self_attn.o_proj",
            Self::Gate => "mlp.gate_proj",
            Self::Up => "mlp.up_proj",
            Self::Down => "mlp.down_proj",
        }
    }

    /// The GGUF tensor stem, e.g. `attn_q` (as in `blk.N.attn_q.weight`).
    pub fn gguf_stem(self) -> &'static str {
        match self {
            Self::Q => "attn_q",
            Self::K => "attn_k",
            Self::V => "attn_v",
            Self::O => "attn_output",
            Self::Gate => "ffn_gate",
            Self::Up => "ffn_up",
            Self::Down => "ffn_down",
        }
    }

    /// Short name (`q`, …, `down`).
    pub fn short(self) -> &'static str {
        match self {
            Self::Q => "q",
            Self::K => "k",
            Self::V => "v",
            Self::O => "o",
            Self::Gate => "gate",
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// LoRA hyper-parameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraConfig {
    /// Rank `r` (≥ 1).
    pub rank: usize,
    /// `alpha`; the delta is scaled by `alpha / rank`.
    pub alpha: f64,
    /// Dropout probability on the LoRA branch input, in `[0, 1)`; active in train mode only.
    pub dropout: f64,
    /// Projections that get an adapter, in every layer.
    pub targets: Vec<LoraTarget>,
    /// Seed of the `A` initialisation (`B` starts at zero).
    pub init_seed: u64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self { rank: 16, alpha: 32.0, dropout: 0.05, targets: LoraTarget::ALL.to_vec(), init_seed: 0 }
    }
}

impl LoraConfig {
    /// Checks rank, alpha, dropout and targets.
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(NnError::LoraConfig("rank must be at least 1".into()));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(NnError::LoraConfig(format!("alpha must be a positive number, got {}", self.alpha)));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(NnError::LoraConfig(format!("dropout must be in [0, 1), got {}", self.dropout)));
        }
        if self.targets.is_empty() {
            return Err(NnError::LoraConfig("no LoRA targets given".into()));
        }
        Ok(())
    }
}

/// The trainable low-rank pair of one projection.
#[derive(Debug, Clone)]
pub struct LoraAB {
    /// `lora_A.weight`, shape `(r, in)`.
    pub a: Var,
    /// `lora_B.weight`, shape `(out, r)`.
    pub b: Var,
    /// `alpha / r`.
    pub base_scale: f64,
    /// Dropout probability (train mode only).
    pub dropout: f64,
}

impl LoraAB {
    /// Fresh pair for a `(out, in)` projection: `A` Kaiming-uniform from `seed`, `B` zero.
    pub fn init(in_f: usize, out_f: usize, cfg: &LoraConfig, seed: u64, device: &Device) -> Result<Self> {
        let bound = 1.0 / (in_f as f64).sqrt();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let a: Vec<f32> = (0..cfg.rank * in_f).map(|_| rng.random_range(-bound..bound) as f32).collect();
        let a = Var::from_tensor(&Tensor::from_vec(a, (cfg.rank, in_f), device)?)?;
        let b = Var::zeros((out_f, cfg.rank), candle_core::DType::F32, device)?;
        Ok(Self { a, b, base_scale: cfg.alpha / cfg.rank as f64, dropout: cfg.dropout })
    }
}

/// A projection with a frozen quantized base and an optional LoRA delta.
#[derive(Debug, Clone)]
pub struct LoraLinear {
    /// The frozen base projection.
    pub base: QLinear,
    /// The adapter, when this projection is a LoRA target.
    pub lora: Option<LoraAB>,
}

impl LoraLinear {
    /// `y = base(x) + scale·(dropout(x)·Aᵀ)·Bᵀ`, using the adapter's own variables.
    ///
    /// `dropout_seed` is `Some` in train mode (a fresh value per step and per projection);
    /// `None` disables dropout. `user_scale` multiplies `alpha / r`.
    pub fn forward(&self, x: &Tensor, dropout_seed: Option<u64>, user_scale: f64) -> candle_core::Result<Tensor> {
        match &self.lora {
            Some(l) => self.forward_with(x, Some((l.a.as_tensor(), l.b.as_tensor())), dropout_seed, user_scale),
            None => self.base.forward(x),
        }
    }

    /// Like [`Self::forward`] but with the `A`/`B` tensors given explicitly (views into a
    /// flattened parameter tensor during gradient checkpointing). `ab = None` runs the base only.
    pub fn forward_with(
        &self,
        x: &Tensor,
        ab: Option<(&Tensor, &Tensor)>,
        dropout_seed: Option<u64>,
        user_scale: f64,
    ) -> candle_core::Result<Tensor> {
        let y = self.base.forward(x)?;
        let (Some(l), Some((a, b))) = (&self.lora, ab) else { return Ok(y) };
        let scale = l.base_scale * user_scale;
        if scale == 0.0 {
            return Ok(y);
        }
        let xin = match dropout_seed {
            Some(seed) if l.dropout > 0.0 => x.mul(&dropout_mask(x.dims(), l.dropout, seed, x.device())?)?,
            _ => x.clone(),
        };
        let dims = xin.dims().to_vec();
        let k = *dims.last().unwrap_or(&0);
        let m = xin.elem_count() / k.max(1);
        let h = xin.reshape((m, k))?.matmul(&a.t()?)?;
        let d = (h.matmul(&b.t()?)? * scale)?;
        let mut out = dims;
        if let Some(last) = out.last_mut() {
            *last = b.dim(0)?;
        }
        y + d.reshape(out)?
    }
}

/// SplitMix64: a counter-based hash giving independent-looking 64-bit values per index.
#[inline]
pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An inverted-dropout mask (`0` with probability `p`, else `1/(1-p)`).
///
/// On CPU it is a pure function of `(seed, element index)`. On a GPU it is drawn on the
/// device from the device's generator, which the model reseeds once per train-mode forward
/// (so the masks are a pure function of that seed and their order in the forward pass) instead
/// of generating gigabytes of masks on the host and copying them over every step.
pub(crate) fn dropout_mask(dims: &[usize], p: f64, seed: u64, device: &Device) -> candle_core::Result<Tensor> {
    if !device.is_cpu() {
        let u = Tensor::rand(0f32, 1f32, dims, device)?;
        return u.ge(p)?.to_dtype(candle_core::DType::F32)? * (1.0 / (1.0 - p));
    }
    let n: usize = dims.iter().product();
    let keep = 1.0 / (1.0 - p);
    let threshold = (p * (u64::MAX as f64)) as u64;
    let base = splitmix64(seed);
    let v: Vec<f32> = (0..n)
        .into_par_iter()
        .with_min_len(1 << 14)
        .map(|i| if splitmix64(base ^ (i as u64)) < threshold { 0.0 } else { keep as f32 })
        .collect();
    Tensor::from_vec(v, dims, device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qlinear::Precision;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::DType;
    use std::sync::Arc;

    #[test]
    fn targets_parse() {
        assert_eq!(LoraTarget::parse_list("q, v,q,down_proj").unwrap(), vec![LoraTarget::Q, LoraTarget::V, LoraTarget::Down]);
        assert!(LoraTarget::parse("qq").is_err());
        assert!(LoraConfig { rank: 0, ..Default::default() }.validate().is_err());
        assert!(LoraConfig { dropout: 1.0, ..Default::default() }.validate().is_err());
    }

    #[test]
    fn init_is_kaiming_uniform_and_b_zero() {
        let cfg = LoraConfig { rank: 8, ..Default::default() };
        let l = LoraAB::init(256, 64, &cfg, 1, &Device::Cpu).unwrap();
        let a = l.a.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let bound = 1.0 / 16.0;
        assert!(a.iter().all(|v| v.abs() <= bound));
        let mean_abs = a.iter().map(|v| v.abs()).sum::<f32>() / a.len() as f32;
        assert!((mean_abs - bound / 2.0).abs() < 0.005, "{mean_abs}");
        assert_eq!(l.b.as_tensor().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
        assert_eq!(l.base_scale, 4.0);
    }

    #[test]
    fn dropout_mask_is_deterministic_with_the_right_rate() {
        let a = dropout_mask(&[100, 1000], 0.1, 7, &Device::Cpu).unwrap();
        let b = dropout_mask(&[100, 1000], 0.1, 7, &Device::Cpu).unwrap();
        let c = dropout_mask(&[100, 1000], 0.1, 8, &Device::Cpu).unwrap();
        let diff = |x: &Tensor, y: &Tensor| (x - y).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff(&a, &b), 0.0);
        assert!(diff(&a, &c) > 0.0);
        let zeros = a.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().filter(|v| **v == 0.0).count();
        assert!((9_000..11_000).contains(&zeros), "{zeros}");
    }

    /// Gradients of A, B and x against central finite differences (f64 reference), with a
    /// non-zero B so that every path carries signal.
    #[test]
    fn lora_linear_gradients_match_finite_differences() {
        let (m, k, n, r) = (4usize, 256usize, 48usize, 4usize);
        let w = crate::testutil::randn(&[n, k], 0.3, 11);
        let q = Arc::new(QTensor::quantize(&w, GgmlDType::Q8_0).unwrap());
        let cfg = LoraConfig { rank: r, alpha: 8.0, dropout: 0.0, targets: vec![LoraTarget::Q], init_seed: 0 };
        let mut ab = LoraAB::init(k, n, &cfg, 3, &Device::Cpu).unwrap();
        ab.b = Var::from_tensor(&crate::testutil::randn(&[n, r], 0.2, 12)).unwrap();
        let lin = LoraLinear { base: QLinear::new(q.clone(), None, Precision::Dequantized).unwrap(), lora: Some(ab.clone()) };
        let x = Var::from_tensor(&crate::testutil::randn(&[m, k], 1.0, 13)).unwrap();
        let c = crate::testutil::randn(&[m, n], 1.0, 14);
        let loss = (lin.forward(x.as_tensor(), None, 1.0).unwrap() * &c).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        let wd = q.dequantize(&Device::Cpu).unwrap().to_dtype(DType::F64).unwrap();
        let c64 = c.to_dtype(DType::F64).unwrap();
        let f = |x: &Tensor, a: &Tensor, b: &Tensor| -> f64 {
            let y = (x.matmul(&wd.t().unwrap()).unwrap() + (x.matmul(&a.t().unwrap()).unwrap().matmul(&b.t().unwrap()).unwrap() * 2.0).unwrap()).unwrap();
            (y * &c64).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
        };
        let to64 = |t: &Tensor| t.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
        let base = [to64(x.as_tensor()), to64(ab.a.as_tensor()), to64(ab.b.as_tensor())];
        let analytic = [
            to64(g.get(x.as_tensor()).expect("grad x")),
            to64(g.get(ab.a.as_tensor()).expect("grad A")),
            to64(g.get(ab.b.as_tensor()).expect("grad B")),
        ];
        let eps = 1e-3;
        for (which, (i, j)) in [(0usize, (1usize, 5usize)), (0, (3, 200)), (1, (0, 0)), (1, (3, 255)), (2, (0, 1)), (2, (47, 3))] {
            let eval = |delta: f64| {
                let mut p = base.clone();
                p[which][i][j] += delta;
                let t: Vec<Tensor> = p.iter().map(|v| Tensor::new(v.clone(), &Device::Cpu).unwrap()).collect();
                f(&t[0], &t[1], &t[2])
            };
            let fd = (eval(eps) - eval(-eps)) / (2.0 * eps);
            let an = analytic[which][i][j];
            let rel = (fd - an).abs() / fd.abs().max(1e-2);
            assert!(rel < 2e-3, "param {which} ({i},{j}): fd {fd} analytic {an}");
        }
    }
}
