//! Fuzzes the image header probe and the CPU decoder on arbitrary bytes. Invariants, beyond "does
//! not panic": a successful probe gives a non-empty size, an orientation in 1..=8 and a consistent
//! oriented size; a successful decode (pixel limit 1 Mi) gives exactly 3·w·h bytes with (w, h)
//! the probed oriented size, or the DCT-reduced size when a reduced decode was allowed.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vlmprep::image::ImageFormat;
use vlmprep::image::decode::{DecodeOptions, choose_dct_scale, dct_scaled_size, decode};
use vlmprep::image::probe::{probe, sniff};

fuzz_target!(|data: &[u8]| {
    let Ok(h) = probe(data) else {
        // Decode probes first, so it must fail too.
        assert!(decode(data, &DecodeOptions::default()).is_err());
        return;
    };
    assert_eq!(sniff(data), Some(h.format));
    assert!(h.width > 0 && h.height > 0, "{h:?}");
    assert!((1..=8).contains(&h.orientation), "{h:?}");
    let (ow, oh) = h.oriented_size();
    if h.orientation >= 5 {
        assert_eq!((ow, oh), (h.height, h.width));
    } else {
        assert_eq!((ow, oh), (h.width, h.height));
    }
    match h.format {
        ImageFormat::Jpeg => {
            assert!(matches!(h.components, 1 | 3 | 4), "{h:?}");
            assert!(h.subsampling.is_some() && !h.has_alpha);
        }
        ImageFormat::Png => assert!((1..=4).contains(&h.components) && h.subsampling.is_none()),
        ImageFormat::Webp => {
            assert_eq!(h.components, if h.has_alpha { 4 } else { 3 });
            assert!(h.subsampling.is_none());
        }
    }

    let opts = DecodeOptions {
        max_pixels: 1 << 20,
        ..DecodeOptions::default()
    };
    if let Ok(d) = decode(data, &opts) {
        assert_eq!(d.header, h);
        assert_eq!(d.dct_scale, 1);
        assert!(h.pixels() <= 1 << 20);
        assert_eq!((d.image.width, d.image.height), (ow, oh));
        assert_eq!(d.image.data.len(), 3 * ow as usize * oh as usize);
    }

    // A reduced-scale request, sized from the input so both branches get exercised.
    let need = (
        u32::from(data.last().copied().unwrap_or(1)) % 64 + 1,
        u32::from(data.first().copied().unwrap_or(1)) % 64 + 1,
    );
    let opts = DecodeOptions {
        max_pixels: 1 << 20,
        min_size: Some(need),
        ..DecodeOptions::default()
    };
    if let Ok(d) = decode(data, &opts) {
        let stored_need = if h.orientation >= 5 {
            (need.1, need.0)
        } else {
            need
        };
        let denom = if h.format == ImageFormat::Jpeg && h.components != 4 {
            choose_dct_scale((h.width, h.height), stored_need)
        } else {
            1
        };
        assert_eq!(d.dct_scale, denom);
        let (sw, sh) = dct_scaled_size((h.width, h.height), denom);
        let want = if h.orientation >= 5 {
            (sh, sw)
        } else {
            (sw, sh)
        };
        assert_eq!((d.image.width, d.image.height), want);
        assert_eq!(d.image.data.len(), 3 * want.0 as usize * want.1 as usize);
    }
});
