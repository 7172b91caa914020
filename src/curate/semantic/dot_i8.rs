//! Approximate dot products of int8-quantized rows ([`super::quant`]): an AVX-512 VNNI kernel
//! and a scalar one that computes the very same numbers (the reference in tests, and what runs
//! where VNNI is missing, though callers then prefer the f32 GEMM).
//!
//! `approx(i, j) = (D_ij as f32 · scale_a[i]) · scale_b[j]` with `D_ij = q_a[i]·q_b[j]` the exact
//! integer dot product. The VNNI kernel multiplies A's codes + 128 (unsigned) by B's codes
//! (signed) and subtracts `128·Σq_b[j]`; the sums stay below 2³¹ for `dim ≤ 65,000`
//! (255·127·dim), checked by [`approx_dots`]. Both kernels end in the same f32 operations, so
//! they agree bit for bit.

use std::ops::Range;

use super::quant::{PANEL, QuantA, QuantB};

/// The longest rows the i32 accumulators can take: `255 · 127 · dim < 2³¹`.
pub(crate) const MAX_DIM: usize = 65_000;

/// True when this CPU runs the VNNI kernel.
pub(crate) fn vnni_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Which part of the product to compute: rows `a` of the left operand against rows `b` of
/// the right one (`b.start` a multiple of [`PANEL`]); `out[(i − a.start) · ldo + (j − b.start)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Block {
    pub a: Range<usize>,
    pub b: Range<usize>,
    /// The left row `i` and the right row `i` are the same row (a block on the diagonal of a
    /// self-product), and only `j > i` is wanted: work on pairs with `j ≤ i` is skipped where
    /// whole micro-tiles allow it (entries with `j ≤ i` are then left unwritten).
    pub upper_only: bool,
}

/// Writes `approx(i, j)` for the `block` into `out` with row stride `ldo`, with the VNNI kernel
/// where the CPU has it, else the scalar one.
///
/// Panics (a caller bug, not data) when the operands disagree on the width, the ranges fall
/// outside them, `b.start` is not panel-aligned, `ldo` is below the block's width, `out` is too
/// short or rows are longer than [`MAX_DIM`].
pub(crate) fn approx_dots(a: &QuantA, b: &QuantB, block: &Block, out: &mut [f32], ldo: usize) {
    check_shapes(a, b, block, out, ldo);
    #[cfg(target_arch = "x86_64")]
    if vnni_available() {
        // SAFETY: the features were detected just above; shapes were checked.
        unsafe { vnni::approx_dots(a, b, block, out, ldo) };
        return;
    }
    approx_dots_scalar(a, b, block, out, ldo);
}

/// The scalar kernel: the same numbers as the VNNI one, one at a time (it writes every entry,
/// `upper_only` or not).
pub(crate) fn approx_dots_scalar(
    a: &QuantA,
    b: &QuantB,
    block: &Block,
    out: &mut [f32],
    ldo: usize,
) {
    check_shapes(a, b, block, out, ldo);
    let width = a.groups * 4;
    for i in block.a.clone() {
        let arow = &a.codes[i * width..(i + 1) * width];
        for j in block.b.clone() {
            let d: i32 = arow
                .iter()
                .enumerate()
                .map(|(k, &c)| (i32::from(c) - 128) * i32::from(b.code(j, k)))
                .sum();
            out[(i - block.a.start) * ldo + j - block.b.start] =
                (d as f32 * a.scale[i]) * b.scale[j];
        }
    }
}

fn check_shapes(a: &QuantA, b: &QuantB, block: &Block, out: &[f32], ldo: usize) {
    assert_eq!(a.groups, b.groups, "operands of different widths");
    assert!(a.groups * 4 <= MAX_DIM + 3, "rows too long for i32 sums");
    assert!(
        block.a.start <= block.a.end && block.a.end <= a.rows,
        "left rows out of range"
    );
    assert!(
        block.b.start <= block.b.end && block.b.end <= b.rows,
        "right rows out of range"
    );
    assert!(
        block.b.start.is_multiple_of(PANEL),
        "right rows not panel-aligned"
    );
    assert!(
        ldo >= block.b.len(),
        "output stride below the block's width"
    );
    if !block.a.is_empty() && !block.b.is_empty() {
        assert!(
            out.len() >= (block.a.len() - 1) * ldo + block.b.len(),
            "output too short"
        );
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::{Block, PANEL, QuantA, QuantB};
    use std::arch::x86_64::*;

    /// Rows of A per micro-tile; with two panels of B that is 16 accumulators, 2 B vectors and
    /// a broadcast: 19 of the 32 vector registers.
    const MR: usize = 8;

    /// Loop order: a pair of B panels (2 × groups × 64 bytes, 24 KiB at dim 768) stays in L1
    /// while every row block of A streams past it from L2.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn approx_dots(
        a: &QuantA,
        b: &QuantB,
        block: &Block,
        out: &mut [f32],
        ldo: usize,
    ) {
        let (p_start, p_end) = (block.b.start / PANEL, block.b.end.div_ceil(PANEL));
        let mut p = p_start;
        while p < p_end {
            let np = (p_end - p).min(2);
            let last_col = ((p + np) * PANEL).min(block.b.end) - 1;
            let mut r = block.a.start;
            while r < block.a.end {
                let mr = (block.a.end - r).min(MR);
                // Every pair here has j ≤ last_col < r ≤ i: below the diagonal, not wanted.
                if block.upper_only && last_col < r {
                    break;
                }
                // SAFETY: rows r..r + mr and panels p..p + np exist; the caller checked `out`.
                unsafe { micro_tile(a, b, block, (r, mr), (p, np), out, ldo) };
                r += mr;
            }
            p += np;
        }
    }

    /// `mr ≤ MR` rows of A from `r0` against `np ≤ 2` panels of B from `p0`. Short edges reuse
    /// the last valid row or panel (loads stay in bounds; those results are not stored), so one
    /// fully unrolled body serves every tile.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn micro_tile(
        a: &QuantA,
        b: &QuantB,
        block: &Block,
        (r0, mr): (usize, usize),
        (p0, np): (usize, usize),
        out: &mut [f32],
        ldo: usize,
    ) {
        let groups = a.groups;
        let width = groups * 4;
        // SAFETY (whole body): rows r0..r0+mr and panels p0..p0+np exist, so every pointer
        // below stays inside `a.codes` (rows × width bytes) and `b.codes` (panels × groups ×
        // 64 bytes); stores are masked to the block's columns, in rows of the block.
        unsafe {
            let arow: [*const u8; MR] =
                std::array::from_fn(|i| a.codes.as_ptr().add((r0 + i.min(mr - 1)) * width));
            let bp: [*const u8; 2] =
                std::array::from_fn(|h| b.codes.as_ptr().add((p0 + h.min(np - 1)) * groups * 64));
            let mut acc = [[_mm512_setzero_si512(); 2]; MR];
            for g in 0..groups {
                let b0 = _mm512_loadu_si512(bp[0].add(g * 64).cast());
                let b1 = _mm512_loadu_si512(bp[1].add(g * 64).cast());
                for i in 0..MR {
                    let four = arow[i].add(g * 4).cast::<i32>().read_unaligned();
                    let av = _mm512_set1_epi32(four);
                    acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], av, b0);
                    acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], av, b1);
                }
            }
            for h in 0..np {
                let col = (p0 + h) * PANEL;
                let valid = (block.b.end - col).min(PANEL);
                let mask: __mmask16 = (((1u32 << valid) - 1) & 0xFFFF) as u16;
                let offset =
                    _mm512_slli_epi32(_mm512_loadu_si512(b.sum.as_ptr().add(col).cast()), 7);
                let scale_b = _mm512_loadu_ps(b.scale.as_ptr().add(col));
                let out_col = col - block.b.start;
                for (i, acc) in acc.iter().enumerate().take(mr) {
                    let d = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[h], offset));
                    let v =
                        _mm512_mul_ps(_mm512_mul_ps(d, _mm512_set1_ps(a.scale[r0 + i])), scale_b);
                    let at = (r0 + i - block.a.start) * ldo + out_col;
                    _mm512_mask_storeu_ps(out.as_mut_ptr().add(at), mask, v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::pack::rng::SplitMix64::new(seed);
        (0..n * dim)
            .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
            .collect()
    }

    fn operands(na: usize, nb: usize, dim: usize) -> (QuantA, QuantB) {
        let x = random_rows(na, dim, 1);
        let y = random_rows(nb, dim, 2);
        let mut a = QuantA::default();
        a.fill(dim, x.chunks_exact(dim));
        let mut b = QuantB::default();
        b.fill(dim, y.chunks_exact(dim));
        (a, b)
    }

    fn full(a: &QuantA, b: &QuantB) -> Block {
        Block {
            a: 0..a.rows,
            b: 0..b.rows,
            upper_only: false,
        }
    }

    #[test]
    fn vnni_equals_scalar_bit_for_bit_on_every_edge_shape() {
        if !vnni_available() {
            eprintln!("no AVX-512 VNNI on this CPU: the dispatcher runs the scalar kernel");
        }
        // Row counts around the micro-tile (8) and panel (16, 32) edges; odd dims pad.
        for &(na, nb, dim) in &[
            (1, 1, 1),
            (7, 15, 5),
            (8, 16, 64),
            (9, 17, 97),
            (23, 33, 768),
            (16, 48, 130),
        ] {
            let (a, b) = operands(na, nb, dim);
            let ldo = nb + 3;
            let mut fast = vec![f32::NAN; na * ldo];
            let mut slow = vec![f32::NAN; na * ldo];
            approx_dots(&a, &b, &full(&a, &b), &mut fast, ldo);
            approx_dots_scalar(&a, &b, &full(&a, &b), &mut slow, ldo);
            for i in 0..na {
                for j in 0..ldo {
                    let (f, s) = (fast[i * ldo + j], slow[i * ldo + j]);
                    if j < nb {
                        assert_eq!(f.to_bits(), s.to_bits(), "{na}x{nb}x{dim} at ({i},{j})");
                    } else {
                        assert!(f.is_nan(), "wrote past the columns at ({i},{j})");
                    }
                }
            }
        }
    }

    #[test]
    fn sub_blocks_and_the_upper_triangle_match_the_full_product() {
        let (a, b) = operands(70, 90, 40);
        let mut whole = vec![0.0; 70 * 90];
        approx_dots(&a, &b, &full(&a, &b), &mut whole, 90);
        // An inner block: rows 13..61 against columns 32..85 (panel-aligned start).
        let block = Block {
            a: 13..61,
            b: 32..85,
            upper_only: false,
        };
        let mut part = vec![f32::NAN; 48 * 53];
        approx_dots(&a, &b, &block, &mut part, 53);
        for i in 13..61 {
            for j in 32..85 {
                assert_eq!(part[(i - 13) * 53 + j - 32], whole[i * 90 + j], "({i},{j})");
            }
        }
        // Upper only: every j > i is written and right; some j ≤ i are skipped (NaN stays).
        let upper = Block {
            a: 0..70,
            b: 0..90,
            upper_only: true,
        };
        let mut tri = vec![f32::NAN; 70 * 90];
        approx_dots(&a, &b, &upper, &mut tri, 90);
        for i in 0..70 {
            for j in i + 1..90 {
                assert_eq!(tri[i * 90 + j], whole[i * 90 + j], "({i},{j})");
            }
        }
        if vnni_available() {
            let skipped = tri.iter().filter(|v| v.is_nan()).count();
            assert!(skipped > 70 * 70 / 4, "only {skipped} entries skipped");
        }
    }

    #[test]
    fn approximations_stay_within_the_bound() {
        use super::super::quant::ScreenBound;
        let dim = 200;
        let x = random_rows(30, dim, 1);
        let y = random_rows(40, dim, 2);
        let (a, b) = operands(30, 40, dim);
        let bound = ScreenBound::between(a.extremes, b.extremes).0;
        let mut out = vec![0.0; 30 * 40];
        approx_dots(&a, &b, &full(&a, &b), &mut out, 40);
        let mut worst = 0.0f64;
        for i in 0..30 {
            for j in 0..40 {
                let exact: f64 = x[i * dim..(i + 1) * dim]
                    .iter()
                    .zip(&y[j * dim..(j + 1) * dim])
                    .map(|(&p, &q)| f64::from(p) * f64::from(q))
                    .sum();
                worst = worst.max((exact - f64::from(out[i * 40 + j])).abs());
            }
        }
        assert!(worst <= bound, "error {worst} over bound {bound}");
        assert!(worst > 0.0, "int8 codes cannot be exact on random rows");
    }
}
