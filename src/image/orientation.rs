//! EXIF orientation (1..=8) applied to a decoded [`RgbImage`], with the same eight transforms as
//! Pillow's `ImageOps.exif_transpose`: 2 mirror, 3 rotate 180°, 4 flip, 5 transpose,
//! 6 rotate 90° clockwise, 7 transverse, 8 rotate 90° counter-clockwise.

use super::RgbImage;

/// Pixels per side of the square blocks the axis-swapping transforms copy, so that both the
/// reads and the writes of a block stay in cache.
const BLOCK: usize = 32;

/// EXIF orientation 2: mirrored left–right.
pub const EXIF_MIRROR: u8 = 2;

/// Returns `img` as displayed under EXIF `orientation`. Values outside 2..=8 leave the image
/// unchanged (as Pillow does for 1 and for invalid values); 5..=8 swap width and height.
///
/// 2–4 work in place; 5–8 allocate one new buffer.
///
/// # Panics
/// If `img.data.len() != 3 * width * height` (a broken [`RgbImage`] invariant, not bad input).
pub fn apply_orientation(mut img: RgbImage, orientation: u8) -> RgbImage {
    let (w, h) = (img.width as usize, img.height as usize);
    assert_eq!(
        img.data.len(),
        3 * w * h,
        "RgbImage buffer does not match its size"
    );
    match orientation {
        2 => mirror_rows(&mut img.data, w),
        3 => {
            // Rotating 180° is reversing the whole pixel sequence.
            let (px, _) = img.data.as_chunks_mut::<3>();
            px.reverse();
        }
        4 => flip_vertical(&mut img.data, 3 * w),
        5..=8 => return swap_axes(&img, orientation),
        _ => {}
    }
    img
}

/// Reverses the pixels of every row (orientation 2, Pillow FLIP_LEFT_RIGHT).
fn mirror_rows(data: &mut [u8], w: usize) {
    if w == 0 {
        return;
    }
    for row in data.chunks_exact_mut(3 * w) {
        let (px, _) = row.as_chunks_mut::<3>();
        px.reverse();
    }
}

/// Swaps row y with row h-1-y (orientation 4, Pillow FLIP_TOP_BOTTOM).
fn flip_vertical(data: &mut [u8], stride: usize) {
    if stride == 0 {
        return;
    }
    let rows = data.len() / stride;
    let (top, bottom) = data.split_at_mut(rows / 2 * stride);
    // With an odd row count the middle row is the first of `bottom` and stays put.
    let bottom_len = bottom.len();
    let bottom = &mut bottom[bottom_len - top.len()..];
    for (a, b) in top
        .chunks_exact_mut(stride)
        .zip(bottom.chunks_exact_mut(stride).rev())
    {
        a.swap_with_slice(b);
    }
}

/// Orientations 5–8: the output is `h` wide and `w` tall. Output pixel (x, y) reads source pixel
/// (sx, sy) with sx from y and sy from x:
/// 5 transpose (sx = y, sy = x), 6 rotate 90° cw (sx = y, sy = h-1-x),
/// 7 transverse (sx = w-1-y, sy = h-1-x), 8 rotate 90° ccw (sx = w-1-y, sy = x).
fn swap_axes(img: &RgbImage, orientation: u8) -> RgbImage {
    let (w, h) = (img.width as usize, img.height as usize);
    let (ow, oh) = (h, w);
    let mut out = vec![0u8; img.data.len()];
    let (src, _) = img.data.as_chunks::<3>();
    let (dst, _) = out.as_chunks_mut::<3>();
    let flip_x = matches!(orientation, 7 | 8); // sx counts down from w-1
    let flip_y = matches!(orientation, 6 | 7); // sy counts down from h-1
    for by in (0..oh).step_by(BLOCK) {
        for bx in (0..ow).step_by(BLOCK) {
            for y in by..(by + BLOCK).min(oh) {
                let sx = if flip_x { w - 1 - y } else { y };
                let out_row = &mut dst[y * ow..(y + 1) * ow];
                let end = (bx + BLOCK).min(ow);
                for (x, px) in (bx..end).zip(&mut out_row[bx..end]) {
                    let sy = if flip_y { h - 1 - x } else { x };
                    *px = src[sy * w + sx];
                }
            }
        }
    }
    RgbImage {
        width: img.height,
        height: img.width,
        data: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2-wide, 3-tall image whose pixel (x, y) is [10*y + x, 0, 0]:
    /// row 0: 0 1 / row 1: 10 11 / row 2: 20 21.
    fn img2x3() -> RgbImage {
        let mut data = Vec::new();
        for y in 0..3u8 {
            for x in 0..2u8 {
                data.extend_from_slice(&[10 * y + x, 100 + y, 200 + x]);
            }
        }
        RgbImage {
            width: 2,
            height: 3,
            data,
        }
    }

    /// The red channel, row by row.
    fn reds(img: &RgbImage) -> Vec<Vec<u8>> {
        (0..img.height)
            .map(|y| (0..img.width).map(|x| img.pixel(x, y)[0]).collect())
            .collect()
    }

    // Expectations computed by hand and checked against Pillow 13:
    // ImageOps.exif_transpose on the same 2x3 image with each Orientation.
    #[test]
    fn all_eight_orientations_match_pillow() {
        type Case = (u8, (u32, u32), Vec<Vec<u8>>);
        let cases: [Case; 8] = [
            (1, (2, 3), vec![vec![0, 1], vec![10, 11], vec![20, 21]]),
            (2, (2, 3), vec![vec![1, 0], vec![11, 10], vec![21, 20]]),
            (3, (2, 3), vec![vec![21, 20], vec![11, 10], vec![1, 0]]),
            (4, (2, 3), vec![vec![20, 21], vec![10, 11], vec![0, 1]]),
            (5, (3, 2), vec![vec![0, 10, 20], vec![1, 11, 21]]),
            (6, (3, 2), vec![vec![20, 10, 0], vec![21, 11, 1]]),
            (7, (3, 2), vec![vec![21, 11, 1], vec![20, 10, 0]]),
            (8, (3, 2), vec![vec![1, 11, 21], vec![0, 10, 20]]),
        ];
        for (o, size, want) in cases {
            let out = apply_orientation(img2x3(), o);
            assert_eq!((out.width, out.height), size, "orientation {o}");
            assert_eq!(reds(&out), want, "orientation {o}");
            // Whole pixels move together: green encodes the source row, blue the source column.
            for y in 0..out.height {
                for x in 0..out.width {
                    let [r, g, b] = out.pixel(x, y);
                    assert_eq!((g - 100, b - 200), (r / 10, r % 10), "orientation {o}");
                }
            }
        }
    }

    #[test]
    fn invalid_orientation_is_identity() {
        for o in [0, 9, 255] {
            assert_eq!(apply_orientation(img2x3(), o), img2x3());
        }
    }

    #[test]
    fn large_and_odd_sizes_round_trip() {
        // Sizes straddling the block size; 6 then 8 and 5 then 5 and 7 then 7 are identities.
        for (w, h) in [(1, 1), (1, 70), (70, 1), (33, 65), (64, 31)] {
            let data: Vec<u8> = (0..3 * w * h).map(|i| (i * 7 % 251) as u8).collect();
            let img = RgbImage {
                width: w as u32,
                height: h as u32,
                data,
            };
            for (a, b) in [(6, 8), (5, 5), (7, 7), (2, 2), (3, 3), (4, 4)] {
                let back = apply_orientation(apply_orientation(img.clone(), a), b);
                assert_eq!(back, img, "{w}x{h}: {a} then {b}");
            }
        }
    }

    #[test]
    fn empty_image() {
        let img = RgbImage {
            width: 0,
            height: 5,
            data: vec![],
        };
        for o in 1..=8 {
            let out = apply_orientation(img.clone(), o);
            assert!(out.data.is_empty());
        }
    }
}
