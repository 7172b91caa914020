//! Test images shared by the backend parity tests (CPU, wgpu, CUDA): a generated pattern and
//! the committed photos.

use vlmprep::image::RgbImage;
use vlmprep::image::decode::{DecodeOptions, decode_rgb8};

/// Gradients, hard edges and noise, so that every filter tap and both signs of the bicubic
/// lobes matter.
pub fn pattern(w: u32, h: u32, seed: u32) -> RgbImage {
    let mut data = Vec::with_capacity(3 * (w * h) as usize);
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    for y in 0..h {
        for x in 0..w {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let edge = if (x / 7 + y / 5) % 2 == 0 { 60 } else { 0 };
            data.extend_from_slice(&[
                ((x * 255 / w.max(1)) as u8).saturating_add(edge),
                ((y * 255 / h.max(1)) as u8) ^ (s as u8 & 0x1f),
                ((x * 5 + y * 11 + (s >> 24)) % 256) as u8,
            ]);
        }
    }
    RgbImage {
        width: w,
        height: h,
        data,
    }
}

/// A committed photo of `tests/fixtures/pixels/inputs` (made by make_pixels.py), decoded.
pub fn photo(name: &str) -> RgbImage {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pixels/inputs")
        .join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    decode_rgb8(&bytes, &DecodeOptions::default()).unwrap()
}
