//! The perceptual hash on CUDA: `cuda/phash.cu` makes each image's 32×32 grayscale image
//! (Pillow "L" luma, Pillow LANCZOS in its fixed point and pass order, equal bit for bit to the
//! CPU's [`gray32`](crate::curate::phash::gray32)); 1 KB per image comes back and is hashed by
//! the CPU's own [`phash_of_gray32`] (an f64 8×8 DCT of a 32×32 image, a few microseconds), so
//! the hashes equal the CPU's by construction. The reduction, nearly all of the work (it reads
//! every source pixel), runs on the GPU.
//!
//! [`PhashJobs`] is the host planning (descriptors and [`Gray32Tables`]); tests/cuda_emulated.rs
//! runs the kernels over it on the CPU, and tests/cuda_phash.rs on a GPU.

use cudarc::driver::{DevicePtr, LaunchConfig, PushKernelArg};

use super::kernels::KernelFamily;
use super::{CudaBackend, cuda_err};
use crate::curate::phash::{PerceptualHash, phash_of_gray32};
use crate::curate::phash_tables::{Gray32Tables, SIDE, vertical_first};
use crate::error::{Error, Result};
use crate::image::RgbImage;

/// i64 fields per image; must match `PJ_FIELDS` of cuda/phash.cu.
pub const PHASH_FIELDS: usize = 8;
/// Threads per block of both kernels (`THREADS` of cuda/phash.cu).
pub const PHASH_THREADS: u32 = 256;
/// Blocks of `phash_second_pass` per image: 32 × 32 outputs.
pub const SECOND_BLOCKS_PER_IMAGE: u32 = (SIDE * SIDE) as u32 / PHASH_THREADS;

/// Everything the two kernels of a batch read besides the pixels.
#[derive(Debug, Default)]
pub struct PhashJobs {
    /// Per image: source pointer, width, height, vertical first, `pos` index of the width's
    /// and the height's table, intermediate byte offset, first block of the first pass.
    pub jobs: Vec<i64>,
    /// The LANCZOS tables the jobs point into.
    pub tables: Gray32Tables,
    /// Bytes of all intermediates.
    pub scratch_bytes: usize,
    /// Blocks of `phash_first_pass`.
    pub first_blocks: u32,
}

impl PhashJobs {
    /// Plans a batch: image `i` is `sizes[i]` = (width, height) at device address
    /// `sources[i]`. Errors on a zero size or a batch too large for one launch.
    pub fn new(sizes: &[(u32, u32)], sources: &[u64]) -> Result<PhashJobs> {
        let mut plan = PhashJobs::default();
        plan.jobs.reserve(sizes.len() * PHASH_FIELDS);
        let mut blocks: u64 = 0;
        for (&(w, h), &src) in sizes.iter().zip(sources) {
            if w == 0 || h == 0 {
                return Err(Error::Resize(format!("cannot hash a {w}x{h} image")));
            }
            let vfirst = vertical_first(w, h);
            let hcoef = plan.tables.table(w)?;
            let vcoef = plan.tables.table(h)?;
            // The intermediate: 32 × width after the vertical pass, height × 32 after the
            // horizontal one.
            let inter = SIDE as u64 * u64::from(if vfirst { w } else { h });
            plan.jobs.extend_from_slice(&[
                src as i64,
                i64::from(w),
                i64::from(h),
                i64::from(vfirst),
                i64::from(hcoef),
                i64::from(vcoef),
                plan.scratch_bytes as i64,
                blocks as i64,
            ]);
            plan.scratch_bytes += inter as usize;
            blocks += inter.div_ceil(u64::from(PHASH_THREADS));
        }
        let second = sizes.len() as u64 * u64::from(SECOND_BLOCKS_PER_IMAGE);
        let limit = u64::from(i32::MAX as u32);
        if blocks > limit || second > limit {
            return Err(Error::Resize(
                "phash batch too large for one launch; split it".into(),
            ));
        }
        plan.first_blocks = blocks as u32;
        Ok(plan)
    }
}

impl CudaBackend {
    /// `imagehash.phash` of each image and of its mirror, equal to the CPU's
    /// [`phash`](crate::curate::phash::phash): the 32×32 images on the GPU, the DCT on the host
    /// (see the module docs). An image whose pixel buffer does not match its size is an error.
    pub fn phash_batch(&self, images: &[&RgbImage]) -> Result<Vec<PerceptualHash>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let packed = crate::backend::shapes::packed_rgb_batch(images, images.len())?;
        let mut staging = Vec::with_capacity(packed.total as usize);
        for img in images {
            staging.extend_from_slice(&img.data);
        }
        let stream = self.stream();
        let pixels = stream
            .clone_htod(&staging)
            .map_err(cuda_err("uploading the images to hash"))?;
        let plan = {
            let (base, _guard) = pixels.device_ptr(stream);
            let sources: Vec<u64> = packed.offsets.iter().map(|&o| base + o).collect();
            PhashJobs::new(&packed.sizes, &sources)?
        };
        let jobs = stream
            .clone_htod(&plan.jobs)
            .map_err(cuda_err("uploading phash jobs"))?;
        let pos = stream
            .clone_htod(&plan.tables.pos)
            .map_err(cuda_err("uploading phash tables"))?;
        // i32 bit patterns: the kernel reads them as `const int*`
        let weights = stream
            .clone_htod(&plan.tables.weights)
            .map_err(cuda_err("uploading phash weights"))?;
        // SAFETY: the first pass writes every intermediate byte the second pass reads.
        let mut scratch = unsafe { stream.alloc::<u8>(plan.scratch_bytes.max(1)) }
            .map_err(cuda_err("allocating the phash intermediates"))?;
        // SAFETY: the second pass writes all 1024 levels of every image.
        let mut out = unsafe { stream.alloc::<u8>(images.len() * SIDE * SIDE) }
            .map_err(cuda_err("allocating the phash images"))?;
        let n_images = images.len() as i32;
        let config = |blocks: u32| LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (PHASH_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };

        let first = self.function(KernelFamily::Phash, "phash_first_pass")?;
        let mut launch = stream.launch_builder(&first);
        launch
            .arg(&jobs)
            .arg(&n_images)
            .arg(&pos)
            .arg(&weights)
            .arg(&mut scratch);
        // SAFETY: argument types and order match phash_first_pass; the jobs address only the
        // uploaded pixels (sizes checked against their buffers) and `scratch_bytes`.
        unsafe { launch.launch(config(plan.first_blocks)) }
            .map_err(cuda_err("launching phash_first_pass"))?;

        let second = self.function(KernelFamily::Phash, "phash_second_pass")?;
        let mut launch = stream.launch_builder(&second);
        launch
            .arg(&jobs)
            .arg(&pos)
            .arg(&weights)
            .arg(&scratch)
            .arg(&mut out);
        // SAFETY: argument types and order match phash_second_pass; `out` holds 1024 bytes per
        // image, the grid covers exactly that.
        unsafe { launch.launch(config(images.len() as u32 * SECOND_BLOCKS_PER_IMAGE)) }
            .map_err(cuda_err("launching phash_second_pass"))?;

        let grays = stream
            .clone_dtoh(&out)
            .map_err(cuda_err("downloading the phash images"))?;
        self.synchronize()?;
        Ok(grays
            .chunks_exact(SIDE * SIDE)
            .map(|g| {
                let mut gray = [0u8; SIDE * SIDE];
                gray.copy_from_slice(g);
                phash_of_gray32(&gray)
            })
            .collect())
    }
}
