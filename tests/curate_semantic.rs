//! The semantic dedup tier on synthetic embeddings with planted near-duplicates: recall of the
//! planted pairs, no pair below the threshold and none that was not planted, equality with a
//! brute-force all-pairs answer, independence from the thread count and the tile size, and the
//! incremental (cross-corpus) pairs.

use std::collections::BTreeSet;

use vlmprep::curate::semantic::synthetic::{Synthetic, SyntheticSpec, generate};
use vlmprep::curate::semantic::{
    Assignment, Centroids, SemanticParams, cross_pairs, cross_pairs_with_tile, duplicate_pairs,
    duplicate_pairs_with_tile, kept_fraction_by_eps,
};

const DIM: usize = 96;
const MIN_COSINE: f32 = 0.94;

/// 6000 rows in 24 topics, 400 planted pairs at cosine 0.95–0.999.
fn corpus(seed: u64) -> Synthetic {
    generate(&SyntheticSpec {
        rows: 6000,
        dim: DIM,
        topics: 24,
        planted: 400,
        min_cosine: 0.95,
        max_cosine: 0.999,
        topic_weight: 0.5,
        seed,
    })
    .unwrap()
}

fn params() -> SemanticParams {
    SemanticParams {
        clusters: 24,
        fit_sample: 3000,
        iterations: 20,
        seed: 11,
        eps: 1.0 - MIN_COSINE,
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

fn row(s: &Synthetic, i: u32) -> &[f32] {
    &s.data[i as usize * s.dim..(i as usize + 1) * s.dim]
}

#[test]
fn planted_pairs_are_found_and_nothing_else() {
    let s = corpus(1);
    let c = Centroids::fit(&s.data, DIM, &params()).unwrap();
    let a = c.assign(&s.data).unwrap();
    let pairs = duplicate_pairs(&s.data, DIM, &a, MIN_COSINE).unwrap();

    // Every reported pair is real: above the threshold, in one cluster, and planted (unplanted
    // rows have cosine ≈ 0.5 ± 0.1 within a topic by construction, far below 0.94).
    let planted: BTreeSet<(u32, u32)> = s.planted.iter().map(|p| (p.0, p.1)).collect();
    for &(i, j, cos) in &pairs {
        assert!(i < j);
        assert!(cos >= MIN_COSINE, "{i}-{j} at {cos}");
        assert!((f64::from(cos) - dot(row(&s, i), row(&s, j))).abs() < 1e-6);
        assert_eq!(a.cluster[i as usize], a.cluster[j as usize]);
        assert!(planted.contains(&(i, j)), "false pair {i}-{j} at {cos}");
    }
    // Recall: a planted pair is missed only when its two rows land in different clusters. The
    // partner moves by at most arccos(0.95) ≈ 18°, and with clusters matching the 24 topics
    // (rows sit at cosine ≈ 0.7 to their topic's centroid, ≈ 0 to others) a split should be
    // rare; ≥ 0.98 leaves room for a few boundary cases and k-means merging two topics.
    let found = pairs.len() as f64 / s.planted.len() as f64;
    println!("recall {found:.4} ({} of {})", pairs.len(), s.planted.len());
    assert!(found >= 0.98, "recall {found}");

    // The keep fractions follow from the pairs: each found pair removes one row.
    let kept = kept_fraction_by_eps(6000, &pairs, &[1.0 - MIN_COSINE, 0.0]);
    assert_eq!(kept[0].1, (6000 - pairs.len()) as f64 / 6000.0);
    assert_eq!(kept[1].1, 1.0);
}

#[test]
fn pairs_equal_brute_force_within_clusters() {
    let s = corpus(2);
    // A coarse clustering on purpose (6 clusters for 24 topics): big clusters, many candidates.
    let p = SemanticParams {
        clusters: 6,
        ..params()
    };
    let a = Centroids::fit(&s.data, DIM, &p)
        .unwrap()
        .assign(&s.data)
        .unwrap();
    // A lower threshold than the planted range so that some unplanted pairs qualify too.
    let min_cos = 0.6f32;
    let got = duplicate_pairs_with_tile(&s.data, DIM, &a, min_cos, 100).unwrap();
    let n = s.data.len() / DIM;
    let mut want = Vec::new();
    for i in 0..n as u32 {
        for j in i + 1..n as u32 {
            if a.cluster[i as usize] == a.cluster[j as usize] {
                let c = dot(row(&s, i), row(&s, j)) as f32;
                if c >= min_cos {
                    want.push((i, j, c));
                }
            }
        }
    }
    assert!(want.len() > s.planted.len() + 100, "{} pairs", want.len());
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((g.0, g.1), (w.0, w.1));
        assert!((g.2 - w.2).abs() <= 1e-6, "{g:?} vs {w:?}");
    }
}

#[test]
fn same_result_for_any_thread_count_and_tile() {
    let s = corpus(3);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let c = Centroids::fit(&s.data, DIM, &params()).unwrap();
            let a = c.assign(&s.data).unwrap();
            let pairs = duplicate_pairs(&s.data, DIM, &a, 0.7).unwrap();
            (c, a, pairs)
        })
    };
    let one = run(1);
    let two = run(2);
    assert_eq!(one.0, two.0, "centroids");
    assert_eq!(one.1, two.1, "assignment");
    assert_eq!(one.2, two.2, "pairs");
    assert!(!one.2.is_empty());

    // Blocking does not change the answer: one tile as big as any cluster, and tiny tiles.
    let whole = duplicate_pairs_with_tile(&s.data, DIM, &one.1, 0.7, 6000).unwrap();
    let tiny = duplicate_pairs_with_tile(&s.data, DIM, &one.1, 0.7, 7).unwrap();
    assert_eq!(whole, one.2);
    assert_eq!(tiny, one.2);
}

#[test]
fn cross_pairs_match_pairs_across_the_split() {
    // Split one corpus into a "reference" (first 4000 rows) and a "new" part (last 2000), new
    // rows assigned to the reference centroids: the cross pairs are exactly the pairs of the
    // whole corpus that straddle the split.
    let s = corpus(4);
    let split = 4000;
    let (reference, new) = s.data.split_at(split * DIM);
    let c = Centroids::fit(reference, DIM, &params()).unwrap();
    let ra = c.assign(reference).unwrap();
    let na = c.assign(new).unwrap();
    let cross = cross_pairs(new, &na, reference, &ra, DIM, MIN_COSINE).unwrap();
    let whole = Assignment {
        cluster: [ra.cluster.clone(), na.cluster.clone()].concat(),
        centrality: [ra.centrality.clone(), na.centrality.clone()].concat(),
    };
    let all = duplicate_pairs(&s.data, DIM, &whole, MIN_COSINE).unwrap();
    let mut want: Vec<(u32, u32, f32)> = all
        .iter()
        .filter(|&&(i, j, _)| (i as usize) < split && (j as usize) >= split)
        .map(|&(i, j, c)| (j - split as u32, i, c))
        .collect();
    want.sort_unstable_by_key(|&(i, j, _)| (i, j));
    assert!(want.len() > 50, "{} straddling pairs", want.len());
    assert_eq!(cross, want);
    let tiled = cross_pairs_with_tile(new, &na, reference, &ra, DIM, MIN_COSINE, 13).unwrap();
    assert_eq!(tiled, cross);
}

#[test]
fn the_first_bad_row_is_named_wherever_it_is_checked() {
    // The norm check of assign and duplicate_pairs runs as rows are prepared, tile by tile and
    // strip by strip, in parallel: the error must still name the first bad row.
    let s = corpus(5);
    let c = Centroids::fit(&s.data, DIM, &params()).unwrap();
    let mut data = s.data.clone();
    for &(r, v) in &[(4321usize, f32::NAN), (1500, 3.0), (5999, f32::INFINITY)] {
        data[r * DIM + 7] = v;
    }
    let e = c.assign(&data).unwrap_err().to_string();
    assert!(e.contains("row 1500") && e.contains("norm"), "{e}");
    // Row 1500 alone in its cluster (checked apart from the strips), row 900 in a big one.
    data[900 * DIM + 3] = f32::NAN;
    let mut cluster = vec![0u32; 6000];
    cluster[1500] = 1;
    let a = Assignment {
        cluster,
        centrality: vec![1.0; 6000],
    };
    let e = duplicate_pairs_with_tile(&data, DIM, &a, 0.9, 700)
        .unwrap_err()
        .to_string();
    assert!(e.contains("row 900") && e.contains("non-finite"), "{e}");
    data[900 * DIM + 3] = s.data[900 * DIM + 3];
    let e = duplicate_pairs_with_tile(&data, DIM, &a, 0.9, 700)
        .unwrap_err()
        .to_string();
    assert!(e.contains("row 1500"), "{e}");
}
