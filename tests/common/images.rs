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

/// The ImageHash golden images of `tests/fixtures/phash` (decoded) with their `phash` in hex as
/// ImageHash printed it.
pub fn phash_golden() -> Vec<(String, RgbImage, u64)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/phash");
    let golden: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("hashes.json")).unwrap()).unwrap();
    let entries = golden["images"].as_array().unwrap();
    assert!(entries.len() >= 13);
    entries
        .iter()
        .map(|e| {
            let file = e["file"].as_str().unwrap();
            let bytes = std::fs::read(dir.join(file)).unwrap();
            let image = decode_rgb8(&bytes, &DecodeOptions::default()).unwrap();
            let hash = u64::from_str_radix(e["phash"].as_str().unwrap(), 16).unwrap();
            (file.to_string(), image, hash)
        })
        .collect()
}

/// Images for the perceptual hash's resize branches: both pass orders (taller than wide by
/// far: vertical first), one axis already 32 (not resampled), upscales, tiny and 1-pixel
/// strips, a downscale of 30x and more, and two committed photos.
pub fn phash_shapes() -> Vec<RgbImage> {
    let sizes = [
        (640, 480),
        (480, 640),
        (64, 480),
        (45, 260),
        (300, 90),
        (32, 200),
        (200, 32),
        (32, 32),
        (7, 5),
        (1, 1),
        (1, 77),
        (77, 1),
        (33, 31),
        (1000, 1000),
        (97, 1301),
    ];
    let mut images: Vec<RgbImage> = sizes
        .iter()
        .enumerate()
        .map(|(i, &(w, h))| pattern(w, h, i as u32 + 1))
        .collect();
    images.push(photo("photo0-baseline420.jpg"));
    images.push(photo("pattern-150x1200.png"));
    images
}
