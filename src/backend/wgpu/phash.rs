//! The perceptual hash on wgpu, in two dispatches that leave nothing on the host in between:
//! `shaders/phash.wgsl` makes each image's 32×32 grayscale image (Pillow "L" luma, Pillow
//! LANCZOS in Pillow's fixed point, Pillow 13's pass order), equal bit for bit to the CPU's
//! [`gray32`]; `shaders/phash_dct.wgsl` then computes, from that buffer, the 8×8 DCT block in
//! f32, its median, the hash and the flipped hash. Only 20 bytes per image come back.
//!
//! The hash must equal the CPU's, which computes the block in f64. The DCT shader carries a
//! rigorous bound on each coefficient's error (derived in the shader's header) and flags an
//! image when any coefficient is too close to the median for its bit to be certain; for those
//! images only, the 32×32 image is read back and hashed with the CPU's own
//! [`phash_of_gray32`]. Flat or exactly symmetric images (coefficients that are zero up to
//! rounding) are always flagged; of textured images, a few percent are (4–6% of the test
//! images on lavapipe, where some coefficient sat within ~0.05 of the median).
//!
//! The resize coefficients are [`Gray32Tables`] ([`pillow_resample`]'s own fixed-point tables
//! and pass-order rule, shared with the CUDA kernel), uploaded as they are; the shader only sums.

use super::{ShaderFamily, WgpuBackend, grid, wgpu_err};
use crate::curate::phash::{PerceptualHash, gray32, phash, phash_of_gray32};
use crate::curate::phash_tables::{Gray32Tables, SIDE, vertical_first};
use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::image::pillow_resample::{self, PillowFilter};

/// Fields per image descriptor; must match `J_FIELDS` of shaders/phash.wgsl.
const JOB_FIELDS: usize = 5;
/// Invocations per workgroup of `phash_gray32`.
const WORKGROUP: u64 = 256;
/// Coefficients of the hash's DCT block (8 × 8).
const COEFS: usize = 64;
/// Words per image of `phash_dct`'s output (hash high, low, flipped high, low, flags); must
/// match `OUT_WORDS` of shaders/phash_dct.wgsl.
const DCT_OUT_WORDS: usize = 5;
/// Bytes of one 32×32 image on the device (one level per word).
const GRAY_BYTES: usize = 4 * SIDE * SIDE;

/// Where [`WgpuBackend::phash_batch_with_stats`] computed each image's hash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhashStats {
    /// Everything on the device: 32×32 image, DCT, median and bits.
    pub on_device: usize,
    /// 32×32 image and DCT on the device, but a coefficient was too close to the median for the
    /// f32 bit to be certain, so the 32×32 image was read back and hashed on the host.
    pub dct_on_host: usize,
    /// Reduced on the host from the start: larger than one binding, or (on lavapipe) a resize
    /// past the driver's loop budget.
    pub on_host: usize,
}

/// The DCT shader's result for one 32×32 image, with its working values, for tests and
/// diagnostics ([`WgpuBackend::phash_dct_detail`]).
#[derive(Debug, Clone)]
pub struct DctDetail {
    /// The hashes the shader computed (before any host recomputation).
    pub hash: PerceptualHash,
    /// A coefficient may sit on the other side of the median in exact arithmetic.
    pub hash_uncertain: bool,
    /// The same for the flipped hash's coefficients and median.
    pub flipped_uncertain: bool,
    /// The 8×8 block in f32, row-major `[k][l]`, like [`dct_block`](crate::curate::phash::dct_block).
    pub coefficients: [f32; COEFS],
    /// The shader's bound on each coefficient's distance from the exact value (and from the
    /// CPU's f64 value).
    pub bounds: [f32; COEFS],
}

/// Images of a batch as [`WgpuBackend`] processes them, in order.
enum Part<'a> {
    /// Images whose pixels fit one binding together: one dispatch of each kernel.
    Device(Vec<&'a RgbImage>),
    /// One image reduced on the host.
    Host(&'a RgbImage),
}

/// The first rows of the 32-point DCT-II matrix, `cos(π k (2n + 1) / 64)`, `[k][n]`, computed
/// in f64 like the CPU's table and rounded to f32 (the shader's error bound counts on that).
fn dct_cosines() -> Vec<f32> {
    (0..8)
        .flat_map(|k| {
            (0..SIDE).map(move |n| {
                (std::f64::consts::PI * f64::from(k) * (2 * n + 1) as f64 / (2 * SIDE) as f64).cos()
                    as f32
            })
        })
        .collect()
}

/// The 64-bit hash of the shader's high and low words.
fn join(hi: u32, lo: u32) -> u64 {
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Little-endian words of a read-back.
fn words(raw: &[u8]) -> impl Iterator<Item = u32> + '_ {
    raw.chunks_exact(4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
}

/// 32×32 images from their device form (one level per word).
fn levels(raw: &[u8]) -> Vec<[u8; SIDE * SIDE]> {
    raw.chunks_exact(GRAY_BYTES)
        .map(|img| {
            let mut g = [0u8; SIDE * SIDE];
            // Levels are 0..=255 by the shader's clamp: the low byte is the whole word.
            for (p, word) in g.iter_mut().zip(img.chunks_exact(4)) {
                *p = word[0];
            }
            g
        })
        .collect()
}

/// The descriptors and tables of one `phash_gray32` dispatch.
#[derive(Debug, Default)]
struct PhashJobs {
    /// Per image: source byte offset, width, vertical pass first (0/1), `pos` index of output
    /// column 0 and of output row 0.
    jobs: Vec<u32>,
    /// The LANCZOS tables the jobs point into.
    tables: Gray32Tables,
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
    /// Checks every image and splits the batch into groups that fit one binding (pixels in,
    /// 32×32 images out), and images reduced on the host: larger than a binding on their own,
    /// or (on lavapipe) needing more loop iterations per invocation than the driver runs
    /// ([`loop_budget`](Self::loop_budget)).
    fn plan<'a>(&self, images: &[&'a RgbImage]) -> Result<Vec<Part<'a>>> {
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
        let max_images = (limit / GRAY_BYTES).max(1);
        let budget = self.loop_budget();
        let mut parts = Vec::new();
        let mut group: Vec<&RgbImage> = Vec::new();
        let mut bytes = 0usize;
        for &img in images {
            if img.data.len() > limit || budget.is_some_and(|b| loop_cost(img) > b) {
                if !group.is_empty() {
                    parts.push(Part::Device(std::mem::take(&mut group)));
                }
                bytes = 0;
                parts.push(Part::Host(img));
                continue;
            }
            if bytes + img.data.len() > limit || group.len() == max_images {
                parts.push(Part::Device(std::mem::take(&mut group)));
                bytes = 0;
            }
            bytes += img.data.len();
            group.push(img);
        }
        if !group.is_empty() {
            parts.push(Part::Device(group));
        }
        Ok(parts)
    }

    /// The 32×32 grayscale image the perceptual hash is computed from, for each image: equal to
    /// [`gray32`] on the CPU, bit for bit. Images are sent in groups that fit one storage
    /// binding; an image larger than a binding on its own, or (on lavapipe) one whose resize
    /// needs more loop iterations per invocation than the driver runs
    /// ([`loop_budget`](Self::loop_budget)), is reduced on the CPU (same result).
    pub fn gray32_batch(&self, images: &[&RgbImage]) -> Result<Vec<[u8; SIDE * SIDE]>> {
        let mut out = Vec::with_capacity(images.len());
        for part in self.plan(images)? {
            match part {
                Part::Device(group) => {
                    let n = group.len();
                    let dst = self.gray32_dispatch(&group)?;
                    let raw = self
                        .read_back(dst.buffer(), (n * GRAY_BYTES) as u64)
                        .map_err(|e| wgpu_err(format!("downloading the phash images: {e}")))?;
                    out.extend(levels(&raw));
                }
                Part::Host(img) => out.push(gray32(img)?),
            }
        }
        Ok(out)
    }

    /// `imagehash.phash` of each image and of its mirror, equal to the CPU's
    /// [`phash`](crate::curate::phash::phash), computed on the device (see the module docs).
    pub fn phash_batch(&self, images: &[&RgbImage]) -> Result<Vec<PerceptualHash>> {
        Ok(self.phash_batch_with_stats(images)?.0)
    }

    /// [`phash_batch`](Self::phash_batch), and where each image's hash was computed.
    pub fn phash_batch_with_stats(
        &self,
        images: &[&RgbImage],
    ) -> Result<(Vec<PerceptualHash>, PhashStats)> {
        let mut out = Vec::with_capacity(images.len());
        let mut stats = PhashStats::default();
        for part in self.plan(images)? {
            match part {
                Part::Device(group) => out.extend(self.phash_group(&group, &mut stats)?),
                Part::Host(img) => {
                    out.push(phash(img)?);
                    stats.on_host += 1;
                }
            }
        }
        Ok((out, stats))
    }

    /// The DCT shader alone on given 32×32 images (row-major levels), with its coefficients,
    /// their error bounds and its flags; no host recomputation. For tests and diagnostics.
    pub fn phash_dct_detail(&self, grays: &[[u8; SIDE * SIDE]]) -> Result<Vec<DctDetail>> {
        if grays.is_empty() {
            return Ok(Vec::new());
        }
        let n = grays.len();
        let levels: Vec<u32> = grays.iter().flatten().map(|&v| u32::from(v)).collect();
        let gray = self.upload_words(&levels)?;
        let detail = self.storage((n * 2 * COEFS * 4) as u64)?;
        let out = self.dct_dispatch(gray.buffer(), n, Some(detail.buffer()))?;
        let raw: Vec<u32> =
            words(&self.read_back(out.buffer(), (n * DCT_OUT_WORDS * 4) as u64)?).collect();
        let det: Vec<f32> = words(&self.read_back(detail.buffer(), (n * 2 * COEFS * 4) as u64)?)
            .map(f32::from_bits)
            .collect();
        Ok(raw
            .chunks_exact(DCT_OUT_WORDS)
            .zip(det.chunks_exact(2 * COEFS))
            .map(|(w, d)| {
                let mut coefficients = [0f32; COEFS];
                let mut bounds = [0f32; COEFS];
                coefficients.copy_from_slice(&d[..COEFS]);
                bounds.copy_from_slice(&d[COEFS..]);
                DctDetail {
                    hash: PerceptualHash {
                        hash: join(w[0], w[1]),
                        flipped: join(w[2], w[3]),
                    },
                    hash_uncertain: w[4] & 1 != 0,
                    flipped_uncertain: w[4] & 2 != 0,
                    coefficients,
                    bounds,
                }
            })
            .collect())
    }

    /// The hashes of one group: both kernels back to back on the device, one read-back of 20
    /// bytes per image, and a second one of the 32×32 images of flagged images only.
    fn phash_group(
        &self,
        images: &[&RgbImage],
        stats: &mut PhashStats,
    ) -> Result<Vec<PerceptualHash>> {
        let n = images.len();
        let gray = self.gray32_dispatch(images)?;
        let out = self.dct_dispatch(gray.buffer(), n, None)?;
        let raw: Vec<u32> = words(
            &self
                .read_back(out.buffer(), (n * DCT_OUT_WORDS * 4) as u64)
                .map_err(|e| wgpu_err(format!("downloading the phashes: {e}")))?,
        )
        .collect();
        let mut hashes: Vec<PerceptualHash> = raw
            .chunks_exact(DCT_OUT_WORDS)
            .map(|w| PerceptualHash {
                hash: join(w[0], w[1]),
                flipped: join(w[2], w[3]),
            })
            .collect();
        let flagged: Vec<usize> = raw
            .chunks_exact(DCT_OUT_WORDS)
            .enumerate()
            .filter(|(_, w)| w[4] != 0)
            .map(|(i, _)| i)
            .collect();
        if !flagged.is_empty() {
            let ranges: Vec<(u64, u64)> = flagged
                .iter()
                .map(|&i| ((i * GRAY_BYTES) as u64, GRAY_BYTES as u64))
                .collect();
            let raw = self
                .read_back_ranges(gray.buffer(), &ranges)
                .map_err(|e| wgpu_err(format!("downloading flagged phash images: {e}")))?;
            for (&i, g) in flagged.iter().zip(levels(&raw)) {
                hashes[i] = phash_of_gray32(&g);
            }
        }
        stats.dct_on_host += flagged.len();
        stats.on_device += n - flagged.len();
        Ok(hashes)
    }

    /// Queues `phash_dct` over `n` 32×32 images in `gray` (one level per word); returns its
    /// output buffer (`DCT_OUT_WORDS` words per image). `detail`, when given, receives each
    /// image's coefficients and bounds.
    fn dct_dispatch(
        &self,
        gray: &wgpu::Buffer,
        n: usize,
        detail: Option<&wgpu::Buffer>,
    ) -> Result<super::pool::PooledBuffer> {
        let cosines = self.upload_f32(&dct_cosines())?;
        let out = self.storage((n * DCT_OUT_WORDS * 4) as u64)?;
        let want_detail = u32::from(detail.is_some());
        // The shader writes `detail` only when asked; the binding still needs a buffer.
        let dummy;
        let detail = match detail {
            Some(d) => d,
            None => {
                dummy = self.storage(4)?;
                dummy.buffer()
            }
        };
        // One workgroup per image.
        let (gx, gy) = grid(n as u64)?;
        let params = [n as u32, gx, want_detail, 0];
        self.dispatch(
            ShaderFamily::PhashDct,
            "phash_dct",
            &params,
            &[
                (1, gray),
                (2, cosines.buffer()),
                (3, out.buffer()),
                (4, detail),
            ],
            (gx, gy),
        )?;
        Ok(out)
    }

    /// Queues `phash_gray32` over one group; returns the buffer of its 32×32 images (one level
    /// per word, `GRAY_BYTES` per image).
    fn gray32_dispatch(&self, images: &[&RgbImage]) -> Result<super::pool::PooledBuffer> {
        let mut jobs = PhashJobs::default();
        let mut pixels = Vec::with_capacity(images.iter().map(|i| i.data.len()).sum::<usize>());
        for img in images {
            let vfirst = vertical_first(img.width, img.height);
            let h = jobs.tables.table(img.width)?;
            let v = jobs.tables.table(img.height)?;
            jobs.jobs
                .extend_from_slice(&[pixels.len() as u32, img.width, u32::from(vfirst), h, v]);
            pixels.extend_from_slice(&img.data);
        }
        debug_assert_eq!(jobs.jobs.len(), images.len() * JOB_FIELDS);
        let n_out = (images.len() * SIDE * SIDE) as u64;
        let src = self.upload_bytes(&pixels)?;
        let jobs_buf = self.upload_words(&jobs.jobs)?;
        let pos = self.upload_words(&jobs.tables.pos)?;
        let weights = self.upload_words(&jobs.tables.weights)?;
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
        Ok(dst)
    }
}
