//! The form `pixel_values` takes in packs (`pack --materialize`) and served batches (`serve`),
//! by tiling rule: fixed-size tiles (InternVL, fixed resize) stacked as `[T, 3, S, S]` (float)
//! or `[T, S, S, 3]` (u8), or Qwen2-VL's flattened patches `[P, 3·2·14·14]` with
//! `image_grid_thw` `[I, 3]`, the shapes transformers' Qwen2-VL processor hands the model
//! (every image has its own size, so tiles cannot stack).

use crate::error::{Error, Result};
use crate::image::normalize::Dtype;
use crate::image::qwen2vl_patches::{MERGE, patch_of_factor, patchify_chw, row_len};
use crate::image::tiling::{TilePlan, TilingRule};
use crate::sink::parquet::PlanRow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelForm {
    /// One row per tile: `[3, S, S]` (float) or `[S, S, 3]` (u8).
    Tiles { shape: [usize; 3] },
    /// One row per `patch`² square of a Qwen2-VL image (float only).
    Patches { patch: usize },
}

impl PixelForm {
    /// The form for a plan's rule and the served element type.
    pub fn for_rule(rule: &TilingRule, dtype: Dtype) -> Result<PixelForm> {
        let side = match rule {
            TilingRule::InternVl(s) => s.tile_size as usize,
            TilingRule::Fixed { size } => *size as usize,
            TilingRule::Qwen2Vl(q) => {
                if !dtype.is_float() {
                    return Err(Error::TilingSettings(
                        "qwen2vl pixels are normalized patches: use --dtype f32, f16 or bf16"
                            .into(),
                    ));
                }
                return Ok(PixelForm::Patches {
                    patch: patch_of_factor(q.factor)?,
                });
            }
        };
        Ok(PixelForm::Tiles {
            shape: if dtype.is_float() {
                [3, side, side]
            } else {
                [side, side, 3]
            },
        })
    }

    /// Shape of one row of `pixel_values`.
    pub fn row_shape(&self) -> Vec<usize> {
        match *self {
            PixelForm::Tiles { shape } => shape.to_vec(),
            PixelForm::Patches { patch } => vec![row_len(patch)],
        }
    }

    /// Elements in one row.
    pub fn row_elems(&self) -> usize {
        self.row_shape().iter().product()
    }

    /// Most rows a plan row can become. Patches: each context token of a Qwen2-VL image is a
    /// merged `MERGE`×`MERGE` block of squares, and its placeholder tokens (context plus start
    /// and end) bound the context tokens.
    pub fn rows_bound(&self, row: &PlanRow) -> u64 {
        match self {
            PixelForm::Tiles { .. } => u64::from(row.tiles),
            PixelForm::Patches { .. } => (MERGE * MERGE) as u64 * u64::from(row.image_tokens),
        }
    }

    /// Whether batches carry `image_grid_thw`.
    pub fn has_grid(&self) -> bool {
        matches!(self, PixelForm::Patches { .. })
    }
}

/// One sample's pixels in the served form: its rows of `pixel_values`, and per image
/// (in order) the rows it occupies and, for patches, its `[t, h, w]` grid.
pub struct SamplePixels {
    pub bytes: Vec<u8>,
    pub rows_per_image: Vec<usize>,
    pub grids: Vec<[i64; 3]>,
}

/// Turns the backend's tiles of one sample (its images' tiles, concatenated, as
/// `Backend::tile_batch` lays them out for `plans`) into the served form.
pub fn sample_pixels(
    form: &PixelForm,
    tiles: Vec<u8>,
    plans: &[TilePlan],
    elem: usize,
) -> Result<SamplePixels> {
    match *form {
        PixelForm::Tiles { .. } => Ok(SamplePixels {
            bytes: tiles,
            rows_per_image: plans.iter().map(|p| p.num_tiles() as usize).collect(),
            grids: Vec::new(),
        }),
        PixelForm::Patches { patch } => {
            let mut bytes = Vec::with_capacity(tiles.len());
            let mut rows_per_image = Vec::with_capacity(plans.len());
            let mut grids = Vec::with_capacity(plans.len());
            let mut at = 0;
            for plan in plans {
                let (w, h) = (plan.resize.0 as usize, plan.resize.1 as usize);
                let len = 3 * w * h * elem;
                let chw = tiles.get(at..at + len).ok_or_else(|| {
                    Error::Resize(format!(
                        "the backend returned {} bytes of pixels, short of a {w}x{h} image",
                        tiles.len()
                    ))
                })?;
                at += len;
                let grid = patchify_chw(chw, elem, w, h, patch, &mut bytes)?;
                rows_per_image.push(grid.rows());
                grids.push([grid.t as i64, grid.h as i64, grid.w as i64]);
            }
            Ok(SamplePixels {
                bytes,
                rows_per_image,
                grids,
            })
        }
    }
}
