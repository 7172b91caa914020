//! The reference folder every curate run leaves behind (`OUT/reference/`): its kept samples'
//! hashes and normalized image embeddings, and the k-means centroids. A later run given
//! `--reference OUT` dedups new shards against it — exact, perceptual and semantic — assigning
//! the new embeddings to the same centroids instead of refitting, and leaves a reference of its
//! own holding both corpora, so runs chain.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::dedup::ReferenceSet;
use super::phash::PerceptualHash;
use super::semantic::Centroids;
use crate::error::{Error, Result};
use crate::sink::npy::{read_f32_matrix, read_f32_npy, write_npy};
use crate::sink::table::{Table, Values, read_table, write_table};

/// `reference/meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceMeta {
    /// Layout version.
    pub version: u32,
    /// The model folder the embeddings came from, if any.
    pub model: Option<String>,
    /// Embedding width (0 without a model).
    pub dim: usize,
    /// Samples in the reference.
    pub samples: usize,
    /// Rows of `centroids.npy` (0 when the semantic tier did not run).
    pub clusters: usize,
}

const VERSION: u32 = 1;

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes `set` as `dir` (the `reference` folder of a run).
pub fn write_reference(dir: &Path, set: &ReferenceSet, model: Option<&str>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let table = Table {
        columns: vec![
            (
                "name".into(),
                Values::Str(set.names.iter().cloned().map(Some).collect()),
            ),
            ("xxh3".into(), Values::Str(set.xxh3.clone())),
            (
                "phash".into(),
                Values::I64(set.phash.iter().map(|h| h.map(|h| h.hash as i64)).collect()),
            ),
            (
                "phash_flipped".into(),
                Values::I64(
                    set.phash
                        .iter()
                        .map(|h| h.map(|h| h.flipped as i64))
                        .collect(),
                ),
            ),
            (
                "embed_row".into(),
                Values::I64(set.embed_of.iter().map(|r| r.map(i64::from)).collect()),
            ),
        ],
    };
    write_table(&dir.join("kept.parquet"), &table)?;
    let clusters = set
        .centroids
        .as_ref()
        .map_or(0, |c| c.data.len() / c.dim.max(1));
    if let Some(rows) = set.embeds.len().checked_div(set.dim) {
        write_npy(
            &dir.join("kept_image_embeds.npy"),
            "<f4",
            &[rows, set.dim],
            &f32_bytes(&set.embeds),
        )?;
    }
    if let Some(c) = &set.centroids {
        write_npy(
            &dir.join("centroids.npy"),
            "<f4",
            &[clusters, c.dim],
            &f32_bytes(&c.data),
        )?;
    }
    let meta = ReferenceMeta {
        version: VERSION,
        model: model.map(str::to_string),
        dim: set.dim,
        samples: set.names.len(),
        clusters,
    };
    crate::sink::write_json(&dir.join("meta.json"), &meta)
}

/// Reads the reference left by the curate run in `run_dir`.
pub fn read_reference(run_dir: &Path) -> Result<(ReferenceSet, ReferenceMeta)> {
    let dir = run_dir.join("reference");
    let meta_path = dir.join("meta.json");
    let bytes = std::fs::read(&meta_path).map_err(|e| {
        Error::Curate(format!(
            "--reference {}: {} ({e}); give the output folder of an earlier `vlmprep curate`",
            run_dir.display(),
            meta_path.display()
        ))
    })?;
    let meta: ReferenceMeta = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Curate(format!("{}: {e}", meta_path.display())))?;
    if meta.version != VERSION {
        return Err(Error::Curate(format!(
            "{}: reference version {} (this build reads {VERSION})",
            meta_path.display(),
            meta.version
        )));
    }
    let table_path = dir.join("kept.parquet");
    let mut table = read_table(&table_path)?;
    let i64s = |table: &mut Table, name: &str| {
        table.take(&table_path, name, |v| match v {
            Values::I64(v) => Some(v),
            _ => None,
        })
    };
    let hash = i64s(&mut table, "phash")?;
    let flipped = i64s(&mut table, "phash_flipped")?;
    let embed_row = i64s(&mut table, "embed_row")?;
    let strings = |table: &mut Table, name: &str| {
        table.take(&table_path, name, |v| match v {
            Values::Str(v) => Some(v),
            _ => None,
        })
    };
    let names = strings(&mut table, "name")?;
    let xxh3 = strings(&mut table, "xxh3")?;
    let bad = |what: &str| Error::Table {
        path: table_path.clone(),
        reason: what.to_string(),
    };
    let names = names
        .into_iter()
        .map(|n| n.ok_or_else(|| bad("a null name")))
        .collect::<Result<Vec<_>>>()?;
    let phash = hash
        .iter()
        .zip(&flipped)
        .map(|(h, f)| {
            h.map(|h| PerceptualHash {
                hash: h as u64,
                flipped: f.unwrap_or(h) as u64,
            })
        })
        .collect();
    let embedded = embed_row.iter().flatten().count();
    let embed_of = embed_row
        .iter()
        .map(|r| {
            r.map(|r| u32::try_from(r).ok().filter(|&r| (r as usize) < embedded))
                .map(|r| r.ok_or_else(|| bad("an embed_row out of range")))
                .transpose()
        })
        .collect::<Result<Vec<_>>>()?;
    let embeds = if meta.dim > 0 {
        read_f32_matrix(&dir.join("kept_image_embeds.npy"), embedded, meta.dim)?
    } else {
        Vec::new()
    };
    let centroids = if meta.clusters > 0 {
        let path = dir.join("centroids.npy");
        let (shape, data) = read_f32_npy(&path)?;
        if shape != [meta.clusters, meta.dim] {
            return Err(Error::Table {
                path,
                reason: format!(
                    "expected [{}, {}], found {shape:?}",
                    meta.clusters, meta.dim
                ),
            });
        }
        Some(Centroids {
            dim: meta.dim,
            data,
        })
    } else {
        None
    };
    let set = ReferenceSet {
        names,
        xxh3,
        phash,
        embeds,
        embed_of,
        dim: meta.dim,
        centroids,
    };
    Ok((set, meta))
}

/// `base` followed by `more` (whose embedding rows are renumbered after `base`'s).
pub fn concat(mut base: ReferenceSet, more: ReferenceSet) -> ReferenceSet {
    let offset = base.embeds.len() / base.dim.max(1);
    base.names.extend(more.names);
    base.xxh3.extend(more.xxh3);
    base.phash.extend(more.phash);
    base.embed_of.extend(
        more.embed_of
            .into_iter()
            .map(|r| r.map(|r| r + offset as u32)),
    );
    base.embeds.extend(more.embeds);
    if base.dim == 0 {
        base.dim = more.dim;
    }
    if base.centroids.is_none() {
        base.centroids = more.centroids;
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_round_trip_and_chain() {
        let dir = tempfile::tempdir().unwrap();
        let a = ReferenceSet {
            names: vec!["s0:a".into(), "s0:b".into()],
            xxh3: vec![Some("00ff".into()), None],
            phash: vec![
                Some(PerceptualHash {
                    hash: u64::MAX,
                    flipped: 3,
                }),
                None,
            ],
            embeds: vec![1.0, 0.0],
            embed_of: vec![None, Some(0)],
            dim: 2,
            centroids: Some(Centroids {
                dim: 2,
                data: vec![0.0, 1.0, 1.0, 0.0],
            }),
        };
        write_reference(&dir.path().join("reference"), &a, Some("model")).unwrap();
        let (back, meta) = read_reference(dir.path()).unwrap();
        assert_eq!(meta.clusters, 2);
        assert_eq!(back.names, a.names);
        assert_eq!(back.phash, a.phash);
        assert_eq!(back.embed_of, a.embed_of);
        assert_eq!(back.embeds, a.embeds);
        assert_eq!(back.centroids, a.centroids);
        let both = concat(back, a.clone());
        assert_eq!(both.names.len(), 4);
        assert_eq!(both.embed_of[3], Some(1));
        let err = read_reference(&dir.path().join("nothing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--reference"), "{err}");
    }
}
