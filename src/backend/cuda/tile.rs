//! The CUDA tiling path: [`Backend`] for [`CudaBackend`]. Resize + tile + normalize of a whole
//! batch in two launches of `cuda/tile.cu` (a horizontal pass per image into an RGB8 scratch, a
//! vertical pass per tile straight into the batch tensor), each tile at the offset
//! [`TileLayout::new`] gives it, so the result has the CPU backend's layout byte for byte.
//!
//! Everything that decides *what* the kernels compute is built here on the host, as plain
//! arrays ([`TileJobs`]): Pillow's filter weights per output position, and one small descriptor
//! per horizontal job and per tile. The kernels only follow them; the unit tests below run the
//! same arrays through a host model of the kernels and compare with [`CpuBackend`].
//!
//! [`CpuBackend`]: crate::backend::CpuBackend

use std::collections::HashMap;

use cudarc::driver::{CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};

use super::kernels::KernelFamily;
use super::{CudaBackend, DeviceImage, cuda_err};
use crate::backend::{Backend, HostTiles, TileLayout, TileSpec, tile_bytes};
use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::image::normalize::{Dtype, NormalizeTable};
use crate::image::pillow_resample::pillow_weights;
use crate::image::resize::ResizeFilter;
use crate::image::tiling::TilePlan;

/// A batch of tiles in device memory, laid out by [`TileLayout::new`].
pub struct DeviceTiles {
    /// Element type of `data`.
    pub dtype: Dtype,
    /// Where each image's tiles are.
    pub layout: TileLayout,
    /// The batch tensor bytes. At least `layout.total_bytes` long (one byte for an empty batch,
    /// as the driver refuses zero-sized allocations); bytes past `total_bytes` mean nothing.
    pub data: CudaSlice<u8>,
}

/// Pillow's resampling weights for one axis of a whole-image resize `in_size → out_size`
/// (`precompute_coeffs` in libImaging/Resample.c): per output position, the first source index,
/// the number of taps, and `ksize` weight slots (normalized to sum 1, unused slots 0).
#[derive(Debug, Clone, PartialEq)]
pub struct AxisCoefficients {
    /// Weight slots per output position.
    pub ksize: usize,
    /// First source index of each output position.
    pub start: Vec<u32>,
    /// Taps of each output position (`start + count <= in_size`).
    pub count: Vec<u32>,
    /// `ksize` weights per output position, row-major.
    pub weights: Vec<f32>,
}

/// Computes [`AxisCoefficients`] as Pillow does: the support widens by the downscale factor
/// (antialiasing), the weights are normalized in f64 and then stored as f32 for the kernels.
/// Errors on a zero size.
pub fn axis_coefficients(
    in_size: u32,
    out_size: u32,
    filter: ResizeFilter,
) -> Result<AxisCoefficients> {
    if in_size == 0 || out_size == 0 {
        return Err(Error::Resize(format!(
            "cannot resample {in_size} pixels to {out_size}"
        )));
    }
    // The weights are the CPU's Pillow-exact ones (one implementation), stored as f32.
    let w = pillow_weights(in_size as usize, out_size as usize, filter);
    Ok(AxisCoefficients {
        ksize: w.ksize,
        start: w.start.iter().map(|&v| v as u32).collect(),
        count: w.count.iter().map(|&v| v as u32).collect(),
        weights: w.weights.iter().map(|&v| v as f32).collect(),
    })
}

// Descriptor layouts; must match the HJ_* / VJ_* defines of cuda/tile.cu.
const HJ_FIELDS: usize = 8;
const VJ_FIELDS: usize = 10;
/// Threads per block across columns and rows (TILE_BX, TILE_BY in cuda/tile.cu).
const BLOCK: (u32, u32) = (32, 8);

/// Everything the two kernels of a batch read, built on the host.
#[derive(Debug, Clone, Default)]
pub struct TileJobs {
    /// Horizontal jobs, 8 i64 each: source pointer, in_w, in_h, out_w, `pos` index of output
    /// column 0, scratch byte offset, first block, blocks across.
    pub hjobs: Vec<i64>,
    /// Vertical jobs (one per tile), 10 i64 each: scratch byte offset, scratch width, tile x0,
    /// y0, width, height, `pos` index of output row 0 of the full resize, output byte offset,
    /// first block, blocks across.
    pub vjobs: Vec<i64>,
    /// Per output position of every coefficient table: first source index, taps, weight offset.
    pub pos: Vec<i32>,
    /// Weights the `pos` entries point into.
    pub weights: Vec<f32>,
    /// Bytes of RGB8 scratch all horizontal jobs write.
    pub scratch_bytes: usize,
    /// Blocks of the horizontal launch.
    pub h_blocks: u32,
    /// Blocks of the vertical launch.
    pub v_blocks: u32,
    /// The batch layout the vertical jobs write.
    pub layout: TileLayout,
}

impl TileJobs {
    /// Plans a batch: image `i` is `sizes[i]` = (width, height) at device address `sources[i]`,
    /// tiled by `plans[i]`. Errors on mismatched lengths, zero sizes, tiles that do not fit the
    /// resize, a thumbnail that is not the tiles' size, or a batch too large for one launch.
    pub fn new(
        sizes: &[(u32, u32)],
        sources: &[u64],
        plans: &[TilePlan],
        dtype: Dtype,
        filter: ResizeFilter,
    ) -> Result<TileJobs> {
        if sizes.len() != plans.len() || sources.len() != plans.len() {
            return Err(Error::Resize(format!(
                "{} images but {} plans",
                sizes.len(),
                plans.len()
            )));
        }
        let layout = TileLayout::new(plans, dtype);
        let mut jobs = TileJobs::default();
        // Tables are shared by every job resampling the same (in, out) pair.
        let mut tables: HashMap<(u32, u32), i64> = HashMap::new();
        let mut h_blocks: u64 = 0;
        let mut v_blocks: u64 = 0;
        for (((&(w, h), &src), plan), slot) in
            sizes.iter().zip(sources).zip(plans).zip(&layout.slots)
        {
            check_plan(w, h, plan)?;
            let (cols, rows) = plan.grid;
            let (tw, th) = plan.tile;
            let bytes = tile_bytes(plan, dtype);
            // The grid of the resize, then the thumbnail: one tile covering its whole resize.
            let mut targets = vec![(plan.resize, (cols, rows), (tw, th))];
            if let Some(side) = plan.thumbnail {
                targets.push(((side, side), (1, 1), (side, side)));
            }
            let mut out = slot.offset;
            for ((full_w, full_h), (cols, rows), (tw, th)) in targets {
                let hbase = jobs.table(&mut tables, w, full_w, filter)?;
                let vbase = jobs.table(&mut tables, h, full_h, filter)?;
                let scratch = jobs.scratch_bytes;
                jobs.scratch_bytes += 3 * h as usize * full_w as usize;
                let bx = full_w.div_ceil(BLOCK.0);
                jobs.hjobs.extend_from_slice(&[
                    src as i64,
                    i64::from(w),
                    i64::from(h),
                    i64::from(full_w),
                    hbase,
                    scratch as i64,
                    h_blocks as i64,
                    i64::from(bx),
                ]);
                h_blocks += u64::from(bx) * u64::from(h.div_ceil(BLOCK.1));
                for r in 0..rows {
                    for c in 0..cols {
                        let bx = tw.div_ceil(BLOCK.0);
                        jobs.vjobs.extend_from_slice(&[
                            scratch as i64,
                            i64::from(full_w),
                            i64::from(c * tw),
                            i64::from(r * th),
                            i64::from(tw),
                            i64::from(th),
                            vbase,
                            out as i64,
                            v_blocks as i64,
                            i64::from(bx),
                        ]);
                        v_blocks += u64::from(bx) * u64::from(th.div_ceil(BLOCK.1));
                        out += bytes;
                    }
                }
            }
            debug_assert_eq!(out, slot.offset + slot.len);
        }
        // gridDim.x is at most 2^31 - 1.
        let limit = u64::from(i32::MAX as u32);
        if h_blocks > limit || v_blocks > limit || jobs.pos.len() > i32::MAX as usize {
            return Err(Error::Resize(
                "batch too large for one launch; split it".into(),
            ));
        }
        jobs.h_blocks = h_blocks as u32;
        jobs.v_blocks = v_blocks as u32;
        jobs.layout = layout;
        Ok(jobs)
    }

    /// Index in `pos` of output position 0 of the `in_size → out_size` table, computing it on
    /// first use.
    fn table(
        &mut self,
        tables: &mut HashMap<(u32, u32), i64>,
        in_size: u32,
        out_size: u32,
        filter: ResizeFilter,
    ) -> Result<i64> {
        if let Some(&base) = tables.get(&(in_size, out_size)) {
            return Ok(base);
        }
        let c = axis_coefficients(in_size, out_size, filter)?;
        let base = (self.pos.len() / 3) as i64;
        let wbase = self.weights.len();
        if wbase + c.weights.len() > i32::MAX as usize {
            return Err(Error::Resize("coefficient tables too large".into()));
        }
        for (i, (&s, &n)) in c.start.iter().zip(&c.count).enumerate() {
            self.pos
                .extend_from_slice(&[s as i32, n as i32, (wbase + i * c.ksize) as i32]);
        }
        self.weights.extend_from_slice(&c.weights);
        tables.insert((in_size, out_size), base);
        Ok(base)
    }
}

/// Refuses what the kernels could not do safely: zero sizes, tiles outside the resize, a
/// thumbnail whose size differs from the slot the layout gives it.
fn check_plan(w: u32, h: u32, plan: &TilePlan) -> Result<()> {
    let (rw, rh) = plan.resize;
    let (cols, rows) = plan.grid;
    let (tw, th) = plan.tile;
    if w == 0 || h == 0 || rw == 0 || rh == 0 || tw == 0 || th == 0 || cols == 0 || rows == 0 {
        return Err(Error::Resize(format!(
            "cannot tile a {w}x{h} image by {plan:?}: zero size"
        )));
    }
    let fits = |n: u32, t: u32, full: u32| n.checked_mul(t).is_some_and(|v| v <= full);
    if !fits(cols, tw, rw) || !fits(rows, th, rh) {
        return Err(Error::Resize(format!(
            "{plan:?}: the grid lies outside the resized image"
        )));
    }
    if let Some(side) = plan.thumbnail
        && (side == 0 || (side, side) != plan.tile)
    {
        return Err(Error::Resize(format!(
            "{plan:?}: the thumbnail must be a tile-sized square"
        )));
    }
    Ok(())
}

/// Each u8 level's output element bits per channel (`enc[c * 256 + level]`), computed with the
/// CPU path's exact arithmetic ([`NormalizeTable`], `half`'s round-to-nearest-even), so the
/// kernel does no float conversion. All zero for u8, which the kernel writes as levels.
pub fn level_encodings(spec: &TileSpec) -> Result<Vec<u32>> {
    let table = NormalizeTable::new(&spec.norm)?;
    let mut enc = vec![0u32; 3 * 256];
    for (i, e) in enc.iter_mut().enumerate() {
        let v = table.get(i / 256, (i % 256) as u8);
        *e = match spec.dtype {
            Dtype::U8 => 0,
            Dtype::F32 => v.to_bits(),
            Dtype::F16 => u32::from(half::f16::from_f32(v).to_bits()),
            Dtype::Bf16 => u32::from(half::bf16::from_f32(v).to_bits()),
        };
    }
    Ok(enc)
}

fn dtype_code(dtype: Dtype) -> i32 {
    match dtype {
        Dtype::U8 => 0,
        Dtype::F32 => 1,
        Dtype::F16 => 2,
        Dtype::Bf16 => 3,
    }
}

impl CudaBackend {
    /// Tiles images already in device memory (what nvJPEG decode produces): the device half of
    /// [`Backend::tile_batch`]. The work is queued on [`CudaBackend::stream`]; the result is
    /// ready once the stream reaches it (a download waits for it).
    pub fn tile_device_batch(
        &self,
        images: &[&DeviceImage],
        plans: &[TilePlan],
        spec: &TileSpec,
    ) -> Result<DeviceTiles> {
        let layout = TileLayout::new(plans, spec.dtype);
        // SAFETY: every byte of the first `total_bytes` is written by the vertical pass
        // (a tile per slot part, each pixel once); the rest is documented as meaningless.
        let mut data = unsafe { self.stream().alloc::<u8>(layout.total_bytes.max(1)) }
            .map_err(cuda_err("allocating the tile batch"))?;
        let layout = self.tile_device_batch_into(images, plans, spec, &mut data)?;
        Ok(DeviceTiles {
            dtype: spec.dtype,
            layout,
            data,
        })
    }

    /// As [`Self::tile_device_batch`], into a caller's buffer of at least the layout's
    /// `total_bytes` (bytes past it are left untouched). Returns the layout.
    pub fn tile_device_batch_into(
        &self,
        images: &[&DeviceImage],
        plans: &[TilePlan],
        spec: &TileSpec,
        out: &mut CudaSlice<u8>,
    ) -> Result<TileLayout> {
        let stream = self.stream();
        let mut sizes = Vec::with_capacity(images.len());
        for img in images {
            let need = 3 * img.width as usize * img.height as usize;
            if img.data.len() < need {
                return Err(Error::Resize(format!(
                    "device image of {}x{} holds {} bytes, needs {need}",
                    img.width,
                    img.height,
                    img.data.len()
                )));
            }
            sizes.push((img.width, img.height));
        }
        // The read guards make the stream wait for pending writes of each image, and record the
        // reads once the launches are queued (when they drop at the end of this function).
        let (ptrs, _guards): (Vec<u64>, Vec<_>) =
            images.iter().map(|img| img.data.device_ptr(stream)).unzip();
        self.run_tile_kernels(&sizes, &ptrs, plans, spec, out)
    }

    /// Builds the jobs and queues both launches.
    fn run_tile_kernels(
        &self,
        sizes: &[(u32, u32)],
        sources: &[u64],
        plans: &[TilePlan],
        spec: &TileSpec,
        out: &mut CudaSlice<u8>,
    ) -> Result<TileLayout> {
        let jobs = TileJobs::new(sizes, sources, plans, spec.dtype, spec.filter)?;
        let enc = level_encodings(spec)?;
        if out.len() < jobs.layout.total_bytes {
            return Err(Error::Resize(format!(
                "output buffer of {} bytes, the batch needs {}",
                out.len(),
                jobs.layout.total_bytes
            )));
        }
        if jobs.v_blocks == 0 {
            return Ok(jobs.layout);
        }
        let stream = self.stream();
        let hjobs = stream
            .clone_htod(&jobs.hjobs)
            .map_err(cuda_err("uploading tile jobs"))?;
        let vjobs = stream
            .clone_htod(&jobs.vjobs)
            .map_err(cuda_err("uploading tile jobs"))?;
        let pos = stream
            .clone_htod(&jobs.pos)
            .map_err(cuda_err("uploading resize tables"))?;
        let weights = stream
            .clone_htod(&jobs.weights)
            .map_err(cuda_err("uploading resize weights"))?;
        let enc = stream
            .clone_htod(&enc)
            .map_err(cuda_err("uploading level encodings"))?;
        // SAFETY: the horizontal pass writes every scratch byte the vertical pass reads (all
        // rows of each job's in_h x out_w image).
        let mut scratch = unsafe { stream.alloc::<u8>(jobs.scratch_bytes.max(1)) }
            .map_err(cuda_err("allocating the resize scratch"))?;
        let n_h = (jobs.hjobs.len() / HJ_FIELDS) as i32;
        let n_v = (jobs.vjobs.len() / VJ_FIELDS) as i32;
        let dtype = dtype_code(spec.dtype);
        let config = |blocks: u32| LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (BLOCK.0, BLOCK.1, 1),
            shared_mem_bytes: 0,
        };

        let hpass = self.function(KernelFamily::Tile, "tile_hpass")?;
        let mut launch = stream.launch_builder(&hpass);
        launch
            .arg(&hjobs)
            .arg(&n_h)
            .arg(&pos)
            .arg(&weights)
            .arg(&mut scratch);
        // SAFETY: argument types and order match tile_hpass; the jobs only address source
        // images checked to hold their pixels, and scratch ranges inside `scratch_bytes`.
        unsafe { launch.launch(config(jobs.h_blocks)) }
            .map_err(cuda_err("launching tile_hpass"))?;

        let vpass = self.function(KernelFamily::Tile, "tile_vpass")?;
        let mut launch = stream.launch_builder(&vpass);
        launch
            .arg(&vjobs)
            .arg(&n_v)
            .arg(&pos)
            .arg(&weights)
            .arg(&scratch)
            .arg(&mut *out)
            .arg(&dtype)
            .arg(&enc);
        // SAFETY: argument types and order match tile_vpass; every tile lies inside the layout
        // (checked plans), and `out` holds at least `total_bytes`.
        unsafe { launch.launch(config(jobs.v_blocks)) }
            .map_err(cuda_err("launching tile_vpass"))?;
        Ok(jobs.layout)
    }
}

impl Backend for CudaBackend {
    type Tiles = DeviceTiles;

    fn name(&self) -> String {
        self.device_name().to_string()
    }

    /// Uploads the batch's pixels in one copy, then tiles them on the device.
    fn tile_batch(
        &self,
        images: &[&RgbImage],
        plans: &[TilePlan],
        spec: &TileSpec,
    ) -> Result<DeviceTiles> {
        let crate::backend::shapes::PackedRgbBatch {
            sizes,
            offsets,
            total,
        } = crate::backend::shapes::packed_rgb_batch(images, plans.len())?;
        let total = total as usize;
        let mut staging = Vec::with_capacity(total.max(1));
        for img in images {
            staging.extend_from_slice(&img.data);
        }
        if staging.is_empty() {
            staging.push(0);
        }
        let stream = self.stream();
        let pixels = stream
            .clone_htod(&staging)
            .map_err(cuda_err("uploading the batch's pixels"))?;
        let layout = TileLayout::new(plans, spec.dtype);
        // SAFETY: see tile_device_batch.
        let mut data = unsafe { stream.alloc::<u8>(layout.total_bytes.max(1)) }
            .map_err(cuda_err("allocating the tile batch"))?;
        let layout = {
            let (base, _guard) = pixels.device_ptr(stream);
            let sources: Vec<u64> = offsets.iter().map(|&o| base + o).collect();
            self.run_tile_kernels(&sizes, &sources, plans, spec, &mut data)?
        };
        // `pixels` is freed in stream order, after the kernels that read it.
        Ok(DeviceTiles {
            dtype: spec.dtype,
            layout,
            data,
        })
    }

    fn tiles_to_host(&self, tiles: DeviceTiles) -> Result<HostTiles> {
        let total = tiles.layout.total_bytes;
        let data = if total == 0 {
            Vec::new()
        } else {
            self.stream()
                .clone_dtoh(&tiles.data.slice(..total))
                .map_err(cuda_err("downloading the tile batch"))?
        };
        // clone_dtoh is asynchronous on the stream; wait before the bytes are read, which also
        // surfaces a kernel fault as an error here.
        self.synchronize()?;
        Ok(HostTiles {
            dtype: tiles.dtype,
            layout: tiles.layout,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    //! Host-side checks (no GPU): the coefficient tables, and the job arrays run through a
    //! line-by-line host model of cuda/tile.cu, compared with the CPU backend.

    use super::*;
    use crate::backend::CpuBackend;
    use crate::image::normalize::Normalization;
    use crate::image::tiling::{InternVlSettings, Qwen2VlSettings, Tiler, TilingRule};

    #[test]
    fn weights_sum_to_one_and_stay_inside_the_source() {
        for (i, o) in [
            (100, 30),
            (30, 100),
            (7, 7),
            (1000, 224),
            (3, 1),
            (1, 5),
            (4000, 3),
        ] {
            for f in [ResizeFilter::Bicubic, ResizeFilter::Bilinear] {
                let c = axis_coefficients(i, o, f).unwrap();
                assert_eq!(
                    (c.start.len(), c.weights.len()),
                    (o as usize, o as usize * c.ksize)
                );
                for xx in 0..o as usize {
                    let n = c.count[xx] as usize;
                    assert!(n >= 1 && n <= c.ksize, "{i}->{o} {f:?} taps {n}");
                    assert!(c.start[xx] + c.count[xx] <= i, "{i}->{o} {f:?}");
                    let row = &c.weights[xx * c.ksize..][..c.ksize];
                    let s: f64 = row[..n].iter().map(|&w| f64::from(w)).sum();
                    assert!((s - 1.0).abs() < 1e-5, "{i}->{o} {f:?} sum {s}");
                    assert!(row[n..].iter().all(|&w| w == 0.0));
                }
            }
        }
        assert!(axis_coefficients(0, 4, ResizeFilter::Bicubic).is_err());
        assert!(axis_coefficients(4, 0, ResizeFilter::Bilinear).is_err());
    }

    #[test]
    fn same_size_is_the_identity_and_known_weights_match_pillow() {
        // Scale 1: Catmull-Rom is 0 at ±1 and ±2, so each output takes its own source pixel.
        let c = axis_coefficients(9, 9, ResizeFilter::Bicubic).unwrap();
        for xx in 0..9usize {
            let row = &c.weights[xx * c.ksize..][..c.count[xx] as usize];
            let own = xx - c.start[xx] as usize;
            for (k, &w) in row.iter().enumerate() {
                assert_eq!(w, if k == own { 1.0 } else { 0.0 }, "{xx}");
            }
        }
        // 2x bilinear downscale, output 0: center 1.0, support 2, taps 0..3 at distances
        // 0.25, 0.25, 0.75 (in units of 2 pixels): 0.75, 0.75, 0.25 normalized, as Pillow.
        let c = axis_coefficients(4, 2, ResizeFilter::Bilinear).unwrap();
        assert_eq!((c.start[0], c.count[0]), (0, 3));
        let want = [3.0 / 7.0, 3.0 / 7.0, 1.0 / 7.0];
        for (w, x) in c.weights[..3].iter().zip(want) {
            assert!((f64::from(*w) - x).abs() < 1e-7, "{:?}", &c.weights[..3]);
        }
        // 2x bilinear upscale of 2 pixels: output 1 has center 0.75, a quarter pixel from the
        // center of source 0 (0.5) and three from source 1 (1.5): weights 0.75 and 0.25.
        let c = axis_coefficients(2, 4, ResizeFilter::Bilinear).unwrap();
        let row = &c.weights[c.ksize..][..c.count[1] as usize];
        assert_eq!(c.start[1], 0);
        assert!(
            (row[0] - 0.75).abs() < 1e-7 && (row[1] - 0.25).abs() < 1e-7,
            "{row:?}"
        );
    }

    fn pattern(w: u32, h: u32, seed: u32) -> RgbImage {
        let mut data = Vec::with_capacity(3 * (w * h) as usize);
        let mut s = seed.wrapping_mul(2_654_435_761) | 1;
        for y in 0..h {
            for x in 0..w {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                // smooth gradients, hard edges and some noise: every filter tap matters
                let edge = if (x / 7 + y / 5) % 2 == 0 { 60 } else { 0 };
                data.extend_from_slice(&[
                    ((x * 255 / w.max(1)) as u8).saturating_add(edge),
                    ((y * 255 / h.max(1)) as u8) ^ (s as u8 & 0x1f),
                    ((x * 5 + y * 11 + (s >> 24)) % 256) as u8,
                ]);
            }
        }
        RgbImage {
            width: w,
            height: h,
            data,
        }
    }

    fn level(acc: f32) -> u8 {
        (acc + 0.5).floor().clamp(0.0, 255.0) as u8
    }

    fn find_job(jobs: &[i64], fields: usize, first: usize, b: i64) -> usize {
        let n = jobs.len() / fields;
        let (mut lo, mut hi) = (0usize, n - 1);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if jobs[mid * fields + first] <= b {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }

    /// cuda/tile.cu run on the host, block by block and thread by thread; source "pointers"
    /// are image indices. Counts writes so that each output byte is checked to be written once.
    fn emulate(images: &[&RgbImage], jobs: &TileJobs, spec: &TileSpec) -> Vec<u8> {
        let enc = level_encodings(spec).unwrap();
        let mut scratch = vec![0u8; jobs.scratch_bytes];
        let mut scratch_writes = vec![0u8; jobs.scratch_bytes];
        for b in 0..i64::from(jobs.h_blocks) {
            let j = find_job(&jobs.hjobs, HJ_FIELDS, 6, b);
            let job = &jobs.hjobs[j * HJ_FIELDS..][..HJ_FIELDS];
            let local = b - job[6];
            for ty in 0..i64::from(BLOCK.1) {
                for tx in 0..i64::from(BLOCK.0) {
                    let x = (local % job[7]) * i64::from(BLOCK.0) + tx;
                    let row = (local / job[7]) * i64::from(BLOCK.1) + ty;
                    let (in_w, out_w) = (job[1], job[3]);
                    if x >= out_w || row >= job[2] {
                        continue;
                    }
                    let p = &jobs.pos[((job[4] + x) * 3) as usize..][..3];
                    let src = &images[job[0] as usize].data
                        [((row * in_w + i64::from(p[0])) * 3) as usize..];
                    let mut acc = [0f32; 3];
                    for k in 0..p[1] as usize {
                        let w = jobs.weights[p[2] as usize + k];
                        for c in 0..3 {
                            acc[c] += w * f32::from(src[3 * k + c]);
                        }
                    }
                    let d = (job[5] + (row * out_w + x) * 3) as usize;
                    for c in 0..3 {
                        scratch[d + c] = level(acc[c]);
                        scratch_writes[d + c] += 1;
                    }
                }
            }
        }
        assert!(
            scratch_writes.iter().all(|&n| n == 1),
            "scratch written once"
        );

        let mut out = vec![0u8; jobs.layout.total_bytes];
        let mut writes = vec![0u8; jobs.layout.total_bytes];
        for b in 0..i64::from(jobs.v_blocks) {
            let j = find_job(&jobs.vjobs, VJ_FIELDS, 8, b);
            let job = &jobs.vjobs[j * VJ_FIELDS..][..VJ_FIELDS];
            let local = b - job[8];
            for ty in 0..i64::from(BLOCK.1) {
                for tx in 0..i64::from(BLOCK.0) {
                    let x = (local % job[9]) * i64::from(BLOCK.0) + tx;
                    let y = (local / job[9]) * i64::from(BLOCK.1) + ty;
                    let (tw, th, inter_w) = (job[4], job[5], job[1]);
                    if x >= tw || y >= th {
                        continue;
                    }
                    let p = &jobs.pos[((job[6] + job[3] + y) * 3) as usize..][..3];
                    let col = (job[0] + (i64::from(p[0]) * inter_w + job[2] + x) * 3) as usize;
                    let mut acc = [0f32; 3];
                    for k in 0..p[1] as usize {
                        let w = jobs.weights[p[2] as usize + k];
                        let s = &scratch[col + k * 3 * inter_w as usize..];
                        for c in 0..3 {
                            acc[c] += w * f32::from(s[c]);
                        }
                    }
                    let l = acc.map(level);
                    let base = job[7] as usize;
                    let i = (y * tw + x) as usize;
                    let plane = (tw * th) as usize;
                    let mut put = |at: usize, bytes: &[u8]| {
                        out[at..at + bytes.len()].copy_from_slice(bytes);
                        writes[at..at + bytes.len()]
                            .iter_mut()
                            .for_each(|n| *n += 1);
                    };
                    for c in 0..3 {
                        let e = enc[c * 256 + l[c] as usize];
                        match spec.dtype {
                            Dtype::U8 => put(base + i * 3 + c, &[l[c]]),
                            Dtype::F32 => put(base + 4 * (c * plane + i), &e.to_le_bytes()),
                            _ => put(base + 2 * (c * plane + i), &(e as u16).to_le_bytes()),
                        }
                    }
                }
            }
        }
        assert!(
            writes.iter().all(|&n| n == 1),
            "every output byte written once"
        );
        out
    }

    /// Largest difference in u8 levels between two batches (floats decoded and mapped back to
    /// levels through the normalization of their channel).
    fn max_level_diff(a: &[u8], b: &[u8], layout: &TileLayout, spec: &TileSpec) -> f32 {
        level_diff_stats(a, b, layout, spec).0
    }

    /// Largest and mean level difference (see [`max_level_diff`]).
    fn level_diff_stats(a: &[u8], b: &[u8], layout: &TileLayout, spec: &TileSpec) -> (f32, f64) {
        assert_eq!(a.len(), b.len());
        let (mut worst, mut sum, mut n) = (0f32, 0f64, 0usize);
        for slot in &layout.slots {
            let size = spec.dtype.size();
            let plane = (slot.plan.tile.0 * slot.plan.tile.1) as usize;
            for (e, (x, y)) in a[slot.offset..slot.offset + slot.len]
                .chunks_exact(size)
                .zip(b[slot.offset..slot.offset + slot.len].chunks_exact(size))
                .enumerate()
            {
                let c = (e / plane) % 3;
                let decode = |v: &[u8]| match spec.dtype {
                    Dtype::U8 => f32::from(v[0]),
                    Dtype::F32 => f32::from_le_bytes(v.try_into().unwrap()),
                    Dtype::F16 => half::f16::from_le_bytes([v[0], v[1]]).to_f32(),
                    Dtype::Bf16 => half::bf16::from_le_bytes([v[0], v[1]]).to_f32(),
                };
                let d = (decode(x) - decode(y)).abs();
                let d = if spec.dtype.is_float() {
                    d * spec.norm.std[c] * 255.0
                } else {
                    d
                };
                worst = worst.max(d);
                sum += f64::from(d);
                n += 1;
            }
        }
        (worst, sum / n.max(1) as f64)
    }

    /// Pillow's result in the batch layout: resize the whole image, cut the tiles (thumbnail
    /// resized alone), then the CPU's own float conversion.
    fn pillow_tiles(images: &[&RgbImage], plans: &[TilePlan], spec: &TileSpec) -> Vec<u8> {
        use crate::image::normalize::write_chw;
        use crate::image::pillow_resample::resize_like_pillow;
        let table = NormalizeTable::new(&spec.norm).unwrap();
        let mut out = Vec::new();
        let mut push = |rgb: &[u8]| {
            if spec.dtype.is_float() {
                let mut dst = vec![0u8; rgb.len() * spec.dtype.size()];
                write_chw(rgb, &table, spec.dtype, &mut dst).unwrap();
                out.extend(dst);
            } else {
                out.extend_from_slice(rgb);
            }
        };
        for (img, plan) in images.iter().zip(plans) {
            let f = spec.filter;
            let full = resize_like_pillow(img, plan.resize.0, plan.resize.1, f).unwrap();
            let (tw, th) = plan.tile;
            for r in 0..plan.grid.1 {
                for c in 0..plan.grid.0 {
                    let mut tile = Vec::with_capacity(3 * (tw * th) as usize);
                    for y in 0..th {
                        let row = 3 * ((r * th + y) * full.width + c * tw) as usize;
                        tile.extend_from_slice(&full.data[row..row + 3 * tw as usize]);
                    }
                    push(&tile);
                }
            }
            if let Some(side) = plan.thumbnail {
                push(&resize_like_pillow(img, side, side, f).unwrap().data);
            }
        }
        out
    }

    #[test]
    fn the_kernel_model_matches_the_cpu_backend() {
        let rules = [
            TilingRule::InternVl(InternVlSettings {
                tile_size: 56,
                min_tiles: 1,
                max_tiles: 6,
                thumbnail: true,
            }),
            TilingRule::Qwen2Vl(Qwen2VlSettings {
                factor: 28,
                min_pixels: 28 * 28 * 4,
                max_pixels: 28 * 28 * 40,
            }),
            TilingRule::Fixed { size: 61 },
        ];
        // odd sizes, strong downscales, upscales, a 1-pixel-wide strip
        let sizes = [(97, 61), (301, 17), (13, 29), (640, 480), (1, 40), (57, 57)];
        let images: Vec<RgbImage> = sizes
            .iter()
            .enumerate()
            .map(|(i, &(w, h))| pattern(w, h, i as u32 + 1))
            .collect();
        let refs: Vec<&RgbImage> = images.iter().collect();
        let sources: Vec<u64> = (0..images.len() as u64).collect();
        for rule in rules {
            let tiler = Tiler::new(rule).unwrap();
            let plans: Vec<TilePlan> = sizes
                .iter()
                .map(|&(w, h)| tiler.plan(w, h).unwrap())
                .collect();
            for filter in [ResizeFilter::Bicubic, ResizeFilter::Bilinear] {
                for dtype in [Dtype::U8, Dtype::F32, Dtype::F16, Dtype::Bf16] {
                    let spec = TileSpec {
                        filter,
                        dtype,
                        norm: Normalization::IMAGENET,
                    };
                    let jobs = TileJobs::new(&sizes, &sources, &plans, dtype, filter).unwrap();
                    let got = emulate(&refs, &jobs, &spec);
                    let want = CpuBackend.tile_batch(&refs, &plans, &spec).unwrap();
                    assert_eq!(jobs.layout, want.layout);
                    let pil = pillow_tiles(&refs, &plans, &spec);
                    let vs_pillow = max_level_diff(&got, &pil, &want.layout, &spec);
                    let (vs_cpu, mean_cpu) =
                        level_diff_stats(&got, &want.data, &want.layout, &spec);
                    eprintln!(
                        "{rule:?} {filter:?} {dtype:?}: vs Pillow max {vs_pillow:.2}, vs CPU max \
                         {vs_cpu:.2} mean {mean_cpu:.4} levels"
                    );
                    // Pillow is the reference the kernels follow (f32 instead of 22-bit fixed
                    // point weights: a level at most); the CPU backend's fast_image_resize
                    // rounds differently, so only its mean is held tight.
                    // bf16 keeps 8 bits: near ±2 its step is ~0.9 level of a 0.229 std.
                    let tol = if dtype == Dtype::Bf16 { 2.0 } else { 1.1 };
                    assert!(
                        vs_pillow <= tol,
                        "{rule:?} {filter:?} {dtype:?}: {vs_pillow}"
                    );
                    assert!(mean_cpu <= 0.5, "{rule:?} {filter:?} {dtype:?}: {mean_cpu}");
                }
            }
        }
    }

    #[test]
    fn bad_batches_are_errors() {
        let plan = TilePlan {
            resize: (8, 8),
            grid: (2, 2),
            tile: (4, 4),
            thumbnail: None,
        };
        let f = ResizeFilter::Bicubic;
        let jobs = |sizes: &[(u32, u32)], plans: &[TilePlan]| {
            TileJobs::new(sizes, &vec![0; sizes.len()], plans, Dtype::U8, f)
        };
        assert!(jobs(&[(5, 5)], &[plan]).is_ok());
        assert!(jobs(&[(5, 5), (5, 5)], &[plan]).is_err());
        assert!(jobs(&[(0, 5)], &[plan]).is_err());
        let wide = TilePlan {
            grid: (3, 2),
            ..plan
        };
        assert!(jobs(&[(5, 5)], &[wide]).is_err());
        let thumb = TilePlan {
            thumbnail: Some(5),
            ..plan
        };
        assert!(jobs(&[(5, 5)], &[thumb]).is_err());
        let zero = TilePlan {
            tile: (0, 4),
            ..plan
        };
        assert!(jobs(&[(5, 5)], &[zero]).is_err());
        assert!(jobs(&[], &[]).is_ok_and(|j| j.v_blocks == 0 && j.layout.total_bytes == 0));
    }
}
