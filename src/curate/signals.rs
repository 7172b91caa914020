//! Pass 1 of curation, on disk: the signals of one shard (hashes, sizes, caption length,
//! relevance score per sample; image and caption embeddings) in a folder of their own under
//! `OUT/signals/`. A shard's folder is built under a `.partial` name and renamed when complete,
//! so a crash never leaves half a shard's signals: on restart a complete folder is skipped (when
//! its `meta.json` matches the shard and the settings) and a `.partial` one is redone.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::problems::Problem;
use crate::sink::npy::write_npy;
use crate::sink::table::{Table, Values, read_table, write_table};

/// The signals of one sample.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SignalRow {
    /// WebDataset key.
    pub key: String,
    /// Byte offset of the sample's first tar header (0 for folders).
    pub offset: u64,
    /// Byte offset of the image member's data, when the sample has one.
    pub image_offset: Option<u64>,
    /// Extension of the image member (`jpg`, `png`, …).
    pub image_ext: Option<String>,
    /// Size in bytes of the image member.
    pub image_bytes: Option<u64>,
    /// Container format from the header (`jpeg`, `png`, `webp`).
    pub format: Option<String>,
    /// Width and height after EXIF orientation.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// xxh3-128 of the image member's bytes, as 32 hex digits.
    pub xxh3: Option<String>,
    /// 64-bit DCT perceptual hash of the image, and of its mirror image.
    pub phash: Option<u64>,
    pub phash_flipped: Option<u64>,
    /// Characters of the caption; `None` when the sample has no caption.
    pub caption_chars: Option<u32>,
    /// Sigmoid image–caption score of the model, when one was given.
    pub score: Option<f32>,
    /// Row of this sample in the shard's embedding files, when it was embedded.
    pub embed_row: Option<u32>,
    /// Why the image gave no signals (`kind: message`), when it failed.
    pub error: Option<String>,
}

/// Everything pass 1 knows about one shard.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ShardSignals {
    /// One row per sample, in shard order.
    pub rows: Vec<SignalRow>,
    /// Embedding width (0 without a model).
    pub dim: usize,
    /// Image embeddings, `[embedded rows, dim]` row-major.
    pub image_embeds: Vec<f32>,
    /// Caption embeddings, same shape.
    pub text_embeds: Vec<f32>,
}

/// What a shard's signals were computed from; a folder whose meta differs is redone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalMeta {
    /// Layout version of the signal folder.
    pub version: u32,
    /// The shard, as given.
    pub shard: String,
    /// Its size in bytes when read.
    pub shard_bytes: u64,
    /// Samples in it.
    pub samples: usize,
    /// The model folder, when one was used, and its embedding width.
    pub model: Option<String>,
    pub dim: usize,
    /// Problems found in the shard, by kind (listed in the folder's `problems.jsonl`).
    pub problem_counts: std::collections::BTreeMap<String, usize>,
}

impl SignalMeta {
    /// True when a folder with meta `self` holds the signals a run that expects `wanted`
    /// needs: same layout, shard, shard size and model.
    pub fn same_input(&self, wanted: &SignalMeta) -> bool {
        self.version == wanted.version
            && self.shard == wanted.shard
            && self.shard_bytes == wanted.shard_bytes
            && self.model == wanted.model
            && self.dim == wanted.dim
    }
}

/// Version written into [`SignalMeta::version`].
pub const SIGNAL_VERSION: u32 = 1;

/// The folder of `shard`'s signals under `signals_dir`: the file name (readable) plus a hash of
/// the whole path (two shards of the same name in different folders stay apart).
pub fn shard_folder(signals_dir: &Path, shard: &Path) -> PathBuf {
    let path = shard.to_string_lossy();
    let hash = twox_hash::XxHash3_128::oneshot(path.as_bytes()) as u64;
    let name: String = shard
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    signals_dir.join(format!("{name}-{hash:016x}"))
}

fn to_i64(v: Option<u64>) -> Option<i64> {
    // Hashes use all 64 bits: stored as the i64 with the same bits.
    v.map(|v| v as i64)
}

fn rows_to_table(rows: &[SignalRow]) -> Table {
    let col = |f: &dyn Fn(&SignalRow) -> Option<i64>| Values::I64(rows.iter().map(f).collect());
    let text = |f: &dyn Fn(&SignalRow) -> Option<String>| Values::Str(rows.iter().map(f).collect());
    Table {
        columns: vec![
            ("key".into(), text(&|r| Some(r.key.clone()))),
            ("offset".into(), col(&|r| Some(r.offset as i64))),
            ("image_offset".into(), col(&|r| to_i64(r.image_offset))),
            ("image_ext".into(), text(&|r| r.image_ext.clone())),
            ("image_bytes".into(), col(&|r| to_i64(r.image_bytes))),
            ("format".into(), text(&|r| r.format.clone())),
            ("width".into(), col(&|r| r.width.map(i64::from))),
            ("height".into(), col(&|r| r.height.map(i64::from))),
            ("xxh3".into(), text(&|r| r.xxh3.clone())),
            ("phash".into(), col(&|r| to_i64(r.phash))),
            ("phash_flipped".into(), col(&|r| to_i64(r.phash_flipped))),
            (
                "caption_chars".into(),
                col(&|r| r.caption_chars.map(i64::from)),
            ),
            (
                "score".into(),
                Values::F32(rows.iter().map(|r| r.score).collect()),
            ),
            ("embed_row".into(), col(&|r| r.embed_row.map(i64::from))),
            ("error".into(), text(&|r| r.error.clone())),
        ],
    }
}

fn table_to_rows(path: &Path, mut table: Table) -> Result<Vec<SignalRow>> {
    let n = table.rows();
    let mut i64s = |name: &str| {
        table.take(path, name, |v| match v {
            Values::I64(v) => Some(v),
            _ => None,
        })
    };
    let offset = i64s("offset")?;
    let image_offset = i64s("image_offset")?;
    let image_bytes = i64s("image_bytes")?;
    let width = i64s("width")?;
    let height = i64s("height")?;
    let phash = i64s("phash")?;
    let phash_flipped = i64s("phash_flipped")?;
    let caption_chars = i64s("caption_chars")?;
    let embed_row = i64s("embed_row")?;
    let mut strings = |name: &str| {
        table.take(path, name, |v| match v {
            Values::Str(v) => Some(v),
            _ => None,
        })
    };
    let key = strings("key")?;
    let image_ext = strings("image_ext")?;
    let format = strings("format")?;
    let xxh3 = strings("xxh3")?;
    let error = strings("error")?;
    let score = table.take(path, "score", |v| match v {
        Values::F32(v) => Some(v),
        _ => None,
    })?;
    let bad = |name: &str, row: usize| Error::Table {
        path: path.to_path_buf(),
        reason: format!("row {row}: column `{name}` is out of range or missing"),
    };
    let u32_of = |v: Option<i64>, name: &str, row: usize| -> Result<Option<u32>> {
        v.map(|v| u32::try_from(v).map_err(|_| bad(name, row)))
            .transpose()
    };
    let mut rows = Vec::with_capacity(n);
    for i in 0..n {
        rows.push(SignalRow {
            key: key[i].clone().ok_or_else(|| bad("key", i))?,
            offset: offset[i]
                .and_then(|v| u64::try_from(v).ok())
                .ok_or_else(|| bad("offset", i))?,
            image_offset: image_offset[i].map(|v| v as u64),
            image_ext: image_ext[i].clone(),
            image_bytes: image_bytes[i].map(|v| v as u64),
            format: format[i].clone(),
            width: u32_of(width[i], "width", i)?,
            height: u32_of(height[i], "height", i)?,
            xxh3: xxh3[i].clone(),
            phash: phash[i].map(|v| v as u64),
            phash_flipped: phash_flipped[i].map(|v| v as u64),
            caption_chars: u32_of(caption_chars[i], "caption_chars", i)?,
            score: score[i],
            embed_row: u32_of(embed_row[i], "embed_row", i)?,
            error: error[i].clone(),
        });
    }
    Ok(rows)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes `signals` and the shard's `problems` as the complete folder `folder` (through
/// `folder.partial`, then a rename).
pub fn write_shard_signals(
    folder: &Path,
    meta: &SignalMeta,
    signals: &ShardSignals,
    problems: &[Problem],
) -> Result<()> {
    let mut partial = folder.to_path_buf();
    partial.as_mut_os_string().push(".partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
    }
    std::fs::create_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
    write_table(
        &partial.join("signals.parquet"),
        &rows_to_table(&signals.rows),
    )?;
    if let Some(embedded) = signals.image_embeds.len().checked_div(signals.dim) {
        let shape = [embedded, signals.dim];
        write_npy(
            &partial.join("image_embeds.npy"),
            "<f4",
            &shape,
            &f32_bytes(&signals.image_embeds),
        )?;
        write_npy(
            &partial.join("text_embeds.npy"),
            "<f4",
            &shape,
            &f32_bytes(&signals.text_embeds),
        )?;
    }
    crate::sink::write_atomically(&partial.join("problems.jsonl"), |out| {
        for p in problems {
            serde_json::to_writer(&mut *out, p)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    })?;
    crate::sink::write_json(&partial.join("meta.json"), meta)?;
    super::crash_point::maybe_crash("signals-written");
    if folder.exists() {
        std::fs::remove_dir_all(folder).map_err(|e| Error::io(folder, e))?;
    }
    std::fs::rename(&partial, folder).map_err(|e| Error::io(folder, e))
}

/// The meta of a complete signal folder, or `None` when there is none (or it is unreadable,
/// which means it must be redone).
pub fn read_meta(folder: &Path) -> Option<SignalMeta> {
    let bytes = std::fs::read(folder.join("meta.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Reads a complete signal folder back.
pub fn read_shard_signals(folder: &Path, dim: usize) -> Result<ShardSignals> {
    let table_path = folder.join("signals.parquet");
    let rows = table_to_rows(&table_path, read_table(&table_path)?)?;
    let embedded = rows.iter().filter(|r| r.embed_row.is_some()).count();
    let (image_embeds, text_embeds) = if dim > 0 {
        (
            crate::sink::npy::read_f32_matrix(&folder.join("image_embeds.npy"), embedded, dim)?,
            crate::sink::npy::read_f32_matrix(&folder.join("text_embeds.npy"), embedded, dim)?,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    Ok(ShardSignals {
        rows,
        dim,
        image_embeds,
        text_embeds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ShardSignals {
        ShardSignals {
            rows: vec![
                SignalRow {
                    key: "a".into(),
                    offset: 0,
                    image_offset: Some(512),
                    image_ext: Some("jpg".into()),
                    image_bytes: Some(1234),
                    format: Some("jpeg".into()),
                    width: Some(640),
                    height: Some(480),
                    xxh3: Some(format!("{:032x}", u128::MAX - 5)),
                    phash: Some(u64::MAX - 1),
                    phash_flipped: Some(1 << 63),
                    caption_chars: Some(12),
                    score: Some(0.25),
                    embed_row: Some(0),
                    error: None,
                },
                SignalRow {
                    key: "b".into(),
                    offset: 2048,
                    error: Some("decode: truncated".into()),
                    ..Default::default()
                },
            ],
            dim: 2,
            image_embeds: vec![0.6, 0.8],
            text_embeds: vec![1.0, 0.0],
        }
    }

    #[test]
    fn shard_signals_round_trip_and_the_folder_appears_whole() {
        let dir = tempfile::tempdir().unwrap();
        let folder = shard_folder(dir.path(), Path::new("/data/pool 1.tar"));
        assert!(
            folder
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("pool_1.tar-")
        );
        let meta = SignalMeta {
            version: SIGNAL_VERSION,
            shard: "/data/pool 1.tar".into(),
            shard_bytes: 10,
            samples: 2,
            model: Some("m".into()),
            dim: 2,
            problem_counts: [("decode".to_string(), 1)].into(),
        };
        let problem = Problem {
            shard: "/data/pool 1.tar".into(),
            offset: Some(2048),
            key: Some("b".into()),
            kind: "decode",
            message: "truncated".into(),
        };
        write_shard_signals(&folder, &meta, &sample(), &[problem]).unwrap();
        let listed = std::fs::read_to_string(folder.join("problems.jsonl")).unwrap();
        assert_eq!(listed.lines().count(), 1);
        assert!(listed.contains("truncated"), "{listed}");
        assert_eq!(read_meta(&folder), Some(meta));
        assert_eq!(read_shard_signals(&folder, 2).unwrap(), sample());
        let mut partial = folder.clone();
        partial.as_mut_os_string().push(".partial");
        assert!(!partial.exists());
        // Another folder name for the same file name elsewhere.
        assert_ne!(
            folder,
            shard_folder(dir.path(), Path::new("/other/pool 1.tar"))
        );
    }
}
