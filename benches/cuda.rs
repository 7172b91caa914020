//! Criterion benches of the CUDA stages, one group per stage: tiling from host images (upload
//! included), nvJPEG decode + tile from JPEG bytes (hardware engine and hybrid), the perceptual
//! hash, and the SigLIP forward of the committed tiny model with the bf16 passes separate,
//! fused, and fused with the attention kernel (per-op overheads; the so400m figures come from
//! `examples/gpu_bench.rs`). Each iteration ends with the stream synchronized, so the time is
//! the device's.
//!
//! Needs a GPU: without one it prints why and measures nothing. `scripts/gpu-bundle` builds it
//! (`cargo bench --features cuda --bench cuda --no-run`) for a GPU machine without Rust.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, Throughput};

use vlmprep::backend::Backend;
use vlmprep::backend::TileSpec;
use vlmprep::backend::cuda::CudaBackend;
use vlmprep::backend::cuda::nvjpeg::NvJpegDecoder;
use vlmprep::backend::cuda::tensor::CudaTensorOps;
use vlmprep::demo::pattern;
use vlmprep::image::RgbImage;
use vlmprep::image::decode::DecodeOptions;
use vlmprep::image::normalize::{Dtype, Normalization};
use vlmprep::image::resize::ResizeFilter;
use vlmprep::image::tiling::{InternVlSettings, TilePlan, Tiler, TilingRule};
use vlmprep::model::siglip::SiglipModel;

/// Images per batch: a decode + tile batch of the size `tile` uses on a GPU.
const BATCH: usize = 256;

fn web_images() -> Vec<RgbImage> {
    (0..BATCH)
        .map(|i| RgbImage {
            width: 640,
            height: 480,
            data: pattern(640, 480, i as u32),
        })
        .collect()
}

fn spec() -> TileSpec {
    TileSpec {
        filter: ResizeFilter::Bicubic,
        dtype: Dtype::Bf16,
        norm: Normalization::SIGLIP,
    }
}

fn rules() -> [(&'static str, TilingRule); 2] {
    [
        ("fixed384", TilingRule::Fixed { size: 384 }),
        (
            "internvl448",
            TilingRule::InternVl(InternVlSettings::default()),
        ),
    ]
}

fn plans(rule: TilingRule, sizes: impl Iterator<Item = (u32, u32)>) -> Vec<TilePlan> {
    let tiler = Tiler::new(rule).unwrap();
    sizes.map(|(w, h)| tiler.plan(w, h).unwrap()).collect()
}

fn tile(c: &mut Criterion, gpu: &CudaBackend) {
    let images = web_images();
    let refs: Vec<&RgbImage> = images.iter().collect();
    let mut g = c.benchmark_group("cuda/tile");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, rule) in rules() {
        let plans = plans(rule, images.iter().map(|i| (i.width, i.height)));
        g.bench_function(format!("{name}-bf16/{BATCH}x640x480"), |b| {
            b.iter(|| {
                let tiles = gpu.tile_batch(&refs, &plans, &spec()).unwrap();
                gpu.synchronize().unwrap();
                black_box(tiles)
            })
        });
    }
    g.finish();
}

fn decode_tile(c: &mut Criterion, gpu: &Arc<CudaBackend>) {
    let photo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pixels/inputs/photo0-baseline420.jpg");
    let jpeg = std::fs::read(&photo).unwrap();
    let header = vlmprep::image::probe::probe(&jpeg).unwrap();
    let size = header.oriented_size();
    let encoded: Vec<&[u8]> = (0..BATCH).map(|_| jpeg.as_slice()).collect();
    let max_pixels = DecodeOptions::default().max_pixels;
    let mut g = c.benchmark_group("cuda/decode_tile");
    g.throughput(Throughput::Elements(BATCH as u64));
    for hardware in [true, false] {
        let route = if hardware { "hardware" } else { "hybrid" };
        let decoder = match NvJpegDecoder::new(gpu.clone(), hardware) {
            Ok(d) if !hardware || d.hardware_available() => d,
            Ok(_) => {
                eprintln!("cuda/decode_tile/{route}: no hardware JPEG engine, skipped");
                continue;
            }
            Err(e) => {
                eprintln!("cuda/decode_tile/{route}: nvJPEG unavailable ({e}), skipped");
                continue;
            }
        };
        for (name, rule) in rules() {
            let plans = plans(rule, std::iter::repeat_n(size, BATCH));
            g.bench_function(format!("{route}/{name}-bf16/{BATCH}-photos"), |b| {
                b.iter(|| {
                    let decoded: Vec<_> = decoder
                        .decode_batch(&encoded, max_pixels)
                        .into_iter()
                        .map(|r| r.unwrap().0)
                        .collect();
                    let images: Vec<_> = decoded.iter().collect();
                    let tiles = gpu.tile_device_batch(&images, &plans, &spec()).unwrap();
                    gpu.synchronize().unwrap();
                    black_box(tiles)
                })
            });
        }
    }
    g.finish();
}

fn phash(c: &mut Criterion, gpu: &CudaBackend) {
    let images = web_images();
    let refs: Vec<&RgbImage> = images.iter().collect();
    let mut g = c.benchmark_group("cuda/phash");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function(format!("{BATCH}x640x480"), |b| {
        b.iter(|| black_box(gpu.phash_batch(&refs).unwrap()))
    });
    g.finish();
}

fn siglip(c: &mut Criterion, gpu: &Arc<CudaBackend>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/siglip/tiny-a");
    let model = SiglipModel::load(&dir, CudaTensorOps::new(gpu.clone()).unwrap()).unwrap();
    let side = model.config.vision.image_size;
    let batch = 64;
    let pixels: Vec<f32> = (0..batch * 3 * side * side)
        .map(|i| ((i * 7919) % 255) as f32 / 127.5 - 1.0)
        .collect();
    let mut g = c.benchmark_group("cuda/siglip-tiny-a");
    g.throughput(Throughput::Elements(batch as u64));
    for (name, fused, flash) in [
        ("separate", false, false),
        ("fused", true, false),
        ("flash", true, true),
    ] {
        model.ops().set_fused(fused);
        model.ops().set_flash_attention(flash);
        // image_features downloads the result, which synchronizes
        g.bench_function(format!("image-tower/{name}/{batch}"), |b| {
            b.iter(|| black_box(model.image_features(&pixels).unwrap()))
        });
    }
    model.ops().set_fused(true);
    model.ops().set_flash_attention(false);
    g.finish();
}

fn main() {
    let gpu = match CudaBackend::new(0) {
        Ok(gpu) => Arc::new(gpu),
        Err(e) => {
            eprintln!("cuda benches skipped: no GPU ({e})");
            return;
        }
    };
    eprintln!("on {}", gpu.device_name());
    let mut c = Criterion::default().configure_from_args();
    tile(&mut c, &gpu);
    decode_tile(&mut c, &gpu);
    phash(&mut c, &gpu);
    siglip(&mut c, &gpu);
    c.final_summary();
}
