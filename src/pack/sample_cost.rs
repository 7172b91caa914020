//! The exact cost of one sample, from its bytes but without decoding a pixel: every image's
//! header is probed, planned by the tiling rule and turned into placeholder tokens; the text is
//! tokenized and laid out around them. `plan` calls it to count, `pack` to build the sequence.

use crate::error::Error;
use crate::image::probe::probe;
use crate::image::tiling::{TilePlan, Tiler, TilingRule};
use crate::model::tokenizer::TextTokenizer;
use crate::pack::sample_text::parse_sample_text;
use crate::pack::sequence::{ImageTokenIds, SequenceLayout, TextFormat, build_sequence};
use crate::pack::{Cost, Limits};
use crate::shard::folder::IMAGE_EXTS;
use crate::shard::{MemberEntry, SampleEntry, Shard};

/// How many vision (context) tokens an image costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisionTokens {
    /// A fixed number per tile, thumbnail included: InternVL 256 (448 px tiles after pixel
    /// shuffle), SigLIP-384/14 729 (27×27 patches).
    PerTile(u32),
    /// Qwen2-VL: (h/factor)·(w/factor) of the smart-resized image (14 px patches merged 2×2).
    ResizedArea { factor: u32 },
}

impl VisionTokens {
    /// The preset for a tiling rule: InternVL 256 per tile, fixed (SigLIP-384/14) 729 per
    /// tile, Qwen2-VL the merged patch count.
    pub fn preset(rule: &TilingRule) -> VisionTokens {
        match rule {
            TilingRule::InternVl(_) => VisionTokens::PerTile(256),
            TilingRule::Qwen2Vl(q) => VisionTokens::ResizedArea { factor: q.factor },
            TilingRule::Fixed { .. } => VisionTokens::PerTile(729),
        }
    }

    /// Context tokens for an image with this plan.
    pub fn count(self, plan: &TilePlan) -> u64 {
        match self {
            VisionTokens::PerTile(n) => u64::from(n) * u64::from(plan.num_tiles()),
            VisionTokens::ResizedArea { factor } => {
                let f = u64::from(factor.max(1));
                (u64::from(plan.resize.0) / f) * (u64::from(plan.resize.1) / f)
            }
        }
    }
}

/// One image of a sample as planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedImage {
    /// Byte offset of the member's data in the shard (0 for folder files).
    pub offset: u64,
    /// Width and height after EXIF orientation.
    pub width: u32,
    pub height: u32,
    /// The tiling plan.
    pub plan: TilePlan,
    /// Context tokens (placeholder tokens minus start and end).
    pub context_tokens: u32,
}

/// A sample's images and token layout.
#[derive(Debug, Clone)]
pub struct SampleCosting {
    pub images: Vec<PlannedImage>,
    pub layout: SequenceLayout,
}

impl SampleCosting {
    /// Tiles over all images.
    pub fn tiles(&self) -> u32 {
        self.images.iter().map(|i| i.plan.num_tiles()).sum()
    }

    /// Tiles of the first `n` images.
    pub fn tiles_of_first(&self, n: usize) -> u32 {
        self.images.iter().take(n).map(|i| i.plan.num_tiles()).sum()
    }

    /// Tokens and tiles as laid out.
    pub fn cost(&self) -> Cost {
        Cost {
            tokens: u32::try_from(self.layout.len()).unwrap_or(u32::MAX),
            tiles: self.tiles(),
        }
    }

    /// Image placeholder tokens (start, context, end) over all images still in the layout.
    pub fn image_tokens(&self) -> u32 {
        self.layout.images.iter().map(|s| s.len).sum()
    }

    /// The layout cut to fit `limits`: images past the tile limit and tokens past the token
    /// limit removed (an image span is never cut in half). `None` when nothing is left.
    pub fn truncated(&self, limits: Limits) -> Option<SampleCosting> {
        let mut images = 0;
        let mut tiles = 0u32;
        for image in &self.images {
            if tiles + image.plan.num_tiles() > limits.tiles {
                break;
            }
            tiles += image.plan.num_tiles();
            images += 1;
        }
        let mut layout = self.layout.clone();
        layout.truncate(limits.tokens as usize, Some(images));
        if layout.is_empty() {
            return None;
        }
        // Images whose span was cut away no longer count; spans keep sample image indices.
        let kept: Vec<PlannedImage> = layout
            .images
            .iter()
            .filter_map(|span| self.images.get(span.image as usize).copied())
            .collect();
        Some(SampleCosting {
            images: kept,
            layout,
        })
    }
}

/// Why a sample could not be costed: a problem kind and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostFailure {
    pub kind: &'static str,
    pub message: String,
}

/// Everything needed to cost samples; shared by all threads.
pub struct SampleCoster<'t> {
    pub tiler: Tiler,
    pub vision: VisionTokens,
    /// Images with more pixels than this (from the header) are refused, as in `tile`.
    pub max_image_pixels: u64,
    pub tokenizer: &'t TextTokenizer,
    pub ids: ImageTokenIds,
    pub format: TextFormat,
}

/// The sample's image members, in shard order.
pub fn image_members(sample: &SampleEntry) -> impl Iterator<Item = &MemberEntry> {
    sample
        .members
        .iter()
        .filter(|m| IMAGE_EXTS.iter().any(|ext| m.ext.eq_ignore_ascii_case(ext)))
}

fn member_bytes<'a>(
    shard: &'a Shard,
    member: &MemberEntry,
) -> Result<crate::shard::MemberData<'a>, CostFailure> {
    shard.member_data(member).map_err(|e| CostFailure {
        kind: "io",
        message: format!("member .{}: {e}", member.ext),
    })
}

impl SampleCoster<'_> {
    /// Plans one image from its header bytes.
    pub fn plan_image(&self, data: &[u8], offset: u64) -> Result<PlannedImage, Error> {
        let header = probe(data)?;
        let (width, height) = header.oriented_size();
        let pixels = u64::from(width) * u64::from(height);
        if pixels > self.max_image_pixels {
            return Err(Error::TooManyPixels {
                width,
                height,
                limit: self.max_image_pixels,
            });
        }
        let plan = self.tiler.plan(width, height)?;
        let context = self.vision.count(&plan);
        let context_tokens = u32::try_from(context).map_err(|_| {
            Error::TilingSettings(format!(
                "{context} vision tokens for one image overflow u32"
            ))
        })?;
        Ok(PlannedImage {
            offset,
            width,
            height,
            plan,
            context_tokens,
        })
    }

    /// Costs one sample of `shard`: probes its images, reads its .txt/.json and lays out its
    /// tokens. Samples with neither image nor text fail with kind `empty-sample`.
    pub fn cost(&self, shard: &Shard, sample: &SampleEntry) -> Result<SampleCosting, CostFailure> {
        let mut images = Vec::new();
        for member in image_members(sample) {
            let data = member_bytes(shard, member)?;
            let image = self
                .plan_image(&data, member.offset)
                .map_err(|e| CostFailure {
                    kind: crate::pipeline::image_error_kind(&e),
                    message: format!("image .{}: {e}", member.ext),
                })?;
            images.push(image);
        }
        let text_member = |ext: &str| {
            sample
                .members
                .iter()
                .find(|m| m.ext.eq_ignore_ascii_case(ext))
        };
        let txt = text_member("txt")
            .map(|m| member_bytes(shard, m))
            .transpose()?;
        let json = text_member("json")
            .map(|m| member_bytes(shard, m))
            .transpose()?;
        let text = parse_sample_text(txt.as_deref(), json.as_deref()).map_err(|e| CostFailure {
            kind: "text",
            message: e.to_string(),
        })?;
        let context: Vec<u32> = images.iter().map(|i| i.context_tokens).collect();
        let layout = build_sequence(&text, self.tokenizer, &context, &self.ids, &self.format)
            .map_err(|e| CostFailure {
                kind: "text",
                message: e.to_string(),
            })?;
        if layout.is_empty() {
            return Err(CostFailure {
                kind: "empty-sample",
                message: "no image and no text".into(),
            });
        }
        Ok(SampleCosting { images, layout })
    }
}
