//! Spherical k-means: Lloyd iterations where a row belongs to the centroid with the largest dot
//! product (cosine, rows and centroids being unit vectors) and a centroid is its members' mean,
//! renormalized. Similarities are screened in tiles ([`super::screen`]) and the best candidates
//! recomputed in f64; rayon spreads the tiles; every reduction runs in a fixed order, so the
//! result is the same for any thread count and either screening kernel.

use rayon::prelude::*;

use super::quant::prefetch;
use super::screen::{Block, Kernel, Operand, Side, approx_tile, at_least};
use super::{
    SemanticParams, add_assign, check_normalized, dot_f64, row_problem, rows_of, sample_indices,
};
use crate::error::{Error, Result};

/// A tile of `rows × k` similarities holds at most this many floats (8 MiB), so assigning to
/// many centroids never allocates more than that per thread.
const TILE_FLOATS: usize = 1 << 21;

/// At most this many rows per tile: 128 rows of dim 768 (384 KiB of f32, 96 KiB of codes) and
/// their similarities to 708 centroids (354 KiB) stay in L2, so the exact re-check of each row
/// after the screen reads it from cache, not from the gigabytes of embeddings again.
const MAX_TILE_ROWS: usize = 128;

/// Unit-norm cluster centroids, row-major `k × dim`.
#[derive(Debug, Clone, PartialEq)]
pub struct Centroids {
    /// Length of each centroid.
    pub dim: usize,
    /// `k × dim` values, each row L2-normalized.
    pub data: Vec<f32>,
}

/// Which cluster each row belongs to, and how central it is there.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    /// The cluster of each row: the centroid with the largest cosine, computed in f64 (the
    /// lowest index on ties).
    pub cluster: Vec<u32>,
    /// Each row's cosine similarity to its own centroid, the f64 value rounded to f32
    /// (SemDeDup's `least-central` keep rule keeps the member with the lowest).
    pub centrality: Vec<f32>,
}

impl Centroids {
    /// Fits `params.clusters_for(n)` centroids to the `n × dim` unit rows of `emb`.
    ///
    /// When `n` exceeds `params.fit_sample` (and that is not 0), k-means runs on
    /// `fit_sample` rows drawn without replacement from `params.seed`. The initial centroids are
    /// `k` distinct sample rows, also drawn from the seed. Each Lloyd step assigns the sample and
    /// recomputes every centroid as its members' normalized mean; it stops early once no
    /// assignment changes. A cluster left empty (or whose members cancel out) is re-seeded with
    /// the sample row least similar to its own centroid, the worst-served rows first, ties by
    /// index: a deterministic rule that moves centroids to where they are lacking.
    ///
    /// Errors: no rows, a bad shape, a non-finite or non-normalized sample row, or more clusters
    /// than sample rows.
    pub fn fit(emb: &[f32], dim: usize, params: &SemanticParams) -> Result<Centroids> {
        let n = rows_of(emb, dim, "embeddings")?;
        if n == 0 {
            return Err(Error::Semantic("no embeddings to fit k-means on".into()));
        }
        let k = params.clusters_for(n);
        let sampled;
        let sample: &[f32] = if params.fit_sample == 0 || n <= params.fit_sample {
            check_normalized(emb, dim, "embeddings")?;
            emb
        } else {
            // Gathered and checked by the rayon pool; the first bad row in row order is named.
            let idx = sample_indices(n, params.fit_sample, params.seed);
            let mut buf = vec![0.0f32; idx.len() * dim];
            let bad = buf
                .par_chunks_mut(dim)
                .zip(idx.par_iter())
                .filter_map(|(out, &i)| {
                    let row = &emb[i as usize * dim..(i as usize + 1) * dim];
                    out.copy_from_slice(row);
                    row_problem(row).map(|p| (i, p))
                })
                .min_by_key(|(i, _)| *i);
            if let Some((i, p)) = bad {
                return Err(Error::Semantic(format!("embeddings row {i}: {p}")));
            }
            sampled = buf;
            &sampled
        };
        let m = sample.len() / dim;
        if k > m {
            return Err(Error::Semantic(format!(
                "{k} clusters but only {m} rows to fit them on"
            )));
        }
        if k > u32::MAX as usize {
            return Err(Error::Semantic(format!("{k} clusters is too many")));
        }

        // Distinct rows as the first centroids; a different stream from the sample's.
        let init = sample_indices(m, k, params.seed ^ 0xC3A5_C85C_97CB_3127);
        let mut centroids = Centroids {
            dim,
            data: Vec::with_capacity(k * dim),
        };
        for &i in &init {
            centroids
                .data
                .extend_from_slice(&sample[i as usize * dim..(i as usize + 1) * dim]);
        }

        // The sample is prepared for the screen once, for every iteration.
        // (Int8 only: for f32 it would be a second copy of the sample, and f32 tiles need no
        // preparing beyond a copy.)
        let kernel = Kernel::for_dim(dim);
        let prepared = (kernel == Kernel::Int8).then(|| {
            let mut p = Operand::default();
            p.fill_left_int8_par(dim, sample);
            p
        });
        let mut previous: Option<Vec<u32>> = None;
        for _ in 0..params.iterations {
            // The sample rows were checked above.
            let (assignment, _) = nearest(
                sample,
                dim,
                &centroids.data,
                kernel,
                prepared.as_ref(),
                false,
            );
            if previous.as_ref() == Some(&assignment.cluster) {
                break;
            }
            centroids.data = update(sample, dim, &centroids.data, &assignment);
            previous = Some(assignment.cluster);
        }
        Ok(centroids)
    }

    /// Number of centroids.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    /// True when there are no centroids.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Assigns every `dim`-long unit row of `emb` to its most similar centroid.
    ///
    /// Errors: centroids that are empty, of another dim or not unit vectors; embeddings of a bad
    /// shape, non-finite or not normalized.
    pub fn assign(&self, emb: &[f32]) -> Result<Assignment> {
        let k = rows_of(&self.data, self.dim, "centroids")?;
        if k == 0 {
            return Err(Error::Semantic("no centroids to assign to".into()));
        }
        if k > u32::MAX as usize {
            return Err(Error::Semantic(format!("{k} centroids is too many")));
        }
        check_normalized(&self.data, self.dim, "centroids")?;
        rows_of(emb, self.dim, "embeddings")?;
        // The rows' norm check happens as the tiles are prepared (one read of each row).
        let kernel = Kernel::for_dim(self.dim);
        let (assignment, problem) = nearest(emb, self.dim, &self.data, kernel, None, true);
        match problem {
            Some((row, reason)) => Err(Error::Semantic(format!("embeddings row {row}: {reason}"))),
            None => Ok(assignment),
        }
    }
}

/// The nearest centroid of every row, in tiles of rows spread over rayon. The screen
/// ([`super::screen`]) gives every (row, centroid) similarity approximately with an error of at
/// most `b`; only the centroids within `2b` of the row's best approximation can hold the exact
/// maximum, and those few are recomputed in f64. So the cluster is the exact argmax of the f64
/// cosines (the lowest index on ties) and the centrality that cosine, whichever kernel screened.
///
/// `prepared`: `emb` already prepared as the left operand for `kernel` (k-means prepares its
/// sample once for all its iterations); `None` prepares each tile as it goes.
/// `centrality`: false leaves the centrality NaN where one candidate alone decided the cluster
/// (k-means needs it only to re-seed, see [`update`]), which saves an f64 dot product per row.
///
/// Also returns the first row that is not finite or not of unit norm, found while preparing
/// the tiles (`prepared` rows are the caller's to have checked); the assignment is meaningless
/// then.
pub(crate) fn nearest(
    emb: &[f32],
    dim: usize,
    centroids: &[f32],
    kernel: Kernel,
    prepared: Option<&Operand>,
    centrality_wanted: bool,
) -> (Assignment, Option<(usize, String)>) {
    let n = emb.len() / dim;
    let k = centroids.len() / dim;
    let mut right = Operand::default();
    right.fill(kernel, Side::Right, dim, centroids.chunks_exact(dim));
    let tile_rows = (TILE_FLOATS / k).clamp(16, MAX_TILE_ROWS);
    let mut cluster = vec![0u32; n];
    let mut centrality = vec![0.0f32; n];
    let problem = std::sync::Mutex::new(None::<(usize, String)>);
    emb.par_chunks(tile_rows * dim)
        .zip(cluster.par_chunks_mut(tile_rows))
        .zip(centrality.par_chunks_mut(tile_rows))
        .enumerate()
        .for_each_init(
            || (Operand::default(), Vec::new()),
            |(own, sims), (t, ((rows, cl), ce))| {
                let m = cl.len();
                let (left, a) = match prepared {
                    Some(p) => (p, t * tile_rows..t * tile_rows + m),
                    None => {
                        own.fill(kernel, Side::Left, dim, rows.chunks_exact(dim));
                        if let Some((i, reason)) = own.problem() {
                            keep_first(&problem, t * tile_rows + i, reason);
                        }
                        (&*own, 0..m)
                    }
                };
                let block = Block {
                    a,
                    b: 0..k,
                    upper_only: false,
                };
                let bound = approx_tile(left, &right, &block, sims);
                let tile = Tile {
                    sims,
                    rows,
                    centroids,
                    dim,
                    bound,
                    centrality_wanted,
                };
                assign_tile(&tile, cl, ce);
            },
        );
    let assignment = Assignment {
        cluster,
        centrality,
    };
    let problem = problem.into_inner().unwrap_or_else(|e| e.into_inner());
    (assignment, problem)
}

/// Records `(row, reason)` in `first` unless it already holds an earlier row: tiles finish in
/// any order, the error must name the first bad row.
pub(crate) fn keep_first(
    first: &std::sync::Mutex<Option<(usize, String)>>,
    row: usize,
    reason: &str,
) {
    let mut first = first.lock().unwrap_or_else(|e| e.into_inner());
    if first.as_ref().is_none_or(|(r, _)| row < *r) {
        *first = Some((row, reason.to_string()));
    }
}

/// One tile of rows to assign: their approximate similarities to every centroid (`k` per
/// row), the rows, the centroids, and the screen's error bound.
struct Tile<'a> {
    sims: &'a [f32],
    rows: &'a [f32],
    centroids: &'a [f32],
    dim: usize,
    bound: f64,
    centrality_wanted: bool,
}

/// [`Candidates`] decided for every row of a tile, with the AVX-512 build where the CPU has
/// it: the scans over `k` values per row vectorize wider.
fn assign_tile(tile: &Tile, cluster: &mut [u32], centrality: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the feature was just detected.
        unsafe { assign_tile_avx512(tile, cluster, centrality) };
        return;
    }
    assign_tile_body(tile, cluster, centrality);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn assign_tile_avx512(tile: &Tile, cluster: &mut [u32], centrality: &mut [f32]) {
    assign_tile_body(tile, cluster, centrality);
}

#[inline(always)]
fn assign_tile_body(tile: &Tile, cluster: &mut [u32], centrality: &mut [f32]) {
    let Tile {
        sims,
        rows,
        centroids,
        dim,
        bound,
        centrality_wanted,
    } = *tile;
    let k = centroids.len() / dim;
    let centroid = |j: usize| &centroids[j * dim..(j + 1) * dim];
    // Two passes: the scans first, then the exact dot products, each row's operands requested
    // from memory one row ahead (the centroid a row needs is anywhere in `centroids`; without
    // the prefetch each exact product waits on it).
    let mut found = [Candidates::default(); MAX_TILE_ROWS];
    let found = &mut found[..cluster.len()];
    for (f, s) in found.iter_mut().zip(sims.chunks_exact(k)) {
        *f = Candidates::of(s, bound);
    }
    let row = |r: usize| &rows[r * dim..(r + 1) * dim];
    for (r, ((f, c), e)) in found.iter().zip(cluster).zip(centrality).enumerate() {
        if let Some(next) = found.get(r + 1) {
            prefetch(row(r + 1));
            prefetch(centroid(next.few[0] as usize));
        }
        let approx = &sims[r * k..(r + 1) * k];
        (*c, *e) = f.decide(row(r), centroids, dim, approx, centrality_wanted);
    }
}

/// The centroids that may hold a row's exact maximum: those whose approximate similarity is
/// within twice the screen's error bound of the largest approximation.
#[derive(Debug, Clone, Copy, Default)]
struct Candidates {
    /// Approximations at or above this are candidates.
    floor: f32,
    /// The first candidates, ascending (nearly always one or two).
    few: [u32; 8],
    /// How many there are (may exceed `few.len()`).
    count: usize,
}

impl Candidates {
    #[inline(always)]
    fn of(approx: &[f32], bound: f64) -> Self {
        const LANES: usize = 16;
        // Sixteen lanes, so the scans vectorize; this runs for every row and every centroid.
        let mut lanes = [f32::NEG_INFINITY; LANES];
        let mut chunks = approx.chunks_exact(LANES);
        for c in &mut chunks {
            for (m, &v) in lanes.iter_mut().zip(c) {
                *m = if v > *m { v } else { *m };
            }
        }
        let top = chunks
            .remainder()
            .iter()
            .chain(&lanes)
            .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
        // In f64, then one step down in f32: no candidate is lost to rounding.
        let floor = ((f64::from(top) - 2.0 * bound) as f32).next_down();
        let mut found = Candidates {
            floor,
            ..Candidates::default()
        };
        at_least(approx, floor, |j| {
            if found.count < found.few.len() {
                found.few[found.count] = j as u32;
            }
            found.count += 1;
        });
        found
    }

    /// The exact argmax (first on ties) of `x · centroid` in f64 among the candidates, and its
    /// value; NaN for the value when a single candidate decided and `centrality_wanted` is
    /// false.
    #[inline(always)]
    fn decide(
        &self,
        x: &[f32],
        centroids: &[f32],
        dim: usize,
        approx: &[f32],
        centrality_wanted: bool,
    ) -> (u32, f32) {
        if self.count == 1 && !centrality_wanted {
            return (self.few[0], f32::NAN);
        }
        let (mut best, mut best_sim) = (0usize, f64::NEG_INFINITY);
        let mut consider = |j: usize| {
            let exact = dot_f64(x, &centroids[j * dim..(j + 1) * dim]);
            if exact > best_sim {
                best = j;
                best_sim = exact;
            }
        };
        if self.count <= self.few.len() {
            self.few[..self.count]
                .iter()
                .for_each(|&j| consider(j as usize));
        } else {
            // Too many to have kept: the same scan again, in the same ascending order.
            at_least(approx, self.floor, consider);
        }
        (best as u32, best_sim as f32)
    }
}

/// New centroids from an assignment to `old` centroids: each the normalized sum of its members,
/// summed in row order; empty (or cancelled-out) clusters are re-seeded as [`Centroids::fit`]
/// describes, by the rows' exact centralities (those [`nearest`] left NaN are computed here).
fn update(sample: &[f32], dim: usize, old: &[f32], assignment: &Assignment) -> Vec<f32> {
    let k = old.len() / dim;
    let members = members_by_cluster(&assignment.cluster, k);
    let mut data = vec![0.0f32; k * dim];
    let empty: Vec<bool> = data
        .par_chunks_mut(dim)
        .enumerate()
        .map(|(c, out)| {
            for &i in &members.1[members.0[c]..members.0[c + 1]] {
                let row = &sample[i as usize * dim..(i as usize + 1) * dim];
                add_assign(out, row);
            }
            let norm = out
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>()
                .sqrt();
            if norm > 1e-12 {
                let inv = (1.0 / norm) as f32;
                out.iter_mut().for_each(|v| *v *= inv);
                false
            } else {
                true
            }
        })
        .collect();
    let empty: Vec<usize> = (0..k).filter(|&c| empty[c]).collect();
    if !empty.is_empty() {
        let centrality: Vec<f32> = (sample.par_chunks(dim).zip(&assignment.cluster))
            .zip(&assignment.centrality)
            .map(|((x, &c), &e)| {
                if e.is_nan() {
                    let c = c as usize;
                    dot_f64(x, &old[c * dim..(c + 1) * dim]) as f32
                } else {
                    e
                }
            })
            .collect();
        let mut worst: Vec<u32> = (0..assignment.cluster.len() as u32).collect();
        worst.sort_by(|&a, &b| {
            centrality[a as usize]
                .total_cmp(&centrality[b as usize])
                .then(a.cmp(&b))
        });
        for (&c, &row) in empty.iter().zip(&worst) {
            data[c * dim..(c + 1) * dim]
                .copy_from_slice(&sample[row as usize * dim..(row as usize + 1) * dim]);
        }
    }
    data
}

/// Rows grouped by cluster (counting sort, ascending within each): `(offsets, rows)` where the
/// rows of cluster `c` are `rows[offsets[c]..offsets[c + 1]]`. `cluster` values are `< k`.
fn members_by_cluster(cluster: &[u32], k: usize) -> (Vec<usize>, Vec<u32>) {
    let mut offsets = vec![0usize; k + 1];
    for &c in cluster {
        offsets[c as usize + 1] += 1;
    }
    for c in 0..k {
        offsets[c + 1] += offsets[c];
    }
    let mut fill = offsets.clone();
    let mut rows = vec![0u32; cluster.len()];
    for (i, &c) in cluster.iter().enumerate() {
        rows[fill[c as usize]] = i as u32;
        fill[c as usize] += 1;
    }
    (offsets, rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curate::semantic::normalize_rows;

    fn params(clusters: usize) -> SemanticParams {
        SemanticParams {
            clusters,
            fit_sample: 0,
            iterations: 10,
            seed: 3,
            eps: 0.05,
        }
    }

    #[test]
    fn separates_well_separated_groups() {
        // Three tight groups around the axes of R^3, five rows each.
        let mut emb = Vec::new();
        for axis in 0..3 {
            for j in 0..5 {
                let mut x = [0.05 * j as f32, 0.02, 0.03];
                x[axis] = 1.0;
                emb.extend_from_slice(&x);
            }
        }
        normalize_rows(&mut emb, 3).unwrap();
        let c = Centroids::fit(&emb, 3, &params(3)).unwrap();
        assert_eq!(c.len(), 3);
        let a = c.assign(&emb).unwrap();
        for g in 0..3 {
            let first = a.cluster[g * 5];
            assert!(a.cluster[g * 5..g * 5 + 5].iter().all(|&x| x == first));
        }
        let mut distinct = a.cluster.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 3, "{:?}", a.cluster);
        assert!(a.centrality.iter().all(|&s| s > 0.95 && s <= 1.0 + 1e-6));
    }

    #[test]
    fn empty_clusters_are_reseeded_and_duplicates_do_not_break_it() {
        // Eight identical rows and two others, four clusters: inits may coincide, the empty
        // ones must move to the worst-served rows, and every centroid stays a unit vector.
        let mut emb = Vec::new();
        for _ in 0..8 {
            emb.extend_from_slice(&[1.0, 0.0, 0.0]);
        }
        emb.extend_from_slice(&[0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
        let c = Centroids::fit(&emb, 3, &params(4)).unwrap();
        assert!(check_normalized(&c.data, 3, "c").is_ok());
        let a = c.assign(&emb).unwrap();
        assert_ne!(a.cluster[8], a.cluster[0]);
        assert_ne!(a.cluster[9], a.cluster[0]);
        assert_ne!(a.cluster[8], a.cluster[9]);
        assert!((a.centrality[8] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn refuses_bad_input_without_panicking() {
        let p = params(2);
        assert!(Centroids::fit(&[], 4, &p).is_err());
        assert!(Centroids::fit(&[1.0, 0.0, 0.0], 0, &p).is_err());
        assert!(Centroids::fit(&[1.0, 0.0, 0.0], 2, &p).is_err());
        // More clusters than rows.
        assert!(Centroids::fit(&[1.0, 0.0], 2, &p).is_err());
        let e = Centroids::fit(&[1.0, 0.0, 2.0, 0.0], 2, &p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 1"), "{e}");
        let c = Centroids {
            dim: 2,
            data: vec![1.0, 0.0],
        };
        assert!(c.assign(&[0.0, f32::NAN]).is_err());
        assert!(c.assign(&[1.0, 0.0, 0.0]).is_err());
        let bad = Centroids {
            dim: 2,
            data: vec![],
        };
        assert!(bad.assign(&[1.0, 0.0]).is_err());
        let zero_dim = Centroids {
            dim: 0,
            data: vec![],
        };
        assert!(zero_dim.assign(&[1.0, 0.0]).is_err());
        assert_eq!(zero_dim.len(), 0);
    }
}
