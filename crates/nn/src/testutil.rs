//! Test helpers: seeded random tensors.

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};

/// A seeded normal(0, std) f32 tensor (Box–Muller on ChaCha8).
pub fn randn(dims: &[usize], std: f64, seed: u64) -> Tensor {
    let n: usize = dims.iter().product();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            let u1: f64 = rng.random_range(1e-12..1.0);
            let u2: f64 = rng.random::<f64>();
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
        })
        .collect();
    Tensor::from_vec(v, dims, &Device::Cpu).expect("shape matches element count")
}
