//! Near-duplicate pairs inside clusters, blocked. A cluster's members (ascending) are cut into
//! strips of `tile` rows; each strip, as the left operand of the screen ([`super::screen`]:
//! int8 VNNI or f32 GEMM), meets its own rows and every later strip of the cluster as right
//! tiles. A cluster of up to [`WHOLE_STRIPS`] strips is one task that prepares each row once
//! (the right tiles are the strips' codes laid out again); a larger one is a task per strip
//! that prepares the later right tiles itself, so memory stays bounded (a few strips and a
//! tile × tile block of similarities, never an n × n matrix) and one huge cluster still spreads
//! over the threads. On a diagonal block only pairs `j > i` are computed where the kernel can
//! skip the rest. The screen only nominates candidates (every pair whose approximation is
//! within the screen's error bound of the threshold); each candidate's cosine is recomputed in
//! f64 in a fixed order, so the pairs and their values do not depend on the tiling, the kernel
//! or the thread count. The rows' norm check comes with their preparation.

use rayon::prelude::*;

use super::screen::{Block, Kernel, Operand, Side, approx_tile, at_least, screen_floor};
use std::ops::Range;
use std::sync::Mutex;

use super::kmeans::keep_first;
use super::{Assignment, check_normalized, dot_f64, row_problem, rows_of};
use crate::error::{Error, Result};

/// Rows per strip and per right tile. Per task at dim 768: a strip and a tile (2 × 768 KiB as
/// int8, 6 MiB as f32) and a 1024 × 1024 block of similarities (4 MiB); big enough that
/// preparing the rows costs little next to the products, small enough for L2/L3 and to spread
/// one large cluster over the threads.
pub const PAIR_TILE: usize = 1024;

/// Clusters of up to this many strips are one task (at most 4 × 1,024 rows prepared at once,
/// 6 MiB of codes at dim 768 with their right-tile copies).
const WHOLE_STRIPS: usize = 4;

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

/// [`duplicate_pairs`] with `tile` rows per strip and right tile (≥ 1). The result is the
/// same for every tile size; memory per task is about `2·tile·dim` values and `tile²` floats.
pub fn duplicate_pairs_with_tile(
    emb: &[f32],
    dim: usize,
    assignment: &Assignment,
    min_cosine: f32,
    tile: usize,
) -> Result<Vec<Pair>> {
    let kernel = Kernel::for_dim(dim);
    duplicate_pairs_screened_by(emb, dim, assignment, min_cosine, tile, kernel)
}

/// [`duplicate_pairs_with_tile`] screened by the given kernel (tests compare the kernels).
pub(crate) fn duplicate_pairs_screened_by(
    emb: &[f32],
    dim: usize,
    assignment: &Assignment,
    min_cosine: f32,
    tile: usize,
    kernel: Kernel,
) -> Result<Vec<Pair>> {
    let n = rows_of(emb, dim, "embeddings")?;
    check_assignment(assignment, n, "embeddings")?;
    check_settings(min_cosine, tile)?;
    let groups = Groups::new(&assignment.cluster);
    // A cluster of up to WHOLE_STRIPS strips is one task, which prepares each row once and
    // lays the right tiles out from the strips' codes; a larger one is a task per strip, so
    // that memory stays bounded and one huge cluster still spreads over the threads.
    let tasks: Vec<(usize, Range<usize>)> = (0..groups.len())
        .filter(|&g| groups.rows(g).len() >= 2)
        .flat_map(|g| {
            let strips = groups.rows(g).len().div_ceil(tile);
            let per_task = if strips <= WHOLE_STRIPS { strips } else { 1 };
            (0..strips)
                .step_by(per_task)
                .map(move |s| (g, s..(s + per_task).min(strips)))
        })
        .collect();
    // The norm check of the rows happens as each is prepared in its strip (every row of a
    // cluster with two or more members, once); rows alone in their cluster are checked here.
    let problem = Mutex::new(None::<(usize, String)>);
    (0..groups.len())
        .into_par_iter()
        .filter(|&g| groups.rows(g).len() == 1)
        .for_each(|g| {
            let i = groups.rows(g)[0];
            if let Some(reason) = row_problem(row(emb, dim, i)) {
                keep_first(&problem, i as usize, &reason);
            }
        });
    let chunks: Vec<Vec<Pair>> = tasks
        .par_iter()
        .map_init(Buffers::default, |buf, (g, strips)| {
            let rows = groups.rows(*g);
            let strip_rows = |s: usize| &rows[s * tile..((s + 1) * tile).min(rows.len())];
            let all_strips = rows.len().div_ceil(tile);
            // Holding every strip: each right tile is a strip's codes laid out again.
            let whole = strips.len() == all_strips;
            let Buffers {
                lefts,
                rights,
                spare,
                sims,
            } = buf;
            lefts.resize_with(lefts.len().max(strips.len()), Operand::default);
            rights.resize_with(rights.len().max(strips.len()), Operand::default);
            for (slot, s) in strips.clone().enumerate() {
                let strip = strip_rows(s);
                let strip_f32 = strip.iter().map(|&i| row(emb, dim, i));
                lefts[slot].fill(kernel, Side::Left, dim, strip_f32);
                if let Some((x, reason)) = lefts[slot].problem() {
                    keep_first(&problem, strip[*x] as usize, reason);
                }
                if whole {
                    rights[slot].fill_right_from_left(&lefts[slot]);
                }
            }
            let mut out = Vec::new();
            for (slot, s) in strips.clone().enumerate() {
                let (strip, left) = (strip_rows(s), &lefts[slot]);
                // Right tiles from the strip's own rows on: every later row is larger.
                for t in s..all_strips {
                    let right = strip_rows(t);
                    let diagonal = t == s;
                    // (In a whole-cluster task, slot t holds strip t.)
                    let right_op = if whole {
                        rights
                            .get(t)
                            .expect("whole-cluster tasks prepare every strip")
                    } else if diagonal {
                        spare.fill_right_from_left(left);
                        &*spare
                    } else {
                        let right_f32 = right.iter().map(|&j| row(emb, dim, j));
                        spare.fill(kernel, Side::Right, dim, right_f32);
                        &*spare
                    };
                    let block = Block {
                        a: 0..strip.len(),
                        b: 0..right.len(),
                        upper_only: diagonal,
                    };
                    let bound = approx_tile(left, right_op, &block, sims);
                    let floor = screen_floor(min_cosine, bound);
                    for (x, &i) in strip.iter().enumerate() {
                        // On the diagonal block only the upper triangle: j > i.
                        let start = if diagonal { x + 1 } else { 0 };
                        let sims = &sims[x * right.len()..(x + 1) * right.len()];
                        at_least(&sims[start.min(right.len())..], floor, |y| {
                            push_exact(emb, dim, i, right[start + y], min_cosine, &mut out);
                        });
                    }
                }
            }
            out
        })
        .collect();
    if let Some((row, reason)) = problem.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(Error::Semantic(format!("embeddings row {row}: {reason}")));
    }
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

/// [`cross_pairs`] with `tile` rows per strip and right tile (≥ 1); the result is the same for
/// every tile size.
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
                tasks.extend((0..gn.rows(p).len().div_ceil(tile)).map(|s| (p, q, s)));
                p += 1;
                q += 1;
            }
        }
    }
    let kernel = Kernel::for_dim(dim);
    let chunks: Vec<Vec<Pair>> = tasks
        .par_iter()
        .map_init(Buffers::default, |buf, &(p, q, s)| {
            let rows = gn.rows(p);
            let strip = &rows[s * tile..((s + 1) * tile).min(rows.len())];
            let Buffers {
                lefts, spare, sims, ..
            } = buf;
            lefts.resize_with(lefts.len().max(1), Operand::default);
            let strip_f32 = strip.iter().map(|&i| row(new, dim, i));
            lefts[0].fill(kernel, Side::Left, dim, strip_f32);
            let mut out = Vec::new();
            for right in gr.rows(q).chunks(tile) {
                let right_f32 = right.iter().map(|&j| row(reference, dim, j));
                spare.fill(kernel, Side::Right, dim, right_f32);
                let block = Block {
                    a: 0..strip.len(),
                    b: 0..right.len(),
                    upper_only: false,
                };
                let bound = approx_tile(&lefts[0], spare, &block, sims);
                let floor = screen_floor(min_cosine, bound);
                for (x, &i) in strip.iter().enumerate() {
                    let sims = &sims[x * right.len()..(x + 1) * right.len()];
                    at_least(sims, floor, |y| {
                        let j = right[y];
                        let c = dot_f64(row(new, dim, i), row(reference, dim, j)) as f32;
                        if c >= min_cosine {
                            out.push((i, j, c));
                        }
                    });
                }
            }
            out
        })
        .collect();
    let mut pairs: Vec<Pair> = chunks.into_iter().flatten().collect();
    pairs.par_sort_unstable_by_key(|&(i, j, _)| (i, j));
    Ok(pairs)
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

/// Per-worker scratch, reused across tasks: the prepared strips (left operands), their codes
/// laid out as right tiles (whole-cluster tasks), one right tile prepared from the embeddings
/// (per-strip tasks), and the block of approximate similarities.
#[derive(Default)]
struct Buffers {
    lefts: Vec<Operand>,
    rights: Vec<Operand>,
    spare: Operand,
    sims: Vec<f32>,
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
