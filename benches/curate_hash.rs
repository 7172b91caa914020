//! Criterion benches of the curation tiers' per-image signals and the perceptual search: the
//! exact tier's xxh3-128 of an image's bytes, the pHash of a decoded web-size image (gray
//! conversion, Pillow LANCZOS to 32×32, DCT, median; decode excluded), and the flip-aware
//! multi-index search for all pairs within 10 bits over 100k hashes. The whole `curate` run
//! against Pillow + ImageHash + xxhash is benches/curate_compare.py (BENCHMARKS.md).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use vlmprep::curate::exact::content_hash;
use vlmprep::curate::perceptual::near_duplicate_pairs;
use vlmprep::curate::phash::{PerceptualHash, phash};
use vlmprep::demo::pattern;
use vlmprep::image::RgbImage;

/// SplitMix64: deterministic hashes without a dependency.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` hashes: random ones, and every tenth a copy of an earlier one with up to 6 bits
/// flipped, so the search has real matches to report.
fn hashes(n: usize) -> Vec<PerceptualHash> {
    let mut s = 7u64;
    let mut out: Vec<PerceptualHash> = Vec::with_capacity(n);
    for i in 0..n {
        let h = if i % 10 == 9 {
            let mut h = out[(next(&mut s) as usize) % i].hash;
            for _ in 0..next(&mut s) % 7 {
                h ^= 1 << (next(&mut s) % 64);
            }
            h
        } else {
            next(&mut s)
        };
        out.push(PerceptualHash {
            hash: h,
            flipped: next(&mut s),
        });
    }
    out
}

fn curate_hash(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu/curate");
    let bytes: Vec<u8> = {
        let mut s = 1u64;
        (0..100_000).map(|_| next(&mut s) as u8).collect()
    };
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("xxh3-128/100KB", |b| {
        b.iter(|| black_box(content_hash(black_box(&bytes))))
    });

    let (w, h) = (640u32, 480u32);
    let image = RgbImage {
        width: w,
        height: h,
        data: pattern(w, h, 3),
    };
    g.throughput(Throughput::Elements(1));
    g.bench_function("phash/web-0.3MP", |b| {
        b.iter(|| black_box(phash(black_box(&image)).expect("phash")))
    });

    let pool = hashes(100_000);
    g.throughput(Throughput::Elements(pool.len() as u64));
    g.sample_size(10);
    g.bench_function("phash-pairs-k10/100k", |b| {
        b.iter(|| black_box(near_duplicate_pairs(black_box(&pool), 10)))
    });
    g.finish();
}

criterion_group!(benches, curate_hash);
criterion_main!(benches);
