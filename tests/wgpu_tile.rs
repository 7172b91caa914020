//! wgpu tiling parity against the CPU backend: every tiling rule, both filters, u8 / f32 / f16
//! / bf16, over photos and generated images of odd sizes, upscales and downscales; same layout
//! as the CPU, every byte written, bad input refused.
//!
//! The shader does the CPU backend's integer resize arithmetic (fast_image_resize's u8
//! convolution, coefficients made on the host for each tile's crop box), and float outputs are
//! the CPU's own encoding of each level, so every test here demands equal bytes. On a mismatch
//! the message gives the largest difference in levels and the share of elements that differ.
//!
//! Needs a wgpu adapter (lavapipe counts: images are small, it is a software rasterizer): each
//! test prints why and returns when there is none, unless `VLMPREP_REQUIRE_WGPU=1`, which turns
//! a missing adapter into a failure (CI).
#![cfg(feature = "wgpu")]

mod common;

use common::images::{pattern, photo};
use common::wgpu::backend_or_skip;
use vlmprep::backend::wgpu::tile::TileJobs;
use vlmprep::backend::{Backend, CpuBackend, HostTiles, TileSpec};
use vlmprep::image::RgbImage;
use vlmprep::image::normalize::{Dtype, Normalization};
use vlmprep::image::resize::ResizeFilter;
use vlmprep::image::tiling::{InternVlSettings, Qwen2VlSettings, TilePlan, Tiler, TilingRule};

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

/// Decoded photos (JPEG 4:2:0, PNG) and a tall pattern, next to the generated images.
const PHOTOS: [&str; 4] = [
    "photo0-baseline420.jpg",
    "photo2-exif3.jpg",
    "photo3.png",
    "pattern-150x1200.png",
];

fn images() -> Vec<RgbImage> {
    let mut out: Vec<RgbImage> = SIZES
        .iter()
        .enumerate()
        .map(|(i, &(w, h))| pattern(w, h, i as u32 + 7))
        .collect();
    out.extend(PHOTOS.iter().map(|name| photo(name)));
    out
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

/// Fails the test with the size of the difference unless `got` equals `cpu` byte for byte.
fn assert_same(got: &HostTiles, cpu: &HostTiles, spec: &TileSpec, case: &str) {
    assert_eq!(got.dtype, spec.dtype, "{case}");
    if got.data != cpu.data {
        let (worst, worst_level, share) = diffs(got, cpu, spec);
        panic!(
            "{case}: differs from the CPU by up to {worst} ({worst_level} levels), in {:.4}% of \
             elements",
            share * 100.0
        );
    }
}

#[test]
fn tiles_equal_the_cpu_backend_for_every_rule_filter_and_dtype() {
    let Some(gpu) = backend_or_skip() else { return };
    let images = images();
    let refs: Vec<&RgbImage> = images.iter().collect();
    let sizes: Vec<(u32, u32)> = images.iter().map(|i| (i.width, i.height)).collect();
    for rule in rules() {
        let plans = plans(rule, &sizes);
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
            let case = format!("{rule:?} {filter:?} {dtype:?}");
            assert_same(&got, &cpu, &spec, &case);
            eprintln!("{case}: {} bytes equal", got.data.len());
        }
    }
}

#[test]
fn every_byte_is_written_and_batches_repeat_exactly() {
    let Some(gpu) = backend_or_skip() else { return };
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
        assert_same(&first, &cpu, &spec, &format!("{dtype:?}"));
    }
}

#[test]
fn empty_batches_and_bad_input_are_not_panics() {
    let Some(gpu) = backend_or_skip() else { return };
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

/// Strong downscales (up to 125× here) with hundreds of taps per axis: equal to the CPU. On an
/// adapter with a loop limit (lavapipe: 65,535 loop iterations per shader invocation, silently
/// cut short past it; see `WgpuBackend::loop_budget`), tiles past it in one pass run in two (a
/// vertical pass into u8 intermediates, then the horizontal taps); the test checks that those
/// cases really are planned in two passes there, so both paths are compared with the CPU.
#[test]
fn strong_downscales_equal_the_cpu_in_one_or_two_passes() {
    let Some(gpu) = backend_or_skip() else { return };
    let mut two_pass = 0;
    let fixed = |w: u32, h: u32| plans(TilingRule::Fixed { size: 48 }, &[(w, h)])[0];
    // A 2x2 grid from a 4000px square: four two-pass tiles whose intermediates start at
    // different source columns.
    let grid = TilePlan {
        resize: (96, 96),
        grid: (2, 2),
        tile: (48, 48),
        thumbnail: None,
    };
    let cases = [
        ((1600, 1200), fixed(1600, 1200)),
        ((1000, 3000), fixed(1000, 3000)),
        ((3000, 2000), fixed(3000, 2000)),
        ((6000, 4000), fixed(6000, 4000)),
        ((4000, 4000), grid),
    ];
    for (i, ((w, h), plan)) in cases.into_iter().enumerate() {
        let img = pattern(w, h, i as u32 + 3);
        for dtype in [Dtype::U8, Dtype::F16] {
            let spec = TileSpec {
                filter: ResizeFilter::Bicubic,
                dtype,
                norm: Normalization::IMAGENET,
            };
            let jobs = TileJobs::new(
                &[(w, h)],
                &[0],
                &[plan],
                dtype,
                spec.filter,
                gpu.loop_budget(),
            )
            .unwrap();
            two_pass += usize::from(!jobs.vjobs.is_empty());
            let cpu = CpuBackend.tile_batch(&[&img], &[plan], &spec).unwrap();
            let got = gpu
                .tiles_to_host(gpu.tile_batch(&[&img], &[plan], &spec).unwrap())
                .unwrap();
            assert_same(&got, &cpu, &spec, &format!("{w}x{h} -> {plan:?} {dtype:?}"));
        }
    }
    eprintln!("{two_pass} of {} cases in two passes", 2 * cases.len());
    if gpu.loop_budget().is_some() {
        // 1000x3000, 3000x2000, 6000x4000 and the 4000px grid in u8 (4 elements a word), and
        // at least 6000x4000 in f16.
        assert!(two_pass >= 5, "{two_pass}");
    }
}

/// Tiles whose own crop would make fast_image_resize read past its intermediate row are
/// computed by the CPU from their full-width band (`image::resize`); wgpu still agrees there
/// (50×37 → 150×111 in 37 px tiles has such tiles). On this case the band's horizontal weights
/// equal the crop's, so the test checks the CPU's rerouting against the shader, not the wgpu
/// tables' own band branch (which only matters where the band's wider axis lowers the
/// fixed-point precision).
#[test]
fn tiles_the_cpu_takes_from_their_band_still_agree() {
    let Some(gpu) = backend_or_skip() else { return };
    let image = pattern(50, 37, 5);
    let plan = TilePlan {
        resize: (150, 111),
        grid: (4, 3),
        tile: (37, 37),
        thumbnail: None,
    };
    for dtype in [Dtype::U8, Dtype::F32] {
        let spec = TileSpec {
            filter: ResizeFilter::Bicubic,
            dtype,
            norm: Normalization::IMAGENET,
        };
        let cpu = CpuBackend.tile_batch(&[&image], &[plan], &spec).unwrap();
        let got = gpu
            .tiles_to_host(gpu.tile_batch(&[&image], &[plan], &spec).unwrap())
            .unwrap();
        assert_same(&got, &cpu, &spec, &format!("50x37 band tiles {dtype:?}"));
    }
}
