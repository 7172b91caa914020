//! Criterion benches, one group per stage of the CPU backend: tar index, header probe, JPEG
//! decode, tile (resize + cut + normalize) and decode + tile together. Inputs are generated
//! (vlmprep's demo pattern), so the benches need no data; for real photos and the side-by-side
//! comparison with Pillow and OpenCV see benches/compare_decode_tile.py and BENCHMARKS.md.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jpeg_encoder::{ColorType, Encoder, SamplingFactor};

use vlmprep::backend::{Backend, CpuBackend, TileSpec};
use vlmprep::demo::pattern;
use vlmprep::image::RgbImage;
use vlmprep::image::decode::{DecodeOptions, decode_rgb8};
use vlmprep::image::normalize::{Dtype, Normalization};
use vlmprep::image::probe::probe;
use vlmprep::image::resample_simd::{Level, Resampler};
use vlmprep::image::resize::{Region, ResizeFilter, resize_region_into, resize_region_into_fir};
use vlmprep::image::tiling::{InternVlSettings, TilePlan, TilingRule, plan};
use vlmprep::shard::tar::index_tar;
use vlmprep::sink::tar::TarWriter;

fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = Encoder::new(&mut out, 90);
    enc.set_sampling_factor(SamplingFactor::F_2_2);
    enc.encode(
        &pattern(width, height, 1),
        width as u16,
        height as u16,
        ColorType::Rgb,
    )
    .expect("encoding a generated image");
    out
}

const SIZES: [(u32, u32, &str); 2] = [(640, 480, "web-0.3MP"), (1920, 1080, "wallpaper-2MP")];

fn bench_tar_index(c: &mut Criterion) {
    let mut tar = TarWriter::new(Vec::new());
    let payload = vec![7u8; 20_000];
    for i in 0..2_000 {
        tar.append(&format!("{i:09}.jpg"), &payload).unwrap();
        tar.append(&format!("{i:09}.txt"), b"a caption").unwrap();
    }
    let bytes = tar.finish().unwrap();
    let mut group = c.benchmark_group("cpu/tar-index");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("4000-members", |b| {
        b.iter(|| index_tar(black_box(&bytes), Path::new("bench.tar")))
    });
    group.finish();
}

fn bench_probe(c: &mut Criterion) {
    let data = jpeg(1920, 1080);
    let mut group = c.benchmark_group("cpu/probe");
    group.throughput(Throughput::Elements(1));
    group.bench_function("jpeg", |b| b.iter(|| probe(black_box(&data)).unwrap()));
    group.finish();
}

fn bench_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("cpu/decode");
    group.throughput(Throughput::Elements(1));
    for (w, h, name) in SIZES {
        let data = jpeg(w, h);
        group.bench_function(name, |b| {
            b.iter(|| decode_rgb8(black_box(&data), &DecodeOptions::default()).unwrap())
        });
    }
    group.finish();
}

fn bench_tile(c: &mut Criterion) {
    let rule = TilingRule::InternVl(InternVlSettings::default());
    let mut group = c.benchmark_group("cpu/tile-internvl");
    group.throughput(Throughput::Elements(1));
    for (w, h, name) in SIZES {
        let image = decode_rgb8(&jpeg(w, h), &DecodeOptions::default()).unwrap();
        let tile_plan = plan(&rule, image.width, image.height).unwrap();
        for dtype in [Dtype::U8, Dtype::F32] {
            let spec = TileSpec {
                filter: ResizeFilter::Bicubic,
                dtype,
                norm: Normalization::IMAGENET,
            };
            group.bench_function(format!("{name}/{dtype:?}"), |b| {
                b.iter(|| {
                    CpuBackend
                        .tile_batch(&[&image], &[tile_plan], &spec)
                        .unwrap()
                })
            });
        }
    }
    group.finish();
}

/// The resize jobs of a plan, as the CPU backend runs them: grid tiles row-major, then the
/// thumbnail; `(full size, region)`.
fn jobs(p: &TilePlan) -> Vec<((u32, u32), Region)> {
    let (tw, th) = p.tile;
    let mut jobs: Vec<_> = (0..p.grid.1)
        .flat_map(|r| (0..p.grid.0).map(move |c| (c, r)))
        .map(|(c, r)| {
            let region = Region {
                x: c * tw,
                y: r * th,
                width: tw,
                height: th,
            };
            (p.resize, region)
        })
        .collect();
    if let Some(side) = p.thumbnail {
        let whole = Region {
            x: 0,
            y: 0,
            width: side,
            height: side,
        };
        jobs.push(((side, side), whole));
    }
    jobs
}

/// Every job of a plan through `resize`, each into the front of `out`.
fn resize_jobs(
    jobs: &[((u32, u32), Region)],
    out: &mut [u8],
    mut resize: impl FnMut((u32, u32), Region, &mut [u8]) -> vlmprep::Result<()>,
) {
    for &(full, region) in jobs {
        let dst = &mut out[..3 * (region.width * region.height) as usize];
        resize(full, region, dst).unwrap();
    }
    black_box(out);
}

/// The resize alone (u8 tiles, one thread), through fast_image_resize (`fir`, the path before
/// `resample_simd`) and through `resample_simd` (`simd`), on the same inputs in one run.
fn bench_resize(c: &mut Criterion) {
    use ResizeFilter::Bicubic;
    let internvl = TilingRule::InternVl(InternVlSettings::default());
    let fixed384 = TilePlan {
        resize: (384, 384),
        grid: (1, 1),
        tile: (384, 384),
        thumbnail: None,
    };
    let cases = [
        (
            "640x480-internvl",
            640,
            480,
            plan(&internvl, 640, 480).unwrap(),
        ),
        ("640x480-fixed384", 640, 480, fixed384),
        (
            "4000x3000-internvl",
            4000,
            3000,
            plan(&internvl, 4000, 3000).unwrap(),
        ),
        ("4000x3000-fixed384", 4000, 3000, fixed384),
    ];
    let mut group = c.benchmark_group("cpu/resize");
    group.throughput(Throughput::Elements(1));
    for (name, w, h, p) in cases {
        let image = RgbImage {
            width: w,
            height: h,
            data: pattern(w, h, 1),
        };
        let jobs = jobs(&p);
        let biggest = jobs
            .iter()
            .map(|(_, r)| 3 * (r.width * r.height) as usize)
            .max()
            .unwrap();
        let mut out = vec![0u8; biggest];
        let mut fir = fast_image_resize::Resizer::new();
        group.bench_function(format!("{name}/fir"), |b| {
            b.iter(|| {
                resize_jobs(&jobs, &mut out, |full, region, dst| {
                    resize_region_into_fir(&mut fir, &image, full, region, Bicubic, dst)
                })
            })
        });
        // The kernels this CPU runs (AVX-512 where it has F/BW/VBMI), then AVX2 alone.
        for (label, level) in [("simd", Resampler::detect()), ("simd-avx2", Level::Avx2)] {
            let mut simd = Resampler::with_level(level);
            group.bench_function(format!("{name}/{label}"), |b| {
                b.iter(|| {
                    resize_jobs(&jobs, &mut out, |full, region, dst| {
                        resize_region_into(&mut simd, &image, full, region, Bicubic, dst)
                    })
                })
            });
        }
    }
    group.finish();
}

fn bench_decode_tile(c: &mut Criterion) {
    let rule = TilingRule::InternVl(InternVlSettings::default());
    let spec = TileSpec {
        filter: ResizeFilter::Bicubic,
        dtype: Dtype::U8,
        norm: Normalization::IMAGENET,
    };
    let mut group = c.benchmark_group("cpu/decode+tile-internvl");
    group.throughput(Throughput::Elements(1));
    for (w, h, name) in SIZES {
        let data = jpeg(w, h);
        group.bench_function(name, |b| {
            b.iter(|| {
                let header = probe(&data).unwrap();
                let (w, h) = header.oriented_size();
                let p = plan(&rule, w, h).unwrap();
                let image = decode_rgb8(&data, &DecodeOptions::default()).unwrap();
                CpuBackend.tile_batch(&[&image], &[p], &spec).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_tar_index,
    bench_probe,
    bench_decode,
    bench_tile,
    bench_resize,
    bench_decode_tile
);
criterion_main!(benches);
