//! bf16 × f32 matrix products on ggml's CPU kernels (the llama.cpp build the engine links).
//!
//! Why: candle 0.11 has no bf16 GEMM on the CPU (it widens bf16 to f32), while ggml multiplies
//! a bf16 weight with activations rounded to bf16 on the AVX-512 BF16 dot-product
//! instructions, accumulating in f32 — measured here at 1.3–1.6× candle's f32 GEMM for the
//! shapes of a 0.5B model's projections. Training uses it for the frozen base weights only;
//! the LoRA matrices, their gradients and the optimizer stay f32.
//!
//! Invariant: each call builds a one-node ggml graph over borrowed buffers (a `no_alloc`
//! context whose tensors point at our slices), computes it and frees the context before
//! returning, so no ggml state outlives a call and no buffer is copied.

use half::bf16;
use llama_cpp_sys_2 as sys;

/// True when ggml was built with AVX-512 BF16 (without it ggml emulates bf16 dot products,
/// slower than candle's f32 GEMM).
pub fn bf16_kernels_available() -> bool {
    // SAFETY: a pure query of ggml's compile-time CPU features.
    unsafe { sys::ggml_cpu_has_avx512_bf16() != 0 }
}

/// A 2-D bf16 matrix, row-major: `rows` rows of `cols` elements.
#[derive(Debug, Clone)]
pub struct Bf16Matrix {
    data: Vec<bf16>,
    rows: usize,
    cols: usize,
}

impl Bf16Matrix {
    /// Rounds a row-major f32 matrix to bf16 (round to nearest even), in parallel.
    pub fn from_f32(src: &[f32], rows: usize, cols: usize) -> Self {
        use rayon::prelude::*;
        assert_eq!(src.len(), rows * cols, "matrix data does not match its shape");
        let mut data = vec![bf16::ZERO; rows * cols];
        let chunk = (rows.div_ceil(rayon::current_num_threads().max(1) * 4)).max(1) * cols.max(1);
        data.par_chunks_mut(chunk).zip(src.par_chunks(chunk)).for_each(|(d, s)| {
            for (d, s) in d.iter_mut().zip(s) {
                *d = bf16::from_f32(*s);
            }
        });
        Self { data, rows, cols }
    }

    /// The transpose of a row-major f32 `rows × cols` matrix, rounded to bf16: a
    /// `cols × rows` matrix (tiled, in parallel over output rows).
    pub fn transposed_from_f32(src: &[f32], rows: usize, cols: usize) -> Self {
        use rayon::prelude::*;
        assert_eq!(src.len(), rows * cols, "matrix data does not match its shape");
        const TILE: usize = 32;
        let mut data = vec![bf16::ZERO; rows * cols];
        // Output row c holds column c of the source.
        data.par_chunks_mut(TILE * rows.max(1)).enumerate().for_each(|(ti, out)| {
            let c0 = ti * TILE;
            let nc = out.len() / rows.max(1);
            for r0 in (0..rows).step_by(TILE) {
                let r1 = (r0 + TILE).min(rows);
                for dc in 0..nc {
                    let c = c0 + dc;
                    let dst = &mut out[dc * rows..(dc + 1) * rows];
                    for r in r0..r1 {
                        dst[r] = bf16::from_f32(src[r * cols + c]);
                    }
                }
            }
        });
        Self { data, rows: cols, cols: rows }
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// `y = x · Wᵀ`: `x` is row-major `n × k` f32, `w` is `m × k` (a row per output), `y` is
/// row-major `n × m` f32. Activations are rounded to bf16 for the products; sums are f32.
///
/// The rows of `x` are split over up to `threads` rayon tasks, each running ggml
/// single-threaded: ggml's own threads are OpenMP's, whose workers spin after every call and
/// would take the cores from the rayon and candle pools that run the rest of a training step.
///
/// # Errors
/// Shape mismatch, or ggml failing to compute.
pub fn matmul_bf16_wt(x: &[f32], n: usize, w: &Bf16Matrix, threads: usize) -> candle_core::Result<Vec<f32>> {
    use rayon::prelude::*;
    let (m, k) = (w.rows, w.cols);
    if x.len() != n * k {
        candle_core::bail!("activations of {} values are not {n} rows of {k}", x.len())
    }
    let mut y = vec![0f32; n * m];
    if n == 0 || m == 0 || k == 0 {
        return Ok(y);
    }
    // Row blocks of at least 16 rows (ggml's tiles), one per task.
    let per = n.div_ceil(threads.max(1)).max(16);
    y.par_chunks_mut(per * m)
        .zip(x.par_chunks(per * k))
        .try_for_each(|(yc, xc)| mul_mat_single_thread(xc, xc.len() / k, w, yc))?;
    Ok(y)
}

/// One ggml `mul_mat` on the calling thread: `y (n × m) = x (n × k) · Wᵀ`.
fn mul_mat_single_thread(x: &[f32], n: usize, w: &Bf16Matrix, y: &mut [f32]) -> candle_core::Result<()> {
    let (m, k) = (w.rows, w.cols);
    debug_assert!(x.len() == n * k && y.len() == n * m);
    let to_i64 = |v: usize| i64::try_from(v).map_err(|_| candle_core::Error::Msg(format!("dimension {v} too large")));
    let (k64, m64, n64) = (to_i64(k)?, to_i64(m)?, to_i64(n)?);
    const NODES: usize = 4;
    struct Ctx(*mut sys::ggml_context);
    impl Drop for Ctx {
        fn drop(&mut self) {
            // SAFETY: created below by ggml_init, freed once.
            unsafe { sys::ggml_free(self.0) }
        }
    }
    // SAFETY: the context only holds tensor headers and a graph (`no_alloc`); every tensor's
    // data pointer is set to a live slice of the right size before compute (`x`, `w` read,
    // `y` written, none aliasing), and the context is freed before the slices go away. With
    // one thread ggml runs the graph on this thread (no OpenMP region).
    unsafe {
        let mem = 4 * sys::ggml_tensor_overhead() + sys::ggml_graph_overhead_custom(NODES, false) + 1024;
        let ctx = sys::ggml_init(sys::ggml_init_params { mem_size: mem, mem_buffer: std::ptr::null_mut(), no_alloc: true });
        if ctx.is_null() {
            candle_core::bail!("ggml_init failed")
        }
        let guard = Ctx(ctx);
        let a = sys::ggml_new_tensor_2d(guard.0, sys::GGML_TYPE_BF16, k64, m64);
        let b = sys::ggml_new_tensor_2d(guard.0, sys::GGML_TYPE_F32, k64, n64);
        (*a).data = w.data.as_ptr() as *mut std::ffi::c_void;
        (*b).data = x.as_ptr() as *mut std::ffi::c_void;
        let c = sys::ggml_mul_mat(guard.0, a, b);
        (*c).data = y.as_mut_ptr().cast();
        let gf = sys::ggml_new_graph_custom(guard.0, NODES, false);
        sys::ggml_build_forward_expand(gf, c);
        let mut plan = sys::ggml_graph_plan(gf, 1, std::ptr::null_mut());
        let mut work = vec![0u8; plan.work_size];
        plan.work_data = if work.is_empty() { std::ptr::null_mut() } else { work.as_mut_ptr() };
        let status = sys::ggml_graph_compute(gf, &mut plan);
        if status != sys::GGML_STATUS_SUCCESS {
            candle_core::bail!("ggml mul_mat failed with status {status}")
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    /// f64 reference of `x · Wᵀ` on the bf16-rounded operands (what the kernel multiplies).
    fn reference(x: &[f32], n: usize, w: &[f32], m: usize, k: usize) -> Vec<f64> {
        let r = |v: f32| f64::from(bf16::from_f32(v).to_f32());
        let mut y = vec![0f64; n * m];
        for i in 0..n {
            for j in 0..m {
                y[i * m + j] = (0..k).map(|p| r(x[i * k + p]) * r(w[j * k + p])).sum();
            }
        }
        y
    }

    #[test]
    fn matches_reference_on_odd_shapes() {
        for (n, m, k) in [(1usize, 1usize, 1usize), (7, 5, 3), (33, 70, 129), (64, 96, 896), (5, 130, 64)] {
            let x = data(n * k, 1);
            let w = data(m * k, 2);
            let y = matmul_bf16_wt(&x, n, &Bf16Matrix::from_f32(&w, m, k), 2).unwrap();
            let want = reference(&x, n, &w, m, k);
            let scale = want.iter().fold(1e-6f64, |a, v| a.max(v.abs()));
            let err = y.iter().zip(&want).fold(0f64, |a, (g, w)| a.max((f64::from(*g) - w).abs()));
            assert!(err / scale < 1e-4, "n={n} m={m} k={k}: max error {err} of {scale}");
        }
    }

    #[test]
    fn transposed_matrix_is_the_transpose() {
        let (r, c) = (45usize, 70usize);
        let src = data(r * c, 3);
        let t = Bf16Matrix::transposed_from_f32(&src, r, c);
        assert_eq!((t.rows(), t.cols()), (c, r));
        for i in 0..r {
            for j in 0..c {
                assert_eq!(t.data[j * r + i], bf16::from_f32(src[i * c + j]));
            }
        }
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let w = Bf16Matrix::from_f32(&[0.0; 6], 2, 3);
        assert!(matmul_bf16_wt(&[0.0; 5], 2, &w, 1).is_err());
        assert_eq!(matmul_bf16_wt(&[], 0, &w, 1).unwrap(), Vec::<f32>::new());
    }
}
