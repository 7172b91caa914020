//! The perceptual dedup tier's signal: a 64-bit DCT hash equal, bit for bit, to Python
//! ImageHash's `imagehash.phash(img)` on the same RGB pixels, plus the hash of the mirrored
//! image, derived from the same transform.
//!
//! ImageHash's recipe: `convert("L")` (Pillow's integer luma), resize to 32×32 with Pillow's
//! LANCZOS, `scipy.fftpack.dct` (type II, unnormalized) along axis 0 then axis 1, keep the
//! top-left 8×8 block, bit = coefficient > median of those 64, bits row-major with the first as
//! the most significant. Only 8 of the 32 frequencies of each axis are kept, so the transform is
//! two small matrix products (8×32 · 32×32, then 8×32 · 32×8): 10k multiply–adds, next to the
//! resize that dominates.
//!
//! Where a result can differ from ImageHash: scipy computes the DCT through an FFT and this
//! module by direct sums, so coefficients agree to ~1e-12 relative, not exactly. A bit can only
//! differ when a coefficient and the median are that close: images whose low frequencies tie
//! (a flat image, an exactly symmetric one, where the "zero" coefficients are rounding noise in
//! both). Natural images do not tie; the golden test checks real-looking images bit for bit.
//!
//! The resize is `image::pillow_resample`, which follows Pillow 13's pass order too (vertical
//! first for images much taller than wide); the golden test checks both orders bit for bit.

use crate::error::Result;
use crate::image::RgbImage;
use crate::image::pillow_resample::{PillowFilter, resize_gray_like_pillow};
use std::sync::OnceLock;

/// Side of the square the image is resized to (ImageHash: `hash_size * highfreq_factor`).
const SIDE: usize = 32;
/// Side of the low-frequency block that becomes the hash (ImageHash's `hash_size`).
const BLOCK: usize = 8;

/// The hash of an image and of its horizontal mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PerceptualHash {
    /// `imagehash.phash` of the image.
    pub hash: u64,
    /// The hash of the horizontally mirrored image (see [`phash`] for how it is derived).
    pub flipped: u64,
}

/// Pillow's RGB → "L" conversion (ITU-R 601-2 luma in 16-bit fixed point, rounded).
#[inline]
pub fn pillow_luma(r: u8, g: u8, b: u8) -> u8 {
    ((u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000) >> 16) as u8
}

/// The first `BLOCK` rows of the 32-point DCT-II matrix, `cos(π k (2n + 1) / 64)`. scipy's
/// unnormalized DCT has a factor 2 per axis; a common positive factor cannot change which
/// coefficients exceed the median, so it is left out.
fn dct_rows() -> &'static [[f64; SIDE]; BLOCK] {
    static ROWS: OnceLock<[[f64; SIDE]; BLOCK]> = OnceLock::new();
    ROWS.get_or_init(|| {
        let mut rows = [[0.0; SIDE]; BLOCK];
        for (k, row) in rows.iter_mut().enumerate() {
            for (n, c) in row.iter_mut().enumerate() {
                *c = (std::f64::consts::PI * k as f64 * (2 * n + 1) as f64 / (2 * SIDE) as f64)
                    .cos();
            }
        }
        rows
    })
}

/// The 8×8 low-frequency DCT block of a 32×32 8-bit image (row-major), `[k][l]` with `k` the
/// vertical and `l` the horizontal frequency.
pub fn dct_block(pixels: &[u8; SIDE * SIDE]) -> [[f64; BLOCK]; BLOCK] {
    let c = dct_rows();
    // Along axis 0 (down the columns): t[k][n] = Σ_m c[k][m] · x[m][n].
    let mut t = [[0.0f64; SIDE]; BLOCK];
    for (k, t_row) in t.iter_mut().enumerate() {
        for (m, x_row) in pixels.chunks_exact(SIDE).enumerate() {
            let w = c[k][m];
            for (acc, &x) in t_row.iter_mut().zip(x_row) {
                *acc += w * f64::from(x);
            }
        }
    }
    // Along axis 1: d[k][l] = Σ_n t[k][n] · c[l][n].
    let mut d = [[0.0f64; BLOCK]; BLOCK];
    for (d_row, t_row) in d.iter_mut().zip(&t) {
        for (l, out) in d_row.iter_mut().enumerate() {
            *out = t_row.iter().zip(&c[l]).map(|(a, b)| a * b).sum();
        }
    }
    d
}

/// Bits of `coef > median(block)`, row-major, first bit most significant (ImageHash's hex).
pub fn hash_of_block(block: &[[f64; BLOCK]; BLOCK]) -> u64 {
    let mut sorted: Vec<f64> = block.iter().flatten().copied().collect();
    sorted.sort_unstable_by(f64::total_cmp);
    // numpy's median of an even count: the mean of the two middle values.
    let median = (sorted[31] + sorted[32]) / 2.0;
    block
        .iter()
        .flatten()
        .fold(0u64, |h, &v| (h << 1) | u64::from(v > median))
}

/// The perceptual hash of a 32×32 grayscale image, and of its mirror: mirroring the columns
/// (`x[m][31 − n]`) multiplies horizontal frequency `l` by `(−1)^l`, so the mirrored block is
/// the same block with its odd columns negated, and only the median is recomputed.
pub fn phash_of_gray32(pixels: &[u8; SIDE * SIDE]) -> PerceptualHash {
    let mut block = dct_block(pixels);
    let hash = hash_of_block(&block);
    for row in block.iter_mut() {
        for v in row.iter_mut().skip(1).step_by(2) {
            *v = -*v;
        }
    }
    PerceptualHash {
        hash,
        flipped: hash_of_block(&block),
    }
}

/// The image reduced as ImageHash reduces it: Pillow "L" conversion, then a Pillow LANCZOS
/// resize to 32×32.
pub fn gray32(img: &RgbImage) -> Result<[u8; SIDE * SIDE]> {
    let luma: Vec<u8> = img
        .data
        .chunks_exact(3)
        .map(|p| pillow_luma(p[0], p[1], p[2]))
        .collect();
    // The resize checks that `luma` holds width × height pixels (it does not when `data` is
    // short), and refuses empty images.
    let small = resize_gray_like_pillow(
        &luma,
        img.width,
        img.height,
        SIDE as u32,
        SIDE as u32,
        PillowFilter::Lanczos,
    )?;
    let mut out = [0u8; SIDE * SIDE];
    out.copy_from_slice(&small);
    Ok(out)
}

/// `imagehash.phash` of `img` and of its horizontal mirror.
///
/// `flipped` comes from the same DCT (odd horizontal frequencies negated). It equals
/// `phash(mirror(img)).hash` except when the resize itself is not mirror-symmetric: Pillow's
/// window of taps is placed by truncation, so at a few output positions the mirrored image gets
/// a window shifted by one pixel, or weights that differ in their last bit, and a 32×32 pixel
/// can then differ by one level; that moves a coefficient by a tiny amount and flips a bit only
/// when it sits at the median. `tests/curate_tiers.rs` measures how often that happens.
pub fn phash(img: &RgbImage) -> Result<PerceptualHash> {
    Ok(phash_of_gray32(&gray32(img)?))
}

/// Number of differing bits.
#[inline]
pub fn hamming(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::orientation::{EXIF_MIRROR, apply_orientation};

    fn textured(w: u32, h: u32, seed: u32) -> RgbImage {
        let data = (0..w * h)
            .flat_map(|i| {
                let (x, y) = ((i % w) as f32, (i / w) as f32);
                let s = seed as f32;
                [
                    (128.0 + 100.0 * (x * 0.031 + s).sin() * (y * 0.017).cos()) as u8,
                    (128.0 + 90.0 * ((x + 2.0 * y) * 0.011 + s * 0.7).sin()) as u8,
                    ((x * 0.37 + y * 0.91 + s * 13.0) % 256.0) as u8,
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
    fn luma_matches_pillows_integer_formula_at_the_corners() {
        assert_eq!(pillow_luma(0, 0, 0), 0);
        assert_eq!(pillow_luma(255, 255, 255), 255);
        // 255·19595 / 65536 = 76.2 → 76; 255·38470/65536 = 149.7 → 150; 255·7471/65536 = 29.07
        assert_eq!(pillow_luma(255, 0, 0), 76);
        assert_eq!(pillow_luma(0, 255, 0), 150);
        assert_eq!(pillow_luma(0, 0, 255), 29);
    }

    #[test]
    #[allow(clippy::needless_range_loop)] // k, l, m, n are the formula's indices
    fn the_dct_block_matches_a_direct_2d_sum() {
        let img = gray32(&textured(57, 41, 3)).unwrap();
        let d = dct_block(&img);
        let pi = std::f64::consts::PI;
        for k in 0..BLOCK {
            for l in 0..BLOCK {
                let mut s = 0.0;
                for m in 0..SIDE {
                    for n in 0..SIDE {
                        s += f64::from(img[m * SIDE + n])
                            * (pi * k as f64 * (2 * m + 1) as f64 / 64.0).cos()
                            * (pi * l as f64 * (2 * n + 1) as f64 / 64.0).cos();
                    }
                }
                assert!((s - d[k][l]).abs() < 1e-9 * (1.0 + s.abs()), "{k},{l}");
            }
        }
    }

    #[test]
    fn flipped_equals_the_hash_of_the_mirrored_pixels_on_the_32px_grid() {
        // On the 32×32 grid mirroring is exact, so the derived hash must equal the direct one.
        for seed in 0..20 {
            let g = gray32(&textured(90 + seed * 7, 60 + seed * 3, seed)).unwrap();
            let mut m = [0u8; SIDE * SIDE];
            for (dst, src) in m.chunks_exact_mut(SIDE).zip(g.chunks_exact(SIDE)) {
                dst.iter_mut()
                    .zip(src.iter().rev())
                    .for_each(|(d, s)| *d = *s);
            }
            let a = phash_of_gray32(&g);
            let b = phash_of_gray32(&m);
            assert_eq!(a.flipped, b.hash, "seed {seed}");
            assert_eq!(b.flipped, a.hash, "seed {seed}");
        }
    }

    #[test]
    fn mirrored_images_hash_to_the_flipped_hash_and_differ_from_the_original() {
        let img = textured(320, 200, 5);
        let a = phash(&img).unwrap();
        let b = phash(&apply_orientation(img.clone(), EXIF_MIRROR)).unwrap();
        assert!(hamming(a.flipped, b.hash) <= 2, "{a:?} {b:?}");
        assert!(hamming(a.hash, b.hash) > 8, "{a:?} {b:?}");
    }

    #[test]
    fn bad_images_are_errors_not_panics() {
        let empty = RgbImage {
            width: 0,
            height: 5,
            data: vec![],
        };
        assert!(phash(&empty).is_err());
        let short = RgbImage {
            width: 4,
            height: 4,
            data: vec![0; 10],
        };
        assert!(phash(&short).is_err());
        let tiny = RgbImage {
            width: 1,
            height: 1,
            data: vec![1, 2, 3],
        };
        assert!(phash(&tiny).is_ok());
    }

    #[test]
    fn hamming_counts_bits() {
        assert_eq!(hamming(0, u64::MAX), 64);
        assert_eq!(hamming(0b1011, 0b0001), 2);
    }
}
