//! Header probe: format, size, components, JPEG subsampling and EXIF orientation, read from the
//! container and codec headers of a JPEG, PNG or WebP file without decoding any pixels.
//!
//! Every read is bounds-checked: the probe runs on untrusted bytes (and is fuzzed), so malformed
//! input yields [`Error::BadHeader`] / [`Error::UnknownFormat`], never a panic.
//!
//! Orientation follows what Pillow's `ImageOps.exif_transpose` would apply: the IFD0 Orientation
//! tag of the (first) EXIF block, and only when that tag is absent, a `tiff:Orientation` in XMP.

use super::{ChromaSubsampling, ImageFormat, ImageHeader};
use crate::error::{Error, Result};

/// The PNG file signature.
const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

/// Which container the bytes are, from their first bytes only; `None` when none of ours.
pub fn sniff(data: &[u8]) -> Option<ImageFormat> {
    if data.starts_with(&[0xFF, 0xD8]) {
        Some(ImageFormat::Jpeg)
    } else if data.starts_with(&PNG_SIGNATURE) {
        Some(ImageFormat::Png)
    } else if data.len() >= 12 && data.starts_with(b"RIFF") && data.get(8..12) == Some(b"WEBP") {
        Some(ImageFormat::Webp)
    } else {
        None
    }
}

/// Reads the header of a JPEG, PNG or WebP image (no pixel data is decoded).
///
/// Errors: [`Error::UnknownFormat`] when the bytes are none of the three formats,
/// [`Error::BadHeader`] when the header is malformed or cut off before the image size.
pub fn probe(data: &[u8]) -> Result<ImageHeader> {
    match sniff(data) {
        Some(ImageFormat::Jpeg) => probe_jpeg(data),
        Some(ImageFormat::Png) => probe_png(data),
        Some(ImageFormat::Webp) => probe_webp(data),
        None => Err(Error::UnknownFormat(describe_magic(data))),
    }
}

/// A short description of the first bytes, for the "unknown format" message.
fn describe_magic(data: &[u8]) -> String {
    if data.is_empty() {
        return "empty input".to_owned();
    }
    let head: Vec<String> = data.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{} bytes starting with {}", data.len(), head.join(" "))
}

fn bad(format: ImageFormat, reason: impl Into<String>) -> Error {
    Error::BadHeader {
        format: format.name(),
        reason: reason.into(),
    }
}

// ---- byte readers (all return None past the end) -----------------------------------------

fn bytes_at(d: &[u8], at: usize, n: usize) -> Option<&[u8]> {
    d.get(at..at.checked_add(n)?)
}

fn be16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(bytes_at(d, at, 2)?.try_into().ok()?))
}

fn be32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes_at(d, at, 4)?.try_into().ok()?))
}

fn le16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes_at(d, at, 2)?.try_into().ok()?))
}

fn le24(d: &[u8], at: usize) -> Option<u32> {
    let b = bytes_at(d, at, 3)?;
    Some(u32::from_le_bytes([*b.first()?, *b.get(1)?, *b.get(2)?, 0]))
}

fn le32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes_at(d, at, 4)?.try_into().ok()?))
}

// ---- JPEG --------------------------------------------------------------------------------

/// True for the SOFn markers that carry a frame header (C4 = DHT, C8 = JPG, CC = DAC are not).
fn is_sof(marker: u8) -> bool {
    matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC)
}

/// Markers that stand alone, without a length field: TEM, RSTn, SOI, EOI.
fn is_standalone(marker: u8) -> bool {
    matches!(marker, 0x01 | 0xD0..=0xD9)
}

/// Finds the next marker at or after `pos`, skipping fill bytes (0xFF runs) and, like libjpeg and
/// Pillow, stray non-marker bytes between segments. Returns the marker code and the position just
/// after it, or `None` at the end of the data.
fn next_marker(data: &[u8], mut pos: usize) -> Option<(u8, usize)> {
    loop {
        let rel = data.get(pos..)?.iter().position(|&b| b == 0xFF)?;
        pos += rel + 1;
        // Any number of 0xFF fill bytes may precede the marker code.
        while data.get(pos) == Some(&0xFF) {
            pos += 1;
        }
        match data.get(pos) {
            None => return None,
            // FF 00 outside entropy-coded data is junk (a stuffed zero); keep looking.
            Some(0x00) => pos += 1,
            Some(&m) => return Some((m, pos + 1)),
        }
    }
}

/// Frame header fields the probe keeps.
struct JpegFrame {
    marker: u8,
    precision: u8,
    width: u16,
    height: u16,
    /// (horizontal, vertical) sampling factors, one per component.
    sampling: Vec<(u8, u8)>,
}

fn parse_sof(marker: u8, p: &[u8]) -> std::result::Result<JpegFrame, String> {
    let fmt = |what: &str| format!("SOF{} {what}", marker.wrapping_sub(0xC0));
    let (Some(&precision), Some(height), Some(width), Some(&n)) =
        (p.first(), be16(p, 1), be16(p, 3), p.get(5))
    else {
        return Err(fmt(&format!("segment too short ({} bytes)", p.len())));
    };
    if height == 0 {
        // A DNL marker after the first scan would carry the height; no decoder we use
        // supports that, and the size must be known from the header alone.
        return Err(fmt(
            "declares height 0 (height deferred to a DNL marker is not supported)",
        ));
    }
    if width == 0 {
        return Err(fmt("declares width 0"));
    }
    if !matches!(precision, 2..=16) {
        return Err(fmt(&format!("has invalid sample precision {precision}")));
    }
    if !matches!(n, 1 | 3 | 4) {
        return Err(fmt(&format!(
            "has {n} components (only 1, 3 or 4 are supported)"
        )));
    }
    let mut sampling = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        let Some(&hv) = p.get(6 + 3 * i + 1) else {
            return Err(fmt(&format!("segment too short for {n} components")));
        };
        let (h, v) = (hv >> 4, hv & 0x0F);
        if !(1..=4).contains(&h) || !(1..=4).contains(&v) {
            return Err(fmt(&format!(
                "component {i} has invalid sampling factors {h}x{v}"
            )));
        }
        sampling.push((h, v));
    }
    Ok(JpegFrame {
        marker,
        precision,
        width,
        height,
        sampling,
    })
}

/// Chroma subsampling named from the luma and chroma sampling factors.
fn subsampling(sampling: &[(u8, u8)]) -> ChromaSubsampling {
    match sampling {
        [_] => ChromaSubsampling::Gray,
        [(yh, yv), cb, cr] if cb == cr => {
            let (ch, cv) = *cb;
            if yh % ch != 0 || yv % cv != 0 {
                return ChromaSubsampling::Other;
            }
            match (yh / ch, yv / cv) {
                (1, 1) => ChromaSubsampling::S444,
                (2, 1) => ChromaSubsampling::S422,
                (2, 2) => ChromaSubsampling::S420,
                (1, 2) => ChromaSubsampling::S440,
                (4, 1) => ChromaSubsampling::S411,
                _ => ChromaSubsampling::Other,
            }
        }
        _ => ChromaSubsampling::Other,
    }
}

const XMP_APP1_PREFIX: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";

fn probe_jpeg(data: &[u8]) -> Result<ImageHeader> {
    let f = ImageFormat::Jpeg;
    let mut pos = 2; // after SOI
    let mut frame: Option<JpegFrame> = None;
    let mut exif_orientation: Option<u8> = None;
    let mut seen_exif = false;
    let mut xmp: Option<&[u8]> = None;
    let mut adobe_transform: Option<u8> = None;

    // Walk the segments up to the first scan: APPn markers after SOF still count (Pillow and
    // libjpeg read everything before SOS).
    while let Some((marker, after)) = next_marker(data, pos) {
        if is_standalone(marker) {
            if marker == 0xD9 {
                if frame.is_none() {
                    return Err(bad(f, format!("EOI at byte {} before any SOF", after - 2)));
                }
                break;
            }
            pos = after;
            continue;
        }
        let seg_start = after - 2;
        let Some(len) = be16(data, after) else {
            if frame.is_some() {
                break;
            }
            return Err(bad(
                f,
                format!(
                    "truncated: data ends inside the FF{marker:02X} marker at byte {seg_start} (before SOF)"
                ),
            ));
        };
        if len < 2 {
            return Err(bad(
                f,
                format!("marker FF{marker:02X} at byte {seg_start} has invalid length {len}"),
            ));
        }
        let Some(payload) = bytes_at(data, after + 2, len as usize - 2) else {
            if frame.is_some() {
                // Headers we need are in; a cut-off later segment is the decoder's problem.
                break;
            }
            return Err(bad(
                f,
                format!(
                    "truncated: FF{marker:02X} segment at byte {seg_start} needs {len} bytes, {} remain (before SOF)",
                    data.len() - after
                ),
            ));
        };
        pos = after + len as usize;

        match marker {
            m if is_sof(m) => {
                if frame.is_some() {
                    return Err(bad(f, format!("second SOF marker at byte {seg_start}")));
                }
                frame = Some(parse_sof(m, payload).map_err(|r| bad(f, r))?);
            }
            0xDA => {
                if frame.is_none() {
                    return Err(bad(f, format!("SOS at byte {seg_start} before any SOF")));
                }
                break;
            }
            // Pillow reads orientation from the first EXIF segment only.
            0xE1 if payload.starts_with(b"Exif\0\0") && !seen_exif => {
                seen_exif = true;
                exif_orientation = exif_orientation_tag(payload);
            }
            0xE1 if payload.starts_with(XMP_APP1_PREFIX) => {
                // Pillow keeps the last XMP packet.
                xmp = payload.get(XMP_APP1_PREFIX.len()..);
            }
            0xEE if payload.starts_with(b"Adobe") => {
                adobe_transform = payload.get(11).copied();
            }
            _ => {}
        }
    }

    let Some(frame) = frame else {
        return Err(bad(
            f,
            format!("truncated: no SOF marker in {} bytes", data.len()),
        ));
    };
    let orientation = exif_orientation
        .or_else(|| xmp.and_then(xmp_orientation))
        .unwrap_or(1);
    Ok(ImageHeader {
        format: f,
        width: frame.width.into(),
        height: frame.height.into(),
        components: frame.sampling.len() as u8,
        bit_depth: frame.precision,
        progressive: matches!(frame.marker, 0xC2 | 0xC6 | 0xCA | 0xCE),
        subsampling: Some(subsampling(&frame.sampling)),
        orientation,
        has_alpha: false,
        adobe_transform,
    })
}

/// Whether a JPEG's marker structure reaches an EOI marker, walking through the entropy-coded
/// scan data. Pillow refuses JPEGs without one ("image file is truncated"), and decoders such as
/// zune-jpeg would otherwise fill the missing part with gray.
pub fn jpeg_has_eoi(data: &[u8]) -> bool {
    // Fast path: nearly every file ends with EOI. FF D9 cannot end entropy-coded data (an FF
    // there is always followed by 00 or RSTn), so this is an EOI marker.
    if data.ends_with(&[0xFF, 0xD9]) {
        return true;
    }
    let mut pos = 2;
    while let Some((marker, after)) = next_marker(data, pos) {
        match marker {
            0xD9 => return true,
            // RSTn inside scans, TEM, a stray SOI: no length, keep walking.
            m if is_standalone(m) => pos = after,
            _ => {
                let Some(len) = be16(data, after) else {
                    return false;
                };
                // After SOS comes entropy-coded data; next_marker skips it because stuffed
                // FF 00 and RSTn are not segment markers.
                pos = after + len.max(2) as usize;
            }
        }
    }
    false
}

/// Whether all components of a JPEG's first frame have the same sampling factors (no chroma
/// subsampling); false when there is no readable frame header.
pub fn jpeg_sampling_uniform(data: &[u8]) -> bool {
    let mut pos = 2;
    while let Some((marker, after)) = next_marker(data, pos) {
        if is_standalone(marker) {
            pos = after;
            continue;
        }
        let Some(len) = be16(data, after) else {
            return false;
        };
        if is_sof(marker) {
            let payload = bytes_at(data, after + 2, (len as usize).saturating_sub(2));
            return match payload.map(|p| parse_sof(marker, p)) {
                Some(Ok(frame)) => frame.sampling.windows(2).all(|w| w[0] == w[1]),
                _ => false,
            };
        }
        if marker == 0xDA {
            return false;
        }
        pos = after + len.max(2) as usize;
    }
    false
}

// ---- EXIF / XMP --------------------------------------------------------------------------

/// Normalizes an orientation value as Pillow's `exif_transpose` treats it: 1..=8 apply, anything
/// else means "no transform".
fn valid_orientation(v: u32) -> u8 {
    if (1..=8).contains(&v) { v as u8 } else { 1 }
}

/// The IFD0 Orientation tag (0x0112) of an EXIF block (a TIFF structure, optionally preceded by
/// `Exif\0\0`). `None` when the block has no such tag or cannot be parsed; `Some(1)` when the tag
/// is present but its value is not a single number in 1..=8 (Pillow then applies nothing).
pub fn exif_orientation_tag(exif: &[u8]) -> Option<u8> {
    let tiff = exif.strip_prefix(b"Exif\0\0").unwrap_or(exif);
    let little = match tiff.get(0..2)? {
        b"II" => true,
        b"MM" => false,
        _ => return None,
    };
    let u16_at = |at: usize| {
        if little {
            le16(tiff, at)
        } else {
            be16(tiff, at)
        }
    };
    let u32_at = |at: usize| {
        if little {
            le32(tiff, at)
        } else {
            be32(tiff, at)
        }
    };
    if u16_at(2)? != 42 {
        return None;
    }
    let ifd = u32_at(4)? as usize;
    let count = u16_at(ifd)? as usize;
    for i in 0..count {
        let entry = ifd.checked_add(2 + 12 * i)?;
        // A short IFD ends the search (tags after the cut are unknown).
        let tag = u16_at(entry)?;
        if tag != 0x0112 {
            continue;
        }
        let typ = u16_at(entry + 2)?;
        let n = u32_at(entry + 4)?;
        let value = entry + 8;
        let v = match typ {
            1 | 6 => u32::from(*tiff.get(value)?), // BYTE, SBYTE
            3 | 8 => u32::from(u16_at(value)?),    // SHORT, SSHORT
            4 | 9 => u32_at(value)?,               // LONG, SLONG
            _ => return None, // Pillow skips tags of unknown type: as if absent.
        };
        // A multi-valued orientation is a tuple to Pillow, which matches no transform.
        return Some(if n == 1 { valid_orientation(v) } else { 1 });
    }
    None
}

/// `tiff:Orientation` from an XMP packet, found the way Pillow's `getexif` does it (the first
/// match of `tiff:Orientation(="|>)([0-9])`).
pub fn xmp_orientation(xmp: &[u8]) -> Option<u8> {
    const KEY: &[u8] = b"tiff:Orientation";
    let mut from = 0;
    while let Some(rel) = xmp.get(from..)?.windows(KEY.len()).position(|w| w == KEY) {
        let at = from + rel + KEY.len();
        let digit = match (xmp.get(at), xmp.get(at + 1), xmp.get(at + 2)) {
            (Some(b'='), Some(b'"'), Some(&d)) if d.is_ascii_digit() => Some(d),
            (Some(b'>'), Some(&d), _) if d.is_ascii_digit() => Some(d),
            _ => None,
        };
        if let Some(d) = digit {
            return Some(valid_orientation(u32::from(d - b'0')));
        }
        from = at;
    }
    None
}

// ---- PNG ---------------------------------------------------------------------------------

fn probe_png(data: &[u8]) -> Result<ImageHeader> {
    let f = ImageFormat::Png;
    // The first chunk must be IHDR, 13 bytes: W, H, depth, color type, compression, filter, interlace.
    let (Some(13), Some(b"IHDR")) = (be32(data, 8), bytes_at(data, 12, 4)) else {
        return Err(bad(
            f,
            if data.len() < 33 {
                format!("truncated: {} bytes, IHDR needs 33", data.len())
            } else {
                "first chunk is not a 13-byte IHDR".to_owned()
            },
        ));
    };
    let (Some(width), Some(height), Some(&depth), Some(&color)) =
        (be32(data, 16), be32(data, 20), data.get(24), data.get(25))
    else {
        return Err(bad(
            f,
            format!("truncated: {} bytes, IHDR needs 33", data.len()),
        ));
    };
    if width == 0 || height == 0 || width > i32::MAX as u32 || height > i32::MAX as u32 {
        return Err(bad(f, format!("invalid size {width}x{height}")));
    }
    let channels: u8 = match (color, depth) {
        (0, 1 | 2 | 4 | 8 | 16) => 1,
        (2, 8 | 16) => 3,
        (3, 1 | 2 | 4 | 8) => 3,
        (4, 8 | 16) => 2,
        (6, 8 | 16) => 4,
        _ => {
            return Err(bad(
                f,
                format!("invalid color type {color} with bit depth {depth}"),
            ));
        }
    };
    let mut has_alpha = matches!(color, 4 | 6);
    let mut exif: Option<u8> = None;
    let mut xmp: Option<u8> = None;

    // Ancillary chunks before the first IDAT. eXIf after IDAT (rare; Pillow would find it after a
    // full load) is deliberately not looked for: it would mean touching the whole file.
    let mut pos = 33;
    while let (Some(len), Some(kind)) = (be32(data, pos), bytes_at(data, pos + 4, 4)) {
        let len = len as usize;
        let Some(body) = bytes_at(data, pos + 8, len) else {
            break;
        };
        match kind {
            b"IDAT" | b"IEND" => break,
            b"tRNS" if color != 4 && color != 6 => has_alpha = true,
            b"eXIf" if exif.is_none() => exif = exif_orientation_tag(body),
            b"iTXt" => {
                if let Some(text) = itxt_xmp(body) {
                    xmp = xmp_orientation(text);
                }
            }
            _ => {}
        }
        pos = pos.saturating_add(12).saturating_add(len);
    }
    Ok(ImageHeader {
        format: f,
        width,
        height,
        // Channels after palette expansion; tRNS adds an alpha channel.
        components: channels + u8::from(has_alpha && matches!(color, 0 | 2 | 3)),
        bit_depth: depth,
        progressive: false,
        subsampling: None,
        orientation: exif.or(xmp).unwrap_or(1),
        has_alpha,
        adobe_transform: None,
    })
}

/// The text of an uncompressed iTXt chunk whose keyword is `XML:com.adobe.xmp` (where Pillow
/// finds XMP in PNG). Compressed iTXt is not inflated here.
fn itxt_xmp(body: &[u8]) -> Option<&[u8]> {
    let rest = body.strip_prefix(b"XML:com.adobe.xmp\0")?;
    let (&compressed, rest) = rest.split_first()?;
    if compressed != 0 {
        return None;
    }
    let rest = rest.get(1..)?; // compression method
    let lang_end = rest.iter().position(|&b| b == 0)?;
    let rest = rest.get(lang_end + 1..)?;
    let tr_end = rest.iter().position(|&b| b == 0)?;
    rest.get(tr_end + 1..)
}

// ---- WebP --------------------------------------------------------------------------------

/// One RIFF chunk: FourCC and payload (clipped to the data when the file is cut short).
struct Chunk<'a> {
    fourcc: &'a [u8],
    /// Declared payload size.
    size: usize,
    payload: &'a [u8],
}

/// Iterates RIFF chunks in `data[pos..end]`; chunk payloads are padded to even sizes.
fn riff_chunks(data: &[u8], mut pos: usize, end: usize) -> impl Iterator<Item = Chunk<'_>> {
    std::iter::from_fn(move || {
        if pos.checked_add(8)? > end {
            return None;
        }
        let fourcc = bytes_at(data, pos, 4)?;
        let size = le32(data, pos + 4)? as usize;
        let start = pos + 8;
        let stop = start.saturating_add(size).min(end);
        let payload = data.get(start..stop)?;
        pos = start.saturating_add(size).saturating_add(size & 1);
        Some(Chunk {
            fourcc,
            size,
            payload,
        })
    })
}

/// Size (and alpha bit, for VP8L) of a VP8 or VP8L bitstream chunk.
fn webp_bitstream_size(chunk: &Chunk) -> std::result::Result<(u32, u32, bool), String> {
    let p = chunk.payload;
    match chunk.fourcc {
        b"VP8 " => {
            let (Some(tag), Some(start), Some(w), Some(h)) =
                (le24(p, 0), bytes_at(p, 3, 3), le16(p, 6), le16(p, 8))
            else {
                return Err(format!("VP8 chunk too short ({} bytes)", p.len()));
            };
            if tag & 1 != 0 {
                return Err("VP8 bitstream does not start with a key frame".to_owned());
            }
            if start != [0x9d, 0x01, 0x2a] {
                return Err("VP8 start code missing".to_owned());
            }
            let (w, h) = (u32::from(w & 0x3FFF), u32::from(h & 0x3FFF));
            if w == 0 || h == 0 {
                return Err(format!("VP8 frame size {w}x{h}"));
            }
            Ok((w, h, false))
        }
        b"VP8L" => {
            let (Some(&sig), Some(bits)) = (p.first(), le32(p, 1)) else {
                return Err(format!("VP8L chunk too short ({} bytes)", p.len()));
            };
            if sig != 0x2F {
                return Err(format!("VP8L signature {sig:#04x}, expected 0x2f"));
            }
            if bits >> 29 != 0 {
                return Err(format!("VP8L version {}", bits >> 29));
            }
            Ok((
                (bits & 0x3FFF) + 1,
                ((bits >> 14) & 0x3FFF) + 1,
                (bits >> 28) & 1 == 1,
            ))
        }
        other => Err(format!(
            "unexpected chunk {}",
            String::from_utf8_lossy(other)
        )),
    }
}

fn probe_webp(data: &[u8]) -> Result<ImageHeader> {
    let f = ImageFormat::Webp;
    let riff_size = le32(data, 4).unwrap_or(0) as usize;
    // The RIFF size bounds the chunks; a shorter file is read as far as it goes.
    let end = riff_size.saturating_add(8).min(data.len());
    let mut chunks = riff_chunks(data, 12, end);
    let Some(first) = chunks.next() else {
        return Err(bad(
            f,
            format!(
                "truncated: no chunk after the RIFF header ({} bytes)",
                data.len()
            ),
        ));
    };
    let header = |width, height, has_alpha, orientation| ImageHeader {
        format: f,
        width,
        height,
        components: if has_alpha { 4 } else { 3 },
        bit_depth: 8,
        progressive: false,
        subsampling: None,
        orientation,
        has_alpha,
        adobe_transform: None,
    };
    match first.fourcc {
        b"VP8 " | b"VP8L" => {
            let (w, h, alpha) = webp_bitstream_size(&first).map_err(|r| bad(f, r))?;
            Ok(header(w, h, alpha, 1))
        }
        b"VP8X" => {
            let p = first.payload;
            let (Some(&flags), Some(w1), Some(h1)) = (p.first(), le24(p, 4), le24(p, 7)) else {
                return Err(bad(f, format!("VP8X chunk too short ({} bytes)", p.len())));
            };
            let (w, h) = (w1 + 1, h1 + 1);
            let animated = flags & 0x02 != 0;
            let mut exif = None;
            let mut xmp = None;
            for chunk in chunks {
                match chunk.fourcc {
                    b"EXIF" if exif.is_none() => exif = Some(exif_orientation_tag(chunk.payload)),
                    b"XMP " => xmp = xmp_orientation(chunk.payload),
                    b"VP8 " | b"VP8L" if !animated => {
                        // The decoder sizes its buffers from the bitstream header, so a frame
                        // larger than the canvas must be refused here, before any allocation.
                        let (fw, fh, _) = webp_bitstream_size(&chunk).map_err(|r| bad(f, r))?;
                        if (fw, fh) != (w, h) {
                            return Err(bad(
                                f,
                                format!("VP8X canvas {w}x{h} but the image bitstream is {fw}x{fh}"),
                            ));
                        }
                    }
                    b"ANMF" if animated => check_anmf(&chunk, w, h).map_err(|r| bad(f, r))?,
                    _ => {}
                }
            }
            let orientation = exif.flatten().or(xmp).unwrap_or(1);
            Ok(header(w, h, flags & 0x10 != 0, orientation))
        }
        other => Err(bad(
            f,
            format!(
                "first chunk is {:?}, expected VP8, VP8L or VP8X",
                String::from_utf8_lossy(other)
            ),
        )),
    }
}

/// Checks an animation frame's rectangle against the canvas and its bitstream size against the
/// rectangle, so the decoder never allocates beyond the canvas size that the pixel limit checked.
fn check_anmf(chunk: &Chunk, cw: u32, ch: u32) -> std::result::Result<(), String> {
    let p = chunk.payload;
    let (Some(x), Some(y), Some(w1), Some(h1)) = (le24(p, 0), le24(p, 3), le24(p, 6), le24(p, 9))
    else {
        // Cut off: the decoder will report it.
        return Ok(());
    };
    let (x, y, w, h) = (2 * x, 2 * y, w1 + 1, h1 + 1);
    if x + w > cw || y + h > ch {
        return Err(format!(
            "animation frame {w}x{h} at ({x},{y}) outside the {cw}x{ch} canvas"
        ));
    }
    let declared_end = chunk.size.min(p.len());
    for sub in riff_chunks(p, 16, declared_end) {
        if matches!(sub.fourcc, b"VP8 " | b"VP8L") {
            let (fw, fh, _) = webp_bitstream_size(&sub)?;
            if (fw, fh) != (w, h) {
                return Err(format!(
                    "animation frame {w}x{h} but its bitstream is {fw}x{fh}"
                ));
            }
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::test_images::{
        self, JpegSpec, PngExtras, exif, jpeg, png, png_with, webp_lossless,
    };
    use jpeg_encoder::{ColorType as JpegColor, SamplingFactor};
    use png::{BitDepth, ColorType};

    fn assert_bad_header(r: Result<ImageHeader>, needle: &str) {
        match r {
            Err(Error::BadHeader { reason, .. }) => {
                assert!(
                    reason.contains(needle),
                    "reason {reason:?} lacks {needle:?}"
                )
            }
            other => panic!("expected BadHeader containing {needle:?}, got {other:?}"),
        }
    }

    /// Probing every prefix (and a few mutations) must never panic.
    fn never_panics(data: &[u8]) {
        for n in 0..data.len().min(4096) {
            let _ = probe(&data[..n]);
            let _ = jpeg_has_eoi(&data[..n]);
        }
        let mut m = data.to_vec();
        for i in (0..m.len().min(512)).step_by(3) {
            let old = m[i];
            for v in [0x00, 0xFF, 0x7F, old ^ 0x80] {
                m[i] = v;
                if let Ok(h) = probe(&m) {
                    assert!(h.width > 0 && h.height > 0 && (1..=8).contains(&h.orientation));
                }
            }
            m[i] = old;
        }
    }

    #[test]
    fn jpeg_size_subsampling_progressive() {
        let cases = [
            (SamplingFactor::R_4_4_4, ChromaSubsampling::S444),
            (SamplingFactor::R_4_2_2, ChromaSubsampling::S422),
            (SamplingFactor::R_4_2_0, ChromaSubsampling::S420),
            (SamplingFactor::R_4_4_0, ChromaSubsampling::S440),
            (SamplingFactor::R_4_1_1, ChromaSubsampling::S411),
            (SamplingFactor::F_2_4, ChromaSubsampling::Other),
        ];
        for progressive in [false, true] {
            for (sampling, want) in cases {
                let spec = JpegSpec {
                    sampling,
                    progressive,
                    ..JpegSpec::rgb(37, 21)
                };
                let h = probe(&jpeg(&spec)).unwrap();
                assert_eq!(h.format, ImageFormat::Jpeg);
                assert_eq!(
                    (h.width, h.height, h.components, h.bit_depth),
                    (37, 21, 3, 8)
                );
                assert_eq!(h.subsampling, Some(want), "{sampling:?}");
                assert_eq!(h.progressive, progressive);
                assert_eq!(
                    (h.orientation, h.has_alpha, h.adobe_transform),
                    (1, false, None)
                );
            }
        }
        let gray = JpegSpec {
            color: JpegColor::Luma,
            ..JpegSpec::rgb(9, 300)
        };
        let h = probe(&jpeg(&gray)).unwrap();
        assert_eq!((h.width, h.height, h.components), (9, 300, 1));
        assert_eq!(h.subsampling, Some(ChromaSubsampling::Gray));
    }

    #[test]
    fn jpeg_adobe_cmyk_and_ycck() {
        for (color, transform) in [(JpegColor::Cmyk, 0), (JpegColor::CmykAsYcck, 2)] {
            let spec = JpegSpec {
                color,
                sampling: SamplingFactor::R_4_4_4,
                ..JpegSpec::rgb(16, 8)
            };
            let h = probe(&jpeg(&spec)).unwrap();
            assert_eq!(h.components, 4);
            assert_eq!(h.adobe_transform, Some(transform));
            assert_eq!(h.subsampling, Some(ChromaSubsampling::Other));
        }
    }

    #[test]
    fn exif_orientation_both_endiannesses() {
        for little in [true, false] {
            for o in 1..=8u32 {
                for typ in [3u16, 4, 1] {
                    let e = exif(little, Some((typ, 1, o)));
                    assert_eq!(
                        exif_orientation_tag(&e),
                        Some(o as u8),
                        "le={little} typ={typ}"
                    );
                    // Without the Exif\0\0 prefix too (WebP EXIF chunks may omit it).
                    assert_eq!(exif_orientation_tag(&e[6..]), Some(o as u8));
                }
            }
            // Present but invalid: Pillow applies nothing.
            for bad_value in [0, 9, 300] {
                assert_eq!(
                    exif_orientation_tag(&exif(little, Some((3, 1, bad_value)))),
                    Some(1)
                );
            }
            assert_eq!(
                exif_orientation_tag(&exif(little, Some((3, 2, 6)))),
                Some(1)
            );
            // Absent or of an unknown type: None (XMP may then decide).
            assert_eq!(exif_orientation_tag(&exif(little, None)), None);
            assert_eq!(exif_orientation_tag(&exif(little, Some((13, 1, 6)))), None);
            // Truncated blocks never panic and never invent a value.
            let e = exif(little, Some((3, 1, 6)));
            for n in 0..e.len() {
                let got = exif_orientation_tag(&e[..n]);
                assert!(got.is_none() || got == Some(6), "prefix {n}: {got:?}");
            }
        }
        assert_eq!(exif_orientation_tag(b"Exif\0\0XX*\0"), None);
    }

    #[test]
    fn jpeg_orientation_from_app1_and_oriented_size() {
        for little in [true, false] {
            for o in 1..=8u32 {
                let spec = JpegSpec {
                    app: vec![(1, exif(little, Some((3, 1, o))))],
                    ..JpegSpec::rgb(40, 10)
                };
                let h = probe(&jpeg(&spec)).unwrap();
                assert_eq!(h.orientation, o as u8);
                let want = if o >= 5 { (10, 40) } else { (40, 10) };
                assert_eq!(h.oriented_size(), want);
                assert_eq!((h.width, h.height), (40, 10));
            }
        }
    }

    #[test]
    fn jpeg_xmp_orientation_is_a_fallback() {
        let xmp = |o: &str| {
            let mut p = XMP_APP1_PREFIX.to_vec();
            p.extend_from_slice(
                format!("<x:xmpmeta><rdf:Description tiff:Orientation=\"{o}\"/></x:xmpmeta>")
                    .as_bytes(),
            );
            p
        };
        let only_xmp = JpegSpec {
            app: vec![(1, xmp("6"))],
            ..JpegSpec::rgb(8, 8)
        };
        assert_eq!(probe(&jpeg(&only_xmp)).unwrap().orientation, 6);
        // EXIF without the tag: XMP decides.
        let exif_no_tag = JpegSpec {
            app: vec![(1, exif(true, None)), (1, xmp("8"))],
            ..JpegSpec::rgb(8, 8)
        };
        assert_eq!(probe(&jpeg(&exif_no_tag)).unwrap().orientation, 8);
        // EXIF with the tag wins over XMP.
        let both = JpegSpec {
            app: vec![(1, exif(false, Some((3, 1, 3)))), (1, xmp("8"))],
            ..JpegSpec::rgb(8, 8)
        };
        assert_eq!(probe(&jpeg(&both)).unwrap().orientation, 3);
        assert_eq!(
            xmp_orientation(b"<tiff:Orientation>5</tiff:Orientation>"),
            Some(5)
        );
        assert_eq!(
            xmp_orientation(b"tiff:Orientation tiff:Orientation=\"2\""),
            Some(2)
        );
        assert_eq!(xmp_orientation(b"tiff:Orientation=\"9\""), Some(1));
        assert_eq!(xmp_orientation(b"tiff:Orientation=\""), None);
    }

    /// Splices `insert` into a JPEG right after SOI.
    fn after_soi(data: &[u8], insert: &[u8]) -> Vec<u8> {
        let mut v = data[..2].to_vec();
        v.extend_from_slice(insert);
        v.extend_from_slice(&data[2..]);
        v
    }

    #[test]
    fn jpeg_fill_bytes_standalone_markers_and_junk() {
        let base = jpeg(&JpegSpec::rgb(33, 17));
        let want = probe(&base).unwrap();
        // Fill bytes, TEM, an RST marker, a COM segment and stray junk bytes before the frame.
        let odd = after_soi(
            &base,
            &[
                0xFF, 0xFF, 0xFF, 0x01, 0xFF, 0xD3, 0x12, 0x34, 0xFF, 0xFE, 0x00, 0x04, 0xAB, 0xCD,
            ],
        );
        assert_eq!(probe(&odd).unwrap(), want);
        assert!(jpeg_has_eoi(&odd));
    }

    #[test]
    fn jpeg_bad_headers() {
        let base = jpeg(&JpegSpec::rgb(33, 17));
        // Find the SOF0 segment to corrupt it.
        let sof = base.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        let mut dnl = base.clone();
        dnl[sof + 5] = 0;
        dnl[sof + 6] = 0;
        assert_bad_header(probe(&dnl), "height 0");
        let mut zero_w = base.clone();
        zero_w[sof + 7] = 0;
        zero_w[sof + 8] = 0;
        assert_bad_header(probe(&zero_w), "width 0");
        let mut two_comps = base.clone();
        two_comps[sof + 9] = 2;
        assert_bad_header(probe(&two_comps), "2 components");
        let mut bad_len = base.clone();
        bad_len[sof + 2] = 0;
        bad_len[sof + 3] = 1;
        assert_bad_header(probe(&bad_len), "invalid length 1");
        // Cut before the SOF is complete.
        assert_bad_header(probe(&base[..sof + 6]), "truncated");
        assert_bad_header(probe(&base[..2]), "no SOF");
        assert_bad_header(probe(&[0xFF, 0xD8, 0xFF, 0xD9]), "EOI");
        // Cut after the SOF: the header is known, the probe succeeds.
        assert!(probe(&base[..sof + 2 + 17]).is_ok());
        never_panics(&base);
    }

    #[test]
    fn jpeg_eoi_detection() {
        let base = jpeg(&JpegSpec {
            progressive: true,
            restart_interval: Some(2),
            ..JpegSpec::rgb(64, 48)
        });
        assert!(jpeg_has_eoi(&base));
        let mut trailing = base.clone();
        trailing.extend_from_slice(b"trailing junk \xFF\x00 after EOI");
        assert!(jpeg_has_eoi(&trailing));
        assert!(!jpeg_has_eoi(&base[..base.len() - 2]));
        assert!(!jpeg_has_eoi(&base[..base.len() - 1]));
        assert!(!jpeg_has_eoi(&base[..base.len() / 2]));
    }

    #[test]
    fn png_color_types_and_depths() {
        let cases: [(ColorType, BitDepth, u8, bool); 11] = [
            (ColorType::Grayscale, BitDepth::One, 1, false),
            (ColorType::Grayscale, BitDepth::Four, 1, false),
            (ColorType::Grayscale, BitDepth::Eight, 1, false),
            (ColorType::Grayscale, BitDepth::Sixteen, 1, false),
            (ColorType::Rgb, BitDepth::Eight, 3, false),
            (ColorType::Rgb, BitDepth::Sixteen, 3, false),
            (ColorType::Indexed, BitDepth::Two, 3, false),
            (ColorType::GrayscaleAlpha, BitDepth::Eight, 2, true),
            (ColorType::GrayscaleAlpha, BitDepth::Sixteen, 2, true),
            (ColorType::Rgba, BitDepth::Eight, 4, true),
            (ColorType::Rgba, BitDepth::Sixteen, 4, true),
        ];
        let (w, h) = (13u32, 5u32);
        for (color, depth, comps, alpha) in cases {
            let bits = color.samples() * depth as usize;
            let row = (w as usize * bits).div_ceil(8);
            let pixels = vec![0x5Au8; row * h as usize];
            let palette = [0u8, 0, 0, 255, 255, 255, 9, 9, 9, 1, 2, 3];
            let plte = (color == ColorType::Indexed).then_some(&palette[..]);
            let data = png_with(
                w,
                h,
                color,
                depth,
                &pixels,
                &PngExtras {
                    palette: plte,
                    ..Default::default()
                },
            );
            let hd = probe(&data).unwrap();
            assert_eq!(hd.format, ImageFormat::Png);
            assert_eq!((hd.width, hd.height), (w, h));
            assert_eq!(hd.components, comps, "{color:?} {depth:?}");
            assert_eq!(hd.has_alpha, alpha, "{color:?} {depth:?}");
            assert_eq!(hd.bit_depth, depth as u8);
            assert_eq!(
                (hd.orientation, hd.subsampling, hd.progressive),
                (1, None, false)
            );
            never_panics(&data);
        }
    }

    #[test]
    fn png_trns_exif_and_xmp() {
        let (w, h) = (4u32, 3u32);
        let gray = vec![7u8; 12];
        let with_trns = png_with(
            w,
            h,
            ColorType::Grayscale,
            BitDepth::Eight,
            &gray,
            &PngExtras {
                trns: Some(&[0, 7]),
                ..Default::default()
            },
        );
        let hd = probe(&with_trns).unwrap();
        assert!(hd.has_alpha);
        assert_eq!(hd.components, 2);
        let palette = [0u8, 0, 0, 255, 255, 255];
        let pal_trns = png_with(
            w,
            h,
            ColorType::Indexed,
            BitDepth::Eight,
            &[1u8; 12],
            &PngExtras {
                palette: Some(&palette),
                trns: Some(&[0u8]),
                ..Default::default()
            },
        );
        let hd = probe(&pal_trns).unwrap();
        assert_eq!((hd.components, hd.has_alpha), (4, true));

        let exif_body = exif(false, Some((3, 1, 6)))[6..].to_vec();
        let oriented = png_with(
            w,
            h,
            ColorType::Grayscale,
            BitDepth::Eight,
            &gray,
            &PngExtras {
                chunks: vec![(*b"eXIf", exif_body)],
                ..Default::default()
            },
        );
        let hd = probe(&oriented).unwrap();
        assert_eq!(hd.orientation, 6);
        assert_eq!(hd.oriented_size(), (3, 4));

        let mut itxt = b"XML:com.adobe.xmp\0\0\0\0\0".to_vec();
        itxt.extend_from_slice(b"<tiff:Orientation>3</tiff:Orientation>");
        let xmp = png_with(
            w,
            h,
            ColorType::Grayscale,
            BitDepth::Eight,
            &gray,
            &PngExtras {
                chunks: vec![(*b"iTXt", itxt)],
                ..Default::default()
            },
        );
        assert_eq!(probe(&xmp).unwrap().orientation, 3);
    }

    #[test]
    fn png_bad_headers() {
        let good = png(2, 2, ColorType::Rgb, BitDepth::Eight, &[0; 12]);
        assert_bad_header(probe(&good[..20]), "truncated");
        let mut zero = good.clone();
        zero[16..20].copy_from_slice(&[0; 4]);
        assert_bad_header(probe(&zero), "invalid size");
        let mut bad_depth = good.clone();
        bad_depth[24] = 4; // RGB at 4 bits does not exist
        assert_bad_header(probe(&bad_depth), "color type 2 with bit depth 4");
        let mut not_ihdr = good.clone();
        not_ihdr[12..16].copy_from_slice(b"IDAT");
        assert_bad_header(probe(&not_ihdr), "IHDR");
    }

    #[test]
    fn webp_lossless_and_vp8x_exif() {
        let plain = webp_lossless(23, 11, false, None);
        let hd = probe(&plain).unwrap();
        assert_eq!(hd.format, ImageFormat::Webp);
        assert_eq!(
            (hd.width, hd.height, hd.components, hd.has_alpha),
            (23, 11, 3, false)
        );
        never_panics(&plain);

        let alpha = webp_lossless(5, 300, true, None);
        let hd = probe(&alpha).unwrap();
        assert_eq!(
            (hd.width, hd.height, hd.components, hd.has_alpha),
            (5, 300, 4, true)
        );

        for little in [true, false] {
            let e = exif(little, Some((3, 1, 8)));
            for block in [e.clone(), e[6..].to_vec()] {
                let data = webp_lossless(23, 11, false, Some(block));
                assert_eq!(&data[12..16], b"VP8X");
                let hd = probe(&data).unwrap();
                assert_eq!((hd.width, hd.height, hd.orientation), (23, 11, 8));
                assert_eq!(hd.oriented_size(), (11, 23));
                never_panics(&data);
            }
        }
    }

    #[test]
    fn webp_lossy_fixture() {
        let data = test_images::fixture("lossy.webp");
        let hd = probe(&data).unwrap();
        assert_eq!(
            (hd.width, hd.height, hd.components, hd.has_alpha),
            (96, 64, 3, false)
        );
        let data = test_images::fixture("lossy_alpha.webp");
        let hd = probe(&data).unwrap();
        assert_eq!(
            (hd.width, hd.height, hd.components, hd.has_alpha),
            (96, 64, 4, true)
        );
        never_panics(&data);
    }

    #[test]
    fn webp_bad_headers() {
        let data = webp_lossless(23, 11, false, Some(exif(true, Some((3, 1, 6)))));
        // Canvas that disagrees with the bitstream: refused before any decoder allocates.
        let mut canvas = data.clone();
        canvas[24] = 200; // canvas width - 1, low byte
        assert_bad_header(probe(&canvas), "VP8X canvas");
        assert_bad_header(probe(&data[..16]), "truncated");
        let mut other = data.clone();
        other[12..16].copy_from_slice(b"ABCD");
        assert_bad_header(probe(&other), "first chunk");
    }

    #[test]
    fn unknown_formats() {
        for data in [
            &b""[..],
            b"GIF89a....",
            b"\xFF",
            b"RIFF\0\0\0\0WAVE",
            b"\x89PNG",
        ] {
            assert!(
                matches!(probe(data), Err(Error::UnknownFormat(_))),
                "{data:?}"
            );
        }
    }
}
