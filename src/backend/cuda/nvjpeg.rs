//! nvJPEG decode into [`DeviceImage`]s: the hardware JPEG engine (A100/H100/H200...) for the
//! baseline files it supports, nvJPEG's GPU-hybrid path for the rest (progressive, ...), and the
//! CPU decoder of `crate::image::decode` (uploaded) for what nvJPEG does not handle (CMYK/YCCK,
//! RGB-coded JPEGs, 12-bit, PNG, WebP) or fails on.
//!
//! cudarc has no nvJPEG binding, so the few entry points used are bound here with `libloading`
//! against the C API of `nvjpeg.h` (CUDA 12 and 13: the enum values and the `nvjpegImage_t`
//! layout below were checked against the headers of the `nvidia-nvjpeg` 13.3 and
//! `nvidia-nvjpeg-cu12` 12.4 wheels). The library is loaded at run time, so a missing
//! `libnvjpeg` is an [`Error::cuda`] from [`NvJpegDecoder::new`], never a crash.
//!
//! Routing is decided from the header alone ([`crate::image::probe`]), per image, and one image's
//! failure never fails another: a hardware batch that fails as a whole is retried image by image
//! on the hybrid path, and an image nvJPEG refuses is decoded on the CPU.

use std::ffi::{c_int, c_uint, c_void};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use super::kernels::KernelFamily;
use super::{CudaBackend, DeviceImage, cuda_err};
use crate::error::{Error, Result};
use crate::image::decode::{DecodeOptions, decode_with_header};
use crate::image::probe::{jpeg_has_eoi, probe};
use crate::image::{ChromaSubsampling, ImageFormat, ImageHeader};

// ---- the C API (nvjpeg.h) ----------------------------------------------------------------

/// `nvjpegStatus_t`; 0 is success. C enums are `int`-sized on every platform CUDA supports.
type Status = c_int;
/// Opaque `nvjpegHandle_t`.
type Handle = *mut c_void;
/// Opaque `nvjpegJpegState_t`.
type JpegState = *mut c_void;
/// Opaque `nvjpegJpegStream_t`.
type JpegStream = *mut c_void;
/// `cudaStream_t`, the same object as the driver's `CUstream`.
type Stream = *mut c_void;

const STATUS_SUCCESS: Status = 0;

/// `nvjpegBackend_t` values (nvjpeg.h, CUDA 12.4 and 13.3).
const BACKEND_DEFAULT: c_int = 0;
const BACKEND_HARDWARE: c_int = 3;

/// `nvjpegOutputFormat_t` values.
const OUTPUT_Y: c_int = 2;
const OUTPUT_RGBI: c_int = 5;

/// `libraryPropertyType` (library_types.h): MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL.
const MAJOR_VERSION: c_int = 0;
const MINOR_VERSION: c_int = 1;
const PATCH_LEVEL: c_int = 2;

/// `NVJPEG_FLAGS_UPSAMPLING_WITH_INTERPOLATION` (1 << 5): chroma upsampling by interpolation
/// instead of replication, closer to libjpeg's "fancy upsampling" that Pillow (the CPU
/// reference) uses. Older libraries may refuse it; creation then retries without flags.
const FLAGS_UPSAMPLING_WITH_INTERPOLATION: c_uint = 1 << 5;

/// `NVJPEG_MAX_COMPONENT`.
const MAX_COMPONENT: usize = 4;

/// `nvjpegImage_t`: per-plane device pointers and pitches. `pitch` is `size_t` in CUDA 12 and
/// 13 (it was `unsigned int` in CUDA 11, which is why libraries older than 12 are refused).
#[repr(C)]
#[derive(Clone, Copy)]
struct NvImage {
    channel: [*mut u8; MAX_COMPONENT],
    pitch: [usize; MAX_COMPONENT],
}

impl NvImage {
    /// One interleaved or single plane at `ptr` with `pitch` bytes per row.
    fn single(ptr: u64, pitch: usize) -> NvImage {
        let mut img = NvImage {
            channel: [std::ptr::null_mut(); MAX_COMPONENT],
            pitch: [0; MAX_COMPONENT],
        };
        img.channel[0] = ptr as *mut u8;
        img.pitch[0] = pitch;
        img
    }
}

/// The nvJPEG entry points used, resolved once from the loaded library.
struct Api {
    get_property: unsafe extern "C" fn(c_int, *mut c_int) -> Status,
    create_ex: unsafe extern "C" fn(c_int, *mut c_void, *mut c_void, c_uint, *mut Handle) -> Status,
    destroy: unsafe extern "C" fn(Handle) -> Status,
    state_create: unsafe extern "C" fn(Handle, *mut JpegState) -> Status,
    state_destroy: unsafe extern "C" fn(JpegState) -> Status,
    get_image_info: unsafe extern "C" fn(
        Handle,
        *const u8,
        usize,
        *mut c_int,
        *mut c_int,
        *mut c_int,
        *mut c_int,
    ) -> Status,
    decode: unsafe extern "C" fn(
        Handle,
        JpegState,
        *const u8,
        usize,
        c_int,
        *mut NvImage,
        Stream,
    ) -> Status,
    batched_initialize: unsafe extern "C" fn(Handle, JpegState, c_int, c_int, c_int) -> Status,
    decode_batched: unsafe extern "C" fn(
        Handle,
        JpegState,
        *const *const u8,
        *const usize,
        *mut NvImage,
        Stream,
    ) -> Status,
    stream_create: unsafe extern "C" fn(Handle, *mut JpegStream) -> Status,
    stream_destroy: unsafe extern "C" fn(JpegStream) -> Status,
    stream_parse:
        unsafe extern "C" fn(Handle, *const u8, usize, c_int, c_int, JpegStream) -> Status,
    batched_supported: unsafe extern "C" fn(Handle, JpegStream, *mut c_int) -> Status,
}

/// The loaded library: the `Api` function pointers stay valid as long as `_lib` is alive, and
/// `_lib` lives in a process-wide `OnceLock` that is never dropped.
struct NvJpegLib {
    api: Api,
    /// The name it was loaded by, for messages.
    name: &'static str,
    version: (i32, i32, i32),
    _lib: libloading::Library,
}

/// Library names tried in order: CUDA 13, CUDA 12, then whatever the unversioned name is (a
/// toolkit install); the version is checked after loading.
const LIBRARY_NAMES: [&str; 3] = ["libnvjpeg.so.13", "libnvjpeg.so.12", "libnvjpeg.so"];

/// The process-wide library (or why it could not be loaded), loaded on first use.
fn library() -> Result<&'static NvJpegLib> {
    static LIB: OnceLock<std::result::Result<NvJpegLib, String>> = OnceLock::new();
    LIB.get_or_init(load_library)
        .as_ref()
        .map_err(|e| Error::cuda(e.clone()))
}

fn load_library() -> std::result::Result<NvJpegLib, String> {
    let mut tried = Vec::new();
    for name in LIBRARY_NAMES {
        // SAFETY: loading nvJPEG runs only its initialisers, which have no preconditions.
        match unsafe { libloading::Library::new(name) } {
            Ok(lib) => return bind(lib, name),
            Err(e) => tried.push(format!("{name}: {e}")),
        }
    }
    Err(format!(
        "nvJPEG not found ({}): install the CUDA toolkit's libnvjpeg or the PyPI wheel \
         nvidia-nvjpeg and put its lib folder on LD_LIBRARY_PATH",
        tried.join("; ")
    ))
}

/// Resolves every symbol of [`Api`] in `lib` and checks the library version.
fn bind(lib: libloading::Library, name: &'static str) -> std::result::Result<NvJpegLib, String> {
    macro_rules! sym {
        ($s:literal) => {
            // SAFETY: the symbol is declared in nvjpeg.h with exactly the signature of the
            // `Api` field it is assigned to; the copied pointer is used only while `lib` is
            // alive (both move into the same `NvJpegLib`).
            unsafe { symbol(&lib, name, $s) }?
        };
    }
    let api = Api {
        get_property: sym!("nvjpegGetProperty"),
        create_ex: sym!("nvjpegCreateEx"),
        destroy: sym!("nvjpegDestroy"),
        state_create: sym!("nvjpegJpegStateCreate"),
        state_destroy: sym!("nvjpegJpegStateDestroy"),
        get_image_info: sym!("nvjpegGetImageInfo"),
        decode: sym!("nvjpegDecode"),
        batched_initialize: sym!("nvjpegDecodeBatchedInitialize"),
        decode_batched: sym!("nvjpegDecodeBatched"),
        stream_create: sym!("nvjpegJpegStreamCreate"),
        stream_destroy: sym!("nvjpegJpegStreamDestroy"),
        stream_parse: sym!("nvjpegJpegStreamParse"),
        batched_supported: sym!("nvjpegDecodeBatchedSupported"),
    };
    let prop = |p: c_int| -> std::result::Result<i32, String> {
        let mut v: c_int = 0;
        // SAFETY: nvjpegGetProperty writes one int through a valid pointer; no handle needed.
        let st = unsafe { (api.get_property)(p, &mut v) };
        if st == STATUS_SUCCESS {
            Ok(v)
        } else {
            Err(format!(
                "{name}: nvjpegGetProperty failed ({})",
                status_name(st)
            ))
        }
    };
    let version = (
        prop(MAJOR_VERSION)?,
        prop(MINOR_VERSION)?,
        prop(PATCH_LEVEL)?,
    );
    if version.0 < 12 {
        // CUDA 11's nvjpegImage_t has 32-bit pitches: binding it with ours would corrupt memory.
        return Err(format!(
            "{name} is nvJPEG {}.{}.{}; CUDA 12 or newer is needed",
            version.0, version.1, version.2
        ));
    }
    Ok(NvJpegLib {
        api,
        name,
        version,
        _lib: lib,
    })
}

/// Copies the function pointer `sym` out of `lib`.
///
/// # Safety
/// `T` must be the exact function-pointer type of the C symbol, and the pointer must not be
/// called after `lib` is unloaded.
unsafe fn symbol<T: Copy>(
    lib: &libloading::Library,
    lib_name: &str,
    sym: &str,
) -> std::result::Result<T, String> {
    // SAFETY: forwarded to the caller (see above).
    unsafe { lib.get::<T>(sym) }
        .map(|s| *s)
        .map_err(|e| format!("{lib_name}: symbol {sym}: {e}"))
}

/// Loads nvJPEG and resolves every symbol this module uses (no GPU needed); returns the library
/// name and version, e.g. `libnvjpeg.so.13 (nvJPEG 13.3.2)`.
pub fn probe_library() -> Result<String> {
    let lib = library()?;
    let (a, b, c) = lib.version;
    Ok(format!("{} (nvJPEG {a}.{b}.{c})", lib.name))
}

/// The `nvjpegStatus_t` names, for messages.
fn status_name(st: Status) -> &'static str {
    match st {
        0 => "NVJPEG_STATUS_SUCCESS",
        1 => "NVJPEG_STATUS_NOT_INITIALIZED",
        2 => "NVJPEG_STATUS_INVALID_PARAMETER",
        3 => "NVJPEG_STATUS_BAD_JPEG",
        4 => "NVJPEG_STATUS_JPEG_NOT_SUPPORTED",
        5 => "NVJPEG_STATUS_ALLOCATOR_FAILURE",
        6 => "NVJPEG_STATUS_EXECUTION_FAILED",
        7 => "NVJPEG_STATUS_ARCH_MISMATCH",
        8 => "NVJPEG_STATUS_INTERNAL_ERROR",
        9 => "NVJPEG_STATUS_IMPLEMENTATION_NOT_SUPPORTED",
        10 => "NVJPEG_STATUS_INCOMPLETE_BITSTREAM",
        _ => "unknown nvJPEG status",
    }
}

/// `Ok` for success, else an [`Error::cuda`] naming the call.
fn check(st: Status, what: &str) -> Result<()> {
    if st == STATUS_SUCCESS {
        Ok(())
    } else {
        Err(Error::cuda(format!("{what}: {} ({st})", status_name(st))))
    }
}

// ---- the decoder ---------------------------------------------------------------------------

/// Which decoder produced an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeRoute {
    /// The GPU's hardware JPEG engine (nvJPEG `NVJPEG_BACKEND_HARDWARE`, batched).
    Hardware,
    /// nvJPEG's default backend (CPU Huffman decode, GPU IDCT and colour conversion).
    GpuHybrid,
    /// The CPU decoder, then uploaded.
    Cpu,
}

/// One nvJPEG handle with the per-handle objects that are not thread-safe.
struct Engine {
    handle: Handle,
    state: JpegState,
    /// Parsed-header object for `nvjpegDecodeBatchedSupported` (hardware engine only).
    stream: JpegStream,
}

impl Engine {
    /// Creates a handle for `backend` (with interpolated chroma upsampling when the library
    /// accepts it) and its decode state.
    fn new(api: &Api, backend: c_int, with_stream: bool) -> Result<Engine> {
        let mut handle: Handle = std::ptr::null_mut();
        // SAFETY: null allocators select nvJPEG's defaults; `handle` is a valid out-pointer.
        let mut st = unsafe {
            (api.create_ex)(
                backend,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                FLAGS_UPSAMPLING_WITH_INTERPOLATION,
                &mut handle,
            )
        };
        if st != STATUS_SUCCESS {
            // A library (or backend) that does not take the flag: plain replication then.
            // SAFETY: as above.
            st = unsafe {
                (api.create_ex)(
                    backend,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    0,
                    &mut handle,
                )
            };
        }
        check(st, "nvjpegCreateEx")?;
        let mut engine = Engine {
            handle,
            state: std::ptr::null_mut(),
            stream: std::ptr::null_mut(),
        };
        // From here on `engine`'s Drop (via `free`) releases whatever was created.
        // SAFETY: `handle` was just created; `state` is a valid out-pointer.
        let st = unsafe { (api.state_create)(engine.handle, &mut engine.state) };
        if let Err(e) = check(st, "nvjpegJpegStateCreate") {
            engine.free(api);
            return Err(e);
        }
        if with_stream {
            // SAFETY: as above.
            let st = unsafe { (api.stream_create)(engine.handle, &mut engine.stream) };
            if let Err(e) = check(st, "nvjpegJpegStreamCreate") {
                engine.free(api);
                return Err(e);
            }
        }
        Ok(engine)
    }

    /// Destroys the objects in reverse order of creation; each pointer is nulled so a second
    /// call is harmless.
    fn free(&mut self, api: &Api) {
        // SAFETY: each object was created by this library and is destroyed once (nulled after);
        // no decode is in flight (callers synchronize the stream before returning).
        unsafe {
            if !self.stream.is_null() {
                (api.stream_destroy)(self.stream);
                self.stream = std::ptr::null_mut();
            }
            if !self.state.is_null() {
                (api.state_destroy)(self.state);
                self.state = std::ptr::null_mut();
            }
            if !self.handle.is_null() {
                (api.destroy)(self.handle);
                self.handle = std::ptr::null_mut();
            }
        }
    }
}

/// Everything a decode call mutates, behind one lock: nvJPEG states are not thread-safe.
struct Engines {
    hardware: Option<Engine>,
    hybrid: Engine,
    /// Bresenham accumulator for [`NvJpegDecoder::hardware_share`], kept across batches so a
    /// share of 0.5 alternates even with batches of one.
    share_acc: f32,
}

/// How one image will be decoded, from its header.
enum Plan {
    Hardware,
    Hybrid,
    Cpu,
}

/// nvJPEG decoding on one [`CudaBackend`]'s stream. See the module docs for the routing.
pub struct NvJpegDecoder {
    backend: Arc<CudaBackend>,
    lib: &'static NvJpegLib,
    engines: Mutex<Engines>,
    hardware_error: Option<String>,
    hardware_share: f32,
}

// SAFETY: the raw nvJPEG pointers are only used under the `engines` mutex (nvJPEG handles may be
// used from any thread; the states and streams, which may not be used concurrently, are
// serialized by that lock), and the library itself is process-wide.
unsafe impl Send for NvJpegDecoder {}
// SAFETY: as for Send: every use of the pointers goes through the mutex.
unsafe impl Sync for NvJpegDecoder {}

impl std::fmt::Debug for NvJpegDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvJpegDecoder")
            .field("library", &self.lib.name)
            .field("hardware", &self.hardware_available())
            .field("hardware_share", &self.hardware_share)
            .finish()
    }
}

impl NvJpegDecoder {
    /// Loads nvJPEG and creates its handles on `backend`'s device. With `hardware`, also tries
    /// the hardware engine; GPUs without one refuse that handle, which is recorded (see
    /// [`hardware_error`](Self::hardware_error)) and decoding goes on without it.
    pub fn new(backend: Arc<CudaBackend>, hardware: bool) -> Result<Self> {
        let lib = library()?;
        // nvJPEG works through the CUDA runtime, which uses the thread's current context: make
        // it the backend's (cudarc uses the device's primary context, as the runtime does).
        backend
            .context()
            .bind_to_thread()
            .map_err(cuda_err("binding the context for nvJPEG"))?;
        let hybrid = Engine::new(&lib.api, BACKEND_DEFAULT, false)?;
        let (hw, hardware_error) = if hardware {
            match Engine::new(&lib.api, BACKEND_HARDWARE, true) {
                Ok(e) => (Some(e), None),
                Err(e) => (
                    None,
                    Some(format!("hardware JPEG decoder unavailable: {e}")),
                ),
            }
        } else {
            (None, Some("hardware JPEG decoder not requested".to_owned()))
        };
        Ok(NvJpegDecoder {
            backend,
            lib,
            engines: Mutex::new(Engines {
                hardware: hw,
                hybrid,
                share_acc: 0.0,
            }),
            hardware_error,
            hardware_share: 1.0,
        })
    }

    /// Whether the hardware JPEG engine is in use.
    pub fn hardware_available(&self) -> bool {
        self.hardware_error.is_none()
    }

    /// Why the hardware engine is not in use (`None` when it is).
    pub fn hardware_error(&self) -> Option<&str> {
        self.hardware_error.as_deref()
    }

    /// The fraction of hardware-eligible images sent to the hardware engine (the rest take the
    /// hybrid path, so both run; DALI's `hw_decoder_load`).
    pub fn hardware_share(&self) -> f32 {
        self.hardware_share
    }

    /// Sets [`hardware_share`](Self::hardware_share), clamped to 0..=1 (NaN means 1).
    pub fn set_hardware_share(&mut self, share: f32) {
        self.hardware_share = if share.is_nan() {
            1.0
        } else {
            share.clamp(0.0, 1.0)
        };
    }

    /// The library name and version in use.
    pub fn library(&self) -> String {
        let (a, b, c) = self.lib.version;
        format!("{} (nvJPEG {a}.{b}.{c})", self.lib.name)
    }

    /// Decodes every image (JPEG, PNG or WebP) to an RGB8 [`DeviceImage`] in display
    /// orientation, with the route it took. Results are in input order, and one image's error
    /// does not affect the others. Images with more than `max_pixels` stored pixels are refused
    /// from the header. Returns after the stream has finished the work.
    pub fn decode_batch(
        &self,
        jpegs: &[&[u8]],
        max_pixels: u64,
    ) -> Vec<Result<(DeviceImage, DecodeRoute)>> {
        let mut out: Vec<Option<Result<(DeviceImage, DecodeRoute)>>> =
            (0..jpegs.len()).map(|_| None).collect();
        if let Err(e) = self
            .backend
            .context()
            .bind_to_thread()
            .map_err(cuda_err("binding the context for nvJPEG"))
        {
            return jpegs.iter().map(|_| Err(e.clone_cuda())).collect();
        }
        let mut engines = match self.engines.lock() {
            Ok(g) => g,
            // A panic mid-decode leaves nvJPEG state unknown; refuse rather than guess.
            Err(_) => {
                return jpegs
                    .iter()
                    .map(|_| Err(Error::cuda("nvJPEG decoder poisoned by an earlier panic")))
                    .collect();
            }
        };
        let engines = &mut *engines;

        // Plan every image from its header.
        let mut headers: Vec<Option<ImageHeader>> = Vec::with_capacity(jpegs.len());
        let mut hw_color = Vec::new();
        let mut hw_gray = Vec::new();
        let mut hybrid = Vec::new();
        let mut cpu = Vec::new();
        for (i, data) in jpegs.iter().enumerate() {
            let header = match probe(data) {
                Ok(h) => h,
                Err(e) => {
                    out[i] = Some(Err(e));
                    headers.push(None);
                    continue;
                }
            };
            if header.pixels() > max_pixels {
                out[i] = Some(Err(Error::TooManyPixels {
                    width: header.width,
                    height: header.height,
                    limit: max_pixels,
                }));
                headers.push(None);
                continue;
            }
            if header.format == ImageFormat::Jpeg && !jpeg_has_eoi(data) {
                // The CPU decoder's rule (Pillow's "image file is truncated"); nvJPEG would
                // otherwise hand back a partly gray image.
                out[i] = Some(Err(Error::Decode {
                    format: "jpeg",
                    reason: format!(
                        "image file is truncated: no EOI marker in {} bytes",
                        data.len()
                    ),
                }));
                headers.push(None);
                continue;
            }
            match self.plan(engines, data, &header) {
                Plan::Hardware if header.components == 1 => hw_gray.push(i),
                Plan::Hardware => hw_color.push(i),
                Plan::Hybrid => hybrid.push(i),
                Plan::Cpu => cpu.push(i),
            }
            headers.push(Some(header));
        }

        // Hardware batches (colour and gray need different output formats); whatever they do
        // not produce falls to the hybrid path.
        for (group, gray) in [(&hw_color, false), (&hw_gray, true)] {
            if group.is_empty() {
                continue;
            }
            let hw = engines
                .hardware
                .as_ref()
                .expect("planned for hardware only when the engine exists");
            let results = self.hardware_batch(hw, jpegs, &headers, group, gray);
            for (&i, r) in group.iter().zip(results) {
                match r {
                    Ok(img) => out[i] = Some(Ok((img, DecodeRoute::Hardware))),
                    Err(_) => hybrid.push(i),
                }
            }
        }

        // Hybrid, one at a time; refusals and failures go to the CPU.
        for &i in &hybrid {
            let header = headers[i].as_ref().expect("planned images have headers");
            match self.hybrid_one(&engines.hybrid, jpegs[i], header) {
                Ok(img) => out[i] = Some(Ok((img, DecodeRoute::GpuHybrid))),
                Err(_) => cpu.push(i),
            }
        }

        for &i in &cpu {
            let header = headers[i].as_ref().expect("planned images have headers");
            out[i] = Some(self.cpu_one(jpegs[i], header, max_pixels));
        }

        // Everything above is queued on the stream; the inputs are borrowed only for this call
        // and asynchronous errors must surface here, so wait for it.
        if let Err(e) = self.backend.synchronize() {
            return jpegs.iter().map(|_| Err(e.clone_cuda())).collect();
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::cuda("image was not routed (bug)"))))
            .collect()
    }

    /// Chooses the route of one image from its header (and, for the hardware engine, nvJPEG's
    /// own check of the parsed stream).
    fn plan(&self, engines: &mut Engines, data: &[u8], h: &ImageHeader) -> Plan {
        if h.format != ImageFormat::Jpeg {
            return Plan::Cpu;
        }
        // 4 components (CMYK/YCCK): nvJPEG's default backend cannot, and the CPU decoder
        // follows Pillow's inversion conventions. 3 components stored as RGB (Adobe transform
        // 0): nvJPEG would apply a YCbCr conversion. 12-bit: not 8-bit output.
        if h.components == 4
            || (h.components == 3 && h.adobe_transform == Some(0))
            || h.bit_depth != 8
        {
            return Plan::Cpu;
        }
        let hw_shape = !h.progressive
            && matches!(
                h.subsampling,
                Some(
                    ChromaSubsampling::Gray
                        | ChromaSubsampling::S444
                        | ChromaSubsampling::S422
                        | ChromaSubsampling::S420
                        | ChromaSubsampling::S440
                )
            );
        let Some(hw) = engines.hardware.as_ref() else {
            return Plan::Hybrid;
        };
        if !hw_shape || !self.hardware_supports(hw, data) {
            return Plan::Hybrid;
        }
        // Bresenham split: send `share` of the eligible images to the engine.
        engines.share_acc += self.hardware_share;
        if engines.share_acc >= 1.0 - 1e-6 {
            engines.share_acc -= 1.0;
            Plan::Hardware
        } else {
            Plan::Hybrid
        }
    }

    /// nvJPEG's own verdict on whether the hardware engine decodes this stream.
    fn hardware_supports(&self, hw: &Engine, data: &[u8]) -> bool {
        let api = &self.lib.api;
        // SAFETY: `data` is valid for its length during the call; the stream object belongs to
        // `hw`, used under the engines lock. save_metadata = save_stream = 0: only the header
        // is needed.
        let st =
            unsafe { (api.stream_parse)(hw.handle, data.as_ptr(), data.len(), 0, 0, hw.stream) };
        if st != STATUS_SUCCESS {
            return false;
        }
        let mut unsupported: c_int = 1;
        // SAFETY: the stream was just parsed; `unsupported` is a valid out-pointer.
        let st = unsafe { (api.batched_supported)(hw.handle, hw.stream, &mut unsupported) };
        // nvjpeg.h: "sets is_supported value to 0 if decoder is capable to handle jpeg_stream".
        st == STATUS_SUCCESS && unsupported == 0
    }

    /// Width and height nvJPEG reads from the stream, checked against the probe (the pipeline
    /// plans from the probe, so a disagreement must not produce a differently sized image).
    fn checked_size(&self, handle: Handle, data: &[u8], h: &ImageHeader) -> Result<()> {
        let api = &self.lib.api;
        let (mut n, mut ss): (c_int, c_int) = (0, 0);
        let mut widths: [c_int; MAX_COMPONENT] = [0; MAX_COMPONENT];
        let mut heights: [c_int; MAX_COMPONENT] = [0; MAX_COMPONENT];
        // SAFETY: `data` is valid for its length; the out-pointers point at 4-int arrays as
        // nvjpegGetImageInfo requires (NVJPEG_MAX_COMPONENT entries).
        let st = unsafe {
            (api.get_image_info)(
                handle,
                data.as_ptr(),
                data.len(),
                &mut n,
                &mut ss,
                widths.as_mut_ptr(),
                heights.as_mut_ptr(),
            )
        };
        check(st, "nvjpegGetImageInfo")?;
        if i64::from(widths[0]) != i64::from(h.width)
            || i64::from(heights[0]) != i64::from(h.height)
        {
            return Err(Error::cuda(format!(
                "nvJPEG reads {}x{} but the header says {}x{}",
                widths[0], heights[0], h.width, h.height
            )));
        }
        Ok(())
    }

    /// Allocates the nvJPEG output for one image: packed RGB, or one luma plane for gray.
    fn alloc_output(&self, h: &ImageHeader, gray: bool) -> Result<CudaSlice<u8>> {
        let n = h.pixels() as usize * if gray { 1 } else { 3 };
        // SAFETY: nvJPEG (or the kernels after it) writes every byte before anything reads it;
        // on a failed decode the buffer is dropped unread.
        unsafe { self.backend.stream().alloc::<u8>(n) }
            .map_err(cuda_err("allocating decode output"))
    }

    /// Decodes `group` (indices into `jpegs`) in one hardware batch. Returns one result per
    /// group entry; a failure of the batch call as a whole fails every entry (the caller then
    /// retries each on the hybrid path).
    fn hardware_batch(
        &self,
        hw: &Engine,
        jpegs: &[&[u8]],
        headers: &[Option<ImageHeader>],
        group: &[usize],
        gray: bool,
    ) -> Vec<Result<DeviceImage>> {
        let fail = |e: &Error| -> Vec<Result<DeviceImage>> {
            group.iter().map(|_| Err(e.clone_cuda())).collect()
        };
        let api = &self.lib.api;
        let stream = self.backend.stream();
        let mut bufs = Vec::with_capacity(group.len());
        for &i in group {
            let h = headers[i].as_ref().expect("planned images have headers");
            if let Err(e) = self.checked_size(hw.handle, jpegs[i], h) {
                return fail(&e);
            }
            match self.alloc_output(h, gray) {
                Ok(b) => bufs.push(b),
                Err(e) => return fail(&e),
            }
        }
        let fmt = if gray { OUTPUT_Y } else { OUTPUT_RGBI };
        let batch = match c_int::try_from(group.len()) {
            Ok(b) => b,
            Err(_) => return fail(&Error::cuda("hardware batch too large")),
        };
        // SAFETY: handle and state belong to `hw`, used under the engines lock.
        let st = unsafe { (api.batched_initialize)(hw.handle, hw.state, batch, 1, fmt) };
        if let Err(e) = check(st, "nvjpegDecodeBatchedInitialize") {
            return fail(&e);
        }
        let ptrs: Vec<*const u8> = group.iter().map(|&i| jpegs[i].as_ptr()).collect();
        let lens: Vec<usize> = group.iter().map(|&i| jpegs[i].len()).collect();
        let mut dests = Vec::with_capacity(group.len());
        // The SyncOnDrop guards must outlive the enqueue of the decode that writes the buffers.
        let mut guards = Vec::with_capacity(group.len());
        for (buf, &i) in bufs.iter_mut().zip(group) {
            let h = headers[i].as_ref().expect("planned images have headers");
            let pitch = h.width as usize * if gray { 1 } else { 3 };
            let (ptr, guard) = cudarc::driver::DevicePtrMut::device_ptr_mut(buf, stream);
            dests.push(NvImage::single(ptr, pitch));
            guards.push(guard);
        }
        // SAFETY: `ptrs`/`lens`/`dests` hold `batch` entries each; each destination is a device
        // buffer of height × pitch bytes on this context; inputs stay borrowed until the stream
        // is synchronized at the end of `decode_batch`.
        let st = unsafe {
            (api.decode_batched)(
                hw.handle,
                hw.state,
                ptrs.as_ptr(),
                lens.as_ptr(),
                dests.as_mut_ptr(),
                stream.cu_stream() as Stream,
            )
        };
        drop(guards);
        if let Err(e) = check(st, "nvjpegDecodeBatched (hardware)") {
            return fail(&e);
        }
        // The gray batch re-initializes the same state; let this batch finish with it first.
        if let Err(e) = self.backend.synchronize() {
            return fail(&e);
        }
        bufs.into_iter()
            .zip(group)
            .map(|(buf, &i)| {
                let h = headers[i].as_ref().expect("planned images have headers");
                self.finish(buf, h, gray)
            })
            .collect()
    }

    /// One image through `nvjpegDecode` on the hybrid handle.
    fn hybrid_one(&self, eng: &Engine, data: &[u8], h: &ImageHeader) -> Result<DeviceImage> {
        let api = &self.lib.api;
        let stream = self.backend.stream();
        self.checked_size(eng.handle, data, h)?;
        let gray = h.components == 1;
        let mut buf = self.alloc_output(h, gray)?;
        let pitch = h.width as usize * if gray { 1 } else { 3 };
        let st = {
            let (ptr, _guard) = cudarc::driver::DevicePtrMut::device_ptr_mut(&mut buf, stream);
            let mut dest = NvImage::single(ptr, pitch);
            // SAFETY: handle/state belong to `eng`, used under the engines lock; `dest` points
            // at a device buffer of height × pitch bytes; `data` stays borrowed until the stream
            // is synchronized in `decode_batch`.
            unsafe {
                (api.decode)(
                    eng.handle,
                    eng.state,
                    data.as_ptr(),
                    data.len(),
                    if gray { OUTPUT_Y } else { OUTPUT_RGBI },
                    &mut dest,
                    stream.cu_stream() as Stream,
                )
            }
        };
        check(st, "nvjpegDecode")?;
        // The next nvjpegDecode on this state refills its pinned and device staging buffers;
        // wait until this image's GPU phase has consumed them. (Costs a little overlap; the
        // decoupled API with two states would avoid it.)
        self.backend.synchronize()?;
        self.finish(buf, h, gray)
    }

    /// CPU decode (with orientation), uploaded.
    fn cpu_one(
        &self,
        data: &[u8],
        h: &ImageHeader,
        max_pixels: u64,
    ) -> Result<(DeviceImage, DecodeRoute)> {
        let opts = DecodeOptions {
            max_pixels,
            apply_orientation: true,
            min_size: None,
        };
        let img = decode_with_header(data, h, &opts)?.image;
        let dev = self
            .backend
            .stream()
            .clone_htod(&img.data)
            .map_err(cuda_err("uploading a CPU-decoded image"))?;
        Ok((
            DeviceImage {
                data: dev,
                width: img.width,
                height: img.height,
            },
            DecodeRoute::Cpu,
        ))
    }

    /// From nvJPEG's output (RGB, or luma when `gray`) in stored orientation to the packed RGB
    /// image in display orientation.
    fn finish(&self, buf: CudaSlice<u8>, h: &ImageHeader, gray: bool) -> Result<DeviceImage> {
        let (w, ht) = (h.width, h.height);
        let rgb = if gray {
            let mut rgb = self.alloc_output(h, false)?;
            let f = self
                .backend
                .function(KernelFamily::Decode, "gray_to_rgb8")?;
            let mut b = self.backend.stream().launch_builder(&f);
            b.arg(&buf).arg(&w).arg(&mut rgb).arg(&w).arg(&ht);
            // SAFETY: gray_to_rgb8(src, pitch, dst, w, h): `buf` holds h rows of `w` (= pitch)
            // bytes, `rgb` 3·w·h bytes; the grid covers w × h and the kernel bounds-checks.
            unsafe { b.launch(grid_2d(w, ht)) }.map_err(cuda_err("launching gray_to_rgb8"))?;
            rgb
        } else {
            buf
        };
        let o = h.orientation;
        if !(2..=8).contains(&o) {
            return Ok(DeviceImage {
                data: rgb,
                width: w,
                height: ht,
            });
        }
        let (ow, oh) = h.oriented_size();
        let mut out = self.alloc_output(h, false)?;
        let f = self.backend.function(KernelFamily::Decode, "orient_rgb8")?;
        let o = c_int::from(o);
        let mut b = self.backend.stream().launch_builder(&f);
        b.arg(&rgb).arg(&mut out).arg(&w).arg(&ht).arg(&o);
        // SAFETY: orient_rgb8(src, dst, w, h, orientation): both buffers hold 3·w·h bytes; the
        // grid covers the oriented size ow × oh and the kernel bounds-checks.
        unsafe { b.launch(grid_2d(ow, oh)) }.map_err(cuda_err("launching orient_rgb8"))?;
        Ok(DeviceImage {
            data: out,
            width: ow,
            height: oh,
        })
    }
}

/// 16 × 16 blocks covering a `w × h` pixel grid.
fn grid_2d(w: u32, h: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (w.div_ceil(16).max(1), h.div_ceil(16).max(1), 1),
        block_dim: (16, 16, 1),
        shared_mem_bytes: 0,
    }
}

impl Drop for NvJpegDecoder {
    fn drop(&mut self) {
        // Outstanding decodes must finish before their state is destroyed; decode_batch already
        // synchronizes, so this is cheap, and an error here has nowhere to go.
        let _ = self.backend.context().bind_to_thread();
        let _ = self.backend.synchronize();
        let api = &self.lib.api;
        // A poisoned lock still holds valid handles; free them all the same.
        let engines = match self.engines.get_mut() {
            Ok(e) => e,
            Err(p) => p.into_inner(),
        };
        if let Some(hw) = engines.hardware.as_mut() {
            hw.free(api);
        }
        engines.hybrid.free(api);
    }
}

/// Errors are not `Clone`; a shared failure is reported to every image it affects by message.
trait CloneCuda {
    fn clone_cuda(&self) -> Error;
}

impl CloneCuda for Error {
    fn clone_cuda(&self) -> Error {
        Error::cuda(self.to_string())
    }
}
