//! Qwen2-VL's vision input: a smart-resized, normalized image cut into flattened patches, in the
//! order transformers' `Qwen2VLImageProcessor` emits them, so a trainer can hand `pixel_values`
//! and `image_grid_thw` to the model unchanged.
//!
//! The processor treats a still image as a clip of `TEMPORAL` identical frames, cuts it into
//! `patch`×`patch` squares, and orders the squares so that each `MERGE`×`MERGE` block (the
//! squares the model's merger fuses into one token) is contiguous: blocks row by row, and inside
//! a block its squares row by row. One row of the output holds one square with every channel,
//! both frames and all pixels: `[channel][frame][y][x]`, `3·TEMPORAL·patch²` values. Rows are
//! built by copying elements (any element size), so u8, f32, f16 or bf16 CHW input all work;
//! the values are not touched.

use crate::error::{Error, Result};

/// Squares per side of one merged token (Qwen2-VL and Qwen2.5-VL: 2).
pub const MERGE: usize = 2;
/// Frames a still image is repeated into (Qwen2-VL's `temporal_patch_size`).
pub const TEMPORAL: usize = 2;
const CHANNELS: usize = 3;

/// An image's patch grid, as the model's `image_grid_thw` row `[t, h, w]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchGrid {
    pub t: usize,
    pub h: usize,
    pub w: usize,
}

impl PatchGrid {
    /// Rows (squares) the image becomes.
    pub fn rows(&self) -> usize {
        self.t * self.h * self.w
    }
}

/// Values in one output row.
pub fn row_len(patch: usize) -> usize {
    CHANNELS * TEMPORAL * patch * patch
}

/// The patch size of a Qwen2-VL rule with resize factor `factor` (patch × merge: 28 → 14).
pub fn patch_of_factor(factor: u32) -> Result<usize> {
    let factor = factor as usize;
    if factor == 0 || !factor.is_multiple_of(MERGE) {
        return Err(Error::Resize(format!(
            "qwen2vl factor {factor} is not a multiple of the merge size {MERGE}: no patch grid"
        )));
    }
    Ok(factor / MERGE)
}

/// The grid of a `width`×`height` image, which must be a multiple of `patch·MERGE` both ways
/// (smart resize guarantees it).
pub fn patch_grid(width: usize, height: usize, patch: usize) -> Result<PatchGrid> {
    let unit = patch * MERGE;
    if patch == 0
        || width == 0
        || height == 0
        || !width.is_multiple_of(unit)
        || !height.is_multiple_of(unit)
    {
        return Err(Error::Resize(format!(
            "a {width}x{height} image cannot be cut into {patch} px patches merged {MERGE}x{MERGE} \
             (sides must be multiples of {unit})"
        )));
    }
    Ok(PatchGrid {
        t: 1,
        h: height / patch,
        w: width / patch,
    })
}

/// Appends the flattened patches of a CHW image (`3 × height × width` elements of `elem` bytes)
/// to `out`; returns its grid.
pub fn patchify_chw(
    chw: &[u8],
    elem: usize,
    width: usize,
    height: usize,
    patch: usize,
    out: &mut Vec<u8>,
) -> Result<PatchGrid> {
    let grid = patch_grid(width, height, patch)?;
    let plane = width * height * elem;
    if elem == 0 || chw.len() != CHANNELS * plane {
        return Err(Error::Resize(format!(
            "{} bytes is not a 3x{height}x{width} image of {elem}-byte elements",
            chw.len()
        )));
    }
    let line = patch * elem; // one row of one square, in bytes: contiguous in the source
    out.reserve(grid.rows() * row_len(patch) * elem);
    for block_y in 0..grid.h / MERGE {
        for block_x in 0..grid.w / MERGE {
            for in_y in 0..MERGE {
                for in_x in 0..MERGE {
                    let y0 = (block_y * MERGE + in_y) * patch;
                    let x0 = (block_x * MERGE + in_x) * patch;
                    for c in 0..CHANNELS {
                        // Both frames are the same image.
                        for _frame in 0..TEMPORAL {
                            for y in y0..y0 + patch {
                                let at = c * plane + (y * width + x0) * elem;
                                out.extend_from_slice(&chw[at..at + line]);
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(grid)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The processor's reshape/transpose, written as index arithmetic on a 9-d array
    /// `(t, frame, c, bh, mh, py, bw, mw, px)` transposed to `(t, bh, bw, mh, mw, c, frame, py,
    /// px)`: an independent statement of the order `patchify_chw` produces.
    fn reference(chw: &[f32], width: usize, height: usize, patch: usize) -> Vec<f32> {
        let (gh, gw) = (height / patch, width / patch);
        let mut out = Vec::new();
        for bh in 0..gh / MERGE {
            for bw in 0..gw / MERGE {
                for mh in 0..MERGE {
                    for mw in 0..MERGE {
                        for c in 0..3 {
                            for _frame in 0..TEMPORAL {
                                for py in 0..patch {
                                    for px in 0..patch {
                                        let y = (bh * MERGE + mh) * patch + py;
                                        let x = (bw * MERGE + mw) * patch + px;
                                        out.push(chw[(c * height + y) * width + x]);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn rows_follow_the_processors_order_for_any_element_size() {
        let (w, h, patch) = (12usize, 8usize, 2usize);
        let chw: Vec<f32> = (0..3 * w * h).map(|i| i as f32).collect();
        let bytes: Vec<u8> = chw.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = Vec::new();
        let grid = patchify_chw(&bytes, 4, w, h, patch, &mut out).unwrap();
        assert_eq!(grid, PatchGrid { t: 1, h: 4, w: 6 });
        let got: Vec<f32> = out
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(got.len(), grid.rows() * row_len(patch));
        assert_eq!(got, reference(&chw, w, h, patch));
    }

    #[test]
    fn sizes_off_the_grid_are_errors() {
        let mut out = Vec::new();
        assert!(patchify_chw(&[0; 3 * 10 * 8], 1, 10, 8, 2, &mut out).is_err());
        assert!(patchify_chw(&[0; 5], 1, 4, 4, 2, &mut out).is_err());
        assert!(patch_of_factor(27).is_err());
        assert_eq!(patch_of_factor(28).unwrap(), 14);
        assert!(out.is_empty());
    }
}
