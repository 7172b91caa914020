//! Criterion benches of the packers on 1M samples of a realistic mix (60% single-image, 15%
//! multi-image, 25% text-only; InternVL tiling, lognormal text), throughput in samples. The
//! efficiency table and the comparison with Python packers are in benches/pack_baselines.py.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vlmprep::pack::{Algo, Limits, OversizePolicy, plan_packs};

#[path = "common/pack_mix.rs"]
mod pack_mix;

const N: usize = 1_000_000;

fn bench_pack(c: &mut Criterion) {
    let costs = pack_mix::mix(N, 7);
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
    // Bfd's slower cases. 8192 x 24: limits the mix fills about equally (Σtokens/L ≈ Σtiles/T),
    // so the pack-by-pack fill candidate runs too. 16384 x 32: tiles bind with several items
    // per pack, so the pattern candidate runs first.
    for (name, tokens, tiles) in [("8192x24", 8192, 24), ("16384x32", 16384, 32)] {
        let limits = Limits { tokens, tiles };
        g.bench_with_input(BenchmarkId::new("bfd", name), &limits, |b, &limits| {
            b.iter(|| {
                plan_packs(
                    black_box(&costs),
                    limits,
                    Algo::Bfd,
                    OversizePolicy::Alone,
                    &|_| None,
                    1,
                )
                .expect("valid settings")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_pack);
criterion_main!(benches);
