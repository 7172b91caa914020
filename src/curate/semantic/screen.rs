//! Screening: approximate dot products for a whole tile of row pairs plus one number that
//! bounds their error, so that callers can skip every pair that cannot matter and recompute the
//! rest exactly in f64. Two kernels give the approximations:
//!
//! - [`Kernel::Int8`]: rows quantized to int8 ([`super::quant`]) and multiplied with AVX-512
//!   VNNI ([`super::dot_i8`]), four times the multiply–adds per instruction of f32;
//! - [`Kernel::F32`]: f32 GEMM (the `gemm` crate), for CPUs without VNNI.
//!
//! Both are screens only: results are decided by the exact re-check, so they do not depend on
//! which kernel ran. `VLMPREP_SEMANTIC_SCREEN=f32|int8` overrides the choice (for measuring one
//! against the other; `int8` without VNNI runs a slow scalar kernel).

pub(crate) use super::dot_i8::Block;
use super::dot_i8::{MAX_DIM, approx_dots, vnni_available};
use super::quant::{QuantA, QuantB, ScreenBound};
use super::{dot_tile, gemm_slack, row_problem};

/// Which kernel computes the approximate dot products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// Int8 codes with a per-row scale and a measured error bound.
    Int8,
    /// f32 GEMM with the classic rounding bound.
    F32,
}

impl Kernel {
    /// Int8 where the CPU has AVX-512 VNNI (and rows are short enough for i32 sums), else
    /// f32; `VLMPREP_SEMANTIC_SCREEN` overrides.
    pub fn for_dim(dim: usize) -> Self {
        match std::env::var("VLMPREP_SEMANTIC_SCREEN").as_deref() {
            Ok("f32") => return Kernel::F32,
            Ok("int8") if dim <= MAX_DIM => return Kernel::Int8,
            _ => {}
        }
        if vnni_available() && dim <= MAX_DIM {
            Kernel::Int8
        } else {
            Kernel::F32
        }
    }
}

/// One operand of a screened product: the rows gathered (f32) or quantized (int8), reusing
/// its buffers from one tile to the next.
#[derive(Debug, Default)]
pub(crate) struct Operand {
    rows: usize,
    dim: usize,
    f32_rows: Vec<f32>,
    left: QuantA,
    right: QuantB,
    kernel: Option<(Kernel, Side)>,
    /// Left operands only: the first row (in fill order) that is not finite or not of unit
    /// norm, and what is wrong with it.
    problem: Option<(usize, String)>,
}

/// Which side of the product an operand is prepared for (the int8 layouts differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Left,
    Right,
}

impl Operand {
    /// Prepares the contiguous `rows` (each `dim` long) as an int8 left operand, quantized by
    /// the rayon pool (k-means prepares its whole sample once this way).
    pub fn fill_left_int8_par(&mut self, dim: usize, rows: &[f32]) {
        self.rows = rows.len() / dim;
        self.dim = dim;
        self.kernel = Some((Kernel::Int8, Side::Left));
        self.left.fill_par(dim, rows);
        self.problem = self.left.problem.clone();
    }

    /// Prepares, as the right operand, the rows that `left` holds as the left one (for the
    /// diagonal block of a self-product: int8 codes are re-laid out, not recomputed).
    pub fn fill_right_from_left(&mut self, left: &Operand) {
        let (kernel, side) = left.kernel.expect("left operand not prepared");
        assert_eq!(side, Side::Left, "not a left operand");
        self.rows = left.rows;
        self.dim = left.dim;
        self.kernel = Some((kernel, Side::Right));
        match kernel {
            Kernel::F32 => {
                self.f32_rows.clear();
                self.f32_rows.extend_from_slice(&left.f32_rows);
            }
            Kernel::Int8 => self.right.fill_from_left(&left.left),
        }
    }

    /// For a left operand: the first row (in fill order) that is not finite or not of unit
    /// norm, and what is wrong with it. Callers that rely on this instead of checking the
    /// input up front must prepare every row as a left operand once.
    pub fn problem(&self) -> Option<&(usize, String)> {
        self.problem.as_ref()
    }

    /// Prepares `rows` (each `dim` long) for `kernel` on `side`.
    pub fn fill<'r>(
        &mut self,
        kernel: Kernel,
        side: Side,
        dim: usize,
        rows: impl ExactSizeIterator<Item = &'r [f32]>,
    ) {
        self.rows = rows.len();
        self.dim = dim;
        self.kernel = Some((kernel, side));
        self.problem = None;
        match (kernel, side) {
            (Kernel::F32, _) => {
                self.f32_rows.clear();
                for (i, r) in rows.enumerate() {
                    if side == Side::Left && self.problem.is_none() {
                        self.problem = row_problem(r).map(|p| (i, p));
                    }
                    self.f32_rows.extend_from_slice(r);
                }
            }
            (Kernel::Int8, Side::Left) => {
                self.left.fill(dim, rows);
                self.problem = self.left.problem.clone();
            }
            (Kernel::Int8, Side::Right) => self.right.fill(dim, rows),
        }
    }
}

/// Fills `out` (resized to `block.a.len() × block.b.len()`, row-major) with approximate dot
/// products of rows `block.a` of `left` and `block.b` of `right` (`block.b.start` a multiple
/// of 16) and returns a bound on `|exact − approximate|` for every entry. With
/// `block.upper_only`, entries with `j ≤ i` may be left as they were (see [`Block`]).
///
/// Panics (a caller bug) when the operands were prepared for other kernels, sides or dims.
pub(crate) fn approx_tile(
    left: &Operand,
    right: &Operand,
    block: &Block,
    out: &mut Vec<f32>,
) -> f64 {
    let (lk, rk) = (left.kernel, right.kernel);
    assert!(
        matches!((lk, rk), (Some((a, Side::Left)), Some((b, Side::Right))) if a == b),
        "operands prepared for different kernels or sides"
    );
    assert_eq!(left.dim, right.dim, "operands of different dims");
    let (ma, mb) = (block.a.len(), block.b.len());
    // Every entry is overwritten (or, with `upper_only`, not wanted): no need to zero them.
    out.resize(ma * mb, 0.0);
    out.truncate(ma * mb);
    if out.is_empty() {
        return 0.0;
    }
    match lk.map(|k| k.0) {
        Some(Kernel::Int8) => {
            approx_dots(&left.left, &right.right, block, out, mb);
            ScreenBound::between(left.left.extremes, right.right.extremes).0
        }
        _ => {
            let dim = left.dim;
            let a = &left.f32_rows[block.a.start * dim..block.a.end * dim];
            let b = &right.f32_rows[block.b.start * dim..block.b.end * dim];
            dot_tile(a, b, dim, out);
            f64::from(gemm_slack(dim))
        }
    }
}

/// The lowest approximate value that can still belong to an exact value ≥ `min`, given an
/// error `bound`: computed in f64 and stepped down twice so f32 rounding cannot lose a pair.
pub(crate) fn screen_floor(min: f32, bound: f64) -> f32 {
    ((f64::from(min) - bound) as f32).next_down().next_down()
}

/// Calls `f(y)` for every `y` (ascending) with `values[y] ≥ floor`. Sixteen values are tested
/// at once and skipped together, since nearly all fall below the floor.
pub(crate) fn at_least(values: &[f32], floor: f32, mut f: impl FnMut(usize)) {
    const LANES: usize = 16;
    for (c, chunk) in values.chunks(LANES).enumerate() {
        if chunk.iter().fold(false, |any, &v| any | (v >= floor)) {
            for (l, &v) in chunk.iter().enumerate() {
                if v >= floor {
                    f(c * LANES + l);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curate::semantic::kmeans::nearest;
    use crate::curate::semantic::pairs::duplicate_pairs_screened_by;
    use crate::curate::semantic::synthetic::{SyntheticSpec, generate};
    use crate::curate::semantic::{Centroids, SemanticParams, dot_f64};

    #[test]
    fn both_kernels_give_the_exact_argmax_and_the_same_pairs() {
        let dim = 97; // not a multiple of 4 or 16: padding everywhere
        let s = generate(&SyntheticSpec {
            rows: 2500,
            dim,
            topics: 10,
            planted: 200,
            min_cosine: 0.9,
            max_cosine: 0.999,
            topic_weight: 0.6,
            seed: 5,
        })
        .unwrap();
        let params = SemanticParams {
            clusters: 10,
            fit_sample: 0,
            iterations: 5,
            seed: 1,
            eps: 0.1,
        };
        let c = Centroids::fit(&s.data, dim, &params).unwrap();
        let int8 = nearest(&s.data, dim, &c.data, Kernel::Int8, None, true).0;
        let f32 = nearest(&s.data, dim, &c.data, Kernel::F32, None, true).0;
        let mut whole = Operand::default();
        whole.fill(Kernel::Int8, Side::Left, dim, s.data.chunks_exact(dim));
        let prepared = nearest(&s.data, dim, &c.data, Kernel::Int8, Some(&whole), true).0;
        assert_eq!(int8, f32);
        assert_eq!(int8, prepared);
        // The exact argmax in f64, first on ties, and its value.
        for (i, x) in s.data.chunks_exact(dim).enumerate() {
            let sims: Vec<f64> = c.data.chunks_exact(dim).map(|y| dot_f64(x, y)).collect();
            let best = (0..sims.len()).fold(0, |b, j| if sims[j] > sims[b] { j } else { b });
            assert_eq!(int8.cluster[i], best as u32, "row {i}");
            assert_eq!(int8.centrality[i], sims[best] as f32, "row {i}");
        }
        // Pairs: one cluster for all (many candidates), a threshold that admits unplanted pairs.
        let one = crate::curate::semantic::Assignment {
            cluster: vec![0; 2500],
            centrality: vec![1.0; 2500],
        };
        let a = duplicate_pairs_screened_by(&s.data, dim, &one, 0.5, 300, Kernel::Int8).unwrap();
        let b = duplicate_pairs_screened_by(&s.data, dim, &one, 0.5, 1000, Kernel::F32).unwrap();
        assert!(a.len() > 1000, "{} pairs", a.len());
        assert_eq!(a, b);
    }

    #[test]
    fn at_least_reports_every_value_reaching_the_floor_in_order() {
        let v: Vec<f32> = (0..50).map(|i| ((i * 37) % 50) as f32).collect();
        let mut got = Vec::new();
        at_least(&v, 40.0, |y| got.push(y));
        let want: Vec<usize> = (0..50).filter(|&y| v[y] >= 40.0).collect();
        assert_eq!(got, want);
        assert_eq!(want.len(), 10);
        assert!(screen_floor(0.9, 0.01) < 0.89);
    }
}
