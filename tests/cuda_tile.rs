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
use common::cuda::gpu_or_skip;
use common::images::pattern;
use common::tile_parity::{
    SIZES, check_against_pillow_and_cpu, images, level_diffs, pillow_batch, pillow_tiles, plans,
    rules, tolerance,
};

use vlmprep::backend::cuda::CudaBackend;
use vlmprep::backend::cuda::DeviceImage;
use vlmprep::backend::cuda::download::PIECE_BYTES;
use vlmprep::backend::{Backend, CpuBackend, TileLayout, TileSpec};
use vlmprep::image::RgbImage;
use vlmprep::image::normalize::{Dtype, Normalization};
use vlmprep::image::resize::ResizeFilter;
use vlmprep::image::tiling::{InternVlSettings, TilePlan, TilingRule};

#[test]
fn tiles_match_the_cpu_backend_for_every_rule_filter_and_dtype() {
    let Some(gpu) = gpu_or_skip() else { return };
    let failures = check_against_pillow_and_cpu(&SIZES, |images, plans, spec| {
        let tiles = gpu.tile_batch(images, plans, spec).unwrap();
        gpu.tiles_to_host(tiles).unwrap()
    });
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
    let images = images(&SIZES);
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
    // tiles_to_host stages batches through pinned buffers in pieces (download.rs); the largest
    // batches here span several pieces, so the comparisons below also check that staging
    // against clone_dtoh's direct copy.
    let mut largest = 0;
    for rule in rules() {
        let plans = plans(rule, &SIZES);
        for dtype in [Dtype::U8, Dtype::F32, Dtype::F16, Dtype::Bf16] {
            largest = largest.max(TileLayout::new(&plans, dtype).total_bytes);
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
    assert!(largest > 2 * PIECE_BYTES, "largest batch {largest} bytes");
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
