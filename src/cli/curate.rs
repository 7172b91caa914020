//! The `curate` subcommand: flags for the tiers, filters and outputs, the model choice, and the
//! printed summary. The work is in `vlmprep::pipeline::curate`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use vlmprep::backend::CpuBackend;
use vlmprep::curate::dedup::TierSettings;
use vlmprep::curate::filters::Filters;
use vlmprep::curate::groups::KeepRule;
use vlmprep::curate::perceptual::DEFAULT_MAX_DISTANCE;
use vlmprep::curate::rewrite::RewriteSettings;
use vlmprep::curate::semantic::SemanticParams;
use vlmprep::image::decode::DecodeOptions;
use vlmprep::model::siglip::SiglipModel;
use vlmprep::model::siglip::demo_model::{DEMO_MODEL_WARNING, write_demo_model};
use vlmprep::pipeline::curate::{CurateConfig, CurateSummary, run_curate};
use vlmprep::shard::ShardSource;

use crate::InputArgs;
use crate::cli::device::{Device, DeviceArg, pick};

/// Which member of a duplicate group is kept.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum KeepArg {
    /// The first in pool order.
    First,
    /// The one with the most pixels.
    Largest,
    /// The one with the highest image–caption score (needs --model).
    BestScore,
    /// The one least similar to its cluster centroid (SemDeDup's rule; semantic tier only,
    /// other tiers fall back to pool order).
    LeastCentral,
}

impl From<KeepArg> for KeepRule {
    fn from(k: KeepArg) -> Self {
        match k {
            KeepArg::First => KeepRule::First,
            KeepArg::Largest => KeepRule::Largest,
            KeepArg::BestScore => KeepRule::BestScore,
            KeepArg::LeastCentral => KeepRule::LeastCentral,
        }
    }
}

/// Flags of `vlmprep curate`.
#[derive(Args, Debug)]
pub struct CurateArgs {
    #[command(flatten)]
    pub inputs: InputArgs,
    /// Output folder: manifest.parquet, summary.json, problems.jsonl, signals/ (per-shard pass-1
    /// signals; a rerun reuses them), reference/ (for a later --reference).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: PathBuf,
    /// A Hugging Face SigLIP folder: enables the semantic tier and the relevance filters.
    /// Without it, the exact and perceptual tiers and the size/aspect/caption filters still run.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Use the built-in tiny random-weight model instead of --model (for trying the flags out:
    /// its embeddings and scores mean nothing).
    #[arg(long, conflicts_with = "model")]
    pub demo_model: bool,
    /// Where the model runs: auto picks CUDA when built in and a GPU is visible, else the CPU.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// Samples per decode/model batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,

    /// Turn off the exact tier (identical image bytes, xxh3-128).
    #[arg(long)]
    pub no_exact: bool,
    /// Turn off the perceptual tier.
    #[arg(long)]
    pub no_perceptual: bool,
    /// Perceptual tier: duplicates when the 64-bit pHashes (or one and the other's mirror image)
    /// differ in at most this many bits. The default comes from the measurement in
    /// BENCHMARKS.md (planted re-encodes, resizes, crops and flips against distinct images).
    #[arg(long, default_value_t = DEFAULT_MAX_DISTANCE, value_name = "BITS")]
    pub phash_distance: u32,
    /// Turn off the semantic tier (on by default when there is a model).
    #[arg(long)]
    pub no_semantic: bool,
    /// Semantic tier: pairs in one cluster with cosine ≥ 1 − eps are duplicates.
    #[arg(long, default_value_t = 0.01)]
    pub eps: f32,
    /// Semantic tier: also report the fraction each of these eps would keep.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.001,0.005,0.01,0.02,0.05,0.1"
    )]
    pub eps_report: Vec<f32>,
    /// Semantic tier: k-means clusters (0: ceil(sqrt(n/2))).
    #[arg(long, default_value_t = 0)]
    pub clusters: usize,
    /// Semantic tier: fit k-means on at most this many samples (then assign all).
    #[arg(long, default_value_t = 100_000)]
    pub fit_sample: usize,
    /// Semantic tier: k-means iterations.
    #[arg(long, default_value_t = 20)]
    pub kmeans_iterations: usize,
    /// Seed of the k-means sample and initialization (same seed and inputs: same manifest).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Which member of each duplicate group is kept.
    #[arg(long, value_enum, default_value_t = KeepArg::First)]
    pub keep: KeepArg,

    /// Drop images whose shorter side is below this.
    #[arg(long, value_name = "PX")]
    pub min_side: Option<u32>,
    /// Drop images whose longer side is above this.
    #[arg(long, value_name = "PX")]
    pub max_side: Option<u32>,
    /// Drop images whose long/short side ratio is above this.
    #[arg(long, value_name = "RATIO")]
    pub max_aspect: Option<f32>,
    /// Drop samples whose caption has fewer characters (no caption counts as 0).
    #[arg(long, value_name = "N")]
    pub min_caption_chars: Option<u32>,
    /// Drop samples whose caption has more characters.
    #[arg(long, value_name = "N")]
    pub max_caption_chars: Option<u32>,
    /// Drop samples whose image–caption sigmoid score is below this (needs a model).
    #[arg(long, value_name = "P")]
    pub min_score: Option<f32>,
    /// Keep only the best-scoring P % of the scored samples, DataComp-style (needs a model).
    #[arg(long, value_name = "P")]
    pub top_percent: Option<f32>,

    /// Dedup against the kept samples of an earlier curate run (its --out folder): reuses its
    /// k-means centroids; this run's reference/ then holds both corpora.
    #[arg(long, value_name = "DIR")]
    pub reference: Option<PathBuf>,
    /// Write the kept samples as WebDataset shards into this folder (kept-000000.tar, …).
    #[arg(long, value_name = "DIR")]
    pub write_shards: Option<PathBuf>,
    /// Samples per written shard.
    #[arg(long, default_value_t = 10_000)]
    pub shard_samples: usize,
    /// Re-encode written images whose longer side is above this, as JPEG at this size.
    #[arg(long, value_name = "PX")]
    pub reencode_max_side: Option<u32>,
    /// JPEG quality of re-encoded images.
    #[arg(long, default_value_t = 90)]
    pub reencode_quality: u8,
    /// Refuse images with more pixels than this, from the header alone (Pillow's limit).
    #[arg(long, default_value_t = 89_478_485)]
    pub max_image_pixels: u64,
}

impl CurateArgs {
    fn config(&self, has_model: bool) -> Result<CurateConfig> {
        if self.batch == 0 {
            bail!("--batch must be at least 1");
        }
        if !(0.0..1.0).contains(&self.eps)
            || self.eps_report.iter().any(|e| !(0.0..1.0).contains(e))
        {
            bail!("--eps and --eps-report take values in [0, 1)");
        }
        if let Some(p) = self.top_percent
            && !(p > 0.0 && p <= 100.0)
        {
            bail!("--top-percent takes a value in (0, 100]");
        }
        let semantic = (has_model && !self.no_semantic).then_some(SemanticParams {
            clusters: self.clusters,
            fit_sample: self.fit_sample,
            iterations: self.kmeans_iterations,
            seed: self.seed,
            eps: self.eps,
        });
        Ok(CurateConfig {
            out: self.out.clone(),
            batch: self.batch,
            decode: DecodeOptions {
                max_pixels: self.max_image_pixels,
                ..DecodeOptions::default()
            },
            filters: Filters {
                min_side: self.min_side,
                max_side: self.max_side,
                max_aspect: self.max_aspect,
                min_caption_chars: self.min_caption_chars,
                max_caption_chars: self.max_caption_chars,
                min_score: self.min_score,
                top_percent: self.top_percent,
            },
            tiers: TierSettings {
                exact: !self.no_exact,
                perceptual: (!self.no_perceptual).then_some(self.phash_distance),
                semantic,
                eps_report: if semantic.is_some() {
                    self.eps_report.clone()
                } else {
                    Vec::new()
                },
                keep: self.keep.into(),
            },
            reference: self.reference.clone(),
            rewrite: self.write_shards.as_ref().map(|dir| RewriteSettings {
                dir: dir.clone(),
                per_shard: self.shard_samples.max(1),
                max_side: self.reencode_max_side,
                quality: self.reencode_quality.clamp(1, 100),
            }),
        })
    }
}

pub fn cmd_curate(args: CurateArgs) -> Result<()> {
    let sources = crate::sources(&args.inputs.input)?;
    let summary = curate_with_progress(&sources, &args)?;
    print_curate_summary(&summary, &args);
    Ok(())
}

/// Loads the model if any, runs the pipeline under a progress bar.
pub fn curate_with_progress(sources: &[ShardSource], args: &CurateArgs) -> Result<CurateSummary> {
    let model_dir = match (&args.model, args.demo_model) {
        (Some(dir), _) => Some(dir.clone()),
        (None, true) => {
            eprintln!("warning: {DEMO_MODEL_WARNING}");
            Some(write_demo_model(&args.out)?)
        }
        (None, false) => None,
    };
    let cfg = args.config(model_dir.is_some())?;
    let bar = crate::progress_bar(0, "samples");
    bar.set_message("signals");
    let context = || format!("curating into {}", args.out.display());
    let result = match &model_dir {
        None => run_curate::<CpuBackend>(None, "cpu", sources, &cfg, &bar),
        Some(dir) => {
            let device = pick(args.device)?;
            let backend = device.describe();
            let loading = || format!("loading {}", dir.display());
            match device {
                Device::Cpu => {
                    let model = SiglipModel::load(dir, CpuBackend).with_context(loading)?;
                    run_curate(Some(&model), &backend, sources, &cfg, &bar)
                }
                #[cfg(feature = "cuda")]
                Device::Cuda(gpu) => {
                    let ops = vlmprep::backend::cuda::tensor::CudaTensorOps::new(gpu)?;
                    let model = SiglipModel::load(dir, ops).with_context(loading)?;
                    run_curate(Some(&model), &backend, sources, &cfg, &bar)
                }
                #[cfg(feature = "wgpu")]
                Device::Wgpu(gpu) => {
                    let ops = vlmprep::backend::wgpu::WgpuTensorOps::new(gpu);
                    let model = SiglipModel::load(dir, ops).with_context(loading)?;
                    run_curate(Some(&model), &backend, sources, &cfg, &bar)
                }
            }
        }
    };
    bar.finish_and_clear();
    result.with_context(context)
}

pub fn print_curate_summary(s: &CurateSummary, args: &CurateArgs) {
    println!(
        "curated  {} samples from {} shards ({} reused from an earlier run, {} unreadable): kept {}, dropped {}",
        s.samples, s.shards, s.shards_reused, s.shards_failed, s.kept, s.dropped
    );
    for (reason, n) in &s.dropped_by_reason {
        println!("dropped  {n:>8}  {reason}");
    }
    for (tier, groups) in &s.dedup.groups {
        println!(
            "tier     {tier:<10} {groups} duplicate groups, {} dropped, {:.2} s",
            s.dedup.dropped.get(tier).copied().unwrap_or(0),
            s.dedup.seconds.get(tier).copied().unwrap_or(0.0)
        );
    }
    if !s.dedup.kept_fraction_by_eps.is_empty() {
        let table: Vec<String> = s
            .dedup
            .kept_fraction_by_eps
            .iter()
            .map(|(eps, kept)| format!("eps {eps}: {:.1}%", kept * 100.0))
            .collect();
        println!(
            "semantic {} clusters; kept by eps: {}",
            s.dedup.clusters,
            table.join(", ")
        );
    }
    if s.reference_samples > 0 {
        println!(
            "reference {} samples deduplicated against",
            s.reference_samples
        );
    }
    println!(
        "time     {:.2} s (signals {:.2} s, {:.0} samples/s; decisions {:.2} s)",
        s.seconds, s.signal_seconds, s.signal_samples_per_second, s.decide_seconds
    );
    if !s.problem_counts.is_empty() {
        let counts: Vec<String> = s
            .problem_counts
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        println!("problems {} (listed in problems.jsonl)", counts.join(", "));
    }
    if let Some(r) = &s.rewrite {
        println!(
            "shards   {} samples in {} shards under {} ({} re-encoded)",
            r.samples, r.shards, r.dir, r.reencoded
        );
    }
    println!(
        "output   {} (manifest.parquet, summary.json, problems.jsonl, reference/)",
        args.out.display()
    );
    if args.demo_model {
        println!("note     {DEMO_MODEL_WARNING}");
    }
}

/// Originals in the demo's planted pool (each gets its planted duplicates).
const DEMO_ORIGINALS: usize = 16;

/// The demo's curate step: a pool with planted duplicates (exact copies, re-encodes, resizes,
/// crops, mirror images) and off-topic captions, curated with every tier; then, per planted
/// kind, which tier caught it.
pub fn demo_curate(dir: &std::path::Path) -> Result<()> {
    use vlmprep::curate::planted::{planted_pool, write_planted_shards};
    use vlmprep::sink::table::{Values, read_table};

    let pool_dir = dir.join("planted");
    let samples = planted_pool(DEMO_ORIGINALS, 7)?;
    let shards = write_planted_shards(&pool_dir, &samples, 32)?;
    let specs: Vec<String> = shards.iter().map(|p| p.display().to_string()).collect();
    let sources = crate::sources(&specs)?;
    let out = dir.join("curated");
    let spec = format!("{}/*.tar", pool_dir.display());
    println!(
        "\n== vlmprep curate --input '{spec}' --out {} --demo-model --min-side 64\n   ({} samples: {DEMO_ORIGINALS} originals with planted duplicates)",
        out.display(),
        samples.len()
    );
    let args = CurateArgs::parse_demo(&spec, &out);
    let summary = curate_with_progress(&sources, &args)?;
    print_curate_summary(&summary, &args);

    let manifest = out.join("manifest.parquet");
    let table = read_table(&manifest)?;
    let (Some(Values::Str(keys)), Some(Values::Str(kinds))) =
        (table.column("key"), table.column("reason_kind"))
    else {
        bail!("{}: no key/reason_kind columns", manifest.display());
    };
    let verdict: std::collections::HashMap<&str, &str> = keys
        .iter()
        .zip(kinds)
        .filter_map(|(k, r)| Some((k.as_deref()?, r.as_deref().unwrap_or("kept"))))
        .collect();
    // Per planted kind: how many samples each verdict got.
    let mut table: std::collections::BTreeMap<&str, std::collections::BTreeMap<&str, usize>> =
        Default::default();
    // Per planted group (an original and its copies): how many members were kept.
    let mut kept_per_group: std::collections::BTreeMap<u32, usize> = Default::default();
    for s in &samples {
        let found = verdict.get(s.key.as_str()).copied().unwrap_or("missing");
        *table
            .entry(s.kind.name())
            .or_default()
            .entry(found)
            .or_insert(0) += 1;
        *kept_per_group.entry(s.original).or_insert(0) += usize::from(found == "kept");
    }
    println!(
        "\nplanted kind  what curate did with it (which member of a group survives follows --keep)"
    );
    for (kind, found) in &table {
        let cells: Vec<String> = found.iter().map(|(f, n)| format!("{f} {n}")).collect();
        println!("{kind:<13} {}", cells.join(", "));
    }
    let exactly_one = kept_per_group.values().filter(|&&k| k == 1).count();
    let more = kept_per_group.values().filter(|&&k| k > 1).count();
    let none = kept_per_group.values().filter(|&&k| k == 0).count();
    println!(
        "groups        {exactly_one} of {} planted groups kept exactly one member; {more} kept more (missed duplicates); {none} kept none (joined to another group by a tier)",
        kept_per_group.len()
    );
    println!(
        "(The semantic tier and the scores run on a random-weight model here: only the exact and\n perceptual tiers are meaningful in this demo.)"
    );
    Ok(())
}
