//! [`TensorOps`] on a CUDA GPU: cuBLAS for the GEMMs, the kernels of `cuda/siglip.cu` for
//! everything else, all queued on the backend's one stream (so ops are ordered without events,
//! and a download is the only point that waits).
//!
//! Linear layers run in one of two [`GemmPrecision`]s: plain fp32 SGEMM (no TF32), which the
//! parity tests use to compare against the CPU, or bf16 operands with fp32 accumulation and
//! fp32 output (the default; tensor cores). In bf16 mode each weight is converted once, on
//! first use, and the bf16 copy is kept next to the f32 one in its [`CudaMatrix`]. Attention
//! products (q·kᵀ, p·v) always run in fp32: they are a small share of the work, and softmax
//! inputs are where low precision hurts most.
//!
//! In bf16 mode the passes around the GEMMs are fused where the next GEMM is the only reader
//! (on by default; `VLMPREP_CUDA_FUSED=0` or [`CudaTensorOps::set_fused`] restores the separate
//! passes, for side-by-side measurements): layer norm writes its bf16 copy as it goes; an
//! MLP's first GEMM runs without bias and one pass adds the bias, applies the activation and
//! writes the bf16 operand of the second; the q, k, v bias is added while the heads are split.
//! That removes about 4 GB of memory traffic per so400m layer at batch 64 (of ~18 GB outside
//! the GEMMs, by count). Opt-in until measured on a GPU ([`CudaTensorOps::set_flash_attention`],
//! `VLMPREP_CUDA_FLASH=1`): self-attention as one fused tensor-core kernel, which removes the
//! score matrix (~8 GB more per layer).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use cudarc::cublas::CudaBlas;
use cudarc::cublas::sys as blas_sys;
use cudarc::cublas::{Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{
    CudaFunction, CudaSlice, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg,
};

use super::kernels::KernelFamily;
use super::{CudaBackend, cuda_err};
use crate::backend::shapes;
use crate::backend::tensor::{Activation, TensorOps};
use crate::error::{Error, Result};

/// How linear layers multiply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GemmPrecision {
    /// fp32 operands, fp32 accumulation, no TF32: bit-for-bit the classic SGEMM, for parity.
    F32,
    /// bf16 operands (activations converted per call, weights once), fp32 accumulation and
    /// fp32 output.
    #[default]
    Bf16,
}

/// A device matrix `[rows, cols]`, row-major f32, with a bf16 copy made on first use as a
/// GEMM right-hand side in [`GemmPrecision::Bf16`] (weights are uploaded once and multiplied
/// many times, so they are converted once).
pub struct CudaMatrix {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// `rows × cols` values (a buffer of at least one element, even when empty). Private so
    /// that nothing changes the values behind the bf16 copy's back.
    data: CudaSlice<f32>,
    bf16: OnceLock<CudaSlice<u16>>,
}

impl CudaMatrix {
    fn new(data: CudaSlice<f32>, rows: usize, cols: usize) -> Self {
        CudaMatrix {
            rows,
            cols,
            data,
            bf16: OnceLock::new(),
        }
    }

    /// The device values, row-major; the buffer may be longer than `rows × cols`.
    pub fn data(&self) -> &CudaSlice<f32> {
        &self.data
    }

    fn len(&self) -> usize {
        self.rows * self.cols
    }

    fn dims(&self) -> shapes::Dims {
        (self.rows, self.cols)
    }
}

impl std::fmt::Debug for CudaMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaMatrix")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("bf16_copy", &self.bf16.get().is_some())
            .finish()
    }
}

/// The kernels of `cuda/siglip.cu`, loaded once.
struct Kernels {
    layer_norm: CudaFunction,
    gelu_tanh: CudaFunction,
    gelu_erf: CudaFunction,
    add_assign: CudaFunction,
    add_periodic: CudaFunction,
    broadcast_row: CudaFunction,
    gather_rows: CudaFunction,
    strided_rows: CudaFunction,
    f32_to_bf16: CudaFunction,
    patchify: CudaFunction,
    softmax_rows: CudaFunction,
    pooled_attention: CudaFunction,
    split_heads_bf16: CudaFunction,
    bias_act_bf16: CudaFunction,
    softmax_rows_to_bf16: CudaFunction,
    merge_heads: CudaFunction,
}

impl Kernels {
    fn load(b: &CudaBackend) -> Result<Self> {
        let f = |name: &str| b.function(KernelFamily::Siglip, name);
        Ok(Kernels {
            layer_norm: f("layer_norm")?,
            gelu_tanh: f("gelu_tanh")?,
            gelu_erf: f("gelu_erf")?,
            add_assign: f("add_assign")?,
            add_periodic: f("add_periodic")?,
            broadcast_row: f("broadcast_row")?,
            gather_rows: f("gather_rows")?,
            strided_rows: f("strided_rows")?,
            f32_to_bf16: f("f32_to_bf16")?,
            patchify: f("patchify")?,
            softmax_rows: f("softmax_rows")?,
            pooled_attention: f("pooled_attention")?,
            split_heads_bf16: f("split_heads_bf16")?,
            bias_act_bf16: f("bias_act_bf16")?,
            softmax_rows_to_bf16: f("softmax_rows_to_bf16")?,
            merge_heads: f("merge_heads")?,
        })
    }
}

/// The CUDA [`TensorOps`]: a backend, a cuBLAS handle on its stream, the SigLIP kernels.
pub struct CudaTensorOps {
    backend: Arc<CudaBackend>,
    blas: CudaBlas,
    kernels: Kernels,
    precision: GemmPrecision,
    /// Fused passes around the bf16 GEMMs (see the module docs); atomic so that a benchmark
    /// can switch a loaded model's ops between the two paths.
    fused: AtomicBool,
    /// Self-attention by `cuda/attention.cu` (see [`CudaTensorOps::set_flash_attention`]).
    flash: AtomicBool,
    /// `flash_attention`, loaded on first use.
    flash_kernel: OnceLock<CudaFunction>,
}

impl std::fmt::Debug for CudaTensorOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaTensorOps")
            .field("backend", &self.backend)
            .field("precision", &self.precision)
            .field("fused", &self.fused())
            .field("flash_attention", &self.flash.load(Ordering::Relaxed))
            .finish()
    }
}

fn shape_error(what: &str, detail: String) -> Error {
    Error::Compute(format!("{what}: {detail}"))
}

fn blas_err(what: &str) -> impl FnOnce(cudarc::cublas::result::CublasError) -> Error + '_ {
    move |e| Error::cuda(format!("cuBLAS {what}: {e:?}"))
}

/// A size as the `int` cuBLAS and the kernels take; larger is an error, not a wrap.
fn int(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| shape_error(what, format!("{v} does not fit a 32-bit int")))
}

/// An element count as the kernels' `long long`.
fn count(v: usize) -> i64 {
    // usize → i64 cannot overflow for any allocation that exists
    v as i64
}

/// Threads per block of the elementwise kernels.
const BLOCK: u32 = 256;

/// Grid-stride launch over `n` elements; the grid is capped (the kernels loop), which keeps
/// `grid_dim` within its limit for any `n`.
fn elementwise(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, 1 << 16) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Dimensions of a strided-batched GEMM (cuBLAS's column-major terms).
struct BatchedGemm {
    transa: blas_sys::cublasOperation_t,
    m: i32,
    n: i32,
    k: i32,
    lda: i32,
    stride_a: i64,
    ldb: i32,
    stride_b: i64,
    ldc: i32,
    stride_c: i64,
    batch: i32,
}

impl CudaTensorOps {
    /// Tensor ops on `backend`, bf16 GEMMs ([`GemmPrecision::Bf16`]). Errors (never panics)
    /// when libcublas cannot be loaded or the kernels do not compile.
    pub fn new(backend: Arc<CudaBackend>) -> Result<Self> {
        Self::with_precision(backend, GemmPrecision::default())
    }

    /// Tensor ops with the given GEMM precision.
    pub fn with_precision(backend: Arc<CudaBackend>, precision: GemmPrecision) -> Result<Self> {
        // SAFETY: only tries to dlopen libcublas by its known names. cudarc panics on the first
        // cuBLAS call when the library is missing, so this check must come first.
        if !unsafe { blas_sys::is_culib_present() } {
            return Err(Error::cuda(
                "cuBLAS not found (libcublas.so could not be loaded): install the CUDA toolkit \
                 or the PyPI wheel nvidia-cublas and put its lib folder on LD_LIBRARY_PATH",
            ));
        }
        let blas =
            CudaBlas::new(backend.stream().clone()).map_err(blas_err("creating the handle"))?;
        let kernels = Kernels::load(&backend)?;
        let mut ops = CudaTensorOps {
            backend,
            blas,
            kernels,
            precision,
            fused: AtomicBool::new(std::env::var("VLMPREP_CUDA_FUSED").as_deref() != Ok("0")),
            flash: AtomicBool::new(std::env::var("VLMPREP_CUDA_FLASH").as_deref() == Ok("1")),
            flash_kernel: OnceLock::new(),
        };
        ops.set_precision(precision);
        Ok(ops)
    }

    /// The cuBLAS math mode of `precision`. F32: no TF32 (cuBLAS uses it only when asked), so
    /// F32 is true fp32. Bf16: the attention products, which stay f32 GEMMs, may use TF32
    /// tensor cores (10-bit mantissa, finer than the bf16 of the projections); without them
    /// those products ran on the plain f32 units, a tenth of the tensor-core rate.
    fn math_mode(precision: GemmPrecision) -> blas_sys::cublasMath_t {
        match precision {
            GemmPrecision::F32 => blas_sys::cublasMath_t::CUBLAS_DEFAULT_MATH,
            GemmPrecision::Bf16 => blas_sys::cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH,
        }
    }

    /// The GEMM precision of linear layers.
    pub fn precision(&self) -> GemmPrecision {
        self.precision
    }

    /// Changes the GEMM precision of linear layers.
    pub fn set_precision(&mut self, precision: GemmPrecision) {
        self.precision = precision;
        // SAFETY: a live handle and a valid enum value. Setting a math mode cannot fail on a
        // valid handle; were it to, the handle keeps its previous mode, which is still correct
        // arithmetic (only the speed of the attention products differs).
        let _ =
            unsafe { blas_sys::cublasSetMathMode(*self.blas.handle(), Self::math_mode(precision)) };
    }

    /// Whether the bf16 passes are fused (see the module docs).
    pub fn fused(&self) -> bool {
        self.fused.load(Ordering::Relaxed)
    }

    /// Fuses the bf16 passes or runs them one by one (for side-by-side measurements and
    /// parity tests of both).
    pub fn set_fused(&self, fused: bool) {
        self.fused.store(fused, Ordering::Relaxed);
    }

    /// Runs bf16 self-attention as one fused kernel (`cuda/attention.cu`: tensor cores, online
    /// softmax, no score matrix in memory) instead of cuBLAS products around a softmax pass.
    /// Off by default (`VLMPREP_CUDA_FLASH=1` turns it on) until it has been measured on a GPU:
    /// its kernel is checked on the CPU emulator only. Applies on sm_80 and newer, to heads of
    /// at most 128 dimensions; elsewhere the cuBLAS path runs.
    pub fn set_flash_attention(&self, on: bool) {
        self.flash.store(on, Ordering::Relaxed);
    }

    /// Whether the fused attention kernel runs for these shapes.
    fn flash_applies(&self, batch: usize, heads: usize, head_dim: usize) -> bool {
        self.flash.load(Ordering::Relaxed)
            && self.precision == GemmPrecision::Bf16
            && self.backend.arch() >= 80
            && head_dim <= 128
            && heads <= 65_535
            && batch <= 65_535
    }

    /// `cuda/attention.cu` over `qkv` (plus `bias` when given): the heads-concatenated result.
    /// Shapes are checked by the callers; batch, seq and dim are nonzero.
    fn flash_attention(
        &self,
        qkv: &CudaMatrix,
        bias: Option<&CudaMatrix>,
        batch: usize,
        seq: usize,
        heads: usize,
    ) -> Result<CudaMatrix> {
        let what = "self_attention";
        let dim = qkv.cols / 3;
        let hd = dim / heads;
        let kernel = match self.flash_kernel.get() {
            Some(f) => f,
            None => {
                let f = self
                    .backend
                    .function(KernelFamily::Attention, "flash_attention")?;
                self.flash_kernel.get_or_init(|| f)
            }
        };
        let (s_i, h_i, hd_i) = (int(seq, what)?, int(heads, what)?, int(hd, what)?);
        let scale = 1.0 / (hd as f32).sqrt();
        let hdp = hd.div_ceil(16) * 16;
        let mut out = self.alloc_out(batch * seq * dim)?;
        let no_bias: u64 = 0;
        let stream = self.backend.stream();
        let mut l = stream.launch_builder(kernel);
        l.arg(&qkv.data);
        match bias {
            Some(b) => l.arg(&b.data),
            None => l.arg(&no_bias),
        };
        l.arg(&mut out).arg(&s_i).arg(&h_i).arg(&hd_i).arg(&scale);
        let cfg = LaunchConfig {
            grid_dim: (seq.div_ceil(64) as u32, heads as u32, batch as u32),
            block_dim: (128, 1, 1),
            // q, k and v tiles of 64 x hdp bf16: at most 48 KB (head_dim <= 128)
            shared_mem_bytes: (3 * 64 * hdp * 2) as u32,
        };
        // SAFETY: qkv holds batch·seq·3·dim values and the bias 3·dim (checked by the callers)
        // or is the null pointer the kernel tests for; the grid covers (query tile, head,
        // sequence) with seq·heads·batch within the checks of `flash_applies`; every write is
        // guarded to s < seq, d < head_dim, inside out's batch·seq·dim values.
        unsafe { l.launch(cfg) }.map_err(cuda_err("flash_attention"))?;
        Ok(CudaMatrix::new(out, batch * seq, dim))
    }

    /// Whether this op runs the fused bf16 path.
    fn fusing(&self) -> bool {
        self.fused() && self.precision == GemmPrecision::Bf16
    }

    /// The backend these ops run on.
    pub fn backend(&self) -> &Arc<CudaBackend> {
        &self.backend
    }

    /// An uninitialized device buffer of at least one element: the driver refuses
    /// zero-byte allocations, and an empty matrix still needs a buffer (a matrix's length is
    /// `rows × cols`, never its buffer's).
    ///
    /// # Safety
    /// The caller writes every element it later reads.
    unsafe fn alloc_raw<T: cudarc::driver::DeviceRepr>(&self, len: usize) -> Result<CudaSlice<T>> {
        // SAFETY: forwarded to the caller.
        unsafe { self.backend.stream().alloc::<T>(len.max(1)) }.map_err(cuda_err("allocating"))
    }

    /// A zero-filled device buffer of `len` f32 (at least one element, see
    /// [`alloc_raw`](Self::alloc_raw)).
    fn alloc_zeroed(&self, len: usize) -> Result<CudaSlice<f32>> {
        self.backend
            .stream()
            .alloc_zeros::<f32>(len.max(1))
            .map_err(cuda_err("allocating"))
    }

    /// A device buffer of `len` f32 that the caller fully overwrites. Debug builds fill it
    /// with NaN (all-ones bytes) so that an element a kernel fails to write shows up in tests
    /// instead of passing as leftover memory.
    fn alloc_out(&self, len: usize) -> Result<CudaSlice<f32>> {
        let stream = self.backend.stream();
        // SAFETY: every caller writes all `len` elements before the buffer is read (in debug
        // builds they are NaN-filled first, below).
        let mut buf = unsafe { self.alloc_raw::<f32>(len) }?;
        if cfg!(debug_assertions) && len > 0 {
            let (ptr, _rec) = buf.device_ptr_mut(stream);
            // SAFETY: `ptr` is this allocation of `len · 4` bytes, on this stream.
            unsafe {
                cudarc::driver::result::memset_d8_async(ptr, 0xff, len * 4, stream.cu_stream())
            }
            .map_err(cuda_err("poisoning"))?;
        }
        Ok(buf)
    }

    fn bind(&self) -> Result<()> {
        self.backend
            .context()
            .bind_to_thread()
            .map_err(cuda_err("binding the context"))
    }

    /// The bf16 copy of `m`, made on first use.
    fn bf16_of<'m>(&self, m: &'m CudaMatrix) -> Result<&'m CudaSlice<u16>> {
        if let Some(b) = m.bf16.get() {
            return Ok(b);
        }
        let b = self.to_bf16(&m.data, m.len())?;
        // Two threads may race here; both copies are equal and the loser's is dropped.
        Ok(m.bf16.get_or_init(|| b))
    }

    /// A bf16 copy of the first `n` values of `x`.
    fn to_bf16(&self, x: &CudaSlice<f32>, n: usize) -> Result<CudaSlice<u16>> {
        let stream = self.backend.stream();
        // SAFETY: the kernel below writes all n elements.
        let mut y = unsafe { self.alloc_raw::<u16>(n) }?;
        if n > 0 {
            let n64 = count(n);
            let mut l = stream.launch_builder(&self.kernels.f32_to_bf16);
            l.arg(x).arg(&mut y).arg(&n64);
            // SAFETY: x holds ≥ n f32, y n u16; the kernel touches indices < n only.
            unsafe { l.launch(elementwise(n)) }.map_err(cuda_err("f32_to_bf16"))?;
        }
        Ok(y)
    }

    /// `y (+)= x · wᵀ` with `y [n, out]`, `x [n, k]`, `w [out, k]` (row-major), accumulating
    /// onto `y` when `accumulate`. Shapes are checked by the callers; all of n, k, out > 0.
    ///
    /// Row-major `y = x·wᵀ` is column-major `yᵀ = w·xᵀ`, where cuBLAS sees the row-major
    /// `w [out, k]` as the column-major `k × out` matrix wᵀ (so it is passed transposed,
    /// lda = k) and `x [n, k]` as the column-major `k × n` matrix xᵀ (not transposed, ldb = k);
    /// the column-major `out × n` result with ldc = out is row-major `y [n, out]`.
    fn gemm_xwt(
        &self,
        y: &mut CudaSlice<f32>,
        x: &CudaMatrix,
        w: &CudaMatrix,
        accumulate: bool,
    ) -> Result<()> {
        let (n, k, out) = (
            int(x.rows, "linear")?,
            int(x.cols, "linear")?,
            int(w.rows, "linear")?,
        );
        let beta = if accumulate { 1.0f32 } else { 0.0 };
        // cuBLAS runs in the calling thread's current context: make it ours (model code may
        // call from any thread; cudarc's own launches bind, cuBLAS calls do not)
        self.bind()?;
        let transa = blas_sys::cublasOperation_t::CUBLAS_OP_T;
        let transb = blas_sys::cublasOperation_t::CUBLAS_OP_N;
        match self.precision {
            GemmPrecision::F32 => {
                let cfg = GemmConfig {
                    transa,
                    transb,
                    m: out,
                    n,
                    k,
                    alpha: 1.0f32,
                    lda: k,
                    ldb: k,
                    beta,
                    ldc: out,
                };
                // SAFETY: w holds out·k, x n·k, y n·out values (checked by the callers), which
                // is exactly what the dimensions and leading dimensions above address.
                unsafe { self.blas.gemm(cfg, &w.data, &x.data, y) }.map_err(blas_err("sgemm"))
            }
            GemmPrecision::Bf16 => {
                let wb = self.bf16_of(w)?;
                // An activation's bf16 copy exists when the op that made it wrote one (fused
                // layer norm and MLP); otherwise it is converted for this call only.
                let converted;
                let xb = match x.bf16.get() {
                    Some(b) => b,
                    None => {
                        converted = self.to_bf16(&x.data, x.len())?;
                        &converted
                    }
                };
                let stream = self.backend.stream();
                let alpha = 1.0f32;
                let (wp, _rw) = wb.device_ptr(stream);
                let (xp, _rx) = xb.device_ptr(stream);
                let (yp, _ry) = y.device_ptr_mut(stream);
                // SAFETY: as for the f32 case, with bf16 copies of w and x of the same element
                // counts; alpha and beta are f32 as CUBLAS_COMPUTE_32F requires, and outlive
                // the (host-side, synchronous) argument read of the call.
                unsafe {
                    cudarc::cublas::result::gemm_ex(
                        *self.blas.handle(),
                        transa,
                        transb,
                        out,
                        n,
                        k,
                        (&alpha) as *const f32 as *const _,
                        wp as *const _,
                        blas_sys::cudaDataType_t::CUDA_R_16BF,
                        k,
                        xp as *const _,
                        blas_sys::cudaDataType_t::CUDA_R_16BF,
                        k,
                        (&beta) as *const f32 as *const _,
                        yp as *mut _,
                        blas_sys::cudaDataType_t::CUDA_R_32F,
                        out,
                        blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                        blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                    )
                }
                .map_err(blas_err("gemm_ex bf16"))
                // xb (the activation's bf16 copy) is freed after the call is queued: cudarc
                // frees with the stream-ordered allocator, so the GEMM still sees it.
            }
        }
    }

    /// `c = op(a) · b` for `batch` column-major problems at fixed strides: bf16 `a` and `b`
    /// (`b` never transposed), f32 `c` (overwritten), f32 accumulation.
    fn batched_gemm_bf16(
        &self,
        g: BatchedGemm,
        a: &CudaSlice<u16>,
        b: &CudaSlice<u16>,
        c: &mut CudaSlice<f32>,
    ) -> std::result::Result<(), cudarc::cublas::result::CublasError> {
        let stream = self.backend.stream();
        let (alpha, beta) = (1.0f32, 0.0f32);
        let (ap, _ra) = a.device_ptr(stream);
        let (bp, _rb) = b.device_ptr(stream);
        let (cp, _rc) = c.device_ptr_mut(stream);
        // SAFETY: the callers size a, b and c for `batch` problems at these strides and leading
        // dimensions; alpha and beta are f32 as CUBLAS_COMPUTE_32F requires and outlive the
        // (host-side, synchronous) read of the arguments.
        unsafe {
            cudarc::cublas::result::gemm_strided_batched_ex(
                *self.blas.handle(),
                g.transa,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                g.m,
                g.n,
                g.k,
                (&alpha) as *const f32 as *const _,
                ap as *const _,
                blas_sys::cudaDataType_t::CUDA_R_16BF,
                g.lda,
                g.stride_a,
                bp as *const _,
                blas_sys::cudaDataType_t::CUDA_R_16BF,
                g.ldb,
                g.stride_b,
                (&beta) as *const f32 as *const _,
                cp as *mut _,
                blas_sys::cudaDataType_t::CUDA_R_32F,
                g.ldc,
                g.stride_c,
                g.batch,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
    }

    /// Self-attention with bf16 operands and f32 accumulation, every (sequence, head) pair in
    /// one strided-batched GEMM per product: q, k, v are split into bf16 `[batch, heads, seq,
    /// head_dim]` tensors, the f32 scores of all heads are normalized into bf16 probabilities,
    /// and the f32 result is merged back to heads-concatenated rows. Shapes are checked by
    /// [`TensorOps::self_attention`]; batch, seq and dim are nonzero here.
    fn self_attention_bf16(
        &self,
        qkv: &CudaMatrix,
        bias: Option<&CudaMatrix>,
        batch: usize,
        seq: usize,
        heads: usize,
    ) -> Result<CudaMatrix> {
        let what = "self_attention";
        let dim = qkv.cols / 3;
        let hd = dim / heads;
        if self.flash_applies(batch, heads, hd) {
            return self.flash_attention(qkv, bias, batch, seq, heads);
        }
        let scale = 1.0 / (hd as f32).sqrt();
        let pairs = batch * heads;
        let (s_i, hd_i, h_i) = (int(seq, what)?, int(hd, what)?, int(heads, what)?);
        let pairs_i = int(pairs, what)?;
        let stream = self.backend.stream();
        self.bind()?;
        let per_part = batch * seq * dim;
        // SAFETY (all three): split_heads_bf16 writes every element of q, k and v.
        let mut q = unsafe { self.alloc_raw::<u16>(per_part) }?;
        let mut k = unsafe { self.alloc_raw::<u16>(per_part) }?;
        let mut v = unsafe { self.alloc_raw::<u16>(per_part) }?;
        let n = count(3 * per_part);
        let no_bias: u64 = 0;
        let mut l = stream.launch_builder(&self.kernels.split_heads_bf16);
        l.arg(&qkv.data);
        match bias {
            Some(b) => l.arg(&b.data),
            None => l.arg(&no_bias),
        };
        l.arg(&mut q)
            .arg(&mut k)
            .arg(&mut v)
            .arg(&n)
            .arg(&s_i)
            .arg(&h_i)
            .arg(&hd_i);
        // SAFETY: qkv holds batch·seq·3·dim values and a bias 3·dim (checked by the callers), or
        // the null pointer the kernel tests for; each index maps to one element of q, k or v,
        // each of batch·heads·seq·head_dim = per_part values.
        unsafe { l.launch(elementwise(3 * per_part)) }.map_err(cuda_err("split_heads_bf16"))?;

        // scores [pair, seq(i), seq(j)] = q·kᵀ, row-major: column-major scoresᵀ = k·qᵀ, with k
        // and q each a column-major head_dim × seq matrix (ld head_dim) per pair.
        let mut scores = self.alloc_out(pairs * seq * seq)?;
        let (op_n, op_t) = (
            blas_sys::cublasOperation_t::CUBLAS_OP_N,
            blas_sys::cublasOperation_t::CUBLAS_OP_T,
        );
        let head_stride = i64::from(s_i) * i64::from(hd_i);
        let score_stride = i64::from(s_i) * i64::from(s_i);
        self.batched_gemm_bf16(
            BatchedGemm {
                transa: op_t,
                m: s_i,
                n: s_i,
                k: hd_i,
                lda: hd_i,
                stride_a: head_stride,
                ldb: hd_i,
                stride_b: head_stride,
                ldc: s_i,
                stride_c: score_stride,
                batch: pairs_i,
            },
            &k,
            &q,
            &mut scores,
        )
        .map_err(blas_err("attention scores (bf16)"))?;

        // SAFETY: softmax_rows_to_bf16 writes every element of p.
        let mut p = unsafe { self.alloc_raw::<u16>(pairs * seq * seq) }?;
        let rows = pairs * seq;
        let rows_i = count(rows);
        let softmax_cfg = LaunchConfig {
            // 8 warps per block, one row each
            grid_dim: (
                u32::try_from(rows.div_ceil(8))
                    .map_err(|_| shape_error(what, format!("{rows} rows")))?,
                1,
                1,
            ),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = stream.launch_builder(&self.kernels.softmax_rows_to_bf16);
        l.arg(&scores)
            .arg(&mut p)
            .arg(&rows_i)
            .arg(&s_i)
            .arg(&scale);
        // SAFETY: rows·seq values in scores and p; warps past the last row return.
        unsafe { l.launch(softmax_cfg) }.map_err(cuda_err("softmax_rows_to_bf16"))?;
        drop(scores);

        // o [pair, seq, head_dim] = p·v, row-major: column-major oᵀ (head_dim × seq) =
        // vᵀ (head_dim × seq, ld head_dim) · pᵀ (seq × seq, ld seq).
        let mut o = self.alloc_out(per_part)?;
        self.batched_gemm_bf16(
            BatchedGemm {
                transa: op_n,
                m: hd_i,
                n: s_i,
                k: s_i,
                lda: hd_i,
                stride_a: head_stride,
                ldb: s_i,
                stride_b: score_stride,
                ldc: hd_i,
                stride_c: head_stride,
                batch: pairs_i,
            },
            &v,
            &p,
            &mut o,
        )
        .map_err(blas_err("attention values (bf16)"))?;

        let mut out = self.alloc_out(per_part)?;
        let n = count(per_part);
        let mut l = stream.launch_builder(&self.kernels.merge_heads);
        l.arg(&o)
            .arg(&mut out)
            .arg(&n)
            .arg(&s_i)
            .arg(&h_i)
            .arg(&hd_i);
        // SAFETY: o and out both hold batch·seq·dim values; each output index reads one of o.
        unsafe { l.launch(elementwise(per_part)) }.map_err(cuda_err("merge_heads"))?;
        Ok(CudaMatrix::new(out, batch * seq, dim))
    }

    /// `x[i] += table[i mod period]` over the whole of `x`.
    fn add_periodic_raw(
        &self,
        x: &mut CudaSlice<f32>,
        n: usize,
        table: &CudaSlice<f32>,
        period: usize,
    ) -> Result<()> {
        if n == 0 || period == 0 {
            return Ok(());
        }
        let (n64, p64) = (count(n), count(period));
        let stream = self.backend.stream();
        let mut l = stream.launch_builder(&self.kernels.add_periodic);
        l.arg(x).arg(table).arg(&n64).arg(&p64);
        // SAFETY: x holds n values, table ≥ period values; indices stay below those.
        unsafe { l.launch(elementwise(n)) }.map_err(cuda_err("add_periodic"))?;
        Ok(())
    }
}

impl TensorOps for CudaTensorOps {
    type Matrix = CudaMatrix;

    /// The pHash kernels (`cuda/phash.cu`, see [`super::phash`]).
    fn device_phash(
        &self,
        images: &[&crate::image::RgbImage],
    ) -> Option<Result<Vec<crate::curate::phash::PerceptualHash>>> {
        Some(self.backend.phash_batch(images))
    }

    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<CudaMatrix> {
        shapes::upload(data.len(), rows, cols)?;
        let d = if data.is_empty() {
            self.alloc_zeroed(0)?
        } else {
            self.backend
                .stream()
                .clone_htod(data)
                .map_err(cuda_err("upload"))?
        };
        Ok(CudaMatrix::new(d, rows, cols))
    }

    fn download(&self, m: &CudaMatrix) -> Result<Vec<f32>> {
        // synchronous: the copy into pageable memory waits for the stream, which also surfaces
        // any asynchronous kernel error here
        if m.len() == 0 {
            // nothing to copy, but the caller still expects queued work to be done
            self.backend.synchronize()?;
            return Ok(Vec::new());
        }
        self.backend
            .stream()
            .clone_dtoh(&m.data.slice(..m.len()))
            .map_err(cuda_err("download"))
    }

    fn dims(&self, m: &CudaMatrix) -> (usize, usize) {
        (m.rows, m.cols)
    }

    fn linear(&self, x: &CudaMatrix, w: &CudaMatrix, b: Option<&CudaMatrix>) -> Result<CudaMatrix> {
        let (n, k, out) = (x.rows, x.cols, w.rows);
        shapes::linear(x.dims(), w.dims(), b.map(|b| b.len()))?;
        let stream = self.backend.stream();
        let len = n * out;
        let mut y = match b {
            // every row starts as the bias, and the GEMM accumulates onto it (beta = 1)
            Some(b) => {
                let mut y = self.alloc_out(len)?;
                if len > 0 {
                    let (n64, c64) = (count(len), count(out));
                    let mut l = stream.launch_builder(&self.kernels.broadcast_row);
                    l.arg(&mut y).arg(&b.data).arg(&n64).arg(&c64);
                    // SAFETY: y holds len values, b out values; i mod out < out.
                    unsafe { l.launch(elementwise(len)) }.map_err(cuda_err("broadcast_row"))?;
                }
                y
            }
            // the GEMM overwrites (beta = 0) unless k = 0, where x·wᵀ is all zeros
            None if k > 0 => self.alloc_out(len)?,
            None => self.alloc_zeroed(len)?,
        };
        if len > 0 && k > 0 {
            self.gemm_xwt(&mut y, x, w, b.is_some())?;
        }
        Ok(CudaMatrix::new(y, n, out))
    }

    fn linear_add_assign(
        &self,
        acc: &mut CudaMatrix,
        x: &CudaMatrix,
        w: &CudaMatrix,
        b: Option<&CudaMatrix>,
    ) -> Result<()> {
        let (n, k, out) = (x.rows, x.cols, w.rows);
        shapes::linear_add_assign(acc.dims(), x.dims(), w.dims(), b.map(|b| b.len()))?;
        let len = n * out;
        if len == 0 {
            return Ok(());
        }
        // the stream is about to change: a bf16 copy of acc (if it was ever a GEMM operand)
        // would go stale
        acc.bf16.take();
        if let Some(b) = b {
            self.add_periodic_raw(&mut acc.data, len, &b.data, out)?;
        }
        if k > 0 {
            self.gemm_xwt(&mut acc.data, x, w, true)?;
        }
        Ok(())
    }

    /// Fused (bf16 mode): the GEMM without bias, then one pass for bias, activation and the
    /// bf16 operand of the next GEMM. Otherwise the trait's linear then activate.
    fn linear_activate(
        &self,
        x: &CudaMatrix,
        w: &CudaMatrix,
        b: &CudaMatrix,
        act: Activation,
    ) -> Result<CudaMatrix> {
        let (n, k, out) = (x.rows, x.cols, w.rows);
        let len = n * out;
        if !self.fusing() || len == 0 || k == 0 {
            let mut y = self.linear(x, w, Some(b))?;
            self.activate(&mut y, act)?;
            return Ok(y);
        }
        shapes::linear(x.dims(), w.dims(), Some(b.len()))?;
        let mut y = self.alloc_out(len)?;
        self.gemm_xwt(&mut y, x, w, false)?;
        // SAFETY: bias_act_bf16 writes all len elements.
        let mut yb = unsafe { self.alloc_raw::<u16>(len) }?;
        let code: i32 = match act {
            Activation::GeluTanh => 1,
            Activation::GeluErf => 2,
        };
        let (n64, c64) = (count(len), count(out));
        let stream = self.backend.stream();
        let mut l = stream.launch_builder(&self.kernels.bias_act_bf16);
        l.arg(&mut y)
            .arg(&b.data)
            .arg(&mut yb)
            .arg(&n64)
            .arg(&c64)
            .arg(&code);
        // SAFETY: y and yb hold len values, b out values (checked); i mod out < out.
        unsafe { l.launch(elementwise(len)) }.map_err(cuda_err("bias_act_bf16"))?;
        let y = CudaMatrix::new(y, n, out);
        // a fresh matrix: the cell is empty
        let _ = y.bf16.set(yb);
        Ok(y)
    }

    /// Fused (bf16 mode): the bias is added while the heads are split. Otherwise the trait's
    /// add then attend.
    fn self_attention_biased(
        &self,
        qkv: CudaMatrix,
        bias: &CudaMatrix,
        batch: usize,
        seq: usize,
        heads: usize,
    ) -> Result<CudaMatrix> {
        let dim = shapes::self_attention(qkv.dims(), batch, seq, heads)?;
        // The kernel adds one bias row; anything else takes the general path.
        if !self.fusing() || batch == 0 || seq == 0 || dim == 0 || bias.dims() != (1, qkv.cols) {
            let mut qkv = qkv;
            self.add_periodic_rows(&mut qkv, bias)?;
            return self.self_attention(&qkv, batch, seq, heads);
        }
        self.self_attention_bf16(&qkv, Some(bias), batch, seq, heads)
    }

    fn layer_norm(
        &self,
        x: &CudaMatrix,
        gamma: &CudaMatrix,
        beta: &CudaMatrix,
        eps: f32,
    ) -> Result<CudaMatrix> {
        let d = x.cols;
        shapes::layer_norm(d, gamma.len(), beta.len())?;
        let mut y = self.alloc_out(x.len())?;
        // The bf16 copy the next GEMM reads, written by the same pass (fused mode).
        let mut yb = None;
        if x.rows > 0 && d > 0 {
            let rows = u32::try_from(x.rows)
                .ok()
                .filter(|&r| r < i32::MAX as u32)
                .ok_or_else(|| shape_error("layer_norm", format!("{} rows", x.rows)))?;
            let cols = int(d, "layer_norm")?;
            // enough threads to cover a SigLIP width (768–1152) in a few strides, no more than
            // a short row needs; always whole warps (the reductions assume it)
            let threads = (d.div_ceil(32) * 32).clamp(32, 256) as u32;
            let stream = self.backend.stream();
            if self.fusing() {
                // SAFETY: the kernel writes all rows·cols elements when given the pointer.
                yb = Some(unsafe { self.alloc_raw::<u16>(x.len()) }?);
            }
            let no_copy: u64 = 0;
            let mut l = stream.launch_builder(&self.kernels.layer_norm);
            l.arg(&x.data).arg(&gamma.data).arg(&beta.data).arg(&mut y);
            match yb.as_mut() {
                Some(yb) => l.arg(yb),
                None => l.arg(&no_copy),
            };
            l.arg(&cols).arg(&eps);
            let cfg = LaunchConfig {
                grid_dim: (rows, 1, 1),
                block_dim: (threads, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: one block per row < rows; columns < cols; x, y (and yb when given) hold
            // rows·cols values, gamma and beta cols.
            unsafe { l.launch(cfg) }.map_err(cuda_err("layer_norm"))?;
        }
        let out = CudaMatrix::new(y, x.rows, d);
        if let Some(yb) = yb {
            // a fresh matrix: the cell is empty
            let _ = out.bf16.set(yb);
        }
        Ok(out)
    }

    fn activate(&self, x: &mut CudaMatrix, act: Activation) -> Result<()> {
        let n = x.len();
        if n == 0 {
            return Ok(());
        }
        x.bf16.take();
        let f = match act {
            Activation::GeluTanh => &self.kernels.gelu_tanh,
            Activation::GeluErf => &self.kernels.gelu_erf,
        };
        let n64 = count(n);
        let stream = self.backend.stream();
        let mut l = stream.launch_builder(f);
        l.arg(&mut x.data).arg(&n64);
        // SAFETY: x holds n values.
        unsafe { l.launch(elementwise(n)) }.map_err(cuda_err("gelu"))?;
        Ok(())
    }

    fn add_assign(&self, x: &mut CudaMatrix, y: &CudaMatrix) -> Result<()> {
        shapes::add(x.dims(), y.dims())?;
        let n = x.len();
        if n == 0 {
            return Ok(());
        }
        x.bf16.take();
        let n64 = count(n);
        let stream = self.backend.stream();
        let mut l = stream.launch_builder(&self.kernels.add_assign);
        l.arg(&mut x.data).arg(&y.data).arg(&n64);
        // SAFETY: x and y hold n values each.
        unsafe { l.launch(elementwise(n)) }.map_err(cuda_err("add_assign"))?;
        Ok(())
    }

    fn add_periodic_rows(&self, x: &mut CudaMatrix, table: &CudaMatrix) -> Result<()> {
        shapes::periodic_rows(x.dims(), table.dims())?;
        x.bf16.take();
        let n = x.len();
        self.add_periodic_raw(&mut x.data, n, &table.data, table.len())
    }

    fn gather_rows(&self, table: &CudaMatrix, ids: &[u32]) -> Result<CudaMatrix> {
        let d = table.cols;
        shapes::gather_rows(table.rows, ids)?;
        let n = ids.len() * d;
        let mut out = self.alloc_out(n)?;
        if n > 0 {
            let stream = self.backend.stream();
            let ids_dev = stream.clone_htod(ids).map_err(cuda_err("uploading ids"))?;
            let (n64, cols) = (count(n), int(d, "gather_rows")?);
            // ids were checked against the row count, so it fits u32 wherever ids exist
            let table_rows = u32::try_from(table.rows).unwrap_or(u32::MAX);
            let mut l = stream.launch_builder(&self.kernels.gather_rows);
            l.arg(&table.data)
                .arg(&ids_dev)
                .arg(&mut out)
                .arg(&n64)
                .arg(&cols)
                .arg(&table_rows);
            // SAFETY: out holds ids·d values; every id < table.rows (checked above, and again
            // in the kernel), so reads stay inside the table.
            unsafe { l.launch(elementwise(n)) }.map_err(cuda_err("gather_rows"))?;
        }
        Ok(CudaMatrix::new(out, ids.len(), d))
    }

    fn strided_rows(
        &self,
        x: &CudaMatrix,
        first: usize,
        step: usize,
        count_rows: usize,
    ) -> Result<CudaMatrix> {
        let d = x.cols;
        shapes::strided_rows(x.rows, first, step, count_rows)?;
        let n = count_rows * d;
        let mut out = self.alloc_out(n)?;
        if n > 0 {
            let (n64, cols, f64_, s64) =
                (count(n), int(d, "strided_rows")?, count(first), count(step));
            let stream = self.backend.stream();
            let mut l = stream.launch_builder(&self.kernels.strided_rows);
            l.arg(&x.data)
                .arg(&mut out)
                .arg(&n64)
                .arg(&cols)
                .arg(&f64_)
                .arg(&s64);
            // SAFETY: the last row read, first + (count−1)·step, is < x.rows (checked above).
            unsafe { l.launch(elementwise(n)) }.map_err(cuda_err("strided_rows"))?;
        }
        Ok(CudaMatrix::new(out, count_rows, d))
    }

    fn self_attention(
        &self,
        qkv: &CudaMatrix,
        batch: usize,
        seq: usize,
        heads: usize,
    ) -> Result<CudaMatrix> {
        let dim = shapes::self_attention(qkv.dims(), batch, seq, heads)?;
        let stream = self.backend.stream();
        if batch == 0 || seq == 0 || dim == 0 {
            let rows = if batch == 0 || seq == 0 { 0 } else { qkv.rows };
            let z = self.alloc_zeroed(rows * dim)?;
            return Ok(CudaMatrix::new(z, rows, dim));
        }
        if self.precision == GemmPrecision::Bf16 {
            return self.self_attention_bf16(qkv, None, batch, seq, heads);
        }
        let hd = dim / heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let what = "self_attention";
        let (s_i, hd_i, b_i) = (int(seq, what)?, int(hd, what)?, int(batch, what)?);
        let row = int(3 * dim, what)?;
        let dim_i = int(dim, what)?;
        let _ = int(seq * seq, what)?;
        self.bind()?;
        let mut out = self.alloc_out(batch * seq * dim)?;
        // scores of one head for every sequence, [batch, seq, seq]; reused head after head
        // (the stream orders the reuse)
        let mut scores = self.alloc_out(batch * seq * seq)?;
        let softmax_rows = count(batch * seq);
        let softmax_cfg = LaunchConfig {
            // 8 warps per block, one row each
            grid_dim: (
                u32::try_from((batch * seq).div_ceil(8))
                    .map_err(|_| shape_error(what, format!("{} rows", batch * seq)))?,
                1,
                1,
            ),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let (op_n, op_t) = (
            blas_sys::cublasOperation_t::CUBLAS_OP_N,
            blas_sys::cublasOperation_t::CUBLAS_OP_T,
        );
        for h in 0..heads {
            // Head h of sequence b: q at qkv[b·seq.., h·hd..], k at column dim + h·hd, v at
            // 2·dim + h·hd, all with row stride 3·dim, sequences seq·3·dim apart: one strided
            // batch over sequences per product, no permute.
            let q = qkv.data.slice(h * hd..);
            let k = qkv.data.slice(dim + h * hd..);
            let v = qkv.data.slice(2 * dim + h * hd..);
            // scores [seq(i), seq(j)] = q·kᵀ (row-major) = column-major scoresᵀ = k·qᵀ:
            // A = k seen column-major as hd × seq (ld 3·dim), transposed; B = q as hd × seq
            // (ld 3·dim); C = seq × seq, ld seq.
            let cfg = StridedBatchedConfig {
                gemm: GemmConfig {
                    transa: op_t,
                    transb: op_n,
                    m: s_i,
                    n: s_i,
                    k: hd_i,
                    alpha: 1.0f32,
                    lda: row,
                    ldb: row,
                    beta: 0.0f32,
                    ldc: s_i,
                },
                batch_size: b_i,
                stride_a: i64::from(s_i) * i64::from(row),
                stride_b: i64::from(s_i) * i64::from(row),
                stride_c: i64::from(s_i) * i64::from(s_i),
            };
            // SAFETY: the last element read of k is (batch−1)·seq·3dim + (seq−1)·3dim + hd − 1
            // past dim + h·hd, inside qkv (h·hd + hd ≤ dim); likewise q; scores holds
            // batch·seq·seq values.
            unsafe { self.blas.gemm_strided_batched(cfg, &k, &q, &mut scores) }
                .map_err(blas_err("attention scores"))?;
            let mut l = stream.launch_builder(&self.kernels.softmax_rows);
            l.arg(&mut scores).arg(&softmax_rows).arg(&s_i).arg(&scale);
            // SAFETY: rows·seq values in scores; warps past the last row return.
            unsafe { l.launch(softmax_cfg) }.map_err(cuda_err("softmax_rows"))?;
            // out_h [seq, hd] (row-major, ld dim) = p [seq, seq] · v [seq, hd] (ld 3·dim)
            // = column-major out_hᵀ (hd × seq) = vᵀ (hd × seq, ld 3·dim) · pᵀ (seq × seq, ld seq).
            let cfg = StridedBatchedConfig {
                gemm: GemmConfig {
                    transa: op_n,
                    transb: op_n,
                    m: hd_i,
                    n: s_i,
                    k: s_i,
                    alpha: 1.0f32,
                    lda: row,
                    ldb: s_i,
                    beta: 0.0f32,
                    ldc: dim_i,
                },
                batch_size: b_i,
                stride_a: i64::from(s_i) * i64::from(row),
                stride_b: i64::from(s_i) * i64::from(s_i),
                stride_c: i64::from(s_i) * i64::from(dim_i),
            };
            let mut o = out.slice_mut(h * hd..);
            // SAFETY: v as q/k above; out's last element written is (batch−1)·seq·dim +
            // (seq−1)·dim + hd − 1 past h·hd, inside out.
            unsafe { self.blas.gemm_strided_batched(cfg, &v, &scores, &mut o) }
                .map_err(blas_err("attention values"))?;
        }
        Ok(CudaMatrix::new(out, batch * seq, dim))
    }

    fn pooled_attention(
        &self,
        q: &CudaMatrix,
        kv: &CudaMatrix,
        batch: usize,
        seq: usize,
        heads: usize,
    ) -> Result<CudaMatrix> {
        let dim = q.cols;
        shapes::pooled_attention(q.dims(), kv.dims(), batch, seq, heads)?;
        let stream = self.backend.stream();
        if batch == 0 || dim == 0 || seq == 0 {
            // no keys: the CPU's empty softmax leaves the zero-filled output as it is
            let z = self.alloc_zeroed(batch * dim)?;
            return Ok(CudaMatrix::new(z, batch, dim));
        }
        let what = "pooled_attention";
        let hd = dim / heads;
        let scale = 1.0 / (hd as f32).sqrt();
        // the weights of one (sequence, head) live in shared memory: stay inside the 48 KiB a
        // kernel gets without opting in
        let shared = seq * 4;
        if shared > 40 * 1024 {
            return Err(shape_error(
                what,
                format!("{seq} keys per sequence exceed the kernel's shared memory"),
            ));
        }
        let (s_i, dim_i, hd_i) = (int(seq, what)?, int(dim, what)?, int(hd, what)?);
        let _ = int(2 * dim, what)?;
        let grid_b = u32::try_from(batch)
            .ok()
            .filter(|&b| b < i32::MAX as u32)
            .ok_or_else(|| shape_error(what, format!("batch {batch}")))?;
        let grid_h = u32::try_from(heads)
            .ok()
            .filter(|&h| h <= 65535)
            .ok_or_else(|| shape_error(what, format!("{heads} heads")))?;
        let mut out = self.alloc_out(batch * dim)?;
        let mut l = stream.launch_builder(&self.kernels.pooled_attention);
        l.arg(&q.data)
            .arg(&kv.data)
            .arg(&mut out)
            .arg(&s_i)
            .arg(&dim_i)
            .arg(&hd_i)
            .arg(&scale);
        let cfg = LaunchConfig {
            grid_dim: (grid_b, grid_h, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: shared as u32,
        };
        // SAFETY: block (b, h) reads kv rows b·seq..(b+1)·seq, columns h·hd..(h+1)·hd and
        // dim + the same, q columns h·hd..(h+1)·hd, and writes out[b, h·hd..(h+1)·hd]; all
        // inside the buffers for b < batch, h < heads.
        unsafe { l.launch(cfg) }.map_err(cuda_err("pooled_attention"))?;
        Ok(CudaMatrix::new(out, batch, dim))
    }

    fn patchify(
        &self,
        images: &CudaMatrix,
        channels: usize,
        height: usize,
        width: usize,
        patch: usize,
    ) -> Result<CudaMatrix> {
        // As on the CPU, a remainder at the right and bottom edges is dropped (the kernel's
        // grid is rounded down), as the stride-`patch` convolution drops it.
        shapes::patchify(images.dims(), channels, height, width, patch)?;
        let what = "patchify";
        let (gy, gx) = (height / patch, width / patch);
        let cols = channels * patch * patch;
        let rows = images.rows * gy * gx;
        let n = rows * cols;
        let mut out = self.alloc_out(n)?;
        if n > 0 {
            // the kernel's int arithmetic: per-image sizes must fit
            let _ = int(channels * height * width, what)?;
            let _ = int(cols, what)?;
            let _ = int(gy * gx, what)?;
            let args = (
                count(n),
                int(channels, what)?,
                int(height, what)?,
                int(width, what)?,
                int(patch, what)?,
            );
            let stream = self.backend.stream();
            let mut l = stream.launch_builder(&self.kernels.patchify);
            l.arg(&images.data)
                .arg(&mut out)
                .arg(&args.0)
                .arg(&args.1)
                .arg(&args.2)
                .arg(&args.3)
                .arg(&args.4);
            // SAFETY: output index i < n maps to image i / (gy·gx·cols) < images.rows and a
            // pixel inside that image (c < channels, y < height, x < width).
            unsafe { l.launch(elementwise(n)) }.map_err(cuda_err("patchify"))?;
        }
        Ok(CudaMatrix::new(out, rows, cols))
    }
}
