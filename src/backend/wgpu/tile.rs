//! The wgpu tiling path: [`Backend`] for [`WgpuBackend`]. Resize + tile + normalize of a whole
//! batch in one dispatch of `shaders/tile.wgsl`, from the decoded RGB8 pixels straight to every
//! tile at the offset [`TileLayout::new`] gives it, so the result has the CPU backend's layout
//! byte for byte.
//!
//! What the shader computes is decided here on the host, as plain arrays ([`TileJobs`]): per
//! tile, the integer filter coefficients the CPU backend's resize uses for that very tile
//! ([`fir_fixed`](crate::image::fir_fixed): the same crop box, the same fixed point), and one small
//! descriptor; the level → output-element table is the CPU's own normalize arithmetic. The
//! shader then does the CPU's integer sums, so tiles equal the CPU backend's bit for bit (u8
//! levels, and the float encodings of those levels).
//!
//! On a driver with a loop limit (lavapipe), a tile too long for one invocation in one pass is
//! planned in two: `tile_vertical` stores its vertical sums as u8 levels (the CPU's own
//! intermediate) and `tile_batch` runs only the horizontal taps over them; same bytes.

use std::collections::HashMap;

use super::pool::PooledBuffer;
use super::{ShaderFamily, WgpuBackend, grid, wgpu_err};
use crate::backend::{Backend, HostTiles, TileLayout, TileSpec, tile_bytes};
use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::image::normalize::{Dtype, NormalizeTable};
use crate::image::resize::{Region, ResizeFilter, overread_band, source_crop};

use crate::image::fir_fixed::fixed_axis;
use crate::image::tiling::TilePlan;

/// A batch of tiles in device memory, laid out by [`TileLayout::new`].
pub struct WgpuTiles {
    /// Element type of the tensor.
    pub dtype: Dtype,
    /// Where each image's tiles are.
    pub layout: TileLayout,
    /// The batch tensor bytes: at least `layout.total_bytes` (rounded up to whole words, then
    /// to the pool's size class); bytes past `total_bytes` mean nothing.
    pub data: PooledBuffer,
}

/// Fields per tile descriptor; must match `J_FIELDS` of shaders/tile.wgsl.
const JOB_FIELDS: usize = 12;
/// `J_INTER` of a single-pass tile; must match `NO_INTER` of shaders/tile.wgsl.
const NO_INTER: u32 = u32::MAX;
/// Loop iterations of the shaders' binary searches over the jobs (at most 32), counted with
/// the taps against a loop budget.
const SEARCH_LOOPS: u64 = 33;
/// Invocations per workgroup of `tile_batch`.
const WORKGROUP: u64 = 256;

/// Everything the tile shader reads besides the pixels, built on the host.
#[derive(Debug, Clone, Default)]
pub struct TileJobs {
    /// One descriptor per tile, [`JOB_FIELDS`] u32 each: first element in the batch, source
    /// byte offset, source width, tile width, tile height, `pos` index of the tile's output
    /// column 0 and of its output row 0, fixed-point precision of the horizontal and of the
    /// vertical weights; for a two-pass tile, the word offset of its intermediate in the
    /// intermediate buffer, the first source column it covers and its width (`NO_INTER`, 0, 0
    /// for a single-pass tile).
    pub jobs: Vec<u32>,
    /// Indices of the two-pass tiles' jobs, in order (their intermediates are in that order).
    pub vjobs: Vec<u32>,
    /// Levels (one per word) of all intermediates of two-pass tiles.
    pub inter_words: u64,
    /// Per output position of every coefficient table: first source index, taps, weight offset.
    pub pos: Vec<u32>,
    /// Integer weights (i16 values, stored as i32 bit patterns) the `pos` entries point into.
    pub weights: Vec<u32>,
    /// The batch layout the jobs write.
    pub layout: TileLayout,
}

/// A coefficient table's identity: source length, crop interval (as bits: equal crops give
/// equal tables), output length. Tiles in one column (row) of a grid share their horizontal
/// (vertical) table.
type TableKey = (u32, u64, u64, u32);

impl TileJobs {
    /// Plans a batch: image `i` is `sizes[i]` = (width, height) at byte `offsets[i]` of the
    /// pixel buffer, tiled by `plans[i]`. Errors on mismatched lengths, zero sizes, tiles that
    /// do not fit the resize, a thumbnail that is not the tiles' size, or a batch whose indices
    /// do not fit 32 bits, or a tile whose invocations would run more loop iterations than
    /// `loop_budget` (see [`WgpuBackend::loop_budget`]) even in two passes. A tile too long for
    /// one pass within the budget is planned in two: a vertical pass into an intermediate of
    /// u8 levels, then the horizontal taps (the same integer arithmetic, the same bytes).
    pub fn new(
        sizes: &[(u32, u32)],
        offsets: &[u64],
        plans: &[TilePlan],
        dtype: Dtype,
        filter: ResizeFilter,
        loop_budget: Option<u64>,
    ) -> Result<TileJobs> {
        if sizes.len() != plans.len() || offsets.len() != plans.len() {
            return Err(Error::Resize(format!(
                "{} images but {} plans",
                sizes.len(),
                plans.len()
            )));
        }
        let layout = TileLayout::new(plans, dtype);
        if layout.total_bytes / dtype.size() > u32::MAX as usize {
            return Err(Error::Resize(
                "tile batch too large for 32-bit indexing; split it".into(),
            ));
        }
        let mut jobs = TileJobs::default();
        let mut tables: HashMap<TableKey, (u32, u32, u64)> = HashMap::new();
        let to_u32 = |v: u64, what: &str| {
            u32::try_from(v)
                .map_err(|_| Error::Resize(format!("{what} past 32 bits; split the batch")))
        };
        for (((&(w, h), &src), plan), slot) in
            sizes.iter().zip(offsets).zip(plans).zip(&layout.slots)
        {
            check_plan(w, h, plan)?;
            let src = to_u32(src, "pixel offset")?;
            to_u32(src as u64 + 3 * u64::from(w) * u64::from(h), "pixel buffer")?;
            let bytes = tile_bytes(plan, dtype);
            let mut targets = vec![(plan.resize, plan.grid, plan.tile)];
            if let Some(side) = plan.thumbnail {
                targets.push(((side, side), (1, 1), (side, side)));
            }
            let mut out = slot.offset;
            for (full, (cols, rows), (tw, th)) in targets {
                for r in 0..rows {
                    for c in 0..cols {
                        // The CPU resizes each tile on its own, from the crop box of the source
                        // it covers: the same box gives the same coefficients here.
                        let region = Region {
                            x: c * tw,
                            y: r * th,
                            width: tw,
                            height: th,
                        };
                        let ((left, width), (top, height)) = source_crop(w, h, full, region);
                        // Where the CPU computes this tile from its full-width band of rows
                        // (`resize::overread_band`), its horizontal weights are the band's:
                        // take the band's table from this tile's first column.
                        let (hcrop, hout, hskip) = match overread_band(w, h, full, region, filter) {
                            Some(band) => {
                                let ((bl, bw), _) = source_crop(w, h, full, band);
                                ((bl, bl + bw), band.width, region.x)
                            }
                            None => ((left, left + width), tw, 0),
                        };
                        let (hbase, hprec, hk) = jobs.table(&mut tables, w, hcrop, hout, filter)?;
                        let hbase = hbase + hskip;
                        let (vbase, vprec, vk) =
                            jobs.table(&mut tables, h, (top, top + height), th, filter)?;
                        // One invocation runs, per element of its word, `hk` outer and
                        // `hk × vk` inner iterations, plus the job search. In two passes: `vk`
                        // per level in the first, `hk` per element in the second.
                        let per_elem = (4 / dtype.size()) as u64;
                        let fused = per_elem * (hk * (vk + 1) + SEARCH_LOOPS);
                        let split = (vk + SEARCH_LOOPS).max(per_elem * (hk + SEARCH_LOOPS));
                        let (inter, span0, span_w) = match loop_budget {
                            Some(budget) if fused > budget => {
                                if split > budget {
                                    return Err(Error::Resize(format!(
                                        "resampling {w}x{h} to {}x{} takes {hk}x{vk} filter \
                                         taps per pixel, more loop iterations per shader \
                                         invocation than this adapter runs ({budget}: Mesa \
                                         llvmpipe's limit) even in two passes; use --device \
                                         cpu for such strong downscales",
                                        full.0, full.1
                                    )));
                                }
                                jobs.intermediate(hbase, tw, th)?
                            }
                            _ => (NO_INTER, 0, 0),
                        };
                        if inter != NO_INTER {
                            jobs.vjobs
                                .push(to_u32((jobs.jobs.len() / JOB_FIELDS) as u64, "tile index")?);
                        }
                        jobs.jobs.extend_from_slice(&[
                            (out / dtype.size()) as u32,
                            src,
                            w,
                            tw,
                            th,
                            hbase,
                            vbase,
                            hprec,
                            vprec,
                            inter,
                            span0,
                            span_w,
                        ]);
                        out += bytes;
                    }
                }
            }
            debug_assert_eq!(out, slot.offset + slot.len);
        }
        jobs.layout = layout;
        Ok(jobs)
    }

    /// Reserves the intermediate of a two-pass tile whose output column 0 is `pos` triple
    /// `hbase`: `th` rows of the source columns its `tw` horizontal windows cover, 3 levels
    /// each. Returns (word offset, first source column, columns).
    fn intermediate(&mut self, hbase: u32, tw: u32, th: u32) -> Result<(u32, u32, u32)> {
        let windows = (0..tw as usize).map(|x| {
            let p = (hbase as usize + x) * 3;
            (self.pos[p], self.pos[p] + self.pos[p + 1])
        });
        let (first, end) = windows.fold((u32::MAX, 0), |(a, b), (s, e)| (a.min(s), b.max(e)));
        let span = end.saturating_sub(first).max(1);
        let at = self.inter_words;
        self.inter_words += 3 * u64::from(span) * u64::from(th);
        if self.inter_words > u64::from(u32::MAX) {
            return Err(Error::Resize(
                "two-pass intermediates past 32 bits; split the batch".into(),
            ));
        }
        Ok((at as u32, first.min(end), span))
    }

    /// Index in `pos` (in triples) of output position 0 of the table resampling source
    /// interval `crop` of an `in_size` axis onto `out_size` outputs, its precision and its
    /// widest window, computing it on first use.
    fn table(
        &mut self,
        tables: &mut HashMap<TableKey, (u32, u32, u64)>,
        in_size: u32,
        crop: (f64, f64),
        out_size: u32,
        filter: ResizeFilter,
    ) -> Result<(u32, u32, u64)> {
        let key = (in_size, crop.0.to_bits(), crop.1.to_bits(), out_size);
        if let Some(&t) = tables.get(&key) {
            return Ok(t);
        }
        let axis = fixed_axis(in_size, crop.0, crop.1, out_size, filter);
        let base = self.pos.len() / 3;
        let wbase = self.weights.len();
        if wbase + axis.weights.len() > u32::MAX as usize
            || base + axis.start.len() > u32::MAX as usize
        {
            return Err(Error::Resize("resize coefficient tables too large".into()));
        }
        for ((&s, &n), &o) in axis.start.iter().zip(&axis.count).zip(&axis.offset) {
            self.pos.extend_from_slice(&[s, n, wbase as u32 + o]);
        }
        // Two's complement bits: the shader reads them as i32.
        self.weights.extend(axis.weights.iter().map(|&v| v as u32));
        let widest = u64::from(axis.count.iter().copied().max().unwrap_or(0));
        let t = (base as u32, axis.precision, widest);
        tables.insert(key, t);
        Ok(t)
    }
}

/// Refuses what the shader could not do safely: zero sizes, tiles outside the resize, a
/// thumbnail whose size differs from the tiles'.
fn check_plan(w: u32, h: u32, plan: &TilePlan) -> Result<()> {
    let (rw, rh) = plan.resize;
    let (cols, rows) = plan.grid;
    let (tw, th) = plan.tile;
    if [w, h, rw, rh, tw, th, cols, rows].contains(&0) {
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
        && (side, side) != plan.tile
    {
        return Err(Error::Resize(format!(
            "{plan:?}: the thumbnail must be a tile-sized square"
        )));
    }
    Ok(())
}

/// Each u8 level's output bits per channel (`enc[c * 256 + level]`) with the CPU path's exact
/// arithmetic ([`NormalizeTable`], `half`'s round-to-nearest-even), so the shader does no float
/// conversion of its own. All zero for u8, which the shader writes as levels.
pub fn level_encodings(spec: &TileSpec) -> Result<Vec<u32>> {
    let table = NormalizeTable::new(&spec.norm)?;
    Ok((0..3 * 256)
        .map(|i| {
            let v = table.get(i / 256, (i % 256) as u8);
            match spec.dtype {
                Dtype::U8 => 0,
                Dtype::F32 => v.to_bits(),
                Dtype::F16 => u32::from(half::f16::from_f32(v).to_bits()),
                Dtype::Bf16 => u32::from(half::bf16::from_f32(v).to_bits()),
            }
        })
        .collect())
}

/// The shader's output mode: 0 u8 (4 per word), 1 f32, 2 a 16-bit float (2 per word).
fn dtype_code(dtype: Dtype) -> u32 {
    match dtype {
        Dtype::U8 => 0,
        Dtype::F32 => 1,
        Dtype::F16 | Dtype::Bf16 => 2,
    }
}

impl Backend for WgpuBackend {
    type Tiles = WgpuTiles;

    fn name(&self) -> String {
        self.device_name().to_string()
    }

    /// Uploads the batch's pixels, jobs and tables (one write each), then one dispatch writes
    /// every word of the batch tensor. Nothing is read back.
    fn tile_batch(
        &self,
        images: &[&RgbImage],
        plans: &[TilePlan],
        spec: &TileSpec,
    ) -> Result<WgpuTiles> {
        let crate::backend::shapes::PackedRgbBatch {
            sizes,
            offsets,
            total,
        } = crate::backend::shapes::packed_rgb_batch(images, plans.len())?;
        let jobs = TileJobs::new(
            &sizes,
            &offsets,
            plans,
            spec.dtype,
            spec.filter,
            self.loop_budget(),
        )?;
        let layout = jobs.layout.clone();
        let out_words = layout.total_bytes.div_ceil(4) as u64;
        let data = self.storage((out_words * 4).max(4))?;
        if out_words == 0 {
            return Ok(WgpuTiles {
                dtype: spec.dtype,
                layout,
                data,
            });
        }
        // The pixels of the batch back to back (the shader reads them as little-endian words),
        // in one staging copy and one write.
        let mut pixels = Vec::with_capacity(total.next_multiple_of(4) as usize);
        for img in images {
            pixels.extend_from_slice(&img.data);
        }
        let src = self.upload_bytes(&pixels)?;
        let jobs_buf = self.upload_words(&jobs.jobs)?;
        let pos = self.upload_words(&jobs.pos)?;
        let weights = self.upload_words(&jobs.weights)?;
        let enc = self.upload_words(&level_encodings(spec)?)?;
        // Two-pass tiles (strong downscales on lavapipe): their vertical pass first, into the
        // intermediate the main dispatch reads. Otherwise the binding still needs a buffer.
        let inter = self.storage((jobs.inter_words * 4).max(4))?;
        if !jobs.vjobs.is_empty() {
            let vjobs = self.upload_words(&jobs.vjobs)?;
            let (gx, gy) = grid(jobs.inter_words.div_ceil(WORKGROUP))?;
            let params = [
                jobs.vjobs.len() as u32,
                0,
                jobs.inter_words as u32,
                0,
                gx * WORKGROUP as u32,
            ];
            self.dispatch(
                ShaderFamily::Tile,
                "tile_vertical",
                &params,
                &[
                    (1, src.buffer()),
                    (2, jobs_buf.buffer()),
                    (3, pos.buffer()),
                    (4, weights.buffer()),
                    (7, inter.buffer()),
                    (8, vjobs.buffer()),
                ],
                (gx, gy),
            )?;
        }
        let (gx, gy) = grid(out_words.div_ceil(WORKGROUP))?;
        let elems = layout.total_bytes / spec.dtype.size();
        let params = [
            (jobs.jobs.len() / JOB_FIELDS) as u32,
            elems as u32,
            out_words as u32,
            dtype_code(spec.dtype),
            gx * WORKGROUP as u32,
        ];
        self.dispatch(
            ShaderFamily::Tile,
            "tile_batch",
            &params,
            &[
                (1, src.buffer()),
                (2, jobs_buf.buffer()),
                (3, pos.buffer()),
                (4, weights.buffer()),
                (5, enc.buffer()),
                (6, data.buffer()),
                (7, inter.buffer()),
            ],
            (gx, gy),
        )?;
        Ok(WgpuTiles {
            dtype: spec.dtype,
            layout,
            data,
        })
    }

    fn tiles_to_host(&self, tiles: WgpuTiles) -> Result<HostTiles> {
        let total = tiles.layout.total_bytes;
        let data = self
            .read_back(tiles.data.buffer(), total as u64)
            .map_err(|e| wgpu_err(format!("downloading the tile batch: {e}")))?;
        Ok(HostTiles {
            dtype: tiles.dtype,
            layout: tiles.layout,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::tiling::{InternVlSettings, Tiler, TilingRule};

    #[test]
    fn a_loop_budget_plans_two_passes_and_refuses_only_past_them() {
        let tiler = Tiler::new(TilingRule::Fixed { size: 48 }).unwrap();
        let budget = Some(65_535 - 64);
        let jobs = |w: u32, h: u32, budget| {
            TileJobs::new(
                &[(w, h)],
                &[0],
                &[tiler.plan(w, h).unwrap()],
                Dtype::U8,
                ResizeFilter::Bicubic,
                budget,
            )
        };
        // 1600x1200 to 48: 134 x 101 taps, 4 elements a word: 54.8k iterations, right on
        // lavapipe, one pass; 1000x3000: 84 x 250, 84k, which lavapipe cut short: two passes
        // (250 and 4 x 84 iterations).
        let one = jobs(1600, 1200, budget).unwrap();
        assert!(one.vjobs.is_empty() && one.inter_words == 0);
        assert!(one.jobs.chunks(JOB_FIELDS).all(|j| j[9] == NO_INTER));
        let two = jobs(1000, 3000, budget).unwrap();
        assert_eq!(two.vjobs.len(), two.jobs.len() / JOB_FIELDS);
        // Each intermediate: 48 rows of the columns its windows cover, which for a single
        // tile over the whole image is the whole width.
        let j = &two.jobs[..JOB_FIELDS];
        assert_eq!((j[9], j[10], j[11]), (0, 0, 1000));
        assert_eq!(two.inter_words, 3 * 1000 * 48);
        // Without a budget (hardware), always one pass.
        assert!(jobs(1000, 3000, None).unwrap().vjobs.is_empty());
        // 2 x 1,000,000 to 48: 83k vertical taps per level, past the limit even alone.
        let err = jobs(2, 1_000_000, budget).unwrap_err().to_string();
        assert!(err.contains("llvmpipe"), "{err}");
    }

    #[test]
    fn jobs_cover_the_layout_and_refuse_bad_plans() {
        let tiler = Tiler::new(TilingRule::InternVl(InternVlSettings::default())).unwrap();
        let plans = [tiler.plan(300, 200).unwrap(), tiler.plan(31, 97).unwrap()];
        let jobs = TileJobs::new(
            &[(300, 200), (31, 97)],
            &[0, 180_000],
            &plans,
            Dtype::F16,
            ResizeFilter::Bicubic,
            None,
        )
        .unwrap();
        let tiles: u32 = plans.iter().map(|p| p.num_tiles()).sum();
        assert_eq!(jobs.jobs.len(), tiles as usize * JOB_FIELDS);
        // Jobs start in increasing element order (the shader's binary search relies on it) and
        // the last one ends at the end of the batch.
        let starts: Vec<u32> = jobs.jobs.chunks(JOB_FIELDS).map(|j| j[0]).collect();
        assert!(starts.windows(2).all(|w| w[0] < w[1]));
        let last = jobs.jobs.chunks(JOB_FIELDS).last().unwrap();
        assert_eq!(
            (last[0] + 3 * last[3] * last[4]) as usize * 2,
            jobs.layout.total_bytes
        );
        let mut bad = plans[0];
        bad.grid.0 += 50;
        assert!(
            TileJobs::new(
                &[(300, 200)],
                &[0],
                &[bad],
                Dtype::U8,
                ResizeFilter::Bicubic,
                None
            )
            .is_err()
        );
        assert!(
            TileJobs::new(
                &[(0, 200)],
                &[0],
                &plans[..1],
                Dtype::U8,
                ResizeFilter::Bicubic,
                None
            )
            .is_err()
        );
    }
}
