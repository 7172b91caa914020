//! The integer filter coefficients the CPU backend's resize uses, computed on the host so the
//! wgpu tile shader can do the same integer arithmetic and produce the same u8 levels, and so
//! the CPU path can tell when fast_image_resize would read past its intermediate image
//! ([`crop_overreads`]) and avoid that crop.
//!
//! The CPU backend used to resize through fast_image_resize 6.1 (`resize::resize_region_into_fir`,
//! kept as the reference) and now runs this same arithmetic in its own kernels
//! (`image::resample_simd`, weights from [`fixed_axis_into`]). fast_image_resize's u8
//! convolution works like this (read from its `convolution/mod.rs`, `optimisations.rs` and
//! `resizer.rs`; reimplemented here, not copied):
//!
//! - Per axis, from the crop box `[in0, in1)` of the source and the output length: scale
//!   `(in1 − in0) / out`, support widened by `max(scale, 1)`, and for output `i` the source
//!   window around `in0 + (i + 0.5)·scale`, weights `filter((x − center) / filter_scale)`
//!   (as a product with the reciprocal), zero weights trimmed from both ends, normalized by
//!   their f64 sum.
//! - One fixed-point precision for the whole axis: the largest `p < 22` such that the largest
//!   weight times `2^(p+1)` still rounds below `2^15`; every weight becomes
//!   `round(w · 2^p)` as an i16.
//! - Each pass sums `2^(p−1) + Σ k·pixel` in i32, shifts right by `p` (arithmetic) and clamps
//!   to 0..=255. For u8 images the vertical pass runs first, into a u8 intermediate; a pass
//!   whose axis needs no resampling is skipped, which equals running it with the single weight
//!   `2^p` (exact), so the shader always runs both.
//!
//! The SIMD variants (SSE4.1, AVX2, NEON) compute the same exact integer sums, so one host
//! model covers all of them.

use crate::image::pillow_resample::keys_cubic;
use crate::image::resize::{Region, ResizeFilter, source_crop};

/// fast_image_resize's precision search bound: 32 − 8 (a u8 pixel) − 2 (overflow headroom).
const PRECISION_BITS: u8 = 32 - 8 - 2;
/// Weights are stored as i16.
const MAX_COEFFS_PRECISION: u8 = 16 - 1;

/// One axis of a resize in fixed point.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FixedAxis {
    /// Fraction bits of the weights (the shift of each pass).
    pub precision: u32,
    /// First source index of each output position.
    pub start: Vec<u32>,
    /// Number of taps of each output position.
    pub count: Vec<u32>,
    /// Offset of each output position's first weight in `weights`.
    pub offset: Vec<u32>,
    /// The weights, `count[i]` of them for output `i`, back to back (values of an i16).
    pub weights: Vec<i32>,
}

/// The filter as fast_image_resize defines it (`convolution/filters.rs`): support and kernel.
fn support(filter: ResizeFilter) -> f64 {
    match filter {
        ResizeFilter::Bicubic => 2.0,
        ResizeFilter::Bilinear => 1.0,
    }
}

fn kernel(filter: ResizeFilter, x: f64) -> f64 {
    let x = x.abs();
    match filter {
        // Catmull-Rom, in the same operation order as the CPU's.
        ResizeFilter::Bicubic => keys_cubic(x),
        ResizeFilter::Bilinear => {
            if x < 1.0 {
                1.0 - x
            } else {
                0.0
            }
        }
    }
}

/// Where the CPU's windows of one axis lie: for output `i`, the untrimmed source range and the
/// kernel argument of each source pixel. Shared by the weights and by [`crop_overreads`], so
/// the two cannot disagree about a window.
struct AxisGeometry {
    in_size: u32,
    in0: f64,
    scale: f64,
    radius: f64,
    recip: f64,
    filter: ResizeFilter,
}

impl AxisGeometry {
    fn new(in_size: u32, in0: f64, in1: f64, out_size: u32, filter: ResizeFilter) -> Self {
        let scale = (in1 - in0) / f64::from(out_size);
        let filter_scale = scale.max(1.0);
        AxisGeometry {
            in_size,
            in0,
            scale,
            radius: support(filter) * filter_scale,
            // Multiplying by the reciprocal, not dividing, is what the CPU does; the two can
            // differ in the last bit, and a last bit can move a rounded weight.
            recip: 1.0 / filter_scale,
            filter,
        }
    }

    /// Output `i`'s source range `lo..hi` (before zero weights are trimmed) and its center
    /// in pixel-index coordinates.
    fn window(&self, i: u32) -> (u32, u32, f64) {
        let in_center = self.in0 + (f64::from(i) + 0.5) * self.scale;
        let lo = (in_center - self.radius).floor().max(0.0) as u32;
        let hi = (in_center + self.radius)
            .ceil()
            .min(f64::from(self.in_size)) as u32;
        // Pixel x's center is x + 0.5, so its distance is x − (in_center − 0.5).
        (lo, hi, in_center - 0.5)
    }

    /// The unnormalized weight of source pixel `x` for a window centered at `center`.
    fn weight(&self, x: u32, center: f64) -> f64 {
        kernel(self.filter, (f64::from(x) - center) * self.recip)
    }

    /// End of output `i`'s window once trailing zero weights are trimmed (its start if every
    /// weight is zero), without computing the weights.
    fn trimmed_end(&self, i: u32) -> u32 {
        let (lo, hi, center) = self.window(i);
        (lo..hi)
            .rev()
            .find(|&x| self.weight(x, center) != 0.0)
            .map_or(hi, |x| x + 1)
    }
}

/// The f64 weights of one axis, flat: output `i`'s first source index in `start[i]`, its
/// weights in `float[offset[i]..offset[i] + count[i]]` (the layout of [`FixedAxis`], so the
/// quantization can fill `axis.weights` in place). Buffers are reused: no allocation once
/// they are large enough.
fn float_weights_into(
    axis: &mut FixedAxis,
    float: &mut Vec<f64>,
    geometry: &AxisGeometry,
    out_size: u32,
) {
    axis.start.clear();
    axis.count.clear();
    axis.offset.clear();
    float.clear();
    for i in 0..out_size {
        let (lo, hi, center) = geometry.window(i);
        let mut first = lo;
        let begin = float.len();
        for x in lo..hi {
            let v = geometry.weight(x, center);
            // Leading zero weights move the window start instead of being stored.
            if x == first && v == 0.0 {
                first += 1;
            } else {
                float.push(v);
            }
        }
        // The sum includes trailing zeros (adding 0 changes nothing), then they go.
        let total: f64 = float[begin..].iter().sum();
        while float.len() > begin && float.last() == Some(&0.0) {
            float.pop();
        }
        if total != 0.0 {
            float[begin..].iter_mut().for_each(|v| *v /= total);
        }
        axis.start.push(first);
        axis.count.push((float.len() - begin) as u32);
        axis.offset.push(begin as u32);
    }
}

/// One axis of the CPU backend's resize in its fixed point: source `[in0, in1)` (the crop box
/// the CPU gives fast_image_resize; `0..in_size` when it resizes the whole image) onto
/// `out_size` outputs. `in_size` bounds the windows, as the source image does on the CPU.
pub fn fixed_axis(
    in_size: u32,
    in0: f64,
    in1: f64,
    out_size: u32,
    filter: ResizeFilter,
) -> FixedAxis {
    let mut axis = FixedAxis::default();
    fixed_axis_into(
        &mut axis,
        &mut Vec::new(),
        (in_size, in0, in1, out_size),
        filter,
    );
    axis
}

/// [`fixed_axis`] into reused buffers: `axis` is overwritten, `float` is scratch. The
/// geometry is `(in_size, in0, in1, out_size)`.
pub fn fixed_axis_into(
    axis: &mut FixedAxis,
    float: &mut Vec<f64>,
    (in_size, in0, in1, out_size): (u32, f64, f64, u32),
    filter: ResizeFilter,
) {
    let geometry = AxisGeometry::new(in_size, in0, in1, out_size, filter);
    float_weights_into(axis, float, &geometry, out_size);
    // The largest weight of the whole axis decides the precision: the padding zeros the CPU
    // keeps around each window only matter if every weight were negative, which a weight set
    // summing to 1 cannot be.
    let max_weight = float.iter().copied().fold(0.0f64, f64::max);
    let mut precision = 0u8;
    for p in 0..PRECISION_BITS {
        precision = p;
        let next = (max_weight * f64::from(1u32 << (p + 1))).round() as i32;
        if next >= 1 << MAX_COEFFS_PRECISION {
            break;
        }
    }
    let scale = f64::from(1u32 << precision);
    axis.precision = u32::from(precision);
    // `as i16` saturates, as the CPU's cast does; the precision keeps it from needing to.
    axis.weights.clear();
    axis.weights
        .extend(float.iter().map(|&v| i32::from((v * scale).round() as i16)));
}

/// Whether fast_image_resize 6.1 would read past its intermediate image for this region:
/// with both passes, it sizes the u8 intermediate from the first window's start to the
/// *last* window's end, but where the last window lost a trailing zero weight (an upscale
/// whose last center falls on a pixel), an earlier window can end one pixel further. Its
/// horizontal pass then reads a pixel past the row (the next row's first, or stale memory
/// after the last row; with debug assertions, an abort on an unchecked index), so its
/// result there is not defined and the model cannot be compared with it. The shader reads
/// the intended pixel.
pub(crate) fn crop_overreads(
    src_w: u32,
    src_h: u32,
    full: (u32, u32),
    region: Region,
    filter: ResizeFilter,
) -> bool {
    let ((left, width), (top, height)) = source_crop(src_w, src_h, full, region);
    let both_passes = (f64::from(region.width) != width || left.fract() != 0.0)
        && (f64::from(region.height) != height || top.fract() != 0.0);
    if !both_passes || region.width == 0 {
        return false;
    }
    // Called for every tile the CPU resizes: window ends only, no weights, no allocation.
    let axis = AxisGeometry::new(src_w, left, left + width, region.width, filter);
    let last = axis.trimmed_end(region.width - 1);
    (0..region.width - 1).any(|i| axis.trimmed_end(i) > last)
}

/// One pass over a line of u8 samples, as the CPU computes it: used by the tests here to check
/// the model against fast_image_resize itself.
#[cfg(test)]
fn apply(axis: &FixedAxis, line: &[u8], stride: usize, i: usize) -> u8 {
    let p = axis.precision;
    let mut acc = 1i32 << (p - 1);
    let (s, n, o) = (
        axis.start[i] as usize,
        axis.count[i] as usize,
        axis.offset[i] as usize,
    );
    for k in 0..n {
        acc += axis.weights[o + k] * i32::from(line[(s + k) * stride]);
    }
    (acc >> p).clamp(0, 255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::RgbImage;
    use crate::image::resize::resize_region_into_fir;

    fn noise(w: u32, h: u32, seed: u32) -> RgbImage {
        let mut s = seed.wrapping_mul(2_654_435_761) | 1;
        let data = (0..3 * w * h)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                // Noise over a ramp: neighbouring pixels differ a lot, so a weight off by one
                // unit or a window off by one pixel shows.
                ((i / 3 % w) * 200 / w.max(1) + (s >> 27)) as u8
            })
            .collect();
        RgbImage {
            width: w,
            height: h,
            data,
        }
    }

    /// The model's levels for `region` of the `full` resize, vertical pass then horizontal.
    fn model_region(
        src: &RgbImage,
        full: (u32, u32),
        region: Region,
        filter: ResizeFilter,
    ) -> Vec<u8> {
        let ((left, width), (top, height)) = source_crop(src.width, src.height, full, region);
        let h = fixed_axis(src.width, left, left + width, region.width, filter);
        let v = fixed_axis(src.height, top, top + height, region.height, filter);
        let (w, rw) = (src.width as usize, region.width as usize);
        let mut out = vec![0u8; 3 * rw * region.height as usize];
        for y in 0..region.height as usize {
            // The vertical pass over every source column, as the u8 intermediate.
            let mid: Vec<u8> = (0..3 * w)
                .map(|col| apply(&v, &src.data[col..], 3 * w, y))
                .collect();
            for x in 0..rw {
                for c in 0..3 {
                    out[3 * (y * rw + x) + c] = apply(&h, &mid[c..], 3, x);
                }
            }
        }
        out
    }

    #[test]
    fn the_model_equals_fast_image_resize_on_whole_images_and_tiles() {
        let mut resizer = fast_image_resize::Resizer::new();
        // Downscales (strong and mild), upscales, mixed, identity in one axis, tiny sources.
        let cases = [
            ((97, 61), (40, 30), 20),
            ((50, 37), (150, 111), 37),
            ((300, 20), (90, 60), 30),
            ((64, 48), (64, 24), 8),
            ((3, 5), (12, 9), 3),
            ((211, 7), (211, 33), 11),
        ];
        let (mut compared, mut overreads) = (0, 0);
        for (i, ((w, h), full, tile)) in cases.into_iter().enumerate() {
            let src = noise(w, h, i as u32 + 1);
            for filter in [ResizeFilter::Bicubic, ResizeFilter::Bilinear] {
                let mut regions = vec![Region {
                    x: 0,
                    y: 0,
                    width: full.0,
                    height: full.1,
                }];
                for y in (0..full.1 / tile * tile).step_by(tile as usize) {
                    for x in (0..full.0 / tile * tile).step_by(tile as usize) {
                        regions.push(Region {
                            x,
                            y,
                            width: tile,
                            height: tile,
                        });
                    }
                }
                for region in regions {
                    // The lean check agrees with the ends of the full weight model.
                    let ((left, width), (top, height)) =
                        source_crop(src.width, src.height, full, region);
                    let model = fixed_axis(src.width, left, left + width, region.width, filter);
                    let ends: Vec<u32> = model
                        .start
                        .iter()
                        .zip(&model.count)
                        .map(|(s, n)| s + n)
                        .collect();
                    let both = (f64::from(region.width) != width || left.fract() != 0.0)
                        && (f64::from(region.height) != height || top.fract() != 0.0);
                    assert_eq!(
                        crop_overreads(src.width, src.height, full, region, filter),
                        both && ends.iter().max() > ends.last(),
                        "{w}x{h} {full:?} {region:?}"
                    );
                    if crop_overreads(src.width, src.height, full, region, filter) {
                        overreads += 1;
                        continue;
                    }
                    compared += 1;
                    let n = 3 * (region.width * region.height) as usize;
                    let mut cpu = vec![0u8; n];
                    resize_region_into_fir(&mut resizer, &src, full, region, filter, &mut cpu)
                        .unwrap();
                    let model = model_region(&src, full, region, filter);
                    assert!(
                        model == cpu,
                        "{w}x{h} -> {full:?} {region:?} {filter:?}: {} of {n} levels differ",
                        model.iter().zip(&cpu).filter(|(a, b)| a != b).count()
                    );
                }
            }
        }
        // The 50x37 upscale has tiles with the overread below (the only case here that has).
        assert!(compared > 40 && overreads >= 1, "{compared} {overreads}");
    }

    #[test]
    fn weights_sum_to_one_and_stay_inside_the_source() {
        for (i, o) in [(1000u32, 7u32), (7, 1000), (5, 5), (1, 3), (3, 1)] {
            for filter in [ResizeFilter::Bicubic, ResizeFilter::Bilinear] {
                let a = fixed_axis(i, 0.0, f64::from(i), o, filter);
                assert!((4..22).contains(&a.precision), "{i}->{o}: {}", a.precision);
                for k in 0..o as usize {
                    assert!(a.count[k] >= 1 && a.start[k] + a.count[k] <= i);
                    let o0 = a.offset[k] as usize;
                    let sum: i32 = a.weights[o0..o0 + a.count[k] as usize].iter().sum();
                    // Each weight rounds on its own: a few units off 2^p at most.
                    assert!(
                        (sum - (1 << a.precision)).abs() <= a.count[k] as i32,
                        "{i}->{o}"
                    );
                }
            }
        }
    }
}
