//! nvJPEG decode (src/backend/cuda/nvjpeg.rs) against the CPU decoder, the reference: every
//! committed JPEG fixture (baseline, progressive, restart markers, gray, CMYK, YCCK, 4:2:0 /
//! 4:2:2 / 4:4:4, EXIF-rotated) plus PNG/WebP, EXIF variants built here for all eight
//! orientations, and broken files (truncated, no scan, not an image) that must fail alone while
//! the rest of their batch decodes.
//!
//! The GPU tests skip (with the reason printed) where `CudaBackend::new(0)` fails, unless
//! `VLMPREP_REQUIRE_GPU=1`, which turns the skip into a failure. The library test needs no GPU:
//! it loads libnvjpeg from `LD_LIBRARY_PATH` (the PyPI wheel `nvidia-nvjpeg` has one) and
//! resolves every bound symbol; it skips when no libnvjpeg is found.
#![cfg(feature = "cuda")]

use std::path::Path;
use std::sync::Arc;

use vlmprep::backend::cuda::CudaBackend;
use vlmprep::backend::cuda::nvjpeg::{DecodeRoute, NvJpegDecoder, probe_library};
use vlmprep::image::decode::{DEFAULT_MAX_PIXELS, DecodeOptions, decode};
use vlmprep::image::probe::probe;
use vlmprep::image::{ChromaSubsampling, ImageFormat};

/// Mean absolute difference allowed per image, in 8-bit levels (the brief's bound).
const MEAN_BOUND: f64 = 2.0;
/// Largest single difference for gray and 4:4:4 images: only the IDCT (nvJPEG's vs zune-jpeg's
/// integer IDCTs, each within ±1 of the exact transform per sample before clamping) and the
/// YCbCr→RGB rounding differ; a few levels each, so 16 leaves room without hiding a wrong
/// colour matrix or a shifted block (those give differences of 30+ levels).
const MAX_BOUND_FULL_CHROMA: u8 = 16;
/// Largest single difference for subsampled images: the chroma upsampling filters differ
/// (libjpeg-style triangle "fancy" upsampling on the CPU; nvJPEG's own interpolation, or
/// replication on the hardware engine), and at a sharp colour edge that difference is a large
/// fraction of the chroma step, amplified by up to 1.772 (Cb→B). It is confined to edge pixels,
/// which the mean bound and the tail bound below keep honest.
const MAX_BOUND_SUBSAMPLED: u8 = 128;
/// At most this fraction of bytes may differ by more than [`TAIL_LEVEL`] levels.
const TAIL_FRACTION: f64 = 0.01;
const TAIL_LEVEL: u8 = 8;

fn require_gpu() -> bool {
    std::env::var("VLMPREP_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// The backend, or `None` (with the reason printed) where there is no usable GPU.
fn backend_or_skip() -> Option<Arc<CudaBackend>> {
    match CudaBackend::new(0) {
        Ok(b) => Some(Arc::new(b)),
        Err(e) => {
            assert!(
                !require_gpu(),
                "VLMPREP_REQUIRE_GPU=1 but no GPU backend: {e}"
            );
            eprintln!("skipped: no CUDA GPU ({e})");
            None
        }
    }
}

/// A decoder on the backend, or `None` (printed) where nvJPEG is missing.
fn decoder_or_skip(backend: &Arc<CudaBackend>, hardware: bool) -> Option<NvJpegDecoder> {
    match NvJpegDecoder::new(backend.clone(), hardware) {
        Ok(d) => Some(d),
        Err(e) => {
            assert!(
                !require_gpu(),
                "VLMPREP_REQUIRE_GPU=1 but nvJPEG failed: {e}"
            );
            eprintln!("skipped: nvJPEG unavailable ({e})");
            None
        }
    }
}

fn read(rel: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `jpeg` with an EXIF APP1 segment (IFD0 Orientation = `orientation`) inserted after SOI.
fn with_exif(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut payload = b"Exif\0\0".to_vec();
    // Big-endian TIFF header, IFD0 at offset 8 with one SHORT entry, no next IFD.
    payload.extend_from_slice(b"MM\0\x2a\0\0\0\x08");
    payload.extend_from_slice(&1u16.to_be_bytes());
    payload.extend_from_slice(&0x0112u16.to_be_bytes());
    payload.extend_from_slice(&3u16.to_be_bytes());
    payload.extend_from_slice(&1u32.to_be_bytes());
    payload.extend_from_slice(&orientation.to_be_bytes());
    payload.extend_from_slice(&[0, 0]);
    payload.extend_from_slice(&0u32.to_be_bytes());
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&(payload.len() as u16 + 2).to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// The good inputs: (name, bytes).
fn good_inputs() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for f in [
        "s420.jpg",
        "s420_prog.jpg",
        "s422.jpg",
        "s444.jpg",
        "gray.jpg",
        "cmyk.jpg",
        "ycck.jpg",
    ] {
        v.push((f.to_owned(), read(&format!("images/{f}"))));
    }
    for f in [
        "pattern-701x233.jpg",
        "photo0-baseline420.jpg",
        "photo0-restart.jpg",
        "photo1-exif6.jpg",
        "photo1-progressive.jpg",
        "photo2-444.jpg",
        "photo2-exif3.jpg",
        "photo3-422.jpg",
        "photo4-gray.jpg",
        "photo5-cmyk.jpg",
        "tiny-40x30.jpg",
        "photo3.png",
        "photo1-lossy.webp",
    ] {
        v.push((f.to_owned(), read(&format!("pixels/inputs/{f}"))));
    }
    // Every orientation, on an odd-sized photo (so row/column mix-ups show) and on gray.
    let base = read("pixels/inputs/pattern-701x233.jpg");
    let gray = read("images/gray.jpg");
    for o in 1..=8u16 {
        v.push((format!("pattern-701x233+exif{o}"), with_exif(&base, o)));
        v.push((format!("gray+exif{o}"), with_exif(&gray, o)));
    }
    v
}

/// Inputs every decoder must refuse: (name, bytes).
fn bad_inputs() -> Vec<(String, Vec<u8>)> {
    let s444 = read("images/s444.jpg");
    let truncated = s444[..s444.len() * 6 / 10].to_vec();
    // Headers up to (not including) the scan, then EOI: nothing to decode.
    let s420 = read("images/s420.jpg");
    let sos = s420
        .windows(2)
        .position(|w| w == [0xFF, 0xDA])
        .expect("s420.jpg has a scan");
    let mut no_scan = s420[..sos].to_vec();
    no_scan.extend_from_slice(&[0xFF, 0xD9]);
    vec![
        ("truncated-s444".to_owned(), truncated),
        ("no-scan-s420".to_owned(), no_scan),
        (
            "not-an-image".to_owned(),
            b"hello, this is not an image".to_vec(),
        ),
        ("empty".to_owned(), Vec::new()),
    ]
}

struct Diff {
    max: u8,
    mean: f64,
    tail: f64,
}

fn diff(a: &[u8], b: &[u8]) -> Diff {
    assert_eq!(a.len(), b.len());
    let mut max = 0u8;
    let mut sum = 0u64;
    let mut over = 0usize;
    for (&x, &y) in a.iter().zip(b) {
        let d = x.abs_diff(y);
        max = max.max(d);
        sum += u64::from(d);
        over += usize::from(d > TAIL_LEVEL);
    }
    let n = a.len().max(1) as f64;
    Diff {
        max,
        mean: sum as f64 / n,
        tail: over as f64 / n,
    }
}

/// Decodes good and bad inputs in one batch and checks every result against the CPU decoder.
fn parity(decoder: &NvJpegDecoder, backend: &CudaBackend, label: &str) -> Vec<DecodeRoute> {
    let good = good_inputs();
    let bad = bad_inputs();
    // Interleave so bad images sit between good ones in the batch.
    let mut all: Vec<(&str, &[u8], bool)> = Vec::new();
    let mut bi = bad.iter();
    for (i, (n, d)) in good.iter().enumerate() {
        all.push((n, d, true));
        if i % 5 == 2
            && let Some((n, d)) = bi.next()
        {
            all.push((n, d, false));
        }
    }
    for (n, d) in bi {
        all.push((n, d, false));
    }
    let batch: Vec<&[u8]> = all.iter().map(|(_, d, _)| *d).collect();
    let results = decoder.decode_batch(&batch, DEFAULT_MAX_PIXELS);
    assert_eq!(results.len(), all.len());
    let opts = DecodeOptions::default();
    let mut routes = Vec::new();
    for ((name, data, good), result) in all.iter().zip(results) {
        if !good {
            assert!(
                decode(data, &opts).is_err(),
                "{name}: the CPU decoder accepts it; not a valid 'bad' case"
            );
            match result {
                Err(e) => eprintln!("[{label}] {name}: Err as expected ({e})"),
                Ok((_, route)) => panic!("[{label}] {name}: decoded via {route:?}, want Err"),
            }
            continue;
        }
        let header = probe(data).unwrap();
        let want = decode(data, &opts)
            .unwrap_or_else(|e| panic!("{name}: CPU reference failed: {e}"))
            .image;
        let (img, route) = result.unwrap_or_else(|e| panic!("[{label}] {name}: {e}"));
        assert_eq!(
            (img.width, img.height),
            (want.width, want.height),
            "[{label}] {name}: size ({route:?})"
        );
        let got = backend.stream().clone_dtoh(&img.data).unwrap();
        let d = diff(&got, &want.data);
        eprintln!(
            "[{label}] {name:28} {:>4}x{:<4} o{} {route:?}: max {} mean {:.3} >{TAIL_LEVEL}: {:.4}%",
            img.width,
            img.height,
            header.orientation,
            d.max,
            d.mean,
            100.0 * d.tail
        );
        let subsampled = !matches!(
            header.subsampling,
            None | Some(ChromaSubsampling::Gray | ChromaSubsampling::S444)
        );
        let max_bound = match route {
            // The very decoder of the reference, uploaded: bit-exact.
            DecodeRoute::Cpu => 0,
            _ if subsampled => MAX_BOUND_SUBSAMPLED,
            _ => MAX_BOUND_FULL_CHROMA,
        };
        assert!(d.mean <= MEAN_BOUND, "[{label}] {name}: mean {:.3}", d.mean);
        assert!(
            d.max <= max_bound,
            "[{label}] {name}: max {} > {max_bound}",
            d.max
        );
        assert!(
            d.tail <= TAIL_FRACTION,
            "[{label}] {name}: tail {:.4}",
            d.tail
        );
        // Routing rules that must hold whatever the GPU.
        if header.format != ImageFormat::Jpeg || header.components == 4 {
            assert_eq!(route, DecodeRoute::Cpu, "[{label}] {name}");
        }
        if header.progressive {
            assert_ne!(route, DecodeRoute::Hardware, "[{label}] {name}");
        }
        routes.push(route);
    }
    routes
}

#[test]
fn gpu_decode_matches_cpu_decoder() {
    let Some(backend) = backend_or_skip() else {
        return;
    };
    eprintln!("{}", backend.device_name());
    for hardware in [true, false] {
        let Some(decoder) = decoder_or_skip(&backend, hardware) else {
            return;
        };
        eprintln!(
            "{} hardware={hardware}: available={} ({})",
            decoder.library(),
            decoder.hardware_available(),
            decoder.hardware_error().unwrap_or("in use")
        );
        let label = if hardware { "hw" } else { "hybrid" };
        let routes = parity(&decoder, &backend, label);
        if !decoder.hardware_available() {
            assert!(!routes.contains(&DecodeRoute::Hardware));
        } else {
            assert!(
                routes.contains(&DecodeRoute::Hardware),
                "hardware engine available but no image took it"
            );
        }
        assert!(
            routes.contains(&DecodeRoute::GpuHybrid),
            "[{label}] no hybrid decode"
        );
    }
}

#[test]
fn hardware_share_splits_between_engines() {
    let Some(backend) = backend_or_skip() else {
        return;
    };
    let Some(mut decoder) = decoder_or_skip(&backend, true) else {
        return;
    };
    if !decoder.hardware_available() {
        eprintln!(
            "skipped: {}",
            decoder.hardware_error().unwrap_or("no hardware engine")
        );
        return;
    }
    let jpeg = read("pixels/inputs/photo0-baseline420.jpg");
    let batch: Vec<&[u8]> = (0..8).map(|_| jpeg.as_slice()).collect();
    let count = |d: &NvJpegDecoder| {
        d.decode_batch(&batch, DEFAULT_MAX_PIXELS)
            .into_iter()
            .map(|r| r.unwrap().1)
            .filter(|r| *r == DecodeRoute::Hardware)
            .count()
    };
    decoder.set_hardware_share(0.0);
    assert_eq!(count(&decoder), 0);
    decoder.set_hardware_share(0.5);
    assert_eq!(count(&decoder), 4);
    decoder.set_hardware_share(1.0);
    assert_eq!(count(&decoder), 8);
}

#[test]
fn over_limit_images_fail_alone() {
    let Some(backend) = backend_or_skip() else {
        return;
    };
    let Some(decoder) = decoder_or_skip(&backend, true) else {
        return;
    };
    let big = read("pixels/inputs/pattern-701x233.jpg");
    let small = read("pixels/inputs/tiny-40x30.jpg");
    let r = decoder.decode_batch(&[&big, &small], 40 * 30);
    assert!(
        matches!(r[0], Err(vlmprep::error::Error::TooManyPixels { .. })),
        "{:?}",
        r[0].as_ref().err()
    );
    let (img, _) = r[1].as_ref().unwrap();
    assert_eq!((img.width, img.height), (40, 30));
}

#[test]
fn library_symbols_resolve() {
    match probe_library() {
        Ok(v) => eprintln!("loaded {v}: every bound nvJPEG symbol resolves"),
        Err(e) => {
            let msg = e.to_string();
            // Absent library: skip. Present but unusable (a symbol missing, too old): fail.
            assert!(msg.contains("nvJPEG not found"), "{msg}");
            eprintln!("skipped: {msg}");
        }
    }
}

/// The test inputs themselves, checked on the CPU (runs everywhere): good ones decode, the EXIF
/// variants carry the orientation they were built with, bad ones are refused.
#[test]
fn test_inputs_are_what_they_claim() {
    let opts = DecodeOptions::default();
    for (name, data) in good_inputs() {
        let d = decode(&data, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Some(o) = name
            .rsplit_once("+exif")
            .map(|(_, o)| o.parse::<u8>().unwrap())
        {
            assert_eq!(d.header.orientation, o, "{name}");
        }
    }
    for (name, data) in bad_inputs() {
        assert!(decode(&data, &opts).is_err(), "{name} decodes on the CPU");
    }
}
