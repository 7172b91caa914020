//! Pillow's 8-bit resampling, bit for bit: `Image.resize(size, BICUBIC | BILINEAR | LANCZOS)` on
//! RGB and on single-channel ("L") images.
//!
//! `image::resize` (fast_image_resize, SIMD) computes the same kernel but rounds differently:
//! up to a few levels on some pixels, 0.08 levels on average. That is invisible in tiles, but a
//! random-weight SigLIP-base turns it into 1e-3 relative differences in the embeddings. The
//! SigLIP preprocessing therefore resizes with this module, which follows Pillow's algorithm
//! (libImaging/Resample.c, read for its arithmetic): per output pixel, weights from the filter
//! over a support widened by the downscale factor, normalized in f64, then rounded to 22-bit
//! fixed point; two passes through an 8-bit intermediate, each rounding by adding half and
//! shifting, clamped to 0..=255: horizontal (over the rows needed) then vertical, or vertical
//! then horizontal when the height shrinks much more than the width (Pillow 13's rule).
//! Images are small (a 224² output) next to the model that follows, so plain integer loops do.

use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::image::resize::ResizeFilter;

/// Fixed-point fraction bits of the weights: 32 − 8 (pixel) − 2 (headroom for negative lobes).
pub(crate) const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output position: the first source index, and that many i32 weights (row-major,
/// `ksize` per output, unused ones 0). The wgpu pHash shader's host side uploads these.
pub(crate) struct Coefficients {
    pub(crate) ksize: usize,
    pub(crate) start: Vec<usize>,
    pub(crate) count: Vec<usize>,
    pub(crate) weights: Vec<i32>,
}

/// The resampling filters this module reproduces: the crate's [`ResizeFilter`]s plus Pillow's
/// LANCZOS, which only the perceptual hash uses (ImageHash resizes with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PillowFilter {
    /// Pillow `Image.BICUBIC`.
    Bicubic,
    /// Pillow `Image.BILINEAR`.
    Bilinear,
    /// Pillow `Image.LANCZOS`: a windowed sinc with a = 3.
    Lanczos,
}

impl From<ResizeFilter> for PillowFilter {
    fn from(f: ResizeFilter) -> Self {
        match f {
            ResizeFilter::Bicubic => PillowFilter::Bicubic,
            ResizeFilter::Bilinear => PillowFilter::Bilinear,
        }
    }
}

/// Pillow's `sinc_filter`.
fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn filter_value(filter: PillowFilter, x: f64) -> f64 {
    // Pillow's lanczos_filter takes the signed offset and its window is half-open,
    // [-3, 3); the other two fold the sign first.
    if filter == PillowFilter::Lanczos {
        return if (-3.0..3.0).contains(&x) {
            sinc(x) * sinc(x / 3.0)
        } else {
            0.0
        };
    }
    let x = x.abs();
    match filter {
        PillowFilter::Lanczos => unreachable!("handled above"),
        // Keys cubic with a = −0.5 (Catmull-Rom), as Pillow's bicubic_filter
        PillowFilter::Bicubic => keys_cubic(x),
        PillowFilter::Bilinear => {
            if x < 1.0 {
                1.0 - x
            } else {
                0.0
            }
        }
    }
}

/// The Keys cubic with a = −0.5 (Catmull-Rom) at distance `x ≥ 0`, in the operation order
/// Pillow and fast_image_resize both use (so the f64 weights agree to the last bit).
pub(crate) fn keys_cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn support(filter: PillowFilter) -> f64 {
    match filter {
        PillowFilter::Bicubic => 2.0,
        PillowFilter::Bilinear => 1.0,
        PillowFilter::Lanczos => 3.0,
    }
}

/// Pillow's `precompute_coeffs` for a whole-image resize `in_size → out_size`, weights
/// normalized to sum 1 in f64: the one source of the resampling weights, which the CPU turns
/// into Pillow's fixed point ([`coefficients`]) and the CUDA tile kernels into f32.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PillowWeights {
    /// Weight slots per output position.
    pub ksize: usize,
    /// First source index of each output position.
    pub start: Vec<usize>,
    /// Taps of each output position (`start + count <= in_size`).
    pub count: Vec<usize>,
    /// `ksize` weights per output position, row-major, unused slots 0.
    pub weights: Vec<f64>,
}

// Only the CUDA tile kernels call it; the CPU path goes through `weights_for` directly.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn pillow_weights(
    in_size: usize,
    out_size: usize,
    filter: ResizeFilter,
) -> PillowWeights {
    weights_for(in_size, out_size, filter.into())
}

/// [`pillow_weights`] for any [`PillowFilter`].
fn weights_for(in_size: usize, out_size: usize, filter: PillowFilter) -> PillowWeights {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = support(filter) * filter_scale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut start = Vec::with_capacity(out_size);
    let mut count = Vec::with_capacity(out_size);
    let mut weights = vec![0.0f64; out_size * ksize];
    for (xx, row) in weights.chunks_exact_mut(ksize).enumerate() {
        let center = (xx as f64 + 0.5) * scale;
        // C's (int) cast truncates toward zero; the clamp to 0 follows, as in Pillow
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin).min(ksize);
        let mut total = 0.0;
        for (x, wx) in row.iter_mut().enumerate().take(n) {
            let offset = x as f64 + xmin as f64 - center + 0.5;
            // Pillow multiplies by the reciprocal (`ss = 1.0 / filterscale`); the bicubic and
            // bilinear weights here divide, which their parity tests pin down, so only the
            // new filter follows Pillow's form (a last-bit difference either way).
            let arg = if filter == PillowFilter::Lanczos {
                offset * (1.0 / filter_scale)
            } else {
                offset / filter_scale
            };
            *wx = filter_value(filter, arg);
            total += *wx;
        }
        if total != 0.0 {
            row[..n].iter_mut().for_each(|w| *w /= total);
        }
        start.push(xmin);
        count.push(n);
    }
    PillowWeights {
        ksize,
        start,
        count,
        weights,
    }
}

/// [`pillow_weights`] in Pillow's fixed point (`normalize_coeffs_8bpc`).
pub(crate) fn coefficients(in_size: usize, out_size: usize, filter: PillowFilter) -> Coefficients {
    let PillowWeights {
        ksize,
        start,
        count,
        weights,
    } = weights_for(in_size, out_size, filter);
    let weights = weights
        .iter()
        .map(|&v| {
            let fixed = v * f64::from(1u32 << PRECISION_BITS);
            // round half away from zero, then truncate: Pillow's (int)(±0.5 + v·2^22)
            if v < 0.0 {
                (fixed - 0.5) as i32
            } else {
                (fixed + 0.5) as i32
            }
        })
        .collect();
    Coefficients {
        ksize,
        start,
        count,
        weights,
    }
}

/// Pillow's `clip8`: drop the fraction (the half was added up front) and clamp. Sums are i32
/// as in Pillow: 255 × 2^22 × (Σ|w| ≤ 1.3 for bicubic) stays below 2^31, the reason for the two
/// headroom bits.
#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes `src` to `width`×`height` exactly as Pillow does for an RGB image.
pub fn resize_like_pillow(
    src: &RgbImage,
    width: u32,
    height: u32,
    filter: ResizeFilter,
) -> Result<RgbImage> {
    resize_rgb_like_pillow(src, width, height, filter.into())
}

/// [`resize_like_pillow`] with any [`PillowFilter`], LANCZOS included.
pub fn resize_rgb_like_pillow(
    src: &RgbImage,
    width: u32,
    height: u32,
    filter: PillowFilter,
) -> Result<RgbImage> {
    let data = resize_channels::<3>(&src.data, src.width, src.height, width, height, filter)?;
    Ok(RgbImage {
        width,
        height,
        data,
    })
}

/// Resizes a single-channel 8-bit image (`width * height` bytes, row-major) exactly as Pillow
/// does for mode "L"; returns `out_width * out_height` bytes.
pub fn resize_gray_like_pillow(
    src: &[u8],
    width: u32,
    height: u32,
    out_width: u32,
    out_height: u32,
    filter: PillowFilter,
) -> Result<Vec<u8>> {
    resize_channels::<1>(src, width, height, out_width, out_height, filter)
}

/// The resampler for `C` interleaved 8-bit channels.
fn resize_channels<const C: usize>(
    src: &[u8],
    in_w: u32,
    in_h: u32,
    width: u32,
    height: u32,
    filter: PillowFilter,
) -> Result<Vec<u8>> {
    let (in_w, in_h) = (in_w as usize, in_h as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    if in_w == 0 || in_h == 0 || out_w == 0 || out_h == 0 || src.len() != C * in_w * in_h {
        return Err(Error::Resize(format!(
            "cannot resize a {in_w}x{in_h} image ({} bytes, {C} channel(s)) to {out_w}x{out_h}",
            src.len()
        )));
    }
    if (in_w, in_h) == (out_w, out_h) {
        return Ok(src.to_vec());
    }
    let vert = coefficients(in_h, out_h, filter);
    if vertical_pass_first(in_w, in_h, out_w, out_h) {
        // Pillow 13: when the height shrinks by more than twice as many pixels as the width,
        // the vertical pass runs first (over every column) so the horizontal pass has fewer
        // rows to do. The two 8-bit roundings then happen in the other order, which moves
        // some pixels by one level, so the order is part of being bit-exact.
        let tmp = vertical_pass::<C>(src, in_w, &vert, 0);
        if in_w == out_w {
            return Ok(tmp);
        }
        let horiz = coefficients(in_w, out_w, filter);
        return Ok(horizontal_pass::<C>(&tmp, in_w, 0..out_h, &horiz));
    }
    // Horizontal first, only over the source rows the vertical pass reads.
    let first_row = vert.start[0];
    let last_row = vert.start[out_h - 1] + vert.count[out_h - 1];
    let tmp;
    let (rows_src, row_offset): (&[u8], usize) = if in_w != out_w {
        let horiz = coefficients(in_w, out_w, filter);
        tmp = horizontal_pass::<C>(src, in_w, first_row..last_row, &horiz);
        (&tmp, first_row)
    } else {
        (src, 0)
    };
    if in_h == out_h {
        return Ok(rows_src.to_vec());
    }
    Ok(vertical_pass::<C>(rows_src, out_w, &vert, row_offset))
}

/// Pillow 13's pass-order rule (`ImagingResampleInner`): vertical first when the height is
/// reduced, and by more than twice as many pixels as the width is.
pub(crate) fn vertical_pass_first(in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> bool {
    let shrink_h = in_h as i64 - out_h as i64;
    let shrink_w = in_w as i64 - out_w as i64;
    shrink_h > 0 && shrink_h > 2 * shrink_w
}

/// Resamples each of the source rows in `rows` (a `width`-pixel, `C`-channel image) to
/// `horiz`'s output width; returns those rows only.
fn horizontal_pass<const C: usize>(
    src: &[u8],
    width: usize,
    rows: std::ops::Range<usize>,
    horiz: &Coefficients,
) -> Vec<u8> {
    let half = 1i32 << (PRECISION_BITS - 1);
    let out_w = horiz.start.len();
    let mut out = vec![0u8; C * out_w * rows.len()];
    for (out_row, y) in out.chunks_exact_mut(C * out_w).zip(rows) {
        let src_row = &src[C * width * y..C * width * (y + 1)];
        for (xx, px) in out_row.chunks_exact_mut(C).enumerate() {
            let k = &horiz.weights[xx * horiz.ksize..][..horiz.count[xx]];
            let base = C * horiz.start[xx];
            if C == 1 {
                // One channel (the pHash's gray image, ~60 taps per output on a web-size
                // image): a plain dot product over contiguous bytes, which vectorizes. Integer
                // sums, so the result is the same as the general loop's.
                let taps = &src_row[base..base + k.len()];
                let sum: i32 = taps.iter().zip(k).map(|(&p, &w)| i32::from(p) * w).sum();
                px[0] = clip8(half + sum);
                continue;
            }
            let mut acc = [half; C];
            for (i, &w) in k.iter().enumerate() {
                let p = &src_row[base + C * i..base + C * i + C];
                for c in 0..C {
                    acc[c] += i32::from(p[c]) * w;
                }
            }
            for c in 0..C {
                px[c] = clip8(acc[c]);
            }
        }
    }
    out
}

/// Resamples the columns of `rows_src` (rows of `width` `C`-channel pixels; its row 0 is source
/// row `row_offset`) to `vert`'s output height.
fn vertical_pass<const C: usize>(
    rows_src: &[u8],
    width: usize,
    vert: &Coefficients,
    row_offset: usize,
) -> Vec<u8> {
    let half = 1i32 << (PRECISION_BITS - 1);
    let out_h = vert.start.len();
    let stride = C * width;
    let mut data = vec![0u8; stride * out_h];
    // Row by row, accumulating whole source rows: the same integer sums as Pillow's per-pixel
    // loop (exact, so the order does not matter), but contiguous and vectorizable.
    let mut acc = vec![0i32; stride];
    for (yy, out_row) in data.chunks_exact_mut(stride).enumerate() {
        let k = &vert.weights[yy * vert.ksize..][..vert.count[yy]];
        let y0 = vert.start[yy] - row_offset;
        acc.fill(half);
        for (i, &w) in k.iter().enumerate() {
            let row = &rows_src[(y0 + i) * stride..(y0 + i + 1) * stride];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += i32::from(p) * w;
            }
        }
        for (out, &a) in out_row.iter_mut().zip(&acc) {
            *out = clip8(a);
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        let data = (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                [
                    (x * 7 % 256) as u8,
                    (y * 13 % 256) as u8,
                    ((x + y) * 3 % 256) as u8,
                ]
            })
            .collect();
        RgbImage {
            width: w,
            height: h,
            data,
        }
    }

    #[test]
    fn weights_of_each_output_sum_to_one_in_fixed_point() {
        for (i, o) in [(100, 30), (30, 100), (7, 7), (1000, 224), (3, 1)] {
            for f in [
                PillowFilter::Bicubic,
                PillowFilter::Bilinear,
                PillowFilter::Lanczos,
            ] {
                let c = coefficients(i, o, f);
                for xx in 0..o {
                    let s: i64 = c.weights[xx * c.ksize..][..c.count[xx]]
                        .iter()
                        .map(|&w| i64::from(w))
                        .sum();
                    // each weight is rounded on its own: a few units of 2^-22 off at most
                    assert!(
                        (s - (1 << PRECISION_BITS)).abs() <= c.ksize as i64,
                        "{i}->{o}"
                    );
                    assert!(c.start[xx] + c.count[xx] <= i);
                }
            }
        }
    }

    #[test]
    fn a_flat_image_stays_flat_and_sizes_are_right() {
        let flat = RgbImage {
            width: 37,
            height: 23,
            data: [10u8, 200, 99].repeat(37 * 23),
        };
        for (w, h) in [(224, 224), (5, 9), (37, 11), (80, 23)] {
            let r = resize_like_pillow(&flat, w, h, ResizeFilter::Bicubic).unwrap();
            assert_eq!(
                (r.width, r.height, r.data.len()),
                (w, h, 3 * (w * h) as usize)
            );
            assert!(r.data.chunks(3).all(|p| p == [10, 200, 99]), "{w}x{h}");
        }
    }

    #[test]
    fn same_size_is_a_copy_and_empty_is_an_error() {
        let g = gradient(9, 4);
        assert_eq!(
            resize_like_pillow(&g, 9, 4, ResizeFilter::Bicubic).unwrap(),
            g
        );
        assert!(resize_like_pillow(&g, 0, 4, ResizeFilter::Bicubic).is_err());
    }
}
