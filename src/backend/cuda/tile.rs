//! The CUDA tiling path: [`Backend`] for [`CudaBackend`]. Resize + tile + normalize of a whole
//! batch in two launches of `cuda/tile.cu` (a first pass per image and target size into an RGB8
//! scratch, along the axis Pillow 13 resamples first; a second pass per tile straight into the
//! batch tensor), each tile at the offset [`TileLayout::new`] gives it, so the result has the
//! CPU backend's layout byte for byte.
//!
//! Everything that decides *what* the kernels compute is built here on the host, as plain
//! arrays ([`TileJobs`]): Pillow's filter weights per output position, and one small descriptor
//! per first-pass job and per tile. The kernels only follow them. Without a GPU,
//! tests/cuda_emulated.rs runs the real kernels on the CPU over these arrays and compares with
//! Pillow and the CPU backend.

use std::collections::HashMap;

use cudarc::driver::{CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};

use super::kernels::KernelFamily;
use super::{CudaBackend, DeviceImage, cuda_err};
use crate::backend::{Backend, HostTiles, TileLayout, TileSpec, tile_bytes};
use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::image::normalize::{Dtype, NormalizeTable};
use crate::image::pillow_resample::{pillow_weights, vertical_pass_first};
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

/// i64 fields per first-pass job; must match the FJ_* defines of cuda/tile.cu.
pub const FIRST_FIELDS: usize = 9;
/// i64 fields per second-pass job; must match the SJ_* defines of cuda/tile.cu.
pub const SECOND_FIELDS: usize = 11;
/// Threads per block across columns and rows (TILE_BX, TILE_BY in cuda/tile.cu).
pub const BLOCK: (u32, u32) = (32, 8);

/// Everything the two kernels of a batch read, built on the host.
#[derive(Debug, Clone, Default)]
pub struct TileJobs {
    /// First-pass jobs (one per image and target size), 9 i64 each: source pointer, in_w,
    /// scratch width, scratch rows, `pos` index of the first axis's table, scratch byte offset,
    /// first block, blocks across, vertical-first flag.
    pub first: Vec<i64>,
    /// Second-pass jobs (one per tile), 11 i64 each: scratch byte offset, scratch width, tile
    /// x0, y0, width, height, `pos` index of the second axis's table, output byte offset, first
    /// block, blocks across, vertical-first flag.
    pub second: Vec<i64>,
    /// Per output position of every coefficient table: first source index, taps, weight offset.
    pub pos: Vec<i32>,
    /// Weights the `pos` entries point into.
    pub weights: Vec<f32>,
    /// Bytes of RGB8 scratch all first-pass jobs write.
    pub scratch_bytes: usize,
    /// Blocks of the first launch.
    pub first_blocks: u32,
    /// Blocks of the second launch.
    pub second_blocks: u32,
    /// The batch layout the second-pass jobs write.
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
        let mut first_blocks: u64 = 0;
        let mut second_blocks: u64 = 0;
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
                let vfirst =
                    vertical_pass_first(w as usize, h as usize, full_w as usize, full_h as usize);
                // The scratch image is what the first pass leaves: in_h rows of the target
                // width, or target-height rows of the source width.
                let (first_coef, second_coef, inter_w, inter_h) = if vfirst {
                    (vbase, hbase, w, full_h)
                } else {
                    (hbase, vbase, full_w, h)
                };
                let scratch = jobs.scratch_bytes;
                jobs.scratch_bytes += 3 * inter_h as usize * inter_w as usize;
                let bx = inter_w.div_ceil(BLOCK.0);
                jobs.first.extend_from_slice(&[
                    src as i64,
                    i64::from(w),
                    i64::from(inter_w),
                    i64::from(inter_h),
                    first_coef,
                    scratch as i64,
                    first_blocks as i64,
                    i64::from(bx),
                    i64::from(vfirst),
                ]);
                first_blocks += u64::from(bx) * u64::from(inter_h.div_ceil(BLOCK.1));
                for r in 0..rows {
                    for c in 0..cols {
                        let bx = tw.div_ceil(BLOCK.0);
                        jobs.second.extend_from_slice(&[
                            scratch as i64,
                            i64::from(inter_w),
                            i64::from(c * tw),
                            i64::from(r * th),
                            i64::from(tw),
                            i64::from(th),
                            second_coef,
                            out as i64,
                            second_blocks as i64,
                            i64::from(bx),
                            i64::from(vfirst),
                        ]);
                        second_blocks += u64::from(bx) * u64::from(th.div_ceil(BLOCK.1));
                        out += bytes;
                    }
                }
            }
            debug_assert_eq!(out, slot.offset + slot.len);
        }
        // gridDim.x is at most 2^31 - 1.
        let limit = u64::from(i32::MAX as u32);
        if first_blocks > limit || second_blocks > limit || jobs.pos.len() > i32::MAX as usize {
            return Err(Error::Resize(
                "batch too large for one launch; split it".into(),
            ));
        }
        jobs.first_blocks = first_blocks as u32;
        jobs.second_blocks = second_blocks as u32;
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

/// The `dtype` argument of `tile_second_pass`.
pub fn dtype_code(dtype: Dtype) -> i32 {
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
        // SAFETY: every byte of the first `total_bytes` is written by the second pass
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
        if jobs.second_blocks == 0 {
            return Ok(jobs.layout);
        }
        let stream = self.stream();
        let first = stream
            .clone_htod(&jobs.first)
            .map_err(cuda_err("uploading tile jobs"))?;
        let second = stream
            .clone_htod(&jobs.second)
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
        // SAFETY: the first pass writes every scratch byte the second pass reads (all rows of
        // each job's scratch image).
        let mut scratch = unsafe { stream.alloc::<u8>(jobs.scratch_bytes.max(1)) }
            .map_err(cuda_err("allocating the resize scratch"))?;
        let n_first = (jobs.first.len() / FIRST_FIELDS) as i32;
        let n_second = (jobs.second.len() / SECOND_FIELDS) as i32;
        let dtype = dtype_code(spec.dtype);
        let config = |blocks: u32| LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (BLOCK.0, BLOCK.1, 1),
            shared_mem_bytes: 0,
        };

        let first_pass = self.function(KernelFamily::Tile, "tile_first_pass")?;
        let mut launch = stream.launch_builder(&first_pass);
        launch
            .arg(&first)
            .arg(&n_first)
            .arg(&pos)
            .arg(&weights)
            .arg(&mut scratch);
        // SAFETY: argument types and order match tile_first_pass; the jobs only address source
        // images checked to hold their pixels, and scratch ranges inside `scratch_bytes`.
        unsafe { launch.launch(config(jobs.first_blocks)) }
            .map_err(cuda_err("launching tile_first_pass"))?;

        let second_pass = self.function(KernelFamily::Tile, "tile_second_pass")?;
        let mut launch = stream.launch_builder(&second_pass);
        launch
            .arg(&second)
            .arg(&n_second)
            .arg(&pos)
            .arg(&weights)
            .arg(&scratch)
            .arg(&mut *out)
            .arg(&dtype)
            .arg(&enc);
        // SAFETY: argument types and order match tile_second_pass; every tile lies inside the
        // layout (checked plans), and `out` holds at least `total_bytes`.
        unsafe { launch.launch(config(jobs.second_blocks)) }
            .map_err(cuda_err("launching tile_second_pass"))?;
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
        // A buffer `tile` handed back after writing an earlier chunk, when one fits: already
        // mapped, so the download does not fault in fresh pages (costly under gVisor).
        let mut data = crate::backend::buffer_pool::take_overwritable::<u8>(total);
        // On the download stream, through pinned staging buffers (download.rs): it waits for
        // the batch's kernels (cudarc records their write), not for work queued on the main
        // stream since (the next batch). Waiting for the copy also surfaces a kernel fault
        // (sticky, context-wide) as an error here.
        self.staging
            .download(&self.download, &tiles.data, &mut data)?;
        Ok(HostTiles {
            dtype: tiles.dtype,
            layout: tiles.layout,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    //! Host-side checks (no GPU): the coefficient tables and the refusal of bad batches. The
    //! job arrays are run through the real kernels by tests/cuda_emulated.rs.

    use super::*;

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
        assert!(jobs(&[], &[]).is_ok_and(|j| j.second_blocks == 0 && j.layout.total_bytes == 0));
    }
}
