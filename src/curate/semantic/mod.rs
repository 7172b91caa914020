//! The semantic dedup tier (SemDeDup, Abbas et al. 2023): spherical k-means over L2-normalized
//! embeddings, then, inside each cluster, every pair whose cosine similarity is at least
//! `1 − eps`. Pairs become duplicate groups through [`crate::curate::groups`].
//!
//! - [`kmeans`]: [`Centroids::fit`] on a deterministic sample, [`Centroids::assign`] for all rows;
//! - [`pairs`]: [`duplicate_pairs`] within clusters and [`cross_pairs`] against an earlier corpus,
//!   both blocked into GEMM tiles so memory stays bounded whatever a cluster's size;
//! - [`kept_fraction_by_eps`]: the fraction kept at several thresholds from one pair list;
//! - [`synthetic`]: embeddings with planted near-duplicates, for tests and benchmarks.
//!
//! Inputs are row-major `&[f32]` of `n × dim` values whose rows are L2-normalized (call
//! [`normalize_rows`] first if they are not). Every function checks this and returns
//! [`Error::Semantic`] naming the row, never panics, on a zero `dim`, a length that is not a
//! multiple of `dim`, a non-finite value or a row whose norm is not 1 (within
//! [`NORM_TOLERANCE`]).

mod dot_i8;
pub mod kmeans;
pub mod pairs;
mod quant;
mod screen;
pub mod synthetic;

pub use kmeans::{Assignment, Centroids};
pub use pairs::{cross_pairs, cross_pairs_with_tile, duplicate_pairs, duplicate_pairs_with_tile};

use rayon::prelude::*;

use crate::curate::groups::UnionFind;
use crate::error::{Error, Result};
/// The crate's splitmix64 (shared with the packer): samples, inits and synthetic data depend on
/// the seed alone.
pub(crate) use crate::pack::rng::SplitMix64;

/// How far a row's L2 norm may be from 1 and still count as normalized. f32 normalization lands
/// within ~1e-6; the slack admits embeddings normalized in f16/bf16 upstream and converted.
pub const NORM_TOLERANCE: f32 = 1e-3;

/// Settings of the semantic tier.
///
/// `Default`: `clusters = 0` (automatic: `ceil(sqrt(n / 2))`, see [`SemanticParams::clusters_for`]),
/// `fit_sample = 100_000` rows, `iterations = 20`, `seed = 0`, `eps = 0.01` (pairs with cosine
/// ≥ 0.99 are duplicates; SemDeDup and NeMo Curator report thresholds between 0.0075 and 0.1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SemanticParams {
    /// Number of k-means clusters; 0 picks `ceil(sqrt(n / 2))` for `n` rows.
    pub clusters: usize,
    /// The most rows k-means is fitted on; larger inputs are sampled deterministically from
    /// `seed`. 0 means all rows.
    pub fit_sample: usize,
    /// Lloyd iterations (fewer when assignments stop changing).
    pub iterations: usize,
    /// Seed of the fit sample, the initial centroids and nothing else.
    pub seed: u64,
    /// Duplicate threshold: a pair is a duplicate when its cosine similarity is ≥ `1 − eps`.
    pub eps: f32,
}

impl Default for SemanticParams {
    fn default() -> Self {
        Self {
            clusters: 0,
            fit_sample: 100_000,
            iterations: 20,
            seed: 0,
            eps: 0.01,
        }
    }
}

impl SemanticParams {
    /// The number of clusters used for `n` rows. With `clusters = 0`: `ceil(sqrt(n / 2))`.
    /// Why: assigning costs `n·k·dim` multiply-adds and the within-cluster pairs about
    /// `n·(n/k)·dim/2`; their sum is smallest at `k = sqrt(n/2)` (708 clusters for 1M rows).
    pub fn clusters_for(&self, n: usize) -> usize {
        if self.clusters > 0 {
            self.clusters
        } else {
            ((n as f64 / 2.0).sqrt().ceil() as usize).max(1)
        }
    }

    /// The cosine threshold `1 − eps`.
    pub fn min_cosine(&self) -> f32 {
        1.0 - self.eps
    }
}

/// Number of rows of `emb`, after checking `dim` and the length. `what` names the input in errors.
pub(crate) fn rows_of(emb: &[f32], dim: usize, what: &str) -> Result<usize> {
    if dim == 0 {
        return Err(Error::Semantic(format!("{what}: dim is 0")));
    }
    if !emb.len().is_multiple_of(dim) {
        return Err(Error::Semantic(format!(
            "{what}: {} values is not a multiple of dim {dim}",
            emb.len()
        )));
    }
    Ok(emb.len() / dim)
}

/// What is wrong with one row, if anything: a non-finite value or a norm away from 1.
pub(crate) fn row_problem(x: &[f32]) -> Option<String> {
    // Sixteen f32 lanes: this runs over every row of every input, and the tolerance (1e-3) is
    // far above the f32 sum's rounding. A non-finite value (or a square that overflows) makes
    // the sum non-finite; only then is the row searched for the culprit.
    let mut lanes = [0.0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for (s, &v) in lanes.iter_mut().zip(c) {
            *s += v * v;
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&v| v * v).sum();
    let norm2 = lanes.iter().sum::<f32>() + tail;
    if !norm2.is_finite()
        && let Some(v) = x.iter().find(|v| !v.is_finite())
    {
        return Some(format!("non-finite value {v}"));
    }
    let norm = f64::from(norm2).sqrt();
    ((norm - 1.0).abs() > f64::from(NORM_TOLERANCE) || !norm.is_finite())
        .then(|| format!("norm {norm:.6} is not 1 (normalize the rows first)"))
}

/// Checks that every row is finite and L2-normalized; names the first bad row.
pub(crate) fn check_normalized(emb: &[f32], dim: usize, what: &str) -> Result<usize> {
    let n = rows_of(emb, dim, what)?;
    let bad = emb
        .par_chunks(dim)
        .enumerate()
        .filter_map(|(row, x)| row_problem(x).map(|p| (row, p)))
        .min_by_key(|(row, _)| *row);
    match bad {
        Some((row, reason)) => Err(Error::Semantic(format!("{what} row {row}: {reason}"))),
        None => Ok(n),
    }
}

/// L2-normalizes every row in place. A row with a non-finite value or a zero norm has no
/// direction and is an error naming it; nothing is changed then.
pub fn normalize_rows(emb: &mut [f32], dim: usize) -> Result<()> {
    rows_of(emb, dim, "embeddings")?;
    let norms: Vec<f64> = emb
        .par_chunks(dim)
        .map(|x| x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>())
        .collect();
    if let Some(row) = norms.iter().position(|s| !s.is_finite() || *s == 0.0) {
        let what = if norms[row] == 0.0 {
            "zero vector"
        } else {
            "non-finite value"
        };
        return Err(Error::Semantic(format!(
            "embeddings row {row}: {what}, cannot normalize"
        )));
    }
    emb.par_chunks_mut(dim)
        .zip(norms.par_iter())
        .for_each(|(x, s)| {
            let inv = (1.0 / s.sqrt()) as f32;
            x.iter_mut().for_each(|v| *v *= inv);
        });
    Ok(())
}

/// For each `eps`, the fraction of the `n` samples kept when every connected component of the
/// pairs with cosine ≥ `1 − eps` keeps one member (singletons are kept). Pairs are computed once
/// at the loosest eps; this sweeps the thresholds from strict to loose over one union–find.
/// Results are in the order of `eps`. `n = 0` keeps everything (fraction 1). Pairs naming a
/// sample ≥ `n` are ignored (they cannot come from [`duplicate_pairs`] on `n` rows).
pub fn kept_fraction_by_eps(n: usize, pairs: &[(u32, u32, f32)], eps: &[f32]) -> Vec<(f32, f64)> {
    let mut order: Vec<usize> = (0..pairs.len())
        .filter(|&p| {
            let (a, b, c) = pairs[p];
            (a as usize) < n && (b as usize) < n && !c.is_nan()
        })
        .collect();
    // Most similar first, so that loosening the threshold only adds pairs.
    order.sort_unstable_by(|&a, &b| pairs[b].2.total_cmp(&pairs[a].2).then(a.cmp(&b)));
    let mut by_threshold: Vec<usize> = (0..eps.len()).collect();
    by_threshold.sort_by(|&a, &b| eps[a].total_cmp(&eps[b]));

    let mut uf = UnionFind::new(n);
    let mut merged = 0usize;
    let mut next = 0usize;
    let mut out = vec![(0.0f32, 1.0f64); eps.len()];
    for e in by_threshold {
        let min_cosine = 1.0 - eps[e];
        while next < order.len() && pairs[order[next]].2 >= min_cosine {
            let (a, b, _) = pairs[order[next]];
            merged += usize::from(uf.union(a, b));
            next += 1;
        }
        let kept = if n == 0 {
            1.0
        } else {
            (n - merged) as f64 / n as f64
        };
        out[e] = (eps[e], kept);
    }
    out
}

/// A bound on how far an f32 GEMM dot product of two unit vectors can be from the exact one:
/// the classic `dim · u` (u = 2⁻²⁴) for a length-`dim` sum of products whose absolute values sum
/// to ≤ 1 (Cauchy–Schwarz), doubled for the norm tolerance and any blocked summation order.
pub(crate) fn gemm_slack(dim: usize) -> f32 {
    dim as f32 * f32::EPSILON + 1e-6
}

/// `out[i·mb + j] = a_i · b_j` for the `ma` rows of `a` and the `mb` rows of `b` (row-major,
/// `dim` columns each), through the `gemm` crate on the calling thread: callers parallelize over
/// tiles, so a tile's result never depends on the thread count.
pub(crate) fn dot_tile(a: &[f32], b: &[f32], dim: usize, out: &mut [f32]) {
    let (ma, mb) = (a.len() / dim, b.len() / dim);
    debug_assert_eq!(out.len(), ma * mb);
    if ma == 0 || mb == 0 {
        return;
    }
    // SAFETY: `a` holds ma×dim values with row stride dim; `b` read as its transpose (dim×mb,
    // column stride dim, row stride 1) stays inside b's mb×dim values; `out` holds ma×mb values
    // with row stride mb; the three slices do not overlap (one is &mut).
    unsafe {
        gemm::gemm(
            ma,
            mb,
            dim,
            out.as_mut_ptr(),
            1,
            mb as isize,
            false,
            a.as_ptr(),
            1,
            dim as isize,
            b.as_ptr(),
            dim as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// The dot product of two rows in f64: the exact value reported for a pair and the one
/// clusters are chosen by, whatever tiling or kernel screened. The summation order is fixed
/// (16 lanes, a fixed tree, then the tail), so the AVX-512 build and the portable one return
/// the same bits: each lane's products and sums are the same IEEE operations either way.
pub(crate) fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the feature was just detected.
        return unsafe { dot_f64_avx512(a, b) };
    }
    dot_f64_lanes(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_f64_avx512(a: &[f32], b: &[f32]) -> f64 {
    dot_f64_lanes(a, b)
}

#[inline(always)]
fn dot_f64_lanes(a: &[f32], b: &[f32]) -> f64 {
    const LANES: usize = 16;
    let mut acc = [0.0f64; LANES];
    let (ca, ra) = a.split_at(a.len() / LANES * LANES);
    let (cb, rb) = b.split_at(ca.len());
    for (x, y) in ca.chunks_exact(LANES).zip(cb.chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] += f64::from(x[l]) * f64::from(y[l]);
        }
    }
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            acc[l] += acc[l + width];
        }
    }
    let tail: f64 = ra
        .iter()
        .zip(rb)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    acc[0] + tail
}

/// `out[i] += x[i]` for every `i`: each sum is one IEEE addition, so the AVX-512 build returns
/// what the portable one does, only faster (k-means sums every sample row once per iteration).
pub(crate) fn add_assign(out: &mut [f32], x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the feature was just detected.
        return unsafe { add_assign_avx512(out, x) };
    }
    add_assign_lanes(out, x);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn add_assign_avx512(out: &mut [f32], x: &[f32]) {
    add_assign_lanes(out, x);
}

#[inline(always)]
fn add_assign_lanes(out: &mut [f32], x: &[f32]) {
    out.iter_mut().zip(x).for_each(|(o, &v)| *o += v);
}

/// Uniform in `[0, 1)` from the top 53 bits of one draw.
pub(crate) fn unit_f64(rng: &mut SplitMix64) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// `count` distinct indices of `0..n`, sorted, chosen from `seed` (partial Fisher–Yates).
pub(crate) fn sample_indices(n: usize, count: usize, seed: u64) -> Vec<u32> {
    let count = count.min(n);
    let mut idx: Vec<u32> = (0..n as u32).collect();
    let mut rng = SplitMix64::new(seed);
    for i in 0..count {
        let j = i + rng.below(n - i);
        idx.swap(i, j);
    }
    idx.truncate(count);
    idx.sort_unstable();
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_inputs_are_errors_naming_the_row() {
        assert!(rows_of(&[1.0; 6], 0, "e").is_err());
        let e = rows_of(&[1.0; 7], 3, "e").unwrap_err().to_string();
        assert!(e.contains("not a multiple"), "{e}");
        let mut x = vec![1.0, 0.0, 0.0, 0.0, f32::NAN, 0.0];
        let e = check_normalized(&x, 3, "embeddings")
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 1") && e.contains("non-finite"), "{e}");
        assert!(normalize_rows(&mut x, 3).is_err());
        let mut z = vec![3.0, 4.0, 0.0, 0.0, 0.0, 0.0];
        let e = normalize_rows(&mut z, 3).unwrap_err().to_string();
        assert!(e.contains("row 1") && e.contains("zero vector"), "{e}");
        assert_eq!(z[0], 3.0, "nothing changed on error");
        let e = check_normalized(&z, 3, "embeddings")
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 0") && e.contains("norm 5"), "{e}");
        let mut y = vec![3.0, 4.0, 0.0, 0.0, 0.0, 2.0];
        normalize_rows(&mut y, 3).unwrap();
        assert_eq!(y, vec![0.6, 0.8, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(check_normalized(&y, 3, "e").unwrap(), 2);
    }

    #[test]
    fn kept_fraction_counts_components_per_threshold() {
        // 0-1 at 0.999, 1-2 at 0.97 (chain), 3-4 at 0.92, 5 alone: n = 6.
        let pairs = [(0, 1, 0.999), (1, 2, 0.97), (3, 4, 0.92)];
        let got = kept_fraction_by_eps(6, &pairs, &[0.05, 0.0, 0.1, 0.01]);
        assert_eq!(
            got,
            vec![
                (0.05, 4.0 / 6.0), // 0-1-2 one group, 3, 4, 5
                (0.0, 1.0),        // nothing reaches cosine 1
                (0.1, 3.0 / 6.0),  // {0,1,2}, {3,4}, 5
                (0.01, 5.0 / 6.0), // {0,1}
            ]
        );
        assert_eq!(kept_fraction_by_eps(0, &[], &[0.1]), vec![(0.1, 1.0)]);
        // Out-of-range pairs are ignored rather than panicking.
        assert_eq!(
            kept_fraction_by_eps(2, &[(0, 5, 1.0)], &[0.1]),
            vec![(0.1, 1.0)]
        );
    }

    #[test]
    fn samples_are_distinct_sorted_and_seeded() {
        let a = sample_indices(1000, 100, 7);
        assert_eq!(a.len(), 100);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(a, sample_indices(1000, 100, 7));
        assert_ne!(a, sample_indices(1000, 100, 8));
        assert_eq!(sample_indices(5, 10, 1), vec![0, 1, 2, 3, 4]);
    }
}
