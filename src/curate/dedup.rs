//! The dedup tiers run over a whole pool, in order: exact (identical bytes), perceptual (pHash
//! within a Hamming distance, mirror images included), semantic (SemDeDup on the image
//! embeddings). Each tier sees only the samples still alive after the filters and the tiers
//! before it, finds pairs, turns them into groups and keeps one member per group by the user's
//! rule. With a reference corpus (an earlier run), its kept samples join every tier as members
//! that are always kept: a new sample in a group with one of them is dropped.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::Serialize;

use super::groups::{KeepInfo, KeepRule, UnionFind, keeper};
use super::perceptual::near_duplicate_pairs;
use super::phash::PerceptualHash;
use super::semantic::{self, Centroids, SemanticParams};
use super::signals::SignalRow;
use crate::error::{Error, Result};

/// Which tiers run, and the keep rule they share.
#[derive(Debug, Clone, Default)]
pub struct TierSettings {
    /// Identical image bytes.
    pub exact: bool,
    /// pHash Hamming distance at most this.
    pub perceptual: Option<u32>,
    /// SemDeDup with these parameters (needs embeddings).
    pub semantic: Option<SemanticParams>,
    /// Extra eps values whose kept fraction is reported (the decision uses `semantic.eps`).
    pub eps_report: Vec<f32>,
    /// Which member of a group is kept.
    pub keep: KeepRule,
}

/// The pool as pass 2 sees it.
pub struct PoolView<'a> {
    /// Every sample, in pool order.
    pub rows: &'a [SignalRow],
    /// Image embeddings of the embedded samples, `[embedded, dim]`.
    pub embeds: &'a [f32],
    /// Row of each sample in `embeds`.
    pub embed_of: &'a [Option<u32>],
    /// Embedding width (0 without a model).
    pub dim: usize,
}

/// The kept samples of an earlier run, as every tier's always-kept members.
#[derive(Debug, Clone, Default)]
pub struct ReferenceSet {
    /// `shard:key` of each reference sample.
    pub names: Vec<String>,
    /// Their byte hashes.
    pub xxh3: Vec<Option<String>>,
    /// Their perceptual hashes.
    pub phash: Vec<Option<PerceptualHash>>,
    /// Image embeddings of those that have one, and the row of each sample in it.
    pub embeds: Vec<f32>,
    pub embed_of: Vec<Option<u32>>,
    /// Embedding width.
    pub dim: usize,
    /// The earlier run's centroids: new samples are assigned to them, not refitted.
    pub centroids: Option<Centroids>,
}

/// What the tiers decided for one sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DupDecision {
    /// The tier whose group the sample is in (`exact`, `perceptual`, `semantic`).
    pub tier: Option<&'static str>,
    /// Group id, unique over the run.
    pub group: Option<u32>,
    /// The pool sample that was kept in its place.
    pub dup_of_sample: Option<u32>,
    /// The reference sample (`shard:key`) it duplicates.
    pub dup_of_reference: Option<String>,
    /// Semantic cluster and cosine to its centroid.
    pub cluster: Option<u32>,
    pub centrality: Option<f32>,
}

/// Counts and timings of the tiers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DedupReport {
    /// Duplicate groups found per tier.
    pub groups: BTreeMap<&'static str, usize>,
    /// Samples dropped per tier.
    pub dropped: BTreeMap<&'static str, usize>,
    /// Seconds per tier.
    pub seconds: BTreeMap<&'static str, f64>,
    /// Semantic clusters used.
    pub clusters: usize,
    /// Fraction of the semantic tier's input kept at each eps.
    pub kept_fraction_by_eps: Vec<(f32, f64)>,
}

/// The tiers' outcome: a decision per sample, the report, and the centroids a later
/// incremental run should reuse.
pub struct DedupOutcome {
    pub decisions: Vec<DupDecision>,
    pub report: DedupReport,
    pub centroids: Option<Centroids>,
}

/// One tier's pairs over `alive` pool samples (local indices `0..alive.len()`) and the
/// reference (local indices `alive.len()..`), resolved into groups and drops.
struct TierGraph<'a> {
    tier: &'static str,
    alive: &'a [u32],
    reference_len: usize,
    edges: Vec<(u32, u32)>,
}

/// Runs the tiers over the samples whose `reasons` entry is still `None`, writing the drop
/// reason of each duplicate into it.
pub fn run_tiers(
    pool: &PoolView,
    reference: Option<&ReferenceSet>,
    settings: &TierSettings,
    reasons: &mut [Option<String>],
) -> Result<DedupOutcome> {
    let n = pool.rows.len();
    let mut decisions = vec![DupDecision::default(); n];
    let mut report = DedupReport::default();
    let mut next_group = 0u32;
    let empty = ReferenceSet::default();
    let reference = reference.unwrap_or(&empty);
    let mut centroids = reference.centroids.clone();

    let alive = |reasons: &[Option<String>]| -> Vec<u32> {
        (0..n as u32)
            .filter(|&i| reasons[i as usize].is_none())
            .collect()
    };

    if settings.exact {
        let t = Instant::now();
        let live = alive(reasons);
        let mut first: HashMap<&str, u32> = HashMap::new();
        let mut edges = Vec::new();
        let hashes = live
            .iter()
            .map(|&i| pool.rows[i as usize].xxh3.as_deref())
            .chain(reference.xxh3.iter().map(Option::as_deref));
        for (local, hash) in hashes.enumerate() {
            if let Some(h) = hash {
                let local = local as u32;
                let root = *first.entry(h).or_insert(local);
                if root != local {
                    edges.push((root, local));
                }
            }
        }
        let graph = TierGraph {
            tier: "exact",
            alive: &live,
            reference_len: reference.names.len(),
            edges,
        };
        resolve(
            &graph,
            pool,
            reference,
            settings.keep,
            &mut next_group,
            &mut decisions,
            reasons,
            &mut report,
        );
        report.seconds.insert("exact", t.elapsed().as_secs_f64());
    }

    if let Some(max_distance) = settings.perceptual {
        let t = Instant::now();
        let live: Vec<u32> = alive(reasons)
            .into_iter()
            .filter(|&i| pool.rows[i as usize].phash.is_some())
            .collect();
        let reference_hashes: Vec<(u32, PerceptualHash)> = reference
            .phash
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.map(|h| (i as u32, h)))
            .collect();
        let mut hashes: Vec<PerceptualHash> = live
            .iter()
            .map(|&i| {
                let r = &pool.rows[i as usize];
                PerceptualHash {
                    hash: r.phash.unwrap_or_default(),
                    flipped: r.phash_flipped.or(r.phash).unwrap_or_default(),
                }
            })
            .collect();
        hashes.extend(reference_hashes.iter().map(|&(_, h)| h));
        // Pair indices past the pool's part point into `reference_hashes`; map them back to
        // reference indices, which is what `resolve` expects after `alive.len()`.
        let pool_len = live.len() as u32;
        let edges = near_duplicate_pairs(&hashes, max_distance)
            .into_iter()
            .map(|(a, b)| {
                let map = |x: u32| {
                    if x < pool_len {
                        x
                    } else {
                        pool_len + reference_hashes[(x - pool_len) as usize].0
                    }
                };
                (map(a), map(b))
            })
            .collect();
        let graph = TierGraph {
            tier: "perceptual",
            alive: &live,
            reference_len: reference.names.len(),
            edges,
        };
        resolve(
            &graph,
            pool,
            reference,
            settings.keep,
            &mut next_group,
            &mut decisions,
            reasons,
            &mut report,
        );
        report
            .seconds
            .insert("perceptual", t.elapsed().as_secs_f64());
    }

    if let Some(params) = &settings.semantic {
        let t = Instant::now();
        if pool.dim == 0 {
            return Err(Error::Curate(
                "the semantic tier needs image embeddings: give --model".into(),
            ));
        }
        if reference.dim != 0 && reference.dim != pool.dim {
            return Err(Error::Curate(format!(
                "the reference embeddings are {}-wide, this run's are {}-wide: use the same model",
                reference.dim, pool.dim
            )));
        }
        let live: Vec<u32> = alive(reasons)
            .into_iter()
            .filter(|&i| pool.embed_of[i as usize].is_some())
            .collect();
        let dim = pool.dim;
        let mut emb = Vec::with_capacity(live.len() * dim);
        for &i in &live {
            let row = pool.embed_of[i as usize].unwrap_or(0) as usize;
            emb.extend_from_slice(&pool.embeds[row * dim..(row + 1) * dim]);
        }
        if !live.is_empty() {
            let fitted = match &centroids {
                Some(c) => c.clone(),
                None => {
                    // More clusters than samples cannot be fitted; a tiny pool gets one each.
                    let mut params = *params;
                    params.clusters = params.clusters.min(live.len());
                    Centroids::fit(&emb, dim, &params)?
                }
            };
            let assignment = fitted.assign(&emb)?;
            report.clusters = fitted.data.len() / dim.max(1);
            for (local, &i) in live.iter().enumerate() {
                decisions[i as usize].cluster = Some(assignment.cluster[local]);
                decisions[i as usize].centrality = Some(assignment.centrality[local]);
            }
            let loosest = settings
                .eps_report
                .iter()
                .copied()
                .fold(params.eps, f32::max);
            let pairs = semantic::duplicate_pairs(&emb, dim, &assignment, 1.0 - loosest)?;
            if !settings.eps_report.is_empty() {
                let mut eps = settings.eps_report.clone();
                if !eps.contains(&params.eps) {
                    eps.push(params.eps);
                }
                eps.sort_by(f32::total_cmp);
                report.kept_fraction_by_eps =
                    semantic::kept_fraction_by_eps(live.len(), &pairs, &eps);
            }
            let threshold = 1.0 - params.eps;
            let mut edges: Vec<(u32, u32)> = pairs
                .iter()
                .filter(|p| p.2 >= threshold)
                .map(|&(a, b, _)| (a, b))
                .collect();
            if !reference.embeds.is_empty() {
                let reference_assignment = fitted.assign(&reference.embeds)?;
                let cross = semantic::cross_pairs(
                    &emb,
                    &assignment,
                    &reference.embeds,
                    &reference_assignment,
                    dim,
                    threshold,
                )?;
                // Cross pairs name reference embedding rows; map them to reference samples.
                let mut sample_of_row = vec![0u32; reference.embeds.len() / dim];
                for (sample, row) in reference.embed_of.iter().enumerate() {
                    if let Some(row) = row {
                        sample_of_row[*row as usize] = sample as u32;
                    }
                }
                let pool_len = live.len() as u32;
                edges.extend(
                    cross
                        .into_iter()
                        .map(|(a, r, _)| (a, pool_len + sample_of_row[r as usize])),
                );
            }
            let graph = TierGraph {
                tier: "semantic",
                alive: &live,
                reference_len: reference.names.len(),
                edges,
            };
            resolve(
                &graph,
                pool,
                reference,
                settings.keep,
                &mut next_group,
                &mut decisions,
                reasons,
                &mut report,
            );
            centroids = Some(fitted);
        }
        report.seconds.insert("semantic", t.elapsed().as_secs_f64());
    }
    Ok(DedupOutcome {
        decisions,
        report,
        centroids,
    })
}

/// Turns one tier's pairs into groups: a group holding a reference sample drops all its pool
/// members; any other keeps one member by `rule`.
#[allow(clippy::too_many_arguments)]
fn resolve(
    graph: &TierGraph,
    pool: &PoolView,
    reference: &ReferenceSet,
    rule: KeepRule,
    next_group: &mut u32,
    decisions: &mut [DupDecision],
    reasons: &mut [Option<String>],
    report: &mut DedupReport,
) {
    let pool_len = graph.alive.len();
    let mut sets = UnionFind::new(pool_len + graph.reference_len);
    for &(a, b) in &graph.edges {
        sets.union(a, b);
    }
    let mut groups = 0;
    let mut dropped = 0;
    for members in sets.groups() {
        let (pool_members, reference_members): (Vec<u32>, Vec<u32>) =
            members.iter().partition(|&&m| (m as usize) < pool_len);
        if pool_members.is_empty() {
            continue; // reference samples alike among themselves: not this run's business
        }
        let group = *next_group;
        *next_group += 1;
        groups += 1;
        let rows: Vec<u32> = pool_members
            .iter()
            .map(|&m| graph.alive[m as usize])
            .collect();
        let kept = match reference_members.first() {
            Some(&r) => {
                let name = &reference.names[r as usize - pool_len];
                for &row in &rows {
                    let d = &mut decisions[row as usize];
                    d.tier = Some(graph.tier);
                    d.group = Some(group);
                    d.dup_of_reference = Some(name.clone());
                    reasons[row as usize] =
                        Some(format!("{}-duplicate: of reference {name}", graph.tier));
                    dropped += 1;
                }
                continue;
            }
            None => keeper(&rows, rule, |row| {
                let r = &pool.rows[row as usize];
                let d = &decisions[row as usize];
                KeepInfo {
                    pixels: r
                        .width
                        .zip(r.height)
                        .map(|(w, h)| u64::from(w) * u64::from(h)),
                    score: r.score,
                    centrality: d.centrality,
                }
            }),
        };
        let Some(kept) = kept else { continue };
        for &row in &rows {
            let d = &mut decisions[row as usize];
            d.tier = Some(graph.tier);
            d.group = Some(group);
            if row != kept {
                d.dup_of_sample = Some(kept);
                reasons[row as usize] = Some(format!(
                    "{}-duplicate: of {}",
                    graph.tier, pool.rows[kept as usize].key
                ));
                dropped += 1;
            }
        }
    }
    report.groups.insert(graph.tier, groups);
    report.dropped.insert(graph.tier, dropped);
}
