//! The `plan` and `pack` subcommands: flags, defaults, and the printed summaries. Part of the
//! binary only; the work is done by `vlmprep::pipeline::{plan, pack}`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use vlmprep::backend::CpuBackend;

use crate::cli::device::{Device, DeviceArg, pick};
use vlmprep::image::decode::DecodeOptions;
use vlmprep::model::tokenizer::TextTokenizer;
use vlmprep::pack::sample_cost::VisionTokens;
use vlmprep::pack::sequence::{ImageTokenIds, TextFormat};
use vlmprep::pipeline::pack::{IdsDtype, PackConfig, PackSummary, run_pack};
use vlmprep::pipeline::plan::{
    AlgoSetting, BalanceSettings, OversizeSetting, PlanSettings, PlanSummary, TokenizerSource,
    read_plan_file, run_plan,
};
use vlmprep::problems::ProblemLog;
use vlmprep::shard::ShardSource;

use crate::{InputArgs, PixelArgs, TilingArgs, print_problems, progress_bar};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum AlgoArg {
    /// Offline: best-fit-decreasing in several orders, a pack-by-pack fill and (where tiles
    /// bind) tile patterns, over both limits; the plan with the fewest packs kept; pack order
    /// shuffled by --seed.
    Bfd,
    /// Streaming with a bounded buffer (--buffer): packs come out while the pool is read.
    Online,
    /// Next-fit in pool order: for recipes that depend on sample order (curricula).
    Ordered,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum OversizeArg {
    /// Leave samples over a limit out of the packs (recorded in the plan).
    Drop,
    /// Cut them to fit: tokens past L and images past T removed (an image is never cut).
    Truncate,
    /// Give each a pack of its own, over the limits (marked in the plan).
    Alone,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum IdsDtypeArg {
    Int32,
    Int64,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub inputs: InputArgs,
    /// Output folder: plan.parquet (one row per sample), plan.json, problems.jsonl.
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub tiling: TilingArgs,
    /// Hugging Face tokenizer.json for the text. Without it, text costs one token per UTF-8
    /// byte (an upper bound for byte-level BPE), and a warning says so.
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// Vision tokens per tile (default: internvl 256, fixed 729 as SigLIP-384/14; qwen2vl
    /// always counts (h/factor)·(w/factor)).
    #[arg(long, value_name = "N")]
    pub tokens_per_tile: Option<u32>,
    /// Image placeholder tokens start,context,end, looked up in the tokenizer (InternVL's by
    /// default). Each image becomes start, context × its vision tokens, end.
    #[arg(
        long,
        value_name = "S,C,E",
        default_value = "<img>,<IMG_CONTEXT>,</img>"
    )]
    pub image_tokens: String,
    /// Image placeholder token ids start,context,end, instead of looking up --image-tokens.
    #[arg(long, value_name = "S,C,E", value_parser = parse_ids)]
    pub image_token_ids: Option<[u32; 3]>,
    /// Where the text says this, the next image goes; images without a tag go before the text.
    #[arg(long, default_value = "<image>")]
    pub image_tag: String,
    /// At most this many tokens per pack (L).
    #[arg(long, default_value_t = 8192, value_name = "L")]
    pub tokens_per_pack: u32,
    /// At most this many tiles per pack (T; InternVL's num_images_expected). Default: no limit.
    #[arg(long, value_name = "T")]
    pub tiles_per_pack: Option<u32>,
    /// Packing algorithm.
    #[arg(long, value_enum, default_value_t = AlgoArg::Bfd)]
    pub algo: AlgoArg,
    /// online: samples held at most while choosing what fills the next pack.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub buffer: usize,
    /// What happens to samples over L tokens or T tiles.
    #[arg(long, value_enum, default_value_t = OversizeArg::Drop)]
    pub oversize: OversizeArg,
    /// Seed of the pack order (bfd) and of the step order (--balance-world): same input and
    /// seed give a byte-identical plan, whatever the thread count.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Group packs into steps of W (one per data-parallel rank) of alike compute, so no rank
    /// waits on a slower one; pack ids then run step by step (rank = id mod W).
    #[arg(long, value_name = "W")]
    pub balance_world: Option<usize>,
}

#[derive(Args, Debug)]
pub struct PackArgs {
    /// A plan folder written by `vlmprep plan`.
    #[arg(long, value_name = "DIR")]
    pub plan: PathBuf,
    /// Output folder: packs-NNNNNN/ folders of .npy fields, problems.jsonl, summary.json.
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: PathBuf,
    /// Also decode and tile the images into pixel_values.npy: tiles (internvl, fixed), or for
    /// qwen2vl plans flattened 14 px patches plus image_grid_thw.npy (needs a float --dtype).
    #[arg(long)]
    pub materialize: bool,
    #[command(flatten)]
    pub pixels: PixelArgs,
    /// Token id type of input_ids and labels.
    #[arg(long, value_enum, default_value_t = IdsDtypeArg::Int32)]
    pub ids_dtype: IdsDtypeArg,
    /// Packs per output folder.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub packs_per_shard: usize,
    /// Use this tokenizer.json instead of the one the plan names (e.g. the plan was moved).
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// Refuse images with more pixels than this (as in `tile`).
    #[arg(long, default_value_t = 89_478_485)]
    pub max_image_pixels: u64,
    /// Upper bound, in MiB, on tiles held in memory at once (with --materialize).
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    pub memory_mib: u64,
    /// Where --materialize tiles: auto picks CUDA when built in and a GPU is visible, else the
    /// CPU. Without --materialize nothing runs on a device and the CPU is used.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
}

fn parse_ids(s: &str) -> Result<[u32; 3], String> {
    let ids: Vec<u32> = s
        .split(',')
        .map(|v| v.trim().parse::<u32>().map_err(|e| format!("`{v}`: {e}")))
        .collect::<Result<_, _>>()?;
    ids.try_into()
        .map_err(|_| format!("`{s}`: expected three comma-separated token ids"))
}

/// Builds the settings of a plan from its flags.
pub fn plan_settings(
    args: &PlanArgs,
    tokenizer: &TokenizerSource,
    text: &TextTokenizer,
) -> Result<PlanSettings> {
    let rule = args.tiling.rule();
    let vision = match (args.tokens_per_tile, VisionTokens::preset(&rule)) {
        (Some(n), VisionTokens::PerTile(_)) => VisionTokens::PerTile(n),
        (Some(_), VisionTokens::ResizedArea { .. }) => {
            bail!("--tokens-per-tile does not apply to qwen2vl (tokens follow the resized size)")
        }
        (None, preset) => preset,
    };
    let ids = match args.image_token_ids {
        Some([start, context, end]) => ImageTokenIds {
            start,
            context,
            end,
        },
        None => image_ids_from_tokens(&args.image_tokens, text)?,
    };
    Ok(PlanSettings {
        rule,
        vision,
        max_image_pixels: args.tiling.max_image_pixels,
        ids,
        format: TextFormat {
            image_tag: args.image_tag.clone(),
            ..TextFormat::default()
        },
        tokenizer: tokenizer.clone(),
        tokens_per_pack: args.tokens_per_pack,
        tiles_per_pack: args.tiles_per_pack,
        algo: match args.algo {
            AlgoArg::Bfd => AlgoSetting::Bfd,
            AlgoArg::Online => AlgoSetting::Online {
                buffer: args.buffer,
            },
            AlgoArg::Ordered => AlgoSetting::Ordered,
        },
        oversize: match args.oversize {
            OversizeArg::Drop => OversizeSetting::Drop,
            OversizeArg::Truncate => OversizeSetting::Truncate,
            OversizeArg::Alone => OversizeSetting::Alone,
        },
        seed: args.seed,
        balance: args.balance_world.map(|world| BalanceSettings { world }),
    })
}

/// Looks the three placeholder tokens up in the tokenizer. The byte fallback has no special
/// tokens: it gets the ids just past the byte range (256, 257, 258).
fn image_ids_from_tokens(spec: &str, text: &TextTokenizer) -> Result<ImageTokenIds> {
    let names: Vec<&str> = spec.split(',').map(str::trim).collect();
    let [start, context, end] = names[..] else {
        bail!("--image-tokens `{spec}`: expected three comma-separated tokens");
    };
    if matches!(text, TextTokenizer::Bytes) {
        return Ok(ImageTokenIds {
            start: 256,
            context: 257,
            end: 258,
        });
    }
    let id = |name: &str| {
        text.token_id(name).with_context(|| {
            format!(
                "tokenizer {} has no token `{name}`: pass --image-tokens with tokens it has, \
                 or --image-token-ids",
                text.name()
            )
        })
    };
    Ok(ImageTokenIds {
        start: id(start)?,
        context: id(context)?,
        end: id(end)?,
    })
}

/// The tokenizer a plan run uses, and how the plan names it.
pub fn plan_tokenizer(path: Option<&Path>) -> Result<(TokenizerSource, TextTokenizer)> {
    match path {
        Some(path) => {
            let path = std::fs::canonicalize(path)
                .with_context(|| format!("tokenizer {}", path.display()))?;
            let tokenizer = TextTokenizer::from_file(&path)?;
            Ok((TokenizerSource::File(path), tokenizer))
        }
        None => {
            eprintln!(
                "warning: no --tokenizer: text is counted as one token per UTF-8 byte \
                 (an upper bound for byte-level BPE tokenizers); pass the model's tokenizer.json"
            );
            Ok((TokenizerSource::Bytes, TextTokenizer::bytes()))
        }
    }
}

/// Runs `plan` with a progress bar over shards.
pub fn plan_with_progress(
    sources: &[ShardSource],
    settings: &PlanSettings,
    tokenizer: &TextTokenizer,
    out: &Path,
) -> Result<(PlanSummary, ProblemLog)> {
    let bar = progress_bar(sources.len() as u64, "shards");
    let result = run_plan(sources, settings, tokenizer, out, &|| bar.inc(1));
    bar.finish_and_clear();
    result.with_context(|| format!("planning into {}", out.display()))
}

pub fn cmd_plan(args: PlanArgs) -> Result<()> {
    let sources = crate::sources(&args.inputs.input)?;
    let (source, tokenizer) = plan_tokenizer(args.tokenizer.as_deref())?;
    let settings = plan_settings(&args, &source, &tokenizer)?;
    let (summary, problems) = plan_with_progress(&sources, &settings, &tokenizer, &args.out)?;
    print_plan_summary(&summary, &settings, &args.out);
    print_problems(&problems, 20);
    Ok(())
}

pub fn print_plan_summary(s: &PlanSummary, settings: &PlanSettings, out: &Path) {
    println!(
        "planned  {} samples ({} images) from {} shards in {:.2} s ({:.0} images/s)",
        s.samples, s.images, s.shards, s.seconds, s.images_per_second
    );
    println!(
        "placed   {} packed ({} truncated, {} alone), {} dropped over the limits, {} failed",
        s.packed, s.truncated, s.alone, s.dropped, s.failed
    );
    let tiles = settings
        .tiles_per_pack
        .map_or("no tile limit".to_string(), |t| format!("T = {t} tiles"));
    println!(
        "packs    {} (lower bound {}: {:+.2}%), L = {} tokens, {}",
        s.packs,
        s.lower_bound,
        100.0 * (s.packs as f64 / s.lower_bound.max(1) as f64 - 1.0),
        settings.tokens_per_pack,
        tiles
    );
    print!("fill     tokens {:.2}%", 100.0 * s.token_efficiency);
    match s.tile_fill {
        Some(fill) => println!(", tiles {:.2}%", 100.0 * fill),
        None => println!(),
    }
    if let Some(e) = s.spread_emitted {
        let world = settings.balance.map_or(8, |b| b.world);
        print!(
            "balance  per-step max/mean at W = {world}: as emitted {:.3} (worst {:.3})",
            e.mean, e.worst
        );
        match s.spread_balanced {
            Some(b) => println!(", balanced {:.3} (worst {:.3})", b.mean, b.worst),
            None => println!(" (--balance-world W groups packs into even steps)"),
        }
    }
    if !s.tiles_per_pack.is_empty() {
        println!("tiles per pack:");
        let most = s.tiles_per_pack.values().copied().max().unwrap_or(1).max(1);
        for (tiles, n) in &s.tiles_per_pack {
            println!(
                "  {tiles:>6} {n:>8} {}",
                "#".repeat((40 * n).div_ceil(most))
            );
        }
    }
    println!(
        "output   {} (plan.parquet, plan.json, problems.jsonl)",
        out.display()
    );
}

/// Runs `pack` with a progress bar over packs.
pub fn pack_with_progress(args: &PackArgs) -> Result<(PackSummary, ProblemLog)> {
    let plan = read_plan_file(&args.plan)?;
    let tokenizer = match &args.tokenizer {
        Some(path) => TextTokenizer::from_file(path)?,
        None => plan.settings.tokenizer.load().with_context(|| {
            "loading the plan's tokenizer (pass --tokenizer if it moved)".to_string()
        })?,
    };
    let cfg = PackConfig {
        plan_dir: args.plan.clone(),
        out: args.out.clone(),
        materialize: args.materialize,
        spec: args.pixels.spec(&plan.settings.rule)?,
        decode: DecodeOptions {
            max_pixels: args.max_image_pixels,
            ..DecodeOptions::default()
        },
        ids_dtype: match args.ids_dtype {
            IdsDtypeArg::Int32 => IdsDtype::I32,
            IdsDtypeArg::Int64 => IdsDtype::I64,
        },
        packs_per_shard: args.packs_per_shard,
        chunk_bytes: args.memory_mib << 20,
    };
    let bar = progress_bar(plan.summary.packs as u64, "packs");
    let device = match args.materialize {
        true => pick(args.device)?,
        false => Device::Cpu,
    };
    let result = match &device {
        Device::Cpu => run_pack(&CpuBackend, &cfg, &tokenizer, &bar),
        #[cfg(feature = "cuda")]
        Device::Cuda(gpu) => run_pack(gpu.as_ref(), &cfg, &tokenizer, &bar),
        #[cfg(feature = "wgpu")]
        Device::Wgpu(gpu) => run_pack(gpu.as_ref(), &cfg, &tokenizer, &bar),
    };
    bar.finish_and_clear();
    result.with_context(|| format!("packing into {}", args.out.display()))
}

pub fn cmd_pack(args: PackArgs) -> Result<()> {
    let (summary, problems) = pack_with_progress(&args)?;
    print_pack_summary(&summary, &args.out);
    print_problems(&problems, 20);
    Ok(())
}

pub fn print_pack_summary(s: &PackSummary, out: &Path) {
    println!(
        "packed   {} samples into {} packs ({} tokens, {} tiles) in {} folders, {:.2} s ({:.0} samples/s, {} backend)",
        s.samples,
        s.packs,
        s.tokens,
        s.tiles,
        s.shards_written,
        s.seconds,
        s.samples_per_second,
        s.backend
    );
    if s.left_out > 0 {
        println!("left out {} samples (see problems)", s.left_out);
    }
    println!(
        "output   {} (packs-NNNNNN/: input_ids, labels, position_ids, cu_seqlens, image_spans, ... .npy)",
        out.display()
    );
}
