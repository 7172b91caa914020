//! A dedicated f32 GEMM for the CPU backend's linear layers: `y = x · Wᵀ (+ bias) (+= y)` with
//! `x [m, k]` row-major and `W [n, k]` in PyTorch's layout, W packed once at model load.
//!
//! # Why a second GEMM
//! The `gemm` crate (used for everything else) packs its right-hand side on every call and
//! reached only ~PyTorch parity on SigLIP-base. A model's weights never change, so here they
//! are packed once into the micro-kernel's panel layout and every forward streams them as they
//! are.
//!
//! # Status: opt-in
//! Measured on the 2-core AVX-512 development VM (BENCHMARKS.md, "Packed GEMM"), this kernel
//! is still 5–20% slower than the `gemm` crate per CPU-second, so the model only uses it when
//! `VLMPREP_CPU_GEMM=packed` is set; `CpuMatrix::with_packed_gemm` forces it (tests, bench).
//!
//! # Where the packed weight lives
//! [`PackedWeight`] hangs off the CPU matrix type ([`CpuMatrix`](super::CpuMatrix)), in a
//! private `Option<Arc<_>>` field that [`TensorOps::prepare_linear_weight`](super::TensorOps)
//! fills at load (when enabled). That trait method defaults to "return the matrix as it is", so the wgpu and
//! CUDA backends are untouched, and a CPU matrix that was never prepared (or a CPU without
//! AVX-512F) goes through the `gemm` crate exactly as before. A cache keyed on the weight
//! (its address) was the alternative; it was rejected because the buffer pool recycles
//! addresses, so a stale entry could silently answer for a different matrix. The row-major
//! `data` is kept next to the panels (other ops and `download` read it); that doubles the
//! memory of the linear weights (~0.7 GB more for SigLIP-base's two towers). CPU ops that
//! mutate a matrix in place drop its panels, so they never go stale through the backend.
//!
//! # Kernel and blocking
//! The micro-kernel computes an `MR × NR` = 14 × 32 tile of `y` in 28 zmm accumulators (two
//! more hold the W row of the step, one the broadcast x value: 31 of 32 registers, no spills):
//! per step of k it loads 32 packed W values and broadcasts 14 x values, 28 FMAs. The loops
//! are BLIS's with the operands' roles transposed (vectors run along y's rows): k is cut in
//! `KC`-step blocks; W is packed per panel of `NR` output columns, k-major, zero-padded to a
//! multiple of `NR` columns, each k-block of all panels contiguous; x is packed per block of
//! `MC` rows into `MR`-row panels (zero-padded) when the block is reached. For each column
//! block of `NC` panels (its W stretch, 192 KiB, stays in L2), each x micro-panel
//! (`MR × KC`, 14 KiB, stays in L1) runs along the W micro-panels streaming from L2. Bias and
//! the residual are added in the kernel's store at the first k-block; later blocks add onto
//! the stored tile. Edge tiles store with masks and only their valid rows. rayon splits the
//! rows into `MC` blocks (and the columns too when there are too few row blocks for the pool).

use rayon::prelude::*;

/// Rows of the micro-kernel's tile.
const MR: usize = 14;
/// Columns of the micro-kernel's tile (two zmm vectors).
const NR: usize = 32;
/// Steps of k per block: an x micro-panel is `KC · MR · 4` = 14 KiB (L1 is 48 KiB).
const KC: usize = 256;
/// Rows per block: the packed x block is `MC · KC · 4` = 112 KiB (in L2).
const MC: usize = MR * 8;
/// Panels of W per column block: its `KC` steps are `KC · NC · NR · 4` = 192 KiB (in L2).
const NC: usize = 6;
/// Products below this many multiply-adds run on the calling thread.
const PARALLEL_WORK: usize = 1 << 20;

/// Whether this CPU runs the packed GEMM (AVX-512F, checked once by the std macro's cache).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether `VLMPREP_CPU_GEMM=packed` asks for this GEMM on the model's weights (and the CPU
/// has AVX-512F). Off by default: on the development machine it is still slower than the
/// `gemm` crate (BENCHMARKS.md, "Packed GEMM").
pub(crate) fn enabled_by_env() -> bool {
    available() && std::env::var("VLMPREP_CPU_GEMM").is_ok_and(|v| v == "packed")
}

/// A `[n, k]` weight in the micro-kernel's layout: panel `p` holds output columns
/// `p·NR .. p·NR + NR` (rows of W), stored k-major (`NR` values per step of k), the last panel
/// zero-padded; k is cut in blocks of `KC` steps, and a block holds that stretch of every
/// panel, one after the other. Block at `k0` (`kc` steps), panel `p`, step `s`, column `j` is
/// at `k0·P·NR + p·kc·NR + s·NR + j` for `P` panels.
pub struct PackedWeight {
    n: usize,
    k: usize,
    /// Backing store, over-allocated so that the panels can start on a 64-byte boundary.
    buf: Vec<f32>,
    /// Index in `buf` where the panels start (64-byte aligned).
    start: usize,
}

impl std::fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedWeight({}×{})", self.n, self.k)
    }
}

/// A zeroed buffer of at least `len` values and the index of its first 64-byte-aligned value.
fn aligned_zeroed(len: usize) -> (Vec<f32>, usize) {
    let buf = vec![0.0f32; len + 16];
    let misalign = (buf.as_ptr() as usize / 4) % 16;
    let start = (16 - misalign) % 16;
    (buf, start)
}

impl PackedWeight {
    /// Packs `w [n, k]` (row-major, PyTorch layout). `w.len()` must be `n · k` (callers
    /// check shapes; a mismatch is a bug and panics).
    pub fn pack(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(
            w.len(),
            n * k,
            "PackedWeight::pack: shape checked by the caller"
        );
        let panels = n.div_ceil(NR);
        let (mut buf, start) = aligned_zeroed(panels * k * NR);
        let dst = &mut buf[start..start + panels * k * NR];
        // one k-block of every panel after the other: a block is `kc · panels · NR` values
        for (kb, block) in dst.chunks_mut((KC * panels * NR).max(1)).enumerate() {
            let k0 = kb * KC;
            let kc = KC.min(k - k0);
            block
                .par_chunks_mut(kc * NR)
                .enumerate()
                .for_each(|(p, panel)| {
                    for j in 0..NR.min(n - p * NR) {
                        let row = &w[(p * NR + j) * k + k0..(p * NR + j) * k + k0 + kc];
                        for (s, &v) in row.iter().enumerate() {
                            panel[s * NR + j] = v;
                        }
                    }
                });
        }
        PackedWeight { n, k, buf, start }
    }

    /// `(n, k)`: outputs and inputs.
    pub fn dims(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    fn panels(&self) -> &[f32] {
        &self.buf[self.start..self.start + self.n.div_ceil(NR) * self.k * NR]
    }
}

/// A raw output pointer that rayon tasks share; each writes a disjoint set of tiles.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: the tasks that share an `OutPtr` write disjoint (row block, column range) tiles of
// the output, and the caller keeps the buffer alive and otherwise unused until they finish.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

/// `y[m, n] = x · Wᵀ (+ bias)`, or `y += x · Wᵀ (+ bias)` when `accumulate`.
///
/// `y` must be `m · n` values (row stride `n`), `x` `m · k`, `bias` (if any) `n`; a mismatch
/// is a caller bug and panics. When `accumulate` is false, `y`'s previous contents are never
/// read, so it may be uninitialized memory.
pub(crate) fn linear(
    y: &mut [std::mem::MaybeUninit<f32>],
    x: &[f32],
    m: usize,
    w: &PackedWeight,
    bias: Option<&[f32]>,
    accumulate: bool,
) {
    let (n, k) = (w.n, w.k);
    assert!(
        y.len() == m * n && x.len() == m * k && bias.is_none_or(|b| b.len() == n),
        "cpu_gemm::linear: shapes checked by the caller"
    );
    assert!(
        available(),
        "cpu_gemm::linear: the caller checks available()"
    );
    if m == 0 || n == 0 {
        return;
    }
    let out = OutPtr(y.as_mut_ptr().cast::<f32>());
    let panels = n.div_ceil(NR);
    let m_blocks = m.div_ceil(MC);
    let threads = rayon::current_num_threads().max(1);
    let parallel = threads > 1 && m * n * k >= PARALLEL_WORK;
    // enough tasks for every thread to get several (load balance) when rows alone are few
    let n_splits = if parallel && m_blocks < 4 * threads {
        (4 * threads).div_ceil(m_blocks).min(panels)
    } else {
        1
    };
    let per_split = panels.div_ceil(n_splits);
    let n_splits = panels.div_ceil(per_split);
    let task = |t: usize, abuf: &mut Vec<f32>| {
        let (mb, ns) = (t / n_splits, t % n_splits);
        let rows = mb * MC..(mb * MC + MC).min(m);
        let cols = ns * per_split..((ns + 1) * per_split).min(panels);
        // SAFETY: the CPU has AVX-512F (asserted above); the task's tiles are rows `rows` ×
        // panels `cols` of y, disjoint from every other task's, and all shapes were asserted
        // above, which is what `block` requires.
        unsafe { block(out, x, m, w, bias, accumulate, rows, cols, abuf) };
    };
    let tasks = m_blocks * n_splits;
    if parallel {
        (0..tasks)
            .into_par_iter()
            .for_each_init(Vec::new, |abuf, t| task(t, abuf));
    } else {
        let mut abuf = Vec::new();
        (0..tasks).for_each(|t| task(t, &mut abuf));
    }
}

/// One task: rows `rows` (at most `MC`) × panels `cols` of y, over all of k.
///
/// # Safety
/// The CPU has AVX-512F; `out` points to `m · w.n` writable values; `x` is `m · w.k`, `bias`
/// (if any) `w.n`; `rows` lies in `0..m` and `cols` in the panel range; no other thread
/// touches these tiles of `out` meanwhile.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
unsafe fn block(
    out: OutPtr,
    x: &[f32],
    m: usize,
    w: &PackedWeight,
    bias: Option<&[f32]>,
    accumulate: bool,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    abuf: &mut Vec<f32>,
) {
    let (n, k) = (w.n, w.k);
    debug_assert!(rows.end <= m);
    let mrows = rows.len();
    let mpanels = mrows.div_ceil(MR);
    let panels = w.panels();
    let npanels = n.div_ceil(NR);
    if abuf.len() < mpanels * MR * KC {
        abuf.resize(mpanels * MR * KC, 0.0);
    }
    let mut k0 = 0;
    // k = 0 still has to write bias (or zeros) into y: one pass with an empty block
    loop {
        let kc = KC.min(k - k0);
        pack_x(&mut abuf[..mpanels * MR * kc], x, k, rows.clone(), k0, kc);
        let first = k0 == 0;
        let wblock = &panels[k0 * npanels * NR..(k0 + kc) * npanels * NR];
        // NC panels of W's block (kc · NC · NR values) stay in L2 while every x micro-panel
        // (MR · kc, in L1) runs along them
        let mut c0 = cols.start;
        while c0 < cols.end {
            let c1 = (c0 + NC).min(cols.end);
            for ip in 0..mpanels {
                let r0 = rows.start + ip * MR;
                let mr = MR.min(rows.end - r0);
                let xp = &abuf[ip * MR * kc..(ip + 1) * MR * kc];
                for p in c0..c1 {
                    let nr = NR.min(n - p * NR);
                    let wp = &wblock[p * kc * NR..(p + 1) * kc * NR];
                    let b = if first {
                        bias.map(|b| &b[p * NR..p * NR + nr])
                    } else {
                        None
                    };
                    // SAFETY: rows r0..r0+mr < m and columns p·NR..p·NR+nr ≤ n of y, which
                    // this task owns; the x panel holds MR·kc values, the W panel kc·NR.
                    unsafe {
                        kernel(
                            kc,
                            xp.as_ptr(),
                            wp.as_ptr(),
                            out.0.add(r0 * n + p * NR),
                            n,
                            mr,
                            nr,
                            accumulate || !first,
                            b,
                        )
                    };
                }
            }
            c0 = c1;
        }
        k0 += kc;
        if k0 >= k {
            break;
        }
    }
}

/// Packs rows `rows` × steps `k0..k0+kc` of `x` (row stride `k`) into `MR`-row panels, k-major:
/// panel `i`, step `s`, row `r` at `i·MR·kc + s·MR + r`; rows past the end are zeros.
fn pack_x(
    dst: &mut [f32],
    x: &[f32],
    k: usize,
    rows: std::ops::Range<usize>,
    k0: usize,
    kc: usize,
) {
    for (i, panel) in dst.chunks_exact_mut(MR * kc.max(1)).enumerate() {
        if kc == 0 {
            break;
        }
        for r in 0..MR {
            let row = rows.start + i * MR + r;
            if row < rows.end {
                let src = &x[row * k + k0..row * k + k0 + kc];
                for (s, &v) in src.iter().enumerate() {
                    panel[s * MR + r] = v;
                }
            } else {
                for s in 0..kc {
                    panel[s * MR + r] = 0.0;
                }
            }
        }
    }
}

/// The micro-kernel: the `mr × nr` tile at `c` (row stride `ldc`) gets `a · b` (+ `bias`)
/// (+ its previous value when `load_c`), where `a` is an `MR × kc` packed x panel and `b` a
/// `kc × NR` packed W panel.
///
/// # Safety
/// The CPU has AVX-512F; `a` holds `MR · kc` values, `b` `kc · NR`; rows `0..mr` (≤ MR),
/// columns `0..nr` (≤ NR) of the tile are writable (and initialized when `load_c`); `bias`
/// has `nr` values.
#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    mr: usize,
    nr: usize,
    load_c: bool,
    bias: Option<&[f32]>,
) {
    use std::arch::x86_64::*;
    // The tile is read (or written) at the end: start fetching its lines now, so that the
    // epilogue does not wait on L3 or memory.
    for i in 0..mr {
        let p = c.wrapping_add(i * ldc).cast::<i8>();
        _mm_prefetch::<_MM_HINT_T0>(p);
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64));
    }
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for s in 0..kc {
        // SAFETY: s < kc, so b[s·NR .. s·NR + 32] and a[s·MR .. s·MR + MR] are in bounds.
        unsafe {
            let b0 = _mm512_loadu_ps(b.add(s * NR));
            let b1 = _mm512_loadu_ps(b.add(s * NR + 16));
            let ap = a.add(s * MR);
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*ap.add(i));
                row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
            }
        }
    }
    let m0: __mmask16 = if nr >= 16 { 0xffff } else { (1u16 << nr) - 1 };
    let m1: __mmask16 = if nr >= 32 {
        0xffff
    } else if nr > 16 {
        (1u16 << (nr - 16)) - 1
    } else {
        0
    };
    // SAFETY: masked loads read only the nr valid bias values.
    let (bias0, bias1) = match bias {
        Some(bv) => unsafe {
            (
                _mm512_maskz_loadu_ps(m0, bv.as_ptr()),
                _mm512_maskz_loadu_ps(m1, bv.as_ptr().add(16)),
            )
        },
        None => (_mm512_setzero_ps(), _mm512_setzero_ps()),
    };
    for (i, row) in acc.iter().enumerate() {
        if i >= mr {
            break;
        }
        // SAFETY: row i < mr of the tile, columns masked to nr: inside y (caller's contract).
        unsafe {
            let p = c.add(i * ldc);
            let mut v0 = _mm512_add_ps(row[0], bias0);
            let mut v1 = _mm512_add_ps(row[1], bias1);
            if load_c {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, p));
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, p.add(16)));
            }
            _mm512_mask_storeu_ps(p, m0, v0);
            _mm512_mask_storeu_ps(p.add(16), m1, v1);
        }
    }
}

/// Never called: [`available`] is false off x86-64, and [`linear`] asserts it.
///
/// # Safety
/// None needed; it panics.
#[allow(clippy::too_many_arguments)]
#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel(
    _: usize,
    _: *const f32,
    _: *const f32,
    _: *mut f32,
    _: usize,
    _: usize,
    _: usize,
    _: bool,
    _: Option<&[f32]>,
) {
    unreachable!("cpu_gemm runs on x86-64 only")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn pseudo(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// `y0 (+)= x · wᵀ + b` in f64.
    fn naive(
        x: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
        y0: Option<&[f32]>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Vec<f64> {
        let mut y = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s: f64 = (0..k)
                    .map(|t| f64::from(x[i * k + t]) * f64::from(w[j * k + t]))
                    .sum();
                if let Some(b) = b {
                    s += f64::from(b[j]);
                }
                if let Some(y0) = y0 {
                    s += f64::from(y0[i * n + j]);
                }
                y[i * n + j] = s;
            }
        }
        y
    }

    fn run(
        x: &[f32],
        w: &PackedWeight,
        b: Option<&[f32]>,
        y0: Option<&[f32]>,
        m: usize,
    ) -> Vec<f32> {
        let n = w.n;
        let mut y = match y0 {
            Some(y0) => y0.to_vec(),
            // NaN: a value the kernel fails to write shows up
            None => vec![f32::NAN; m * n],
        };
        // SAFETY (of the view): f32 and MaybeUninit<f32> have the same layout.
        let view = unsafe {
            std::slice::from_raw_parts_mut(
                y.as_mut_ptr().cast::<std::mem::MaybeUninit<f32>>(),
                y.len(),
            )
        };
        linear(view, x, m, w, b, y0.is_some());
        y
    }

    #[test]
    fn packed_linear_equals_the_f64_product_on_edge_shapes() {
        if !available() {
            eprintln!("no AVX-512F: the packed GEMM is not used on this CPU");
            return;
        }
        let sizes = [1, 7, 14, 15, 31, 33, 63, 200];
        let ks = [1, 7, 31, 33, 63, 200, 257, 600];
        let mut case = 0u64;
        for &m in &sizes {
            for &n in &sizes {
                for &k in &ks {
                    case += 1;
                    if (m * n * k) % 3 == 1 && k > 63 {
                        continue; // keep the run short; every size still appears
                    }
                    let x = pseudo(m * k, case);
                    let wv = pseudo(n * k, case + 1000);
                    let b = pseudo(n, case + 2000);
                    let y0 = pseudo(m * n, case + 3000);
                    let w = PackedWeight::pack(&wv, n, k);
                    for (bias, start) in [
                        (None, None),
                        (Some(&b[..]), None),
                        (None, Some(&y0[..])),
                        (Some(&b[..]), Some(&y0[..])),
                    ] {
                        let got = run(&x, &w, bias, start, m);
                        let want = naive(&x, &wv, bias, start, m, n, k);
                        let tol = 1e-5 * (k as f64).sqrt() + 1e-6;
                        for (i, (g, r)) in got.iter().zip(&want).enumerate() {
                            assert!(
                                (f64::from(*g) - r).abs() <= tol * (1.0 + r.abs()),
                                "m{m} n{n} k{k} bias {} acc {}: [{i}] {g} vs {r}",
                                bias.is_some(),
                                start.is_some()
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn k_zero_writes_the_bias_and_large_shapes_split_over_threads() {
        if !available() {
            return;
        }
        // k = 0: y is the bias (or zero) though there is nothing to multiply
        let w = PackedWeight::pack(&[], 5, 0);
        let b = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(run(&[], &w, Some(&b), None, 2), [b, b].concat());
        assert_eq!(run(&[], &w, None, None, 1), vec![0.0; 5]);
        // a product big enough to run in parallel, with few row blocks (column split)
        let (m, n, k) = (50, 333, 300);
        let x = pseudo(m * k, 1);
        let wv = pseudo(n * k, 2);
        let bv = pseudo(n, 3);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let got = pool.install(|| run(&x, &PackedWeight::pack(&wv, n, k), Some(&bv), None, m));
        let want = naive(&x, &wv, Some(&bv), None, m, n, k);
        for (g, r) in got.iter().zip(&want) {
            assert!((f64::from(*g) - r).abs() < 1e-4, "{g} vs {r}");
        }
    }
}
