//! Criterion benches of the SigLIP embed stage on the CPU: preprocessing (resize to the model's
//! size + normalize), the image tower and the text tower, per batch.
//!
//! The committed tiny fixture model (tests/fixtures/siglip/tiny-a) always runs: it measures the
//! per-op overheads. The base-size model that `benches/siglip_base.py make` writes to
//! target/siglip-base/model (or the folder in VLMPREP_SIGLIP_MODEL) runs when present: that
//! one measures the GEMM-bound forward the side-by-side comparison in BENCHMARKS.md is about.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use vlmprep::backend::CpuBackend;
use vlmprep::demo::pattern;
use vlmprep::image::RgbImage;
use vlmprep::model::siglip::{SiglipModel, preprocess};

fn images(n: usize, width: u32, height: u32) -> Vec<RgbImage> {
    (0..n)
        .map(|i| RgbImage {
            width,
            height,
            data: pattern(width, height, i as u32),
        })
        .collect()
}

fn models() -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = vec![(
        "tiny-a".to_string(),
        root.join("tests/fixtures/siglip/tiny-a"),
    )];
    let base = std::env::var_os("VLMPREP_SIGLIP_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/siglip-base/model"));
    if base.join("config.json").is_file() {
        out.push(("base".to_string(), base));
    }
    out
}

fn bench_embed(c: &mut Criterion) {
    let captions: Vec<String> = (0..32)
        .map(|i| format!("a photo of {i} red boats on the sea at sunset, seen from a bridge"))
        .collect();
    for (name, dir) in models() {
        let model = SiglipModel::load(&dir, CpuBackend).expect("loading the bench model");
        // base-size batches take seconds: fewer of them, so the group ends in about a minute
        let batch = if name == "base" { 8 } else { 32 };
        let imgs = images(batch, 640, 480);
        let refs: Vec<&RgbImage> = imgs.iter().collect();
        let pixels = preprocess::pixel_values(&refs, &model.preprocess).unwrap();
        let texts: Vec<&str> = captions[..batch].iter().map(String::as_str).collect();

        let mut group = c.benchmark_group(format!("cpu/siglip-{name}"));
        group.throughput(Throughput::Elements(batch as u64));
        if name == "base" {
            group.sample_size(10);
        }
        group.bench_function(format!("preprocess-640x480/batch{batch}"), |b| {
            b.iter(|| preprocess::pixel_values(black_box(&refs), &model.preprocess).unwrap())
        });
        group.bench_function(format!("image-tower/batch{batch}"), |b| {
            b.iter(|| model.image_features(black_box(&pixels)).unwrap())
        });
        group.bench_function(format!("text-tower+tokenize/batch{batch}"), |b| {
            b.iter(|| model.embed_texts(black_box(&texts)).unwrap())
        });
        group.finish();
    }
}

criterion_group!(benches, bench_embed);
criterion_main!(benches);
