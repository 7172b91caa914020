//! `vlmprep serve`: flags of the sidecar server; plans the pool (header-only) into `--out`, then
//! serves this rank's packed batches over a Unix socket and a shared-memory ring.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use vlmprep::backend::CpuBackend;
use vlmprep::image::decode::DecodeOptions;
use vlmprep::pipeline::pack::IdsDtype;
use vlmprep::serve::{ServeConfig, ServeSummary, serve};

use crate::PixelArgs;
use crate::cli::device::{Device, DeviceArg, pick};
use crate::cli::packing::{
    IdsDtypeArg, PlanArgs, plan_settings, plan_tokenizer, plan_with_progress,
};
use crate::print_problems;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Pool, tiling, tokenizer and packing flags, as `vlmprep plan` (`--out` is the plan folder
    /// this server writes and serves from; `--seed` also seeds the per-epoch pack order).
    #[command(flatten)]
    pub plan: PlanArgs,
    #[command(flatten)]
    pub pixels: PixelArgs,
    /// This server's data-parallel rank.
    #[arg(long, default_value_t = 0)]
    pub rank: u64,
    /// Data-parallel world size: rank R gets the job's packs R, R+W, R+2W, ...
    #[arg(long, default_value_t = 1)]
    pub world_size: u64,
    /// Unix socket to listen on.
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// Batches materialized ahead (slots of the shared ring; memory = N × largest pack).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub prefetch: usize,
    /// Resume a job: a JSON list of the state_dict() of every rank of the job that stopped
    /// (any world size). Without it the job starts at its first pack.
    #[arg(long, value_name = "STATE")]
    pub resume: Option<PathBuf>,
    /// Epochs to serve (0: endless). Every epoch visits every pack once.
    #[arg(long, default_value_t = 1)]
    pub epochs: u64,
    /// Reshuffle packs every epoch with --seed (false: plan order every epoch).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub shuffle: bool,
    /// Keep serving new clients after the stream ended (default: exit once a client that was
    /// told the stream ended hangs up).
    #[arg(long)]
    pub linger: bool,
    /// Token id type of input_ids and labels.
    #[arg(long, value_enum, default_value_t = IdsDtypeArg::Int32)]
    pub ids_dtype: IdsDtypeArg,
    /// Where tiles are made: auto picks CUDA when built in and a GPU is visible, else the CPU.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
}

pub fn cmd_serve(args: ServeArgs) -> Result<()> {
    let sources = crate::sources(&args.plan.inputs.input)?;
    let (source, tokenizer) = plan_tokenizer(args.plan.tokenizer.as_deref())?;
    let settings = plan_settings(&args.plan, &source, &tokenizer)?;
    let (summary, problems) = plan_with_progress(&sources, &settings, &tokenizer, &args.plan.out)?;
    eprintln!(
        "vlmprep serve: rank {} of {}: planned {} samples into {} packs ({} problems)",
        args.rank,
        args.world_size,
        summary.samples,
        summary.packs,
        problems.len()
    );
    if !problems.is_empty() {
        print_problems(&problems, 20);
    }
    let cfg = ServeConfig {
        plan_dir: args.plan.out.clone(),
        socket: args.socket.clone(),
        rank: args.rank,
        world: args.world_size,
        prefetch: args.prefetch,
        seed: args.plan.seed,
        shuffle: args.shuffle,
        epochs: (args.epochs > 0).then_some(args.epochs),
        resume: args.resume.clone(),
        spec: args.pixels.spec(&settings.rule)?,
        decode: DecodeOptions {
            max_pixels: args.plan.tiling.max_image_pixels,
            ..DecodeOptions::default()
        },
        ids_dtype: match args.ids_dtype {
            IdsDtypeArg::Int32 => IdsDtype::I32,
            IdsDtypeArg::Int64 => IdsDtype::I64,
        },
        exit_at_end: !args.linger,
    };
    eprintln!(
        "vlmprep serve: listening on {} (prefetch {})",
        cfg.socket.display(),
        cfg.prefetch
    );
    let result: vlmprep::Result<ServeSummary> = match pick(args.device)? {
        Device::Cpu => serve(&CpuBackend, &cfg, &tokenizer),
        #[cfg(feature = "cuda")]
        Device::Cuda(gpu) => serve(gpu.as_ref(), &cfg, &tokenizer),
        #[cfg(feature = "wgpu")]
        Device::Wgpu(gpu) => serve(gpu.as_ref(), &cfg, &tokenizer),
    };
    let s = result.with_context(|| format!("serving on {}", cfg.socket.display()))?;
    eprintln!(
        "vlmprep serve: done: {} batches sent, {} samples skipped, {} connections, ring {} × {} bytes",
        s.batches_sent, s.samples_skipped, s.connections, s.slots, s.slot_bytes
    );
    Ok(())
}
