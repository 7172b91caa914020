//! How `tile` cuts a shard into chunks: each sample is planned from its image header (size,
//! orientation, tiling rule) before anything is decoded, and the planned images are grouped,
//! in order, so that what one chunk holds at once (every image decoded, plus every tile of the
//! batch) stays within `--memory-mib`.
//!
//! Counting the tiles matters: an InternVL image of 0.3 MP cut into up to 13 tiles of 448² in
//! f32 holds ~20× its decoded size in tiles, so a budget of decoded bytes alone let a chunk
//! hold many times the memory the user allowed.
//!
//! [`plan_chunks`] runs on a thread of its own: while one chunk is decoded and tiled, the next
//! is planned and its encoded bytes are read in from the shard's mapping, so reading overlaps
//! decoding.

use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::SyncSender;

use rayon::prelude::*;

use super::tile::TileConfig;
use super::{image_error_kind, image_member, sample_problem};
use crate::backend::tile_bytes;
use crate::image::ImageHeader;
use crate::image::decode::{DecodeOptions, dct_scale_for, dct_scaled_size};
use crate::image::normalize::Dtype;
use crate::image::probe::probe;
use crate::image::tiling::{TilePlan, Tiler};
use crate::problems::Problem;
use crate::shard::{MemberData, SampleEntry, Shard};

/// At most this many images go into one chunk, whatever their size: a chunk holds each image's
/// member data (a memory map per file for folder inputs) and is one decode batch on devices
/// that decode.
const MAX_CHUNK_IMAGES: usize = 4096;

/// Samples are planned this many at a time (across cores) ahead of the chunk they join.
const PLAN_WINDOW: usize = 256;

/// An image of a chunk, planned from its header.
pub(super) struct Planned<'s> {
    pub sample: &'s SampleEntry,
    /// Width and height after EXIF orientation.
    pub size: (u32, u32),
    pub plan: TilePlan,
}

/// A planned image with what decoding it needs: its encoded bytes (borrowed from the mapping
/// for tar shards) and its probed header.
pub(super) struct PlannedImage<'s, 'd> {
    pub planned: Planned<'s>,
    pub data: MemberData<'d>,
    pub header: ImageHeader,
}

/// A chunk as planned: its images, the problems met planning its samples, and the bytes of
/// all those samples' members (failed ones included, for the progress bar).
pub(super) struct PlannedChunk<'d> {
    pub images: Vec<PlannedImage<'d, 'd>>,
    pub problems: Vec<Problem>,
    pub member_bytes: u64,
}

/// Plans every sample of `shard` (across cores, [`PLAN_WINDOW`] at a time), groups the
/// planned images into chunks within `cfg.chunk_bytes` and hands each to `to_maker`, after
/// reading its images' encoded bytes in, so that what the maker decodes next is in memory.
/// `device_decodes`: the images will be decoded at full size on a device (no DCT scaling).
/// Stops early when the receiving side is gone.
pub(super) fn plan_chunks<'d>(
    shard: &'d Shard,
    tiler: &Tiler,
    cfg: &TileConfig,
    device_decodes: bool,
    to_maker: SyncSender<PlannedChunk<'d>>,
) {
    let mut chunker = Chunker::new(cfg.chunk_bytes, MAX_CHUNK_IMAGES);
    // What the open chunk carries besides its images: the samples taken since the last
    // chunk was handed over, failed ones included.
    let mut problems = Vec::new();
    let mut member_bytes = 0u64;
    let hand_over = |images: Vec<PlannedImage<'d, 'd>>, problems, member_bytes| {
        for image in &images {
            read_in(&image.data);
        }
        let chunk = PlannedChunk {
            images,
            problems,
            member_bytes,
        };
        to_maker.send(chunk).is_ok()
    };
    for window in shard.samples().chunks(PLAN_WINDOW) {
        let planned: Vec<_> = window
            .par_iter()
            .map(|sample| plan_sample(shard, sample, tiler))
            .collect();
        for (sample, result) in window.iter().zip(planned) {
            let image = match result {
                Ok(image) => image,
                Err(problem) => {
                    problems.push(problem);
                    member_bytes += sample_bytes(sample);
                    continue;
                }
            };
            let options = decode_options(cfg.decode, cfg.dct_scaling, &image.planned.plan);
            let decoded_as = (!device_decodes).then_some(&options);
            let held = held_bytes(
                &image.header,
                &image.planned.plan,
                cfg.spec.dtype,
                decoded_as,
            );
            if let Some(full) = chunker.push(image, held)
                && !hand_over(
                    full,
                    std::mem::take(&mut problems),
                    std::mem::take(&mut member_bytes),
                )
            {
                return;
            }
            member_bytes += sample_bytes(sample);
        }
    }
    let rest = chunker.take_rest();
    if !rest.is_empty() || !problems.is_empty() || member_bytes > 0 {
        hand_over(rest, problems, member_bytes);
    }
}

/// Touches one byte per page of `data`, so a mapped file's pages are read in here, on the
/// planning thread, and not when the decoder reaches them.
fn read_in(data: &[u8]) {
    let sum = data
        .iter()
        .step_by(4096)
        .fold(0u8, |acc, &b| acc.wrapping_add(b));
    std::hint::black_box(sum);
}

/// Bytes of a sample's members (what the progress bar counts).
fn sample_bytes(sample: &SampleEntry) -> u64 {
    sample.members.iter().map(|m| m.len).sum()
}

/// Finds a sample's image, checks its key, probes its header and plans its tiles.
fn plan_sample<'s, 'd>(
    shard: &'d Shard,
    sample: &'s SampleEntry,
    tiler: &Tiler,
) -> Result<PlannedImage<'s, 'd>, Problem> {
    let fail = |kind: &'static str, message: String| sample_problem(shard, sample, kind, message);
    let member = image_member(sample)
        .ok_or_else(|| fail("no-image", "sample has no image member".into()))?;
    safe_relative_key(&sample.key).ok_or_else(|| {
        fail(
            "bad-key",
            "key would write outside the output folder".into(),
        )
    })?;
    let data = shard
        .member_data(member)
        .map_err(|e| fail(image_error_kind(&e), e.to_string()))?;
    let header = probe(&data).map_err(|e| fail(image_error_kind(&e), e.to_string()))?;
    let (width, height) = header.oriented_size();
    let plan = tiler
        .plan(width, height)
        .map_err(|e| fail("tiling", e.to_string()))?;
    let planned = Planned {
        sample,
        size: (width, height),
        plan,
    };
    Ok(PlannedImage {
        planned,
        data,
        header,
    })
}

/// The decode options of one image: `base` with, when `dct_scaling` is on, the smallest size
/// its plan needs (so a large JPEG can be decoded at a reduced DCT scale).
pub(super) fn decode_options(
    base: DecodeOptions,
    dct_scaling: bool,
    plan: &TilePlan,
) -> DecodeOptions {
    let mut options = base;
    if dct_scaling {
        let side = plan.thumbnail.unwrap_or(0);
        options.min_size = Some((plan.resize.0.max(side), plan.resize.1.max(side)));
    }
    options
}

/// Bytes an image holds while its chunk is made: its decoded pixels (at the DCT scale it will
/// be decoded at, or full size when `options` is None, as on a device that decodes) and all
/// its tiles in `dtype`.
fn held_bytes(
    header: &ImageHeader,
    plan: &TilePlan,
    dtype: Dtype,
    options: Option<&DecodeOptions>,
) -> u64 {
    let scale = options.map_or(1, |o| dct_scale_for(header, o));
    let (w, h) = dct_scaled_size((header.width, header.height), scale);
    let decoded = 3 * u64::from(w) * u64::from(h);
    let tiles = tile_bytes(plan, dtype) as u64 * u64::from(plan.num_tiles());
    decoded + tiles
}

/// Groups items, in order, into chunks whose summed cost stays within `budget` and whose
/// length stays within `max_items`; an item costing more than the budget gets a chunk of its
/// own.
struct Chunker<T> {
    budget: u64,
    max_items: usize,
    items: Vec<T>,
    cost: u64,
}

impl<T> Chunker<T> {
    pub fn new(budget: u64, max_items: usize) -> Self {
        Chunker {
            budget,
            max_items: max_items.max(1),
            items: Vec::new(),
            cost: 0,
        }
    }

    /// Adds `item`; returns the chunk it closes when it does not fit in the open one (the item
    /// then opens the next chunk).
    pub fn push(&mut self, item: T, cost: u64) -> Option<Vec<T>> {
        let full = !self.items.is_empty()
            && (self.cost.saturating_add(cost) > self.budget || self.items.len() >= self.max_items);
        let closed = full.then(|| {
            self.cost = 0;
            std::mem::take(&mut self.items)
        });
        self.items.push(item);
        self.cost = self.cost.saturating_add(cost);
        closed
    }

    /// The open chunk (possibly empty), leaving the chunker empty.
    pub fn take_rest(&mut self) -> Vec<T> {
        self.cost = 0;
        std::mem::take(&mut self.items)
    }
}

/// The key as a relative path that stays inside the output folder, or None.
fn safe_relative_key(key: &str) -> Option<PathBuf> {
    let path = Path::new(key);
    let ok = !key.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)));
    ok.then(|| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageFormat;
    use crate::image::tiling::TilingRule;

    fn closed_chunks(costs: &[u64], budget: u64, max_items: usize) -> Vec<Vec<usize>> {
        let mut chunker = Chunker::new(budget, max_items);
        let mut chunks: Vec<Vec<usize>> = costs
            .iter()
            .enumerate()
            .filter_map(|(i, &c)| chunker.push(i, c))
            .collect();
        chunks.push(chunker.take_rest());
        chunks
    }

    #[test]
    fn chunks_keep_order_respect_the_budget_and_cover_everything() {
        assert_eq!(
            closed_chunks(&[100; 10], 300, 100),
            vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8], vec![9]]
        );
        // An item over the budget gets a chunk of its own, before and after.
        assert_eq!(
            closed_chunks(&[10, 1000, 10, 10], 100, 100),
            vec![vec![0], vec![1], vec![2, 3]]
        );
        // The item count bounds chunks of small items; a zero budget means one per chunk.
        assert_eq!(
            closed_chunks(&[1; 5], 1000, 2),
            vec![vec![0, 1], vec![2, 3], vec![4]]
        );
        assert_eq!(
            closed_chunks(&[1; 3], 0, 100),
            vec![vec![0], vec![1], vec![2]]
        );
        assert_eq!(closed_chunks(&[], 10, 10), vec![Vec::<usize>::new()]);
    }

    fn header(format: ImageFormat, w: u32, h: u32) -> ImageHeader {
        ImageHeader {
            format,
            width: w,
            height: h,
            components: 3,
            bit_depth: 8,
            progressive: false,
            subsampling: None,
            orientation: 1,
            has_alpha: false,
            adobe_transform: None,
        }
    }

    #[test]
    fn held_bytes_count_the_tiles_and_the_decode_scale() {
        // InternVL on a 640×480 photo: 12 tiles of 448² plus a thumbnail, f32.
        let tiler = Tiler::new(TilingRule::InternVl(Default::default())).unwrap();
        let plan = tiler.plan(640, 480).unwrap();
        let tiles = u64::from(plan.num_tiles()) * 3 * 448 * 448 * 4;
        let jpeg = header(ImageFormat::Jpeg, 640, 480);
        assert_eq!(
            held_bytes(&jpeg, &plan, Dtype::F32, None),
            640 * 480 * 3 + tiles
        );
        // The tiles, not the pixels, are most of it: what a decoded-size budget missed.
        assert!(tiles > 10 * 640 * 480 * 3);

        // A 4000×3000 JPEG resized to 384 decodes at a reduced DCT scale (1/4: 1000×750).
        let fixed = Tiler::new(TilingRule::Fixed { size: 384 }).unwrap();
        let plan = fixed.plan(4000, 3000).unwrap();
        let big = header(ImageFormat::Jpeg, 4000, 3000);
        let opts = decode_options(DecodeOptions::default(), true, &plan);
        let scale = dct_scale_for(&big, &opts);
        assert!(scale > 1, "a 4000×3000 JPEG for a 384 tile decodes reduced");
        let (w, h) = dct_scaled_size((4000, 3000), scale);
        let u8_tile = 3 * 384 * 384;
        assert_eq!(
            held_bytes(&big, &plan, Dtype::U8, Some(&opts)),
            3 * u64::from(w) * u64::from(h) + u8_tile
        );
        // Without DCT scaling, or on a device that decodes (None), the full size counts.
        let plain = decode_options(DecodeOptions::default(), false, &plan);
        assert_eq!(
            held_bytes(&big, &plan, Dtype::U8, Some(&plain)),
            4000 * 3000 * 3 + u8_tile
        );
        assert_eq!(
            held_bytes(&big, &plan, Dtype::U8, None),
            4000 * 3000 * 3 + u8_tile
        );
        // PNGs have no DCT scale.
        let png = header(ImageFormat::Png, 4000, 3000);
        assert_eq!(
            held_bytes(&png, &plan, Dtype::U8, Some(&opts)),
            4000 * 3000 * 3 + u8_tile
        );
    }

    #[test]
    fn keys_cannot_escape_the_output_folder() {
        assert!(safe_relative_key("a/b/000123").is_some());
        assert!(safe_relative_key("../etc/passwd").is_none());
        assert!(safe_relative_key("/abs").is_none());
        assert!(safe_relative_key("a/./b").is_some()); // `.` components are dropped by Path
        assert!(safe_relative_key("").is_none());
    }
}
