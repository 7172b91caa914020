//! Tiling parity against Pillow and the CPU backend, shared by the CUDA tests on a GPU
//! (tests/cuda_tile.rs) and the same kernels run by the CPU emulator (tests/cuda_emulated.rs).

use vlmprep::backend::{Backend, CpuBackend, HostTiles, TileLayout, TileSpec};
use vlmprep::image::RgbImage;
use vlmprep::image::normalize::{Dtype, Normalization, NormalizeTable, write_chw};
use vlmprep::image::pillow_resample::resize_like_pillow;
use vlmprep::image::resize::ResizeFilter;
use vlmprep::image::tiling::{InternVlSettings, Qwen2VlSettings, TilePlan, Tiler, TilingRule};

use super::images::pattern;

/// Largest accepted difference from Pillow, in u8 levels (floats mapped back through their
/// std). Two levels, not one: on the H200 a few pixels of bicubic upscales and of a strong
/// 4000-wide downscale were 2 levels off (f32 weights round a first-pass value the other way,
/// and the second pass's lobes, Σ|w| up to ~1.3, carry that level plus their own rounding).
/// bf16 keeps 8 bits: ~0.9 level more near ±2 of a 0.229 std.
pub fn tolerance(dtype: Dtype) -> f32 {
    if dtype == Dtype::Bf16 { 3.0 } else { 2.1 }
}

/// Pillow's u8 HWC tiles, in batch order: the whole image resized exactly as Pillow does, tiles
/// cut from it, the thumbnail resized alone.
pub fn pillow_tiles(
    images: &[&RgbImage],
    plans: &[TilePlan],
    filter: ResizeFilter,
) -> Vec<Vec<u8>> {
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
pub fn pillow_batch(tiles: &[Vec<u8>], plans: &[TilePlan], spec: &TileSpec) -> HostTiles {
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

/// Odd sizes, a strong downscale, upscales, extreme aspect ratios, a 1-pixel strip.
pub const SIZES: [(u32, u32); 7] = [
    (1920, 1080),
    (997, 613),
    (333, 1201),
    (4000, 301),
    (64, 48),
    (17, 23),
    (1, 90),
];

/// The three tiling rules with their default settings.
pub fn rules() -> [TilingRule; 3] {
    [
        TilingRule::InternVl(InternVlSettings::default()),
        TilingRule::Qwen2Vl(Qwen2VlSettings::default()),
        TilingRule::Fixed { size: 384 },
    ]
}

/// A rule's name in case lines.
pub fn rule_name(rule: TilingRule) -> &'static str {
    match rule {
        TilingRule::InternVl(_) => "internvl",
        TilingRule::Qwen2Vl(_) => "qwen2vl",
        TilingRule::Fixed { .. } => "fixed",
    }
}

/// The test pattern at each size, a different seed each.
pub fn images(sizes: &[(u32, u32)]) -> Vec<RgbImage> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &(w, h))| pattern(w, h, i as u32 + 7))
        .collect()
}

/// Each size's plan under `rule`.
pub fn plans(rule: TilingRule, sizes: &[(u32, u32)]) -> Vec<TilePlan> {
    let tiler = Tiler::new(rule).unwrap();
    sizes
        .iter()
        .map(|&(w, h)| tiler.plan(w, h).unwrap())
        .collect()
}

/// One element of a batch as f32 (a u8 level as is).
pub fn decode(dtype: Dtype, v: &[u8]) -> f32 {
    match dtype {
        Dtype::U8 => f32::from(v[0]),
        Dtype::F32 => f32::from_le_bytes(v.try_into().unwrap()),
        Dtype::F16 => half::f16::from_le_bytes([v[0], v[1]]).to_f32(),
        Dtype::Bf16 => half::bf16::from_le_bytes([v[0], v[1]]).to_f32(),
    }
}

/// Per image, the largest difference in u8 levels (float elements scaled back by their
/// channel's std × 255) and the mean difference.
pub fn level_diffs(a: &HostTiles, b: &HostTiles, spec: &TileSpec) -> Vec<(f32, f64)> {
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

/// Tiles images of `sizes` by every rule, filter and dtype through `run`, and returns one line
/// per case outside the tolerances: more than [`tolerance`] levels from Pillow, or a mean over
/// half a level from the CPU backend (each case's figures are printed).
pub fn check_against_pillow_and_cpu(
    sizes: &[(u32, u32)],
    mut run: impl FnMut(&[&RgbImage], &[TilePlan], &TileSpec) -> HostTiles,
) -> Vec<String> {
    let images = images(sizes);
    let refs: Vec<&RgbImage> = images.iter().collect();
    let mut failures = Vec::new();
    for rule in rules() {
        let plans = plans(rule, sizes);
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
                let got = run(&refs, &plans, &spec);
                assert_eq!(got.layout, cpu.layout);
                assert_eq!(got.dtype, dtype);
                let vs_pillow = level_diffs(&got, &pillow, &spec);
                let vs_cpu = level_diffs(&got, &cpu, &spec);
                for (i, ((p_max, p_mean), (c_max, c_mean))) in
                    vs_pillow.into_iter().zip(vs_cpu).enumerate()
                {
                    let (w, h) = sizes[i];
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
    failures
}
