//! `embed`: every sample's image and caption through a SigLIP model.
//!
//! Per shard, in batches: images are decoded in parallel, their pixel values written straight
//! into the batch tensor at their slot, captions tokenized; both towers run on the backend; the
//! features, the pair scores and the keys are streamed to `image_embeds.npy`, `text_embeds.npy`,
//! `scores.npy`, `keys.txt` and `embeds.parquet` (one row group per batch), all in the same
//! order. A sample whose image is missing or fails to decode is recorded in `problems.jsonl`
//! and skipped; a sample without a caption is embedded with an empty caption and recorded.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;

use super::{image_error_kind, image_member, sample_problem};
use crate::backend::tensor::TensorOps;
use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::image::decode::{DecodeOptions, decode_rgb8};
use crate::model::siglip::{SiglipModel, preprocess, sigmoid};
use crate::pack::sample_text::{SampleText, parse_sample_text};
use crate::problems::{Problem, ProblemLog};
use crate::shard::{SampleEntry, Shard, ShardSource};
use crate::sink::embed_table::{EmbedRow, EmbedTableWriter};
use crate::sink::npy::NpyStream;

/// Settings of an `embed` run.
#[derive(Debug, Clone)]
pub struct EmbedConfig {
    /// Output folder.
    pub out: PathBuf,
    /// Samples per model batch.
    pub batch: usize,
    /// Decode guard and orientation.
    pub decode: DecodeOptions,
}

/// What an `embed` run did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct EmbedSummary {
    /// The model folder.
    pub model: String,
    /// The backend that ran it.
    pub backend: String,
    /// Embedding width.
    pub dim: usize,
    /// Samples per batch.
    pub batch: usize,
    /// Shards read.
    pub shards: usize,
    /// Samples seen.
    pub samples: usize,
    /// Samples embedded (image and caption).
    pub embedded: usize,
    /// Embedded samples that had no caption (embedded with "").
    pub missing_captions: usize,
    /// Wall-clock seconds of the whole run.
    pub seconds: f64,
    /// Seconds in decoding and preprocessing images.
    pub decode_seconds: f64,
    /// Seconds in the image tower.
    pub image_tower_seconds: f64,
    /// Seconds in tokenization and the text tower.
    pub text_tower_seconds: f64,
    /// Embedded samples per wall-clock second.
    pub images_per_second: f64,
    /// Problems by kind.
    pub problem_counts: std::collections::BTreeMap<&'static str, usize>,
}

/// A sample ready for the model.
struct Ready<'s> {
    sample: &'s SampleEntry,
    image: RgbImage,
    caption: Option<String>,
}

/// The output files, written in step.
struct Outputs {
    image: NpyStream,
    text: NpyStream,
    scores: NpyStream,
    keys: std::io::BufWriter<std::fs::File>,
    keys_path: PathBuf,
    table: EmbedTableWriter,
}

impl Outputs {
    fn create(out: &Path, dim: usize) -> Result<Self> {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let keys_path = out.join("keys.txt");
        let keys = std::fs::File::create(&keys_path).map_err(|e| Error::io(&keys_path, e))?;
        Ok(Outputs {
            image: NpyStream::create(&out.join("image_embeds.npy"), "<f4", &[dim], 4)?,
            text: NpyStream::create(&out.join("text_embeds.npy"), "<f4", &[dim], 4)?,
            scores: NpyStream::create(&out.join("scores.npy"), "<f4", &[], 4)?,
            keys: std::io::BufWriter::new(keys),
            keys_path,
            table: EmbedTableWriter::create(&out.join("embeds.parquet"))?,
        })
    }

    fn finish(mut self) -> Result<()> {
        self.keys
            .flush()
            .map_err(|e| Error::io(&self.keys_path, e))?;
        self.image.finish()?;
        self.text.finish()?;
        self.scores.finish()?;
        self.table.finish()
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Runs `embed` over `sources`. `progress` grows by each shard's samples as it is opened and
/// is advanced by one per sample done. Fails only when
/// the outputs cannot be written or the model itself fails; bad samples are recorded.
pub fn run_embed<B: TensorOps>(
    model: &SiglipModel<B>,
    backend: &str,
    sources: &[ShardSource],
    cfg: &EmbedConfig,
    progress: &indicatif::ProgressBar,
) -> Result<(EmbedSummary, ProblemLog)> {
    let start = Instant::now();
    let dim = model.embed_dim();
    let mut out = Outputs::create(&cfg.out, dim)?;
    let mut summary = EmbedSummary {
        model: model.path.display().to_string(),
        backend: backend.to_string(),
        dim,
        batch: cfg.batch.max(1),
        ..Default::default()
    };
    let mut problems = ProblemLog::default();
    let per_image = 3 * model.preprocess.width * model.preprocess.height;

    for source in sources {
        let shard = match Shard::open(source) {
            Ok(shard) => shard,
            Err(err) => {
                problems.push(Problem {
                    shard: source.path().to_path_buf(),
                    offset: None,
                    key: None,
                    kind: "shard",
                    message: err.to_string(),
                });
                continue;
            }
        };
        summary.shards += 1;
        summary.samples += shard.samples().len();
        progress.inc_length(shard.samples().len() as u64);
        problems.extend(shard.problems().iter().cloned());
        let shard_name = shard.path().display().to_string();

        for chunk in shard.samples().chunks(summary.batch) {
            let t0 = Instant::now();
            let (ready, bad): (Vec<_>, Vec<_>) = chunk
                .par_iter()
                .map(|s| prepare(&shard, s, &cfg.decode))
                .partition(|r| r.is_ok());
            problems.extend(bad.into_iter().filter_map(|r| r.err()));
            let ready: Vec<Ready> = ready.into_iter().filter_map(|r| r.ok()).collect();
            // pixel values written once, at each image's slot of the batch tensor
            let mut pixels = vec![0.0f32; ready.len() * per_image];
            let written: Vec<Result<()>> = pixels
                .par_chunks_mut(per_image.max(1))
                .zip(ready.par_iter())
                .map(|(dst, r)| preprocess::write_pixel_values(&r.image, &model.preprocess, dst))
                .collect();
            for (r, w) in ready.iter().zip(&written) {
                if let Err(e) = w {
                    // the resize refuses only what nothing could embed; the batch goes on
                    problems.push(sample_problem(&shard, r.sample, "resize", e.to_string()));
                }
            }
            let keep: Vec<bool> = written.iter().map(Result::is_ok).collect();
            let (ready, pixels) = keep_rows(ready, pixels, per_image, &keep);
            summary.decode_seconds += t0.elapsed().as_secs_f64();
            if ready.is_empty() {
                progress.inc(chunk.len() as u64);
                continue;
            }

            let t1 = Instant::now();
            let image_feats = model.image_features(&pixels)?;
            summary.image_tower_seconds += t1.elapsed().as_secs_f64();

            let t2 = Instant::now();
            let captions: Vec<&str> = ready
                .iter()
                .map(|r| r.caption.as_deref().unwrap_or(""))
                .collect();
            let text_feats = model.embed_texts(&captions)?;
            summary.text_tower_seconds += t2.elapsed().as_secs_f64();

            let scores: Vec<f32> = image_feats
                .chunks(dim)
                .zip(text_feats.chunks(dim))
                .map(|(i, t)| sigmoid(model.pair_logit(i, t)))
                .collect();
            out.image.append(&f32_bytes(&image_feats))?;
            out.text.append(&f32_bytes(&text_feats))?;
            out.scores.append(&f32_bytes(&scores))?;
            let mut rows = Vec::with_capacity(ready.len());
            for (i, r) in ready.iter().enumerate() {
                writeln!(out.keys, "{}", r.sample.key).map_err(|e| Error::io(&out.keys_path, e))?;
                if r.caption.is_none() {
                    summary.missing_captions += 1;
                    problems.push(sample_problem(
                        &shard,
                        r.sample,
                        "no-caption",
                        "no caption (.txt, or .json caption/text/conversations); embedded \"\""
                            .into(),
                    ));
                }
                rows.push(EmbedRow {
                    key: &r.sample.key,
                    shard: &shard_name,
                    score: scores[i],
                    image: &image_feats[i * dim..(i + 1) * dim],
                    text: &text_feats[i * dim..(i + 1) * dim],
                });
            }
            out.table.append(&rows)?;
            summary.embedded += ready.len();
            progress.inc(chunk.len() as u64);
            progress.set_message(format!("{} embedded", summary.embedded));
        }
    }
    out.finish()?;
    summary.seconds = start.elapsed().as_secs_f64();
    summary.images_per_second = summary.embedded as f64 / summary.seconds.max(1e-9);
    summary.problem_counts = problems.counts();
    super::tile::write_problems(&cfg.out.join("problems.jsonl"), &problems)?;
    crate::sink::write_json(&cfg.out.join("summary.json"), &summary)?;
    Ok((summary, problems))
}

/// Drops the rows whose `keep` is false from both the samples and the pixel tensor.
fn keep_rows<'s>(
    ready: Vec<Ready<'s>>,
    pixels: Vec<f32>,
    per: usize,
    keep: &[bool],
) -> (Vec<Ready<'s>>, Vec<f32>) {
    if keep.iter().all(|&k| k) {
        return (ready, pixels);
    }
    let mut kept_pixels = Vec::with_capacity(pixels.len());
    let mut kept = Vec::with_capacity(ready.len());
    for ((r, &k), px) in ready.into_iter().zip(keep).zip(pixels.chunks(per.max(1))) {
        if k {
            kept.push(r);
            kept_pixels.extend_from_slice(px);
        }
    }
    (kept, kept_pixels)
}

/// Decodes a sample's image and reads its caption.
fn prepare<'s>(
    shard: &Shard,
    sample: &'s SampleEntry,
    decode: &DecodeOptions,
) -> std::result::Result<Ready<'s>, Problem> {
    let fail = |kind: &'static str, message: String| sample_problem(shard, sample, kind, message);
    let member = image_member(sample)
        .ok_or_else(|| fail("no-image", "sample has no image member".into()))?;
    let data = shard
        .member_data(member)
        .map_err(|e| fail(image_error_kind(&e), e.to_string()))?;
    let image =
        decode_rgb8(&data, decode).map_err(|e| fail(image_error_kind(&e), e.to_string()))?;
    let caption = caption_of(shard, sample).map_err(|e| fail("text", e.to_string()))?;
    Ok(Ready {
        sample,
        image,
        caption,
    })
}

/// The caption SigLIP scores the image against: the `.txt`, the `.json` caption keys, or a
/// conversation's turns joined (image tags removed); None when the sample has no text.
pub(crate) fn caption_of(shard: &Shard, sample: &SampleEntry) -> Result<Option<String>> {
    let bytes = |ext: &str| sample.member(ext).map(|m| shard.member_data(m)).transpose();
    let (txt, json) = (bytes("txt")?, bytes("json")?);
    if txt.is_none() && json.is_none() {
        return Ok(None);
    }
    Ok(match parse_sample_text(txt.as_deref(), json.as_deref())? {
        SampleText::Caption(c) if !c.is_empty() || txt.is_some() => Some(c),
        SampleText::Caption(_) => None,
        SampleText::Conversation(turns) => Some(
            turns
                .iter()
                .map(|t| t.text.replace("<image>", " "))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        SampleText::Pretokenized { .. } => None,
    })
}
