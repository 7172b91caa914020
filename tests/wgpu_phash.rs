//! The perceptual hash on wgpu against the CPU: the 32×32 grayscale image (Pillow "L" luma,
//! Pillow LANCZOS, both of Pillow 13's pass orders) byte for byte and the hashes bit for bit,
//! on the ImageHash golden images and on generated images of many shapes (downscales in either
//! axis or both, upscales, a side already 32, strips one pixel wide, one batch holding them
//! all).
//!
//! Needs a wgpu adapter (lavapipe counts); skips with the reason printed unless
//! `VLMPREP_REQUIRE_WGPU=1`.
#![cfg(feature = "wgpu")]

mod common;

use common::images::{pattern, photo};
use common::wgpu::backend_or_skip;
use vlmprep::curate::phash::{gray32, phash};
use vlmprep::image::RgbImage;
use vlmprep::image::decode::{DecodeOptions, decode_rgb8};

/// Checks a batch against the CPU, image by image: the gray images and both hashes.
fn check_batch(gpu: &vlmprep::backend::wgpu::WgpuBackend, images: &[RgbImage], what: &str) {
    let refs: Vec<&RgbImage> = images.iter().collect();
    let grays = gpu.gray32_batch(&refs).unwrap();
    let hashes = gpu.phash_batch(&refs).unwrap();
    assert_eq!(grays.len(), images.len());
    assert_eq!(hashes.len(), images.len());
    for ((img, g), h) in images.iter().zip(&grays).zip(&hashes) {
        let size = format!("{what} {}x{}", img.width, img.height);
        let cpu = gray32(img).unwrap();
        let differ = cpu.iter().zip(g).filter(|(a, b)| a != b).count();
        assert!(
            differ == 0,
            "{size}: {differ} of 1024 gray levels differ from the CPU"
        );
        assert_eq!(*h, phash(img).unwrap(), "{size}");
    }
}

#[test]
fn golden_images_hash_as_on_the_cpu_and_as_imagehash() {
    let Some(gpu) = backend_or_skip() else { return };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/phash");
    let golden: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("hashes.json")).unwrap()).unwrap();
    let entries = golden["images"].as_array().unwrap();
    assert!(entries.len() >= 13);
    let images: Vec<RgbImage> = entries
        .iter()
        .map(|e| {
            let bytes = std::fs::read(dir.join(e["file"].as_str().unwrap())).unwrap();
            decode_rgb8(&bytes, &DecodeOptions::default()).unwrap()
        })
        .collect();
    check_batch(&gpu, &images, "golden");
    // And against ImageHash itself, which the CPU equals on these images.
    let refs: Vec<&RgbImage> = images.iter().collect();
    for (entry, h) in entries.iter().zip(gpu.phash_batch(&refs).unwrap()) {
        let expected = u64::from_str_radix(entry["phash"].as_str().unwrap(), 16).unwrap();
        assert_eq!(h.hash, expected, "{}", entry["file"]);
    }
}

#[test]
fn generated_images_of_many_shapes_hash_as_on_the_cpu() {
    let Some(gpu) = backend_or_skip() else { return };
    // Shapes chosen for the resize's branches: both pass orders (taller than wide by far:
    // vertical first), one axis already 32 (not resampled), upscales, tiny and 1-pixel strips,
    // a downscale of 30x and more.
    let sizes = [
        (640, 480),
        (480, 640),
        (64, 480),
        (45, 260),
        (300, 90),
        (32, 200),
        (200, 32),
        (32, 32),
        (7, 5),
        (1, 1),
        (1, 77),
        (77, 1),
        (33, 31),
        (1000, 1000),
        (97, 1301),
    ];
    let mut images: Vec<RgbImage> = sizes
        .iter()
        .enumerate()
        .map(|(i, &(w, h))| pattern(w, h, i as u32 + 1))
        .collect();
    images.push(photo("photo0-baseline420.jpg"));
    images.push(photo("pattern-150x1200.png"));
    check_batch(&gpu, &images, "generated");
    // Alone, the first image gives the same as inside the batch (offsets and shared tables).
    check_batch(&gpu, &images[..1], "alone");
}

/// Photo-sized images need more loop iterations per invocation than lavapipe runs (1500x1300:
/// 282 x 244 LANCZOS taps); there, they are reduced on the CPU instead. Either way, equal.
#[test]
fn large_images_hash_as_on_the_cpu() {
    let Some(gpu) = backend_or_skip() else { return };
    let images: Vec<RgbImage> = [(1500, 1300), (1920, 1080), (700, 2900)]
        .iter()
        .enumerate()
        .map(|(i, &(w, h))| pattern(w, h, i as u32 + 40))
        .collect();
    check_batch(&gpu, &images, "large");
}

#[test]
fn empty_and_malformed_batches_are_not_panics() {
    let Some(gpu) = backend_or_skip() else { return };
    assert!(gpu.phash_batch(&[]).unwrap().is_empty());
    let short = RgbImage {
        width: 20,
        height: 10,
        data: vec![0; 10],
    };
    assert!(gpu.gray32_batch(&[&short]).is_err());
    let empty = RgbImage {
        width: 0,
        height: 4,
        data: Vec::new(),
    };
    assert!(gpu.phash_batch(&[&empty]).is_err());
}
