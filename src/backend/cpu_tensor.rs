//! [`TensorOps`] on the CPU: the `gemm` crate's blocked, SIMD, multithreaded GEMM for the
//! projections and attention products, rayon over rows (or over sequences) for everything else.
//! This is the reference the GPU backends are tested against, and it must also be fast.

use std::sync::Arc;

use gemm::{Parallelism, gemm};
use rayon::prelude::*;

use super::CpuBackend;
use super::buffer_pool;
use super::cpu_gemm::{self, PackedWeight};
use super::fast_math;
use super::shapes;
use super::tensor::{Activation, TensorOps};
use crate::error::Result;

/// A host matrix, row-major.
///
/// A matrix prepared as a linear weight ([`TensorOps::prepare_linear_weight`]) also carries its
/// panels for the packed GEMM ([`cpu_gemm`]); they are a copy of `data` in another layout, so
/// a caller that changes `data` of a prepared weight by hand must prepare it again (the
/// backend's own in-place ops drop the panels). Equality compares the values only.
#[derive(Debug, Clone)]
pub struct CpuMatrix {
    /// `rows × cols` values.
    pub data: Vec<f32>,
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// `data` packed for [`cpu_gemm::linear`], when prepared as a weight on an AVX-512 CPU.
    packed: Option<Arc<PackedWeight>>,
}

impl PartialEq for CpuMatrix {
    fn eq(&self, other: &Self) -> bool {
        (self.rows, self.cols) == (other.rows, other.cols) && self.data == other.data
    }
}

impl CpuMatrix {
    /// A matrix of `rows × cols` values (`data.len()` is the caller's to match).
    pub fn new(data: Vec<f32>, rows: usize, cols: usize) -> Self {
        CpuMatrix {
            data,
            rows,
            cols,
            packed: None,
        }
    }

    fn dims(&self) -> shapes::Dims {
        (self.rows, self.cols)
    }

    /// This matrix with its values also packed for the CPU backend's own GEMM
    /// (`backend/cpu_gemm.rs`), which `linear` and `linear_add_assign` then use when it is
    /// their weight; unchanged on a CPU without AVX-512F. `prepare_linear_weight` does this
    /// only when `VLMPREP_CPU_GEMM=packed` is set.
    pub fn with_packed_gemm(mut self) -> Self {
        if cpu_gemm::available() {
            self.packed = Some(Arc::new(PackedWeight::pack(
                &self.data, self.rows, self.cols,
            )));
        }
        self
    }

    /// Whether this matrix holds packed panels (prepared as a weight on an AVX-512 CPU).
    pub fn is_packed(&self) -> bool {
        self.packed.is_some()
    }

    /// The packed panels, if prepared and still matching the shape.
    fn packed_weight(&self) -> Option<&PackedWeight> {
        self.packed
            .as_deref()
            .filter(|p| p.dims() == (self.rows, self.cols))
    }
}

/// GEMMs below this many multiply-adds run on the calling thread: splitting them costs more
/// than it saves.
const PARALLEL_GEMM_WORK: usize = 1 << 20;

/// `dst[m×n] = beta·lhs·rhs (+ dst when accumulate)`, with element strides given as
/// (row stride, column stride) for each operand.
///
/// SAFETY contract (checked by callers): every index `r·rs + c·cs` for `r < rows, c < cols` of
/// each operand lies inside the slice it points into.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_strided(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_strides: (isize, isize),
    accumulate: bool,
    lhs: *const f32,
    lhs_strides: (isize, isize),
    rhs: *const f32,
    rhs_strides: (isize, isize),
    beta: f32,
    parallel: bool,
) {
    let par = if parallel && m * n * k >= PARALLEL_GEMM_WORK {
        Parallelism::Rayon(rayon::current_num_threads())
    } else {
        Parallelism::None
    };
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst,
            dst_strides.1,
            dst_strides.0,
            accumulate,
            lhs,
            lhs_strides.1,
            lhs_strides.0,
            rhs,
            rhs_strides.1,
            rhs_strides.0,
            1.0,
            beta,
            false,
            false,
            false,
            par,
        )
    }
}

/// erf-form GELU of one value (erf in f64: libm has no f32 erf in std).
#[inline]
fn gelu_erf(x: f32) -> f32 {
    let x = f64::from(x);
    (0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))) as f32
}

/// erf in f64: the Taylor series near zero, erfc's continued fraction in the tails; both
/// converge to ~1e-15 in the iterations given, far below what an f32 GELU can show.
fn erf(x: f64) -> f64 {
    let ax = x.abs();
    let r = if ax < 2.5 {
        // Taylor series: erf(x) = 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1))
        let mut term = ax;
        let mut sum = ax;
        let x2 = ax * ax;
        for n in 1..60 {
            term *= -x2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // continued fraction for erfc, evaluated bottom-up
        let mut f = 0.0;
        for n in (1..60).rev() {
            f = (n as f64 / 2.0) / (ax + f);
        }
        1.0 - (-ax * ax).exp() / std::f64::consts::PI.sqrt() / (ax + f)
    };
    r.copysign(x)
}

/// Softmax of one row in place, after multiplying by `scale` (> 0).
#[inline]
fn softmax_scaled(row: &mut [f32], scale: f32) {
    let inv = 1.0 / softmax_unnormalized(row, scale);
    row.iter_mut().for_each(|v| *v *= inv);
}

/// A softmax's numerators `e^(scale·(v − max))` in place; returns their sum, the denominator
/// the caller still has to divide by (attention divides its much narrower output rows).
#[inline]
fn softmax_unnormalized(row: &mut [f32], scale: f32) -> f32 {
    let max = fast_math::max_of(row) * scale;
    fast_math::exp_scaled_sum(row, scale, max)
}

/// `dst = x · wᵀ` for `x [n, k]`, `w [out, k]` into `n·out` values that need not be
/// initialized: the `gemm` crate told not to read its destination (`read_dst` false) only
/// stores into it (its first k-block stores `lhs·rhs`; later blocks read back what the first
/// stored), so every value is written before anything reads it.
fn x_times_w_transposed_uninit(
    dst: &mut [std::mem::MaybeUninit<f32>],
    x: &CpuMatrix,
    w: &CpuMatrix,
) {
    let (n, k, out) = (x.rows, x.cols, w.rows);
    assert!(
        w.cols == k && dst.len() == n * out && x.data.len() == n * k && w.data.len() == out * k,
        "x_times_w_transposed_uninit: shapes checked by the caller"
    );
    if n == 0 || out == 0 {
        return;
    }
    if k == 0 {
        dst.fill(std::mem::MaybeUninit::new(0.0));
        return;
    }
    // SAFETY: the shapes were asserted above; MaybeUninit<f32> has f32's layout, and with
    // `accumulate` false gemm only writes dst (see above).
    unsafe { gemm_x_wt(dst.as_mut_ptr().cast::<f32>(), x, w, false) };
}

/// The one `gemm` call of both `x · wᵀ` forms: `x [n, k]` row-major (strides k, 1), `wᵀ [k, out]`
/// read from `w [out, k]` with strides (1, k), `dst [n, out]` row-major, accumulated when asked.
///
/// # Safety
/// `dst` must point to `x.rows · w.rows` writable f32 values (readable too when `accumulate`),
/// and `x`, `w` must hold `rows · cols` values with `x.cols == w.cols`.
unsafe fn gemm_x_wt(dst: *mut f32, x: &CpuMatrix, w: &CpuMatrix, accumulate: bool) {
    let (n, k, out) = (x.rows, x.cols, w.rows);
    // SAFETY: the caller guarantees the buffer sizes, so every index of the three strided
    // views lies inside its buffer.
    unsafe {
        gemm_strided(
            n,
            out,
            k,
            dst,
            (out as isize, 1),
            accumulate,
            x.data.as_ptr(),
            (k as isize, 1),
            w.data.as_ptr(),
            (1, k as isize),
            1.0,
            true,
        )
    };
}

/// `dst (+)= x · wᵀ` for `x [n, k]`, `w [out, k]`, `dst [n, out]` (row-major), accumulating
/// onto `dst` when asked. Shapes are the callers' to check; a mismatch here is a bug, not data,
/// so it panics instead of reading out of bounds.
fn x_times_w_transposed(dst: &mut [f32], x: &CpuMatrix, w: &CpuMatrix, accumulate: bool) {
    let (n, k, out) = (x.rows, x.cols, w.rows);
    assert!(
        w.cols == k && dst.len() == n * out && x.data.len() == n * k && w.data.len() == out * k,
        "x_times_w_transposed: shapes checked by the caller"
    );
    if n == 0 || out == 0 || k == 0 {
        return;
    }
    // SAFETY: dst holds n·out initialized values and x, w their shapes (asserted above).
    unsafe { gemm_x_wt(dst.as_mut_ptr(), x, w, accumulate) };
}

/// Self-attention of `qkv (+ bias)` (shapes checked by the caller), one rayon task per
/// sequence: it owns its rows of the output, so no two tasks write the same memory.
fn attention(
    qkv: &CpuMatrix,
    bias: Option<&[f32]>,
    batch: usize,
    seq: usize,
    heads: usize,
    dim: usize,
) -> CpuMatrix {
    let len = batch * seq * dim;
    let mut out = buffer_pool::take_empty(len);
    if len > 0 {
        let zeros;
        let bias = match bias {
            Some(b) => b,
            None => {
                zeros = vec![0.0; 3 * dim];
                &zeros
            }
        };
        out.spare_capacity_mut()[..len]
            .par_chunks_mut(seq * dim)
            .zip(qkv.data.par_chunks(seq * 3 * dim))
            .for_each(|(out_b, qkv_b)| {
                // SAFETY: MaybeUninit<f32> has f32's layout; `attend_sequence` only writes
                // `out_b` (each head's P·V product stores its columns without reading them).
                let out_b = unsafe {
                    std::slice::from_raw_parts_mut(out_b.as_mut_ptr().cast::<f32>(), out_b.len())
                };
                attend_sequence(out_b, qkv_b, bias, seq, heads, dim);
            });
    }
    // SAFETY: every sequence's task wrote all of its seq·dim values: the heads' columns
    // h·hd..(h+1)·hd cover dim (heads divides dim), every row. Nothing when len = 0.
    unsafe { out.set_len(len) };
    CpuMatrix::new(out, batch * seq, dim)
}

/// One sequence of [`attention`]: `qkv_b` holds its `seq` rows of q, k, v side by side
/// (`3·dim` each), `out_b` its `seq` rows of `dim`, written and never read.
///
/// q, k and v are first copied out of `qkv_b`, row by row (a sequential read), into
/// head-major blocks (each head's `seq × head_dim` contiguous), with the bias added and q
/// scaled by 1/√head_dim on the way. The `gemm` crate on the strided columns of `qkv` ran at
/// about 2/3 of the speed of the same products on contiguous blocks (measured on the base-size
/// shapes, seq 196 and 64, head_dim 64). Scaling q before q·kᵀ instead of the scores after it
/// is exact when √head_dim is a power of two (64: 1/8) and one rounding apart otherwise. The
/// softmax's division is applied to the `head_dim`-wide output rows instead of the
/// `seq`-wide probability rows.
fn attend_sequence(
    out_b: &mut [f32],
    qkv_b: &[f32],
    bias: &[f32],
    seq: usize,
    heads: usize,
    dim: usize,
) {
    let hd = dim / heads;
    let scale = 1.0 / (hd as f32).sqrt();
    // head-major: [q of every head | k of every head | v of every head], head h of part p at
    // (p·heads + h)·seq·hd
    // from the pool: 1.8 MB for a base-size image sequence, which a fresh allocation would
    // map and fault in page by page for every sequence of every layer
    let len = 3 * seq * dim;
    let mut split = buffer_pool::take_empty(len);
    let dst = &mut split.spare_capacity_mut()[..len];
    for (i, src) in qkv_b.chunks_exact(3 * dim).enumerate() {
        for (part, (src, bias)) in src
            .chunks_exact(dim)
            .zip(bias.chunks_exact(dim))
            .enumerate()
        {
            let mul = if part == 0 { scale } else { 1.0 };
            for (h, (src, bias)) in src.chunks_exact(hd).zip(bias.chunks_exact(hd)).enumerate() {
                let at = ((part * heads + h) * seq + i) * hd;
                for ((d, &x), &b) in dst[at..at + hd].iter_mut().zip(src).zip(bias) {
                    d.write((x + b) * mul);
                }
            }
        }
    }
    // SAFETY: the loops above wrote every one of the len values: each (part, head, row)
    // block of hd values once, 3 · heads · seq · hd = len in all.
    unsafe { split.set_len(len) };
    // From the pool too: seq² scores are 2.1 MB at so400m-384 (seq 729), as fresh pages per
    // sequence per layer otherwise.
    let mut scores = buffer_pool::take_zeroed(seq * seq);
    let mut inv_sums = vec![0.0f32; seq];
    for h in 0..heads {
        let block = |part: usize| &split[(part * heads + h) * seq * hd..][..seq * hd];
        let (q, k, v) = (block(0), block(1), block(2));
        // SAFETY: q, k, v are seq×hd row-major; kᵀ reads k with strides (1, hd); scores is
        // seq×seq; out_b is seq×dim and head h writes its columns h·hd..(h+1)·hd, the last
        // index (seq−1)·dim + (h+1)·hd − 1 < seq·dim.
        unsafe {
            gemm_strided(
                seq,
                seq,
                hd,
                scores.as_mut_ptr(),
                (seq as isize, 1),
                false,
                q.as_ptr(),
                (hd as isize, 1),
                k.as_ptr(),
                (1, hd as isize),
                1.0,
                false,
            );
        }
        for (r, inv) in scores.chunks_mut(seq).zip(&mut inv_sums) {
            *inv = 1.0 / softmax_unnormalized(r, 1.0);
        }
        unsafe {
            gemm_strided(
                seq,
                hd,
                seq,
                out_b[h * hd..].as_mut_ptr(),
                (dim as isize, 1),
                false,
                scores.as_ptr(),
                (seq as isize, 1),
                v.as_ptr(),
                (hd as isize, 1),
                1.0,
                false,
            );
        }
        for (row, &inv) in out_b.chunks_exact_mut(dim).zip(&inv_sums) {
            row[h * hd..(h + 1) * hd].iter_mut().for_each(|o| *o *= inv);
        }
    }
    buffer_pool::recycle(split);
    buffer_pool::recycle(scores);
}

impl Drop for CpuMatrix {
    /// Large buffers go back to the pool for the next op (see `buffer_pool`).
    fn drop(&mut self) {
        buffer_pool::recycle(std::mem::take(&mut self.data));
    }
}

impl TensorOps for CpuBackend {
    type Matrix = CpuMatrix;

    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<CpuMatrix> {
        shapes::upload(data.len(), rows, cols)?;
        let mut copy = buffer_pool::take_zeroed(data.len());
        copy.copy_from_slice(data);
        Ok(CpuMatrix {
            packed: None,
            data: copy,
            rows,
            cols,
        })
    }

    fn download(&self, m: &CpuMatrix) -> Result<Vec<f32>> {
        Ok(m.data.clone())
    }

    fn dims(&self, m: &CpuMatrix) -> (usize, usize) {
        (m.rows, m.cols)
    }

    fn prepare_linear_weight(&self, w: CpuMatrix) -> Result<CpuMatrix> {
        // Opt-in: measured slower than the `gemm` crate so far (BENCHMARKS.md, "Packed GEMM").
        if cpu_gemm::enabled_by_env() {
            return Ok(w.with_packed_gemm());
        }
        Ok(w)
    }

    fn linear(&self, x: &CpuMatrix, w: &CpuMatrix, b: Option<&CpuMatrix>) -> Result<CpuMatrix> {
        let (n, out) = (x.rows, w.rows);
        shapes::linear(x.dims(), w.dims(), b.map(|b| b.data.len()))?;
        if let Some(pw) = w.packed_weight() {
            let mut y = buffer_pool::take_empty(n * out);
            // every value is written by the GEMM (bias fused into its store), none read first
            cpu_gemm::linear(
                &mut y.spare_capacity_mut()[..n * out],
                &x.data,
                n,
                pw,
                b.map(|b| &b.data[..]),
                false,
            );
            // SAFETY: `cpu_gemm::linear` wrote all n·out values (its contract when not
            // accumulating), and the capacity holds them.
            unsafe { y.set_len(n * out) };
            return Ok(CpuMatrix::new(y, n, out));
        }
        let mut y = match b {
            Some(b) => {
                // every row starts as the bias, which the GEMM then accumulates onto: one
                // write per value, no zero fill first
                let mut y = buffer_pool::take_empty(n * out);
                for _ in 0..n {
                    y.extend_from_slice(&b.data);
                }
                y
            }
            None => {
                // no bias: the GEMM stores every value without reading any
                let mut y = buffer_pool::take_empty(n * out);
                x_times_w_transposed_uninit(&mut y.spare_capacity_mut()[..n * out], x, w);
                // SAFETY: `x_times_w_transposed_uninit` wrote all n·out values.
                unsafe { y.set_len(n * out) };
                return Ok(CpuMatrix::new(y, n, out));
            }
        };
        x_times_w_transposed(&mut y, x, w, true);
        Ok(CpuMatrix::new(y, n, out))
    }

    fn linear_add_assign(
        &self,
        acc: &mut CpuMatrix,
        x: &CpuMatrix,
        w: &CpuMatrix,
        b: Option<&CpuMatrix>,
    ) -> Result<()> {
        let out = w.rows;
        shapes::linear_add_assign(acc.dims(), x.dims(), w.dims(), b.map(|b| b.data.len()))?;
        acc.packed = None;
        if let Some(pw) = w.packed_weight() {
            // SAFETY: f32 and MaybeUninit<f32> have the same layout, and every value of `acc`
            // is initialized, so viewing it as MaybeUninit and writing f32s keeps it valid.
            let view = unsafe {
                std::slice::from_raw_parts_mut(
                    acc.data.as_mut_ptr().cast::<std::mem::MaybeUninit<f32>>(),
                    acc.data.len(),
                )
            };
            cpu_gemm::linear(view, &x.data, x.rows, pw, b.map(|b| &b.data[..]), true);
            return Ok(());
        }
        if let Some(b) = b {
            acc.data.par_chunks_mut(out.max(1)).for_each(|row| {
                row.iter_mut().zip(&b.data).for_each(|(a, b)| *a += b);
            });
        }
        x_times_w_transposed(&mut acc.data, x, w, true);
        Ok(())
    }

    fn linear_activate(
        &self,
        x: &CpuMatrix,
        w: &CpuMatrix,
        b: &CpuMatrix,
        act: Activation,
    ) -> Result<CpuMatrix> {
        let (n, out) = (x.rows, w.rows);
        shapes::linear(x.dims(), w.dims(), Some(b.data.len()))?;
        if w.packed_weight().is_some() {
            // the packed GEMM already adds the bias in its store
            let mut y = self.linear(x, w, Some(b))?;
            self.activate(&mut y, act)?;
            return Ok(y);
        }
        let mut y = buffer_pool::take_empty(n * out);
        x_times_w_transposed_uninit(&mut y.spare_capacity_mut()[..n * out], x, w);
        // SAFETY: `x_times_w_transposed_uninit` wrote all n·out values, and the capacity
        // holds them.
        unsafe { y.set_len(n * out) };
        if out > 0 {
            y.par_chunks_mut(out).for_each(|row| match act {
                Activation::GeluTanh => _ = fast_math::bias_gelu_tanh_in_place(row, &b.data),
                Activation::GeluErf => row
                    .iter_mut()
                    .zip(&b.data)
                    .for_each(|(v, b)| *v = gelu_erf(*v + b)),
            });
        }
        Ok(CpuMatrix::new(y, n, out))
    }

    fn layer_norm(
        &self,
        x: &CpuMatrix,
        gamma: &CpuMatrix,
        beta: &CpuMatrix,
        eps: f32,
    ) -> Result<CpuMatrix> {
        let d = x.cols;
        shapes::layer_norm(d, gamma.data.len(), beta.data.len())?;
        let mut y = buffer_pool::take_empty(x.data.len());
        if d > 0 {
            // every value is written by its row's `layer_norm_row`: no zero fill first
            y.spare_capacity_mut()[..x.data.len()]
                .par_chunks_mut(d)
                .zip(x.data.par_chunks(d))
                .for_each(|(out, row)| {
                    // SAFETY: MaybeUninit<f32> has f32's layout; the values are only written
                    // (layer_norm_row assigns each one, reading row, gamma and beta).
                    let out = unsafe {
                        std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<f32>(), out.len())
                    };
                    fast_math::layer_norm_row(out, row, &gamma.data, &beta.data, eps);
                });
        }
        // SAFETY: the loop above wrote all x.data.len() values (none when d = 0: then the
        // length is 0 too).
        unsafe { y.set_len(x.data.len()) };
        Ok(CpuMatrix {
            packed: None,
            data: y,
            rows: x.rows,
            cols: d,
        })
    }

    fn activate(&self, x: &mut CpuMatrix, act: Activation) -> Result<()> {
        x.packed = None;
        match act {
            Activation::GeluTanh => x
                .data
                .par_chunks_mut(4096)
                .for_each(|c| _ = fast_math::gelu_tanh_in_place(c)),
            Activation::GeluErf => x
                .data
                .par_chunks_mut(4096)
                .for_each(|c| c.iter_mut().for_each(|v| *v = gelu_erf(*v))),
        }
        Ok(())
    }

    fn add_assign(&self, x: &mut CpuMatrix, y: &CpuMatrix) -> Result<()> {
        shapes::add(x.dims(), y.dims())?;
        x.packed = None;
        x.data
            .par_chunks_mut(4096)
            .zip(y.data.par_chunks(4096))
            .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, b)| *a += b));
        Ok(())
    }

    fn add_periodic_rows(&self, x: &mut CpuMatrix, table: &CpuMatrix) -> Result<()> {
        shapes::periodic_rows(x.dims(), table.dims())?;
        x.packed = None;
        let period = table.data.len();
        if period > 0 {
            x.data
                .par_chunks_mut(period)
                .for_each(|block| block.iter_mut().zip(&table.data).for_each(|(a, b)| *a += b));
        }
        Ok(())
    }

    fn gather_rows(&self, table: &CpuMatrix, ids: &[u32]) -> Result<CpuMatrix> {
        let d = table.cols;
        shapes::gather_rows(table.rows, ids)?;
        let mut data = Vec::with_capacity(ids.len() * d);
        for &id in ids {
            let id = id as usize;
            data.extend_from_slice(&table.data[id * d..(id + 1) * d]);
        }
        Ok(CpuMatrix {
            packed: None,
            data,
            rows: ids.len(),
            cols: d,
        })
    }

    fn strided_rows(
        &self,
        x: &CpuMatrix,
        first: usize,
        step: usize,
        count: usize,
    ) -> Result<CpuMatrix> {
        let d = x.cols;
        shapes::strided_rows(x.rows, first, step, count)?;
        let mut data = Vec::with_capacity(count * d);
        for i in 0..count {
            let r = first + i * step;
            data.extend_from_slice(&x.data[r * d..(r + 1) * d]);
        }
        Ok(CpuMatrix {
            packed: None,
            data,
            rows: count,
            cols: d,
        })
    }

    fn self_attention(
        &self,
        qkv: &CpuMatrix,
        batch: usize,
        seq: usize,
        heads: usize,
    ) -> Result<CpuMatrix> {
        let dim = shapes::self_attention(qkv.dims(), batch, seq, heads)?;
        Ok(attention(qkv, None, batch, seq, heads, dim))
    }

    fn self_attention_biased(
        &self,
        qkv: CpuMatrix,
        bias: &CpuMatrix,
        batch: usize,
        seq: usize,
        heads: usize,
    ) -> Result<CpuMatrix> {
        let dim = shapes::self_attention_biased(qkv.dims(), bias.dims(), batch, seq, heads)?;
        Ok(attention(&qkv, Some(&bias.data), batch, seq, heads, dim))
    }

    fn pooled_attention(
        &self,
        q: &CpuMatrix,
        kv: &CpuMatrix,
        batch: usize,
        seq: usize,
        heads: usize,
    ) -> Result<CpuMatrix> {
        let dim = q.cols;
        shapes::pooled_attention(q.dims(), kv.dims(), batch, seq, heads)?;
        let hd = dim / heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let row = 2 * dim;
        let mut out = buffer_pool::take_zeroed(batch * dim);
        if dim == 0 {
            return Ok(CpuMatrix {
                packed: None,
                data: out,
                rows: batch,
                cols: dim,
            });
        }
        out.par_chunks_mut(dim).enumerate().for_each(|(b, out_b)| {
            let base = &kv.data[b * seq * row..(b + 1) * seq * row];
            let mut weights = buffer_pool::take_zeroed(seq);
            for h in 0..heads {
                let qh = &q.data[h * hd..(h + 1) * hd];
                for (j, w) in weights.iter_mut().enumerate() {
                    let k = &base[j * row + h * hd..j * row + (h + 1) * hd];
                    *w = qh.iter().zip(k).map(|(a, b)| a * b).sum();
                }
                softmax_scaled(&mut weights, scale);
                let o = &mut out_b[h * hd..(h + 1) * hd];
                o.fill(0.0);
                for (j, &w) in weights.iter().enumerate() {
                    let v = &base[j * row + dim + h * hd..j * row + dim + (h + 1) * hd];
                    o.iter_mut().zip(v).for_each(|(o, v)| *o += w * v);
                }
            }
        });
        Ok(CpuMatrix {
            packed: None,
            data: out,
            rows: batch,
            cols: dim,
        })
    }

    fn patchify(
        &self,
        images: &CpuMatrix,
        channels: usize,
        height: usize,
        width: usize,
        patch: usize,
    ) -> Result<CpuMatrix> {
        // A remainder at the right and bottom edges is dropped, as the patch-embedding
        // convolution (stride = kernel = patch, no padding) drops it: so400m-patch14-384 sees
        // 27×27 patches of its 384-pixel input and never its last 6 rows and columns.
        shapes::patchify(images.dims(), channels, height, width, patch)?;
        let (gy, gx) = (height / patch, width / patch);
        let cols = channels * patch * patch;
        let mut data = buffer_pool::take_zeroed(images.rows * gy * gx * cols);
        if cols == 0 || data.is_empty() {
            return Ok(CpuMatrix {
                packed: None,
                data,
                rows: images.rows * gy * gx,
                cols,
            });
        }
        data.par_chunks_mut(gy * gx * cols)
            .zip(images.data.par_chunks(images.cols))
            .for_each(|(out, img)| {
                for (p, dst) in out.chunks_mut(cols).enumerate() {
                    let (py, px) = (p / gx, p % gx);
                    let mut i = 0;
                    for c in 0..channels {
                        for y in 0..patch {
                            let src = c * height * width + (py * patch + y) * width + px * patch;
                            dst[i..i + patch].copy_from_slice(&img[src..src + patch]);
                            i += patch;
                        }
                    }
                }
            });
        Ok(CpuMatrix {
            packed: None,
            data,
            rows: images.rows * gy * gx,
            cols,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(data: &[f32], rows: usize, cols: usize) -> CpuMatrix {
        CpuBackend.upload(data, rows, cols).unwrap()
    }

    /// Straightforward triple loop: the reference for the GEMM paths.
    fn naive_linear(x: &CpuMatrix, w: &CpuMatrix, b: &[f32]) -> Vec<f32> {
        let mut y = vec![0.0; x.rows * w.rows];
        for i in 0..x.rows {
            for o in 0..w.rows {
                let mut s = b[o];
                for k in 0..x.cols {
                    s += x.data[i * x.cols + k] * w.data[o * w.cols + k];
                }
                y[i * w.rows + o] = s;
            }
        }
        y
    }

    fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    #[test]
    fn linear_equals_the_naive_product_small_and_large() {
        for (n, k, out) in [(3, 5, 4), (130, 96, 200)] {
            let x = m(&pseudo(n * k, 1), n, k);
            let w = m(&pseudo(out * k, 2), out, k);
            let b = pseudo(out, 3);
            let y = CpuBackend.linear(&x, &w, Some(&m(&b, 1, out))).unwrap();
            let r = naive_linear(&x, &w, &b);
            let worst = y
                .data
                .iter()
                .zip(&r)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(worst < 1e-4, "{n}x{k}x{out}: {worst}");
        }
        let x = m(&[1.0; 6], 2, 3);
        assert!(CpuBackend.linear(&x, &m(&[1.0; 4], 2, 2), None).is_err());
    }

    #[test]
    fn linear_add_assign_equals_linear_then_add() {
        let (n, k, out) = (37, 19, 23);
        let x = m(&pseudo(n * k, 3), n, k);
        let w = m(&pseudo(out * k, 4), out, k);
        let b = m(&pseudo(out, 5), 1, out);
        let start = m(&pseudo(n * out, 6), n, out);
        let mut want = start.clone();
        CpuBackend
            .add_assign(&mut want, &CpuBackend.linear(&x, &w, Some(&b)).unwrap())
            .unwrap();
        let mut got = start.clone();
        CpuBackend
            .linear_add_assign(&mut got, &x, &w, Some(&b))
            .unwrap();
        let worst = got
            .data
            .iter()
            .zip(&want.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-5, "{worst}");
        // shapes that do not line up are errors, and leave the accumulator alone
        let mut wrong = m(&pseudo(n * (out + 1), 7), n, out + 1);
        let before = wrong.clone();
        assert!(
            CpuBackend
                .linear_add_assign(&mut wrong, &x, &w, Some(&b))
                .is_err()
        );
        assert_eq!(wrong, before);
    }

    #[test]
    fn a_prepared_weight_gives_the_same_linear_and_loses_its_panels_when_changed() {
        let (n, k, out) = (45, 70, 37);
        let x = m(&pseudo(n * k, 11), n, k);
        let w = m(&pseudo(out * k, 12), out, k);
        let b = m(&pseudo(out, 13), 1, out);
        let p = w.clone().with_packed_gemm();
        assert_eq!(p, w, "same values");
        assert_eq!(p.is_packed(), cpu_gemm::available());
        let close = |a: &CpuMatrix, b: &CpuMatrix| {
            assert_eq!((a.rows, a.cols), (b.rows, b.cols));
            let worst = a
                .data
                .iter()
                .zip(&b.data)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(worst < 1e-4, "{worst}");
        };
        close(
            &CpuBackend.linear(&x, &p, Some(&b)).unwrap(),
            &CpuBackend.linear(&x, &w, Some(&b)).unwrap(),
        );
        close(
            &CpuBackend.linear(&x, &p, None).unwrap(),
            &CpuBackend.linear(&x, &w, None).unwrap(),
        );
        let start = m(&pseudo(n * out, 14), n, out);
        let (mut a, mut r) = (start.clone(), start);
        CpuBackend
            .linear_add_assign(&mut a, &x, &p, Some(&b))
            .unwrap();
        CpuBackend
            .linear_add_assign(&mut r, &x, &w, Some(&b))
            .unwrap();
        close(&a, &r);
        // shapes that do not line up are still errors on the packed path
        assert!(CpuBackend.linear(&m(&[1.0; 6], 2, 3), &p, None).is_err());
        // an in-place op changes the values: the panels must not answer for them any more
        let mut changed = p.clone();
        CpuBackend
            .activate(&mut changed, Activation::GeluTanh)
            .unwrap();
        assert!(!changed.is_packed());
        let want = CpuBackend
            .linear(&x, &m(&changed.data, out, k), None)
            .unwrap();
        close(&CpuBackend.linear(&x, &changed, None).unwrap(), &want);
    }

    #[test]
    fn self_attention_equals_a_per_head_reference() {
        let (batch, seq, heads, dim) = (2, 5, 2, 8);
        let qkv = m(&pseudo(batch * seq * 3 * dim, 9), batch * seq, 3 * dim);
        let got = CpuBackend.self_attention(&qkv, batch, seq, heads).unwrap();
        let hd = dim / heads;
        let at = |b: usize, i: usize, c: usize| qkv.data[(b * seq + i) * 3 * dim + c];
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..seq {
                    let mut s: Vec<f32> = (0..seq)
                        .map(|j| {
                            (0..hd)
                                .map(|d| at(b, i, h * hd + d) * at(b, j, dim + h * hd + d))
                                .sum::<f32>()
                                / (hd as f32).sqrt()
                        })
                        .collect();
                    let mx = s.iter().cloned().fold(f32::MIN, f32::max);
                    s.iter_mut().for_each(|v| *v = (*v - mx).exp());
                    let z: f32 = s.iter().sum();
                    for d in 0..hd {
                        let want: f32 = (0..seq)
                            .map(|j| s[j] / z * at(b, j, 2 * dim + h * hd + d))
                            .sum();
                        let g = got.data[(b * seq + i) * dim + h * hd + d];
                        assert!(
                            (g - want).abs() < 1e-5,
                            "b{b} h{h} i{i} d{d}: {g} vs {want}"
                        );
                    }
                }
            }
        }
    }

    fn worst_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn linear_activate_equals_linear_then_activate() {
        // 37 rows of 300 outputs: several rayon chunks, a width that is not a multiple of 16
        let (n, k, out) = (37, 19, 300);
        let x = m(&pseudo(n * k, 21), n, k);
        let w = m(&pseudo(out * k, 22), out, k);
        // a bias large enough to move values across the GELU's bend
        let b: Vec<f32> = pseudo(out, 23).iter().map(|v| v * 3.0).collect();
        let b = m(&b, 1, out);
        for act in [Activation::GeluTanh, Activation::GeluErf] {
            let mut want = CpuBackend.linear(&x, &w, Some(&b)).unwrap();
            CpuBackend.activate(&mut want, act).unwrap();
            for weight in [w.clone(), w.clone().with_packed_gemm()] {
                let got = CpuBackend.linear_activate(&x, &weight, &b, act).unwrap();
                assert_eq!((got.rows, got.cols), (n, out));
                // the bias is added after the product instead of before: one rounding of
                // values of magnitude ≲ 10 apart, then through a GELU of slope ≤ 1.13
                let worst = worst_diff(&got.data, &want.data);
                assert!(worst < 1e-5, "{act:?}: {worst}");
            }
        }
        // a bias of the wrong width is an error
        assert!(
            CpuBackend
                .linear_activate(&x, &w, &m(&[0.0; 3], 1, 3), Activation::GeluTanh)
                .is_err()
        );
    }

    #[test]
    fn linear_without_bias_writes_every_value() {
        // the no-bias path stores the product into an unfilled buffer: take a pooled one that
        // held other values, then check every value against the naive product
        let (n, k, out) = (300, 40, 250);
        let dirty = buffer_pool::take_zeroed::<f32>(n * out);
        buffer_pool::recycle(dirty.into_iter().map(|_| f32::NAN).collect());
        let x = m(&pseudo(n * k, 31), n, k);
        let w = m(&pseudo(out * k, 32), out, k);
        let y = CpuBackend.linear(&x, &w, None).unwrap();
        let r = naive_linear(&x, &w, &vec![0.0; out]);
        assert!(worst_diff(&y.data, &r) < 1e-4);
    }

    #[test]
    fn self_attention_biased_equals_adding_the_bias_first() {
        // head_dim 4 (scale 1/2, exact) and 3 (scale 1/√3, one rounding apart), and a seq long
        // enough for the softmax's 16-wide lanes and their tail
        for (batch, seq, heads, dim) in [(3, 21, 2, 8), (2, 5, 3, 9)] {
            let qkv = m(&pseudo(batch * seq * 3 * dim, 41), batch * seq, 3 * dim);
            let bias = m(&pseudo(3 * dim, 42), 1, 3 * dim);
            let mut added = qkv.clone();
            CpuBackend.add_periodic_rows(&mut added, &bias).unwrap();
            let want = CpuBackend
                .self_attention(&added, batch, seq, heads)
                .unwrap();
            let got = CpuBackend
                .self_attention_biased(qkv.clone(), &bias, batch, seq, heads)
                .unwrap();
            assert_eq!((got.rows, got.cols), (batch * seq, dim));
            let worst = worst_diff(&got.data, &want.data);
            assert!(worst < 1e-5, "{batch}x{seq}, {heads} heads: {worst}");
            // a bias of the wrong shape is an error
            let short = m(&pseudo(3 * dim - 1, 43), 1, 3 * dim - 1);
            assert!(
                CpuBackend
                    .self_attention_biased(qkv, &short, batch, seq, heads)
                    .is_err()
            );
        }
    }

    #[test]
    fn pooled_attention_equals_a_hand_computation() {
        let (batch, seq, dim) = (3, 4, 6);
        let q = m(&pseudo(dim, 5), 1, dim);
        let kv = m(&pseudo(batch * seq * 2 * dim, 6), batch * seq, 2 * dim);
        let got = CpuBackend.pooled_attention(&q, &kv, batch, seq, 1).unwrap();
        for b in 0..batch {
            let row = |j: usize| &kv.data[(b * seq + j) * 2 * dim..(b * seq + j + 1) * 2 * dim];
            let s: Vec<f32> = (0..seq)
                .map(|j| (0..dim).map(|d| q.data[d] * row(j)[d]).sum::<f32>() / (dim as f32).sqrt())
                .collect();
            let mx = s.iter().cloned().fold(f32::MIN, f32::max);
            let e: Vec<f32> = s.iter().map(|v| (v - mx).exp()).collect();
            let z: f32 = e.iter().sum();
            for d in 0..dim {
                let want: f32 = (0..seq).map(|j| e[j] / z * row(j)[dim + d]).sum();
                assert!((got.data[b * dim + d] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn layer_norm_gelu_and_row_ops() {
        let x = m(&[1.0, 2.0, 3.0, 4.0, -1.0, 0.0, 1.0, 2.0], 2, 4);
        let y = CpuBackend
            .layer_norm(&x, &m(&[1.0; 4], 1, 4), &m(&[0.5; 4], 1, 4), 0.0)
            .unwrap();
        let want = [-1.341_640_8, -0.447_213_6, 0.447_213_6, 1.341_640_8];
        for row in y.data.chunks(4) {
            for (got, w) in row.iter().zip(want) {
                assert!((got - (w + 0.5)).abs() < 1e-5);
            }
        }
        let mut g = m(&[-3.0, -0.5, 0.0, 0.5, 3.0], 1, 5);
        CpuBackend.activate(&mut g, Activation::GeluTanh).unwrap();
        // torch.nn.functional.gelu(x, approximate="tanh")
        let want = [-0.003_637_392, -0.154_286, 0.0, 0.345_714, 2.996_362_6];
        for (a, b) in g.data.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        let mut e = m(&[-3.0, -0.5, 0.5, 3.0], 1, 4);
        CpuBackend.activate(&mut e, Activation::GeluErf).unwrap();
        // torch.nn.functional.gelu(x)
        let want = [-0.004_049_696_3, -0.154_268_74, 0.345_731_26, 2.995_950_2];
        for (a, b) in e.data.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        let mut p = m(&[0.0; 6], 3, 2);
        CpuBackend
            .add_periodic_rows(&mut p, &m(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3, 2))
            .unwrap();
        assert_eq!(p.data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let t = m(&[0.0, 1.0, 10.0, 11.0, 20.0, 21.0], 3, 2);
        assert_eq!(
            CpuBackend.gather_rows(&t, &[2, 0]).unwrap().data,
            vec![20.0, 21.0, 0.0, 1.0]
        );
        assert!(CpuBackend.gather_rows(&t, &[3]).is_err());
        assert_eq!(
            CpuBackend.strided_rows(&t, 1, 1, 2).unwrap().data,
            vec![10.0, 11.0, 20.0, 21.0]
        );
        assert!(CpuBackend.strided_rows(&t, 1, 2, 2).is_err());
    }

    #[test]
    fn patchify_drops_the_edge_remainder_like_a_valid_convolution() {
        // one 1-channel 5×5 image, 2×2 patches: a 2×2 grid, row 4 and column 4 unused
        let img: Vec<f32> = (0..25).map(|v| v as f32).collect();
        let p = CpuBackend.patchify(&m(&img, 1, 25), 1, 5, 5, 2).unwrap();
        assert_eq!((p.rows, p.cols), (4, 4));
        assert_eq!(&p.data[..4], &[0.0, 1.0, 5.0, 6.0]);
        assert_eq!(&p.data[12..], &[12.0, 13.0, 17.0, 18.0]);
    }

    #[test]
    fn patchify_is_conv_im2col_order() {
        // one 2-channel 4×4 image, 2×2 patches: patch (py, px) holds c0 rows then c1 rows
        let img: Vec<f32> = (0..32).map(|v| v as f32).collect();
        let p = CpuBackend.patchify(&m(&img, 1, 32), 2, 4, 4, 2).unwrap();
        assert_eq!((p.rows, p.cols), (4, 8));
        assert_eq!(&p.data[..8], &[0.0, 1.0, 4.0, 5.0, 16.0, 17.0, 20.0, 21.0]);
        // patch (1, 1): rows 2..4, columns 2..4
        assert_eq!(
            &p.data[24..32],
            &[10.0, 11.0, 14.0, 15.0, 26.0, 27.0, 30.0, 31.0]
        );
        // a size that does not match the matrix, and a zero patch, are errors
        assert!(CpuBackend.patchify(&m(&img, 1, 32), 2, 4, 5, 2).is_err());
        assert!(CpuBackend.patchify(&m(&img, 1, 32), 2, 4, 4, 0).is_err());
    }
}
