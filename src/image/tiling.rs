//! VLM tiling rules as pure functions from (width, height, settings) to a [`TilePlan`]:
//! InternVL dynamic tiling, Qwen2-VL smart resize, and a fixed S×S squash (SigLIP).
//! Each must decide exactly as its reference implementation does.

use crate::error::{Error, Result};

/// InternVL `dynamic_preprocess` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct InternVlSettings {
    /// Side of a square tile in pixels (InternVL: 448).
    pub tile_size: u32,
    /// Fewest tiles in the grid (`min_num`, default 1).
    pub min_tiles: u32,
    /// Most tiles in the grid (`max_num`, default 12).
    pub max_tiles: u32,
    /// Append a tile_size² thumbnail of the whole image when the grid has more than one tile.
    pub thumbnail: bool,
}

impl Default for InternVlSettings {
    fn default() -> Self {
        InternVlSettings {
            tile_size: 448,
            min_tiles: 1,
            max_tiles: 12,
            thumbnail: true,
        }
    }
}

/// Qwen2-VL `smart_resize` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Qwen2VlSettings {
    /// Both sides become multiples of this (patch 14 × merge 2 = 28).
    pub factor: u32,
    /// Lower bound on the resized area.
    pub min_pixels: u64,
    /// Upper bound on the resized area.
    pub max_pixels: u64,
}

impl Default for Qwen2VlSettings {
    fn default() -> Self {
        // Qwen2-VL image processor defaults: min 56*56, max 28*28*1280.
        Qwen2VlSettings {
            factor: 28,
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
        }
    }
}

/// A tiling rule with its settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum TilingRule {
    /// InternVL dynamic tiling.
    InternVl(InternVlSettings),
    /// Qwen2-VL smart resize (one tile: the resized image).
    Qwen2Vl(Qwen2VlSettings),
    /// Squash to size×size (SigLIP's image processor).
    Fixed {
        /// Output side in pixels.
        size: u32,
    },
}

/// What to do with one image: resize it to `resize`, cut a `grid` of `tile`-sized tiles in
/// row-major order, and optionally append a thumbnail (the whole image squashed to a square).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TilePlan {
    /// (width, height) the whole image is resized to.
    pub resize: (u32, u32),
    /// (columns, rows) of tiles cut from the resized image.
    pub grid: (u32, u32),
    /// (width, height) of each grid tile.
    pub tile: (u32, u32),
    /// Side of the extra thumbnail tile, if any.
    pub thumbnail: Option<u32>,
}

impl TilePlan {
    /// Number of output tiles, the thumbnail included.
    pub fn num_tiles(&self) -> u32 {
        self.grid.0 * self.grid.1 + u32::from(self.thumbnail.is_some())
    }
}

/// Decides the plan for an image of `width`×`height` (after EXIF orientation).
pub fn plan(rule: &TilingRule, width: u32, height: u32) -> Result<TilePlan> {
    let _ = (rule, width, height);
    Err(Error::TilingSettings("not implemented yet".into()))
}
