//! The perceptual hash on wgpu against the CPU: the 32×32 grayscale image (Pillow "L" luma,
//! Pillow LANCZOS, both of Pillow 13's pass orders) byte for byte and the hashes bit for bit,
//! on the ImageHash golden images and on generated images of many shapes (downscales in either
//! axis or both, upscales, a side already 32, strips one pixel wide, one batch holding them
//! all). The DCT shader (f32, with an error bound per coefficient and an `uncertain` flag):
//! its bounds hold against the CPU's f64 block, unflagged bits equal the CPU's, flat and
//! symmetric images are flagged (and then hashed on the host), textured ones are not.
//!
//! Needs a wgpu adapter (lavapipe counts); skips with the reason printed unless
//! `VLMPREP_REQUIRE_WGPU=1`.
#![cfg(feature = "wgpu")]

mod common;

use common::images::{pattern, phash_golden, phash_shapes};
use common::wgpu::backend_or_skip;
use std::f32::consts::TAU;
use vlmprep::backend::wgpu::WgpuBackend;
use vlmprep::backend::wgpu::phash::PhashStats;
use vlmprep::curate::phash::{dct_block, gray32, phash, phash_of_gray32};
use vlmprep::image::RgbImage;

/// Checks a batch against the CPU, image by image: the gray images and both hashes. Returns
/// where the hashes were computed.
fn check_batch(gpu: &WgpuBackend, images: &[RgbImage], what: &str) -> PhashStats {
    let refs: Vec<&RgbImage> = images.iter().collect();
    let grays = gpu.gray32_batch(&refs).unwrap();
    let (hashes, stats) = gpu.phash_batch_with_stats(&refs).unwrap();
    eprintln!("{what}: {stats:?}");
    assert_eq!(
        stats.on_device + stats.dct_on_host + stats.on_host,
        images.len()
    );
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
    stats
}

#[test]
fn golden_images_hash_as_on_the_cpu_and_as_imagehash() {
    let Some(gpu) = backend_or_skip() else { return };
    let golden = phash_golden();
    let images: Vec<RgbImage> = golden.iter().map(|(_, img, _)| img.clone()).collect();
    let stats = check_batch(&gpu, &images, "golden");
    // The golden images are textures: the device hashes most of them (11 of 13 on lavapipe;
    // the two others have coefficients within ~0.05 of the median).
    assert!(stats.on_device * 2 > images.len(), "{stats:?}");
    // And against ImageHash itself, which the CPU equals on these images.
    let refs: Vec<&RgbImage> = images.iter().collect();
    for ((file, _, expected), h) in golden.iter().zip(gpu.phash_batch(&refs).unwrap()) {
        assert_eq!(h.hash, *expected, "{file}");
    }
}

#[test]
fn generated_images_of_many_shapes_hash_as_on_the_cpu() {
    let Some(gpu) = backend_or_skip() else { return };
    let images = phash_shapes();
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
    let stats = check_batch(&gpu, &images, "large");
    if gpu.loop_budget().is_none() {
        assert_eq!(stats.on_host, 0, "{stats:?}");
    }
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

/// A 32×32 image with the given gray levels (R = G = B, so Pillow's luma is the level itself,
/// and a side of 32 is not resampled): its 32×32 image is exactly `levels`.
fn gray_image(levels: &[u8; 1024]) -> RgbImage {
    RgbImage {
        width: 32,
        height: 32,
        data: levels.iter().flat_map(|&v| [v, v, v]).collect(),
    }
}

/// xorshift32, for reproducible noise.
fn noise(state: &mut u32) -> u32 {
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    *state
}

/// A photo-like image: a few smooth waves of random frequency and phase over a gradient, plus
/// a little noise, per channel.
fn natural(w: u32, h: u32, seed: u32) -> RgbImage {
    let mut st = seed.wrapping_mul(2_654_435_761) | 1;
    let mut r = || (noise(&mut st) % 10_000) as f32 / 10_000.0;
    let waves: Vec<[f32; 4]> = (0..4)
        .map(|_| {
            [
                r() * 6.0 + 0.5,
                r() * 6.0 + 0.5,
                r() * TAU,
                r() * 60.0 + 10.0,
            ]
        })
        .collect();
    let tilt = [r() - 0.5, r() - 0.5];
    let mut st2 = seed | 1;
    let mut data = Vec::with_capacity((3 * w * h) as usize);
    for y in 0..h {
        for x in 0..w {
            let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
            let mut base = 128.0 + 80.0 * (tilt[0] * u + tilt[1] * v);
            for wv in &waves {
                base += wv[3] * (wv[0] * u * TAU + wv[1] * v * TAU + wv[2]).sin();
            }
            for c in 0..3 {
                let jitter = (noise(&mut st2) % 9) as f32 - 4.0;
                data.push((base + 12.0 * c as f32 + jitter).clamp(0.0, 255.0) as u8);
            }
        }
    }
    RgbImage {
        width: w,
        height: h,
        data,
    }
}

/// The shader's flag rule, replayed on the host from its own coefficients `g` and bounds `e`
/// (shaders/phash_dct.wgsl, "Median"): is some coefficient within `e_i + M` of the median,
/// with M the largest bound near the 32nd and 33rd values? `slack` scales the threshold.
fn near_median(g: &[f64; 64], e: &[f64; 64], slack: f64) -> bool {
    let mut sorted = *g;
    sorted.sort_by(f64::total_cmp);
    let (a, b) = (sorted[31], sorted[32]);
    let med = (a + b) / 2.0;
    let emax = e.iter().copied().fold(0.0, f64::max);
    let m = g
        .iter()
        .zip(e)
        .filter(|(v, _)| (*v - a).abs() <= 2.0 * emax || (*v - b).abs() <= 2.0 * emax)
        .map(|(_, e)| *e)
        .fold(0.0, f64::max);
    g.iter()
        .zip(e)
        .any(|(v, e)| (v - med).abs() <= slack * (e + m + 1.2e-7 * med.abs()) + 1e-3)
}

/// Runs the DCT shader alone on `grays` and checks it against the CPU's f64 block: every
/// coefficient within its bound, every bound within the a priori worst case (0.41, derived in
/// shaders/phash_dct.wgsl), every hash the shader did not flag equal to the CPU's, and the
/// flags themselves against the rule replayed on the host (raised where it says uncertain,
/// not raised where every coefficient is clearly away from the median). Returns how many
/// images had a flag.
fn check_dct(gpu: &WgpuBackend, grays: &[[u8; 1024]], what: &str) -> usize {
    let details = gpu.phash_dct_detail(grays).unwrap();
    assert_eq!(details.len(), grays.len());
    let mut flagged = 0;
    for (i, (g, d)) in grays.iter().zip(&details).enumerate() {
        let cpu = dct_block(g);
        for (j, (&c, (&v, &b))) in cpu
            .iter()
            .flatten()
            .zip(d.coefficients.iter().zip(&d.bounds))
            .enumerate()
        {
            assert!(
                (f64::from(v) - c).abs() <= f64::from(b),
                "{what} #{i} coefficient {j}: device {v}, cpu {c}, bound {b}"
            );
            assert!(
                b > 0.0 && b <= 0.41,
                "{what} #{i} coefficient {j}: bound {b}"
            );
        }
        // The flag rule, for both hashes (the flipped block negates odd horizontal frequencies).
        let e: [f64; 64] = std::array::from_fn(|j| f64::from(d.bounds[j]));
        let h: [f64; 64] = std::array::from_fn(|j| f64::from(d.coefficients[j]));
        let f: [f64; 64] = std::array::from_fn(|j| if j % 2 == 1 { -h[j] } else { h[j] });
        for (flag, block, name) in [
            (d.hash_uncertain, &h, "hash"),
            (d.flipped_uncertain, &f, "flipped"),
        ] {
            // Below 0.99 x the threshold the shader must flag; above 1.03 x it must not.
            if near_median(block, &e, 0.99) {
                assert!(
                    flag,
                    "{what} #{i}: {name} not flagged though near the median"
                );
            }
            if flag {
                assert!(
                    near_median(block, &e, 1.03),
                    "{what} #{i}: {name} flagged though clear of the median"
                );
            }
        }
        let want = phash_of_gray32(g);
        if d.hash != want {
            eprintln!(
                "{what} #{i}: the f32 hash differs from the CPU's (flagged: {flagged_now})",
                flagged_now = d.hash_uncertain || d.flipped_uncertain
            );
        }
        if !d.hash_uncertain {
            assert_eq!(
                d.hash.hash, want.hash,
                "{what} #{i}: unflagged hash differs"
            );
        }
        if !d.flipped_uncertain {
            assert_eq!(
                d.hash.flipped, want.flipped,
                "{what} #{i}: unflagged flip differs"
            );
        }
        if d.hash_uncertain || d.flipped_uncertain {
            let mut v: Vec<f64> = cpu.iter().flatten().copied().collect();
            v.sort_by(f64::total_cmp);
            let med = (v[31] + v[32]) / 2.0;
            let closest = cpu
                .iter()
                .flatten()
                .map(|c| (c - med).abs())
                .fold(f64::INFINITY, f64::min);
            let bmax = d.bounds.iter().copied().fold(0f32, f32::max);
            let bmin = d.bounds.iter().copied().fold(f32::INFINITY, f32::min);
            eprintln!(
                "{what} #{i} flagged ({} {}): cpu middle {:?}, closest to median {closest:.4}, \
                 bounds {bmin:.4}..{bmax:.4}",
                d.hash_uncertain,
                d.flipped_uncertain,
                &v[29..35]
            );
        }
        flagged += usize::from(d.hash_uncertain || d.flipped_uncertain);
    }
    flagged
}

#[test]
fn dct_bounds_hold_on_textures_noise_and_extremes() {
    let Some(gpu) = backend_or_skip() else { return };
    // The 32×32 images of photo-like and patterned images: what the shader sees in practice.
    let textured: Vec<[u8; 1024]> = (0..120)
        .map(|i| {
            let (w, h) = (40 + (i * 37) % 400, 40 + (i * 53) % 300);
            let img = if i % 2 == 0 {
                natural(w, h, i)
            } else {
                pattern(w, h, i)
            };
            gray32(&img).unwrap()
        })
        .collect();
    let flagged = check_dct(&gpu, &textured, "textured");
    eprintln!("textured: {flagged} of {} flagged", textured.len());
    // Gaps between the sorted coefficients near the median are tens of units on textured
    // images, the uncertainty band a fraction of one: a flag is rare. Far more than a few would
    // mean the bound or the flag logic is broken (and the device would do no real work).
    assert!(flagged * 10 <= textured.len(), "{flagged} flagged");

    // Uniform noise, and the extremes the a priori bound is about: full-range checkerboards and
    // stripes, black, white, halves.
    let mut st = 7u32;
    let mut extremes: Vec<[u8; 1024]> = (0..40)
        .map(|_| std::array::from_fn(|_| noise(&mut st) as u8))
        .collect();
    extremes.push([0; 1024]);
    extremes.push([255; 1024]);
    extremes.push(std::array::from_fn(|i| {
        if (i / 32 + i % 32) % 2 == 0 { 255 } else { 0 }
    }));
    extremes.push(std::array::from_fn(|i| if i % 2 == 0 { 255 } else { 0 }));
    extremes.push(std::array::from_fn(
        |i| if (i / 32) % 2 == 0 { 255 } else { 0 },
    ));
    extremes.push(std::array::from_fn(|i| if i % 32 < 16 { 255 } else { 0 }));
    extremes.push(std::array::from_fn(|i| if i < 512 { 0 } else { 255 }));
    check_dct(&gpu, &extremes, "extremes");
}

/// A left-right symmetric 32×32 image: its 32 odd horizontal frequencies are exactly zero, so
/// the CPU's are rounding noise, and with more than one negative even one the median falls
/// among those zeros. Returned with a check that it does.
fn symmetric_levels(seed: u32) -> [u8; 1024] {
    let mut st = seed | 1;
    let half: Vec<u8> = (0..32 * 16)
        .map(|i| {
            let (y, x) = (i / 16, i % 16);
            (((x * 9 + y * 5) % 200) as u32 + noise(&mut st) % 40) as u8
        })
        .collect();
    let levels: [u8; 1024] = std::array::from_fn(|i| {
        let (y, x) = (i / 32, i % 32);
        half[y * 16 + x.min(31 - x)]
    });
    let mut sorted: Vec<f64> = dct_block(&levels).iter().flatten().copied().collect();
    sorted.sort_by(f64::total_cmp);
    assert!(
        sorted[31].abs() < 1e-6 && sorted[32].abs() < 1e-6,
        "seed {seed}: the median is not among the zero coefficients"
    );
    levels
}

#[test]
fn flat_and_symmetric_images_are_flagged_and_still_hash_as_on_the_cpu() {
    let Some(gpu) = backend_or_skip() else { return };
    let mut grays: Vec<[u8; 1024]> = [0u8, 77, 128, 255].iter().map(|&v| [v; 1024]).collect();
    grays.extend((1..=4).map(symmetric_levels));
    let details = gpu.phash_dct_detail(&grays).unwrap();
    for (i, d) in details.iter().enumerate() {
        // Coefficients that tie with the median in exact arithmetic: neither hash is certain.
        assert!(d.hash_uncertain && d.flipped_uncertain, "image {i}: {d:?}");
    }
    // And the flags matter: the f32 bits of such ties are rounding noise, unlike the CPU's.
    let raw_differs = grays
        .iter()
        .zip(&details)
        .filter(|(g, d)| d.hash != phash_of_gray32(g))
        .count();
    assert!(raw_differs > 0, "every f32 hash equals the CPU's");
    // Through the whole path, as RGB images: every one of them is recomputed on the host, and
    // the result is the CPU's.
    let images: Vec<RgbImage> = grays.iter().map(gray_image).collect();
    let refs: Vec<&RgbImage> = images.iter().collect();
    let (hashes, stats) = gpu.phash_batch_with_stats(&refs).unwrap();
    assert_eq!(stats.dct_on_host, images.len(), "{stats:?}");
    for (img, h) in images.iter().zip(hashes) {
        assert_eq!(h, phash(img).unwrap());
    }
}

#[test]
fn many_textured_images_are_hashed_on_the_device_as_on_the_cpu() {
    let Some(gpu) = backend_or_skip() else { return };
    let images: Vec<RgbImage> = (0..160u32)
        .map(|i| {
            let (w, h) = (33 + (i * 71) % 360, 33 + (i * 29) % 260);
            if i % 2 == 0 {
                natural(w, h, i + 1000)
            } else {
                pattern(w, h, i + 1000)
            }
        })
        .collect();
    let stats = check_batch(&gpu, &images, "textured");
    assert_eq!(stats.on_host, 0, "{stats:?}");
    assert!(stats.dct_on_host * 10 <= images.len(), "{stats:?}");
}
