//! The `embed` subcommand: flags, the model choice, and the printed summary. The work is in
//! `vlmprep::pipeline::embed`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use vlmprep::backend::CpuBackend;
use vlmprep::image::decode::DecodeOptions;
use vlmprep::model::siglip::SiglipModel;
use vlmprep::model::siglip::demo_model::{DEMO_MODEL_WARNING, write_demo_model};
use vlmprep::pipeline::embed::{EmbedConfig, EmbedSummary, run_embed};
use vlmprep::problems::ProblemLog;
use vlmprep::shard::ShardSource;

use crate::cli::device::{Device, DeviceArg, pick};
use crate::{InputArgs, print_problems, progress_bar};

/// Flags of `vlmprep embed`.
#[derive(Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub inputs: InputArgs,
    /// A Hugging Face SigLIP folder (config.json, model.safetensors or its index,
    /// preprocessor_config.json, spiece.model or tokenizer.json). Without it, the built-in tiny
    /// random-weight model is used, whose scores mean nothing.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Output folder: image_embeds.npy, text_embeds.npy, scores.npy, keys.txt, embeds.parquet,
    /// problems.jsonl, summary.json.
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: PathBuf,
    /// Samples per model batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Where the model runs: auto picks CUDA when built in and a GPU is visible, else the CPU.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// Refuse images with more pixels than this, from the header alone (Pillow's limit).
    #[arg(long, default_value_t = 89_478_485)]
    pub max_image_pixels: u64,
}

pub fn cmd_embed(args: EmbedArgs) -> Result<()> {
    let sources = crate::sources(&args.inputs.input)?;
    let (summary, problems, demo) = embed_with_progress(&sources, &args)?;
    print_embed_summary(&summary, &args.out, demo);
    print_problems(&problems, 20);
    Ok(())
}

/// Loads the model (or the demo one), runs the pipeline under a progress bar; returns whether
/// the demo model was used.
pub fn embed_with_progress(
    sources: &[ShardSource],
    args: &EmbedArgs,
) -> Result<(EmbedSummary, ProblemLog, bool)> {
    let device = pick(args.device)?;
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let demo = args.model.is_none();
    let model_dir = match &args.model {
        Some(dir) => dir.clone(),
        None => {
            eprintln!("warning: {DEMO_MODEL_WARNING}");
            write_demo_model(&args.out)?
        }
    };
    let cfg = EmbedConfig {
        out: args.out.clone(),
        batch: args.batch,
        decode: DecodeOptions {
            max_pixels: args.max_image_pixels,
            ..DecodeOptions::default()
        },
    };
    let bar = progress_bar(0, "samples");
    bar.set_message("samples");
    let backend = device.describe();
    let loading = || format!("loading {}", model_dir.display());
    let result = match device {
        Device::Cpu => {
            let model = SiglipModel::load(&model_dir, CpuBackend).with_context(loading)?;
            run_embed(&model, &backend, sources, &cfg, &bar)
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(gpu) => {
            let ops = vlmprep::backend::cuda::tensor::CudaTensorOps::new(gpu)?;
            let model = SiglipModel::load(&model_dir, ops).with_context(loading)?;
            run_embed(&model, &backend, sources, &cfg, &bar)
        }
        #[cfg(feature = "wgpu")]
        Device::Wgpu(gpu) => {
            let ops = vlmprep::backend::wgpu::WgpuTensorOps::new(gpu);
            let model = SiglipModel::load(&model_dir, ops).with_context(loading)?;
            run_embed(&model, &backend, sources, &cfg, &bar)
        }
    };
    bar.finish_and_clear();
    let (summary, problems) =
        result.with_context(|| format!("embedding into {}", args.out.display()))?;
    Ok((summary, problems, demo))
}

pub fn print_embed_summary(s: &EmbedSummary, out: &std::path::Path, demo: bool) {
    println!(
        "embedded {} of {} samples from {} shards with {} ({} backend, dim {}, batch {})",
        s.embedded, s.samples, s.shards, s.model, s.backend, s.dim, s.batch
    );
    println!(
        "speed    {:.1} images/s ({:.2} s: decode+preprocess {:.2} s, image tower {:.2} s, text {:.2} s)",
        s.images_per_second,
        s.seconds,
        s.decode_seconds,
        s.image_tower_seconds,
        s.text_tower_seconds
    );
    if s.missing_captions > 0 {
        println!(
            "captions {} samples had none and were embedded with \"\"",
            s.missing_captions
        );
    }
    println!(
        "output   {} (image_embeds.npy, text_embeds.npy, scores.npy, keys.txt, embeds.parquet)",
        out.display()
    );
    if demo {
        println!("note     {DEMO_MODEL_WARNING}");
    }
}
