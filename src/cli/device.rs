//! `--device auto|cpu|cuda|wgpu`: picks the backend a subcommand runs on and says which, so a
//! user never wonders where the work went. Asking for one that is not there is a clear error.

use anyhow::{Result, bail};
use clap::ValueEnum;

#[cfg(feature = "cuda")]
use std::sync::Arc;
#[cfg(feature = "cuda")]
use vlmprep::backend::cuda::CudaBackend;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// CUDA when this build has it and a GPU is visible, else the CPU.
    Auto,
    /// The CPU backend (rayon + SIMD): always available.
    Cpu,
    /// NVIDIA GPU 0 through CUDA (builds with `--features cuda`).
    Cuda,
    /// Any Vulkan/Metal/DX12 GPU through wgpu (not built yet: a later issue).
    Wgpu,
}

/// The backend a run uses.
pub enum Device {
    Cpu,
    #[cfg(feature = "cuda")]
    Cuda(Arc<CudaBackend>),
}

impl Device {
    /// A name for summaries.
    pub fn describe(&self) -> String {
        match self {
            Device::Cpu => format!("cpu ({} threads)", rayon::current_num_threads()),
            #[cfg(feature = "cuda")]
            Device::Cuda(b) => b.device_name().to_string(),
        }
    }
}

/// Resolves `--device`. `auto` prints what it picked and why when it falls back to the CPU.
pub fn pick(arg: DeviceArg) -> Result<Device> {
    match arg {
        DeviceArg::Cpu => Ok(Device::Cpu),
        DeviceArg::Wgpu => bail!(
            "--device wgpu is not available yet: the wgpu backend is separate, unfinished work \
             (use --device cpu or cuda)"
        ),
        DeviceArg::Cuda => open_cuda(),
        DeviceArg::Auto => match open_cuda() {
            Ok(device) => Ok(device),
            Err(why) => {
                if cfg!(feature = "cuda") {
                    eprintln!("device   auto: using the CPU ({why:#})");
                }
                Ok(Device::Cpu)
            }
        },
    }
}

#[cfg(feature = "cuda")]
fn open_cuda() -> Result<Device> {
    Ok(Device::Cuda(Arc::new(CudaBackend::new(0)?)))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda() -> Result<Device> {
    // The stand-in's constructor always errors, saying how to build with CUDA.
    match vlmprep::backend::cuda::CudaBackend::new(0) {
        Err(e) => Err(e.into()),
        Ok(_) => bail!("cuda: not compiled into this build"),
    }
}
