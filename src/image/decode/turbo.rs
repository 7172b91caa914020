//! JPEG decode through libjpeg-turbo (feature `turbojpeg`): full size and DCT-scaled (1/2, 1/4,
//! 1/8), written straight into the RGB8 output buffer by one TurboJPEG decompressor per thread.
//!
//! Only 1- and 3-component JPEGs come here; the caller keeps CMYK/YCCK on the pure-Rust path and
//! falls back to it when this one fails.

use std::cell::RefCell;

use turbojpeg::{Decompressor, Image, PixelFormat, ScalingFactor};

use super::{check_size, dct_scaled_size, decode_err};
use crate::error::Result;
use crate::image::{ChromaSubsampling, ImageFormat, ImageHeader, RgbImage};

thread_local! {
    /// Created on first use; dropped after a failed decode so that no state from a broken file
    /// can reach the next one.
    static DECOMPRESSOR: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
}

/// Decodes `data` (already checked to end with EOI) to RGB8 at scale 1/`denom` (1, 2, 4 or 8).
///
/// libjpeg-turbo's warnings (corrupt data, premature end of data) are errors here: TurboJPEG
/// reports them as a failed call, so a damaged file never comes back as a gray-filled image.
pub(super) fn decode(data: &[u8], header: &ImageHeader, denom: u32) -> Result<RgbImage> {
    let f = ImageFormat::Jpeg;
    let (w, h) = dct_scaled_size((header.width, header.height), denom);
    let result = DECOMPRESSOR.with_borrow_mut(|slot| {
        let d = match slot {
            Some(d) => d,
            None => slot.insert(Decompressor::new().map_err(|e| decode_err(f, e))?),
        };
        let turbo_header = d.read_header(data).map_err(|e| decode_err(f, e))?;
        // The pixel limit was checked on the probed size; refuse a frame that disagrees with it.
        check_size(
            f,
            (
                u32::try_from(turbo_header.width).unwrap_or(u32::MAX),
                u32::try_from(turbo_header.height).unwrap_or(u32::MAX),
            ),
            (header.width, header.height),
        )?;
        d.set_scaling_factor(ScalingFactor::new(1, denom as usize))
            .map_err(|e| decode_err(f, e))?;
        let pitch = 3 * w as usize;
        let mut pixels = vec![0u8; pitch * h as usize];
        let image = Image {
            pixels: pixels.as_mut_slice(),
            width: w as usize,
            pitch,
            height: h as usize,
            format: PixelFormat::RGB,
        };
        d.decompress(data, image).map_err(|e| decode_err(f, e))?;
        Ok(pixels)
    });
    match result {
        Ok(data) => Ok(RgbImage {
            width: w,
            height: h,
            data,
        }),
        Err(e) => {
            DECOMPRESSOR.with_borrow_mut(|slot| *slot = None);
            Err(e)
        }
    }
}

/// The largest DCT reduction (denominator) to ask libjpeg-turbo for with this chroma layout.
///
/// At 1/8 luma decodes to 1x1 blocks. libjpeg-turbo scales 4:2:0 chroma to 2x2 blocks to match,
/// but cannot do that for 4:2:2 or 4:4:0 (one axis only), and upsamples the 1x1 chroma blocks by
/// replication, since its smooth upsampling needs blocks larger than one pixel (measured on a
/// smooth 4:2:2 image: mean error 3.5 against a box-filtered full decode, 0.6 at 1/4). 4:1:1
/// chroma is always replicated, so it stays nearer to full size.
pub(super) fn max_dct_scale(header: &ImageHeader) -> u32 {
    match header.subsampling {
        None
        | Some(ChromaSubsampling::Gray | ChromaSubsampling::S444 | ChromaSubsampling::S420) => 8,
        Some(ChromaSubsampling::S422 | ChromaSubsampling::S440) => 4,
        Some(ChromaSubsampling::S411 | ChromaSubsampling::Other) => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::decode::tests::{box_down, diff};
    use crate::image::decode::{DecodeOptions, decode_jpeg, decode_jpeg_pure};
    use crate::image::probe::probe;
    use crate::image::test_images::{JpegSpec, jpeg, smooth};
    use jpeg_encoder::{ColorType as JpegColor, SamplingFactor};

    /// Generated JPEGs covering the layouts that take this path.
    fn specs(w: u16, h: u16) -> Vec<JpegSpec> {
        let mut out = vec![];
        for (color, channels) in [(JpegColor::Rgb, 3), (JpegColor::Luma, 1)] {
            for sampling in [
                SamplingFactor::R_4_2_0,
                SamplingFactor::R_4_2_2,
                SamplingFactor::R_4_4_4,
            ] {
                for progressive in [false, true] {
                    out.push(JpegSpec {
                        color,
                        sampling,
                        progressive,
                        pixels: Some(smooth(w.into(), h.into(), channels)),
                        ..JpegSpec::rgb(w, h)
                    });
                }
            }
        }
        out
    }

    #[test]
    fn agrees_with_the_pure_rust_path() {
        // Odd sizes so that partial MCUs and edge upsampling are covered.
        for spec in specs(203, 117) {
            let data = jpeg(&spec);
            let header = probe(&data).unwrap();
            let turbo = decode(&data, &header, 1).unwrap();
            let pure = decode_jpeg_pure(&data, &header, 1).unwrap();
            // IDCT rounding and chroma upsampling differ between zune-jpeg and libjpeg-turbo.
            let (mean, max) = diff(&turbo, &pure);
            assert!(
                mean < 0.6 && max <= 4,
                "{:?} {:?} prog={}: mean {mean} max {max}",
                spec.color,
                spec.sampling,
                spec.progressive
            );
        }
    }

    #[test]
    fn reduced_scale_has_the_promised_size_and_content() {
        for spec in specs(203, 117) {
            let data = jpeg(&spec);
            let header = probe(&data).unwrap();
            let full = decode(&data, &header, 1).unwrap();
            for denom in [2, 4, 8] {
                let img = decode(&data, &header, denom).unwrap();
                assert_eq!((img.width, img.height), dct_scaled_size((203, 117), denom));
                assert_eq!(img.data.len(), 3 * (img.width * img.height) as usize);
                // On smooth content DCT scaling is close to box-averaging the full decode.
                if denom > max_dct_scale(&header) {
                    // Measured: mean 3.5 at 1/8 for 4:2:2 (chroma replicated), hence the cap.
                    continue;
                }
                // On smooth content DCT scaling is close to box-averaging the full decode
                // (measured: mean at most 0.64; jpeg-decoder's was up to 2.3).
                let (mean, _) = diff(&img, &box_down(&full, denom));
                assert!(
                    mean < 1.0,
                    "{:?} {:?} prog={} 1/{denom}: mean {mean}",
                    spec.color,
                    spec.sampling,
                    spec.progressive
                );
            }
        }
    }

    #[test]
    fn public_decode_reports_the_scale_it_used() {
        // 4000x3000 needs only 100x100: 1/8, except for 4:2:2, which libjpeg-turbo does at 1/4.
        for (sampling, want) in [
            (SamplingFactor::R_4_2_0, 8),
            (SamplingFactor::R_4_4_4, 8),
            (SamplingFactor::R_4_2_2, 4),
        ] {
            let data = jpeg(&JpegSpec {
                sampling,
                ..JpegSpec::rgb(4000, 3000)
            });
            let opts = DecodeOptions {
                min_size: Some((100, 100)),
                ..DecodeOptions::default()
            };
            let d = crate::image::decode::decode(&data, &opts).unwrap();
            assert_eq!(d.dct_scale, want, "{sampling:?}");
            assert_eq!(
                (d.image.width, d.image.height),
                dct_scaled_size((4000, 3000), want)
            );
        }
    }

    #[test]
    fn damaged_files_fall_back_and_do_not_poison_the_thread() {
        let good = jpeg(&JpegSpec::rgb(64, 48));
        let header = probe(&good).unwrap();
        let want = decode(&good, &header, 1).unwrap();
        // Cut in the middle of the scan, then given an EOI: libjpeg-turbo warns about corrupt
        // data; that is an error here, and decode_jpeg answers what the pure-Rust path answers.
        let mut cut = good[..good.len() * 2 / 3].to_vec();
        cut.extend_from_slice(&[0xFF, 0xD9]);
        assert!(decode(&cut, &header, 1).is_err());
        assert_eq!(
            decode_jpeg(&cut, &header, 1).ok(),
            decode_jpeg_pure(&cut, &header, 1).ok()
        );
        // Garbage after the headers: an error, and the next good file decodes as before.
        let mut bad = good.clone();
        let n = bad.len();
        bad[n / 2..n - 2].fill(0x5A);
        let _ = decode(&bad, &header, 2);
        assert_eq!(decode(&good, &header, 1).unwrap(), want);
    }

    /// Times zune-jpeg and libjpeg-turbo full decodes on every JPEG in $VLMPREP_BENCH_DIR
    /// (one thread, best of 5 per image; $VLMPREP_BENCH_SCALE=2|4|8 for reduced scale, where the
    /// pure-Rust side is jpeg-decoder), e.g. `VLMPREP_BENCH_DIR=bench-data/photos-web cargo test
    /// --features turbojpeg --lib turbo::tests::time_decoders -- --ignored --nocapture` (the test
    /// profile is optimized; both decoders are timed in the same binary).
    #[test]
    #[ignore]
    fn time_decoders() {
        let Ok(dir) = std::env::var("VLMPREP_BENCH_DIR") else {
            eprintln!("set VLMPREP_BENCH_DIR");
            return;
        };
        let denom: u32 = std::env::var("VLMPREP_BENCH_SCALE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let best = |f: &dyn Fn() -> RgbImage| {
            (0..5)
                .map(|_| {
                    let t = std::time::Instant::now();
                    std::hint::black_box(f());
                    t.elapsed().as_secs_f64()
                })
                .fold(f64::INFINITY, f64::min)
        };
        let (mut total_pure, mut total_turbo, mut n) = (0.0, 0.0, 0);
        for path in files {
            let data = std::fs::read(&path).unwrap();
            let Ok(header) = probe(&data) else { continue };
            if header.format != ImageFormat::Jpeg {
                continue;
            }
            let pure = best(&|| decode_jpeg_pure(&data, &header, denom).unwrap());
            let turbo = best(&|| decode(&data, &header, denom).unwrap());
            eprintln!(
                "{}: {}x{} 1/{denom} pure {:.2} ms, turbo {:.2} ms ({:.2}x)",
                path.file_name().unwrap().to_string_lossy(),
                header.width,
                header.height,
                pure * 1e3,
                turbo * 1e3,
                pure / turbo
            );
            total_pure += pure;
            total_turbo += turbo;
            n += 1;
        }
        eprintln!(
            "{n} images, 1/{denom}: pure-Rust {:.2} ms/image, libjpeg-turbo {:.2} ms/image, {:.2}x",
            total_pure * 1e3 / f64::from(n),
            total_turbo * 1e3 / f64::from(n),
            total_pure / total_turbo
        );
    }
}
