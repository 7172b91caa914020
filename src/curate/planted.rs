//! A pool of image–text samples with KNOWN duplicates, for measuring the dedup tiers and for
//! demos: distinct synthetic photo-like originals, and per original a few planted copies (exact
//! byte copies, JPEG re-encodes, resizes, small crops, horizontal flips). Everything follows
//! from the seed, so tests can assert on it.
//!
//! The originals are smooth two-tone gradients with soft-edged ellipses and rectangles, a
//! sinusoidal texture and a little grain: low frequencies that differ from image to image as
//! photographs' do, which is what a DCT hash looks at. Captions describe the main shape and
//! colors; about one sample in ten gets an unrelated caption (`off_topic`), so an image–text
//! relevance filter has something to find.

use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::image::decode::{DecodeOptions, decode_rgb8};
use crate::image::orientation::{EXIF_MIRROR, apply_orientation};
use crate::image::resize::{ResizeFilter, resize};
use crate::sink::tar::TarWriter;
use jpeg_encoder::{ColorType, Encoder};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// How a planted sample relates to its original.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlantedKind {
    /// The original itself (JPEG at quality 92).
    Original,
    /// The original's JPEG bytes, unchanged.
    ExactCopy,
    /// The original decoded and encoded again at `quality` (60–90).
    Reencode {
        /// JPEG quality of the copy.
        quality: u8,
    },
    /// The original resized to `percent` (50–90) of its width and height (bicubic).
    Resize {
        /// Linear scale in percent.
        percent: u8,
    },
    /// The original with up to 10% cut off each side.
    Crop,
    /// The original mirrored left–right.
    Flip,
}

impl PlantedKind {
    /// A short name for tables: `original`, `exact-copy`, `reencode`, `resize`, `crop`, `flip`.
    pub fn name(self) -> &'static str {
        match self {
            PlantedKind::Original => "original",
            PlantedKind::ExactCopy => "exact-copy",
            PlantedKind::Reencode { .. } => "reencode",
            PlantedKind::Resize { .. } => "resize",
            PlantedKind::Crop => "crop",
            PlantedKind::Flip => "flip",
        }
    }
}

/// One sample of a planted pool.
#[derive(Debug, Clone)]
pub struct PlantedSample {
    /// WebDataset key, unique in the pool (`p0000042`).
    pub key: String,
    /// The image, JPEG-encoded.
    pub jpeg: Vec<u8>,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// The caption (`KEY.txt`).
    pub caption: String,
    /// True when the caption does not describe the image.
    pub off_topic: bool,
    /// Index of the original this sample was made from (its duplicate group).
    pub original: u32,
    /// How it was made from that original.
    pub kind: PlantedKind,
}

/// SplitMix64: small, seedable, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + (self.next() % u64::from(hi - lo + 1)) as u32
    }
    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        items[self.next() as usize % items.len()]
    }
}

const COLORS: [(&str, [f32; 3]); 10] = [
    ("red", [200.0, 40.0, 35.0]),
    ("orange", [235.0, 140.0, 30.0]),
    ("yellow", [235.0, 215.0, 60.0]),
    ("green", [50.0, 160.0, 60.0]),
    ("teal", [30.0, 150.0, 150.0]),
    ("blue", [40.0, 80.0, 200.0]),
    ("purple", [120.0, 50.0, 160.0]),
    ("pink", [235.0, 130.0, 180.0]),
    ("brown", [120.0, 80.0, 40.0]),
    ("gray", [128.0, 128.0, 128.0]),
];

const OFF_TOPIC: [&str; 8] = [
    "Quarterly earnings beat analyst expectations for the third year running.",
    "Preheat the oven to 180 degrees and grease a loaf tin.",
    "Click here to subscribe to our newsletter!",
    "The train to Lisbon leaves at 7:45 from platform nine.",
    "Terms and conditions apply. See store for details.",
    "A recording of a string quartet playing Haydn.",
    "Error 404: the page you requested could not be found.",
    "Top ten tips for a better night's sleep.",
];

/// One distinct photo-like original and its caption.
fn original_image(rng: &mut Rng) -> (RgbImage, String) {
    let width = rng.range(200, 900);
    let height = rng.range(200, 900);
    let (top_name, top) = COLORS[rng.next() as usize % COLORS.len()];
    let (_, bottom) = COLORS[rng.next() as usize % COLORS.len()];
    let angle = rng.unit() * std::f32::consts::TAU;
    let (ca, sa) = (angle.cos(), angle.sin());
    struct Shape {
        ellipse: bool,
        cx: f32,
        cy: f32,
        rx: f32,
        ry: f32,
        color: [f32; 3],
        alpha: f32,
    }
    let shape_count = rng.range(2, 6);
    let mut shapes = Vec::new();
    let mut main = ("", false);
    for s in 0..shape_count {
        let (name, color) = COLORS[rng.next() as usize % COLORS.len()];
        let ellipse = rng.next().is_multiple_of(2);
        if s == 0 {
            main = (name, ellipse);
        }
        shapes.push(Shape {
            ellipse,
            cx: rng.unit(),
            cy: rng.unit(),
            rx: 0.08 + 0.3 * rng.unit(),
            ry: 0.08 + 0.3 * rng.unit(),
            color,
            alpha: 0.6 + 0.4 * rng.unit(),
        });
    }
    // The first shape is the subject: drawn last (on top) and at least medium-sized.
    shapes[0].rx = shapes[0].rx.max(0.2);
    shapes[0].ry = shapes[0].ry.max(0.2);
    shapes.reverse();
    let freq = 0.02 + 0.15 * rng.unit();
    let phase = rng.unit() * 6.0;
    let texture = 6.0 + 14.0 * rng.unit();
    let mut grain = Rng(rng.next());
    let mut data = Vec::with_capacity(3 * (width * height) as usize);
    for y in 0..height {
        let fy = y as f32 / height as f32;
        for x in 0..width {
            let fx = x as f32 / width as f32;
            let t = ((fx - 0.5) * ca + (fy - 0.5) * sa + 0.5).clamp(0.0, 1.0);
            let mut px = [0.0f32; 3];
            for c in 0..3 {
                px[c] = top[c] * (1.0 - t) + bottom[c] * t;
            }
            for s in &shapes {
                let (dx, dy) = ((fx - s.cx) / s.rx, (fy - s.cy) / s.ry);
                let d = if s.ellipse {
                    (dx * dx + dy * dy).sqrt()
                } else {
                    dx.abs().max(dy.abs())
                };
                // A soft edge over ~5% of the radius: anti-aliased, as in photographs.
                let cover = ((1.0 - d) * 20.0).clamp(0.0, 1.0) * s.alpha;
                for (p, &col) in px.iter_mut().zip(&s.color) {
                    *p += (col - *p) * cover;
                }
            }
            let wave = texture * (freq * x as f32 + phase).sin() * (freq * 0.8 * y as f32).cos();
            let noise = (grain.unit() - 0.5) * 10.0;
            for v in px {
                data.push((v + wave + noise).clamp(0.0, 255.0) as u8);
            }
        }
    }
    let shape = if main.1 { "circle" } else { "rectangle" };
    let size = if shape_count > 3 {
        "among other shapes"
    } else {
        ""
    };
    let caption = format!(
        "A {} {} {} on a {} gradient background.",
        main.0, shape, size, top_name
    )
    .replace("  ", " ");
    (
        RgbImage {
            width,
            height,
            data,
        },
        caption,
    )
}

fn encode(img: &RgbImage, quality: u8) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let (w, h) = (
        u16::try_from(img.width).ok(),
        u16::try_from(img.height).ok(),
    );
    let (Some(w), Some(h)) = (w, h) else {
        return Err(planted_error(format!(
            "{}x{} is too large for JPEG",
            img.width, img.height
        )));
    };
    Encoder::new(&mut out, quality)
        .encode(&img.data, w, h, ColorType::Rgb)
        .map_err(|e| planted_error(format!("JPEG encode: {e}")))?;
    Ok(out)
}

fn planted_error(reason: String) -> Error {
    Error::Output {
        path: PathBuf::from("<planted pool>"),
        reason,
    }
}

fn crop(img: &RgbImage, left: u32, top: u32, right: u32, bottom: u32) -> RgbImage {
    let (w, h) = (img.width - left - right, img.height - top - bottom);
    let mut data = Vec::with_capacity(3 * (w * h) as usize);
    for y in top..top + h {
        let row = 3 * (y * img.width) as usize;
        data.extend_from_slice(&img.data[row + 3 * left as usize..row + 3 * (left + w) as usize]);
    }
    RgbImage {
        width: w,
        height: h,
        data,
    }
}

/// The original and its planted copies for original number `index`.
fn group(index: u32, seed: u64) -> Result<Vec<PlantedSample>> {
    let mut rng = Rng(seed ^ u64::from(index).wrapping_mul(0xd6e8_feb8_6659_fd93));
    let (img, caption) = original_image(&mut rng);
    let jpeg = encode(&img, 92)?;
    // What a copy is made from: the decoded original, as a re-uploader would have it.
    let decoded = decode_rgb8(&jpeg, &DecodeOptions::default())?;
    let mut out = vec![PlantedSample {
        key: String::new(),
        jpeg: jpeg.clone(),
        width: img.width,
        height: img.height,
        caption: caption.clone(),
        off_topic: false,
        original: index,
        kind: PlantedKind::Original,
    }];
    // A third of the originals stay alone (the distinct images false positives are counted
    // on); the others get 1–4 copies of kinds drawn independently.
    let copies = if rng.next().is_multiple_of(3) {
        0
    } else {
        rng.range(1, 4)
    };
    for _ in 0..copies {
        let (kind, jpeg, w, h) = match rng.next() % 5 {
            0 => (PlantedKind::ExactCopy, jpeg.clone(), img.width, img.height),
            1 => {
                let quality = rng.range(60, 90) as u8;
                (
                    PlantedKind::Reencode { quality },
                    encode(&decoded, quality)?,
                    img.width,
                    img.height,
                )
            }
            2 => {
                let percent = rng.range(50, 90) as u8;
                let w = (img.width * u32::from(percent) / 100).max(1);
                let h = (img.height * u32::from(percent) / 100).max(1);
                let small = resize(&decoded, w, h, ResizeFilter::Bicubic)?;
                (PlantedKind::Resize { percent }, encode(&small, 88)?, w, h)
            }
            3 => {
                let cut = |rng: &mut Rng, side: u32| side * rng.range(0, 10) / 100;
                let (l, r) = (cut(&mut rng, img.width), cut(&mut rng, img.width));
                let (t, b) = (cut(&mut rng, img.height), cut(&mut rng, img.height));
                let c = crop(&decoded, l, t, r, b);
                let (w, h) = (c.width, c.height);
                (PlantedKind::Crop, encode(&c, 88)?, w, h)
            }
            _ => (
                PlantedKind::Flip,
                encode(&apply_orientation(decoded.clone(), EXIF_MIRROR), 88)?,
                img.width,
                img.height,
            ),
        };
        out.push(PlantedSample {
            key: String::new(),
            jpeg,
            width: w,
            height: h,
            caption: caption.clone(),
            off_topic: false,
            original: index,
            kind,
        });
    }
    for s in &mut out {
        if rng.next().is_multiple_of(10) {
            s.caption = rng.pick(&OFF_TOPIC).to_string();
            s.off_topic = true;
        }
    }
    Ok(out)
}

/// A planted pool made from `originals` distinct originals: each original, plus for about two
/// thirds of them 1–4 copies, in a shuffled order (so a copy may come before its original),
/// keyed `p0000000`, `p0000001`, … in that order. The same `seed` gives the same bytes.
pub fn planted_pool(originals: usize, seed: u64) -> Result<Vec<PlantedSample>> {
    let count = u32::try_from(originals)
        .map_err(|_| planted_error(format!("{originals} originals is too many")))?;
    let groups: Vec<Vec<PlantedSample>> = (0..count)
        .into_par_iter()
        .map(|i| group(i, seed))
        .collect::<Result<_>>()?;
    let mut samples: Vec<PlantedSample> = groups.into_iter().flatten().collect();
    let mut rng = Rng(seed.wrapping_add(0x5851_f42d_4c95_7f2d));
    for i in (1..samples.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        samples.swap(i, j);
    }
    for (i, s) in samples.iter_mut().enumerate() {
        s.key = format!("p{i:07}");
    }
    Ok(samples)
}

/// Writes `samples` as WebDataset tar shards `planted-00000.tar`, … under `dir` (created if
/// missing), `per_shard` samples each, members `KEY.jpg` and `KEY.txt`. Returns the shard paths
/// in order.
pub fn write_planted_shards(
    dir: &Path,
    samples: &[PlantedSample],
    per_shard: usize,
) -> Result<Vec<PathBuf>> {
    if per_shard == 0 {
        return Err(Error::Output {
            path: dir.to_path_buf(),
            reason: "samples per shard must be at least 1".into(),
        });
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut paths = Vec::new();
    for (n, chunk) in samples.chunks(per_shard).enumerate() {
        let path = dir.join(format!("planted-{n:05}.tar"));
        let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut tar = TarWriter::new(std::io::BufWriter::new(file));
        for s in chunk {
            tar.append(&format!("{}.jpg", s.key), &s.jpeg)
                .and_then(|()| tar.append(&format!("{}.txt", s.key), s.caption.as_bytes()))
                .map_err(|e| Error::io(&path, e))?;
        }
        let mut out = tar.finish().map_err(|e| Error::io(&path, e))?;
        std::io::Write::flush(&mut out).map_err(|e| Error::io(&path, e))?;
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_is_deterministic_and_keyed_in_order() {
        let a = planted_pool(6, 7).unwrap();
        let b = planted_pool(6, 7).unwrap();
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((&x.key, &x.jpeg, &x.caption), (&y.key, &y.jpeg, &y.caption));
        }
        assert!(
            a.iter()
                .enumerate()
                .all(|(i, s)| s.key == format!("p{i:07}"))
        );
        let originals = a.iter().filter(|s| s.kind == PlantedKind::Original).count();
        assert_eq!(originals, 6);
        let c = planted_pool(6, 8).unwrap();
        assert_ne!(a[0].jpeg, c[0].jpeg, "another seed, other images");
    }

    #[test]
    fn copies_have_the_sizes_and_bytes_their_kind_says() {
        let pool = planted_pool(30, 1).unwrap();
        let original = |g: u32| {
            pool.iter()
                .find(|s| s.original == g && s.kind == PlantedKind::Original)
                .unwrap()
        };
        for s in &pool {
            let o = original(s.original);
            let img = decode_rgb8(&s.jpeg, &DecodeOptions::default()).unwrap();
            assert_eq!((img.width, img.height), (s.width, s.height), "{}", s.key);
            assert!((200..=900).contains(&o.width) && (200..=900).contains(&o.height));
            match s.kind {
                PlantedKind::ExactCopy => assert_eq!(s.jpeg, o.jpeg),
                PlantedKind::Crop => {
                    assert!(s.width * 10 >= o.width * 8 && s.height * 10 >= o.height * 8);
                }
                PlantedKind::Resize { percent } => {
                    assert_eq!(s.width, o.width * u32::from(percent) / 100);
                }
                _ => {}
            }
        }
    }

    #[test]
    fn shards_hold_every_sample_as_jpg_and_txt() {
        let pool = planted_pool(4, 3).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let paths = write_planted_shards(dir.path(), &pool, 3).unwrap();
        assert_eq!(paths.len(), pool.len().div_ceil(3));
        let bytes: Vec<u8> = paths
            .iter()
            .flat_map(|p| std::fs::read(p).unwrap())
            .collect();
        let text = String::from_utf8_lossy(&bytes);
        for s in &pool {
            assert!(text.contains(&format!("{}.jpg", s.key)));
            assert!(text.contains(&format!("{}.txt", s.key)));
        }
        assert!(write_planted_shards(dir.path(), &pool, 0).is_err());
    }
}
