//! Test-only builders of small JPEG, PNG and WebP files (and EXIF blocks) for the probe and
//! decode tests; committed fixtures made with Pillow live under tests/fixtures/images/.

use jpeg_encoder::{ColorType as JpegColor, Encoder as JpegEncoder, SamplingFactor};

/// A smooth-plus-texture test pattern, `channels` bytes per pixel.
pub fn pattern(w: u32, h: u32, channels: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(w as usize * h as usize * channels);
    for y in 0..h {
        for x in 0..w {
            for c in 0..channels as u32 {
                let smooth = (x * 255 / w.max(1) + y * 97 / h.max(1) + c * 60) % 256;
                let tex = (x * 7 + y * 13 + c * 29) % 17;
                v.push(((smooth + tex) % 256) as u8);
            }
        }
    }
    v
}

/// A photo-like smooth image (low-frequency gradients and blobs), `channels` bytes per pixel.
pub fn smooth(w: u32, h: u32, channels: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(w as usize * h as usize * channels);
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f64 / w as f64, y as f64 / h as f64);
            for c in 0..channels {
                let phase = c as f64 * 1.3;
                let s = 128.0
                    + 90.0 * (6.0 * fx + phase).sin() * (4.0 * fy + 0.5 * phase).cos()
                    + 30.0 * (fx - fy);
                v.push(s.clamp(0.0, 255.0) as u8);
            }
        }
    }
    v
}

/// Options for [`jpeg`].
#[derive(Clone)]
pub struct JpegSpec {
    pub w: u16,
    pub h: u16,
    pub color: JpegColor,
    pub sampling: SamplingFactor,
    pub progressive: bool,
    pub quality: u8,
    pub restart_interval: Option<u16>,
    /// APPn segments to add: (n, payload).
    pub app: Vec<(u8, Vec<u8>)>,
    /// Pixels to encode instead of the [`pattern`].
    pub pixels: Option<Vec<u8>>,
}

impl JpegSpec {
    pub fn rgb(w: u16, h: u16) -> Self {
        JpegSpec {
            w,
            h,
            color: JpegColor::Rgb,
            sampling: SamplingFactor::R_4_2_0,
            progressive: false,
            quality: 90,
            restart_interval: None,
            app: vec![],
            pixels: None,
        }
    }
}

/// Encodes the [`pattern`] as a JPEG with jpeg-encoder.
pub fn jpeg(spec: &JpegSpec) -> Vec<u8> {
    let channels = match spec.color {
        JpegColor::Luma => 1,
        JpegColor::Rgb | JpegColor::Ycbcr | JpegColor::Bgr => 3,
        _ => 4,
    };
    let pixels = spec
        .pixels
        .clone()
        .unwrap_or_else(|| pattern(spec.w.into(), spec.h.into(), channels));
    let mut out = Vec::new();
    let mut enc = JpegEncoder::new(&mut out, spec.quality);
    enc.set_sampling_factor(spec.sampling);
    enc.set_progressive(spec.progressive);
    if let Some(r) = spec.restart_interval {
        enc.set_restart_interval(r);
    }
    for (n, payload) in &spec.app {
        enc.add_app_segment(*n, payload.clone()).unwrap();
    }
    enc.encode(&pixels, spec.w, spec.h, spec.color).unwrap();
    out
}

/// A TIFF/EXIF block (with the `Exif\0\0` prefix) whose IFD0 holds a few tags, including
/// Orientation (0x0112) of type `typ` with `count` values equal to `orientation` when given.
pub fn exif(little_endian: bool, orientation: Option<(u16, u32, u32)>) -> Vec<u8> {
    let u16b = |v: u16| {
        if little_endian {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        }
    };
    let u32b = |v: u32| {
        if little_endian {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        }
    };
    let mut t = Vec::new();
    t.extend_from_slice(if little_endian { b"II" } else { b"MM" });
    t.extend_from_slice(&u16b(42));
    t.extend_from_slice(&u32b(8));
    let mut entries: Vec<[u8; 12]> = Vec::new();
    let entry = |tag: u16, typ: u16, n: u32, value: [u8; 4]| {
        let mut e = [0u8; 12];
        e[0..2].copy_from_slice(&u16b(tag));
        e[2..4].copy_from_slice(&u16b(typ));
        e[4..8].copy_from_slice(&u32b(n));
        e[8..12].copy_from_slice(&value);
        e
    };
    // ImageWidth (SHORT) before and a Software-like LONG after, so the parser must walk entries.
    entries.push(entry(0x0100, 3, 1, [u16b(640)[0], u16b(640)[1], 0, 0]));
    if let Some((typ, n, v)) = orientation {
        let value = match typ {
            3 | 8 => {
                let b = u16b(v as u16);
                [b[0], b[1], 0, 0]
            }
            1 | 6 => [v as u8, 0, 0, 0],
            _ => u32b(v),
        };
        entries.push(entry(0x0112, typ, n, value));
    }
    entries.push(entry(0x0131, 4, 1, u32b(7)));
    t.extend_from_slice(&u16b(entries.len() as u16));
    for e in &entries {
        t.extend_from_slice(e);
    }
    t.extend_from_slice(&u32b(0)); // no IFD1
    let mut out = b"Exif\0\0".to_vec();
    out.extend_from_slice(&t);
    out
}

/// Optional parts of a test PNG.
#[derive(Default)]
pub struct PngExtras<'a> {
    /// PLTE entries (RGB triples).
    pub palette: Option<&'a [u8]>,
    /// tRNS chunk contents.
    pub trns: Option<&'a [u8]>,
    /// Chunks written after IHDR/PLTE/tRNS and before IDAT: (type, data).
    pub chunks: Vec<([u8; 4], Vec<u8>)>,
}

/// Encodes `pixels` as a PNG with the given color type and depth.
pub fn png(w: u32, h: u32, color: png::ColorType, depth: png::BitDepth, pixels: &[u8]) -> Vec<u8> {
    png_with(w, h, color, depth, pixels, &PngExtras::default())
}

/// [`png`] with a palette, tRNS or extra chunks.
pub fn png_with(
    w: u32,
    h: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    pixels: &[u8],
    extras: &PngExtras,
) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(color);
        enc.set_depth(depth);
        if let Some(p) = extras.palette {
            enc.set_palette(p.to_vec());
        }
        if let Some(t) = extras.trns {
            enc.set_trns(t.to_vec());
        }
        let mut writer = enc.write_header().unwrap();
        for (kind, data) in &extras.chunks {
            writer
                .write_chunk(png::chunk::ChunkType(*kind), data)
                .unwrap();
        }
        writer.write_image_data(pixels).unwrap();
        writer.finish().unwrap();
    }
    out
}

/// A lossless WebP made with image-webp's encoder, optionally with an EXIF chunk (VP8X).
pub fn webp_lossless(w: u32, h: u32, alpha: bool, exif: Option<Vec<u8>>) -> Vec<u8> {
    let channels = if alpha { 4 } else { 3 };
    let pixels = pattern(w, h, channels);
    let mut out = Vec::new();
    let mut enc = image_webp::WebPEncoder::new(&mut out);
    if let Some(e) = exif {
        enc.set_exif_metadata(e);
    }
    let color = if alpha {
        image_webp::ColorType::Rgba8
    } else {
        image_webp::ColorType::Rgb8
    };
    enc.encode(&pixels, w, h, color).unwrap();
    out
}

/// Reads a committed fixture from tests/fixtures/images/.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/images")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
