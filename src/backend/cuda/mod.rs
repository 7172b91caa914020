//! The CUDA backend (feature `cuda`): one device context and stream, kernels from `cuda/`
//! compiled by NVRTC at first use and cached per device, cuBLAS for the GEMMs, nvJPEG for decode.
//!
//! Everything CUDA is loaded at run time (cudarc's dynamic loading, libloading for nvJPEG), so a
//! `cuda` build starts on a machine without a driver and [`CudaBackend::new`] says what is
//! missing instead of crashing.

pub mod decode_tile;
pub mod download;
pub mod kernels;
pub mod nvjpeg;
pub mod nvrtc;
pub mod phash;
pub mod tensor;
pub mod tile;

use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream};

use crate::error::{Error, Result};
use kernels::KernelFamily;

/// An RGB8 image in device memory: interleaved, row-major, `3 × width` bytes per row, no
/// padding; already in display orientation (EXIF applied). What decode hands to tiling.
pub struct DeviceImage {
    /// `3 × width × height` bytes.
    pub data: CudaSlice<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// One CUDA device: its context, the stream all work of this backend is ordered on, a second
/// stream for tile downloads, and the kernel modules loaded so far.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// Tile batches are copied to the host on this stream, so a download runs while the next
    /// batch is decoded and tiled on `stream`. cudarc's event tracking (on by default) makes
    /// it wait for the kernels that wrote the batch, and the batch's free wait for the copy.
    download: Arc<CudaStream>,
    /// Pinned buffers the downloads are staged through.
    staging: download::Staging,
    arch: u32,
    name: String,
    modules: Mutex<Vec<(KernelFamily, Arc<CudaModule>)>>,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("name", &self.name)
            .field("arch", &self.arch)
            .finish()
    }
}

/// Maps any CUDA-side error into the crate's error, saying which call failed.
pub(crate) fn cuda_err(what: &str) -> impl FnOnce(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::cuda(format!("{what}: {e}"))
}

/// Whether the CUDA driver library can be loaded here (no device call is made).
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the driver library by its known names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

impl CudaBackend {
    /// Opens GPU `ordinal`. Errors (never panics) when the driver library is missing, no GPU is
    /// visible, or the context cannot be created.
    pub fn new(ordinal: usize) -> Result<CudaBackend> {
        if !driver_present() {
            return Err(Error::cuda(
                "no CUDA driver found (libcuda.so could not be loaded): install the NVIDIA \
                 driver, or use --device cpu",
            ));
        }
        let count = CudaContext::device_count().map_err(cuda_err("counting devices"))?;
        if count <= 0 {
            return Err(Error::cuda("the CUDA driver sees no GPU"));
        }
        if ordinal >= count as usize {
            return Err(Error::cuda(format!(
                "GPU {ordinal} asked for, but only {count} visible"
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(cuda_err("creating the context"))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(cuda_err("reading the compute capability"))?;
        let gpu = ctx.name().map_err(cuda_err("reading the device name"))?;
        let stream = ctx.new_stream().map_err(cuda_err("creating a stream"))?;
        let download = ctx.new_stream().map_err(cuda_err("creating a stream"))?;
        Ok(CudaBackend {
            ctx,
            stream,
            download,
            staging: download::Staging::new(),
            arch: (major * 10 + minor) as u32,
            name: format!("cuda:{ordinal} ({gpu}, sm_{major}{minor})"),
            modules: Mutex::new(Vec::new()),
        })
    }

    /// The device's name, as shown in summaries.
    pub fn device_name(&self) -> &str {
        &self.name
    }

    /// Compute capability as one number: 90 for sm_90.
    pub fn arch(&self) -> u32 {
        self.arch
    }

    /// The context (for allocating and binding).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every operation of this backend is queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits until all queued work is done; surfaces asynchronous kernel errors.
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(cuda_err("synchronizing the stream"))
    }

    /// Kernel `name` of `family`, compiling (or reading from the on-disk cache) and loading the
    /// family's module on first use.
    pub fn function(&self, family: KernelFamily, name: &str) -> Result<CudaFunction> {
        let module = self.module(family)?;
        module
            .load_function(name)
            .map_err(|e| Error::cuda(format!("kernel {name} in {}: {e}", family.file_name())))
    }

    fn module(&self, family: KernelFamily) -> Result<Arc<CudaModule>> {
        let mut modules = self
            .modules
            .lock()
            .map_err(|_| Error::cuda("kernel module cache poisoned by an earlier panic"))?;
        if let Some((_, m)) = modules.iter().find(|(f, _)| *f == family) {
            return Ok(m.clone());
        }
        let cubin = nvrtc::cached_cubin(family, self.arch)?;
        let module = self
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(cubin))
            .map_err(|e| Error::cuda(format!("loading {}: {e}", family.file_name())))?;
        modules.push((family, module.clone()));
        Ok(module)
    }
}
