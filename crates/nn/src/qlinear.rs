//! Linear layers over a frozen quantized weight, with a real backward pass.
//!
//! candle 0.11's `QMatMul` applies its op with `apply_op1_no_bwd`: `backward()` then succeeds
//! but the gradient of the input is silently `None`, so anything stacked below it trains on
//! wrong gradients. [`QLinear`] instead applies a [`candle_core::CustomOp1`] whose backward is
//! `grad_x = grad_y · W`, with `W` dequantized for the duration of the call only.
//!
//! Weight layout: a GGUF matrix with GGUF dims `[in, out]` is a candle [`QTensor`] of shape
//! `(out, in)` (row `o` holds the weights of output `o`), exactly like a PyTorch
//! `nn.Linear.weight`; `y = x · Wᵀ (+ b)`.

use std::borrow::Cow;
use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{CpuStorage, CustomOp1, Device, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

use crate::ggml_gemm::Bf16Matrix;

/// How a frozen quantized weight is multiplied with activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Precision {
    /// Exact float32: the weight is dequantized to f32 for each call (never kept) and
    /// multiplied with an f32 GEMM. Matches a float32 reference on the dequantized weights;
    /// on this CPU it is also the faster mode for batched work (prefill, training).
    #[default]
    Dequantized,
    /// candle's quantized kernels: activations are quantized to Q8_K (or Q8_0) and dotted with
    /// the quantized blocks. Uses no transient f32 weight, but is approximate (≈0.7% relative
    /// error per matmul) and slower than `Dequantized` for long sequences.
    Quantized,
    /// Mixed precision for training: the weight is dequantized to bf16 for each call (never
    /// kept; its transpose for the backward pass) and multiplied on ggml's AVX-512 BF16
    /// kernels with activations rounded to bf16 and f32 sums (≈0.3% relative error per
    /// matmul, like PyTorch autocast). Faster than `Dequantized` where the CPU has AVX-512
    /// BF16 (see [`crate::ggml_gemm::bf16_kernels_available`]), slower elsewhere.
    Bf16,
}

impl Precision {
    /// The mode training uses unless told otherwise: [`Precision::Bf16`] where ggml has
    /// AVX-512 BF16 kernels, else [`Precision::Dequantized`].
    pub fn training_default() -> Self {
        if crate::ggml_gemm::bf16_kernels_available() { Self::Bf16 } else { Self::Dequantized }
    }
}

/// Dequantizes a 2-D quantized tensor to an f32 CPU tensor, splitting the rows over the rayon
/// pool (candle's own `dequantize` is single-threaded).
pub fn dequantize_f32(w: &QTensor) -> candle_core::Result<Tensor> {
    let (rows, cols) = match w.shape().dims() {
        [r, c] => (*r, *c),
        _ => return w.dequantize(&Device::Cpu),
    };
    let dtype = w.dtype();
    if !matches!(w.device(), Device::Cpu) || rows < 64 {
        return w.dequantize(&Device::Cpu);
    }
    let block = dtype.block_size();
    if cols % block != 0 {
        return w.dequantize(&Device::Cpu);
    }
    let row_bytes = cols / block * dtype.type_size();
    let data = w.data()?;
    if data.len() != rows * row_bytes {
        return w.dequantize(&Device::Cpu);
    }
    let threads = rayon::current_num_threads().max(1);
    let rows_per_chunk = rows.div_ceil(threads * 4).max(16);
    let mut out = vec![0f32; rows * cols];
    out.par_chunks_mut(rows_per_chunk * cols)
        .enumerate()
        .try_for_each(|(i, dst)| -> candle_core::Result<()> {
            let r0 = i * rows_per_chunk;
            let nrows = dst.len() / cols;
            let bytes = &data[r0 * row_bytes..(r0 + nrows) * row_bytes];
            dequantize_bytes(dtype, bytes, dst)
        })?;
    Tensor::from_vec(out, (rows, cols), &Device::Cpu)
}

/// Dequantizes raw GGML blocks of `dtype` into `dst` (whose length is the element count).
fn dequantize_bytes(dtype: GgmlDType, bytes: &[u8], dst: &mut [f32]) -> candle_core::Result<()> {
    let q = dtype.from_data(Cow::Borrowed(bytes));
    match q.dequantize(dst.len())? {
        CpuStorage::F32(v) => {
            dst.copy_from_slice(&v);
            Ok(())
        }
        _ => candle_core::bail!("dequantize returned a non-f32 buffer"),
    }
}

thread_local! {
    /// Dequantized weights kept for the duration of one checkpointed layer's backward pass
    /// (recompute + backward use each weight twice); `None` = caching off.
    static DEQUANT_CACHE: std::cell::RefCell<Option<std::collections::HashMap<usize, Tensor>>> =
        const { std::cell::RefCell::new(None) };
}

/// While alive, dequantized weights are cached on this thread (one layer's worth: the guard
/// lives for one checkpointed layer's backward). Dropping it frees them.
pub(crate) struct DequantCacheGuard(());

impl DequantCacheGuard {
    pub(crate) fn new() -> Self {
        DEQUANT_CACHE.with(|c| *c.borrow_mut() = Some(Default::default()));
        BF16_CACHE.with(|c| *c.borrow_mut() = Some(Default::default()));
        Self(())
    }
}

impl Drop for DequantCacheGuard {
    fn drop(&mut self) {
        DEQUANT_CACHE.with(|c| *c.borrow_mut() = None);
        BF16_CACHE.with(|c| *c.borrow_mut() = None);
    }
}

/// bf16 weights by (weight address, transposed).
type Bf16Cache = std::collections::HashMap<(usize, bool), Arc<Bf16Matrix>>;

thread_local! {
    /// bf16 weights (`false`: as stored, `true`: transposed) kept under the same guard as
    /// [`DEQUANT_CACHE`].
    static BF16_CACHE: std::cell::RefCell<Option<Bf16Cache>> = const { std::cell::RefCell::new(None) };
}

/// The weight as a bf16 matrix (`transposed`: `(in, out)`, for the backward pass), through
/// the thread's cache when one is active.
fn dequantize_bf16_cached(w: &Arc<QTensor>, transposed: bool) -> candle_core::Result<Arc<Bf16Matrix>> {
    let key = (Arc::as_ptr(w) as usize, transposed);
    if let Some(t) = BF16_CACHE.with(|c| c.borrow().as_ref().and_then(|m| m.get(&key).cloned())) {
        return Ok(t);
    }
    let f = dequantize_f32(w)?;
    let (rows, cols) = f.dims2()?;
    let m = Arc::new(with_f32_slice(&f, |src| {
        Ok(if transposed { Bf16Matrix::transposed_from_f32(src, rows, cols) } else { Bf16Matrix::from_f32(src, rows, cols) })
    })?);
    BF16_CACHE.with(|c| {
        if let Some(map) = c.borrow_mut().as_mut() {
            map.insert(key, m.clone());
        }
    });
    Ok(m)
}

/// Runs `f` on the contiguous f32 data of a CPU tensor (copied only if not contiguous).
pub(crate) fn with_f32_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> candle_core::Result<R>) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(c) => {
            let (a, b) = layout
                .contiguous_offsets()
                .ok_or_else(|| candle_core::Error::Msg("internal: non-contiguous operand".into()))?;
            f(&c.as_slice::<f32>()?[a..b])
        }
        _ => candle_core::bail!("expected a CPU tensor"),
    }
}

/// `x · Wᵀ` on ggml's bf16 kernels for `x` of shape `[..., in]` given as a flat slice.
fn matmul_bf16(x: &[f32], dims: &[usize], w: &Bf16Matrix) -> candle_core::Result<(Vec<f32>, Shape)> {
    let k = *dims.last().unwrap_or(&0);
    if k != w.cols() {
        candle_core::bail!("input has {k} features, the weight expects {}", w.cols())
    }
    let n = x.len() / k.max(1);
    let y = crate::ggml_gemm::matmul_bf16_wt(x, n, w, rayon::current_num_threads())?;
    let mut out = dims.to_vec();
    if let Some(last) = out.last_mut() {
        *last = w.rows();
    }
    Ok((y, Shape::from(out)))
}

/// [`dequantize_f32`] through the thread's cache when one is active.
fn dequantize_cached(w: &Arc<QTensor>) -> candle_core::Result<Tensor> {
    let key = Arc::as_ptr(w) as usize;
    if let Some(t) = DEQUANT_CACHE.with(|c| c.borrow().as_ref().and_then(|m| m.get(&key).cloned())) {
        return Ok(t);
    }
    let t = dequantize_f32(w)?;
    DEQUANT_CACHE.with(|c| {
        if let Some(m) = c.borrow_mut().as_mut() {
            m.insert(key, t.clone());
        }
    });
    Ok(t)
}

/// Dequantizes rows `r0..r1` of a 2-D quantized tensor to an f32 `(r1 - r0, cols)` tensor
/// without touching the other rows (used for the vocabulary-chunked output head).
pub fn dequantize_rows(w: &QTensor, r0: usize, r1: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.shape().dims2()?;
    if r0 > r1 || r1 > rows {
        candle_core::bail!("row range {r0}..{r1} out of bounds for {rows} rows")
    }
    let dtype = w.dtype();
    let block = dtype.block_size();
    if cols % block != 0 || !matches!(w.device(), Device::Cpu) {
        return w.dequantize(&Device::Cpu)?.narrow(0, r0, r1 - r0);
    }
    let row_bytes = cols / block * dtype.type_size();
    let data = w.data()?;
    let n = r1 - r0;
    let mut out = vec![0f32; n * cols];
    let threads = rayon::current_num_threads().max(1);
    let rows_per_chunk = n.div_ceil(threads * 2).max(1);
    out.par_chunks_mut(rows_per_chunk * cols)
        .enumerate()
        .try_for_each(|(i, dst)| -> candle_core::Result<()> {
            let a = r0 + i * rows_per_chunk;
            let nrows = dst.len() / cols;
            dequantize_bytes(dtype, &data[a * row_bytes..(a + nrows) * row_bytes], dst)
        })?;
    Tensor::from_vec(out, (n, cols), &Device::Cpu)
}

/// Copies a CPU storage region described by `layout` into a fresh contiguous f32 tensor.
pub(crate) fn cpu_tensor(storage: &CpuStorage, layout: &Layout) -> candle_core::Result<Tensor> {
    let shape = layout.shape().clone();
    let slice = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((a, b)) => Tensor::from_slice(&slice[a..b], shape, &Device::Cpu),
        // Every caller makes its operands contiguous before applying the op.
        None => candle_core::bail!("internal: non-contiguous operand {layout:?}"),
    }
}

/// Moves an f32 CPU tensor's data out as a `CpuStorage` plus its shape.
pub(crate) fn cpu_storage(t: &Tensor) -> candle_core::Result<(CpuStorage, Shape)> {
    let shape = t.shape().clone();
    let v = t.flatten_all()?.to_vec1::<f32>()?;
    Ok((CpuStorage::F32(v), shape))
}

/// A device's storage type, as the device-portable path needs it: picked out of the
/// [`Storage`] enum of a tensor on that device.
trait DeviceStorage: BackendStorage {
    /// The device as a [`Device`].
    fn candle_device(&self) -> Device;
    /// This type's storage inside `s`, if `s` lives on this kind of device.
    fn pick(s: &Storage) -> Option<&Self>;
}

impl DeviceStorage for CpuStorage {
    fn candle_device(&self) -> Device {
        Device::Cpu
    }
    fn pick(s: &Storage) -> Option<&Self> {
        match s {
            Storage::Cpu(c) => Some(c),
            _ => None,
        }
    }
}

#[cfg(feature = "cuda")]
impl DeviceStorage for candle_core::CudaStorage {
    fn candle_device(&self) -> Device {
        Device::Cuda(self.device().clone())
    }
    fn pick(s: &Storage) -> Option<&Self> {
        match s {
            Storage::Cuda(c) => Some(c),
            _ => None,
        }
    }
}

/// The device-portable forward: `W` is dequantized to f32 on the activations' device (with
/// candle's own kernels for that device) and multiplied by the device's GEMM through the
/// backend interface, so no copy of `W` outlives the call. The same generic code runs on CPU
/// (where tests compare it with the CPU kernels) and on CUDA.
fn portable_fwd<S: DeviceStorage>(w: &QTensor, x: &S, layout: &Layout) -> candle_core::Result<(S, Shape)> {
    let wd = w.dequantize(&x.candle_device())?.to_dtype(candle_core::DType::F32)?.contiguous()?;
    let (n_out, k) = wd.dims2()?;
    let dims = layout.dims();
    if dims.last() != Some(&k) {
        candle_core::bail!("input has shape {dims:?}, the weight expects {k} features")
    }
    if !layout.is_contiguous() {
        candle_core::bail!("internal: non-contiguous operand {layout:?}")
    }
    let m = layout.shape().elem_count() / k.max(1);
    let (ws, wl) = wd.storage_and_layout();
    let ws = S::pick(&ws).ok_or_else(|| candle_core::Error::Msg("dequantized weight is on another device".into()))?;
    let lhs = Layout::contiguous_with_offset((1, m, k), layout.start_offset());
    // Wᵀ as a strided view of the row-major (out, in) weight: shape (1, in, out).
    let rhs = Layout::new(Shape::from((1, k, n_out)), vec![n_out * k, 1, k], wl.start_offset());
    let y = x.matmul(ws, (1, m, n_out, k), &lhs, &rhs)?;
    let mut out = dims.to_vec();
    if let Some(last) = out.last_mut() {
        *last = n_out;
    }
    Ok((y, Shape::from(out)))
}

/// The custom op behind [`QLinear::forward`]: `y = x · Wᵀ` with a backward pass.
struct QMatMulOp {
    w: Arc<QTensor>,
    precision: Precision,
    /// Take the device-portable path on CPU too (it is the only path on other devices).
    portable: bool,
}

impl CustomOp1 for QMatMulOp {
    fn name(&self) -> &'static str {
        "trident-qmatmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        if !matches!(storage, CpuStorage::F32(_)) {
            candle_core::bail!("trident-qmatmul expects f32 activations")
        }
        if self.portable {
            return portable_fwd(&self.w, storage, layout);
        }
        match self.precision {
            Precision::Quantized if self.w.dtype().block_size() > 1 => {
                if layout.is_contiguous() {
                    self.w.cpu_fwd(storage, layout)
                } else {
                    let x = cpu_tensor(storage, layout)?;
                    let (s, l) = x.storage_and_layout();
                    match &*s {
                        candle_core::Storage::Cpu(c) => self.w.cpu_fwd(c, l),
                        _ => candle_core::bail!("expected CPU storage"),
                    }
                }
            }
            Precision::Bf16 => {
                let (a, b) = layout
                    .contiguous_offsets()
                    .ok_or_else(|| candle_core::Error::Msg("internal: non-contiguous operand".into()))?;
                let w = dequantize_bf16_cached(&self.w, false)?;
                let (y, shape) = matmul_bf16(&storage.as_slice::<f32>()?[a..b], layout.dims(), &w)?;
                Ok((CpuStorage::F32(y), shape))
            }
            _ => {
                let x = cpu_tensor(storage, layout)?;
                let y = matmul_wt(&x, &dequantize_cached(&self.w)?)?;
                cpu_storage(&y)
            }
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, storage: &candle_core::CudaStorage, layout: &Layout) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        if storage.dtype() != candle_core::DType::F32 {
            candle_core::bail!("trident-qmatmul expects f32 activations")
        }
        portable_fwd(&self.w, storage, layout)
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // dL/dx = dL/dy · W, W dequantized for this call only.
        if self.portable || !grad_res.device().is_cpu() {
            let w = self.w.dequantize(grad_res.device())?.to_dtype(candle_core::DType::F32)?;
            return Ok(Some(matmul_w(&grad_res.contiguous()?, &w)?));
        }
        if self.precision == Precision::Bf16 {
            let wt = dequantize_bf16_cached(&self.w, true)?;
            let dims = grad_res.dims().to_vec();
            let (gx, shape) = with_f32_slice(grad_res, |g| matmul_bf16(g, &dims, &wt))?;
            return Ok(Some(Tensor::from_vec(gx, shape, &Device::Cpu)?));
        }
        Ok(Some(matmul_w(&grad_res.contiguous()?, &dequantize_cached(&self.w)?)?))
    }
}

/// `g · W` for `g` of any rank ≥ 1 and a 2-D `w` of shape `(out, in)`: the input gradient.
fn matmul_w(g: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let dims = g.dims().to_vec();
    let n = *dims.last().unwrap_or(&0);
    let m = g.elem_count() / n.max(1);
    let gx = g.reshape((m, n))?.matmul(w)?;
    let mut out_dims = dims;
    if let Some(last) = out_dims.last_mut() {
        *last = w.dim(1)?;
    }
    gx.reshape(out_dims)
}

/// `x · Wᵀ` for `x` of any rank ≥ 1 and a 2-D `w` of shape `(out, in)`.
pub(crate) fn matmul_wt(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = *dims.last().unwrap_or(&0);
    let m = x.elem_count() / k.max(1);
    let y = x.reshape((m, k))?.matmul(&w.t()?)?;
    let mut out = dims;
    if let Some(last) = out.last_mut() {
        *last = w.dim(0)?;
    }
    y.reshape(out)
}

/// A linear layer over a frozen quantized weight (`y = x · Wᵀ + b`) whose backward pass
/// gives the input's gradient. The weight never gets a gradient (it is frozen) and is never
/// kept in float32.
#[derive(Clone)]
pub struct QLinear {
    w: Arc<QTensor>,
    bias: Option<Tensor>,
    precision: Precision,
    portable: bool,
}

impl std::fmt::Debug for QLinear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QLinear")
            .field("shape", self.w.shape())
            .field("dtype", &self.w.dtype())
            .field("bias", &self.bias.is_some())
            .field("precision", &self.precision)
            .field("portable", &self.portable)
            .finish()
    }
}

impl QLinear {
    /// Wraps a quantized weight of shape `(out_features, in_features)` and an optional f32
    /// bias of shape `(out_features,)`.
    pub fn new(w: Arc<QTensor>, bias: Option<Tensor>, precision: Precision) -> candle_core::Result<Self> {
        let (out_f, _) = w.shape().dims2()?;
        if let Some(b) = &bias {
            if b.dims1()? != out_f {
                candle_core::bail!("bias of shape {:?} does not match {out_f} outputs", b.shape())
            }
        }
        Ok(Self { w, bias, precision, portable: false })
    }

    /// Input features (`in`).
    pub fn in_features(&self) -> usize {
        self.w.shape().dims()[1]
    }

    /// Output features (`out`).
    pub fn out_features(&self) -> usize {
        self.w.shape().dims()[0]
    }

    /// The frozen quantized weight.
    pub fn weight(&self) -> &Arc<QTensor> {
        &self.w
    }

    /// The multiplication mode.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Changes the multiplication mode.
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    /// Whether the device-portable path is forced on CPU.
    pub fn portable(&self) -> bool {
        self.portable
    }

    /// Forces the device-portable path (dequantize on the activations' device, then the
    /// device's GEMM; [`Precision`] is ignored) on CPU as well. Off CPU it is the only path.
    pub fn set_portable(&mut self, portable: bool) {
        self.portable = portable;
    }

    /// `y = x · Wᵀ + b` for f32 `x` of shape `[..., in]`; differentiable w.r.t. `x`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = x.contiguous()?;
        let y = x.apply_op1(QMatMulOp { w: self.w.clone(), precision: self.precision, portable: self.portable })?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Var};

    fn rand_q(out_f: usize, in_f: usize, dtype: GgmlDType, seed: u64) -> QTensor {
        let w = crate::testutil::randn(&[out_f, in_f], 0.5, seed);
        QTensor::quantize(&w, dtype).expect("quantize")
    }

    #[test]
    fn parallel_dequantize_matches_candle() {
        for dtype in [GgmlDType::Q4K, GgmlDType::Q5_0, GgmlDType::Q8_0, GgmlDType::Q6K, GgmlDType::F32] {
            let q = rand_q(300, 256, dtype, 1);
            let a = q.dequantize(&Device::Cpu).unwrap();
            let b = dequantize_f32(&q).unwrap();
            let d = (a - &b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert_eq!(d, 0.0, "{dtype:?}");
            let r = dequantize_rows(&q, 17, 123).unwrap();
            let e = (b.narrow(0, 17, 106).unwrap() - r).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(e.to_scalar::<f32>().unwrap(), 0.0, "{dtype:?}");
        }
    }

    /// Gradient of `sum(c ⊙ QLinear(x))` w.r.t. `x` against central finite differences of the
    /// same function computed in f64 on the dequantized weight.
    #[test]
    fn qlinear_input_gradient_matches_finite_differences() {
        let (m, k, n) = (3usize, 256usize, 40usize);
        let q = Arc::new(rand_q(n, k, GgmlDType::Q4K, 2));
        let bias = crate::testutil::randn(&[n], 0.1, 3);
        let lin = QLinear::new(q.clone(), Some(bias.clone()), Precision::Dequantized).unwrap();
        let x = Var::from_tensor(&crate::testutil::randn(&[m, k], 1.0, 4)).unwrap();
        let c = crate::testutil::randn(&[m, n], 1.0, 5);
        let loss = (lin.forward(x.as_tensor()).unwrap() * &c).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let gx = grads.get(x.as_tensor()).expect("x must get a gradient").to_vec2::<f32>().unwrap();
        // f64 reference of the loss as a function of x.
        let w = q.dequantize(&Device::Cpu).unwrap().to_dtype(DType::F64).unwrap();
        let b64 = bias.to_dtype(DType::F64).unwrap();
        let c64 = c.to_dtype(DType::F64).unwrap();
        let f = |x: &Tensor| -> f64 {
            let y = x.matmul(&w.t().unwrap()).unwrap().broadcast_add(&b64).unwrap();
            (y * &c64).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
        };
        let x64 = x.as_tensor().to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
        let eps = 1e-3;
        let mut max_rel = 0f64;
        for (i, j) in [(0usize, 0usize), (1, 100), (2, 255), (0, 31), (2, 7)] {
            let mut p = x64.clone();
            p[i][j] += eps;
            let mut mi = x64.clone();
            mi[i][j] -= eps;
            let fd = (f(&Tensor::new(p, &Device::Cpu).unwrap()) - f(&Tensor::new(mi, &Device::Cpu).unwrap())) / (2.0 * eps);
            let rel = (fd - gx[i][j] as f64).abs() / fd.abs().max(1e-3);
            max_rel = max_rel.max(rel);
        }
        assert!(max_rel < 1e-3, "relative gradient error {max_rel}");
    }

    /// bf16 mode: forward and input gradient within bf16 rounding of the exact f32 mode, under
    /// the checkpoint cache too (whose cached transposes must not be confused with the weight).
    #[test]
    fn bf16_mode_is_close_to_exact_forward_and_backward() {
        let q = Arc::new(rand_q(200, 256, GgmlDType::Q5_0, 8));
        let x = Var::from_tensor(&crate::testutil::randn(&[3, 7, 256], 1.0, 9)).unwrap();
        let c = crate::testutil::randn(&[3, 7, 200], 1.0, 10);
        let run = |p: Precision| {
            let lin = QLinear::new(q.clone(), None, p).unwrap();
            let y = lin.forward(x.as_tensor()).unwrap();
            let g = (&y * &c).unwrap().sum_all().unwrap().backward().unwrap();
            (y, g.get(x.as_tensor()).expect("x gets a gradient").clone())
        };
        let rel = |a: &Tensor, b: &Tensor| {
            let num = (a - b).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            let den = a.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            (num / den).sqrt()
        };
        let (y0, g0) = run(Precision::Dequantized);
        let (y1, g1) = run(Precision::Bf16);
        assert_eq!(y1.dims(), y0.dims());
        assert_eq!(g1.dims(), g0.dims());
        let (ry, rg) = (rel(&y0, &y1), rel(&g0, &g1));
        assert!(ry < 8e-3 && ry > 0.0, "forward relative L2 {ry}");
        assert!(rg < 8e-3 && rg > 0.0, "gradient relative L2 {rg}");
        let _cache = DequantCacheGuard::new();
        let (y2, g2) = run(Precision::Bf16);
        assert_eq!(rel(&y1, &y2), 0.0);
        assert_eq!(rel(&g1, &g2), 0.0);
    }

    /// The device-portable path (backend GEMM over a weight dequantized per call, as on CUDA)
    /// equals the CPU kernels' exact f32 mode, forward and input gradient, with a bias and
    /// with an input that starts at an offset inside its storage.
    #[test]
    fn portable_path_matches_exact_mode() {
        let q = Arc::new(rand_q(72, 256, GgmlDType::Q6K, 11));
        let bias = crate::testutil::randn(&[72], 0.1, 12);
        let big = crate::testutil::randn(&[5, 3, 256], 1.0, 13);
        let x = Var::from_tensor(&big.narrow(0, 2, 3).unwrap()).unwrap();
        let c = crate::testutil::randn(&[3, 3, 72], 1.0, 14);
        let run = |portable: bool, x: &Tensor| {
            let mut lin = QLinear::new(q.clone(), Some(bias.clone()), Precision::Dequantized).unwrap();
            lin.set_portable(portable);
            assert_eq!(lin.portable(), portable);
            let y = lin.forward(x).unwrap();
            let g = (&y * &c).unwrap().sum_all().unwrap().backward().unwrap();
            (y, g.get(x).cloned())
        };
        let (y0, g0) = run(false, x.as_tensor());
        let (y1, g1) = run(true, x.as_tensor());
        assert_eq!(y1.dims(), &[3, 3, 72]);
        let d = (&y0 - &y1).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-4, "forward differs by {d}");
        let (g0, g1) = (g0.expect("exact gradient"), g1.expect("portable gradient"));
        let d = (g0 - g1).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-4, "gradient differs by {d}");
        // An offset view that is not where the storage starts.
        let off = big.narrow(0, 1, 3).unwrap();
        assert!(off.layout().start_offset() > 0);
        let (ya, _) = run(false, &off);
        let (yb, _) = run(true, &off);
        let d = (ya - yb).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-4, "offset input differs by {d}");
    }

    #[test]
    fn quantized_mode_is_close_and_has_the_same_backward() {
        let q = Arc::new(rand_q(64, 512, GgmlDType::Q4K, 6));
        let x = crate::testutil::randn(&[2, 5, 512], 1.0, 7);
        let exact = QLinear::new(q.clone(), None, Precision::Dequantized).unwrap().forward(&x).unwrap();
        let approx = QLinear::new(q, None, Precision::Quantized).unwrap().forward(&x).unwrap();
        let num = (&exact - &approx).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        let den = exact.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        let rel = (num / den).sqrt();
        assert!(rel < 0.03 && rel > 0.0, "relative L2 {rel}");
        assert_eq!(exact.dims(), &[2, 5, 64]);
    }
}
