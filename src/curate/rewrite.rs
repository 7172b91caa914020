//! `curate --write-shards`: the kept samples as new WebDataset shards, in pool order. Members
//! are copied byte for byte from the mapped input; with a maximum side, images larger than it
//! are decoded, resized (Pillow bicubic) to fit and re-encoded as JPEG. Each shard is written
//! under a `.partial` name and renamed when complete.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::image::decode::{DecodeOptions, decode_rgb8};
use crate::image::pillow_resample::resize_like_pillow;
use crate::image::resize::ResizeFilter;
use crate::pipeline::image_member;
use crate::shard::{Shard, ShardSource};
use crate::sink::tar::TarWriter;

/// How kept samples are written.
#[derive(Debug, Clone)]
pub struct RewriteSettings {
    /// Output folder.
    pub dir: PathBuf,
    /// Samples per output shard.
    pub per_shard: usize,
    /// Images whose longer side exceeds this are re-encoded at this size.
    pub max_side: Option<u32>,
    /// JPEG quality of re-encoded images.
    pub quality: u8,
}

/// What was written.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RewriteSummary {
    /// The output folder.
    pub dir: String,
    /// Shards written.
    pub shards: usize,
    /// Samples written.
    pub samples: usize,
    /// Images re-encoded at the maximum side.
    pub reencoded: usize,
    /// Images that could not be re-encoded and were copied as they were.
    pub reencode_failures: usize,
}

/// An output shard being filled.
struct OpenShard {
    path: PathBuf,
    partial: PathBuf,
    tar: TarWriter<std::io::BufWriter<std::fs::File>>,
    samples: usize,
}

impl OpenShard {
    fn create(dir: &Path, index: usize) -> Result<Self> {
        let path = dir.join(format!("kept-{index:06}.tar"));
        let mut partial = path.clone();
        partial.as_mut_os_string().push(".partial");
        let file = std::fs::File::create(&partial).map_err(|e| Error::io(&partial, e))?;
        Ok(OpenShard {
            path,
            partial,
            tar: TarWriter::new(std::io::BufWriter::with_capacity(1 << 20, file)),
            samples: 0,
        })
    }

    fn finish(self) -> Result<()> {
        let out = self.tar.finish().map_err(|e| Error::io(&self.partial, e))?;
        let file = out
            .into_inner()
            .map_err(|e| Error::io(&self.partial, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.partial, e))?;
        std::fs::rename(&self.partial, &self.path).map_err(|e| Error::io(&self.path, e))
    }
}

/// The image re-encoded to fit `max_side`, or `None` when it already fits.
fn reencode(data: &[u8], max_side: u32, quality: u8) -> Result<Option<Vec<u8>>> {
    let image = decode_rgb8(data, &DecodeOptions::default())?;
    let long = image.width.max(image.height);
    if long <= max_side {
        return Ok(None);
    }
    let scale = f64::from(max_side) / f64::from(long);
    let w = ((f64::from(image.width) * scale).round() as u32).clamp(1, max_side);
    let h = ((f64::from(image.height) * scale).round() as u32).clamp(1, max_side);
    let small = resize_like_pillow(&image, w, h, ResizeFilter::Bicubic)?;
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, quality)
        .encode(
            &small.data,
            w as u16,
            h as u16,
            jpeg_encoder::ColorType::Rgb,
        )
        .map_err(|e| Error::Resize(format!("jpeg encode: {e}")))?;
    Ok(Some(out))
}

/// Writes the samples `kept` (pairs of source index and sample index within that source, in
/// pool order) from `sources` as shards under `settings.dir`.
pub fn write_kept_shards(
    sources: &[ShardSource],
    kept: &[(usize, usize)],
    settings: &RewriteSettings,
) -> Result<RewriteSummary> {
    let dir = &settings.dir;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut summary = RewriteSummary {
        dir: dir.display().to_string(),
        ..Default::default()
    };
    let mut current: Option<OpenShard> = None;
    let mut opened: Option<(usize, Shard)> = None;
    for &(source, index) in kept {
        if opened.as_ref().is_none_or(|(s, _)| *s != source) {
            opened = Some((source, Shard::open(&sources[source])?));
        }
        let Some((_, shard)) = &opened else { continue };
        let Some(sample) = shard.samples().get(index) else {
            return Err(Error::Curate(format!(
                "{}: sample {index} is gone (the shard changed since its signals were computed)",
                shard.path().display()
            )));
        };
        if current
            .as_ref()
            .is_some_and(|c| c.samples >= settings.per_shard.max(1))
            && let Some(done) = current.take()
        {
            done.finish()?;
        }
        if current.is_none() {
            current = Some(OpenShard::create(dir, summary.shards)?);
            summary.shards += 1;
        }
        let Some(out) = current.as_mut() else {
            continue;
        };
        let image_at = image_member(sample)
            .and_then(|img| sample.members.iter().position(|m| std::ptr::eq(m, img)));
        for (at, member) in sample.members.iter().enumerate() {
            let data = shard.member_data(member)?;
            let is_image = image_at == Some(at);
            let mut name = format!("{}.{}", sample.key, member.ext);
            let mut bytes: &[u8] = &data;
            let reencoded;
            if let (true, Some(max_side)) = (is_image, settings.max_side) {
                match reencode(&data, max_side, settings.quality) {
                    Ok(Some(jpeg)) => {
                        reencoded = jpeg;
                        bytes = &reencoded;
                        name = format!("{}.jpg", sample.key);
                        summary.reencoded += 1;
                    }
                    Ok(None) => {}
                    Err(_) => summary.reencode_failures += 1,
                }
            }
            out.tar
                .append(&name, bytes)
                .map_err(|e| Error::io(&out.partial, e))?;
        }
        out.samples += 1;
        summary.samples += 1;
    }
    if let Some(done) = current.take() {
        done.finish()?;
    }
    Ok(summary)
}
