//! `plan`: costs every sample of a pool from headers and text alone (no pixel decoded), packs
//! them, and writes `plan.parquet` (one row per sample), `plan.json` (the settings `pack`
//! needs, and the run's figures) and `problems.jsonl`.
//!
//! Shards are indexed and costed in parallel (rayon over shards and over samples); results
//! are gathered in pool order, so the plan does not depend on the thread count.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;

use super::sample_problem;
use crate::error::{Error, Result};
use crate::image::tiling::{Tiler, TilingRule};
use crate::model::tokenizer::TextTokenizer;
use crate::pack::balance::{
    CostModel, balance_steps, balance_steps_windowed, emitted_steps, pack_costs, step_spread,
};
use crate::pack::sample_cost::{SampleCoster, VisionTokens};
use crate::pack::sequence::{ImageTokenIds, TextFormat};
use crate::pack::{Algo, Cost, Limits, OversizePolicy, PackPlan, Placement, plan_packs};
use crate::problems::{Problem, ProblemLog};
use crate::shard::{Shard, ShardSource};
use crate::sink::parquet::{PlanRow, write_plan};

/// File names inside a plan folder.
pub const PLAN_TABLE: &str = "plan.parquet";
pub const PLAN_SETTINGS: &str = "plan.json";

/// How packs are grouped into data-parallel steps.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BalanceSettings {
    /// Ranks per step (data-parallel world size).
    pub world: usize,
}

/// Everything a plan is made with; stored in `plan.json` so `pack` rebuilds the same
/// sequences.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PlanSettings {
    pub rule: TilingRule,
    pub vision: VisionTokens,
    pub max_image_pixels: u64,
    pub ids: ImageTokenIds,
    pub format: TextFormat,
    /// Where the text tokenizer comes from; `pack` loads the same one.
    pub tokenizer: TokenizerSource,
    pub tokens_per_pack: u32,
    /// `None`: no tile limit.
    pub tiles_per_pack: Option<u32>,
    pub algo: AlgoSetting,
    pub oversize: OversizeSetting,
    pub seed: u64,
    pub balance: Option<BalanceSettings>,
}

/// The text tokenizer of a plan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenizerSource {
    /// A Hugging Face `tokenizer.json`.
    File(PathBuf),
    /// The tiny tokenizer embedded for `vlmprep demo`.
    Demo,
    /// One token per UTF-8 byte (no tokenizer given).
    Bytes,
}

impl TokenizerSource {
    /// Loads the tokenizer.
    pub fn load(&self) -> Result<TextTokenizer> {
        match self {
            TokenizerSource::File(path) => TextTokenizer::from_file(path),
            TokenizerSource::Demo => Ok(TextTokenizer::demo()),
            TokenizerSource::Bytes => Ok(TextTokenizer::bytes()),
        }
    }
}

/// Packing algorithm as stored in `plan.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlgoSetting {
    Bfd,
    Online { buffer: usize },
    Ordered,
}

/// Oversize policy as stored in `plan.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OversizeSetting {
    Drop,
    Truncate,
    Alone,
}

impl PlanSettings {
    /// The packer's limits.
    pub fn limits(&self) -> Limits {
        Limits {
            tokens: self.tokens_per_pack,
            tiles: self.tiles_per_pack.unwrap_or(u32::MAX),
        }
    }

    fn algo(&self) -> Algo {
        match self.algo {
            AlgoSetting::Bfd => Algo::Bfd,
            AlgoSetting::Online { buffer } => Algo::Online { buffer },
            AlgoSetting::Ordered => Algo::Ordered,
        }
    }

    fn oversize(&self) -> OversizePolicy {
        match self.oversize {
            OversizeSetting::Drop => OversizePolicy::Drop,
            OversizeSetting::Truncate => OversizePolicy::Truncate,
            OversizeSetting::Alone => OversizePolicy::Alone,
        }
    }

    /// Builds the sample coster for these settings.
    pub fn coster<'t>(&self, tokenizer: &'t TextTokenizer) -> Result<SampleCoster<'t>> {
        Ok(SampleCoster {
            tiler: Tiler::new(self.rule)?,
            vision: self.vision,
            max_image_pixels: self.max_image_pixels,
            tokenizer,
            ids: self.ids,
            format: self.format.clone(),
        })
    }
}

/// Spread of per-step cost across ranks: max/mean per step, averaged and worst over steps.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct SpreadFigures {
    pub mean: f64,
    pub worst: f64,
}

/// What a `plan` run found and decided.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PlanSummary {
    pub shards: usize,
    pub samples: usize,
    pub images: u64,
    /// Samples in a pack (truncated and alone included).
    pub packed: usize,
    pub truncated: usize,
    pub alone: usize,
    pub dropped: usize,
    /// Samples that could not be costed (unreadable image, bad text): recorded, not packed.
    pub failed: usize,
    pub packs: usize,
    /// max(⌈Σtokens/L⌉, ⌈Σtiles/T⌉) over the samples packed: no plan can use fewer packs.
    pub lower_bound: u64,
    /// Real tokens / (packs × L).
    pub token_efficiency: f64,
    /// Tiles / (packs × T), when there is a tile limit.
    pub tile_fill: Option<f64>,
    /// Tiles per pack → number of packs.
    pub tiles_per_pack: BTreeMap<u32, usize>,
    /// Per-step cost spread with packs in emitted order, and as balanced (when asked).
    pub spread_emitted: Option<SpreadFigures>,
    pub spread_balanced: Option<SpreadFigures>,
    pub seconds: f64,
    pub images_per_second: f64,
    pub problem_counts: BTreeMap<String, usize>,
}

/// `plan.json`: settings, inputs and summary.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PlanFile {
    pub version: u32,
    pub inputs: Vec<PathBuf>,
    pub settings: PlanSettings,
    pub summary: PlanSummary,
}

/// One sample after costing.
struct Costed {
    row: PlanRow,
    /// `None` when the sample failed.
    cost: Option<Cost>,
    /// Cost once cut to the limits (computed only for oversize samples under `truncate`).
    truncated: Option<Cost>,
}

/// Reads `plan.json` from a plan folder.
pub fn read_plan_file(dir: &Path) -> Result<PlanFile> {
    let path = dir.join(PLAN_SETTINGS);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::PlanFile {
        path,
        reason: e.to_string(),
    })
}

fn shard_name(source: &ShardSource) -> PathBuf {
    match source {
        ShardSource::Tar(p) | ShardSource::Folder(p) => p.clone(),
    }
}

/// Runs `plan` over `sources` and writes the plan folder `out`. `progress` advances by one per
/// shard. Fails only on output errors; bad samples are recorded in the plan and in problems.
pub fn run_plan(
    sources: &[ShardSource],
    settings: &PlanSettings,
    tokenizer: &TextTokenizer,
    out: &Path,
    progress: &(dyn Fn() + Sync),
) -> Result<(PlanSummary, ProblemLog)> {
    let start = Instant::now();
    let limits = settings.limits();
    let coster = settings.coster(tokenizer)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;

    // Index and cost every shard; gather in input order for determinism.
    let per_shard: Vec<(Vec<Costed>, Vec<Problem>, bool)> = sources
        .par_iter()
        .map(|source| {
            let result = cost_shard(source, &coster, limits, settings.oversize);
            progress();
            result
        })
        .collect();

    let mut summary = PlanSummary::default();
    let mut problems = ProblemLog::default();
    // Sized up front: growing it by doubling copied and first-touched the rows several times.
    let mut samples: Vec<Costed> = Vec::with_capacity(per_shard.iter().map(|s| s.0.len()).sum());
    for (costed, shard_problems, opened) in per_shard {
        summary.shards += usize::from(opened);
        problems.extend(shard_problems);
        samples.extend(costed);
    }
    for (i, s) in samples.iter_mut().enumerate() {
        s.row.sample = i as u64;
    }
    summary.samples = samples.len();
    summary.images = samples.iter().map(|s| u64::from(s.row.images)).sum();

    // Pack the samples that could be costed.
    let packable: Vec<usize> = (0..samples.len())
        .filter(|&i| samples[i].cost.is_some())
        .collect();
    let costs: Vec<Cost> = packable
        .iter()
        .map(|&i| samples[i].cost.unwrap_or_default())
        .collect();
    let truncated_costs: Vec<Option<Cost>> =
        packable.iter().map(|&i| samples[i].truncated).collect();
    let plan = plan_packs(
        &costs,
        limits,
        settings.algo(),
        settings.oversize(),
        &|i| truncated_costs.get(i as usize).copied().flatten(),
        settings.seed,
    )?;

    // Pack order: as emitted, or grouped into balanced steps. The spread as emitted is shown
    // for W = 8 when no balancing is asked, to say whether it would be worth it.
    let model = CostModel::default();
    let compute = pack_costs(&plan, &costs, &model);
    let world = settings.balance.map_or(8, |b| b.world.max(1));
    let full_steps = |steps: Vec<Vec<u32>>| -> Vec<Vec<u32>> {
        // A short last step says nothing about balance.
        steps.into_iter().filter(|s| s.len() == world).collect()
    };
    let spread = |steps: Vec<Vec<u32>>| {
        let s = step_spread(&full_steps(steps), &compute);
        SpreadFigures {
            mean: s.mean,
            worst: s.worst,
        }
    };
    summary.spread_emitted = Some(spread(emitted_steps(plan.packs.len(), world)));
    let order: Vec<u32> = match settings.balance {
        Some(_) => {
            let steps = match settings.algo {
                // Keep recipes that rely on order: reorder only within windows of 64 steps.
                AlgoSetting::Ordered => {
                    balance_steps_windowed(&plan, &costs, &model, world, 64 * world, settings.seed)
                }
                _ => balance_steps(&plan, &costs, &model, world, settings.seed),
            };
            summary.spread_balanced = Some(spread(steps.clone()));
            steps.into_iter().flatten().collect()
        }
        None => (0..plan.packs.len() as u32).collect(),
    };
    let mut new_id = vec![0u64; plan.packs.len()];
    for (position, &pack) in order.iter().enumerate() {
        new_id[pack as usize] = position as u64;
    }

    apply_placements(&mut samples, &packable, &plan, &new_id, limits);
    fill_summary(&mut summary, &samples, &plan, limits);

    let rows: Vec<PlanRow> = samples.into_iter().map(|s| s.row).collect();
    write_plan(&out.join(PLAN_TABLE), &rows)?;
    summary.seconds = start.elapsed().as_secs_f64();
    summary.images_per_second = summary.images as f64 / summary.seconds.max(1e-9);
    summary.problem_counts = problems
        .counts()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let file = PlanFile {
        version: 1,
        inputs: sources.iter().map(shard_name).collect(),
        settings: settings.clone(),
        summary: summary.clone(),
    };
    crate::sink::write_json(&out.join(PLAN_SETTINGS), &file)?;
    super::tile::write_problems(&out.join("problems.jsonl"), &problems)?;
    Ok((summary, problems))
}

/// Opens one shard and costs its samples in parallel.
fn cost_shard(
    source: &ShardSource,
    coster: &SampleCoster,
    limits: Limits,
    oversize: OversizeSetting,
) -> (Vec<Costed>, Vec<Problem>, bool) {
    let shard = match Shard::open(source) {
        Ok(shard) => shard,
        Err(err) => {
            let problem = Problem {
                shard: shard_name(source),
                offset: None,
                key: None,
                kind: "unreadable-shard",
                message: err.to_string(),
            };
            return (Vec::new(), vec![problem], false);
        }
    };
    let shard_path = shard.path().display().to_string();
    let results: Vec<(Costed, Option<Problem>)> = shard
        .samples()
        .par_iter()
        .map(|sample| {
            let mut row = PlanRow {
                key: sample.key.clone(),
                shard: shard_path.clone(),
                offset: sample.offset,
                ..PlanRow::default()
            };
            match coster.count(&shard, sample) {
                Ok(count) => {
                    row.image_offsets = count.images.iter().map(|i| i.offset).collect();
                    row.images = count.images.len() as u32;
                    row.width = count.images.first().map(|i| i.width);
                    row.height = count.images.first().map(|i| i.height);
                    row.tiles = count.tiles;
                    row.image_tokens = count.image_tokens;
                    row.tokens = count.tokens;
                    row.text_tokens = count.tokens - count.image_tokens;
                    let cost = count.cost();
                    let over = cost.tokens > limits.tokens || cost.tiles > limits.tiles;
                    // Only an oversize sample to truncate needs its real layout, to cut it.
                    let truncated = (over && oversize == OversizeSetting::Truncate)
                        .then(|| coster.cost(&shard, sample).ok())
                        .flatten()
                        .and_then(|full| full.truncated(limits).map(|t| t.cost()));
                    let costed = Costed {
                        row,
                        cost: Some(cost),
                        truncated,
                    };
                    (costed, None)
                }
                Err(failure) => {
                    row.images = crate::pack::sample_cost::image_members(sample).count() as u32;
                    row.placement = "failed".into();
                    row.reason = Some(format!("{}: {}", failure.kind, failure.message));
                    let problem = sample_problem(&shard, sample, failure.kind, failure.message);
                    let costed = Costed {
                        row,
                        cost: None,
                        truncated: None,
                    };
                    (costed, Some(problem))
                }
            }
        })
        .collect();
    let mut problems: Vec<Problem> = shard.problems().to_vec();
    let mut costed = Vec::with_capacity(results.len());
    for (c, p) in results {
        costed.push(c);
        problems.extend(p);
    }
    (costed, problems, true)
}

/// Writes each packable sample's placement, pack id and slot into its row.
fn apply_placements(
    samples: &mut [Costed],
    packable: &[usize],
    plan: &PackPlan,
    new_id: &[u64],
    limits: Limits,
) {
    for (pack_index, pack) in plan.packs.iter().enumerate() {
        for (slot, &member) in pack.samples.iter().enumerate() {
            let row = &mut samples[packable[member as usize]].row;
            row.pack_id = Some(new_id[pack_index]);
            row.slot = Some(slot as u32);
        }
    }
    for (member, placement) in plan.placements.iter().enumerate() {
        let row = &mut samples[packable[member]].row;
        // Worded only for the samples that get a reason (formatting it for every sample was a
        // visible share of the serial end of `plan`).
        let (tokens, tiles) = (row.tokens, row.tiles);
        let over = || {
            format!(
                "{tokens} tokens / {tiles} tiles over the limits of {} tokens / {} tiles",
                limits.tokens,
                tile_limit_text(limits)
            )
        };
        match placement {
            Placement::Packed { .. } => row.placement = "packed".into(),
            Placement::Truncated { cost, .. } => {
                row.placement = "truncated".into();
                row.reason = Some(format!(
                    "{}: cut to {} tokens / {} tiles",
                    over(),
                    cost.tokens,
                    cost.tiles
                ));
                row.tokens = cost.tokens;
                row.tiles = cost.tiles;
            }
            Placement::Alone { .. } => {
                row.placement = "alone".into();
                row.reason = Some(format!("{}: packed alone", over()));
            }
            Placement::Dropped => {
                row.placement = "dropped".into();
                row.reason = Some(format!("{}: dropped", over()));
                row.pack_id = None;
                row.slot = None;
            }
        }
    }
}

fn tile_limit_text(limits: Limits) -> String {
    if limits.tiles == u32::MAX {
        "unlimited".into()
    } else {
        limits.tiles.to_string()
    }
}

fn fill_summary(summary: &mut PlanSummary, samples: &[Costed], plan: &PackPlan, limits: Limits) {
    let mut tokens = 0u64;
    let mut tiles = 0u64;
    for s in samples {
        match s.row.placement.as_str() {
            "packed" => summary.packed += 1,
            "truncated" => {
                summary.packed += 1;
                summary.truncated += 1;
            }
            "alone" => {
                summary.packed += 1;
                summary.alone += 1;
            }
            "dropped" => summary.dropped += 1,
            _ => summary.failed += 1,
        }
        if s.row.pack_id.is_some() {
            tokens += u64::from(s.row.tokens);
            tiles += u64::from(s.row.tiles);
        }
    }
    summary.packs = plan.packs.len();
    let by_tokens = tokens.div_ceil(u64::from(limits.tokens));
    let by_tiles = if limits.tiles == u32::MAX {
        0
    } else {
        tiles.div_ceil(u64::from(limits.tiles))
    };
    summary.lower_bound = by_tokens.max(by_tiles);
    let packs = plan.packs.len().max(1) as f64;
    summary.token_efficiency = tokens as f64 / (packs * f64::from(limits.tokens));
    summary.tile_fill =
        (limits.tiles != u32::MAX).then(|| tiles as f64 / (packs * f64::from(limits.tiles)));
    for pack in &plan.packs {
        *summary.tiles_per_pack.entry(pack.tiles).or_default() += 1;
    }
}
