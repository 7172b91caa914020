//! The CPU backend's RGB8 resize, with its own SIMD kernels: the exact integer arithmetic of
//! fast_image_resize 6.1's u8 convolution (modelled in [`crate::image::fir_fixed`]), so every
//! output byte equals what fast_image_resize produced before, computed in a fraction of the
//! time for the tile shapes the VLM rules use.
//!
//! Per axis the weights come from [`fixed_axis_into`] (the same coefficients the wgpu shader
//! uses): precision `p`, per output a first source index and i16 weights. Each output row of a
//! region is made in two passes, in fast_image_resize's order:
//!
//! 1. vertical: for the source columns the region's horizontal windows cover (not the whole
//!    source width: a tile of a grid only reads its own stripe plus the filter's margin), sum
//!    `2^(p−1) + Σ w·pixel` over the output row's source rows in i32, shift right by `p`,
//!    clamp to 0..=255, into a u8 intermediate row;
//! 2. horizontal: the same over each output pixel's source pixels of that row, per channel.
//!
//! A pass whose weights are the identity (one tap of `2^p`, as when fast_image_resize skips the
//! pass) is a copy. Integer sums do not depend on their order, so the SIMD kernels and the
//! scalar reference ([`Level::Scalar`], used where AVX2 is missing) agree to the byte.
//!
//! AVX2 kernels (`vpmaddwd` on interleaved i16 pixel/weight pairs):
//! - vertical, 32 bytes of a row at a time: the bytes of two source rows are interleaved and
//!   zero-extended, so each `vpmaddwd` lane sums two taps of one byte;
//! - horizontal, 8 output pixels at a time: each 128-bit lane holds one output pixel, its two
//!   next source pixels shuffled to `r0 r1 g0 g1 b0 b1 0 0`, so one `vpmaddwd` gives two taps
//!   of R, G and B; the weights are laid out per group of 8 outputs once per axis.
//!
//! AVX-512 kernels (F, BW and VBMI, used where all three are present):
//! - vertical, the AVX2 one 64 bytes at a time;
//! - horizontal, as a stream of output samples (bytes) rather than pixels: for 16 samples,
//!   one `vpermb` (zero-masked to the low byte of each i16) picks each sample's two source
//!   bytes of a tap pair from a 64-byte window of the intermediate row, one `vpmaddwd` with
//!   the per-sample weight pairs sums them; the next tap pair is the same index on the window
//!   6 bytes further. It needs a chunk's sources to fit the window (about 3.5× downscale at
//!   most, every upscale); strong downscales use the AVX2 horizontal kernel.
//!
//! fast_image_resize reads a pixel past its intermediate rows for some crops
//! ([`crate::image::fir_fixed::crop_overreads`]); the CPU path resized those regions as their
//! full-width band and kept the region's columns, so here their horizontal weights are the
//! band's too (computed for the region's columns only), which gives the same bytes.
//!
//! Scratch (weights of recent axes, the intermediate row) lives in [`Resampler`] and is reused:
//! once warm, a call allocates nothing. Tiles of one grid share axes (a grid row shares its
//! vertical weights, a grid column its horizontal ones), which the small axis cache keeps.

use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::image::fir_fixed::{FixedAxis, fixed_axis_into};
use crate::image::resize::{Region, ResizeFilter, check_region, overread_band, source_crop};

/// How many axes the cache keeps: InternVL's largest grid has 12 columns or rows, plus the
/// thumbnail's two axes.
const CACHED_AXES: usize = 16;

/// The kernels a [`Resampler`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Plain Rust, the reference.
    Scalar,
    /// x86-64 AVX2.
    Avx2,
    /// x86-64 AVX-512 (F, BW and VBMI) for the upscales' and mild downscales' horizontal pass
    /// and for the vertical pass; AVX2 for the rest.
    Avx512,
}

/// One axis's geometry: what its weights are a function of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AxisKey {
    in_size: u32,
    in0: u64,
    in1: u64,
    out_size: u32,
    filter: ResizeFilter,
}

/// An axis's weights, and its horizontal plan for the last output range asked of it.
#[derive(Debug, Default)]
struct CachedAxis {
    key: Option<AxisKey>,
    last_used: u64,
    axis: FixedAxis,
    plan: HorizontalPlan,
}

/// The horizontal pass over outputs `sel.0..sel.1` of an axis.
#[derive(Debug, Default)]
struct HorizontalPlan {
    /// Outputs and level this plan was made for.
    made_for: Option<(u32, u32, Level)>,
    /// Source pixels `lo..hi` the outputs read (the columns of the intermediate row).
    lo: usize,
    hi: usize,
    /// Every output is a copy of source pixel `lo + i`.
    identity: bool,
    /// AVX2 groups of 8 outputs.
    groups: Vec<Group>,
    /// Per group, per tap pair, per vector: 8 i32 (two 128-bit lanes of 4 equal pairs).
    weights: Vec<i32>,
    /// AVX-512 chunks of 16 output samples (bytes), in blocks of 4; empty where a chunk's
    /// source bytes do not fit in one 64-byte window (strong downscales: `groups` then).
    chunks: Vec<Chunk>,
    /// Per chunk, the `vpermb` index of each sample's two source bytes in its window.
    chunk_index: Vec<u8>,
    /// Per chunk, per tap pair: 16 i32 (a weight pair per sample).
    chunk_weights: Vec<i32>,
    /// Bytes of the intermediate row the SIMD kernels may read.
    need: usize,
}

/// Sixteen consecutive output samples (bytes) of a row for the AVX-512 horizontal kernel.
#[derive(Debug, Clone, Copy, Default)]
struct Chunk {
    /// Tap pairs (the largest tap count of its outputs, halved up).
    pairs: u32,
    /// Offset of its weights in `HorizontalPlan::chunk_weights`.
    woff: u32,
    /// Byte offset of its 64-byte source window (for tap pair 0; `+ 6` per pair).
    base: u32,
}

/// Eight consecutive outputs of the AVX2 horizontal kernel. Vector `i` (0..4) computes
/// outputs `i` (low lane) and `i + 4` (high lane).
#[derive(Debug, Clone, Copy, Default)]
struct Group {
    /// Tap pairs (the largest tap count of the 8, halved up).
    pairs: u32,
    /// Offset of the group's weights in `HorizontalPlan::weights`.
    woff: u32,
    /// Byte offset of each output's first source pixel in the intermediate row.
    off: [u32; 8],
}

/// Resize scratch and kernels, one per thread.
#[derive(Debug)]
pub struct Resampler {
    level: Level,
    cache: Vec<CachedAxis>,
    clock: u64,
    float: Vec<f64>,
    mid: Vec<u8>,
}

impl Default for Resampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Resampler {
    /// The fastest kernels this CPU runs.
    pub fn new() -> Self {
        Self::with_level(Self::detect())
    }

    /// The best level available here.
    pub fn detect() -> Level {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vbmi")
            {
                return Level::Avx512;
            }
            if is_x86_feature_detected!("avx2") {
                return Level::Avx2;
            }
        }
        Level::Scalar
    }

    /// A resampler with the given kernels, or the scalar ones where this CPU lacks them.
    pub fn with_level(level: Level) -> Self {
        let level = match (level, Self::detect()) {
            (Level::Avx512, Level::Avx512) => Level::Avx512,
            (Level::Avx2 | Level::Avx512, Level::Avx2 | Level::Avx512) => Level::Avx2,
            _ => Level::Scalar,
        };
        Resampler {
            level,
            cache: Vec::new(),
            clock: 0,
            float: Vec::new(),
            mid: Vec::new(),
        }
    }

    /// The kernels this resampler runs.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Resizes `src` as if to `full` = (width, height), computing only `region` of that
    /// result, into `dst` (packed RGB8 rows, `3 * region.width * region.height` bytes). The
    /// bytes are those fast_image_resize 6.1 gives for the same crop.
    pub fn resize_region(
        &mut self,
        src: &RgbImage,
        full: (u32, u32),
        region: Region,
        filter: ResizeFilter,
        dst: &mut [u8],
    ) -> Result<()> {
        check_region(src, full, region)?;
        let stride = 3 * src.width as usize;
        if src.data.len() != stride * src.height as usize {
            return Err(Error::Resize(format!(
                "source buffer: {} bytes for {}x{} RGB8",
                src.data.len(),
                src.width,
                src.height
            )));
        }
        let row_bytes = 3 * region.width as usize;
        if dst.len() != row_bytes * region.height as usize {
            return Err(Error::Resize(format!(
                "destination buffer: {} bytes for a {}x{} RGB8 region",
                dst.len(),
                region.width,
                region.height
            )));
        }

        // Regions whose own crop fast_image_resize would overread came from their full-width
        // band: the band's horizontal weights, the region's columns.
        let crop = overread_band(src.width, src.height, full, region, filter).unwrap_or(region);
        let ((left, width), (top, height)) = source_crop(src.width, src.height, full, crop);
        let h = self.axis(AxisKey {
            in_size: src.width,
            in0: left.to_bits(),
            in1: (left + width).to_bits(),
            out_size: crop.width,
            filter,
        })?;
        let v = self.axis(AxisKey {
            in_size: src.height,
            in0: top.to_bits(),
            in1: (top + height).to_bits(),
            out_size: crop.height,
            filter,
        })?;
        let sel = (region.x - crop.x, region.x - crop.x + region.width);
        let level = self.level;
        self.cache[h].plan_for(sel, level);

        let (hc, vc) = (&self.cache[h], &self.cache[v]);
        let plan = &hc.plan;
        let mid_len = (3 * (plan.hi - plan.lo)).max(plan.need);
        if self.mid.len() < mid_len {
            self.mid.resize(mid_len, 0);
        }
        let rows = Rows {
            src: &src.data,
            stride,
            v: &vc.axis,
            h: &hc.axis,
            plan,
            sel,
        };
        // The vertical weights cover the crop's rows; the region is all of them.
        let first_row = (region.y - crop.y) as usize;
        match level {
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => {
                // SAFETY: `level` is Avx2 only where `with_level` saw AVX2 at run time.
                unsafe { rows.run_avx2(first_row, &mut self.mid, dst, row_bytes) }
            }
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => {
                // SAFETY: `level` is Avx512 only where `with_level` saw AVX2, AVX-512 F, BW
                // and VBMI at run time.
                unsafe { rows.run_avx512(first_row, &mut self.mid, dst, row_bytes) }
            }
            _ => rows.run_scalar(first_row, &mut self.mid, dst, row_bytes),
        }
        Ok(())
    }

    /// The cache index of the axis `key`, computing its weights if it is not there.
    fn axis(&mut self, key: AxisKey) -> Result<usize> {
        self.clock += 1;
        if let Some(i) = self.cache.iter().position(|c| c.key == Some(key)) {
            self.cache[i].last_used = self.clock;
            return Ok(i);
        }
        let i = if self.cache.len() < CACHED_AXES {
            self.cache.push(CachedAxis::default());
            self.cache.len() - 1
        } else {
            // The least recently used; the axis asked just before this one is never it.
            (0..self.cache.len())
                .min_by_key(|&i| self.cache[i].last_used)
                .unwrap_or(0)
        };
        let entry = &mut self.cache[i];
        entry.key = None;
        entry.plan.made_for = None;
        fixed_axis_into(
            &mut entry.axis,
            &mut self.float,
            (
                key.in_size,
                f64::from_bits(key.in0),
                f64::from_bits(key.in1),
                key.out_size,
            ),
            key.filter,
        );
        let a = &entry.axis;
        let inside = a.start.len() == key.out_size as usize
            && (0..a.start.len()).all(|k| {
                u64::from(a.start[k]) + u64::from(a.count[k]) <= u64::from(key.in_size)
                    && a.offset[k] as usize + a.count[k] as usize <= a.weights.len()
            });
        if !inside {
            return Err(Error::Resize(format!(
                "resize weights of {key:?} fall outside the source"
            )));
        }
        entry.key = Some(key);
        entry.last_used = self.clock;
        Ok(i)
    }
}

impl CachedAxis {
    /// Makes `plan` the horizontal pass over outputs `sel` at `level`, unless it is already.
    fn plan_for(&mut self, sel: (u32, u32), level: Level) {
        if self.plan.made_for == Some((sel.0, sel.1, level)) {
            return;
        }
        let a = &self.axis;
        let plan = &mut self.plan;
        let outs = sel.0 as usize..sel.1 as usize;
        plan.lo = outs.clone().map(|i| a.start[i] as usize).min().unwrap_or(0);
        plan.hi = outs
            .clone()
            .map(|i| (a.start[i] + a.count[i]) as usize)
            .max()
            .unwrap_or(0)
            .max(plan.lo);
        let unit = 1i32 << a.precision;
        plan.identity = outs.clone().enumerate().all(|(k, i)| {
            a.count[i] == 1
                && a.weights[a.offset[i] as usize] == unit
                && a.start[i] as usize == plan.lo + k
        });
        plan.groups.clear();
        plan.weights.clear();
        plan.chunks.clear();
        plan.chunk_index.clear();
        plan.chunk_weights.clear();
        plan.need = 0;
        if level == Level::Avx512 && !plan.identity && !plan_chunks(a, sel, plan) {
            plan.chunks.clear();
            plan.chunk_index.clear();
            plan.chunk_weights.clear();
            plan.need = 0;
        }
        if level != Level::Scalar && !plan.identity && plan.chunks.is_empty() {
            let n = outs.len();
            for g in 0..n.div_ceil(8) {
                let out = |k: usize| Some(sel.0 as usize + 8 * g + k).filter(|&i| i < outs.end);
                let pairs = (0..8)
                    .filter_map(out)
                    .map(|i| a.count[i].div_ceil(2))
                    .max()
                    .unwrap_or(0);
                let mut group = Group {
                    pairs,
                    woff: plan.weights.len() as u32,
                    off: [0; 8],
                };
                for (k, off) in group.off.iter_mut().enumerate() {
                    if let Some(i) = out(k) {
                        *off = 3 * (a.start[i] as usize - plan.lo) as u32;
                    }
                }
                // The weight pair of tap pair `t` of output `k` of the group (zero past its taps).
                let pair = |k: usize, t: u32| out(k).map_or(0, |i| weight_pair(a, i, t));
                for t in 0..pairs {
                    for i in 0..4 {
                        let (low, high) = (pair(i, t), pair(i + 4, t));
                        plan.weights.extend_from_slice(&[low; 4]);
                        plan.weights.extend_from_slice(&[high; 4]);
                    }
                }
                if pairs > 0 {
                    let last = group.off.iter().max().copied().unwrap_or(0) as usize;
                    plan.need = plan.need.max(last + 6 * (pairs as usize - 1) + 16);
                }
                plan.groups.push(group);
            }
        }
        plan.made_for = Some((sel.0, sel.1, level));
    }
}

/// The AVX-512 chunks of outputs `sel` of axis `a` into `plan` (whose `lo` is set); false if
/// some chunk's source bytes do not fit in one 64-byte window.
fn plan_chunks(a: &FixedAxis, sel: (u32, u32), plan: &mut HorizontalPlan) -> bool {
    let (first, n) = (sel.0 as usize, (sel.1 - sel.0) as usize);
    let samples = 3 * n;
    // Blocks of 4 chunks (64 output bytes); chunks past the row are empty.
    let count = samples.div_ceil(64) * 4;
    for c in 0..count {
        // Output pixel and channel of each of the chunk's 16 samples that exist.
        let sample = |k: usize| {
            Some(16 * c + k)
                .filter(|&j| j < samples)
                .map(|j| (first + j / 3, j % 3))
        };
        let pairs = (0..16)
            .filter_map(sample)
            .map(|(x, _)| a.count[x].div_ceil(2))
            .max()
            .unwrap_or(0);
        let lead = sample(0).map_or(plan.lo, |(x, _)| a.start[x] as usize);
        let chunk = Chunk {
            pairs,
            woff: plan.chunk_weights.len() as u32,
            base: 3 * (lead - plan.lo) as u32,
        };
        for k in 0..16 {
            let rel = match sample(k) {
                Some((x, ch)) => {
                    let Some(rel) = (a.start[x] as usize).checked_sub(lead) else {
                        return false;
                    };
                    3 * rel + ch
                }
                None => 0,
            };
            // Tap a at `rel`, tap b at `rel + 3`, as the low bytes of two i16.
            if rel + 3 > 63 {
                return false;
            }
            plan.chunk_index
                .extend_from_slice(&[rel as u8, 0, rel as u8 + 3, 0]);
        }
        for t in 0..pairs {
            for k in 0..16 {
                let w = sample(k).map_or(0, |(x, _)| weight_pair(a, x, t));
                plan.chunk_weights.push(w);
            }
        }
        if pairs > 0 {
            plan.need = plan
                .need
                .max(chunk.base as usize + 6 * (pairs as usize - 1) + 64);
        }
        plan.chunks.push(chunk);
    }
    true
}

/// Taps `2t` and `2t + 1` of output `x` as one i32 of two i16 (zero past its taps).
fn weight_pair(a: &FixedAxis, x: usize, t: u32) -> i32 {
    let (o, c) = (a.offset[x] as usize, a.count[x]);
    let w = |j: u32| {
        if j < c {
            a.weights[o + j as usize] as u16 as u32
        } else {
            0
        }
    };
    (w(2 * t) | (w(2 * t + 1) << 16)) as i32
}

/// What each output row of one call needs.
struct Rows<'a> {
    src: &'a [u8],
    stride: usize,
    v: &'a FixedAxis,
    h: &'a FixedAxis,
    plan: &'a HorizontalPlan,
    sel: (u32, u32),
}

/// `2^(p−1)`, the rounding term of a pass (none at precision 0).
fn rounding(p: u32) -> i32 {
    if p == 0 { 0 } else { 1 << (p - 1) }
}

/// A pass's sum to its u8 level.
fn level_of(acc: i32, p: u32) -> u8 {
    (acc >> p).clamp(0, 255) as u8
}

impl Rows<'_> {
    /// Output row `y`'s taps: first source row, count, weights.
    fn taps(&self, y: usize) -> (usize, &[i32]) {
        let (s, n, o) = (
            self.v.start[y] as usize,
            self.v.count[y] as usize,
            self.v.offset[y] as usize,
        );
        (s, &self.v.weights[o..o + n])
    }

    /// Whether output row `y` is a copy of its one source row.
    fn row_is_copy(&self, y: usize) -> Option<usize> {
        let (s, w) = self.taps(y);
        (w.len() == 1 && w[0] == 1 << self.v.precision).then_some(s)
    }

    fn run_scalar(&self, first_row: usize, mid: &mut [u8], dst: &mut [u8], row_bytes: usize) {
        let (b0, b1) = (3 * self.plan.lo, 3 * self.plan.hi);
        let mid = &mut mid[..b1 - b0];
        for (r, out) in dst.chunks_exact_mut(row_bytes).enumerate() {
            self.vertical_scalar(first_row + r, b0, mid);
            self.horizontal_scalar(mid, out);
        }
    }

    /// The vertical pass of output row `y` over source bytes `b0..b0 + mid.len()`.
    fn vertical_scalar(&self, y: usize, b0: usize, mid: &mut [u8]) {
        if let Some(s) = self.row_is_copy(y) {
            let at = s * self.stride + b0;
            mid.copy_from_slice(&self.src[at..at + mid.len()]);
            return;
        }
        let (s, w) = self.taps(y);
        let (p, round) = (self.v.precision, rounding(self.v.precision));
        for (j, m) in mid.iter_mut().enumerate() {
            let mut acc = round;
            for (k, &wk) in w.iter().enumerate() {
                let px = i32::from(self.src[(s + k) * self.stride + b0 + j]);
                acc = acc.wrapping_add(wk.wrapping_mul(px));
            }
            *m = level_of(acc, p);
        }
    }

    /// The horizontal pass of one output row from its intermediate row.
    fn horizontal_scalar(&self, mid: &[u8], out: &mut [u8]) {
        if self.plan.identity {
            out.copy_from_slice(&mid[..out.len()]);
            return;
        }
        let h = self.h;
        let (p, round) = (h.precision, rounding(h.precision));
        for (x, px) in (self.sel.0 as usize..self.sel.1 as usize).zip(out.chunks_exact_mut(3)) {
            let (s, n, o) = (
                h.start[x] as usize - self.plan.lo,
                h.count[x] as usize,
                h.offset[x] as usize,
            );
            for (c, level) in px.iter_mut().enumerate() {
                let mut acc = round;
                for (k, &wk) in h.weights[o..o + n].iter().enumerate() {
                    let v = i32::from(mid[3 * (s + k) + c]);
                    acc = acc.wrapping_add(wk.wrapping_mul(v));
                }
                *level = level_of(acc, p);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Rows, rounding};

    impl Rows<'_> {
        /// Both passes of every output row, AVX2 kernels.
        ///
        /// # Safety
        /// The CPU must support AVX2.
        #[target_feature(enable = "avx2")]
        pub(super) unsafe fn run_avx2(
            &self,
            first_row: usize,
            mid: &mut [u8],
            dst: &mut [u8],
            row_bytes: usize,
        ) {
            let (b0, b1) = (3 * self.plan.lo, 3 * self.plan.hi);
            let nbytes = b1 - b0;
            // The kernels' reads stay inside `mid` (the horizontal one reads up to
            // `plan.need` bytes, which the caller sized it for); checked here so that a
            // mistake elsewhere degrades to the scalar code, never to a stray read.
            if mid.len() < nbytes.max(self.plan.need) {
                return self.run_scalar(first_row, mid, dst, row_bytes);
            }
            for (r, out) in dst.chunks_exact_mut(row_bytes).enumerate() {
                self.vertical(first_row + r, b0, &mut mid[..nbytes]);
                if self.plan.identity {
                    out.copy_from_slice(&mid[..out.len()]);
                } else {
                    self.horizontal(mid, out);
                }
            }
        }

        /// The vertical pass of output row `y` over source bytes `b0..b0 + mid.len()`.
        #[target_feature(enable = "avx2")]
        pub(super) fn vertical(&self, y: usize, b0: usize, mid: &mut [u8]) {
            let nbytes = mid.len();
            let (s, w) = self.taps(y);
            if nbytes < 32 || self.row_is_copy(y).is_some() || w.is_empty() {
                return self.vertical_scalar(y, b0, mid);
            }
            // Every load below reads 32 bytes at `row * stride + b0 + j` with
            // `j + 32 <= nbytes` and `b0 + nbytes <= stride`: inside the source row.
            let last_row = s + w.len() - 1;
            if (last_row + 1) * self.stride > self.src.len() || b0 + nbytes > self.stride {
                return self.vertical_scalar(y, b0, mid);
            }
            let p = self.v.precision;
            let round = _mm256_set1_epi32(rounding(p));
            let shift = _mm_cvtsi32_si128(p as i32);
            let zero = _mm256_setzero_si256();
            let src = self.src.as_ptr();
            let mut j = 0;
            loop {
                // The last chunk ends at the row's end, overlapping the one before.
                let at = j.min(nbytes - 32);
                let mut acc = [round; 4];
                for (t, pair) in w.chunks(2).enumerate() {
                    let row_a = s + 2 * t;
                    let (wa, wb) = (pair[0], pair.get(1).copied().unwrap_or(0));
                    let row_b = if pair.len() == 2 { row_a + 1 } else { row_a };
                    let weights =
                        _mm256_set1_epi32((wa as u16 as u32 | (wb as u16 as u32) << 16) as i32);
                    // SAFETY: rows `row_a`, `row_b` <= `last_row`, bytes in bounds (above).
                    let (a, b) = unsafe {
                        (
                            _mm256_loadu_si256(src.add(row_a * self.stride + b0 + at).cast()),
                            _mm256_loadu_si256(src.add(row_b * self.stride + b0 + at).cast()),
                        )
                    };
                    let lo = _mm256_unpacklo_epi8(a, b);
                    let hi = _mm256_unpackhi_epi8(a, b);
                    let parts = [
                        _mm256_unpacklo_epi8(lo, zero),
                        _mm256_unpackhi_epi8(lo, zero),
                        _mm256_unpacklo_epi8(hi, zero),
                        _mm256_unpackhi_epi8(hi, zero),
                    ];
                    for (sum, part) in acc.iter_mut().zip(parts) {
                        *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(part, weights));
                    }
                }
                let [a0, a1, a2, a3] = acc.map(|v| _mm256_sra_epi32(v, shift));
                // In-lane packs undo the in-lane unpacks: bytes come back in order.
                let bytes =
                    _mm256_packus_epi16(_mm256_packs_epi32(a0, a1), _mm256_packs_epi32(a2, a3));
                // SAFETY: `at + 32 <= nbytes == mid.len()`.
                unsafe { _mm256_storeu_si256(mid.as_mut_ptr().add(at).cast(), bytes) };
                if at == nbytes - 32 {
                    break;
                }
                j += 32;
            }
        }

        /// The horizontal pass of one output row from its intermediate row `mid`.
        #[target_feature(enable = "avx2")]
        pub(super) fn horizontal(&self, mid: &[u8], out: &mut [u8]) {
            let plan = self.plan;
            let p = self.h.precision;
            let round = _mm256_set1_epi32(rounding(p));
            let shift = _mm_cvtsi32_si128(p as i32);
            // Two next source pixels of one output: r0 r1 g0 g1 b0 b1 0 0 as i16.
            let spread = _mm256_setr_epi8(
                0, -128, 3, -128, 1, -128, 4, -128, 2, -128, 5, -128, -128, -128, -128, -128, 0,
                -128, 3, -128, 1, -128, 4, -128, 2, -128, 5, -128, -128, -128, -128, -128,
            );
            // Four RGBx pixels of a lane to 12 packed bytes.
            let compact = _mm256_setr_epi8(
                0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -128, -128, -128, -128, 0, 1, 2, 4, 5, 6,
                8, 9, 10, 12, 13, 14, -128, -128, -128, -128,
            );
            let base = mid.as_ptr();
            let weights = plan.weights.as_ptr();
            for (g, group) in plan.groups.iter().enumerate() {
                let mut acc = [round; 4];
                for t in 0..group.pairs as usize {
                    for (i, sum) in acc.iter_mut().enumerate() {
                        // SAFETY: `plan_for` set `need` past every read of its groups (offset
                        // + 6 per tap pair + 16 bytes), and `mid.len() >= need` (checked in
                        // `run_avx2`); the weights hold `pairs * 4 * 8` i32 per group.
                        let (data, w) = unsafe {
                            (
                                _mm256_loadu2_m128i(
                                    base.add(group.off[i + 4] as usize + 6 * t).cast(),
                                    base.add(group.off[i] as usize + 6 * t).cast(),
                                ),
                                _mm256_loadu_si256(
                                    weights.add(group.woff as usize + (4 * t + i) * 8).cast(),
                                ),
                            )
                        };
                        let data = _mm256_shuffle_epi8(data, spread);
                        *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(data, w));
                    }
                }
                let [a0, a1, a2, a3] = acc.map(|v| _mm256_sra_epi32(v, shift));
                // Lanes: [out 0, 1, 2, 3 | out 4, 5, 6, 7] as RGBx bytes, then packed RGB.
                let rgbx =
                    _mm256_packus_epi16(_mm256_packs_epi32(a0, a1), _mm256_packs_epi32(a2, a3));
                let rgb = _mm256_shuffle_epi8(rgbx, compact);
                let (low, high) = (
                    _mm256_castsi256_si128(rgb),
                    _mm256_extracti128_si256::<1>(rgb),
                );
                let at = 24 * g;
                if at + 28 <= out.len() {
                    // SAFETY: writes bytes `at..at + 28`, inside `out`; the low lane's 4
                    // trailing bytes are overwritten by the high lane's store.
                    unsafe {
                        _mm_storeu_si128(out.as_mut_ptr().add(at).cast(), low);
                        _mm_storeu_si128(out.as_mut_ptr().add(at + 12).cast(), high);
                    }
                } else {
                    let mut tmp = [0u8; 32];
                    // SAFETY: writes bytes 0..28 of the 32-byte `tmp`.
                    unsafe {
                        _mm_storeu_si128(tmp.as_mut_ptr().cast(), low);
                        _mm_storeu_si128(tmp.as_mut_ptr().add(12).cast(), high);
                    }
                    let n = out.len().saturating_sub(at).min(24);
                    out[at..at + n].copy_from_slice(&tmp[..n]);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Rows, rounding};

    impl Rows<'_> {
        /// Both passes of every output row, AVX-512 kernels where the plan has them.
        ///
        /// # Safety
        /// The CPU must support AVX2, AVX-512 F, BW and VBMI.
        #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vbmi")]
        pub(super) unsafe fn run_avx512(
            &self,
            first_row: usize,
            mid: &mut [u8],
            dst: &mut [u8],
            row_bytes: usize,
        ) {
            let (b0, b1) = (3 * self.plan.lo, 3 * self.plan.hi);
            let nbytes = b1 - b0;
            // As in `run_avx2`: every kernel read stays inside `mid`.
            if mid.len() < nbytes.max(self.plan.need) {
                return self.run_scalar(first_row, mid, dst, row_bytes);
            }
            let chunks = !self.plan.chunks.is_empty()
                && self.plan.chunk_index.len() == 64 * self.plan.chunks.len();
            for (r, out) in dst.chunks_exact_mut(row_bytes).enumerate() {
                self.vertical512(first_row + r, b0, &mut mid[..nbytes]);
                if self.plan.identity {
                    out.copy_from_slice(&mid[..out.len()]);
                } else if chunks {
                    self.horizontal512(mid, out);
                } else {
                    self.horizontal(mid, out);
                }
            }
        }

        /// The vertical pass of output row `y`, 64 bytes at a time (`vertical` of the AVX2
        /// kernels, twice as wide).
        #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vbmi")]
        fn vertical512(&self, y: usize, b0: usize, mid: &mut [u8]) {
            let nbytes = mid.len();
            let (s, w) = self.taps(y);
            if nbytes < 64 || self.row_is_copy(y).is_some() || w.is_empty() {
                return self.vertical(y, b0, mid);
            }
            // Loads read 64 bytes at `row * stride + b0 + j`, `j + 64 <= nbytes`,
            // `b0 + nbytes <= stride`: inside the source row.
            let last_row = s + w.len() - 1;
            if (last_row + 1) * self.stride > self.src.len() || b0 + nbytes > self.stride {
                return self.vertical_scalar(y, b0, mid);
            }
            let p = self.v.precision;
            let round = _mm512_set1_epi32(rounding(p));
            let shift = _mm_cvtsi32_si128(p as i32);
            let zero = _mm512_setzero_si512();
            let src = self.src.as_ptr();
            let mut j = 0;
            loop {
                let at = j.min(nbytes - 64);
                let mut acc = [round; 4];
                for (t, pair) in w.chunks(2).enumerate() {
                    let row_a = s + 2 * t;
                    let (wa, wb) = (pair[0], pair.get(1).copied().unwrap_or(0));
                    let row_b = if pair.len() == 2 { row_a + 1 } else { row_a };
                    let weights =
                        _mm512_set1_epi32((wa as u16 as u32 | (wb as u16 as u32) << 16) as i32);
                    // SAFETY: rows `row_a`, `row_b` <= `last_row`, bytes in bounds (above).
                    let (a, b) = unsafe {
                        (
                            _mm512_loadu_si512(src.add(row_a * self.stride + b0 + at).cast()),
                            _mm512_loadu_si512(src.add(row_b * self.stride + b0 + at).cast()),
                        )
                    };
                    let lo = _mm512_unpacklo_epi8(a, b);
                    let hi = _mm512_unpackhi_epi8(a, b);
                    let parts = [
                        _mm512_unpacklo_epi8(lo, zero),
                        _mm512_unpackhi_epi8(lo, zero),
                        _mm512_unpacklo_epi8(hi, zero),
                        _mm512_unpackhi_epi8(hi, zero),
                    ];
                    for (sum, part) in acc.iter_mut().zip(parts) {
                        *sum = _mm512_add_epi32(*sum, _mm512_madd_epi16(part, weights));
                    }
                }
                let [a0, a1, a2, a3] = acc.map(|v| _mm512_sra_epi32(v, shift));
                let bytes =
                    _mm512_packus_epi16(_mm512_packs_epi32(a0, a1), _mm512_packs_epi32(a2, a3));
                // SAFETY: `at + 64 <= nbytes == mid.len()`.
                unsafe { _mm512_storeu_si512(mid.as_mut_ptr().add(at).cast(), bytes) };
                if at == nbytes - 64 {
                    break;
                }
                j += 64;
            }
        }

        /// The horizontal pass of one output row, 16 output bytes per `vpmaddwd`: each
        /// sample's two source bytes of a tap pair are picked from a 64-byte window by one
        /// `vpermb` (zeroing the high bytes), the same index for every tap pair.
        #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vbmi")]
        fn horizontal512(&self, mid: &[u8], out: &mut [u8]) {
            let plan = self.plan;
            let p = self.h.precision;
            let round = _mm512_set1_epi32(rounding(p));
            let shift = _mm_cvtsi32_si128(p as i32);
            // In-lane packs leave lane k holding dwords k of chunks 0..4: put chunks in order.
            let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
            let low_bytes: __mmask64 = 0x5555_5555_5555_5555;
            let base = mid.as_ptr();
            for (b, block) in plan.chunks.chunks_exact(4).enumerate() {
                let mut acc = [round; 4];
                for (q, (chunk, sum)) in block.iter().zip(acc.iter_mut()).enumerate() {
                    let c = 4 * b + q;
                    // SAFETY: `chunk_index` holds 64 bytes per chunk (checked in
                    // `run_avx512`).
                    let index =
                        unsafe { _mm512_loadu_si512(plan.chunk_index.as_ptr().add(64 * c).cast()) };
                    for t in 0..chunk.pairs as usize {
                        // SAFETY: `plan_chunks` set `need` past every window (base + 6 per
                        // tap pair + 64 bytes) and `mid.len() >= need` (checked in
                        // `run_avx512`); the weights hold `16 * pairs` i32 per chunk.
                        let (data, w) = unsafe {
                            (
                                _mm512_loadu_si512(base.add(chunk.base as usize + 6 * t).cast()),
                                _mm512_loadu_si512(
                                    plan.chunk_weights
                                        .as_ptr()
                                        .add(chunk.woff as usize + 16 * t)
                                        .cast(),
                                ),
                            )
                        };
                        let pairs = _mm512_maskz_permutexvar_epi8(low_bytes, index, data);
                        *sum = _mm512_add_epi32(*sum, _mm512_madd_epi16(pairs, w));
                    }
                }
                let [a0, a1, a2, a3] = acc.map(|v| _mm512_sra_epi32(v, shift));
                let bytes =
                    _mm512_packus_epi16(_mm512_packs_epi32(a0, a1), _mm512_packs_epi32(a2, a3));
                let bytes = _mm512_permutexvar_epi32(order, bytes);
                let at = 64 * b;
                let left = out.len().saturating_sub(at);
                if left == 0 {
                    break;
                }
                let mask: __mmask64 = if left >= 64 { !0 } else { (1u64 << left) - 1 };
                // SAFETY: the mask writes only bytes `at..at + min(left, 64)`, inside `out`.
                unsafe { _mm512_mask_storeu_epi8(out.as_mut_ptr().add(at).cast(), mask, bytes) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::fir_fixed::fixed_axis;
    use crate::image::resize::resize_region_into_fir;

    /// Whether fast_image_resize 6.1's result is defined for this region, i.e. whether it can
    /// be the reference. With both passes it sizes its intermediate image from the first
    /// horizontal window's start to the last one's end and shifts every start by the first
    /// (a `u32` subtraction): a window starting before the first (the start wraps around: a
    /// wild read) or ending after the last (`crop_overreads`, read past the row) leaves the
    /// result undefined. The CPU path reroutes the second kind to the band (the crop it then
    /// gives fast_image_resize is checked here); neither occurs in the tiling rules' grids.
    fn fir_defined(src: &RgbImage, full: (u32, u32), region: Region, filter: ResizeFilter) -> bool {
        let crop = overread_band(src.width, src.height, full, region, filter).unwrap_or(region);
        let ((left, width), (top, height)) = source_crop(src.width, src.height, full, crop);
        let both = (f64::from(crop.width) != width || left != left.round())
            && (f64::from(crop.height) != height || top != top.round());
        if !both {
            return true;
        }
        let h = fixed_axis(src.width, left, left + width, crop.width, filter);
        let ends = h.start.iter().zip(&h.count).map(|(s, n)| s + n);
        let (first, last) = (
            h.start[0],
            h.start.last().unwrap() + h.count.last().unwrap(),
        );
        h.start.iter().all(|&s| s >= first) && ends.clone().all(|e| e <= last)
    }

    /// xorshift32.
    struct Rng(u32);

    impl Rng {
        fn next(&mut self) -> u32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 17;
            self.0 ^= self.0 << 5;
            self.0
        }
        fn below(&mut self, n: u32) -> u32 {
            self.next() % n.max(1)
        }
        /// Mostly small, sometimes large: 1..=max, log-uniform-ish.
        fn size(&mut self, max: u32) -> u32 {
            let bits = 1 + self.below(32 - max.leading_zeros());
            1 + self.below((1u32 << bits).min(max))
        }
    }

    fn noise(w: u32, h: u32, rng: &mut Rng) -> RgbImage {
        let data = (0..3 * w * h)
            .map(|i| {
                // Noise over a ramp, sometimes saturated, so clamping is exercised.
                let r = rng.next();
                match r % 7 {
                    0 => 0,
                    1 => 255,
                    _ => ((i / 3 % w) * 200 / w.max(1) + (r >> 26)) as u8,
                }
            })
            .collect();
        RgbImage {
            width: w,
            height: h,
            data,
        }
    }

    /// The fast_image_resize reference, the kernels of this CPU and the scalar ones.
    struct Kernels {
        fir: fast_image_resize::Resizer,
        fast: Resampler,
        avx2: Resampler,
        scalar: Resampler,
    }

    impl Kernels {
        fn new() -> Self {
            Kernels {
                fir: fast_image_resize::Resizer::new(),
                fast: Resampler::new(),
                avx2: Resampler::with_level(Level::Avx2),
                scalar: Resampler::with_level(Level::Scalar),
            }
        }
    }

    /// Compares the kernels with each other and, where its result is defined, with
    /// fast_image_resize; whether that was compared too.
    fn check(
        k: &mut Kernels,
        rng_case: usize,
        src: &RgbImage,
        full: (u32, u32),
        region: Region,
        filter: ResizeFilter,
    ) -> bool {
        let n = 3 * (region.width * region.height) as usize;
        let mut got = vec![0u8; n];
        let mut reference = vec![0u8; n];
        k.fast
            .resize_region(src, full, region, filter, &mut got)
            .unwrap();
        k.scalar
            .resize_region(src, full, region, filter, &mut reference)
            .unwrap();
        let mut avx2 = vec![0u8; n];
        k.avx2
            .resize_region(src, full, region, filter, &mut avx2)
            .unwrap();
        let what = format!(
            "case {rng_case}: {}x{} -> {full:?} {region:?} {filter:?}",
            src.width, src.height
        );
        assert!(
            avx2 == reference,
            "avx2 vs scalar, {what}: {} of {n} bytes differ",
            avx2.iter().zip(&reference).filter(|(a, b)| a != b).count()
        );
        assert!(
            got == reference,
            "simd vs scalar, {what}: {} of {n} bytes differ",
            got.iter().zip(&reference).filter(|(a, b)| a != b).count()
        );
        if !fir_defined(src, full, region, filter) {
            return false;
        }
        let mut want = vec![0u8; n];
        resize_region_into_fir(&mut k.fir, src, full, region, filter, &mut want).unwrap();
        assert!(
            reference == want,
            "scalar vs fir, {what}: {} of {n} bytes differ",
            reference.iter().zip(&want).filter(|(a, b)| a != b).count()
        );
        assert!(
            got == want,
            "simd vs fir, {what}: {} of {n} bytes differ",
            got.iter().zip(&want).filter(|(a, b)| a != b).count()
        );
        true
    }

    #[test]
    fn equals_fast_image_resize_on_random_cases() {
        let mut rng = Rng(0x9e37_79b9);
        let mut k = Kernels::new();
        let (mut with_fir, mut total) = (0, 0);
        for case in 0..600 {
            let (sw, sh) = (rng.size(700), rng.size(500));
            // Extreme up- and downscales, identity and near-identity axes.
            let pick = |rng: &mut Rng, s: u32| match rng.below(6) {
                0 => s,
                1 => (s + rng.below(3)).max(1),
                2 => rng.size(40),
                3 => (s * (2 + rng.below(20))).min(1500),
                _ => rng.size(900),
            };
            let full = (pick(&mut rng, sw), pick(&mut rng, sh));
            let src = noise(sw, sh, &mut rng);
            let filter = if rng.below(3) == 0 {
                ResizeFilter::Bilinear
            } else {
                ResizeFilter::Bicubic
            };
            let mut regions = vec![Region {
                x: 0,
                y: 0,
                width: full.0,
                height: full.1,
            }];
            // Random regions, some touching the right/bottom edges.
            for _ in 0..3 {
                let width = 1 + rng.below(full.0);
                let height = 1 + rng.below(full.1);
                let x = if rng.below(3) == 0 {
                    full.0 - width
                } else {
                    rng.below(full.0 - width + 1)
                };
                let y = if rng.below(3) == 0 {
                    full.1 - height
                } else {
                    rng.below(full.1 - height + 1)
                };
                regions.push(Region {
                    x,
                    y,
                    width,
                    height,
                });
            }
            for region in regions {
                total += 1;
                with_fir += usize::from(check(&mut k, case, &src, full, region, filter));
            }
        }
        // fast_image_resize's result is undefined for a few random crops (`fir_defined`).
        assert!(with_fir * 10 > total * 9, "{with_fir} of {total}");
    }

    #[test]
    fn equals_fast_image_resize_on_tile_grids() {
        let mut rng = Rng(7);
        let mut k = Kernels::new();
        // The rules' shapes: InternVL grids and thumbnail, fixed sizes, overreading upscales.
        let cases = [
            ((640, 480), (1792, 1344), 448),
            ((640, 480), (448, 448), 448),
            ((640, 480), (384, 384), 384),
            ((4000, 3000), (1792, 1344), 448),
            ((1, 1), (896, 448), 448),
            ((50, 37), (150, 111), 37),
            ((333, 1), (112, 336), 112),
            ((1, 777), (224, 112), 56),
            ((97, 61), (40, 30), 10),
        ];
        for (case, ((w, h), full, tile)) in cases.into_iter().enumerate() {
            let src = noise(w, h, &mut rng);
            for filter in [ResizeFilter::Bicubic, ResizeFilter::Bilinear] {
                // Whole tiles, as the rules cut (150 / 37 leaves a strip: not a tile).
                for y in (0..full.1 / tile * tile).step_by(tile as usize) {
                    for x in (0..full.0 / tile * tile).step_by(tile as usize) {
                        let region = Region {
                            x,
                            y,
                            width: tile,
                            height: tile,
                        };
                        assert!(
                            check(&mut k, case, &src, full, region, filter),
                            "{region:?}: no reference"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn avx512_takes_the_chunked_horizontal_kernel_where_it_fits() {
        if Resampler::detect() != Level::Avx512 {
            // Nothing to check on this CPU; say so rather than pass silently.
            eprintln!("skipped: this CPU lacks AVX-512 F/BW/VBMI");
            return;
        }
        let mut r = Resampler::new();
        let src = noise(640, 480, &mut Rng(5));
        let mut dst = vec![0u8; 3 * 448 * 448];
        let tile = Region {
            x: 448,
            y: 448,
            width: 448,
            height: 448,
        };
        let chunked = |r: &Resampler| r.cache.iter().any(|c| !c.plan.chunks.is_empty());
        // An InternVL upscale tile: chunks; a 4000 -> 448 thumbnail: AVX2 groups.
        r.resize_region(&src, (1792, 1344), tile, ResizeFilter::Bicubic, &mut dst)
            .unwrap();
        assert!(chunked(&r));
        let mut r = Resampler::new();
        let big = noise(4000, 30, &mut Rng(6));
        let mut thumb = vec![0u8; 3 * 448 * 30];
        let whole = Region {
            x: 0,
            y: 0,
            width: 448,
            height: 30,
        };
        r.resize_region(&big, (448, 30), whole, ResizeFilter::Bicubic, &mut thumb)
            .unwrap();
        assert!(!chunked(&r) && r.cache.iter().any(|c| !c.plan.groups.is_empty()));
    }

    #[test]
    fn bad_buffers_are_errors_not_panics() {
        let mut rng = Rng(3);
        let src = noise(10, 10, &mut rng);
        let mut r = Resampler::new();
        let region = Region {
            x: 0,
            y: 0,
            width: 4,
            height: 4,
        };
        let mut short = vec![0u8; 3 * 4 * 4 - 1];
        assert!(
            r.resize_region(&src, (4, 4), region, ResizeFilter::Bicubic, &mut short)
                .is_err()
        );
        let bad = RgbImage {
            width: 10,
            height: 10,
            data: vec![0; 5],
        };
        let mut dst = vec![0u8; 3 * 4 * 4];
        assert!(
            r.resize_region(&bad, (4, 4), region, ResizeFilter::Bicubic, &mut dst)
                .is_err()
        );
        let outside = Region {
            x: u32::MAX,
            ..region
        };
        assert!(
            r.resize_region(&src, (4, 4), outside, ResizeFilter::Bicubic, &mut dst)
                .is_err()
        );
    }
}
