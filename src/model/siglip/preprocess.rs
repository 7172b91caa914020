//! Images to SigLIP pixel values, as transformers' `SiglipImageProcessor` makes them: squash
//! (no aspect ratio kept) to the model's size with Pillow's filter, then `v · rescale`, then
//! `(v − mean) / std` per channel, laid out CHW. The resize is `pillow_resample`, Pillow's own
//! fixed-point arithmetic, so that the same decoded pixels give transformers' pixel values
//! exactly (the SIMD resize of the tiles differs by a level here and there, which a base-size
//! model turns into 1e-3 relative differences in the features).

use rayon::prelude::*;

use super::config::ImagePreprocess;
use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::image::pillow_resample::resize_like_pillow;
use crate::image::resize::ResizeFilter;

/// Pixel values of `images`, back to back: `images.len() × 3 × height × width` floats.
pub fn pixel_values(images: &[&RgbImage], p: &ImagePreprocess) -> Result<Vec<f32>> {
    let per = 3 * p.width * p.height;
    let mut out = vec![0.0f32; images.len() * per];
    if per == 0 {
        return Ok(out);
    }
    out.par_chunks_mut(per)
        .zip(images.par_iter())
        .try_for_each(|(dst, img)| write_pixel_values(img, p, dst))?;
    Ok(out)
}

/// Writes one image's pixel values into `dst` (`3 × height × width` floats).
pub fn write_pixel_values(img: &RgbImage, p: &ImagePreprocess, dst: &mut [f32]) -> Result<()> {
    let plane = p.width * p.height;
    if dst.len() != 3 * plane {
        return Err(Error::Compute(format!(
            "pixel buffer of {} for a {}x{} image",
            dst.len(),
            p.width,
            p.height
        )));
    }
    let filter = if p.resample == 2 {
        ResizeFilter::Bilinear
    } else {
        ResizeFilter::Bicubic
    };
    let resized;
    let src = if (img.width as usize, img.height as usize) == (p.width, p.height) {
        img
    } else {
        resized = resize_like_pillow(img, p.width as u32, p.height as u32, filter)?;
        &resized
    };
    // One lookup per (channel, level): the same arithmetic transformers does, in the same
    // order (rescale, then normalize), done 768 times instead of once per pixel.
    let mut table = [[0.0f32; 256]; 3];
    for (c, row) in table.iter_mut().enumerate() {
        for (v, out) in row.iter_mut().enumerate() {
            let mut x = match p.rescale {
                Some(s) => (v as f64 * f64::from(s)) as f32,
                None => v as f32,
            };
            if let Some((mean, std)) = p.normalize {
                x = (x - mean[c]) / std[c];
            }
            *out = x;
        }
    }
    for (i, px) in src.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            dst[c * plane + i] = table[c][px[c] as usize];
        }
    }
    Ok(())
}
