//! The perceptual hash on CUDA against the CPU: the hashes bit for bit on the ImageHash golden
//! images (and ImageHash's own values) and on images of every resize branch in one batch
//! (tests/common/images.rs `phash_shapes`), photo-sized ones, the empty batch, and a malformed
//! image refused with an error. The kernels' 32×32 images are compared level by level with the
//! CPU's in tests/cuda_emulated.rs (CPU emulator, in CI).
//!
//! Needs a GPU: each test prints why and returns when `CudaBackend::new(0)` fails, unless
//! `VLMPREP_REQUIRE_GPU=1`, which turns a missing GPU into a failure.
#![cfg(feature = "cuda")]

mod common;
use common::cuda::gpu_or_skip;
use common::images::{pattern, phash_golden, phash_shapes};

use vlmprep::curate::phash::phash;
use vlmprep::image::RgbImage;

#[test]
fn hashes_equal_the_cpu_and_imagehash() {
    let Some(gpu) = gpu_or_skip() else { return };
    let golden = phash_golden();
    let mut images: Vec<RgbImage> = golden.iter().map(|(_, img, _)| img.clone()).collect();
    images.extend(phash_shapes());
    images.push(pattern(1920, 1080, 40));
    images.push(pattern(700, 2900, 41));
    let refs: Vec<&RgbImage> = images.iter().collect();
    let hashes = gpu.phash_batch(&refs).unwrap();
    assert_eq!(hashes.len(), images.len());
    for (img, h) in images.iter().zip(&hashes) {
        assert_eq!(*h, phash(img).unwrap(), "{}x{}", img.width, img.height);
    }
    for ((file, _, want), h) in golden.iter().zip(&hashes) {
        assert_eq!(h.hash, *want, "{file}");
    }
}

#[test]
fn empty_and_malformed_batches_are_not_panics() {
    let Some(gpu) = gpu_or_skip() else { return };
    assert!(gpu.phash_batch(&[]).unwrap().is_empty());
    let good = pattern(40, 30, 1);
    let short = RgbImage {
        width: 40,
        height: 30,
        data: vec![0; 10],
    };
    let err = gpu.phash_batch(&[&good, &short]).unwrap_err().to_string();
    assert!(err.contains("40x30"), "{err}");
}
