//! The embedded default pool for `vlmprep demo`: synthetic image–caption samples in two
//! WebDataset shards, made on the spot (no downloads), covering the formats and the bad input
//! the pipeline must handle — baseline/progressive/grayscale/4:4:4 JPEG, EXIF-rotated JPEG,
//! PNG with alpha, lossless WebP, a truncated JPEG, an HTML page saved as .jpg and a
//! caption-only sample.

use std::path::{Path, PathBuf};

use jpeg_encoder::{ColorType, Encoder, SamplingFactor};

use crate::error::{Error, Result};
use crate::sink::tar::TarWriter;

/// How one demo image is encoded.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Jpeg420,
    JpegProgressive,
    Jpeg444,
    JpegGray,
    JpegRotated,
    Png,
    PngAlpha,
    WebpLossless,
    TruncatedJpeg,
    HtmlNotAnImage,
}

/// (width, height, kind) of each demo image, in order; sizes span thumbnails to wallpapers and
/// aspect ratios from 1:8 to 5:1 so every tiling branch is exercised.
const IMAGES: [(u32, u32, Kind); 24] = [
    (640, 480, Kind::Jpeg420),
    (1920, 1080, Kind::Jpeg420),
    (800, 1200, Kind::JpegProgressive),
    (448, 448, Kind::Jpeg444),
    (1024, 768, Kind::JpegGray),
    (1200, 800, Kind::JpegRotated),
    (300, 2400, Kind::Jpeg420),
    (2500, 500, Kind::JpegProgressive),
    (512, 384, Kind::Png),
    (333, 517, Kind::PngAlpha),
    (600, 400, Kind::WebpLossless),
    (97, 1503, Kind::Jpeg420),
    (1600, 1200, Kind::Jpeg420),
    (720, 1280, Kind::JpegProgressive),
    (1280, 720, Kind::Jpeg444),
    (256, 256, Kind::Png),
    (640, 640, Kind::TruncatedJpeg),
    (1366, 768, Kind::Jpeg420),
    (1000, 3000, Kind::Jpeg420),
    (3000, 2000, Kind::JpegProgressive),
    (480, 640, Kind::JpegRotated),
    (900, 700, Kind::WebpLossless),
    (64, 48, Kind::HtmlNotAnImage),
    (1536, 1024, Kind::Png),
];

/// Writes the demo pool (`pool-000000.tar`, `pool-000001.tar`) into `dir` and returns the
/// shard paths.
pub fn build_demo_pool(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut shards = Vec::new();
    for (shard_index, images) in IMAGES.chunks(IMAGES.len() / 2).enumerate() {
        let path = dir.join(format!("pool-{shard_index:06}.tar"));
        let mut tar = TarWriter::new(Vec::new());
        for (i, &(w, h, kind)) in images.iter().enumerate() {
            let n = shard_index * IMAGES.len() / 2 + i;
            let key = format!("{n:09}");
            let (ext, bytes) = encode(w, h, kind, n as u32)?;
            let caption = format!(
                "A synthetic test pattern number {n}, {w} by {h} pixels, stored as {kind:?}."
            );
            let json = format!("{{\"width\": {w}, \"height\": {h}, \"kind\": \"{kind:?}\"}}");
            let io = |e| Error::io(&path, e);
            tar.append(&format!("{key}.{ext}"), &bytes).map_err(io)?;
            tar.append(&format!("{key}.txt"), caption.as_bytes())
                .map_err(io)?;
            tar.append(&format!("{key}.json"), json.as_bytes())
                .map_err(io)?;
        }
        // A caption without an image: `tile` must skip it, saying why.
        let orphan = format!("orphan-{shard_index}.txt");
        tar.append(&orphan, b"a caption whose image went missing")
            .map_err(|e| Error::io(&path, e))?;
        let bytes = tar.finish().map_err(|e| Error::io(&path, e))?;
        std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
        shards.push(path);
    }
    Ok(shards)
}

/// A smooth, textured test pattern: gradients, rings and a checker, seeded per image.
pub fn pattern(width: u32, height: u32, seed: u32) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(3 * width as usize * height as usize);
    let (cx, cy) = (width as f32 * 0.4, height as f32 * 0.6);
    let ring = 6.0 + (seed % 7) as f32 * 3.0;
    for y in 0..height {
        for x in 0..width {
            let (fx, fy) = (x as f32, y as f32);
            let d = ((fx - cx).powi(2) + (fy - cy).powi(2)).sqrt();
            let rings = ((d / ring).sin() * 0.5 + 0.5) * 255.0;
            let checker = if ((x / 32) + (y / 32) + seed).is_multiple_of(2) {
                40.0
            } else {
                0.0
            };
            rgb.push((fx / width as f32 * 255.0) as u8);
            rgb.push((rings * 0.8 + checker) as u8);
            rgb.push((fy / height as f32 * 200.0 + checker) as u8);
        }
    }
    rgb
}

fn encode(w: u32, h: u32, kind: Kind, seed: u32) -> Result<(&'static str, Vec<u8>)> {
    let rgb = pattern(w, h, seed);
    let enc_err = |e: String| Error::Output {
        path: PathBuf::from("<demo pool>"),
        reason: e,
    };
    let jpeg =
        |progressive: bool, sampling: SamplingFactor, color: ColorType, exif: Option<u16>| {
            let mut out = Vec::new();
            let mut enc = Encoder::new(&mut out, 88);
            enc.set_progressive(progressive);
            enc.set_sampling_factor(sampling);
            if let Some(orientation) = exif {
                enc.add_exif_metadata(&exif_orientation(orientation))
                    .map_err(|e| enc_err(e.to_string()))?;
            }
            let pixels: Vec<u8> = match color {
                ColorType::Luma => rgb.chunks_exact(3).map(|p| p[1]).collect(),
                _ => rgb.clone(),
            };
            enc.encode(&pixels, w as u16, h as u16, color)
                .map_err(|e| enc_err(e.to_string()))?;
            Ok::<_, Error>(out)
        };
    Ok(match kind {
        Kind::Jpeg420 => (
            "jpg",
            jpeg(false, SamplingFactor::F_2_2, ColorType::Rgb, None)?,
        ),
        Kind::JpegProgressive => (
            "jpg",
            jpeg(true, SamplingFactor::F_2_2, ColorType::Rgb, None)?,
        ),
        Kind::Jpeg444 => (
            "jpg",
            jpeg(false, SamplingFactor::F_1_1, ColorType::Rgb, None)?,
        ),
        Kind::JpegGray => (
            "jpg",
            jpeg(false, SamplingFactor::F_1_1, ColorType::Luma, None)?,
        ),
        // Orientation 6: stored landscape, displayed rotated 90° clockwise.
        Kind::JpegRotated => (
            "jpg",
            jpeg(false, SamplingFactor::F_2_2, ColorType::Rgb, Some(6))?,
        ),
        Kind::TruncatedJpeg => {
            // A download cut short: headers and the first third of the scan, no EOI.
            let mut bytes = jpeg(false, SamplingFactor::F_2_2, ColorType::Rgb, None)?;
            bytes.truncate(bytes.len() / 3);
            ("jpg", bytes)
        }
        // What scrapers often store under .jpg: the server's error page.
        Kind::HtmlNotAnImage => ("jpg", b"<html><body>404 Not Found</body></html>".to_vec()),
        Kind::Png | Kind::PngAlpha => {
            let alpha = matches!(kind, Kind::PngAlpha);
            let mut out = Vec::new();
            let mut enc = png::Encoder::new(&mut out, w, h);
            enc.set_color(if alpha {
                png::ColorType::Rgba
            } else {
                png::ColorType::Rgb
            });
            enc.set_depth(png::BitDepth::Eight);
            let data: Vec<u8> = if alpha {
                rgb.chunks_exact(3)
                    .flat_map(|p| [p[0], p[1], p[2], p[0] / 2 + 128])
                    .collect()
            } else {
                rgb
            };
            let mut writer = enc.write_header().map_err(|e| enc_err(e.to_string()))?;
            writer
                .write_image_data(&data)
                .map_err(|e| enc_err(e.to_string()))?;
            writer.finish().map_err(|e| enc_err(e.to_string()))?;
            ("png", out)
        }
        Kind::WebpLossless => {
            let mut out = Vec::new();
            image_webp::WebPEncoder::new(&mut out)
                .encode(&rgb, w, h, image_webp::ColorType::Rgb8)
                .map_err(|e| enc_err(e.to_string()))?;
            ("webp", out)
        }
    })
}

/// A minimal big-endian TIFF block with IFD0 holding only the Orientation tag.
fn exif_orientation(orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]); // value padding
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    tiff
}
