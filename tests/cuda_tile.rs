//! CUDA tiling parity: every tiling rule, filter and dtype over images of odd sizes, upscales
//! and strong downscales; same layout as the CPU backend, every byte written.
//!
//! The kernels follow Pillow's algorithm (weights, u8 rounding and clamping between and after
//! the passes), so the hard check is against Pillow itself (`resize_like_pillow` of the whole
//! image, tiles cut from it): at most two levels (f32 weights instead of Pillow's 22-bit fixed
//! point; see `tolerance`), plus bf16's own rounding. Against the CPU backend (fast_image_resize, which keeps
//! more than u8 between its bicubic passes) the mean difference is held under half a level and
//! the max is only reported: on hard edges the two differ by up to ~20 levels where Pillow
//! clamps the overshoot of the first pass.
//!
//! Needs a GPU: each test prints why and returns when `CudaBackend::new(0)` fails, unless
//! `VLMPREP_REQUIRE_GPU=1`, which turns a missing GPU into a failure.
#![cfg(feature = "cuda")]

mod common;
use common::images::pattern;

use vlmprep::backend::cuda::CudaBackend;
use vlmprep::backend::cuda::DeviceImage;
use vlmprep::backend::{Backend, CpuBackend, HostTiles, TileLayout, TileSpec};
use vlmprep::image::RgbImage;
use vlmprep::image::normalize::{Dtype, Normalization, NormalizeTable, write_chw};
use vlmprep::image::pillow_resample::resize_like_pillow;
use vlmprep::image::resize::ResizeFilter;
use vlmprep::image::tiling::{InternVlSettings, Qwen2VlSettings, TilePlan, Tiler, TilingRule};

/// Largest accepted difference from Pillow, in u8 levels (floats mapped back through their
/// std). Two levels, not one: on the H200 a few pixels of bicubic upscales and of a strong
/// 4000-wide downscale were 2 levels off (f32 weights round a first-pass value the other way,
/// and the second pass's lobes, Σ|w| up to ~1.3, carry that level plus their own rounding).
/// bf16 keeps 8 bits: ~0.9 level more near ±2 of a 0.229 std.
fn tolerance(dtype: Dtype) -> f32 {
    if dtype == Dtype::Bf16 { 3.0 } else { 2.1 }
}

/// Pillow's u8 HWC tiles, in batch order: the whole image resized exactly as Pillow does, tiles
/// cut from it, the thumbnail resized alone.
fn pillow_tiles(images: &[&RgbImage], plans: &[TilePlan], filter: ResizeFilter) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (img, plan) in images.iter().zip(plans) {
        let full = resize_like_pillow(img, plan.resize.0, plan.resize.1, filter).unwrap();
        let (tw, th) = plan.tile;
        for r in 0..plan.grid.1 {
            for c in 0..plan.grid.0 {
                let mut tile = Vec::with_capacity(3 * (tw * th) as usize);
                for y in 0..th {
                    let row = 3 * ((r * th + y) * full.width + c * tw) as usize;
                    tile.extend_from_slice(&full.data[row..row + 3 * tw as usize]);
                }
                out.push(tile);
            }
        }
        if let Some(side) = plan.thumbnail {
            out.push(resize_like_pillow(img, side, side, filter).unwrap().data);
        }
    }
    out
}

/// Pillow's tiles as a batch of `spec.dtype`, through the CPU's own float conversion.
fn pillow_batch(tiles: &[Vec<u8>], plans: &[TilePlan], spec: &TileSpec) -> HostTiles {
    let table = NormalizeTable::new(&spec.norm).unwrap();
    let mut data = Vec::new();
    for rgb in tiles {
        if spec.dtype.is_float() {
            let mut dst = vec![0u8; rgb.len() * spec.dtype.size()];
            write_chw(rgb, &table, spec.dtype, &mut dst).unwrap();
            data.extend(dst);
        } else {
            data.extend_from_slice(rgb);
        }
    }
    HostTiles {
        dtype: spec.dtype,
        layout: TileLayout::new(plans, spec.dtype),
        data,
    }
}

fn gpu_or_skip() -> Option<CudaBackend> {
    match CudaBackend::new(0) {
        Ok(gpu) => Some(gpu),
        Err(e) => {
            assert!(
                std::env::var("VLMPREP_REQUIRE_GPU").as_deref() != Ok("1"),
                "VLMPREP_REQUIRE_GPU=1 but no GPU: {e}"
            );
            eprintln!("skipped: no GPU ({e})");
            None
        }
    }
}

/// Odd sizes, a strong downscale, upscales, extreme aspect ratios, a 1-pixel strip.
const SIZES: [(u32, u32); 7] = [
    (1920, 1080),
    (997, 613),
    (333, 1201),
    (4000, 301),
    (64, 48),
    (17, 23),
    (1, 90),
];

fn rules() -> [TilingRule; 3] {
    [
        TilingRule::InternVl(InternVlSettings::default()),
        TilingRule::Qwen2Vl(Qwen2VlSettings::default()),
        TilingRule::Fixed { size: 384 },
    ]
}

fn rule_name(rule: TilingRule) -> &'static str {
    match rule {
        TilingRule::InternVl(_) => "internvl",
        TilingRule::Qwen2Vl(_) => "qwen2vl",
        TilingRule::Fixed { .. } => "fixed",
    }
}

fn images() -> Vec<RgbImage> {
    SIZES
        .iter()
        .enumerate()
        .map(|(i, &(w, h))| pattern(w, h, i as u32 + 7))
        .collect()
}

fn plans(rule: TilingRule, sizes: &[(u32, u32)]) -> Vec<TilePlan> {
    let tiler = Tiler::new(rule).unwrap();
    sizes
        .iter()
        .map(|&(w, h)| tiler.plan(w, h).unwrap())
        .collect()
}

fn decode(dtype: Dtype, v: &[u8]) -> f32 {
    match dtype {
        Dtype::U8 => f32::from(v[0]),
        Dtype::F32 => f32::from_le_bytes(v.try_into().unwrap()),
        Dtype::F16 => half::f16::from_le_bytes([v[0], v[1]]).to_f32(),
        Dtype::Bf16 => half::bf16::from_le_bytes([v[0], v[1]]).to_f32(),
    }
}

/// Per image, the largest difference in u8 levels (float elements scaled back by their
/// channel's std × 255) and the mean difference.
fn level_diffs(a: &HostTiles, b: &HostTiles, spec: &TileSpec) -> Vec<(f32, f64)> {
    assert_eq!(a.layout, b.layout);
    assert_eq!(a.data.len(), b.data.len());
    let size = spec.dtype.size();
    a.layout
        .slots
        .iter()
        .enumerate()
        .map(|(i, slot)| {
            let plane = (slot.plan.tile.0 * slot.plan.tile.1) as usize;
            let (mut worst, mut sum, mut n) = (0f32, 0f64, 0usize);
            for (e, (x, y)) in a
                .image_bytes(i)
                .chunks_exact(size)
                .zip(b.image_bytes(i).chunks_exact(size))
                .enumerate()
            {
                let d = (decode(spec.dtype, x) - decode(spec.dtype, y)).abs();
                let d = if spec.dtype.is_float() {
                    d * spec.norm.std[(e / plane) % 3] * 255.0
                } else {
                    d
                };
                assert!(d.is_finite(), "image {i} element {e}: {x:?} vs {y:?}");
                worst = worst.max(d);
                sum += f64::from(d);
                n += 1;
            }
            (worst, sum / n.max(1) as f64)
        })
        .collect()
}

#[test]
fn tiles_match_the_cpu_backend_for_every_rule_filter_and_dtype() {
    let Some(gpu) = gpu_or_skip() else { return };
    let images = images();
    let refs: Vec<&RgbImage> = images.iter().collect();
    let mut failures = Vec::new();
    for rule in rules() {
        let plans = plans(rule, &SIZES);
        for filter in [ResizeFilter::Bicubic, ResizeFilter::Bilinear] {
            let pillow_u8 = pillow_tiles(&refs, &plans, filter);
            for dtype in [Dtype::U8, Dtype::F32, Dtype::F16, Dtype::Bf16] {
                let spec = TileSpec {
                    filter,
                    dtype,
                    norm: Normalization::IMAGENET,
                };
                let cpu = CpuBackend.tile_batch(&refs, &plans, &spec).unwrap();
                let pillow = pillow_batch(&pillow_u8, &plans, &spec);
                let tiles = gpu.tile_batch(&refs, &plans, &spec).unwrap();
                assert_eq!(tiles.layout, cpu.layout);
                let got = gpu.tiles_to_host(tiles).unwrap();
                assert_eq!(got.dtype, dtype);
                let vs_pillow = level_diffs(&got, &pillow, &spec);
                let vs_cpu = level_diffs(&got, &cpu, &spec);
                for (i, ((p_max, p_mean), (c_max, c_mean))) in
                    vs_pillow.into_iter().zip(vs_cpu).enumerate()
                {
                    let (w, h) = SIZES[i];
                    let case = format!(
                        "{} {filter:?} {dtype:?} {w}x{h} -> {:?}",
                        rule_name(rule),
                        plans[i].resize
                    );
                    eprintln!(
                        "{case}: vs Pillow max {p_max:.2} mean {p_mean:.4}, vs CPU max \
                         {c_max:.2} mean {c_mean:.4} levels"
                    );
                    if p_max > tolerance(dtype) || c_mean > 0.5 {
                        failures.push(format!("{case}: Pillow max {p_max}, CPU mean {c_mean}"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Runs the device path into a buffer pre-filled with `poison`, with guard bytes past the end.
fn tiles_into_poisoned(
    gpu: &CudaBackend,
    images: &[&DeviceImage],
    plans: &[TilePlan],
    spec: &TileSpec,
    poison: u8,
) -> Vec<u8> {
    const GUARD: usize = 4096;
    let total = TileLayout::new(plans, spec.dtype).total_bytes;
    let mut out = gpu
        .stream()
        .clone_htod(&vec![poison; total + GUARD])
        .unwrap();
    let layout = gpu
        .tile_device_batch_into(images, plans, spec, &mut out)
        .unwrap();
    assert_eq!(layout.total_bytes, total);
    let host = gpu.stream().clone_dtoh(&out).unwrap();
    gpu.synchronize().unwrap();
    assert!(
        host[total..].iter().all(|&b| b == poison),
        "bytes past the batch were written"
    );
    host[..total].to_vec()
}

#[test]
fn every_byte_is_written_and_the_device_path_equals_the_host_path() {
    let Some(gpu) = gpu_or_skip() else { return };
    let images = images();
    let refs: Vec<&RgbImage> = images.iter().collect();
    // Separate device images, as decode hands them over.
    let device: Vec<DeviceImage> = images
        .iter()
        .map(|img| DeviceImage {
            data: gpu.stream().clone_htod(&img.data).unwrap(),
            width: img.width,
            height: img.height,
        })
        .collect();
    let device_refs: Vec<&DeviceImage> = device.iter().collect();
    for rule in rules() {
        let plans = plans(rule, &SIZES);
        for dtype in [Dtype::U8, Dtype::F32, Dtype::F16, Dtype::Bf16] {
            let spec = TileSpec {
                filter: ResizeFilter::Bicubic,
                dtype,
                norm: Normalization::CLIP,
            };
            // An unwritten byte keeps its poison: two different poisons cannot give equal
            // results unless every byte was written (the kernels are deterministic).
            let a = tiles_into_poisoned(&gpu, &device_refs, &plans, &spec, 0x00);
            let b = tiles_into_poisoned(&gpu, &device_refs, &plans, &spec, 0xFF);
            let first = a.iter().zip(&b).position(|(x, y)| x != y);
            assert!(
                first.is_none(),
                "{rule:?} {dtype:?}: byte {first:?} unwritten"
            );
            let via_host = gpu
                .tiles_to_host(gpu.tile_batch(&refs, &plans, &spec).unwrap())
                .unwrap();
            assert!(
                via_host.data == a,
                "{rule:?} {dtype:?}: host and device paths differ"
            );
            let owned = gpu
                .tiles_to_host(gpu.tile_device_batch(&device_refs, &plans, &spec).unwrap())
                .unwrap();
            assert!(
                owned.data == a,
                "{rule:?} {dtype:?}: tile_device_batch differs"
            );
        }
    }
}

#[test]
fn batches_of_one_and_repeated_sizes_match_the_cpu() {
    let Some(gpu) = gpu_or_skip() else { return };
    // The same size many times shares coefficient tables; a single image is the smallest grid.
    let images: Vec<RgbImage> = (0..5).map(|i| pattern(801, 599, i)).collect();
    let refs: Vec<&RgbImage> = images.iter().collect();
    let rule = TilingRule::InternVl(InternVlSettings::default());
    let plans = plans(rule, &[(801, 599); 5]);
    let spec = TileSpec {
        filter: ResizeFilter::Bicubic,
        dtype: Dtype::Bf16,
        norm: Normalization::IMAGENET,
    };
    for n in [1, 5] {
        let want = pillow_batch(
            &pillow_tiles(&refs[..n], &plans[..n], spec.filter),
            &plans[..n],
            &spec,
        );
        let cpu = CpuBackend
            .tile_batch(&refs[..n], &plans[..n], &spec)
            .unwrap();
        let got = gpu
            .tiles_to_host(gpu.tile_batch(&refs[..n], &plans[..n], &spec).unwrap())
            .unwrap();
        for ((worst, mean), (_, cpu_mean)) in level_diffs(&got, &want, &spec)
            .into_iter()
            .zip(level_diffs(&got, &cpu, &spec))
        {
            eprintln!(
                "{n} images: vs Pillow max {worst:.2} mean {mean:.4}, CPU mean {cpu_mean:.4}"
            );
            assert!(worst <= tolerance(spec.dtype) && cpu_mean <= 0.5);
        }
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let Some(gpu) = gpu_or_skip() else { return };
    let img = pattern(40, 30, 1);
    let plan = plans(TilingRule::Fixed { size: 32 }, &[(40, 30)])[0];
    let spec = TileSpec {
        filter: ResizeFilter::Bicubic,
        dtype: Dtype::F32,
        norm: Normalization::SIGLIP,
    };
    assert!(gpu.tile_batch(&[&img, &img], &[plan], &spec).is_err());
    let empty = RgbImage {
        width: 0,
        height: 30,
        data: Vec::new(),
    };
    assert!(gpu.tile_batch(&[&empty], &[plan], &spec).is_err());
    let short = RgbImage {
        width: 40,
        height: 30,
        data: vec![0; 10],
    };
    assert!(gpu.tile_batch(&[&short], &[plan], &spec).is_err());
    let outside = TilePlan {
        grid: (2, 1),
        ..plan
    };
    assert!(gpu.tile_batch(&[&img], &[outside], &spec).is_err());
    let zero_std = TileSpec {
        norm: Normalization {
            mean: [0.5; 3],
            std: [0.0; 3],
        },
        ..spec
    };
    assert!(gpu.tile_batch(&[&img], &[plan], &zero_std).is_err());
    // A device image too small for its stated size.
    let small = DeviceImage {
        data: gpu.stream().clone_htod(&[0u8; 12]).unwrap(),
        width: 40,
        height: 30,
    };
    assert!(gpu.tile_device_batch(&[&small], &[plan], &spec).is_err());
    // An empty batch is fine and empty.
    let none = gpu
        .tiles_to_host(gpu.tile_batch(&[], &[], &spec).unwrap())
        .unwrap();
    assert!(none.data.is_empty() && none.layout.slots.is_empty());
}
