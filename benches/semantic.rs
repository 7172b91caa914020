//! Criterion benches of the semantic dedup tier on 20k × 768 synthetic embeddings (140 clusters,
//! the automatic `ceil(sqrt(n/2))`): assigning all rows to fitted centroids, and the blocked
//! within-cluster pairs at cosine ≥ 0.95. Throughput in rows. The side-by-side comparison with
//! numpy is `examples/semdedup_synthetic.rs` + `benches/semdedup_numpy.py` (BENCHMARKS.md).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vlmprep::curate::semantic::synthetic::{SyntheticSpec, generate};
use vlmprep::curate::semantic::{Centroids, SemanticParams, duplicate_pairs};

const ROWS: usize = 20_000;
const DIM: usize = 768;

fn semantic(c: &mut Criterion) {
    let params = SemanticParams {
        eps: 0.05,
        ..SemanticParams::default()
    };
    let s = generate(&SyntheticSpec {
        rows: ROWS,
        dim: DIM,
        topics: params.clusters_for(ROWS),
        planted: ROWS / 50,
        min_cosine: 0.95,
        max_cosine: 0.999,
        topic_weight: 0.5,
        seed: 1,
    })
    .expect("synthetic spec is valid");
    let centroids = Centroids::fit(&s.data, DIM, &params).expect("fit");
    let assignment = centroids.assign(&s.data).expect("assign");

    let mut g = c.benchmark_group("semantic");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.sample_size(10);
    g.bench_function("cpu_assign_20k_x768", |b| {
        b.iter(|| black_box(centroids.assign(black_box(&s.data)).expect("assign")))
    });
    g.bench_function("cpu_duplicate_pairs_20k_x768", |b| {
        b.iter(|| {
            black_box(
                duplicate_pairs(black_box(&s.data), DIM, &assignment, params.min_cosine())
                    .expect("pairs"),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, semantic);
criterion_main!(benches);
