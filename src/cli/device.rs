//! `--device auto|cpu|cuda|wgpu`: picks the backend a subcommand runs on and says which, so a
//! user never wonders where the work went. Asking for one that is not there is a clear error.
//!
//! `auto` takes CUDA, else a hardware wgpu adapter, else the CPU: a software wgpu adapter
//! (lavapipe, llvmpipe, WARP) is slower than the CPU backend, so it runs only when asked for
//! by name (`--device wgpu`).

use anyhow::Result;
use clap::ValueEnum;

#[cfg(any(feature = "cuda", feature = "wgpu"))]
use std::sync::Arc;
#[cfg(feature = "cuda")]
use vlmprep::backend::cuda::CudaBackend;
use vlmprep::backend::wgpu::{AdapterChoice, WgpuBackend};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// CUDA when this build has it and a GPU is visible, else a hardware GPU through wgpu, else
    /// the CPU.
    Auto,
    /// The CPU backend (rayon + SIMD): always available.
    Cpu,
    /// NVIDIA GPU 0 through CUDA (builds with `--features cuda`).
    Cuda,
    /// The best Vulkan/Metal/DX12 adapter through wgpu, software ones included (builds with
    /// `--features wgpu`).
    Wgpu,
}

/// The backend a run uses.
pub enum Device {
    Cpu,
    #[cfg(feature = "cuda")]
    Cuda(Arc<CudaBackend>),
    #[cfg(feature = "wgpu")]
    Wgpu(Arc<WgpuBackend>),
}

impl Device {
    /// A name for summaries.
    pub fn describe(&self) -> String {
        match self {
            Device::Cpu => format!("cpu ({} threads)", rayon::current_num_threads()),
            #[cfg(feature = "cuda")]
            Device::Cuda(b) => b.device_name().to_string(),
            #[cfg(feature = "wgpu")]
            Device::Wgpu(b) => b.device_name().to_string(),
        }
    }
}

/// Resolves `--device`. `auto` prints what it picked, and why it passed over each GPU backend
/// that this build has.
pub fn pick(arg: DeviceArg) -> Result<Device> {
    match arg {
        DeviceArg::Cpu => Ok(Device::Cpu),
        DeviceArg::Wgpu => {
            let device = open_wgpu(AdapterChoice::Any)?;
            eprintln!("device   wgpu: {}", device.describe());
            Ok(device)
        }
        DeviceArg::Cuda => open_cuda(),
        DeviceArg::Auto => {
            let cuda = match open_cuda() {
                Ok(device) => {
                    eprintln!("device   auto: {}", device.describe());
                    return Ok(device);
                }
                Err(why) => why,
            };
            let wgpu = match open_wgpu(AdapterChoice::Hardware) {
                Ok(device) => {
                    eprintln!("device   auto: {}", device.describe());
                    return Ok(device);
                }
                Err(why) => why,
            };
            let mut why = Vec::new();
            if cfg!(feature = "cuda") {
                why.push(format!("{cuda:#}"));
            }
            if cfg!(feature = "wgpu") {
                why.push(format!("{wgpu:#}"));
            }
            if why.is_empty() {
                eprintln!("device   auto: using the CPU");
            } else {
                eprintln!("device   auto: using the CPU ({})", why.join("; "));
            }
            Ok(Device::Cpu)
        }
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
        Ok(_) => anyhow::bail!("cuda: not compiled into this build"),
    }
}

#[cfg(feature = "wgpu")]
fn open_wgpu(choice: AdapterChoice) -> Result<Device> {
    Ok(Device::Wgpu(Arc::new(WgpuBackend::new(choice)?)))
}

#[cfg(not(feature = "wgpu"))]
fn open_wgpu(choice: AdapterChoice) -> Result<Device> {
    // The stand-in's constructor always errors, saying how to build with wgpu.
    match WgpuBackend::new(choice) {
        Err(e) => Err(e.into()),
        Ok(_) => anyhow::bail!("wgpu: not compiled into this build"),
    }
}
