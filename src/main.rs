//! The `vlmprep` command line: parses flags, calls the library, prints. Nothing here computes.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use vlmprep::backend::{CpuBackend, TileSpec};
use vlmprep::image::decode::DecodeOptions;
use vlmprep::image::normalize::{Dtype, Normalization};
use vlmprep::image::resize::ResizeFilter;
use vlmprep::image::tiling::{InternVlSettings, Qwen2VlSettings, TilingRule};
use vlmprep::pipeline::inspect::{InspectReport, inspect};
use vlmprep::pipeline::tile::{TileConfig, TileSummary, run_tile};
use vlmprep::problems::ProblemLog;
use vlmprep::shard::{ShardSource, expand_inputs};

mod cli;
use cli::curate::{CurateArgs, cmd_curate};
use cli::device::{Device, DeviceArg};
use cli::embed::{EmbedArgs, cmd_embed};
use cli::packing::{PackArgs, PlanArgs, cmd_pack, cmd_plan};
use cli::serve::{ServeArgs, cmd_serve};

/// vlmprep: preprocessing for vision-language-model training data.
///
/// Reads pools of image–text samples (WebDataset tar shards or folders of images) without
/// copying, probes image headers, decodes on the CPU and cuts images into the tiles VLMs are
/// trained on (InternVL dynamic tiling, Qwen2-VL smart resize, fixed SigLIP squash), exactly as
/// the reference preprocessing does.
#[derive(Parser, Debug)]
#[command(version, propagate_version = true)]
struct Cli {
    /// Worker threads (default: all cores).
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Summarize a pool from its headers: samples, members by extension, image formats, sizes,
    /// and every problem found (damaged shards, unreadable headers). Decodes no pixels.
    Inspect(InspectArgs),
    /// Decode every image, cut it into tiles by a VLM's rule and write one KEY.npy per image
    /// (u8: [T, S, S, 3]; float: [T, 3, S, S] normalized), plus index.jsonl and problems.jsonl.
    Tile(TileArgs),
    /// Cost every sample from its image headers and text (no pixel decoded) and pack them into
    /// sequences of at most L tokens and T tiles: writes plan.parquet and plan.json.
    Plan(PlanArgs),
    /// Write the packed sequences of a plan as .npy fields (input_ids, labels, position_ids,
    /// cu_seqlens, image spans), with the tiles too when --materialize.
    Pack(PackArgs),
    /// Embed every sample's image and caption with a SigLIP model (Hugging Face folder):
    /// image_embeds.npy and text_embeds.npy equal to transformers' get_image_features /
    /// get_text_features, scores.npy (sigmoid pair probability), keys.txt, embeds.parquet.
    Embed(EmbedArgs),
    /// Dedup and filter a pool in tiers: exact (identical bytes), perceptual (pHash, mirror
    /// images too), semantic (SemDeDup on SigLIP embeddings, with --model); size, aspect,
    /// caption and relevance filters. Writes manifest.parquet (every sample: hashes, score,
    /// cluster, duplicate group, keep, reason), summary.json, and optionally the kept shards.
    /// Resumable: a killed run restarts where it stopped.
    Curate(CurateArgs),
    /// Sidecar for a trainer: plan the pool, then serve this rank's packed batches (tiles,
    /// input_ids, labels, position_ids, cu_seqlens) through shared memory over a Unix socket,
    /// deterministic and resumable on any number of ranks (python/ has the client).
    Serve(ServeArgs),
    /// Build a small synthetic pool (no downloads) and run inspect, tile, plan, pack, embed and
    /// curate on it (curate on a second pool with planted duplicates).
    Demo(DemoArgs),
}

#[derive(Args, Debug)]
struct InputArgs {
    /// Shards to read: tar files, globs (`data/*.tar`), brace ranges
    /// (`pool-{000000..000099}.tar`) or folders of images with optional same-named .txt/.json.
    #[arg(long = "input", short = 'i', value_name = "SHARDS", num_args = 1..)]
    input: Vec<String>,
}

#[derive(Args, Debug)]
struct InspectArgs {
    /// Shards, globs, brace ranges or folders (same as --input).
    #[arg(value_name = "SHARDS")]
    shards: Vec<String>,
    #[command(flatten)]
    inputs: InputArgs,
    /// Print the summary as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// List at most this many problems in the text summary (all are in --json).
    #[arg(long, default_value_t = 20)]
    show_problems: usize,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// InternVL dynamic tiling: a grid of S×S tiles chosen by aspect ratio, plus a thumbnail.
    Internvl,
    /// Qwen2-VL smart resize: one image, sides multiples of --factor, area within
    /// [--min-pixels, --max-pixels].
    Qwen2vl,
    /// Squash to S×S (SigLIP's image processor).
    Fixed,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum FilterArg {
    /// Pillow BICUBIC (antialiased on downscale): what SigLIP, InternVL and Qwen2-VL use.
    Bicubic,
    /// Pillow BILINEAR (antialiased on downscale).
    Bilinear,
}

/// How images are planned into tiles: shared by `tile`, `plan` and (through the plan) `pack`.
#[derive(Args, Debug, Clone)]
pub struct TilingArgs {
    /// Tiling rule.
    #[arg(long, value_enum, default_value_t = Mode::Internvl)]
    pub mode: Mode,
    /// Tile side in pixels (internvl default 448, fixed default 384; unused by qwen2vl).
    #[arg(long, value_name = "S")]
    pub tile_size: Option<u32>,
    /// internvl: fewest tiles in the grid.
    #[arg(long, default_value_t = 1)]
    pub min_tiles: u32,
    /// internvl: most tiles in the grid.
    #[arg(long, default_value_t = 12)]
    pub max_tiles: u32,
    /// internvl: append an S×S thumbnail of the whole image when the grid has >1 tile.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub thumbnail: bool,
    /// qwen2vl: sides become multiples of this (patch 14 × merge 2).
    #[arg(long, default_value_t = 28)]
    pub factor: u32,
    /// qwen2vl: smallest resized area in pixels.
    #[arg(long, default_value_t = 56 * 56)]
    pub min_pixels: u64,
    /// qwen2vl: largest resized area in pixels.
    #[arg(long, default_value_t = 28 * 28 * 1280)]
    pub max_pixels: u64,
    /// Refuse images with more pixels than this, from the header alone, before allocating
    /// (Pillow's MAX_IMAGE_PIXELS; named so as not to clash with qwen2vl's --max-pixels).
    #[arg(long, default_value_t = 89_478_485)]
    pub max_image_pixels: u64,
}

impl TilingArgs {
    /// The tiling rule these flags select.
    pub fn rule(&self) -> TilingRule {
        match self.mode {
            Mode::Internvl => TilingRule::InternVl(InternVlSettings {
                tile_size: self.tile_size.unwrap_or(448),
                min_tiles: self.min_tiles,
                max_tiles: self.max_tiles,
                thumbnail: self.thumbnail,
            }),
            Mode::Qwen2vl => TilingRule::Qwen2Vl(Qwen2VlSettings {
                factor: self.factor,
                min_pixels: self.min_pixels,
                max_pixels: self.max_pixels,
            }),
            Mode::Fixed => TilingRule::Fixed {
                size: self.tile_size.unwrap_or(384),
            },
        }
    }
}

/// What the tiles are made of: shared by `tile` and `pack --materialize`.
#[derive(Args, Debug, Clone)]
pub struct PixelArgs {
    /// Output element type: u8 (HWC, as resized) or f32/f16/bf16 (CHW, normalized; bf16 is
    /// stored as its uint16 bit pattern: torch.from_numpy(a).view(torch.bfloat16)).
    #[arg(long, default_value = "u8", value_parser = parse_dtype)]
    pub dtype: Dtype,
    /// Normalization preset for float outputs: siglip (0.5/0.5), imagenet (InternVL), clip
    /// (Qwen2-VL). Default: the mode's own (internvl → imagenet, qwen2vl → clip, fixed → siglip).
    #[arg(long, value_name = "PRESET")]
    pub norm: Option<String>,
    /// Per-channel mean, e.g. `0.5,0.5,0.5` (overrides --norm; needs --std).
    #[arg(long, value_name = "R,G,B", value_parser = parse_triple, requires = "std")]
    pub mean: Option<[f32; 3]>,
    /// Per-channel std, e.g. `0.5,0.5,0.5` (overrides --norm; needs --mean).
    #[arg(long, value_name = "R,G,B", value_parser = parse_triple, requires = "mean")]
    pub std: Option<[f32; 3]>,
    /// Resampling filter.
    #[arg(long, value_enum, default_value_t = FilterArg::Bicubic)]
    pub filter: FilterArg,
}

impl PixelArgs {
    /// Filter, dtype and normalization for tiles made under `rule`.
    pub fn spec(&self, rule: &TilingRule) -> Result<TileSpec> {
        let norm = match (self.mean, self.std, &self.norm) {
            (Some(mean), Some(std), _) => Normalization { mean, std },
            (_, _, Some(name)) => Normalization::preset(name)
                .with_context(|| format!("unknown --norm `{name}` (siglip, imagenet, clip)"))?,
            _ => match rule {
                TilingRule::InternVl(_) => Normalization::IMAGENET,
                TilingRule::Qwen2Vl(_) => Normalization::CLIP,
                TilingRule::Fixed { .. } => Normalization::SIGLIP,
            },
        };
        let filter = match self.filter {
            FilterArg::Bicubic => ResizeFilter::Bicubic,
            FilterArg::Bilinear => ResizeFilter::Bilinear,
        };
        Ok(TileSpec {
            filter,
            dtype: self.dtype,
            norm,
        })
    }
}

#[derive(Args, Debug)]
struct TileArgs {
    #[command(flatten)]
    inputs: InputArgs,
    /// Output folder for KEY.npy files, index.jsonl and problems.jsonl.
    #[arg(long, short = 'o', value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    tiling: TilingArgs,
    #[command(flatten)]
    pixels: PixelArgs,
    /// Decode JPEGs at 1/2, 1/4 or 1/8 scale (DCT scaling) when the tiles need at most half as
    /// many pixels per side. Faster on large photos; on average within the resize's own error
    /// against Pillow, but single images can differ more (see BENCHMARKS.md), hence opt-in.
    #[arg(long)]
    dct_scaling: bool,
    /// Also write every tile as KEY.tNN.png, to look at.
    #[arg(long)]
    png: bool,
    /// Decode and tile but write no tile files (index.jsonl, problems.jsonl and summary.json
    /// are still written): measures decode + tile throughput alone.
    #[arg(long, conflicts_with = "png")]
    no_write: bool,
    /// Work is done in chunks of images that hold at most this many MiB, decoded pixels plus
    /// tiles, counted from the image headers before anything is decoded (an image larger than
    /// that is a chunk of its own; at most 4096 images per chunk). One chunk's tiles are
    /// written while the next is decoded and tiled, so up to about twice this is held at once,
    /// plus up to 1 GiB of freed buffers kept for the next chunks. 0: one image per chunk.
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    memory_mib: u64,
    /// Where resize + tile + normalize run: auto picks CUDA when built in and a GPU is visible,
    /// else the CPU. On CUDA, JPEGs are decoded by nvJPEG (the GPU's hardware engine where it
    /// has one); what nvJPEG cannot decode falls back to the CPU decoder per image.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Where to build the pool and write the tiles (default: a temporary folder, removed at
    /// the end).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

fn parse_dtype(s: &str) -> Result<Dtype, String> {
    s.parse().map_err(|e: vlmprep::Error| e.to_string())
}

fn parse_triple(s: &str) -> Result<[f32; 3], String> {
    let values: Vec<f32> = s
        .split(',')
        .map(|v| v.trim().parse::<f32>().map_err(|e| format!("`{v}`: {e}")))
        .collect::<Result<_, _>>()?;
    values
        .try_into()
        .map_err(|_| format!("`{s}`: expected three comma-separated numbers"))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(threads) = cli.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .context("setting up the thread pool")?;
    }
    match cli.command {
        Command::Inspect(args) => cmd_inspect(args),
        Command::Tile(args) => cmd_tile(args),
        Command::Embed(args) => cmd_embed(args),
        Command::Plan(args) => cmd_plan(args),
        Command::Pack(args) => cmd_pack(args),
        Command::Curate(args) => cmd_curate(args),
        Command::Demo(args) => cmd_demo(args),
        Command::Serve(args) => cmd_serve(args),
    }
}

pub(crate) fn sources(specs: &[String]) -> Result<Vec<ShardSource>> {
    if specs.is_empty() {
        bail!("no input given: pass shards, globs, brace ranges or folders with --input");
    }
    Ok(expand_inputs(specs)?)
}

fn cmd_inspect(args: InspectArgs) -> Result<()> {
    let specs: Vec<String> = args.shards.into_iter().chain(args.inputs.input).collect();
    let sources = sources(&specs)?;
    let bar = progress_bar(sources.len() as u64, "shards");
    let report = inspect(&sources, &|_| bar.inc(1));
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_inspect(&report, args.show_problems);
    }
    Ok(())
}

fn print_inspect(r: &InspectReport, show_problems: usize) {
    println!("shards   {}", r.shards);
    println!(
        "samples  {} ({} without an image)",
        r.samples, r.samples_without_image
    );
    println!(
        "bytes    {:.1} MiB in members",
        r.member_bytes as f64 / (1 << 20) as f64
    );
    let join = |m: &std::collections::BTreeMap<String, usize>| {
        m.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("members  {}", join(&r.members_by_ext));
    println!("formats  {}", join(&r.formats));
    if !r.jpeg_subsampling.is_empty() {
        println!(
            "jpeg     {} progressive; subsampling {}",
            r.jpeg_progressive,
            join(&r.jpeg_subsampling)
        );
    }
    println!("rotated  {} with an EXIF orientation", r.exif_rotated);
    println!(
        "sizes    (longer side, after orientation; {:.1} megapixels in all)",
        r.megapixels
    );
    let most = r
        .size_histogram
        .iter()
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(0)
        .max(1);
    for (bucket, n) in &r.size_histogram {
        println!(
            "  {bucket:>10} {n:>8} {}",
            "#".repeat((40 * n).div_ceil(most))
        );
    }
    if let (Some(s), Some(l)) = (r.smallest, r.largest) {
        println!("  smallest {}x{}, largest {}x{}", s.0, s.1, l.0, l.1);
    }
    print_problems(&r.problems, show_problems);
}

fn print_problems(problems: &ProblemLog, show: usize) {
    if problems.is_empty() {
        println!("problems none");
        return;
    }
    let counts = problems
        .counts()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>();
    println!("problems {} ({})", problems.len(), counts.join("  "));
    for p in problems.problems.iter().take(show) {
        println!("  {p}");
    }
    if problems.len() > show {
        println!("  ... {} more", problems.len() - show);
    }
}

fn tile_config(args: &TileArgs) -> Result<TileConfig> {
    let rule = args.tiling.rule();
    let spec = args.pixels.spec(&rule)?;
    Ok(TileConfig {
        rule,
        spec,
        decode: DecodeOptions {
            max_pixels: args.tiling.max_image_pixels,
            ..DecodeOptions::default()
        },
        dct_scaling: args.dct_scaling,
        out: args.out.clone(),
        write_tiles: !args.no_write,
        png: args.png,
        chunk_bytes: args.memory_mib << 20,
    })
}

fn cmd_tile(args: TileArgs) -> Result<()> {
    let sources = sources(&args.inputs.input)?;
    let cfg = tile_config(&args)?;
    let device = cli::device::pick(args.device)?;
    let (summary, problems) = tile_with_progress(&sources, &cfg, &device)?;
    print_tile_summary(&summary, &cfg);
    print_problems(&problems, 20);
    Ok(())
}

fn tile_with_progress(
    sources: &[ShardSource],
    cfg: &TileConfig,
    device: &Device,
) -> Result<(TileSummary, ProblemLog)> {
    let total_bytes: u64 = sources
        .iter()
        .filter_map(|s| match s {
            ShardSource::Tar(p) => std::fs::metadata(p).ok().map(|m| m.len()),
            ShardSource::Folder(_) => None,
        })
        .sum();
    let bar = progress_bar(total_bytes, "bytes");
    let result = match device {
        Device::Cpu => run_tile(&CpuBackend, sources, cfg, &bar),
        #[cfg(feature = "cuda")]
        Device::Cuda(gpu) => {
            use vlmprep::backend::cuda::decode_tile::CudaDecodeTile;
            // nvJPEG when it loads; otherwise decode stays on the CPU and tiling on the GPU.
            match CudaDecodeTile::new(gpu.clone()) {
                Ok(decode_tile) => run_tile(&decode_tile, sources, cfg, &bar),
                Err(e) => {
                    eprintln!("note     nvJPEG unavailable ({e}); decoding on the CPU");
                    run_tile(gpu.as_ref(), sources, cfg, &bar)
                }
            }
        }
        #[cfg(feature = "wgpu")]
        Device::Wgpu(gpu) => run_tile(gpu.as_ref(), sources, cfg, &bar),
    };
    bar.finish_and_clear();
    result.with_context(|| format!("tiling into {}", cfg.out.display()))
}

fn print_tile_summary(s: &TileSummary, cfg: &TileConfig) {
    println!(
        "tiled    {} images into {} tiles from {} samples in {} shards ({} backend)",
        s.images, s.tiles, s.samples, s.shards, s.backend
    );
    println!(
        "speed    {:.1} images/s ({:.2} s)",
        s.images_per_second, s.seconds
    );
    println!(
        "output   {} (KEY.npy, index.jsonl, problems.jsonl, summary.json)",
        cfg.out.display()
    );
}

/// A progress bar on stderr; indicatif draws nothing when stderr is not a terminal.
pub(crate) fn progress_bar(len: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let template = if unit == "bytes" {
        "{elapsed_precise} [{bar:40}] {bytes}/{total_bytes} {msg} ({eta})"
    } else {
        "{elapsed_precise} [{bar:40}] {pos}/{len} {msg} ({eta})"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn cmd_demo(args: DemoArgs) -> Result<()> {
    let temp;
    let dir = match args.dir {
        Some(dir) => dir,
        None => {
            temp = tempdir()?;
            temp.0.clone()
        }
    };
    println!("== building a synthetic pool in {}", dir.display());
    let shards = vlmprep::demo::build_demo_pool(&dir.join("pool"))?;
    for shard in &shards {
        println!("   {}", shard.display());
    }
    let spec = format!("{}/pool/pool-{{000000..000001}}.tar", dir.display());
    println!("\n== vlmprep inspect {spec}");
    let sources = expand_inputs(std::slice::from_ref(&spec))?;
    let report = inspect(&sources, &|_| {});
    print_inspect(&report, 10);

    let args = TileArgs::parse_demo(dir.join("tiles"));
    let cfg = tile_config(&args)?;
    println!(
        "\n== vlmprep tile --input {spec} --mode internvl --out {}",
        cfg.out.display()
    );
    let device = cli::device::pick(args.device)?;
    let (summary, problems) = tile_with_progress(&sources, &cfg, &device)?;
    print_tile_summary(&summary, &cfg);
    print_problems(&problems, 10);
    let plan_dir = dir.join("plan");
    println!(
        "\n== vlmprep plan --input {spec} --mode internvl --tokens-per-pack 8192 --tiles-per-pack 24 \\\n   --balance-world 2 --out {}  (embedded demo tokenizer)",
        plan_dir.display()
    );
    let plan_args = PlanArgs::parse_demo(&spec, &plan_dir);
    let tokenizer = vlmprep::model::tokenizer::TextTokenizer::demo();
    let source = vlmprep::pipeline::plan::TokenizerSource::Demo;
    let settings = cli::packing::plan_settings(&plan_args, &source, &tokenizer)?;
    let (summary, problems) =
        cli::packing::plan_with_progress(&sources, &settings, &tokenizer, &plan_dir)?;
    cli::packing::print_plan_summary(&summary, &settings, &plan_dir);
    print_problems(&problems, 10);

    let packs_dir = dir.join("packs");
    println!(
        "\n== vlmprep pack --plan {} --materialize --dtype bf16 --out {}",
        plan_dir.display(),
        packs_dir.display()
    );
    let pack_args = PackArgs::parse_demo(&plan_dir, &packs_dir);
    let (summary, problems) = cli::packing::pack_with_progress(&pack_args)?;
    cli::packing::print_pack_summary(&summary, &packs_dir);
    print_problems(&problems, 10);

    let embed_dir = dir.join("embeds");
    println!(
        "\n== vlmprep embed --input {spec} --out {}  (built-in random-weight SigLIP)",
        embed_dir.display()
    );
    let embed_args = EmbedArgs::parse_demo(&spec, &embed_dir);
    let (summary, problems, demo_model) = cli::embed::embed_with_progress(&sources, &embed_args)?;
    cli::embed::print_embed_summary(&summary, &embed_dir, demo_model);
    print_problems(&problems, 10);
    cli::curate::demo_curate(&dir)?;
    println!(
        "\nThe problems above are deliberate: a truncated JPEG, an HTML page saved as .jpg and"
    );
    println!("captions without images show that bad input is named, counted and skipped while the");
    println!(
        "rest of the pool goes on. The truncated JPEG has a good header, so `plan` (headers only)"
    );
    println!(
        "packs it and `pack --materialize` leaves it out of its pack when it fails to decode."
    );
    Ok(())
}

impl PlanArgs {
    /// The demo's plan settings: `vlmprep plan` defaults with a tile limit and balancing.
    fn parse_demo(spec: &str, out: &std::path::Path) -> PlanArgs {
        let out = out.display().to_string();
        let cli = Cli::parse_from([
            "vlmprep",
            "plan",
            "--input",
            spec,
            "--out",
            &out,
            "--tokens-per-pack",
            "8192",
            "--tiles-per-pack",
            "24",
            "--balance-world",
            "2",
        ]);
        match cli.command {
            Command::Plan(args) => args,
            _ => unreachable!("the argument list names the plan command"),
        }
    }
}

impl PackArgs {
    /// The demo's pack settings: materialized bf16 tiles.
    fn parse_demo(plan: &std::path::Path, out: &std::path::Path) -> PackArgs {
        let (plan, out) = (plan.display().to_string(), out.display().to_string());
        let cli = Cli::parse_from([
            "vlmprep",
            "pack",
            "--plan",
            &plan,
            "--out",
            &out,
            "--materialize",
            "--dtype",
            "bf16",
        ]);
        match cli.command {
            Command::Pack(args) => args,
            _ => unreachable!("the argument list names the pack command"),
        }
    }
}

impl EmbedArgs {
    /// The demo's embed settings: the defaults of `vlmprep embed`, built-in model.
    fn parse_demo(spec: &str, out: &std::path::Path) -> EmbedArgs {
        let out = out.display().to_string();
        let cli = Cli::parse_from(["vlmprep", "embed", "--input", spec, "--out", &out]);
        match cli.command {
            Command::Embed(args) => args,
            _ => unreachable!("the argument list names the embed command"),
        }
    }
}

impl CurateArgs {
    /// The demo's curate settings: all tiers with the built-in model, best-score keep rule.
    pub(crate) fn parse_demo(spec: &str, out: &std::path::Path) -> CurateArgs {
        let out = out.display().to_string();
        let cli = Cli::parse_from([
            "vlmprep",
            "curate",
            "--input",
            spec,
            "--out",
            &out,
            "--demo-model",
            "--min-side",
            "64",
        ]);
        match cli.command {
            Command::Curate(args) => args,
            _ => unreachable!("the argument list names the curate command"),
        }
    }
}

impl TileArgs {
    /// The demo's tile settings: the defaults of `vlmprep tile`.
    fn parse_demo(out: PathBuf) -> TileArgs {
        let out = out.display().to_string();
        let cli = Cli::parse_from(["vlmprep", "tile", "--input", "unused", "--out", &out]);
        match cli.command {
            Command::Tile(args) => args,
            _ => unreachable!("the argument list names the tile command"),
        }
    }
}

/// A temporary folder removed on drop (std has none; tempfile is only a dev-dependency).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> Result<TempDir> {
    let path = std::env::temp_dir().join(format!("vlmprep-demo-{}", std::process::id()));
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok(TempDir(path))
}
