//! Rows quantized to int8 for screening dot products, with a rigorous bound on the error.
//!
//! The semantic tier needs, for huge numbers of row pairs, only the answer to "could this
//! cosine reach the threshold (or the row's best)?"; the few candidates are then recomputed
//! exactly in f64. Int8 dot products answer that question four times faster than f32 ones on
//! CPUs with AVX-512 VNNI (one `vpdpbusd` does 64 multiply–adds where an FMA does 16), so long
//! as the screen knows how wrong it can be:
//!
//! Each row `x` gets its own scale `s = max|x| / 127` and codes `q = round(x / s)`, so
//! `x̂ = s·q` and `e = x − x̂` with `‖e‖` measured exactly (in f64) per row. For two rows,
//! `x·y − x̂·ŷ = e_x·y + x̂·e_y`, hence `|x·y − x̂·ŷ| ≤ ‖e_x‖·‖y‖ + (‖x‖ + ‖e_x‖)·‖e_y‖`
//! (Cauchy–Schwarz). `q_x·q_y` is an exact integer; turning it into `s_x·s_y·(q_x·q_y)` in f32
//! costs three roundings, each at most `2⁻²⁴` of `|x̂·ŷ| ≤ ‖x̂‖·‖ŷ‖`. [`ScreenBound`] adds
//! the three terms up, with the largest error and norm of each side, so one number bounds a
//! whole tile of approximate dot products.
//!
//! Layouts are those of the VNNI kernel in [`super::dot_i8`]: the left operand ([`QuantA`]) is
//! row-major with codes offset by 128 (the instruction multiplies unsigned by signed bytes);
//! the right operand ([`QuantB`]) is cut into panels of [`PANEL`] rows, and inside a panel the
//! four consecutive codes of each row sit side by side for each group of four columns, so one
//! 64-byte load feeds 16 rows × 4 columns.

use super::{NORM_TOLERANCE, row_problem};

/// Rows per panel of the right operand: one 512-bit vector of i32 results.
pub(crate) const PANEL: usize = 16;

/// Largest code magnitude: codes lie in `-127..=127`, so the +128 offset fits a u8.
const CODE_MAX: f32 = 127.0;

/// Scale, error norm and norm of one quantized row.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RowQuant {
    scale: f32,
    /// `‖x − scale·q‖₂`, rounded up.
    err: f32,
    /// `‖x‖₂`, rounded up.
    norm: f32,
}

/// Quantizes `x` into `out` (same length) as `code + offset` bytes (offset 128 for the left
/// operand, 0 for the right one, whose bytes are then two's-complement codes). Never fails: a
/// zero row gets scale 0 and codes 0. The AVX-512 build runs where the CPU has it (the int8
/// screen only runs on such CPUs; the portable one is the tests' reference and the fallback).
fn quantize_row(x: &[f32], out: &mut [u8], offset: u8) -> RowQuant {
    debug_assert_eq!(x.len(), out.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the feature was just detected; `out` is as long as `x`.
        return unsafe { avx512::quantize_row(x, out, offset) };
    }
    quantize_row_portable(x, out, offset)
}

/// Scale and its inverse for a row whose largest magnitude is `max` (0 and 0 when there is
/// nothing to scale).
fn scales(max: f32) -> (f32, f32) {
    if max > 0.0 && max.is_finite() {
        (max / CODE_MAX, CODE_MAX / max)
    } else {
        (0.0, 0.0)
    }
}

fn quantize_row_portable(x: &[f32], out: &mut [u8], offset: u8) -> RowQuant {
    let max = x.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
    let (scale, inv) = scales(max);
    let s = f64::from(scale);
    let (mut e2, mut n2) = (0.0f64, 0.0f64);
    for (o, &v) in out.iter_mut().zip(x) {
        let q = ((v * inv).round_ties_even()).clamp(-CODE_MAX, CODE_MAX);
        *o = (q as i32 + i32::from(offset)) as u8;
        // The error is measured from the code actually chosen. f32 × small integer is exact
        // in f64, and so is the difference.
        let v = f64::from(v);
        let e = v - s * f64::from(q);
        e2 += e * e;
        n2 += v * v;
    }
    RowQuant {
        scale,
        err: round_up(e2.sqrt()),
        norm: round_up(n2.sqrt()),
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{CODE_MAX, RowQuant, round_up_sum, scales};
    use std::arch::x86_64::*;

    /// The portable quantizer's work, 16 values per step (the last step masked). The residual
    /// `v − s·q` comes from one fused multiply–add (relative error ≤ 2⁻²⁴); squares are summed
    /// in 16 f32 lanes, whose rounding [`round_up_sum`] covers.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn quantize_row(x: &[f32], out: &mut [u8], offset: u8) -> RowQuant {
        let n = x.len();
        let steps = n.div_ceil(16);
        let mask_of = |i: usize| -> __mmask16 {
            let left = (n - i * 16).min(16);
            (((1u32 << left) - 1) & 0xFFFF) as u16
        };
        // SAFETY (whole body): step i touches x[16i..16i+16] and out[16i..16i+16] under a
        // mask that stops at n; out.len() == x.len() (checked by the caller).
        unsafe {
            let load = |i: usize| _mm512_maskz_loadu_ps(mask_of(i), x.as_ptr().add(i * 16));
            let mut m = _mm512_setzero_ps();
            for i in 0..steps {
                m = _mm512_max_ps(m, _mm512_abs_ps(load(i)));
            }
            let (scale, inv) = scales(_mm512_reduce_max_ps(m));
            let (vs, vinv) = (_mm512_set1_ps(scale), _mm512_set1_ps(inv));
            let lim = CODE_MAX as i32;
            let (lo, hi) = (_mm512_set1_epi32(-lim), _mm512_set1_epi32(lim));
            let off = _mm512_set1_epi32(i32::from(offset));
            let (mut e2, mut n2) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            for i in 0..steps {
                let v = load(i);
                let q = _mm512_cvtps_epi32(_mm512_mul_ps(v, vinv));
                let q = _mm512_min_epi32(_mm512_max_epi32(q, lo), hi);
                let bytes = _mm512_add_epi32(q, off);
                _mm512_mask_cvtepi32_storeu_epi8(
                    out.as_mut_ptr().add(i * 16).cast(),
                    mask_of(i),
                    bytes,
                );
                let e = _mm512_fnmadd_ps(vs, _mm512_cvtepi32_ps(q), v);
                e2 = _mm512_fmadd_ps(e, e, e2);
                n2 = _mm512_fmadd_ps(v, v, n2);
            }
            let sum = |acc: __m512| {
                let mut lanes = [0.0f32; 16];
                _mm512_storeu_ps(lanes.as_mut_ptr(), acc);
                lanes.iter().map(|&l| f64::from(l)).sum::<f64>()
            };
            RowQuant {
                scale,
                err: round_up_sum(sum(e2), steps),
                norm: round_up_sum(sum(n2), steps),
            }
        }
    }
}

/// The square root of a sum of squares that f32 lanes added up in `steps` terms each, rounded
/// up: the lanes' rounding is at most `steps·u` relative (u = 2⁻²⁴), the squares' own (and the
/// fused residual's) a few u more, the f64 reduction of the lanes negligible.
fn round_up_sum(sum_sq: f64, steps: usize) -> f32 {
    let u = f64::from(f32::EPSILON) / 2.0;
    round_up((sum_sq * (1.0 + (steps as f64 + 4.0) * u)).sqrt())
}

/// `v` as an f32 that is certainly ≥ the real value: a relative margin far above the f64 sum's
/// and the conversion's rounding.
fn round_up(v: f64) -> f32 {
    ((v * (1.0 + 1e-6)) as f32).next_up()
}

/// The largest errors and norms of a quantized set of rows.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Extremes {
    /// Largest `‖x − x̂‖` of the set.
    pub max_err: f32,
    /// Largest `‖x‖` of the set.
    pub max_norm: f32,
}

impl Extremes {
    fn include(&mut self, q: RowQuant) {
        self.max_err = self.max_err.max(q.err);
        self.max_norm = self.max_norm.max(q.norm);
    }
}

/// A bound on `|x·y − approx(x, y)|` for every row `x` of one set and `y` of another, where
/// `approx` is what [`super::dot_i8::approx_dots`] returns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ScreenBound(pub f64);

impl ScreenBound {
    /// The bound for rows from `a` against rows from `b` (see the module docs for the terms).
    pub fn between(a: Extremes, b: Extremes) -> Self {
        let (ea, na) = (f64::from(a.max_err), f64::from(a.max_norm));
        let (eb, nb) = (f64::from(b.max_err), f64::from(b.max_norm));
        let quantization = ea * nb + (na + ea) * eb;
        // Three f32 roundings (integer to f32 above 2²⁴, two products) of |x̂·ŷ| ≤ ‖x̂‖‖ŷ‖.
        let rounding = 4.0 * f64::from(f32::EPSILON / 2.0) * (na + ea) * (nb + eb);
        Self(quantization + rounding)
    }
}

/// The rows of `rows`, each handed out after the next one's cache lines were requested: rows
/// gathered by index (a cluster's members) lie anywhere in gigabytes of embeddings, and without
/// this the quantizer waits on memory at the start of every row.
fn prefetching<'r>(rows: impl Iterator<Item = &'r [f32]>) -> impl Iterator<Item = &'r [f32]> {
    let mut rows = rows.peekable();
    std::iter::from_fn(move || {
        let row = rows.next()?;
        if let Some(next) = rows.peek() {
            prefetch(next);
        }
        Some(row)
    })
}

/// Asks for every cache line of `x` (a hint; nothing happens where there is no such
/// instruction).
#[inline]
pub(crate) fn prefetch(x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in x.chunks(16) {
        // SAFETY: a prefetch never faults and reads nothing architecturally; the pointer is
        // inside `x`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// The left operand: `rows × 4·groups` codes + 128, row-major, padded with 128 (code 0).
#[derive(Debug, Default)]
pub(crate) struct QuantA {
    pub rows: usize,
    /// Groups of four columns: `dim.div_ceil(4)`.
    pub groups: usize,
    pub codes: Vec<u8>,
    pub scale: Vec<f32>,
    pub extremes: Extremes,
    /// The first row (index in fill order) that is not finite or not of unit norm, with what
    /// is wrong ([`super::row_problem`]'s words): the norm check of the inputs comes free with
    /// the quantization, which reads every row anyway.
    pub problem: Option<(usize, String)>,
}

/// The right operand, in panels of [`PANEL`] rows (the last one padded with zero rows): the
/// 64 bytes at `(panel · groups + g) · 64` hold columns `4g..4g + 4` of the panel's 16 rows,
/// row after row. `sum` and `scale` are padded to whole panels with zeros.
#[derive(Debug, Default)]
pub(crate) struct QuantB {
    pub rows: usize,
    pub groups: usize,
    /// Two's-complement codes (read as i8).
    pub codes: Vec<u8>,
    /// Sum of each row's codes: the correction for A's +128 offset.
    pub sum: Vec<i32>,
    pub scale: Vec<f32>,
    pub extremes: Extremes,
    /// One row's codes before they are spread over the panel (reused from tile to tile).
    scratch: Vec<u8>,
}

impl QuantA {
    /// Quantizes the given rows (each `dim` long) into this buffer, reusing its memory.
    pub fn fill<'r>(&mut self, dim: usize, rows: impl ExactSizeIterator<Item = &'r [f32]>) {
        let width = self.reset(dim, rows.len());
        let mut codes = std::mem::take(&mut self.codes);
        for (i, (x, out)) in prefetching(rows)
            .zip(codes.chunks_exact_mut(width))
            .enumerate()
        {
            let q = quantize_row(x, &mut out[..dim], 128);
            self.record(i, x, q);
        }
        self.codes = codes;
    }

    /// [`QuantA::fill`] for `rows.len() / dim` contiguous rows, quantized by the rayon pool (a
    /// whole k-means sample at once).
    pub fn fill_par(&mut self, dim: usize, rows: &[f32]) {
        use rayon::prelude::*;
        let width = self.reset(dim, rows.len() / dim);
        let quants: Vec<RowQuant> = self
            .codes
            .par_chunks_mut(width)
            .zip(rows.par_chunks_exact(dim))
            .map(|(out, x)| quantize_row(x, &mut out[..dim], 128))
            .collect();
        for (i, (x, q)) in rows.chunks_exact(dim).zip(quants).enumerate() {
            self.record(i, x, q);
        }
    }

    /// Empties the buffer for `rows` rows of `dim` (codes set to the padding value) and returns
    /// the padded row width.
    fn reset(&mut self, dim: usize, rows: usize) -> usize {
        self.groups = dim.div_ceil(4);
        self.rows = rows;
        let width = self.groups * 4;
        self.codes.clear();
        self.codes.resize(rows * width, 128);
        self.scale.clear();
        self.extremes = Extremes::default();
        self.problem = None;
        width
    }

    /// Keeps row `i`'s scale, widens the extremes and notes the first row with a problem.
    fn record(&mut self, i: usize, x: &[f32], q: RowQuant) {
        self.scale.push(q.scale);
        self.extremes.include(q);
        // The measured norm is a slight overestimate: a row it flags is confirmed by the exact
        // check before it counts (NaN and ∞ norms fail the test too).
        let within = (q.norm - 1.0).abs() <= NORM_TOLERANCE;
        if self.problem.is_none() && !within {
            self.problem = row_problem(x).map(|p| (i, p));
        }
    }
}

impl QuantB {
    /// Quantizes the given rows (each `dim` long) into this buffer, reusing its memory.
    pub fn fill<'r>(&mut self, dim: usize, rows: impl ExactSizeIterator<Item = &'r [f32]>) {
        let groups = self.reset(dim, rows.len());
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.resize(dim, 0);
        for (j, x) in prefetching(rows).enumerate() {
            let q = quantize_row(x, &mut scratch, 0);
            let panel = &mut self.codes[j / PANEL * groups * 64..][..groups * 64];
            let lane = (j % PANEL) * 4;
            for (g, four) in scratch.chunks(4).enumerate() {
                panel[g * 64 + lane..][..four.len()].copy_from_slice(four);
            }
            self.sum[j] = scratch.iter().map(|&c| i32::from(c as i8)).sum();
            self.scale[j] = q.scale;
            self.extremes.include(q);
        }
        self.scratch = scratch;
    }

    /// Empties the buffer for `rows` rows of `dim` (zero codes, sums and scales, padded to
    /// whole panels) and returns the number of column groups.
    fn reset(&mut self, dim: usize, rows: usize) -> usize {
        self.groups = dim.div_ceil(4);
        self.rows = rows;
        let padded = self.panels() * PANEL;
        self.codes.clear();
        self.codes.resize(padded * self.groups * 4, 0);
        self.sum.clear();
        self.sum.resize(padded, 0);
        self.scale.clear();
        self.scale.resize(padded, 0.0);
        self.extremes = Extremes::default();
        self.groups
    }

    /// The rows of `left` laid out as a right operand, from its codes (no f32 row is read
    /// again and none is quantized twice; same codes, scales and extremes).
    pub fn fill_from_left(&mut self, left: &QuantA) {
        let groups = self.reset(left.groups * 4, left.rows);
        let width = groups * 4;
        self.scale[..left.rows].copy_from_slice(&left.scale);
        self.extremes = left.extremes;
        for (j, row) in left.codes.chunks_exact(width).enumerate() {
            let panel = &mut self.codes[j / PANEL * groups * 64..][..groups * 64];
            let lane = (j % PANEL) * 4;
            let mut sum = 0i32;
            for (g, four) in row.chunks_exact(4).enumerate() {
                // Left bytes are code + 128: flipping the top bit gives the code's two's
                // complement byte. Padding columns (128) become 0, as in `fill`.
                let dst = &mut panel[g * 64 + lane..][..4];
                for (d, &c) in dst.iter_mut().zip(four) {
                    *d = c ^ 0x80;
                    sum += i32::from(c) - 128;
                }
            }
            self.sum[j] = sum;
        }
    }

    /// Number of panels: `rows.div_ceil(PANEL)`.
    pub fn panels(&self) -> usize {
        self.rows.div_ceil(PANEL)
    }

    /// The code of row `j`, column `k` (for the scalar kernel and tests).
    pub fn code(&self, j: usize, k: usize) -> i8 {
        self.codes[(j / PANEL * self.groups + k / 4) * 64 + (j % PANEL) * 4 + k % 4] as i8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curate::semantic::normalize_rows;

    fn rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::pack::rng::SplitMix64::new(seed);
        let mut v: Vec<f32> = (0..n * dim)
            .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
            .collect();
        normalize_rows(&mut v, dim).unwrap();
        v
    }

    #[test]
    fn codes_reconstruct_rows_within_the_measured_error() {
        let dim = 37;
        let x = rows(20, dim, 1);
        let mut a = QuantA::default();
        a.fill(dim, x.chunks_exact(dim));
        let mut b = QuantB::default();
        b.fill(dim, x.chunks_exact(dim));
        assert_eq!((a.groups, b.panels()), (10, 2));
        for (i, xi) in x.chunks_exact(dim).enumerate() {
            let s = f64::from(a.scale[i]);
            let mut e2 = 0.0;
            for (k, &v) in xi.iter().enumerate() {
                let qa = i32::from(a.codes[i * 40 + k]) - 128;
                assert_eq!(qa, i32::from(b.code(i, k)), "row {i} col {k}");
                assert!(qa.abs() <= 127);
                e2 += (f64::from(v) - s * f64::from(qa)).powi(2);
            }
            // Rounding to the nearest code: at most half a step per value.
            assert!(e2.sqrt() <= s * 0.5 * (dim as f64).sqrt() + 1e-9);
            assert!(e2.sqrt() <= f64::from(a.extremes.max_err));
            assert_eq!(a.scale[i], b.scale[i]);
            assert_eq!(
                b.sum[i],
                (0..dim).map(|k| i32::from(b.code(i, k))).sum::<i32>()
            );
        }
        let mut repacked = QuantB::default();
        repacked.fill_from_left(&a);
        assert_eq!(repacked.codes, b.codes);
        assert_eq!(
            (repacked.sum.clone(), repacked.scale.clone()),
            (b.sum.clone(), b.scale.clone())
        );
        assert_eq!(repacked.extremes, a.extremes);
        // Padding: A columns 37..40 are code 0 (128), B's rows 20..32 are all zero.
        assert!(a.codes[37..40].iter().all(|&c| c == 128));
        assert!((0..dim).all(|k| b.code(25, k) == 0));
        assert_eq!(b.sum[25], 0);
        assert!((a.extremes.max_norm - 1.0).abs() < 1e-5);
    }

    #[test]
    fn zero_and_tiny_rows_do_not_break_the_scales() {
        let mut a = QuantA::default();
        let zero = [0.0f32; 8];
        let tiny = [1e-30f32, -1e-30, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        a.fill(8, [&zero[..], &tiny[..]].into_iter());
        assert_eq!(a.scale[0], 0.0);
        assert!(a.codes[..8].iter().all(|&c| c == 128));
        assert!(a.scale[1] > 0.0);
        assert_eq!(i32::from(a.codes[8]) - 128, 127);
        assert_eq!(i32::from(a.codes[9]) - 128, -127);
    }
}
