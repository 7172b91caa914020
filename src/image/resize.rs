//! CPU resize of RGB8 images with Pillow-compatible filters.
//!
//! [`resize_region_into`] runs this crate's own kernels ([`crate::image::resample_simd`]),
//! which reproduce fast_image_resize 6.1's integer arithmetic byte for byte;
//! [`resize_region_into_fir`] is the same resize through fast_image_resize itself, kept as the
//! reference the tests and benches compare with.
//!
//! Pillow's BICUBIC is a Catmull-Rom cubic (a = -0.5) whose support widens with the downscale
//! factor (antialiasing); fast_image_resize's `Convolution(CatmullRom)` computes the same kernel
//! the same way, and likewise for BILINEAR. A region of the output can be resized on its own: the
//! kernel positions are those of the whole resize, so a tile resized alone equals the same tile
//! cut from the whole resized image, and can be written straight at its final place.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::image::fir_fixed::crop_overreads;
use crate::image::resample_simd::Resampler;

/// Resampling filter, named after Pillow's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeFilter {
    /// Pillow `Image.BICUBIC` (Catmull-Rom, antialiased on downscale). SigLIP, InternVL, Qwen2-VL.
    #[default]
    Bicubic,
    /// Pillow `Image.BILINEAR` (triangle, antialiased on downscale).
    Bilinear,
}

impl ResizeFilter {
    fn options(self) -> ResizeOptions {
        let filter = match self {
            ResizeFilter::Bicubic => FilterType::CatmullRom,
            ResizeFilter::Bilinear => FilterType::Bilinear,
        };
        ResizeOptions::new().resize_alg(ResizeAlg::Convolution(filter))
    }
}

/// A rectangle of the *resized* image, in output pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// Resizes `src` as if to `full` = (width, height), computing only `region` of that result, into
/// `dst` (packed RGB8 rows, `3 * region.width * region.height` bytes).
///
/// `resampler` carries scratch buffers between calls; keep one per thread. The bytes equal
/// [`resize_region_into_fir`]'s.
pub fn resize_region_into(
    resampler: &mut Resampler,
    src: &RgbImage,
    full: (u32, u32),
    region: Region,
    filter: ResizeFilter,
    dst: &mut [u8],
) -> Result<()> {
    resampler.resize_region(src, full, region, filter, dst)
}

/// The errors both resize paths give before any work: an empty source or output, or a region
/// not inside the output.
pub(crate) fn check_region(src: &RgbImage, full: (u32, u32), region: Region) -> Result<()> {
    let (full_w, full_h) = full;
    if src.width == 0 || src.height == 0 || full_w == 0 || full_h == 0 {
        return Err(Error::Resize(format!(
            "cannot resize {}x{} to {full_w}x{full_h}",
            src.width, src.height
        )));
    }
    if region.width == 0
        || region.height == 0
        || u64::from(region.x) + u64::from(region.width) > u64::from(full_w)
        || u64::from(region.y) + u64::from(region.height) > u64::from(full_h)
    {
        return Err(Error::Resize(format!(
            "region {region:?} lies outside the {full_w}x{full_h} output"
        )));
    }
    Ok(())
}

/// [`resize_region_into`] through fast_image_resize (the reference; the CPU backend's resize
/// before this crate had its own kernels).
///
/// `resizer` carries scratch buffers between calls; keep one per thread.
pub fn resize_region_into_fir(
    resizer: &mut Resizer,
    src: &RgbImage,
    full: (u32, u32),
    region: Region,
    filter: ResizeFilter,
    dst: &mut [u8],
) -> Result<()> {
    check_region(src, full, region)?;
    if let Some(band) = overread_band(src.width, src.height, full, region, filter) {
        // fast_image_resize would read one pixel past its intermediate rows for this crop
        // (see `fir_fixed::crop_overreads`): resize the full-width band of rows instead, whose
        // last window ends at the image's edge, and keep the region's columns.
        let row = 3 * band.width as usize;
        let mut scratch = vec![0u8; row * band.height as usize];
        resize_region_into_fir(resizer, src, full, band, filter, &mut scratch)?;
        let (x0, w) = (3 * region.x as usize, 3 * region.width as usize);
        for (out, band_row) in dst.chunks_exact_mut(w).zip(scratch.chunks_exact(row)) {
            out.copy_from_slice(&band_row[x0..x0 + w]);
        }
        return Ok(());
    }
    let src_view = ImageRef::new(src.width, src.height, &src.data, PixelType::U8x3)
        .map_err(|e| Error::Resize(format!("source buffer: {e}")))?;
    let mut dst_view = Image::from_slice_u8(region.width, region.height, dst, PixelType::U8x3)
        .map_err(|e| Error::Resize(format!("destination buffer: {e}")))?;

    // The region's preimage in source coordinates: same scale as the whole resize, so every
    // output pixel gets the kernel it would get in the full-size result.
    let mut options = filter.options();
    if !region.is_whole(full) {
        let ((left, width), (top, height)) = source_crop(src.width, src.height, full, region);
        options = options.crop(left, top, width, height);
    }
    resizer
        .resize(&src_view, &mut dst_view, &options)
        .map_err(|e| Error::Resize(e.to_string()))
}

impl Region {
    /// Whether the region is the whole `full` = (width, height) output.
    fn is_whole(&self, full: (u32, u32)) -> bool {
        (self.x, self.y, self.width, self.height) == (0, 0, full.0, full.1)
    }
}

/// The crop box `((left, width), (top, height))` of a `src_w`×`src_h` source that
/// [`resize_region_into`] resamples `region` of the `full` resize from: the whole source for
/// the whole output, else the region's preimage. Exposed so that other backends (the wgpu tile
/// shader's host side) derive the very same filter positions.
pub(crate) fn source_crop(
    src_w: u32,
    src_h: u32,
    full: (u32, u32),
    region: Region,
) -> ((f64, f64), (f64, f64)) {
    if region.is_whole(full) {
        return ((0.0, src_w as f64), (0.0, src_h as f64));
    }
    let scale_x = src_w as f64 / full.0 as f64;
    let scale_y = src_h as f64 / full.1 as f64;
    (
        preimage(region.x, region.width, scale_x, src_w),
        preimage(region.y, region.height, scale_y, src_h),
    )
}

/// The full-width band of output rows holding `region`: what a tile whose own crop would make
/// fast_image_resize overread is computed from (the CPU here, the wgpu tables alike).
/// `None` for every other region (and if the band itself would overread, which its edge-bound
/// last window rules out; then the region is resized as it is).
pub(crate) fn overread_band(
    src_w: u32,
    src_h: u32,
    full: (u32, u32),
    region: Region,
    filter: ResizeFilter,
) -> Option<Region> {
    if !crop_overreads(src_w, src_h, full, region, filter) {
        return None;
    }
    let band = Region {
        x: 0,
        y: region.y,
        width: full.0,
        height: region.height,
    };
    (band != region && !crop_overreads(src_w, src_h, full, band, filter)).then_some(band)
}

/// The source interval `(start, length)` that output pixels `[start, start + len)` come from.
/// Float rounding may put the end an ulp past the source edge, which fast_image_resize rejects;
/// the length is nudged down until the interval fits (a change far below a pixel).
fn preimage(start: u32, len: u32, scale: f64, src_len: u32) -> (f64, f64) {
    let begin = start as f64 * scale;
    let mut length = ((start + len) as f64 * scale).min(src_len as f64) - begin;
    while begin + length > src_len as f64 {
        length = length.next_down();
    }
    (begin, length)
}

/// Resizes a whole image to `width`×`height`.
pub fn resize(src: &RgbImage, width: u32, height: u32, filter: ResizeFilter) -> Result<RgbImage> {
    let mut data = vec![0u8; 3 * width as usize * height as usize];
    let region = Region {
        x: 0,
        y: 0,
        width,
        height,
    };
    resize_region_into(
        &mut Resampler::new(),
        src,
        (width, height),
        region,
        filter,
        &mut data,
    )?;
    Ok(RgbImage {
        width,
        height,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 50×37 → 150×111 cut in 37 px tiles has tiles whose own crop would make fast_image_resize
    /// read past its intermediate row (in this test profile, with debug assertions, that read
    /// aborts). Those tiles come from their full-width band: equal to the band's columns, and
    /// every other tile is unchanged.
    #[test]
    fn tiles_whose_crop_would_overread_come_from_their_band() {
        let src = gradient(50, 37);
        let full = (150, 111);
        let mut resizer = Resizer::new();
        let mut rerouted = 0;
        for y in (0..111).step_by(37) {
            for x in (0..150 - 37).step_by(37) {
                let region = Region {
                    x,
                    y,
                    width: 37,
                    height: 37,
                };
                let mut tile = vec![0u8; 3 * 37 * 37];
                resize_region_into_fir(
                    &mut resizer,
                    &src,
                    full,
                    region,
                    ResizeFilter::Bicubic,
                    &mut tile,
                )
                .unwrap();
                let Some(band) = overread_band(50, 37, full, region, ResizeFilter::Bicubic) else {
                    continue;
                };
                rerouted += 1;
                let mut rows = vec![0u8; 3 * 150 * 37];
                resize_region_into_fir(
                    &mut resizer,
                    &src,
                    full,
                    band,
                    ResizeFilter::Bicubic,
                    &mut rows,
                )
                .unwrap();
                for (r, line) in tile.chunks_exact(3 * 37).enumerate() {
                    let at = 3 * (r * 150 + x as usize);
                    assert_eq!(line, &rows[at..at + 3 * 37], "{region:?} row {r}");
                }
            }
        }
        assert!(rerouted >= 1, "no tile of this resize needed its band");
    }

    fn gradient(width: u32, height: u32) -> RgbImage {
        let mut data = Vec::with_capacity(3 * (width * height) as usize);
        for y in 0..height {
            for x in 0..width {
                data.extend_from_slice(&[
                    (x * 255 / width.max(2).saturating_sub(1)) as u8,
                    (y * 255 / height.max(2).saturating_sub(1)) as u8,
                    ((x * 7 + y * 13) % 256) as u8,
                ]);
            }
        }
        RgbImage {
            width,
            height,
            data,
        }
    }

    #[test]
    fn tile_resized_alone_equals_tile_cut_from_whole_resize() {
        let src = gradient(997, 613);
        for filter in [ResizeFilter::Bicubic, ResizeFilter::Bilinear] {
            // A 3x2 grid of 112-pixel tiles: a downscale in x and y.
            let whole = resize(&src, 336, 224, filter).unwrap();
            let mut resizer = Resampler::new();
            for row in 0..2 {
                for col in 0..3 {
                    let region = Region {
                        x: col * 112,
                        y: row * 112,
                        width: 112,
                        height: 112,
                    };
                    let mut tile = vec![0u8; 3 * 112 * 112];
                    resize_region_into(&mut resizer, &src, (336, 224), region, filter, &mut tile)
                        .unwrap();
                    let mut max_diff = 0u8;
                    for y in 0..112 {
                        for x in 0..112 {
                            let a = whole.pixel(col * 112 + x, row * 112 + y);
                            let i = 3 * (y * 112 + x) as usize;
                            for c in 0..3 {
                                max_diff = max_diff.max(a[c].abs_diff(tile[i + c]));
                            }
                        }
                    }
                    // Coefficients come from the same formula; float rounding of the crop
                    // origin may move a value by one level at most.
                    assert!(
                        max_diff <= 1,
                        "{filter:?} tile ({col},{row}) differs by {max_diff}"
                    );
                }
            }
        }
    }

    #[test]
    fn regions_at_the_far_edge_fit_despite_rounding() {
        // 3000 / 1344 is not exact in binary: the last row's preimage used to end an ulp past
        // the source edge, which fast_image_resize refuses.
        let src = gradient(3000, 2000);
        let mut resizer = Resampler::new();
        for (full, tile) in [
            ((1344u32, 896u32), 448u32),
            ((1792, 1344), 448),
            ((999, 333), 111),
        ] {
            let mut dst = vec![0u8; 3 * (tile * tile) as usize];
            for y in (0..full.1).step_by(tile as usize) {
                for x in (0..full.0).step_by(tile as usize) {
                    let region = Region {
                        x,
                        y,
                        width: tile,
                        height: tile,
                    };
                    resize_region_into(
                        &mut resizer,
                        &src,
                        full,
                        region,
                        ResizeFilter::Bicubic,
                        &mut dst,
                    )
                    .unwrap();
                }
            }
        }
    }

    #[test]
    fn identity_resize_keeps_pixels() {
        let src = gradient(64, 48);
        let out = resize(&src, 64, 48, ResizeFilter::Bicubic).unwrap();
        assert_eq!(out.data, src.data);
    }

    #[test]
    fn bad_regions_are_errors() {
        let src = gradient(10, 10);
        let mut dst = vec![0u8; 3 * 4 * 4];
        let region = Region {
            x: 8,
            y: 0,
            width: 4,
            height: 4,
        };
        let err = resize_region_into(
            &mut Resampler::new(),
            &src,
            (10, 10),
            region,
            ResizeFilter::Bicubic,
            &mut dst,
        );
        assert!(matches!(err, Err(Error::Resize(_))));
        assert!(resize(&src, 0, 5, ResizeFilter::Bicubic).is_err());
    }
}
