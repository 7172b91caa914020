//! The CUDA kernels of `cuda/`, run by the CPU emulator (tests/common/cuda_emu.h) against the
//! CPU references: the tile kernels through the same host planning (`TileJobs`) and the same
//! Pillow/CPU checks as the GPU test (tests/cuda_tile.rs), the pHash kernels through
//! `PhashJobs` against the CPU's 32×32 image bit for bit, and the decode kernels against
//! `apply_orientation` (the SigLIP ops: tests/cuda_emulated_siglip.rs). This is
//! how the kernels' logic is tested in CI, which has no GPU; on a GPU the tests/cuda_*.rs
//! parity tests run the real thing.
//!
//! Skips (printing why) without a C++ compiler, unless `VLMPREP_REQUIRE_CXX=1`.
#![cfg(feature = "cuda")]

mod common;
use common::cuda_emu::{EmuModule, arg, family};
use common::images::{pattern, phash_golden, phash_shapes};
use common::tile_parity::{SIZES, check_against_pillow_and_cpu};

use vlmprep::backend::cuda::kernels::KernelFamily;
use vlmprep::backend::cuda::phash::{PHASH_THREADS, PhashJobs, SECOND_BLOCKS_PER_IMAGE};
use vlmprep::backend::cuda::tile::{
    BLOCK, FIRST_FIELDS, SECOND_FIELDS, TileJobs, dtype_code, level_encodings,
};
use vlmprep::backend::{HostTiles, TileSpec};
use vlmprep::curate::phash::{gray32, phash, phash_of_gray32};
use vlmprep::image::RgbImage;
use vlmprep::image::orientation::apply_orientation;
use vlmprep::image::tiling::TilePlan;

/// `tile_first_pass` then `tile_second_pass` over host memory, planned by the backend's own `TileJobs`.
fn emulated_tiles(
    m: &EmuModule,
    images: &[&RgbImage],
    plans: &[TilePlan],
    spec: &TileSpec,
) -> HostTiles {
    let sizes: Vec<(u32, u32)> = images.iter().map(|i| (i.width, i.height)).collect();
    let sources: Vec<u64> = images.iter().map(|i| i.data.as_ptr() as u64).collect();
    let jobs = TileJobs::new(&sizes, &sources, plans, spec.dtype, spec.filter).unwrap();
    let enc = level_encodings(spec).unwrap();
    let mut scratch = vec![0u8; jobs.scratch_bytes.max(1)];
    let mut out = vec![0u8; jobs.layout.total_bytes];
    let block = (BLOCK.0, BLOCK.1, 1);
    let n_first = (jobs.first.len() / FIRST_FIELDS) as i32;
    let n_second = (jobs.second.len() / SECOND_FIELDS) as i32;
    let (first, second) = (jobs.first.as_ptr(), jobs.second.as_ptr());
    let (pos, weights) = (jobs.pos.as_ptr(), jobs.weights.as_ptr());
    let (scratch_ptr, out_ptr) = (scratch.as_mut_ptr(), out.as_mut_ptr());
    let (dtype, enc_ptr) = (dtype_code(spec.dtype), enc.as_ptr());
    if jobs.second_blocks > 0 {
        // SAFETY: the argument types and order of tile_first_pass / tile_second_pass; TileJobs
        // addresses only the source images (alive here), `scratch` and `out`, sized as it
        // planned. Neither kernel has barriers or shared memory.
        unsafe {
            m.launch_independent(
                "tile_first_pass",
                (jobs.first_blocks, 1, 1),
                block,
                &[
                    arg(&first),
                    arg(&n_first),
                    arg(&pos),
                    arg(&weights),
                    arg(&scratch_ptr),
                ],
            );
            m.launch_independent(
                "tile_second_pass",
                (jobs.second_blocks, 1, 1),
                block,
                &[
                    arg(&second),
                    arg(&n_second),
                    arg(&pos),
                    arg(&weights),
                    arg(&scratch_ptr),
                    arg(&out_ptr),
                    arg(&dtype),
                    arg(&enc_ptr),
                ],
            );
        }
    }
    drop(scratch);
    HostTiles {
        dtype: spec.dtype,
        layout: jobs.layout,
        data: out,
    }
}

#[test]
fn tile_kernels_match_pillow_and_the_cpu_backend() {
    let Some(m) = family(KernelFamily::Tile) else {
        return;
    };
    let started = std::time::Instant::now();
    let failures = check_against_pillow_and_cpu(&SIZES, |images, plans, spec| {
        emulated_tiles(m, images, plans, spec)
    });
    eprintln!("emulated in {:.1} s", started.elapsed().as_secs_f64());
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn orient_rgb8_applies_every_exif_orientation_as_the_cpu_does() {
    let Some(m) = family(KernelFamily::Decode) else {
        return;
    };
    let img = pattern(37, 21, 3);
    for orientation in 0..=9 {
        let want = apply_orientation(img.clone(), orientation);
        let mut out = vec![0u8; img.data.len()];
        let (src, dst) = (img.data.as_ptr(), out.as_mut_ptr());
        let (w, h, o) = (img.width, img.height, i32::from(orientation));
        let grid = (want.width.div_ceil(16), want.height.div_ceil(16), 1);
        // SAFETY: orient_rgb8(src, dst, w, h, orientation); both buffers hold w·h pixels.
        unsafe {
            m.launch(
                "orient_rgb8",
                grid,
                (16, 16, 1),
                0,
                &[arg(&src), arg(&dst), arg(&w), arg(&h), arg(&o)],
            )
        };
        assert!(out == want.data, "orientation {orientation}");
    }
}

#[test]
fn gray_to_rgb8_replicates_the_plane_honouring_its_pitch() {
    let Some(m) = family(KernelFamily::Decode) else {
        return;
    };
    let (w, h, pitch) = (13u32, 7u32, 16u32);
    let plane: Vec<u8> = (0..pitch * h).map(|i| (i * 37 % 251) as u8).collect();
    let mut out = vec![0u8; (3 * w * h) as usize];
    let (src, dst) = (plane.as_ptr(), out.as_mut_ptr());
    // SAFETY: gray_to_rgb8(src, pitch, dst, w, h); `plane` holds h rows of `pitch` bytes.
    unsafe {
        m.launch(
            "gray_to_rgb8",
            (1, 1, 1),
            (16, 8, 1),
            0,
            &[arg(&src), arg(&pitch), arg(&dst), arg(&w), arg(&h)],
        )
    };
    for y in 0..h {
        for x in 0..w {
            let v = plane[(y * pitch + x) as usize];
            let i = 3 * (y * w + x) as usize;
            assert_eq!(out[i..i + 3], [v, v, v], "pixel {x},{y}");
        }
    }
}

/// The 32×32 images of `cuda/phash.cu` over host memory, planned by the backend's own
/// `PhashJobs`: 1024 levels per image.
fn emulated_gray32(m: &EmuModule, images: &[&RgbImage]) -> Vec<[u8; 1024]> {
    let sizes: Vec<(u32, u32)> = images.iter().map(|i| (i.width, i.height)).collect();
    let sources: Vec<u64> = images.iter().map(|i| i.data.as_ptr() as u64).collect();
    let plan = PhashJobs::new(&sizes, &sources).unwrap();
    let mut scratch = vec![0u8; plan.scratch_bytes.max(1)];
    let mut out = vec![0u8; images.len() * 1024];
    let (jobs, n) = (plan.jobs.as_ptr(), images.len() as i32);
    let (pos, weights) = (plan.tables.pos.as_ptr(), plan.tables.weights.as_ptr());
    let (scratch_ptr, out_ptr) = (scratch.as_mut_ptr(), out.as_mut_ptr());
    let block = (PHASH_THREADS, 1, 1);
    // SAFETY: the argument types and order of phash_first_pass / phash_second_pass (the
    // weights are i32 bit patterns); PhashJobs addresses only the images (alive here) and
    // `scratch`, sized as it planned; `out` holds 1024 bytes per image.
    unsafe {
        m.launch_independent(
            "phash_first_pass",
            (plan.first_blocks, 1, 1),
            block,
            &[
                arg(&jobs),
                arg(&n),
                arg(&pos),
                arg(&weights),
                arg(&scratch_ptr),
            ],
        );
        m.launch_independent(
            "phash_second_pass",
            (images.len() as u32 * SECOND_BLOCKS_PER_IMAGE, 1, 1),
            block,
            &[
                arg(&jobs),
                arg(&pos),
                arg(&weights),
                arg(&scratch_ptr),
                arg(&out_ptr),
            ],
        );
    }
    out.chunks_exact(1024)
        .map(|g| g.try_into().unwrap())
        .collect()
}

#[test]
fn phash_kernels_reduce_every_shape_as_the_cpu_does() {
    let Some(m) = family(KernelFamily::Phash) else {
        return;
    };
    let mut images = phash_shapes();
    images.extend(phash_golden().into_iter().map(|(_, img, _)| img));
    // photo-sized, and a tall one far past Pillow's vertical-first threshold
    images.push(pattern(1920, 1080, 40));
    images.push(pattern(700, 2900, 41));
    let refs: Vec<&RgbImage> = images.iter().collect();
    let grays = emulated_gray32(m, &refs);
    for (img, got) in images.iter().zip(&grays) {
        let want = gray32(img).unwrap();
        let first = want.iter().zip(got).position(|(a, b)| a != b);
        assert!(
            first.is_none(),
            "{}x{}: level {first:?} differs",
            img.width,
            img.height
        );
        assert_eq!(phash_of_gray32(got), phash(img).unwrap());
    }
    // Alone, an image gives what it gave inside the batch (offsets and shared tables).
    assert_eq!(emulated_gray32(m, &refs[3..4])[0], grays[3]);
}
