//! The perceptual hash on wgpu: `shaders/phash.wgsl` makes each image's 32×32 grayscale image
//! (Pillow "L" luma, Pillow LANCZOS in Pillow's fixed point, Pillow 13's pass order), equal bit
//! for bit to the CPU's [`gray32`]; the 8×8 DCT block and its median are then computed on the
//! host from those 1024 levels ([`phash_of_gray32`], the CPU's own code): 10k multiply–adds
//! per image, not worth a dispatch, and identical arithmetic by construction.
//!
//! The coefficients are [`pillow_resample`]'s own (its fixed-point tables, its pass-order
//! rule), uploaded as they are; the shader only sums.

use std::collections::HashMap;

use super::{ShaderFamily, WgpuBackend, grid, wgpu_err};
use crate::curate::phash::{PerceptualHash, gray32, phash_of_gray32};
use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::image::pillow_resample::{self, PRECISION_BITS, PillowFilter};

/// Side of the hash's grayscale image.
const SIDE: usize = 32;
/// Fields per image descriptor; must match `J_FIELDS` of shaders/phash.wgsl.
const JOB_FIELDS: usize = 5;
/// Invocations per workgroup of `phash_gray32`.
const WORKGROUP: u64 = 256;

/// Everything the shader reads besides the pixels.
#[derive(Debug, Default)]
struct PhashJobs {
    /// Per image: source byte offset, width, vertical pass first (0/1), `pos` index of output
    /// column 0 and of output row 0.
    jobs: Vec<u32>,
    /// Per output position: first source index, taps, weight offset.
    pos: Vec<u32>,
    /// Pillow's 22-bit weights (i32 bit patterns).
    weights: Vec<u32>,
    /// `pos` index of the table of each source length (the output is always 32).
    tables: HashMap<u32, u32>,
}

impl PhashJobs {
    /// The `pos` index of output 0 of the `in_size → 32` LANCZOS table, made on first use. A
    /// source already 32 long is not resampled by Pillow: one tap of weight 2^22 is the same.
    fn table(&mut self, in_size: u32) -> Result<u32> {
        if let Some(&t) = self.tables.get(&in_size) {
            return Ok(t);
        }
        let base = self.pos.len() / 3;
        let wbase = self.weights.len();
        if in_size as usize == SIDE {
            for i in 0..SIDE {
                self.pos
                    .extend_from_slice(&[i as u32, 1, (wbase + i) as u32]);
                self.weights.push(1 << PRECISION_BITS);
            }
        } else {
            let c = pillow_resample::coefficients(in_size as usize, SIDE, PillowFilter::Lanczos);
            for (i, (&s, &n)) in c.start.iter().zip(&c.count).enumerate() {
                self.pos
                    .extend_from_slice(&[s as u32, n as u32, (wbase + i * c.ksize) as u32]);
            }
            // Two's complement bits: the shader reads them as i32.
            self.weights.extend(c.weights.iter().map(|&w| w as u32));
        }
        if self.weights.len() > u32::MAX as usize {
            return Err(Error::Resize("phash coefficient tables too large".into()));
        }
        self.tables.insert(in_size, base as u32);
        Ok(base as u32)
    }
}

/// Loop iterations of one `phash_gray32` invocation for `img`: the widest window of one axis
/// times (one more than) the widest of the other, whichever order the passes run in.
fn loop_cost(img: &RgbImage) -> u64 {
    let widest = |n: u32| {
        if n as usize == SIDE {
            return 1;
        }
        let c = pillow_resample::coefficients(n as usize, SIDE, PillowFilter::Lanczos);
        c.count.iter().copied().max().unwrap_or(0) as u64
    };
    (widest(img.width) + 1) * (widest(img.height) + 1)
}

impl WgpuBackend {
    /// The 32×32 grayscale image the perceptual hash is computed from, for each image: equal to
    /// [`gray32`] on the CPU, bit for bit. Images are sent in groups that fit one storage
    /// binding; an image larger than a binding on its own, or (on lavapipe) one whose resize
    /// needs more loop iterations per invocation than the driver runs
    /// ([`loop_budget`](Self::loop_budget)), is reduced on the CPU (same result).
    pub fn gray32_batch(&self, images: &[&RgbImage]) -> Result<Vec<[u8; SIDE * SIDE]>> {
        for img in images {
            let expected = 3 * img.width as usize * img.height as usize;
            if img.width == 0 || img.height == 0 || img.data.len() != expected {
                return Err(Error::Resize(format!(
                    "cannot hash a {}x{} image of {} bytes",
                    img.width,
                    img.height,
                    img.data.len()
                )));
            }
        }
        // Leave room for the rounding of the pixel buffer up to whole words.
        let limit = (self.max_binding().min(u32::MAX as u64) - 4) as usize;
        let mut out = Vec::with_capacity(images.len());
        let mut group: Vec<&RgbImage> = Vec::new();
        let mut bytes = 0usize;
        let budget = self.loop_budget();
        for &img in images {
            if img.data.len() > limit || budget.is_some_and(|b| loop_cost(img) > b) {
                out.extend(self.gray32_group(&group)?);
                group.clear();
                bytes = 0;
                out.push(gray32(img)?);
                continue;
            }
            if bytes + img.data.len() > limit {
                out.extend(self.gray32_group(&group)?);
                group.clear();
                bytes = 0;
            }
            bytes += img.data.len();
            group.push(img);
        }
        out.extend(self.gray32_group(&group)?);
        Ok(out)
    }

    /// `imagehash.phash` of each image and of its mirror, equal to the CPU's
    /// [`phash`](crate::curate::phash::phash): the 32×32 images on the device
    /// ([`gray32_batch`](Self::gray32_batch)), the DCT block and median on the host.
    pub fn phash_batch(&self, images: &[&RgbImage]) -> Result<Vec<PerceptualHash>> {
        Ok(self
            .gray32_batch(images)?
            .iter()
            .map(phash_of_gray32)
            .collect())
    }

    /// One dispatch for images whose pixels fit one binding together.
    fn gray32_group(&self, images: &[&RgbImage]) -> Result<Vec<[u8; SIDE * SIDE]>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let mut jobs = PhashJobs::default();
        let mut pixels = Vec::with_capacity(images.iter().map(|i| i.data.len()).sum::<usize>());
        for img in images {
            let vfirst = pillow_resample::vertical_pass_first(
                img.width as usize,
                img.height as usize,
                SIDE,
                SIDE,
            );
            let h = jobs.table(img.width)?;
            let v = jobs.table(img.height)?;
            jobs.jobs
                .extend_from_slice(&[pixels.len() as u32, img.width, u32::from(vfirst), h, v]);
            pixels.extend_from_slice(&img.data);
        }
        debug_assert_eq!(jobs.jobs.len(), images.len() * JOB_FIELDS);
        let n_out = (images.len() * SIDE * SIDE) as u64;
        let src = self.upload_bytes(&pixels)?;
        let jobs_buf = self.upload_words(&jobs.jobs)?;
        let pos = self.upload_words(&jobs.pos)?;
        let weights = self.upload_words(&jobs.weights)?;
        let dst = self.storage(n_out * 4)?;
        let (gx, gy) = grid(n_out.div_ceil(WORKGROUP))?;
        let params = [images.len() as u32, gx * WORKGROUP as u32];
        self.dispatch(
            ShaderFamily::Phash,
            "phash_gray32",
            &params,
            &[
                (1, src.buffer()),
                (2, jobs_buf.buffer()),
                (3, pos.buffer()),
                (4, weights.buffer()),
                (5, dst.buffer()),
            ],
            (gx, gy),
        )?;
        let raw = self
            .read_back(dst.buffer(), n_out * 4)
            .map_err(|e| wgpu_err(format!("downloading the phash images: {e}")))?;
        Ok(raw
            .chunks_exact(4 * SIDE * SIDE)
            .map(|img| {
                let mut g = [0u8; SIDE * SIDE];
                // Levels are 0..=255 by the shader's clamp: the low byte is the whole word.
                for (p, word) in g.iter_mut().zip(img.chunks_exact(4)) {
                    *p = word[0];
                }
                g
            })
            .collect())
    }
}
