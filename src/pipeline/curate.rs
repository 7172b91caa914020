//! `curate`: tiered dedup and filtering of a whole pool, in two passes.
//!
//! Pass 1 (per shard, resumable): every sample's signals — byte hash, perceptual hash, size,
//! caption length, and with a model its SigLIP embeddings and score — into
//! `OUT/signals/<shard>/` (see [`crate::curate::signals`]). A shard whose folder is complete
//! and matches is skipped, so a killed run restarts where it stopped, and a second run over the
//! same pool with other filters or tiers costs only pass 2.
//!
//! Pass 2 (whole pool): unreadable samples and the filters first, then the dedup tiers in order
//! (exact, perceptual, semantic) over what is left, optionally against an earlier run's
//! reference. Writes `manifest.parquet`, `summary.json`, `problems.jsonl`, `reference/`, and
//! with `--write-shards` the kept samples as new shards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::curate_signals::shard_signals;
use crate::backend::tensor::TensorOps;
use crate::curate::dedup::{DedupReport, PoolView, ReferenceSet, TierSettings, run_tiers};
use crate::curate::filters::{Filters, apply_filters};
use crate::curate::groups::KeepRule;
use crate::curate::manifest::{ManifestEntry, reason_kind, write_manifest};
use crate::curate::phash::PerceptualHash;
use crate::curate::reference::{concat, read_reference, write_reference};
use crate::curate::rewrite::{RewriteSettings, RewriteSummary, write_kept_shards};
use crate::curate::semantic::normalize_rows;
use crate::curate::signals::{
    SIGNAL_VERSION, ShardSignals, SignalMeta, SignalRow, read_meta, read_shard_signals,
    shard_folder, write_shard_signals,
};
use crate::error::{Error, Result};
use crate::image::decode::DecodeOptions;
use crate::model::siglip::SiglipModel;
use crate::problems::Problem;
use crate::shard::{Shard, ShardSource};

/// Settings of a `curate` run.
#[derive(Debug, Clone)]
pub struct CurateConfig {
    /// Output folder.
    pub out: PathBuf,
    /// Samples per decode/model batch.
    pub batch: usize,
    /// Decode guard and orientation.
    pub decode: DecodeOptions,
    /// The filters.
    pub filters: Filters,
    /// The dedup tiers and the keep rule.
    pub tiers: TierSettings,
    /// An earlier run's output folder to dedup against.
    pub reference: Option<PathBuf>,
    /// Write the kept samples as shards.
    pub rewrite: Option<RewriteSettings>,
}

/// What a `curate` run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CurateSummary {
    /// The model folder, when one was used, and the backend it ran on.
    pub model: Option<String>,
    pub backend: String,
    /// Shards given, shards whose signals were reused from an earlier (interrupted) run, and
    /// shards that could not be opened.
    pub shards: usize,
    pub shards_reused: usize,
    pub shards_failed: usize,
    /// Samples in the pool, kept, dropped.
    pub samples: usize,
    pub kept: usize,
    pub dropped: usize,
    /// Dropped samples by reason kind (`exact-duplicate`, `too-small`, `unreadable`, …).
    pub dropped_by_reason: BTreeMap<String, usize>,
    /// The keep rule of the duplicate groups.
    pub keep_rule: KeepRule,
    /// Groups, drops and timings per tier; the semantic tier's kept fraction per eps.
    pub dedup: DedupReport,
    /// Samples of the reference corpus deduplicated against.
    pub reference_samples: usize,
    /// The filters that ran.
    pub filters: Filters,
    /// Seconds in pass 1 (signals), pass 2 (decisions and outputs), and overall.
    pub signal_seconds: f64,
    pub decide_seconds: f64,
    pub seconds: f64,
    /// Samples whose signals were computed in this run, per second of pass 1.
    pub signal_samples_per_second: f64,
    /// Problems by kind (each listed in problems.jsonl).
    pub problem_counts: BTreeMap<String, usize>,
    /// What `--write-shards` wrote.
    pub rewrite: Option<RewriteSummary>,
}

/// The signals of the whole pool, in pool order.
struct Pool {
    rows: Vec<SignalRow>,
    /// (source index, sample index in that source) of each row.
    place: Vec<(usize, usize)>,
    /// Shard path of each source.
    shard_names: Vec<String>,
    dim: usize,
    /// Normalized image embeddings, and each row's index in them.
    embeds: Vec<f32>,
    embed_of: Vec<Option<u32>>,
}

/// Runs `curate` over `sources`. `progress` counts samples through pass 1.
pub fn run_curate<B: TensorOps>(
    model: Option<&SiglipModel<B>>,
    backend: &str,
    sources: &[ShardSource],
    cfg: &CurateConfig,
    progress: &indicatif::ProgressBar,
) -> Result<CurateSummary> {
    let start = Instant::now();
    if cfg.tiers.semantic.is_some() && model.is_none() {
        return Err(Error::Curate(
            "the semantic tier needs a model: give --model or leave out --semantic".into(),
        ));
    }
    if cfg.filters.needs_score() && model.is_none() {
        return Err(Error::Curate(
            "the relevance filters (--min-score, --top-percent) need a model: give --model".into(),
        ));
    }
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    let mut summary = CurateSummary {
        model: model.map(|m| m.path.display().to_string()),
        backend: backend.to_string(),
        shards: sources.len(),
        keep_rule: cfg.tiers.keep,
        filters: cfg.filters.clone(),
        ..Default::default()
    };

    // ---- pass 1 ----
    let signals_dir = cfg.out.join("signals");
    let mut open_failures: BTreeMap<usize, Problem> = BTreeMap::new();
    let mut computed = 0usize;
    for (index, source) in sources.iter().enumerate() {
        let folder = shard_folder(&signals_dir, source.path());
        let wanted = expected_meta(source, model)?;
        if let Some(meta) = read_meta(&folder).filter(|m| m.same_input(&wanted)) {
            summary.shards_reused += 1;
            progress.inc_length(meta.samples as u64);
            progress.inc(meta.samples as u64);
            continue;
        }
        let shard = match Shard::open(source) {
            Ok(shard) => shard,
            Err(err) => {
                summary.shards_failed += 1;
                open_failures.insert(
                    index,
                    Problem {
                        shard: source.path().to_path_buf(),
                        offset: None,
                        key: None,
                        kind: "shard",
                        message: err.to_string(),
                    },
                );
                continue;
            }
        };
        progress.inc_length(shard.samples().len() as u64);
        let (signals, problems) = shard_signals(&shard, model, &cfg.decode, cfg.batch, |n| {
            progress.inc(n as u64)
        })?;
        computed += signals.rows.len();
        let mut counts = BTreeMap::new();
        for p in &problems {
            *counts.entry(p.kind.to_string()).or_insert(0) += 1;
        }
        let meta = SignalMeta {
            samples: signals.rows.len(),
            problem_counts: counts,
            ..wanted
        };
        write_shard_signals(&folder, &meta, &signals, &problems)?;
        crate::curate::crash_point::maybe_crash("shard-done");
    }
    summary.signal_seconds = start.elapsed().as_secs_f64();
    summary.signal_samples_per_second = computed as f64 / summary.signal_seconds.max(1e-9);

    // ---- pass 2 ----
    let t2 = Instant::now();
    progress.set_message("deciding");
    let pool = load_pool(
        sources,
        &signals_dir,
        model.map_or(0, SiglipModel::embed_dim),
    )?;
    summary.samples = pool.rows.len();
    let mut reasons: Vec<Option<String>> = pool
        .rows
        .iter()
        .map(|r| r.error.as_ref().map(|e| format!("unreadable: {e}")))
        .collect();
    apply_filters(&pool.rows, &cfg.filters, &mut reasons);

    let reference = match &cfg.reference {
        Some(dir) => {
            let (set, meta) = read_reference(dir)?;
            if meta.dim != 0 && pool.dim != 0 && meta.dim != pool.dim {
                return Err(Error::Curate(format!(
                    "--reference {}: its embeddings are {}-wide, this model's {}-wide",
                    dir.display(),
                    meta.dim,
                    pool.dim
                )));
            }
            Some(set)
        }
        None => None,
    };
    summary.reference_samples = reference.as_ref().map_or(0, |r| r.names.len());
    let view = PoolView {
        rows: &pool.rows,
        embeds: &pool.embeds,
        embed_of: &pool.embed_of,
        dim: pool.dim,
    };
    let outcome = run_tiers(&view, reference.as_ref(), &cfg.tiers, &mut reasons)?;

    let entries: Vec<ManifestEntry> = pool
        .rows
        .iter()
        .enumerate()
        .map(|(i, row)| ManifestEntry {
            shard: &pool.shard_names[pool.place[i].0],
            row,
            decision: &outcome.decisions[i],
            reason: reasons[i].as_deref(),
        })
        .collect();
    write_manifest(&cfg.out.join("manifest.parquet"), &entries)?;
    for reason in reasons.iter().flatten() {
        *summary
            .dropped_by_reason
            .entry(reason_kind(reason).to_string())
            .or_insert(0) += 1;
    }
    summary.dropped = reasons.iter().filter(|r| r.is_some()).count();
    summary.kept = summary.samples - summary.dropped;

    let kept_here = kept_reference(&pool, &reasons, outcome.centroids.clone());
    let next_reference = match reference {
        Some(old) => concat(
            ReferenceSet {
                centroids: outcome.centroids.clone(),
                ..old
            },
            kept_here,
        ),
        None => kept_here,
    };
    write_reference(
        &cfg.out.join("reference"),
        &next_reference,
        summary.model.as_deref(),
    )?;

    if let Some(rewrite) = &cfg.rewrite {
        progress.set_message("writing kept shards");
        let kept: Vec<(usize, usize)> = (0..pool.rows.len())
            .filter(|&i| reasons[i].is_none())
            .map(|i| pool.place[i])
            .collect();
        summary.rewrite = Some(write_kept_shards(sources, &kept, rewrite)?);
    }
    summary.dedup = outcome.report;

    summary.problem_counts = collect_problems(
        sources,
        &signals_dir,
        &open_failures,
        &cfg.out.join("problems.jsonl"),
    )?;
    summary.decide_seconds = t2.elapsed().as_secs_f64();
    summary.seconds = start.elapsed().as_secs_f64();
    crate::sink::write_json(&cfg.out.join("summary.json"), &summary)?;
    Ok(summary)
}

/// The meta a shard's signal folder must have to be reused.
fn expected_meta<B: TensorOps>(
    source: &ShardSource,
    model: Option<&SiglipModel<B>>,
) -> Result<SignalMeta> {
    let path = source.path();
    let shard_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok(SignalMeta {
        version: SIGNAL_VERSION,
        shard: path.display().to_string(),
        shard_bytes,
        samples: 0,
        model: model.map(|m| m.path.display().to_string()),
        dim: model.map_or(0, SiglipModel::embed_dim),
        problem_counts: BTreeMap::new(),
    })
}

/// Reads every shard's signals back, in input order (shards that could not be opened have
/// none), and normalizes the image embeddings for the semantic tier.
fn load_pool(sources: &[ShardSource], signals_dir: &Path, dim: usize) -> Result<Pool> {
    let mut pool = Pool {
        rows: Vec::new(),
        place: Vec::new(),
        shard_names: Vec::with_capacity(sources.len()),
        dim,
        embeds: Vec::new(),
        embed_of: Vec::new(),
    };
    for (index, source) in sources.iter().enumerate() {
        pool.shard_names.push(source.path().display().to_string());
        let folder = shard_folder(signals_dir, source.path());
        if read_meta(&folder).is_none() {
            continue;
        }
        let ShardSignals {
            rows, image_embeds, ..
        } = read_shard_signals(&folder, dim)?;
        let base = (pool.embeds.len() / dim.max(1)) as u32;
        for (sample, row) in rows.into_iter().enumerate() {
            pool.embed_of.push(row.embed_row.map(|r| base + r));
            pool.place.push((index, sample));
            pool.rows.push(row);
        }
        pool.embeds.extend(image_embeds);
    }
    if dim > 0 && !pool.embeds.is_empty() {
        normalize_rows(&mut pool.embeds, dim)?;
    }
    Ok(pool)
}

/// The kept samples of this run as a reference for later runs.
fn kept_reference(
    pool: &Pool,
    reasons: &[Option<String>],
    centroids: Option<crate::curate::semantic::Centroids>,
) -> ReferenceSet {
    let dim = pool.dim;
    let mut set = ReferenceSet {
        dim,
        centroids,
        ..Default::default()
    };
    for (i, row) in pool.rows.iter().enumerate() {
        if reasons[i].is_some() {
            continue;
        }
        set.names
            .push(format!("{}:{}", pool.shard_names[pool.place[i].0], row.key));
        set.xxh3.push(row.xxh3.clone());
        set.phash.push(row.phash.map(|hash| PerceptualHash {
            hash,
            flipped: row.phash_flipped.unwrap_or(hash),
        }));
        set.embed_of.push(pool.embed_of[i].map(|r| {
            let next = (set.embeds.len() / dim.max(1)) as u32;
            let r = r as usize;
            set.embeds
                .extend_from_slice(&pool.embeds[r * dim..(r + 1) * dim]);
            next
        }));
    }
    set
}

/// Writes `problems.jsonl` as every shard's problems in input order, and counts them by kind.
fn collect_problems(
    sources: &[ShardSource],
    signals_dir: &Path,
    open_failures: &BTreeMap<usize, Problem>,
    path: &Path,
) -> Result<BTreeMap<String, usize>> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut listed: Vec<u8> = Vec::new();
    for (index, source) in sources.iter().enumerate() {
        if let Some(problem) = open_failures.get(&index) {
            *counts.entry(problem.kind.to_string()).or_insert(0) += 1;
            serde_json::to_writer(&mut listed, problem).map_err(|e| Error::Output {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
            listed.push(b'\n');
            continue;
        }
        let folder = shard_folder(signals_dir, source.path());
        let Some(meta) = read_meta(&folder) else {
            continue;
        };
        for (kind, n) in meta.problem_counts {
            *counts.entry(kind).or_insert(0) += n;
        }
        let file = folder.join("problems.jsonl");
        listed.extend(std::fs::read(&file).map_err(|e| Error::io(&file, e))?);
    }
    crate::sink::write_atomically(path, |out| out.write_all(&listed))?;
    Ok(counts)
}
