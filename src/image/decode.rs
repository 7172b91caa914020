//! CPU decode of JPEG, PNG and WebP to 8-bit RGB, matching what Python VLM loaders get from
//! Pillow's `Image.open(f).convert("RGB")` (+ `ImageOps.exif_transpose`):
//!
//! probe → refuse over-large images from the header (before any pixel allocation) → decode →
//! RGB8 → EXIF orientation.
//!
//! Decoders: zune-jpeg for JPEG at full size, jpeg-decoder for JPEG at a reduced DCT scale
//! (1/2, 1/4, 1/8) when the consumer needs far fewer pixels, the png crate, image-webp. With the
//! `turbojpeg` feature, 1- and 3-component JPEGs (full and reduced scale) go through libjpeg-turbo
//! (`decode/turbo.rs`), the decoder Pillow itself uses; the pure-Rust decoders remain for
//! CMYK/YCCK and as the fallback when libjpeg-turbo refuses a file.
//!
//! Where the output deliberately follows or departs from Pillow:
//! - CMYK/YCCK JPEG: converted as Pillow does (Adobe inverted CMYK, `R = C·K/255` on the stored
//!   samples); YCCK is first taken to CMYK the libjpeg way.
//! - Truncated JPEG (no EOI marker): an error, like Pillow's "image file is truncated", instead of
//!   zune-jpeg's gray-filled partial image.
//! - 16-bit PNG: the high byte of each sample (what Pillow gives for 16-bit RGB, RGBA and gray+alpha).
//!   For 16-bit grayscale Pillow's `I;16 → RGB` clips every value above 255 to white; we take
//!   the high byte there too, on purpose.
//! - Alpha is dropped without compositing (Pillow's `convert("RGB")`).

use std::io::Cursor;

use super::orientation::apply_orientation;
use super::probe::{jpeg_has_eoi, jpeg_sampling_uniform, probe};
use super::{ImageFormat, ImageHeader, RgbImage};
use crate::error::{Error, Result};

#[cfg(feature = "turbojpeg")]
pub(crate) mod turbo;

/// Pillow's `Image.MAX_IMAGE_PIXELS` (its decompression-bomb warning threshold; Pillow raises
/// only above twice this).
pub const DEFAULT_MAX_PIXELS: u64 = 89_478_485;

/// Reduced-scale JPEG decoding keeps the decoded size at least this many times the size the
/// consumer needs, in both dimensions (like Pillow's `reducing_gap`), so the later resize still
/// averages several source pixels per output pixel.
///
/// Measured with libjpeg-turbo on 20 wallpaper photos, `--mode fixed` (384x384), mean absolute
/// difference against Pillow's full decode + BICUBIC resize: 0.099 without DCT scaling; 0.180
/// (max 8) at margin 2.0, 0.238 (max 20) at 1.5, 0.443 (max 35) at 1.0. Only 2.0 keeps the
/// added error below the resize's own (benches/dct_scale_error.py).
pub const DCT_SCALE_MARGIN: f64 = 2.0;

/// How to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Refuse images with more stored pixels than this, from the header alone.
    pub max_pixels: u64,
    /// Apply the EXIF orientation (as Pillow's `exif_transpose`).
    pub apply_orientation: bool,
    /// The smallest (width, height), after orientation, that the consumer needs. When set, a
    /// JPEG may be decoded at 1/2, 1/4 or 1/8 scale (see [`choose_dct_scale`]); other formats
    /// always decode at full size.
    pub min_size: Option<(u32, u32)>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            max_pixels: DEFAULT_MAX_PIXELS,
            apply_orientation: true,
            min_size: None,
        }
    }
}

/// A decoded image with the header it was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The probed header (stored size, orientation, format details).
    pub header: ImageHeader,
    /// The pixels: oriented when [`DecodeOptions::apply_orientation`] is set, and reduced by
    /// `dct_scale` when a reduced-scale JPEG decode was chosen.
    pub image: RgbImage,
    /// The DCT scale denominator used: 1 (full size), 2, 4 or 8.
    pub dct_scale: u32,
}

/// Decodes a JPEG, PNG or WebP image to 8-bit RGB (see the module docs for the conversions).
pub fn decode_rgb8(data: &[u8], opts: &DecodeOptions) -> Result<RgbImage> {
    Ok(decode(data, opts)?.image)
}

/// Probes, then decodes; returns the header along with the pixels.
pub fn decode(data: &[u8], opts: &DecodeOptions) -> Result<Decoded> {
    let header = probe(data)?;
    decode_with_header(data, &header, opts)
}

/// Decodes with a header already obtained from [`probe`] on the same bytes (the pipeline probes
/// everything first to plan; this saves probing twice).
pub fn decode_with_header(
    data: &[u8],
    header: &ImageHeader,
    opts: &DecodeOptions,
) -> Result<Decoded> {
    if header.pixels() > opts.max_pixels {
        return Err(Error::TooManyPixels {
            width: header.width,
            height: header.height,
            limit: opts.max_pixels,
        });
    }
    let dct_scale = dct_scale_for(header, opts);
    let image = match header.format {
        ImageFormat::Jpeg => decode_jpeg(data, header, dct_scale)?,
        ImageFormat::Png => decode_png(data, header)?,
        ImageFormat::Webp => decode_webp(data, header)?,
    };
    let image = if opts.apply_orientation {
        apply_orientation(image, header.orientation)
    } else {
        image
    };
    Ok(Decoded {
        header: header.clone(),
        image,
        dct_scale,
    })
}

/// The DCT reduction (1, 2, 4 or 8) [`decode_with_header`] decodes `header`'s image at under
/// `opts`: 1 unless it is a JPEG, `opts.min_size` is set and the image is much larger than it.
pub fn dct_scale_for(header: &ImageHeader, opts: &DecodeOptions) -> u32 {
    let Some(need) = opts.min_size else { return 1 };
    // 4-component (CMYK/YCCK) JPEGs always decode at full size: jpeg-decoder's reduced-scale
    // output for them is wrong when components are subsampled.
    if header.format != ImageFormat::Jpeg || header.components == 4 {
        return 1;
    }
    // min_size is in displayed orientation; the DCT works on stored axes.
    let need = if header.orientation >= 5 {
        (need.1, need.0)
    } else {
        need
    };
    let scale = choose_dct_scale((header.width, header.height), need);
    // A larger decode keeps the margin; see turbo::max_dct_scale for why.
    #[cfg(feature = "turbojpeg")]
    let scale = scale.min(turbo::max_dct_scale(header));
    scale
}

/// The largest JPEG DCT reduction (denominator 1, 2, 4 or 8) whose output, `ceil(src / d)`, is
/// still at least [`DCT_SCALE_MARGIN`] × `needed` in both dimensions. Both sizes are in the same
/// (stored) orientation.
pub fn choose_dct_scale(src: (u32, u32), needed: (u32, u32)) -> u32 {
    for d in [8, 4, 2] {
        let (w, h) = dct_scaled_size(src, d);
        if f64::from(w) >= DCT_SCALE_MARGIN * f64::from(needed.0)
            && f64::from(h) >= DCT_SCALE_MARGIN * f64::from(needed.1)
        {
            return d;
        }
    }
    1
}

/// Size of a JPEG decoded at scale 1/`denom`: each side rounded up, as libjpeg and jpeg-decoder do.
pub fn dct_scaled_size(src: (u32, u32), denom: u32) -> (u32, u32) {
    let denom = denom.max(1);
    (src.0.div_ceil(denom), src.1.div_ceil(denom))
}

fn decode_err(format: ImageFormat, reason: impl std::fmt::Display) -> Error {
    Error::Decode {
        format: format.name(),
        reason: reason.to_string(),
    }
}

/// Checks that a decoder produced the size the header promised (the rest of the pipeline plans
/// from the header).
fn check_size(format: ImageFormat, got: (u32, u32), want: (u32, u32)) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(decode_err(
            format,
            format!(
                "decoder reports {}x{} but the header says {}x{}",
                got.0, got.1, want.0, want.1
            ),
        ))
    }
}

// ---- JPEG --------------------------------------------------------------------------------

fn decode_jpeg(data: &[u8], header: &ImageHeader, dct_scale: u32) -> Result<RgbImage> {
    let f = ImageFormat::Jpeg;
    if !jpeg_has_eoi(data) {
        return Err(decode_err(
            f,
            format!(
                "image file is truncated: no EOI marker in {} bytes",
                data.len()
            ),
        ));
    }
    #[cfg(feature = "turbojpeg")]
    if header.components != 4 {
        return turbo::decode(data, header, dct_scale).or_else(|turbo_err| {
            // libjpeg-turbo treats its warnings (corrupt data) as errors here; the pure-Rust
            // decoders may still read the file, as they did without the feature.
            decode_jpeg_pure(data, header, dct_scale).map_err(|pure_err| {
                decode_err(
                    f,
                    format!(
                        "libjpeg-turbo: {}; {}",
                        error_reason(&turbo_err),
                        error_reason(&pure_err)
                    ),
                )
            })
        });
    }
    decode_jpeg_pure(data, header, dct_scale)
}

/// The pure-Rust JPEG path (zune-jpeg, jpeg-decoder), after the EOI check.
fn decode_jpeg_pure(data: &[u8], header: &ImageHeader, dct_scale: u32) -> Result<RgbImage> {
    let f = ImageFormat::Jpeg;
    if dct_scale > 1 {
        return decode_jpeg_with_jpeg_decoder(data, header, dct_scale);
    }
    // zune-jpeg mis-decodes 4-component JPEGs with subsampled components (wrong colors when
    // baseline, an error when progressive); jpeg-decoder matches Pillow on them (max 2 levels).
    if header.components == 4 && !jpeg_sampling_uniform(data) {
        return decode_jpeg_with_jpeg_decoder(data, header, 1);
    }
    decode_jpeg_with_zune(data, header).or_else(|zune_err| {
        // libjpeg (Pillow) decodes some damaged files that zune-jpeg refuses; a second decoder
        // gets closer to that, and costs nothing on the common path.
        decode_jpeg_with_jpeg_decoder(data, header, 1).map_err(|jd_err| {
            decode_err(
                f,
                format!(
                    "{}; jpeg-decoder: {}",
                    error_reason(&zune_err),
                    error_reason(&jd_err)
                ),
            )
        })
    })
}

/// The reason text of a decode error (for combining two decoders' messages).
fn error_reason(e: &Error) -> String {
    match e {
        Error::Decode { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

fn decode_jpeg_with_zune(data: &[u8], header: &ImageHeader) -> Result<RgbImage> {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;

    let f = ImageFormat::Jpeg;
    let (w, h) = (header.width, header.height);
    // Capping zune's limits at the probed size means a frame header that disagrees with the
    // probe cannot make it allocate more than the pixel limit allowed.
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(w as usize)
        .set_max_height(h as usize);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(data), options);
    decoder.decode_headers().map_err(|e| decode_err(f, e))?;
    let info = decoder
        .info()
        .ok_or_else(|| decode_err(f, "no image info after headers"))?;
    check_size(f, (info.width.into(), info.height.into()), (w, h))?;
    if decoder.output_colorspace() != Some(ColorSpace::RGB) {
        return Err(decode_err(f, "decoder cannot produce RGB for this image"));
    }
    let len = 3 * w as usize * h as usize;
    // Zeroed, so a decoder that stops early on a damaged stream leaves no stale pixels; `tile`
    // hands decoded images back once they are tiled, saving the page faults of a fresh buffer.
    let mut out = crate::backend::buffer_pool::take_zeroed::<u8>(len);
    decoder
        .decode_into(&mut out)
        .map_err(|e| decode_err(f, e))?;
    Ok(RgbImage {
        width: w,
        height: h,
        data: out,
    })
}

/// 255-scaled product rounded like Pillow's `MULDIV255`.
#[inline]
fn muldiv255(a: u8, b: u8) -> u8 {
    let t = u32::from(a) * u32::from(b) + 128;
    (((t >> 8) + t) >> 8) as u8
}

/// jpeg-decoder at scale 1/`denom` (1 = full size): slower than zune-jpeg at full size, but it
/// has DCT-domain scaling and handles subsampled CMYK.
fn decode_jpeg_with_jpeg_decoder(
    data: &[u8],
    header: &ImageHeader,
    denom: u32,
) -> Result<RgbImage> {
    use jpeg_decoder::PixelFormat;

    let f = ImageFormat::Jpeg;
    let (w, h) = dct_scaled_size((header.width, header.height), denom);
    let mut decoder = jpeg_decoder::Decoder::new(data);
    decoder.read_info().map_err(|e| decode_err(f, e))?;
    let info = decoder
        .info()
        .ok_or_else(|| decode_err(f, "no image info after headers"))?;
    check_size(
        f,
        (info.width.into(), info.height.into()),
        (header.width, header.height),
    )?;
    if denom > 1 {
        // jpeg-decoder picks the smallest scale whose output reaches the request; asking for
        // exactly the scaled size selects our denominator.
        let got = decoder
            .scale(w as u16, h as u16)
            .map_err(|e| decode_err(f, e))?;
        check_size(f, (got.0.into(), got.1.into()), (w, h))?;
    }
    // The pixel limit was checked on the header; let jpeg-decoder allocate what that allows.
    decoder.set_max_decoding_buffer_size(usize::MAX);
    let pixels = decoder.decode().map_err(|e| decode_err(f, e))?;
    let n = w as usize * h as usize;
    let data = match info.pixel_format {
        PixelFormat::RGB24 if pixels.len() == 3 * n => pixels,
        PixelFormat::L8 if pixels.len() == n => pixels.iter().flat_map(|&v| [v, v, v]).collect(),
        PixelFormat::CMYK32 if pixels.len() == 4 * n => {
            // jpeg-decoder returns non-inverted C, M, Y, K (and YCCK already taken to CMYK),
            // which is Pillow's CMYK after its Adobe-inverted read; then Pillow's cmyk2rgb.
            let (px, _) = pixels.as_chunks::<4>();
            px.iter()
                .flat_map(|&[c, m, y, k]| {
                    let nk = 255 - k;
                    [
                        nk - muldiv255(c, nk),
                        nk - muldiv255(m, nk),
                        nk - muldiv255(y, nk),
                    ]
                })
                .collect()
        }
        other => {
            return Err(decode_err(
                f,
                format!(
                    "unsupported pixel format {other:?} ({} bytes for {w}x{h})",
                    pixels.len()
                ),
            ));
        }
    };
    Ok(RgbImage {
        width: w,
        height: h,
        data,
    })
}

// ---- PNG ---------------------------------------------------------------------------------

fn decode_png(data: &[u8], header: &ImageHeader) -> Result<RgbImage> {
    use png::{BitDepth, ColorType, Transformations};

    let f = ImageFormat::Png;
    let (w, h) = (header.width, header.height);
    let mut decoder = png::Decoder::new(Cursor::new(data));
    // EXPAND: palette → RGB(A), low-bit gray → 8-bit, tRNS → alpha. STRIP_16 keeps the high byte.
    decoder.set_transformations(Transformations::EXPAND | Transformations::STRIP_16);
    decoder.set_ignore_text_chunk(true);
    decoder.set_ignore_iccp_chunk(true);
    // The pixel limit has been checked; the png crate's default 64 MiB cap would refuse images
    // Pillow opens. Allow the decoded frame (at most 8 bytes/pixel) plus slack for chunks.
    let frame_bytes = (w as usize)
        .saturating_mul(h as usize)
        .saturating_mul(8)
        .saturating_add(1 << 24);
    decoder.set_limits(png::Limits { bytes: frame_bytes });
    let mut reader = decoder.read_info().map_err(|e| decode_err(f, e))?;
    let png_info = reader.info();
    check_size(f, (png_info.width, png_info.height), (w, h))?;
    let (color, depth) = reader.output_color_type();
    if depth != BitDepth::Eight {
        return Err(decode_err(
            f,
            format!("unexpected output bit depth {depth:?}"),
        ));
    }
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| decode_err(f, "image too large for this platform"))?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(|e| decode_err(f, e))?;
    check_size(f, (frame.width, frame.height), (w, h))?;
    let channels = match color {
        ColorType::Grayscale => 1,
        ColorType::GrayscaleAlpha => 2,
        ColorType::Rgb => 3,
        ColorType::Rgba => 4,
        ColorType::Indexed => {
            return Err(decode_err(f, "palette was not expanded"));
        }
    };
    let row = channels * w as usize;
    let n = w as usize * h as usize;
    if frame.line_size < row || buf.len() < frame.line_size * h as usize {
        return Err(decode_err(f, "decoded rows shorter than the image width"));
    }
    let rows = buf.chunks_exact(frame.line_size).take(h as usize);
    let out: Vec<u8> = match channels {
        3 if frame.line_size == row => {
            buf.truncate(3 * n);
            buf
        }
        _ => {
            let mut out = Vec::with_capacity(3 * n);
            for line in rows {
                let line = &line[..row];
                match channels {
                    1 => out.extend(line.iter().flat_map(|&v| [v, v, v])),
                    2 => out.extend(line.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0]])),
                    3 => out.extend_from_slice(line),
                    _ => out.extend(line.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]])),
                }
            }
            out
        }
    };
    Ok(RgbImage {
        width: w,
        height: h,
        data: out,
    })
}

// ---- WebP --------------------------------------------------------------------------------

fn decode_webp(data: &[u8], header: &ImageHeader) -> Result<RgbImage> {
    let f = ImageFormat::Webp;
    let (w, h) = (header.width, header.height);
    let mut decoder =
        image_webp::WebPDecoder::new(Cursor::new(data)).map_err(|e| decode_err(f, e))?;
    check_size(f, decoder.dimensions(), (w, h))?;
    let size = decoder
        .output_buffer_size()
        .ok_or_else(|| decode_err(f, "image too large for this platform"))?;
    decoder.set_memory_limit(size.saturating_add(1 << 24));
    let mut buf = vec![0u8; size];
    decoder.read_image(&mut buf).map_err(|e| decode_err(f, e))?;
    let n = w as usize * h as usize;
    let data = if decoder.has_alpha() {
        let (px, _) = buf.as_chunks::<4>();
        px.iter().flat_map(|&[r, g, b, _]| [r, g, b]).collect()
    } else {
        buf
    };
    if data.len() != 3 * n {
        return Err(decode_err(f, "decoded buffer has the wrong size"));
    }
    Ok(RgbImage {
        width: w,
        height: h,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::test_images::{
        JpegSpec, PngExtras, exif, fixture, jpeg, pattern, png, png_with, smooth, webp_lossless,
    };
    use jpeg_encoder::{ColorType as JpegColor, SamplingFactor};
    use png::{BitDepth, ColorType};

    fn full() -> DecodeOptions {
        DecodeOptions::default()
    }

    /// Mean and max absolute difference over all samples.
    pub(super) fn diff(a: &RgbImage, b: &RgbImage) -> (f64, u8) {
        assert_eq!((a.width, a.height), (b.width, b.height));
        let mut sum = 0u64;
        let mut max = 0u8;
        for (x, y) in a.data.iter().zip(&b.data) {
            let d = x.abs_diff(*y);
            sum += u64::from(d);
            max = max.max(d);
        }
        (sum as f64 / a.data.len() as f64, max)
    }

    /// Our decode of `name` against Pillow's `convert("RGB")` of it (`<stem>.ref.png`).
    fn vs_pillow(name: &str) -> (f64, u8) {
        let ours = decode_rgb8(&fixture(name), &full()).unwrap();
        let stem = name.rsplit_once('.').unwrap().0;
        let reference = decode_rgb8(&fixture(&format!("{stem}.ref.png")), &full()).unwrap();
        diff(&ours, &reference)
    }

    #[test]
    fn jpeg_close_to_pillow() {
        // Bounds are a little above what was measured (see the report in decode.rs history):
        // zune-jpeg and libjpeg-turbo differ by IDCT rounding and chroma upsampling only.
        for (name, mean_max, abs_max) in [
            ("s444.jpg", 0.6, 3),
            ("s422.jpg", 0.6, 3),
            ("s420.jpg", 0.6, 3),
            ("s420_prog.jpg", 0.6, 3),
            ("gray.jpg", 0.6, 3),
        ] {
            let (mean, max) = vs_pillow(name);
            eprintln!("{name}: mean {mean:.4} max {max}");
            assert!(
                mean <= mean_max && max <= abs_max,
                "{name}: mean {mean} max {max}"
            );
        }
    }

    #[test]
    fn cmyk_ycck_jpeg_and_lossy_webp_match_pillow() {
        for name in ["cmyk.jpg", "ycck.jpg", "lossy.webp", "lossy_alpha.webp"] {
            let (mean, max) = vs_pillow(name);
            eprintln!("{name}: mean {mean:.4} max {max}");
            assert!(mean <= 0.6 && max <= 3, "{name}: mean {mean} max {max}");
        }
    }

    #[test]
    fn webp_lossless_exact() {
        for alpha in [false, true] {
            let data = webp_lossless(31, 7, alpha, None);
            let img = decode_rgb8(&data, &full()).unwrap();
            let src = pattern(31, 7, if alpha { 4 } else { 3 });
            let want: Vec<u8> = if alpha {
                src.chunks_exact(4)
                    .flat_map(|p| [p[0], p[1], p[2]])
                    .collect()
            } else {
                src
            };
            assert_eq!(img.data, want);
        }
    }

    #[test]
    fn jpeg_gray_is_replicated_and_quality100_is_close_to_source() {
        let spec = JpegSpec {
            color: JpegColor::Luma,
            quality: 100,
            ..JpegSpec::rgb(20, 12)
        };
        let img = decode_rgb8(&jpeg(&spec), &full()).unwrap();
        let src = pattern(20, 12, 1);
        for (px, s) in img.data.chunks_exact(3).zip(&src) {
            assert!(px[0] == px[1] && px[1] == px[2]);
            assert!(px[0].abs_diff(*s) <= 8, "{} vs {s}", px[0]);
        }
        // 4:4:4 color at quality 100, baseline and progressive, with restart markers.
        for progressive in [false, true] {
            let spec = JpegSpec {
                quality: 100,
                progressive,
                sampling: SamplingFactor::R_4_4_4,
                restart_interval: Some(1),
                ..JpegSpec::rgb(20, 12)
            };
            let img = decode_rgb8(&jpeg(&spec), &full()).unwrap();
            let src = RgbImage {
                width: 20,
                height: 12,
                data: pattern(20, 12, 3),
            };
            let (mean, _) = diff(&img, &src);
            assert!(mean < 3.0, "progressive={progressive}: mean {mean}");
        }
    }

    #[test]
    fn png_every_color_type_to_rgb() {
        let (w, h) = (5u32, 2u32);
        // 8-bit gray, gray+alpha, RGB, RGBA: exact.
        let g: Vec<u8> = (0..10).map(|i| i * 25).collect();
        let want_gray: Vec<u8> = g.iter().flat_map(|&v| [v, v, v]).collect();
        let img = decode_rgb8(
            &png(w, h, ColorType::Grayscale, BitDepth::Eight, &g),
            &full(),
        )
        .unwrap();
        assert_eq!(img.data, want_gray);
        let ga: Vec<u8> = g.iter().flat_map(|&v| [v, 255 - v]).collect();
        let img = decode_rgb8(
            &png(w, h, ColorType::GrayscaleAlpha, BitDepth::Eight, &ga),
            &full(),
        )
        .unwrap();
        assert_eq!(img.data, want_gray);
        let rgb = pattern(w, h, 3);
        let img = decode_rgb8(&png(w, h, ColorType::Rgb, BitDepth::Eight, &rgb), &full()).unwrap();
        assert_eq!(img.data, rgb);
        let rgba = pattern(w, h, 4);
        let img =
            decode_rgb8(&png(w, h, ColorType::Rgba, BitDepth::Eight, &rgba), &full()).unwrap();
        let want: Vec<u8> = rgba
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        assert_eq!(img.data, want);
        // Palette with tRNS: palette colors, transparency ignored (Pillow's P → RGB).
        let palette = [10u8, 20, 30, 40, 50, 60, 70, 80, 90];
        let idx = [0u8, 1, 2, 1, 0, 2, 2, 1, 0, 0];
        let img = decode_rgb8(
            &png_with(
                w,
                h,
                ColorType::Indexed,
                BitDepth::Eight,
                &idx,
                &PngExtras {
                    palette: Some(&palette),
                    trns: Some(&[0, 128]),
                    ..Default::default()
                },
            ),
            &full(),
        )
        .unwrap();
        let want: Vec<u8> = idx
            .iter()
            .flat_map(|&i| palette[3 * i as usize..][..3].to_vec())
            .collect();
        assert_eq!(img.data, want);
        // 2-bit gray scales 0..3 to 0, 85, 170, 255 (as Pillow's L;2 unpacker does).
        let img = decode_rgb8(
            &png(4, 1, ColorType::Grayscale, BitDepth::Two, &[0b0001_1011]),
            &full(),
        )
        .unwrap();
        assert_eq!(
            img.data,
            [0, 0, 0, 85, 85, 85, 170, 170, 170, 255, 255, 255]
        );
        // 1-bit gray.
        let img = decode_rgb8(
            &png(3, 1, ColorType::Grayscale, BitDepth::One, &[0b1010_0000]),
            &full(),
        )
        .unwrap();
        assert_eq!(img.data, [255, 255, 255, 0, 0, 0, 255, 255, 255]);
    }

    #[test]
    fn png_16_bit_keeps_the_high_byte() {
        // Values around the byte boundaries; Pillow gives the high byte for 16-bit RGB/RGBA/LA
        // (checked with Pillow 13). For 16-bit gray Pillow would clip to 255; we do not.
        let vals: [u16; 8] = [0, 255, 256, 383, 384, 32768, 65280, 65535];
        let want: Vec<u8> = vals.iter().map(|v| (v >> 8) as u8).collect();
        let be = |vs: &[u16]| -> Vec<u8> { vs.iter().flat_map(|v| v.to_be_bytes()).collect() };

        let img = decode_rgb8(
            &png(8, 1, ColorType::Grayscale, BitDepth::Sixteen, &be(&vals)),
            &full(),
        )
        .unwrap();
        assert_eq!(
            img.data,
            want.iter().flat_map(|&v| [v, v, v]).collect::<Vec<_>>()
        );

        let rgb: Vec<u16> = vals.iter().flat_map(|&v| [v, 65535 - v, v / 2]).collect();
        let img = decode_rgb8(
            &png(8, 1, ColorType::Rgb, BitDepth::Sixteen, &be(&rgb)),
            &full(),
        )
        .unwrap();
        assert_eq!(
            img.data,
            rgb.iter().map(|v| (v >> 8) as u8).collect::<Vec<_>>()
        );

        let rgba: Vec<u16> = vals
            .iter()
            .flat_map(|&v| [v, 65535 - v, v / 2, 1000])
            .collect();
        let img = decode_rgb8(
            &png(8, 1, ColorType::Rgba, BitDepth::Sixteen, &be(&rgba)),
            &full(),
        )
        .unwrap();
        assert_eq!(
            img.data,
            rgb.iter().map(|v| (v >> 8) as u8).collect::<Vec<_>>()
        );

        let ga: Vec<u16> = vals.iter().flat_map(|&v| [v, 7]).collect();
        let img = decode_rgb8(
            &png(8, 1, ColorType::GrayscaleAlpha, BitDepth::Sixteen, &be(&ga)),
            &full(),
        )
        .unwrap();
        assert_eq!(
            img.data,
            want.iter().flat_map(|&v| [v, v, v]).collect::<Vec<_>>()
        );
    }

    /// A minimal JPEG whose SOF0 claims `w`x`h` (no tables, no scan): enough for the probe.
    fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
        let mut d = vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 8];
        d.extend_from_slice(&h.to_be_bytes());
        d.extend_from_slice(&w.to_be_bytes());
        d.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1, 0xFF, 0xD9]);
        d
    }

    #[test]
    fn too_many_pixels_refused_from_the_header() {
        let big_jpeg = jpeg_claiming(30000, 30000);
        let mut big_png = png(1, 1, ColorType::Rgb, BitDepth::Eight, &[1, 2, 3]);
        big_png[16..20].copy_from_slice(&30000u32.to_be_bytes());
        big_png[20..24].copy_from_slice(&30000u32.to_be_bytes());
        for data in [big_jpeg, big_png] {
            match decode_rgb8(&data, &full()) {
                Err(Error::TooManyPixels {
                    width,
                    height,
                    limit,
                }) => {
                    assert_eq!((width, height, limit), (30000, 30000, DEFAULT_MAX_PIXELS))
                }
                other => panic!("expected TooManyPixels, got {other:?}"),
            }
        }
        // The limit is configurable and applies to stored pixels.
        let small = jpeg(&JpegSpec::rgb(100, 100));
        let opts = DecodeOptions {
            max_pixels: 9_999,
            ..full()
        };
        assert!(matches!(
            decode_rgb8(&small, &opts),
            Err(Error::TooManyPixels { .. })
        ));
        let opts = DecodeOptions {
            max_pixels: 10_000,
            ..full()
        };
        assert!(decode_rgb8(&small, &opts).is_ok());
    }

    #[test]
    fn truncated_and_corrupt_inputs_are_errors() {
        let base = jpeg(&JpegSpec {
            progressive: true,
            ..JpegSpec::rgb(64, 48)
        });
        for cut in [base.len() - 2, base.len() - 10, base.len() / 2] {
            match decode_rgb8(&base[..cut], &full()) {
                Err(Error::Decode { reason, .. }) => {
                    assert!(reason.contains("truncated"), "{reason}")
                }
                other => panic!("cut at {cut}: expected a truncation error, got {other:?}"),
            }
        }
        // Trailing bytes after EOI are fine (Pillow ignores them too).
        let mut trailing = base.clone();
        trailing.extend_from_slice(&[0, 1, 2, 3]);
        assert!(decode_rgb8(&trailing, &full()).is_ok());
        // A header-only JPEG (no scan) is an error, not a panic.
        assert!(matches!(
            decode_rgb8(&jpeg_claiming(16, 16), &full()),
            Err(Error::Decode { .. })
        ));

        let png_data = png(9, 9, ColorType::Rgb, BitDepth::Eight, &pattern(9, 9, 3));
        for cut in [40, png_data.len() / 2, png_data.len() - 12] {
            assert!(
                matches!(
                    decode_rgb8(&png_data[..cut], &full()),
                    Err(Error::Decode { .. })
                ),
                "png cut {cut}"
            );
        }
        let webp = webp_lossless(9, 9, false, None);
        assert!(matches!(
            decode_rgb8(&webp[..webp.len() / 2], &full()),
            Err(Error::Decode { .. })
        ));

        // Flipped bytes anywhere: an error or an image of the probed size, never a panic.
        for data in [&base, &png_data, &webp] {
            for i in (0..data.len()).step_by(7) {
                let mut m = data.to_vec();
                m[i] ^= 0x5A;
                if let Ok(d) = decode(&m, &full()) {
                    let (w, h) = d.header.oriented_size();
                    assert_eq!((d.image.width, d.image.height), (w, h));
                    assert_eq!(d.image.data.len(), 3 * w as usize * h as usize);
                }
            }
        }
    }

    #[test]
    fn orientation_is_applied_on_request() {
        let spec = JpegSpec {
            app: vec![(1, exif(true, Some((3, 1, 6))))],
            sampling: SamplingFactor::R_4_4_4,
            quality: 100,
            ..JpegSpec::rgb(40, 10)
        };
        let data = jpeg(&spec);
        let upright = decode_rgb8(&data, &full()).unwrap();
        assert_eq!((upright.width, upright.height), (10, 40));
        let stored = decode_rgb8(
            &data,
            &DecodeOptions {
                apply_orientation: false,
                ..full()
            },
        )
        .unwrap();
        assert_eq!((stored.width, stored.height), (40, 10));
        assert_eq!(apply_orientation(stored, 6), upright);
    }

    #[test]
    fn dct_scale_choice() {
        // 2x margin: 4000x3000 → 448 needs 896; 1/4 gives 1000x750 (750 < 896), 1/2 gives 2000x1500.
        assert_eq!(choose_dct_scale((4000, 3000), (448, 448)), 2);
        assert_eq!(choose_dct_scale((4000, 3000), (224, 224)), 4);
        assert_eq!(choose_dct_scale((4000, 3000), (100, 100)), 8);
        assert_eq!(choose_dct_scale((4000, 3000), (1000, 10)), 2);
        assert_eq!(choose_dct_scale((4000, 3000), (1001, 10)), 1);
        assert_eq!(choose_dct_scale((640, 480), (448, 448)), 1);
        // Rounding up: 17 px at 1/8 is 3 px.
        assert_eq!(dct_scaled_size((17, 9), 8), (3, 2));
        assert_eq!(choose_dct_scale((17, 9), (1, 1)), 8);
        assert_eq!(dct_scaled_size((17, 9), 1), (17, 9));
    }

    #[test]
    fn reduced_scale_jpeg_decode() {
        let (w, h) = (200u16, 120u16);
        for (color, channels) in [(JpegColor::Rgb, 3), (JpegColor::Luma, 1)] {
            for sampling in [SamplingFactor::R_4_2_0, SamplingFactor::R_4_4_4] {
                for progressive in [false, true] {
                    let spec = JpegSpec {
                        color,
                        sampling,
                        progressive,
                        pixels: Some(smooth(w.into(), h.into(), channels)),
                        ..JpegSpec::rgb(w, h)
                    };
                    let data = jpeg(&spec);
                    let full_img = decode_rgb8(&data, &full()).unwrap();
                    for (need, denom) in
                        [((50, 30), 2), ((25, 15), 4), ((12, 7), 8), ((101, 10), 1)]
                    {
                        let opts = DecodeOptions {
                            min_size: Some(need),
                            ..full()
                        };
                        let d = decode(&data, &opts).unwrap();
                        assert_eq!(d.dct_scale, denom, "{color:?} {need:?}");
                        let (sw, sh) = dct_scaled_size((w.into(), h.into()), denom);
                        assert_eq!((d.image.width, d.image.height), (sw, sh));
                        // On smooth content the reduced decode is close to a box-filtered full
                        // decode (measured: mean 2.3 at 1/8 with 4:2:0, where jpeg-decoder upsamples
                        // 1/16-scale chroma; at most 1.0 otherwise).
                        let (mean, _) = diff(&d.image, &box_down(&full_img, denom));
                        assert!(
                            mean < 3.0,
                            "{color:?} {sampling:?} prog={progressive} 1/{denom}: mean {mean}"
                        );
                    }
                }
            }
        }
        // CMYK/YCCK: never reduced (jpeg-decoder's scaled CMYK is wrong when subsampled).
        for color in [JpegColor::Cmyk, JpegColor::CmykAsYcck] {
            let data = jpeg(&JpegSpec {
                color,
                ..JpegSpec::rgb(w, h)
            });
            let opts = DecodeOptions {
                min_size: Some((10, 10)),
                ..full()
            };
            let d = decode(&data, &opts).unwrap();
            assert_eq!((d.dct_scale, d.image.width, d.image.height), (1, 200, 120));
        }
        // Orientation-aware: stored 200x120 with orientation 6 is 120x200 upright. Needing
        // 30x50 upright = 50x30 stored: 1/2 gives 100x60 ≥ 2×(50x30); 1/4 (50x30) does not.
        let spec = JpegSpec {
            app: vec![(1, exif(false, Some((3, 1, 6))))],
            ..JpegSpec::rgb(w, h)
        };
        let data = jpeg(&spec);
        let opts = DecodeOptions {
            min_size: Some((30, 50)),
            ..full()
        };
        let d = decode(&data, &opts).unwrap();
        assert_eq!(d.dct_scale, 2);
        assert_eq!((d.image.width, d.image.height), (60, 100));
        // Needing 50x30 upright = 30x50 stored: 1/2 gives 60 tall stored, < 2×50.
        let opts = DecodeOptions {
            min_size: Some((50, 30)),
            ..full()
        };
        assert_eq!(decode(&data, &opts).unwrap().dct_scale, 1);
    }

    #[test]
    fn subsampled_cmyk_matches_pillow_formula() {
        // zune-jpeg cannot do these; jpeg-decoder does. Baseline and progressive must agree
        // with each other and stay close to the source (Pillow's math on the stored CMYK).
        let (w, h) = (64u16, 40u16);
        let cmyk = smooth(w.into(), h.into(), 4);
        let mut outs = vec![];
        for progressive in [false, true] {
            let data = jpeg(&JpegSpec {
                color: JpegColor::Cmyk,
                progressive,
                quality: 100,
                pixels: Some(cmyk.clone()),
                ..JpegSpec::rgb(w, h)
            });
            outs.push(decode_rgb8(&data, &full()).unwrap());
        }
        assert_eq!(outs[0], outs[1]);
        let want: Vec<u8> = cmyk
            .chunks_exact(4)
            .flat_map(|p| {
                let nk = 255 - p[3];
                [
                    nk - muldiv255(p[0], nk),
                    nk - muldiv255(p[1], nk),
                    nk - muldiv255(p[2], nk),
                ]
            })
            .collect();
        let (mean, _) = diff(
            &outs[0],
            &RgbImage {
                width: w.into(),
                height: h.into(),
                data: want,
            },
        );
        assert!(mean < 2.0, "mean {mean}");
    }

    /// Box-averages `img` by `d` (edge blocks partial), for comparing against DCT scaling.
    pub(super) fn box_down(img: &RgbImage, d: u32) -> RgbImage {
        let (w, h) = dct_scaled_size((img.width, img.height), d);
        let mut data = Vec::with_capacity(3 * (w * h) as usize);
        for by in 0..h {
            for bx in 0..w {
                let mut acc = [0u32; 3];
                let mut n = 0;
                for y in by * d..((by + 1) * d).min(img.height) {
                    for x in bx * d..((bx + 1) * d).min(img.width) {
                        let p = img.pixel(x, y);
                        for c in 0..3 {
                            acc[c] += u32::from(p[c]);
                        }
                        n += 1;
                    }
                }
                data.extend(acc.iter().map(|a| ((a + n / 2) / n) as u8));
            }
        }
        RgbImage {
            width: w,
            height: h,
            data,
        }
    }

    /// Writes the fixtures that Pillow cannot make (YCCK JPEG); run with `--ignored` and then
    /// `tests/fixtures/images/make_images.py` to refresh their references.
    #[test]
    #[ignore]
    fn write_rust_made_fixtures() {
        let spec = JpegSpec {
            color: JpegColor::CmykAsYcck,
            sampling: SamplingFactor::R_4_2_0,
            ..JpegSpec::rgb(96, 64)
        };
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images");
        std::fs::write(dir.join("ycck.jpg"), jpeg(&spec)).unwrap();
    }

    /// Dumps our decode of every file in $VLMPREP_DUMP_IN to $VLMPREP_DUMP_OUT/<name>.rgb
    /// (raw RGB, with the size in the name) for comparison with Pillow by
    /// tests/fixtures/images/compare_pillow.py.
    #[test]
    #[ignore]
    fn dump_decodes_for_pillow_comparison() {
        let (Ok(src), Ok(dst)) = (
            std::env::var("VLMPREP_DUMP_IN"),
            std::env::var("VLMPREP_DUMP_OUT"),
        ) else {
            eprintln!("set VLMPREP_DUMP_IN and VLMPREP_DUMP_OUT");
            return;
        };
        // VLMPREP_DUMP_SCALE=2|4|8 forces that DCT scale for JPEGs.
        let scale: u32 = std::env::var("VLMPREP_DUMP_SCALE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        for entry in std::fs::read_dir(src).unwrap() {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let t = std::time::Instant::now();
            let result = probe(&data).and_then(|h| match h.format {
                ImageFormat::Jpeg => decode_jpeg(&data, &h, scale),
                ImageFormat::Png => decode_png(&data, &h),
                ImageFormat::Webp => decode_webp(&data, &h),
            });
            eprintln!("{name}: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
            match result {
                Ok(img) => {
                    let out = format!("{dst}/{name}.{}x{}.rgb", img.width, img.height);
                    std::fs::write(out, &img.data).unwrap();
                }
                Err(e) => eprintln!("{name}: {e}"),
            }
        }
    }
}
