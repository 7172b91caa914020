//! Criterion benches of the packers on 1M samples of a realistic mix (60% single-image, 15%
//! multi-image, 25% text-only; InternVL tiling, lognormal text), throughput in samples. The
//! efficiency table and the comparison with Python packers are in benches/pack_baselines.py.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vlmprep::pack::rng::SplitMix64;
use vlmprep::pack::{Algo, Cost, Limits, OversizePolicy, plan_packs};

const N: usize = 1_000_000;

fn uniform(r: &mut SplitMix64) -> f64 {
    (r.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// exp(N(mu, sigma)) by Box–Muller, clamped to `lo..=hi`.
fn lognormal(r: &mut SplitMix64, mu: f64, sigma: f64, lo: f64, hi: f64) -> u32 {
    let (u1, u2) = (uniform(r).max(1e-12), uniform(r));
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    (mu + sigma * z).exp().clamp(lo, hi) as u32
}

/// Tiles of one image: InternVL grid of k tiles plus a thumbnail when k > 1.
fn image_tiles(r: &mut SplitMix64, max_grid: u32) -> u32 {
    const GRID: [u32; 10] = [1, 2, 3, 4, 5, 6, 8, 9, 10, 12];
    let k = GRID[r.below(GRID.len())].min(max_grid.max(1));
    if k == 1 { 1 } else { k + 1 }
}

fn mix(n: usize, seed: u64) -> Vec<Cost> {
    let mut r = SplitMix64::new(seed);
    (0..n)
        .map(|_| match r.below(20) {
            0..12 => {
                let tiles = image_tiles(&mut r, 12);
                let text = lognormal(&mut r, 5.5, 1.0, 8.0, 6000.0);
                Cost::new(256 * tiles + 2 + text, tiles)
            }
            12..15 => {
                let images = 2 + r.below(5) as u32;
                let tiles: u32 = (0..images).map(|_| image_tiles(&mut r, 12 / images)).sum();
                let text = lognormal(&mut r, 5.0, 1.0, 8.0, 4000.0);
                Cost::new(256 * tiles + 2 * images + text, tiles)
            }
            _ => Cost::new(lognormal(&mut r, 6.5, 1.0, 16.0, 12000.0), 0),
        })
        .collect()
}

fn bench_pack(c: &mut Criterion) {
    let costs = mix(N, 7);
    let mut g = c.benchmark_group("cpu/pack");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N as u64));
    for (name, limits) in [
        (
            "8192x16",
            Limits {
                tokens: 8192,
                tiles: 16,
            },
        ),
        ("8192x-", Limits::tokens_only(8192)),
    ] {
        for (algo_name, algo) in [
            ("bfd", Algo::Bfd),
            ("online1024", Algo::Online { buffer: 1024 }),
            ("ordered", Algo::Ordered),
        ] {
            g.bench_with_input(BenchmarkId::new(algo_name, name), &limits, |b, &limits| {
                b.iter(|| {
                    plan_packs(
                        black_box(&costs),
                        limits,
                        algo,
                        OversizePolicy::Alone,
                        &|_| None,
                        1,
                    )
                    .expect("valid settings")
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_pack);
criterion_main!(benches);
