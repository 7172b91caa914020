//! wgpu tiling parity against the CPU backend: every tiling rule, both filters, u8 / f32 / f16
//! (and bf16) over images of odd sizes, upscales and downscales; same layout as the CPU, every
//! byte written, bad input refused.
//!
//! The shader resamples in the CPU backend's order (fast_image_resize: the vertical pass first,
//! rounded to u8, then the horizontal pass) with Pillow's weights in f32 where the CPU uses its
//! own fixed point, so a level may come out off where a sum lands near a rounding edge: measured
//! on lavapipe, 0.1–0.6% of elements differ, by at most 2 levels (a first-pass level one off,
//! carried through the second pass's lobes, plus the second pass's own rounding). Float outputs
//! are the CPU's own encoding of each level (bit-exact given equal levels), so their difference
//! is exactly that level difference over 255·std (bf16 adds its own ~0.9 level of rounding).
//!
//! Needs a wgpu adapter (lavapipe counts: images are small, it is a software rasterizer): each
//! test prints why and returns when there is none, unless `VLMPREP_REQUIRE_WGPU=1`, which turns
//! a missing adapter into a failure (CI).
#![cfg(feature = "wgpu")]

use vlmprep::backend::wgpu::{AdapterChoice, WgpuBackend};
use vlmprep::backend::{Backend, CpuBackend, HostTiles, TileSpec};
use vlmprep::image::RgbImage;
use vlmprep::image::normalize::{Dtype, Normalization};
use vlmprep::image::resize::ResizeFilter;
use vlmprep::image::tiling::{InternVlSettings, Qwen2VlSettings, TilePlan, Tiler, TilingRule};

/// Largest accepted difference from the CPU in u8 levels (see the header): two, and bf16's own
/// rounding on top.
fn tolerance(dtype: Dtype) -> f32 {
    if dtype == Dtype::Bf16 { 3.0 } else { 2.1 }
}

/// Largest accepted share of elements that differ from the CPU at all.
const MAX_SHARE: f64 = 0.01;

fn gpu_or_skip() -> Option<WgpuBackend> {
    match WgpuBackend::new(AdapterChoice::Any) {
        Ok(gpu) => {
            eprintln!("adapter: {}", gpu.device_name());
            Some(gpu)
        }
        Err(e) => {
            assert!(
                std::env::var("VLMPREP_REQUIRE_WGPU").as_deref() != Ok("1"),
                "VLMPREP_REQUIRE_WGPU=1 but no wgpu adapter: {e}"
            );
            eprintln!("skipped: no wgpu adapter ({e})");
            None
        }
    }
}

/// Gradients, hard edges and noise, so that every filter tap and both signs of the bicubic
/// lobes matter.
fn pattern(w: u32, h: u32, seed: u32) -> RgbImage {
    let mut data = Vec::with_capacity(3 * (w * h) as usize);
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    for y in 0..h {
        for x in 0..w {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let edge = if (x / 7 + y / 5) % 2 == 0 { 60 } else { 0 };
            data.extend_from_slice(&[
                ((x * 255 / w.max(1)) as u8).saturating_add(edge),
                ((y * 255 / h.max(1)) as u8) ^ (s as u8 & 0x1f),
                ((x * 5 + y * 11 + (s >> 24)) % 256) as u8,
            ]);
        }
    }
    RgbImage {
        width: w,
        height: h,
        data,
    }
}

/// Odd sizes, a strong downscale, upscales, extreme aspect ratios, a 1-pixel strip; small,
/// because lavapipe runs the shader on the CPU.
const SIZES: [(u32, u32); 6] = [
    (641, 359),
    (333, 501),
    (1500, 97),
    (64, 48),
    (17, 23),
    (1, 90),
];

fn rules() -> [TilingRule; 3] {
    [
        TilingRule::InternVl(InternVlSettings {
            max_tiles: 4,
            ..InternVlSettings::default()
        }),
        TilingRule::Qwen2Vl(Qwen2VlSettings::default()),
        TilingRule::Fixed { size: 224 },
    ]
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

/// Largest element difference (in the dtype's own units), largest difference in u8 levels
/// (floats scaled back by their channel's std × 255), and the share of elements that differ.
fn diffs(a: &HostTiles, b: &HostTiles, spec: &TileSpec) -> (f32, f32, f64) {
    assert_eq!(a.layout, b.layout);
    assert_eq!(a.data.len(), b.data.len());
    let size = spec.dtype.size();
    let (mut worst, mut worst_level, mut differ, mut n) = (0f32, 0f32, 0usize, 0usize);
    for (i, slot) in a.layout.slots.iter().enumerate() {
        let plane = (slot.plan.tile.0 * slot.plan.tile.1) as usize;
        for (e, (x, y)) in a
            .image_bytes(i)
            .chunks_exact(size)
            .zip(b.image_bytes(i).chunks_exact(size))
            .enumerate()
        {
            let d = (decode(spec.dtype, x) - decode(spec.dtype, y)).abs();
            assert!(d.is_finite(), "image {i} element {e}: {x:?} vs {y:?}");
            let level = if spec.dtype.is_float() {
                d * spec.norm.std[(e / plane) % 3] * 255.0
            } else {
                d
            };
            worst = worst.max(d);
            worst_level = worst_level.max(level);
            differ += usize::from(d > 0.0);
            n += 1;
        }
    }
    (worst, worst_level, differ as f64 / n.max(1) as f64)
}

#[test]
fn tiles_match_the_cpu_backend_for_every_rule_filter_and_dtype() {
    let Some(gpu) = gpu_or_skip() else { return };
    let images = images();
    let refs: Vec<&RgbImage> = images.iter().collect();
    let mut failures = Vec::new();
    for rule in rules() {
        let plans = plans(rule, &SIZES);
        // u8 with both filters; the float dtypes share the level computation, so one filter
        // each keeps lavapipe's time down.
        let cases = [
            (ResizeFilter::Bicubic, Dtype::U8),
            (ResizeFilter::Bilinear, Dtype::U8),
            (ResizeFilter::Bicubic, Dtype::F32),
            (ResizeFilter::Bilinear, Dtype::F16),
            (ResizeFilter::Bicubic, Dtype::Bf16),
        ];
        for (filter, dtype) in cases {
            let spec = TileSpec {
                filter,
                dtype,
                norm: Normalization::IMAGENET,
            };
            let cpu = CpuBackend.tile_batch(&refs, &plans, &spec).unwrap();
            let tiles = gpu.tile_batch(&refs, &plans, &spec).unwrap();
            assert_eq!(tiles.layout, cpu.layout);
            let got = gpu.tiles_to_host(tiles).unwrap();
            assert_eq!(got.dtype, dtype);
            let (worst, worst_level, share) = diffs(&got, &cpu, &spec);
            let case = format!("{rule:?} {filter:?} {dtype:?}");
            eprintln!(
                "{case}: max diff {worst:.5} ({worst_level:.2} levels), {:.3}% of elements differ",
                share * 100.0
            );
            if worst_level > tolerance(dtype) || share > MAX_SHARE {
                failures.push(format!("{case}: {worst_level} levels, {share} differ"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn every_byte_is_written_and_batches_repeat_exactly() {
    let Some(gpu) = gpu_or_skip() else { return };
    // Odd tile sizes in u8 and f16 put tile boundaries inside 32-bit words.
    let images = [pattern(37, 29, 1), pattern(5, 3, 2), pattern(11, 7, 3)];
    let refs: Vec<&RgbImage> = images.iter().collect();
    let plans = plans(TilingRule::Fixed { size: 13 }, &[(37, 29), (5, 3), (11, 7)]);
    for dtype in [Dtype::U8, Dtype::F16, Dtype::F32] {
        let spec = TileSpec {
            filter: ResizeFilter::Bicubic,
            dtype,
            norm: Normalization::IMAGENET,
        };
        let cpu = CpuBackend.tile_batch(&refs, &plans, &spec).unwrap();
        // The pool hands back used buffers: a stale byte would show as a difference.
        let first = gpu
            .tiles_to_host(gpu.tile_batch(&refs, &plans, &spec).unwrap())
            .unwrap();
        let again = gpu
            .tiles_to_host(gpu.tile_batch(&refs, &plans, &spec).unwrap())
            .unwrap();
        assert_eq!(first.data, again.data, "{dtype:?}: two runs differ");
        let (_, worst_level, _) = diffs(&first, &cpu, &spec);
        assert!(
            worst_level <= 1.01,
            "{dtype:?}: {worst_level} levels off the CPU"
        );
    }
}

#[test]
fn empty_batches_and_bad_input_are_not_panics() {
    let Some(gpu) = gpu_or_skip() else { return };
    let spec = TileSpec {
        filter: ResizeFilter::Bicubic,
        dtype: Dtype::U8,
        norm: Normalization::IMAGENET,
    };
    let empty = gpu
        .tiles_to_host(gpu.tile_batch(&[], &[], &spec).unwrap())
        .unwrap();
    assert!(empty.data.is_empty() && empty.layout.slots.is_empty());

    let img = pattern(20, 10, 1);
    let plan = plans(TilingRule::Fixed { size: 8 }, &[(20, 10)])[0];
    // Fewer plans than images.
    assert!(gpu.tile_batch(&[&img], &[], &spec).is_err());
    // Pixel buffer of the wrong length.
    let short = RgbImage {
        width: 20,
        height: 10,
        data: vec![0; 10],
    };
    assert!(gpu.tile_batch(&[&short], &[plan], &spec).is_err());
    // A grid outside the resized image.
    let mut bad = plan;
    bad.grid = (9, 9);
    assert!(gpu.tile_batch(&[&img], &[bad], &spec).is_err());
}

#[test]
fn strong_downscales_match_the_cpu_or_are_refused() {
    let Some(gpu) = gpu_or_skip() else { return };
    let spec = TileSpec {
        filter: ResizeFilter::Bicubic,
        dtype: Dtype::U8,
        norm: Normalization::IMAGENET,
    };
    // 33× and 25×: 135 × 101 taps, under the shader's limit, and right.
    let img = pattern(1600, 1200, 3);
    let plan = plans(TilingRule::Fixed { size: 48 }, &[(1600, 1200)]);
    let cpu = CpuBackend.tile_batch(&[&img], &plan, &spec).unwrap();
    let got = gpu
        .tiles_to_host(gpu.tile_batch(&[&img], &plan, &spec).unwrap())
        .unwrap();
    let (_, worst_level, share) = diffs(&got, &cpu, &spec);
    eprintln!("1600x1200 -> 48x48: {worst_level} levels, {share} differ");
    assert!(worst_level <= tolerance(Dtype::U8) && share <= MAX_SHARE);
    // 3000x2000 to 48x48 (251 × 167 taps) came out wrong on lavapipe: refused, not wrong.
    let img = pattern(3000, 2000, 4);
    let plan = plans(TilingRule::Fixed { size: 48 }, &[(3000, 2000)]);
    let err = gpu
        .tile_batch(&[&img], &plan, &spec)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("filter taps"), "{err}");
}
