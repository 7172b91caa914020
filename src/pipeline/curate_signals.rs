//! Pass 1 of `curate` for one shard: every sample's image is read once from the mapping, hashed
//! (xxh3-128 of the bytes), decoded once, measured and perceptually hashed; with a model, the
//! same decoded pixels and the caption go through SigLIP in batches. A sample whose image is
//! missing or broken gets a row with its error (and a problem), never stops the shard.

use rayon::prelude::*;

use super::embed::caption_of;
use super::{image_error_kind, image_member, sample_problem};
use crate::backend::tensor::TensorOps;
use crate::curate::exact::content_hash;
use crate::curate::phash::phash;
use crate::curate::signals::{ShardSignals, SignalRow};
use crate::error::Result;
use crate::image::RgbImage;
use crate::image::decode::{DecodeOptions, decode};
use crate::model::siglip::{SiglipModel, preprocess, sigmoid};
use crate::problems::Problem;
use crate::shard::{SampleEntry, Shard};

/// One sample after decoding: its row, and the pixels when a model will still need them.
struct Measured {
    row: SignalRow,
    image: Option<RgbImage>,
    caption: Option<String>,
    problems: Vec<Problem>,
}

/// Reads, hashes and decodes one sample; the perceptual hash too unless `device_phash` (the
/// model's backend hashes the batch afterwards, from the kept pixels).
fn measure(
    shard: &Shard,
    sample: &SampleEntry,
    decode_opts: &DecodeOptions,
    keep_pixels: bool,
    device_phash: bool,
) -> Measured {
    let mut row = SignalRow {
        key: sample.key.clone(),
        offset: sample.offset,
        ..Default::default()
    };
    let mut problems = Vec::new();
    let caption = match caption_of(shard, sample) {
        Ok(c) => c,
        Err(e) => {
            problems.push(sample_problem(shard, sample, "text", e.to_string()));
            None
        }
    };
    row.caption_chars = caption.as_ref().map(|c| c.chars().count() as u32);
    let mut fail = |row: &mut SignalRow, kind: &'static str, message: String| {
        row.error = Some(format!("{kind}: {message}"));
        problems.push(sample_problem(shard, sample, kind, message));
    };
    let Some(member) = image_member(sample) else {
        fail(&mut row, "no-image", "sample has no image member".into());
        return Measured {
            row,
            image: None,
            caption,
            problems,
        };
    };
    row.image_offset = Some(member.offset);
    row.image_ext = Some(member.ext.clone());
    row.image_bytes = Some(member.len);
    let data = match shard.member_data(member) {
        Ok(d) => d,
        Err(e) => {
            fail(&mut row, image_error_kind(&e), e.to_string());
            return Measured {
                row,
                image: None,
                caption,
                problems,
            };
        }
    };
    row.xxh3 = Some(format!("{:032x}", content_hash(&data)));
    let decoded = match decode(&data, decode_opts) {
        Ok(d) => d,
        Err(e) => {
            fail(&mut row, image_error_kind(&e), e.to_string());
            return Measured {
                row,
                image: None,
                caption,
                problems,
            };
        }
    };
    row.format = Some(decoded.header.format.name().to_string());
    row.width = Some(decoded.image.width);
    row.height = Some(decoded.image.height);
    if !device_phash {
        match phash(&decoded.image) {
            Ok(h) => {
                row.phash = Some(h.hash);
                row.phash_flipped = Some(h.flipped);
            }
            Err(e) => fail(&mut row, "phash", e.to_string()),
        }
    }
    let image = keep_pixels.then_some(decoded.image);
    Measured {
        row,
        image,
        caption,
        problems,
    }
}

/// Computes the signals of every sample of `shard`, `batch` samples at a time; `on_progress`
/// is called with the number of samples done after each batch.
pub fn shard_signals<B: TensorOps>(
    shard: &Shard,
    model: Option<&SiglipModel<B>>,
    decode_opts: &DecodeOptions,
    batch: usize,
    mut on_progress: impl FnMut(usize),
) -> Result<(ShardSignals, Vec<Problem>)> {
    let dim = model.map_or(0, SiglipModel::embed_dim);
    let mut out = ShardSignals {
        rows: Vec::with_capacity(shard.samples().len()),
        dim,
        ..Default::default()
    };
    let mut problems: Vec<Problem> = shard.problems().to_vec();
    // A backend with a pHash kernel (wgpu, CUDA) hashes each batch's decoded pixels on its
    // device, equal to the CPU's hash bit for bit; the pixels are kept for the model anyway.
    let device_phash = model.is_some_and(|m| m.ops().device_phash(&[]).is_some());
    for chunk in shard.samples().chunks(batch.max(1)) {
        let mut measured: Vec<Measured> = chunk
            .par_iter()
            .map(|s| measure(shard, s, decode_opts, model.is_some(), device_phash))
            .collect();
        if let (true, Some(model)) = (device_phash, model) {
            hash_on_device(model.ops(), &mut measured)?;
        }
        if let Some(model) = model {
            embed_batch(shard, chunk, model, &mut measured, &mut out, &mut problems)?;
        }
        for m in measured {
            problems.extend(m.problems);
            out.rows.push(m.row);
        }
        on_progress(chunk.len());
    }
    Ok((out, problems))
}

/// Fills the perceptual hashes of the decoded samples of one batch from the backend's kernel.
fn hash_on_device<B: TensorOps>(ops: &B, measured: &mut [Measured]) -> Result<()> {
    let images: Vec<&RgbImage> = measured.iter().filter_map(|m| m.image.as_ref()).collect();
    let hashes = ops.device_phash(&images).unwrap_or_else(|| {
        Err(crate::error::Error::Curate(
            "the backend stopped offering perceptual hashing".into(),
        ))
    })?;
    if hashes.len() != images.len() {
        return Err(crate::error::Error::Curate(format!(
            "{} perceptual hashes for {} images",
            hashes.len(),
            images.len()
        )));
    }
    let rows = measured.iter_mut().filter(|m| m.image.is_some());
    for (m, h) in rows.zip(hashes) {
        m.row.phash = Some(h.hash);
        m.row.phash_flipped = Some(h.flipped);
    }
    Ok(())
}

/// Runs the decoded images of one batch and their captions through the model, filling the
/// rows' score and embedding row and appending the features to `out`.
fn embed_batch<B: TensorOps>(
    shard: &Shard,
    chunk: &[SampleEntry],
    model: &SiglipModel<B>,
    measured: &mut [Measured],
    out: &mut ShardSignals,
    problems: &mut Vec<Problem>,
) -> Result<()> {
    let per_image = 3 * model.preprocess.width * model.preprocess.height;
    let ready: Vec<usize> = (0..measured.len())
        .filter(|&i| measured[i].image.is_some())
        .collect();
    let mut pixels = vec![0.0f32; ready.len() * per_image];
    let written: Vec<Result<()>> = pixels
        .par_chunks_mut(per_image.max(1))
        .zip(ready.par_iter())
        .map(|(dst, &i)| match &measured[i].image {
            Some(img) => preprocess::write_pixel_values(img, &model.preprocess, dst),
            None => Ok(()),
        })
        .collect();
    let mut slots = Vec::with_capacity(ready.len());
    let mut failed = false;
    for (&i, w) in ready.iter().zip(&written) {
        match w {
            Ok(()) => slots.push(i),
            Err(e) => {
                failed = true;
                let message = e.to_string();
                measured[i].row.error = Some(format!("resize: {message}"));
                problems.push(sample_problem(shard, &chunk[i], "resize", message));
            }
        }
    }
    if failed {
        // Rare: close the gaps left by refused images, in place, instead of copying the
        // batch tensor on every batch.
        let mut kept = 0;
        for (row, w) in written.iter().enumerate() {
            if w.is_ok() {
                pixels.copy_within(row * per_image..(row + 1) * per_image, kept * per_image);
                kept += 1;
            }
        }
        pixels.truncate(kept * per_image);
    }
    for m in measured.iter_mut() {
        m.image = None; // the pixels are in the batch tensor now
    }
    if slots.is_empty() {
        return Ok(());
    }
    let dim = out.dim;
    let image_feats = model.image_features(&pixels)?;
    let captions: Vec<&str> = slots
        .iter()
        .map(|&i| measured[i].caption.as_deref().unwrap_or(""))
        .collect();
    let text_feats = model.embed_texts(&captions)?;
    for (k, &i) in slots.iter().enumerate() {
        let (img, txt) = (
            &image_feats[k * dim..(k + 1) * dim],
            &text_feats[k * dim..(k + 1) * dim],
        );
        // A missing caption embeds as "", whose score means nothing: leave it out.
        let score = measured[i]
            .caption
            .is_some()
            .then(|| sigmoid(model.pair_logit(img, txt)));
        let row = &mut measured[i].row;
        row.embed_row = Some((out.image_embeds.len() / dim) as u32);
        row.score = score;
        out.image_embeds.extend_from_slice(img);
        out.text_embeds.extend_from_slice(txt);
    }
    Ok(())
}
