//! Near-duplicate pairs inside clusters, blocked: a cluster's members are cut into tiles of
//! [`PAIR_TILE`] rows, each pair of tiles goes through one GEMM, so a task holds two gathered
//! tiles and one tile × tile block of similarities whatever the cluster's size; an n × n matrix
//! is never built. GEMM (f32) only nominates candidates; each candidate's cosine is recomputed in
//! f64 in a fixed order, so the pairs and their values do not depend on the tiling, the GEMM
//! kernel or the thread count.

use rayon::prelude::*;

use super::{Assignment, check_normalized, dot_f64, dot_tile};
use crate::error::{Error, Result};

/// Rows per tile. Per task: two gathered tiles (2 × 512 × dim floats, 3 MiB at dim 768) and a
/// 512 × 512 block (1 MiB); small enough for L2/L3, big enough that GEMM runs near peak, and
/// fine-grained enough that within-cluster work skips the lower triangle of tile pairs.
pub const PAIR_TILE: usize = 512;

/// A pair found: (row, row, cosine).
type Pair = (u32, u32, f32);

/// All pairs `(i, j, cosine)` with `i < j`, both rows in the same cluster of `assignment` and
/// cosine ≥ `min_cosine`, sorted by `(i, j)`. `emb` holds `n × dim` unit rows and `assignment`
/// one cluster per row (any `u32` ids). The cosine is the f64 dot product of the two f32 rows,
/// rounded to f32, and is compared with `min_cosine` after rounding.
///
/// Errors: a bad shape or row (see the module docs), an assignment of another length, a NaN
/// threshold.
pub fn duplicate_pairs(
    emb: &[f32],
    dim: usize,
    assignment: &Assignment,
    min_cosine: f32,
) -> Result<Vec<Pair>> {
    duplicate_pairs_with_tile(emb, dim, assignment, min_cosine, PAIR_TILE)
}

/// [`duplicate_pairs`] with `tile` rows per block (≥ 1). The result is the same for every tile
/// size; memory per task is `2·tile·dim + tile²` floats.
pub fn duplicate_pairs_with_tile(
    emb: &[f32],
    dim: usize,
    assignment: &Assignment,
    min_cosine: f32,
    tile: usize,
) -> Result<Vec<Pair>> {
    let n = check_normalized(emb, dim, "embeddings")?;
    check_assignment(assignment, n, "embeddings")?;
    check_settings(min_cosine, tile)?;
    let groups = Groups::new(&assignment.cluster);
    let mut tasks = Vec::new();
    for g in 0..groups.len() {
        let tiles = groups.rows(g).len().div_ceil(tile);
        if groups.rows(g).len() < 2 {
            continue;
        }
        for ti in 0..tiles {
            for tj in ti..tiles {
                tasks.push((g, ti, tj));
            }
        }
    }
    let slack = gemm_slack(dim);
    let chunks: Vec<Vec<Pair>> = tasks
        .par_iter()
        .map_init(Buffers::default, |buf, &(g, ti, tj)| {
            let rows = groups.rows(g);
            let a = tile_of(rows, ti, tile);
            let b = tile_of(rows, tj, tile);
            buf.gather(emb, dim, a, b);
            let mut out = Vec::new();
            let nb = b.len();
            for (x, &i) in a.iter().enumerate() {
                // Within one tile only the upper triangle; tiles are in ascending row order, so
                // every row of a later tile is larger than every row of an earlier one.
                let start = if ti == tj { x + 1 } else { 0 };
                let sims = &buf.sims[x * nb..(x + 1) * nb];
                for (y, &j) in b.iter().enumerate().skip(start) {
                    if sims[y] >= min_cosine - slack {
                        push_exact(emb, dim, i, j, min_cosine, &mut out);
                    }
                }
            }
            out
        })
        .collect();
    let mut pairs: Vec<Pair> = chunks.into_iter().flatten().collect();
    pairs.par_sort_unstable_by_key(|&(i, j, _)| (i, j));
    Ok(pairs)
}

/// All pairs `(new row, reference row, cosine)` with cosine ≥ `min_cosine` where both rows have
/// the same cluster id, sorted by `(new, reference)`: an incremental run against an earlier
/// corpus. The caller assigns the new rows to the REFERENCE corpus's centroids, so the ids mean
/// the same clusters. Same cosine definition and errors as [`duplicate_pairs`].
pub fn cross_pairs(
    new: &[f32],
    new_assignment: &Assignment,
    reference: &[f32],
    reference_assignment: &Assignment,
    dim: usize,
    min_cosine: f32,
) -> Result<Vec<Pair>> {
    cross_pairs_with_tile(
        new,
        new_assignment,
        reference,
        reference_assignment,
        dim,
        min_cosine,
        PAIR_TILE,
    )
}

/// [`cross_pairs`] with `tile` rows per block (≥ 1); the result is the same for every tile size.
pub fn cross_pairs_with_tile(
    new: &[f32],
    new_assignment: &Assignment,
    reference: &[f32],
    reference_assignment: &Assignment,
    dim: usize,
    min_cosine: f32,
    tile: usize,
) -> Result<Vec<Pair>> {
    let n_new = check_normalized(new, dim, "new embeddings")?;
    let n_ref = check_normalized(reference, dim, "reference embeddings")?;
    check_assignment(new_assignment, n_new, "new embeddings")?;
    check_assignment(reference_assignment, n_ref, "reference embeddings")?;
    check_settings(min_cosine, tile)?;
    let gn = Groups::new(&new_assignment.cluster);
    let gr = Groups::new(&reference_assignment.cluster);
    // Both id lists are sorted: merge them to find the clusters present on both sides.
    let mut tasks = Vec::new();
    let (mut p, mut q) = (0, 0);
    while p < gn.len() && q < gr.len() {
        match gn.ids[p].cmp(&gr.ids[q]) {
            std::cmp::Ordering::Less => p += 1,
            std::cmp::Ordering::Greater => q += 1,
            std::cmp::Ordering::Equal => {
                for ti in 0..gn.rows(p).len().div_ceil(tile) {
                    for tj in 0..gr.rows(q).len().div_ceil(tile) {
                        tasks.push((p, q, ti, tj));
                    }
                }
                p += 1;
                q += 1;
            }
        }
    }
    let slack = gemm_slack(dim);
    let chunks: Vec<Vec<Pair>> = tasks
        .par_iter()
        .map_init(Buffers::default, |buf, &(p, q, ti, tj)| {
            let a = tile_of(gn.rows(p), ti, tile);
            let b = tile_of(gr.rows(q), tj, tile);
            buf.gather_two(new, reference, dim, a, b);
            let mut out = Vec::new();
            for (x, &i) in a.iter().enumerate() {
                let sims = &buf.sims[x * b.len()..(x + 1) * b.len()];
                for (y, &j) in b.iter().enumerate() {
                    if sims[y] >= min_cosine - slack {
                        let c = dot_f64(row(new, dim, i), row(reference, dim, j)) as f32;
                        if c >= min_cosine {
                            out.push((i, j, c));
                        }
                    }
                }
            }
            out
        })
        .collect();
    let mut pairs: Vec<Pair> = chunks.into_iter().flatten().collect();
    pairs.par_sort_unstable_by_key(|&(i, j, _)| (i, j));
    Ok(pairs)
}

/// A bound on how far an f32 GEMM dot product of two unit vectors can be from the exact one:
/// the classic `dim · u` (u = 2⁻²⁴) for a length-`dim` sum of products whose absolute values sum
/// to ≤ 1 (Cauchy–Schwarz), doubled for the norm tolerance and any blocked summation order. A
/// GEMM value this far below the threshold is still re-checked exactly, so no pair is missed.
fn gemm_slack(dim: usize) -> f32 {
    dim as f32 * f32::EPSILON + 1e-6
}

fn row(emb: &[f32], dim: usize, i: u32) -> &[f32] {
    &emb[i as usize * dim..(i as usize + 1) * dim]
}

/// Recomputes a candidate exactly and keeps it when it reaches the threshold.
fn push_exact(emb: &[f32], dim: usize, i: u32, j: u32, min_cosine: f32, out: &mut Vec<Pair>) {
    let c = dot_f64(row(emb, dim, i), row(emb, dim, j)) as f32;
    if c >= min_cosine {
        out.push((i, j, c));
    }
}

fn tile_of(rows: &[u32], t: usize, tile: usize) -> &[u32] {
    &rows[t * tile..((t + 1) * tile).min(rows.len())]
}

fn check_assignment(a: &Assignment, n: usize, what: &str) -> Result<()> {
    if a.cluster.len() != n {
        return Err(Error::Semantic(format!(
            "{what}: {n} rows but an assignment of {} rows",
            a.cluster.len()
        )));
    }
    Ok(())
}

fn check_settings(min_cosine: f32, tile: usize) -> Result<()> {
    if min_cosine.is_nan() {
        return Err(Error::Semantic("the cosine threshold is NaN".into()));
    }
    if tile == 0 {
        return Err(Error::Semantic("the pair tile size is 0".into()));
    }
    Ok(())
}

/// Rows grouped by cluster id: `ids` ascending, the rows of `ids[g]` ascending in
/// `rows[offsets[g]..offsets[g + 1]]`. Sorting (not counting) keeps memory independent of how
/// large the ids are.
struct Groups {
    ids: Vec<u32>,
    offsets: Vec<usize>,
    rows: Vec<u32>,
}

impl Groups {
    fn new(cluster: &[u32]) -> Self {
        let mut keys: Vec<u64> = cluster
            .iter()
            .enumerate()
            .map(|(i, &c)| (u64::from(c) << 32) | i as u64)
            .collect();
        keys.par_sort_unstable();
        let mut ids = Vec::new();
        let mut offsets = Vec::new();
        for (p, &key) in keys.iter().enumerate() {
            let c = (key >> 32) as u32;
            if ids.last() != Some(&c) {
                ids.push(c);
                offsets.push(p);
            }
        }
        offsets.push(keys.len());
        let rows = keys.into_iter().map(|key| key as u32).collect();
        Self { ids, offsets, rows }
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn rows(&self, g: usize) -> &[u32] {
        &self.rows[self.offsets[g]..self.offsets[g + 1]]
    }
}

/// Per-worker scratch: two gathered tiles and their similarity block, reused across tasks.
#[derive(Default)]
struct Buffers {
    a: Vec<f32>,
    b: Vec<f32>,
    sims: Vec<f32>,
}

impl Buffers {
    fn gather(&mut self, emb: &[f32], dim: usize, a: &[u32], b: &[u32]) {
        self.gather_two(emb, emb, dim, a, b);
    }

    fn gather_two(&mut self, ea: &[f32], eb: &[f32], dim: usize, a: &[u32], b: &[u32]) {
        fill(&mut self.a, ea, dim, a);
        fill(&mut self.b, eb, dim, b);
        self.sims.clear();
        self.sims.resize(a.len() * b.len(), 0.0);
        dot_tile(&self.a, &self.b, dim, &mut self.sims);
    }
}

fn fill(buf: &mut Vec<f32>, emb: &[f32], dim: usize, rows: &[u32]) {
    buf.clear();
    for &i in rows {
        buf.extend_from_slice(row(emb, dim, i));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(cluster: Vec<u32>) -> Assignment {
        let n = cluster.len();
        Assignment {
            cluster,
            centrality: vec![1.0; n],
        }
    }

    #[test]
    fn finds_same_cluster_pairs_only() {
        // Rows 0, 1, 3 nearly equal; 2 orthogonal; row 3 sits in another cluster.
        let c = 0.999f32;
        let s = (1.0 - c * c).sqrt();
        let emb = [1.0, 0.0, c, s, 0.0, 1.0, c, -s];
        let a = assignment(vec![7, 7, 7, 9]);
        let pairs = duplicate_pairs(&emb, 2, &a, 0.99).unwrap();
        assert_eq!(pairs.len(), 1);
        assert_eq!((pairs[0].0, pairs[0].1), (0, 1));
        assert!((pairs[0].2 - 0.999).abs() < 1e-6);
        // Same cluster for all: 0-1, 0-3, and 1-3 (cos = c² − s² = 0.996).
        let all = duplicate_pairs_with_tile(&emb, 2, &assignment(vec![1; 4]), 0.99, 1).unwrap();
        let idx: Vec<(u32, u32)> = all.iter().map(|p| (p.0, p.1)).collect();
        assert_eq!(idx, vec![(0, 1), (0, 3), (1, 3)]);
        // Cross: new rows against reference rows of the same cluster.
        let cross = cross_pairs(
            &emb[..4],
            &assignment(vec![7, 9]),
            &emb[4..],
            &assignment(vec![7, 7]),
            2,
            0.99,
        );
        assert_eq!(
            cross.unwrap(),
            vec![(0, 1, dot_f64(&emb[..2], &emb[6..]) as f32)]
        );
    }

    #[test]
    fn refuses_bad_input() {
        let emb = [1.0, 0.0, 0.0, 1.0];
        assert!(duplicate_pairs(&emb, 2, &assignment(vec![0]), 0.9).is_err());
        assert!(duplicate_pairs(&emb, 2, &assignment(vec![0, 0]), f32::NAN).is_err());
        assert!(duplicate_pairs_with_tile(&emb, 2, &assignment(vec![0, 0]), 0.9, 0).is_err());
        assert!(duplicate_pairs(&[2.0, 0.0], 2, &assignment(vec![0]), 0.9).is_err());
        assert!(
            cross_pairs(
                &emb,
                &assignment(vec![0, 0]),
                &emb,
                &assignment(vec![0]),
                2,
                0.9
            )
            .is_err()
        );
        assert!(
            duplicate_pairs(&[], 2, &assignment(vec![]), 0.9)
                .unwrap()
                .is_empty()
        );
    }
}
