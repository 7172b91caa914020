//! Synthetic embeddings with planted near-duplicates, for the semantic tier's tests, benches and
//! measurements: unit vectors grouped around random topic directions, plus pairs whose cosine is
//! set exactly in a chosen range. Deterministic from the seed, generated in parallel.
//!
//! A row is `normalize(√w · topic + √(1−w) · g)` with `g` a random unit vector, so two rows of
//! one topic have cosine ≈ `w` (± ~`(1−w)/√dim`) and rows of different topics ≈ 0: with `w = 0.5`
//! and `dim ≥ 64`, unplanted rows stay far below a 0.9 threshold. A planted partner of row `x` is
//! `c·x + √(1−c²)·u` with `u` a random unit vector orthogonal to `x`: its cosine to `x` is `c`.

use rayon::prelude::*;

use super::{SplitMix64, dot_f64, unit_f64};
use crate::error::{Error, Result};

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyntheticSpec {
    /// Number of rows (planted partners included).
    pub rows: usize,
    /// Length of each row.
    pub dim: usize,
    /// Number of topic directions.
    pub topics: usize,
    /// Number of planted near-duplicate pairs (`2 × planted ≤ rows`).
    pub planted: usize,
    /// Planted cosines are uniform in `[min_cosine, max_cosine]`.
    pub min_cosine: f32,
    /// See `min_cosine`.
    pub max_cosine: f32,
    /// Weight `w` of the topic direction in each row (0..1).
    pub topic_weight: f32,
    /// Seed of everything.
    pub seed: u64,
}

/// Generated embeddings and what was planted in them.
#[derive(Debug, Clone)]
pub struct Synthetic {
    /// Length of each row.
    pub dim: usize,
    /// `rows × dim` unit vectors.
    pub data: Vec<f32>,
    /// The topic of each row.
    pub topic: Vec<u32>,
    /// The planted pairs `(i, j, cosine)`, `i < j`, sorted; the cosine is the f64 dot product
    /// of the stored f32 rows, rounded to f32 (as [`super::duplicate_pairs`] reports it).
    pub planted: Vec<(u32, u32, f32)>,
}

/// A standard normal from two uniforms (Box–Muller; one of the pair is enough here).
fn gaussian(rng: &mut SplitMix64) -> f64 {
    let u1 = 1.0 - unit_f64(rng); // (0, 1]: ln is finite
    let u2 = unit_f64(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A random unit vector in f64.
fn unit(rng: &mut SplitMix64, dim: usize) -> Vec<f64> {
    loop {
        let v: Vec<f64> = (0..dim).map(|_| gaussian(rng)).collect();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm > 1e-9 {
            return v.into_iter().map(|x| x / norm).collect();
        }
    }
}

/// A per-row generator: independent streams, so rows can be made in any order or thread.
fn row_rng(seed: u64, stream: u64, row: usize) -> SplitMix64 {
    let mut mix = SplitMix64::new(seed ^ stream.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let base = mix.next_u64();
    SplitMix64::new(base ^ (row as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn to_unit_f32(v: &[f64]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter().map(|x| (x / norm) as f32).collect()
}

/// Generates embeddings as [`SyntheticSpec`] says. Errors on a spec that cannot be met.
pub fn generate(spec: &SyntheticSpec) -> Result<Synthetic> {
    let SyntheticSpec {
        rows: n,
        dim,
        topics,
        planted,
        min_cosine,
        max_cosine,
        topic_weight: w,
        seed,
    } = *spec;
    if dim < 2 || topics == 0 || 2 * planted > n || n > u32::MAX as usize {
        return Err(Error::Semantic(format!(
            "synthetic: impossible spec {spec:?}"
        )));
    }
    if !(min_cosine > -1.0
        && min_cosine <= max_cosine
        && max_cosine < 1.0
        && (0.0..1.0).contains(&w))
    {
        return Err(Error::Semantic(format!(
            "synthetic: bad cosines or weight in {spec:?}"
        )));
    }
    let centers: Vec<Vec<f64>> = (0..topics)
        .into_par_iter()
        .map(|t| unit(&mut row_rng(seed, 1, t), dim))
        .collect();

    // Which rows are planted partners, of which base row.
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut rng = SplitMix64::new(seed ^ 0x5851_F42D_4C95_7F2D);
    for i in 0..2 * planted {
        let j = i + rng.below(n - i);
        order.swap(i, j);
    }
    let mut base_of = vec![u32::MAX; n];
    for q in 0..planted {
        base_of[order[2 * q + 1] as usize] = order[2 * q];
    }
    let mut topic: Vec<u32> = (0..n)
        .map(|i| row_rng(seed, 2, i).below(topics) as u32)
        .collect();
    for i in 0..n {
        if base_of[i] != u32::MAX {
            topic[i] = topic[base_of[i] as usize];
        }
    }

    let (a, b) = (f64::from(w).sqrt(), (1.0 - f64::from(w)).sqrt());
    let mut data = vec![0.0f32; n * dim];
    data.par_chunks_mut(dim).enumerate().for_each(|(i, out)| {
        if base_of[i] != u32::MAX {
            return;
        }
        let g = unit(&mut row_rng(seed, 3, i), dim);
        let c = &centers[topic[i] as usize];
        let v: Vec<f64> = c.iter().zip(&g).map(|(c, g)| a * c + b * g).collect();
        out.copy_from_slice(&to_unit_f32(&v));
    });

    let partners: Vec<(u32, u32, Vec<f32>)> = (0..planted)
        .into_par_iter()
        .map(|q| {
            let (x_row, y_row) = (order[2 * q], order[2 * q + 1]);
            let x: Vec<f64> = data[x_row as usize * dim..(x_row as usize + 1) * dim]
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            let mut rng = row_rng(seed, 4, q);
            let c = f64::from(min_cosine) + f64::from(max_cosine - min_cosine) * unit_f64(&mut rng);
            // A random direction made orthogonal to x (retry in the unlikely parallel case).
            let u = loop {
                let g = unit(&mut rng, dim);
                let along: f64 = g.iter().zip(&x).map(|(g, x)| g * x).sum();
                let u: Vec<f64> = g.iter().zip(&x).map(|(g, x)| g - along * x).collect();
                let norm = u.iter().map(|v| v * v).sum::<f64>().sqrt();
                if norm > 1e-6 {
                    break u.into_iter().map(|v| v / norm).collect::<Vec<f64>>();
                }
            };
            let s = (1.0 - c * c).sqrt();
            let y: Vec<f64> = x.iter().zip(&u).map(|(x, u)| c * x + s * u).collect();
            (x_row, y_row, to_unit_f32(&y))
        })
        .collect();
    let mut planted_pairs = Vec::with_capacity(planted);
    for (x_row, y_row, y) in partners {
        data[y_row as usize * dim..(y_row as usize + 1) * dim].copy_from_slice(&y);
        let x = &data[x_row as usize * dim..(x_row as usize + 1) * dim];
        let cos = dot_f64(x, &y) as f32;
        planted_pairs.push((x_row.min(y_row), x_row.max(y_row), cos));
    }
    planted_pairs.sort_unstable_by_key(|&(i, j, _)| (i, j));
    Ok(Synthetic {
        dim,
        data,
        topic,
        planted: planted_pairs,
    })
}
