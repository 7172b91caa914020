//! The wgpu backend (feature `wgpu`): WGSL compute shaders from `shaders/` on any Vulkan, Metal
//! or DX12 adapter (and Mesa's software lavapipe, where CI tests it for real).
//!
//! One [`WgpuBackend`] holds the adapter's device and queue, every compute pipeline it has built
//! (each shader module and pipeline is created once, at first use, and cached), and a pool of
//! device buffers that batches reuse ([`pool`]). Device errors never panic: wgpu's uncaptured
//! error handler records them and the operation that raised them returns [`Error::Device`].

pub mod phash;
pub mod pool;
pub mod tensor;
pub mod tile;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use pool::{BufferPool, PooledBuffer};

pub use tensor::{WgpuMatrix, WgpuTensorOps};
pub use tile::WgpuTiles;

/// A [`Error::Device`] of the wgpu backend.
pub(crate) fn wgpu_err(reason: impl Into<String>) -> Error {
    Error::Device {
        device: "wgpu",
        reason: reason.into(),
    }
}

/// The shader files, one per kernel family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShaderFamily {
    /// `shaders/tile.wgsl`: fused resize + tile + normalize.
    Tile,
    /// `shaders/matmul.wgsl`: the tiled linear layer.
    Matmul,
    /// `shaders/elementwise.wgsl`: layer norm, activations, row ops, patchify.
    Elementwise,
    /// `shaders/attention.wgsl`: softmax attention and attention pooling.
    Attention,
    /// `shaders/phash.wgsl`: the perceptual hash's 32×32 Pillow "L" LANCZOS image.
    Phash,
    /// `shaders/phash_dct.wgsl`: the perceptual hash's DCT block, median and bits.
    PhashDct,
}

impl ShaderFamily {
    /// Every family, for validation.
    pub const ALL: [ShaderFamily; 6] = [
        ShaderFamily::Tile,
        ShaderFamily::Matmul,
        ShaderFamily::Elementwise,
        ShaderFamily::Attention,
        ShaderFamily::Phash,
        ShaderFamily::PhashDct,
    ];

    /// The file name under `shaders/`.
    pub fn file_name(self) -> &'static str {
        match self {
            ShaderFamily::Tile => "tile.wgsl",
            ShaderFamily::Matmul => "matmul.wgsl",
            ShaderFamily::Elementwise => "elementwise.wgsl",
            ShaderFamily::Attention => "attention.wgsl",
            ShaderFamily::Phash => "phash.wgsl",
            ShaderFamily::PhashDct => "phash_dct.wgsl",
        }
    }

    /// The WGSL source, compiled into the binary.
    pub fn source(self) -> &'static str {
        match self {
            ShaderFamily::Tile => include_str!("../../../shaders/tile.wgsl"),
            ShaderFamily::Matmul => include_str!("../../../shaders/matmul.wgsl"),
            ShaderFamily::Elementwise => include_str!("../../../shaders/elementwise.wgsl"),
            ShaderFamily::Attention => include_str!("../../../shaders/attention.wgsl"),
            ShaderFamily::Phash => include_str!("../../../shaders/phash.wgsl"),
            ShaderFamily::PhashDct => include_str!("../../../shaders/phash_dct.wgsl"),
        }
    }
}

/// Which adapters [`WgpuBackend::new`] may pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterChoice {
    /// A hardware GPU only (discrete, integrated or virtual): what `--device auto` wants, so
    /// that a software rasterizer never silently replaces the CPU backend.
    Hardware,
    /// The best adapter there is, software ones (lavapipe, llvmpipe, WARP) included: what an
    /// explicit `--device wgpu` asks for.
    Any,
}

/// One wgpu device with its cached pipelines and buffer pool.
pub struct WgpuBackend {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    name: String,
    max_binding: u64,
    modules: Mutex<HashMap<ShaderFamily, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<(ShaderFamily, &'static str), wgpu::ComputePipeline>>,
    pool: Arc<BufferPool>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for WgpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgpuBackend")
            .field("name", &self.name)
            .finish()
    }
}

/// Preference among adapter kinds: lower is better; `None` is not allowed by `choice`.
fn rank(kind: wgpu::DeviceType, choice: AdapterChoice) -> Option<u8> {
    match kind {
        wgpu::DeviceType::DiscreteGpu => Some(0),
        wgpu::DeviceType::IntegratedGpu => Some(1),
        wgpu::DeviceType::VirtualGpu => Some(2),
        wgpu::DeviceType::Other => Some(3),
        wgpu::DeviceType::Cpu => (choice == AdapterChoice::Any).then_some(4),
    }
}

/// Whether an adapter kind is a software implementation.
pub fn is_software(kind: wgpu::DeviceType) -> bool {
    kind == wgpu::DeviceType::Cpu
}

impl WgpuBackend {
    /// Opens the best adapter `choice` allows. Errors (never panics) when there is none, naming
    /// the adapters seen, or when the device cannot be created.
    pub fn new(choice: AdapterChoice) -> Result<WgpuBackend> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        let seen: Vec<String> = adapters
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{} ({:?}, {:?})", i.name, i.device_type, i.backend)
            })
            .collect();
        let best = adapters
            .into_iter()
            .filter_map(|a| rank(a.get_info().device_type, choice).map(|r| (r, a)))
            .min_by_key(|(r, _)| *r)
            .map(|(_, a)| a);
        let Some(adapter) = best else {
            let what = match choice {
                AdapterChoice::Hardware => "no hardware GPU adapter",
                AdapterChoice::Any => "no adapter",
            };
            let seen = if seen.is_empty() {
                "none found (no Vulkan/Metal/DX12 driver; on Debian/Ubuntu \
                 `apt-get install mesa-vulkan-drivers` gives the software lavapipe)"
                    .to_string()
            } else {
                format!("seen: {}", seen.join(", "))
            };
            return Err(wgpu_err(format!("{what}: {seen}")));
        };
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("vlmprep"),
            required_features: wgpu::Features::empty(),
            // The adapter's own limits: batches and weight matrices need large storage
            // bindings, far past the portable defaults.
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| wgpu_err(format!("opening {}: {e}", info.name)))?;
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.to_string());
            }
        }));
        let kind = if is_software(info.device_type) {
            "software"
        } else {
            "hardware"
        };
        let name = format!(
            "wgpu ({}, {:?}, {kind}, driver {})",
            info.name, info.backend, info.driver
        );
        let max_binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        Ok(WgpuBackend {
            pool: Arc::new(BufferPool::new(device.clone())),
            device,
            queue,
            info,
            name,
            max_binding,
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            errors,
        })
    }

    /// The adapter's description, as shown in summaries.
    pub fn device_name(&self) -> &str {
        &self.name
    }

    /// What wgpu reports of the adapter.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// Whether the adapter is a software implementation (lavapipe, llvmpipe, WARP).
    pub fn is_software(&self) -> bool {
        is_software(self.info.device_type)
    }

    /// Most loop iterations one shader invocation may run here, when the driver has such a
    /// limit: Mesa's llvmpipe (lavapipe) ends every loop of an invocation once 65,535
    /// iterations have run in total (`LP_MAX_TGSI_LOOP_ITERATIONS`, shared by every loop of
    /// a shader), silently, so longer work comes out wrong. Hardware drivers have none.
    pub fn loop_budget(&self) -> Option<u64> {
        let llvmpipe = self.info.driver.to_ascii_lowercase().contains("llvmpipe")
            || self.info.name.to_ascii_lowercase().contains("llvmpipe");
        llvmpipe.then_some(LLVMPIPE_LOOP_LIMIT)
    }

    /// The largest storage buffer one binding may cover here.
    pub fn max_binding(&self) -> u64 {
        self.max_binding
    }

    /// Surfaces device errors recorded since the last check as an error about `what`.
    pub(crate) fn check(&self, what: &str) -> Result<()> {
        let mut errs = self
            .errors
            .lock()
            .map_err(|_| wgpu_err("error log poisoned by an earlier panic"))?;
        if errs.is_empty() {
            return Ok(());
        }
        let all = errs.join("; ");
        errs.clear();
        Err(wgpu_err(format!("{what}: {all}")))
    }

    /// A storage buffer of at least `bytes` from the pool (contents undefined).
    pub(crate) fn storage(&self, bytes: u64) -> Result<PooledBuffer> {
        if bytes > self.max_binding {
            return Err(wgpu_err(format!(
                "a buffer of {bytes} bytes is past this adapter's binding limit of {}; use a \
                 smaller batch",
                self.max_binding
            )));
        }
        Ok(self.pool.take(
            bytes,
            wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
        ))
    }

    /// Uploads `data` (u32 words) into a pooled storage buffer.
    pub(crate) fn upload_words(&self, data: &[u32]) -> Result<PooledBuffer> {
        let buf = self.storage((data.len() as u64 * 4).max(4))?;
        if !data.is_empty() {
            self.queue
                .write_buffer(buf.buffer(), 0, bytemuck_words(data));
        }
        Ok(buf)
    }

    /// Uploads bytes into a pooled storage buffer, zero-padded to whole words.
    pub(crate) fn upload_bytes(&self, data: &[u8]) -> Result<PooledBuffer> {
        let words = data.len().div_ceil(4);
        let buf = self.storage((words as u64 * 4).max(4))?;
        let whole = data.len() / 4 * 4;
        if whole > 0 {
            self.queue.write_buffer(buf.buffer(), 0, &data[..whole]);
        }
        if whole < data.len() {
            let mut tail = [0u8; 4];
            tail[..data.len() - whole].copy_from_slice(&data[whole..]);
            self.queue.write_buffer(buf.buffer(), whole as u64, &tail);
        }
        Ok(buf)
    }

    /// Uploads f32 values into a pooled storage buffer.
    pub(crate) fn upload_f32(&self, data: &[f32]) -> Result<PooledBuffer> {
        let words: &[u32] = bytemuck_cast_f32(data);
        self.upload_words(words)
    }

    /// Reads the first `bytes` of a buffer back to the host (one copy into a pooled staging
    /// buffer, one map). Waits for all queued work.
    pub(crate) fn read_back(&self, src: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        self.read_back_ranges(src, &[(0, bytes)])
    }

    /// Reads `(offset, bytes)` ranges of a buffer back to the host, concatenated: one copy per
    /// range into one pooled staging buffer, one map. Waits for all queued work. Offsets must
    /// be multiples of 4 (wgpu's copy alignment); lengths are rounded up to whole words on the
    /// device and cut back here.
    pub(crate) fn read_back_ranges(
        &self,
        src: &wgpu::Buffer,
        ranges: &[(u64, u64)],
    ) -> Result<Vec<u8>> {
        let total: u64 = ranges.iter().map(|&(_, b)| b.next_multiple_of(4)).sum();
        if total == 0 {
            return Ok(Vec::new());
        }
        if let Some(&(off, _)) = ranges.iter().find(|&&(off, _)| off % 4 != 0) {
            return Err(wgpu_err(format!(
                "read-back offset {off} is not a multiple of 4"
            )));
        }
        let staging = self.pool.take(
            total,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        );
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        let mut at = 0;
        for &(off, bytes) in ranges {
            let padded = bytes.next_multiple_of(4);
            if padded > 0 {
                enc.copy_buffer_to_buffer(src, off, staging.buffer(), at, padded);
            }
            at += padded;
        }
        self.queue.submit([enc.finish()]);
        let slice = staging.buffer().slice(0..total);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| wgpu_err(format!("waiting for the device: {e}")))?;
        rx.recv()
            .map_err(|_| wgpu_err("the read-back callback never ran"))?
            .map_err(|e| wgpu_err(format!("mapping the read-back buffer: {e}")))?;
        let data = {
            let view = slice
                .get_mapped_range()
                .map_err(|e| wgpu_err(format!("reading the mapped buffer: {e}")))?;
            let mut data = Vec::with_capacity(total as usize);
            let mut at = 0usize;
            for &(_, bytes) in ranges {
                data.extend_from_slice(&view[at..at + bytes as usize]);
                at += bytes.next_multiple_of(4) as usize;
            }
            data
        };
        staging.buffer().unmap();
        self.check("reading back")?;
        Ok(data)
    }

    /// The pipeline of `entry` in `family`, built on first use and cached.
    fn pipeline(&self, family: ShaderFamily, entry: &'static str) -> Result<wgpu::ComputePipeline> {
        let mut pipelines = self
            .pipelines
            .lock()
            .map_err(|_| wgpu_err("pipeline cache poisoned by an earlier panic"))?;
        if let Some(p) = pipelines.get(&(family, entry)) {
            return Ok(p.clone());
        }
        let module = {
            let mut modules = self
                .modules
                .lock()
                .map_err(|_| wgpu_err("shader cache poisoned by an earlier panic"))?;
            modules
                .entry(family)
                .or_insert_with(|| {
                    self.device
                        .create_shader_module(wgpu::ShaderModuleDescriptor {
                            label: Some(family.file_name()),
                            source: wgpu::ShaderSource::Wgsl(family.source().into()),
                        })
                })
                .clone()
        };
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
        self.check(&format!("building {entry} of {}", family.file_name()))?;
        pipelines.insert((family, entry), pipeline.clone());
        Ok(pipeline)
    }

    /// Queues one dispatch of `entry`: `params` (u32 words) as the uniform at binding 0, then
    /// `buffers` as (binding, buffer) pairs, over `groups` workgroups; submits it.
    pub(crate) fn dispatch(
        &self,
        family: ShaderFamily,
        entry: &'static str,
        params: &[u32],
        buffers: &[(u32, &wgpu::Buffer)],
        groups: (u32, u32),
    ) -> Result<()> {
        if groups.0 == 0 || groups.1 == 0 {
            return Ok(());
        }
        let pipeline = self.pipeline(family, entry)?;
        let mut words = params.to_vec();
        // Uniform structs are sized in 16-byte steps; 64 bytes covers the largest Params, so an
        // entry point given fewer fields still gets a binding as large as its struct.
        words.resize(words.len().next_multiple_of(4).max(16), 0);
        let uniform = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: bytemuck_words(&words),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        entries.extend(buffers.iter().map(|(b, buf)| wgpu::BindGroupEntry {
            binding: *b,
            resource: buf.as_entire_binding(),
        }));
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(entry) });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(entry),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(groups.0, groups.1, 1);
        }
        self.queue.submit([enc.finish()]);
        self.check(&format!("running {entry}"))
    }
}

/// Mesa llvmpipe's `LP_MAX_TGSI_LOOP_ITERATIONS`, less a margin for the loops a kernel runs
/// besides the ones its callers count.
const LLVMPIPE_LOOP_LIMIT: u64 = 65_535 - 64;

/// Most workgroups per dispatch dimension (WebGPU's portable limit).
pub(crate) const MAX_GROUPS: u32 = 65_535;

/// A 2-D grid of workgroups covering `n` groups: (x, y) with x ≤ [`MAX_GROUPS`].
pub(crate) fn grid(n: u64) -> Result<(u32, u32)> {
    if n == 0 {
        return Ok((0, 0));
    }
    let x = n.min(u64::from(MAX_GROUPS));
    let y = n.div_ceil(x);
    if y > u64::from(MAX_GROUPS) {
        return Err(wgpu_err(format!(
            "{n} workgroups do not fit one dispatch; use a smaller batch"
        )));
    }
    Ok((x as u32, y as u32))
}

fn bytemuck_words(words: &[u32]) -> &[u8] {
    // SAFETY: u32 has no padding and any byte pattern is a valid u8; the length is exact.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), std::mem::size_of_val(words)) }
}

fn bytemuck_cast_f32(v: &[f32]) -> &[u32] {
    // SAFETY: f32 and u32 have the same size and alignment, and every bit pattern is a u32.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u32>(), v.len()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shader parses and validates with naga (no adapter needed), and has the entry
    /// points the host code dispatches.
    #[test]
    fn every_shader_parses_and_validates() {
        let entries: &[(ShaderFamily, &[&str])] = &[
            (ShaderFamily::Tile, &["tile_batch", "tile_vertical"]),
            (ShaderFamily::Matmul, &["linear"]),
            (
                ShaderFamily::Elementwise,
                &[
                    "gelu_tanh",
                    "gelu_erf",
                    "add_assign",
                    "add_periodic_rows",
                    "gather_rows",
                    "strided_rows",
                    "patchify",
                    "layer_norm",
                ],
            ),
            (ShaderFamily::Attention, &["attention"]),
            (ShaderFamily::Phash, &["phash_gray32"]),
            (ShaderFamily::PhashDct, &["phash_dct"]),
        ];
        for family in ShaderFamily::ALL {
            let module = naga::front::wgsl::parse_str(family.source()).unwrap_or_else(|e| {
                panic!(
                    "{}: {}",
                    family.file_name(),
                    e.emit_to_string(family.source())
                )
            });
            naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::empty(),
            )
            .validate(&module)
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {}",
                    family.file_name(),
                    e.emit_to_string(family.source())
                )
            });
            let want = entries.iter().find(|(f, _)| *f == family).unwrap().1;
            let have: Vec<&str> = module
                .entry_points
                .iter()
                .map(|e| e.name.as_str())
                .collect();
            for w in want {
                assert!(
                    have.contains(w),
                    "{} lacks entry point {w}",
                    family.file_name()
                );
            }
        }
        // Every file in shaders/ is one of the families (none left out of the check).
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
        for f in std::fs::read_dir(dir).unwrap() {
            let name = f.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".wgsl") {
                assert!(
                    ShaderFamily::ALL.iter().any(|fam| fam.file_name() == name),
                    "{name} is not a ShaderFamily"
                );
            }
        }
    }

    #[test]
    fn software_adapters_only_when_asked() {
        assert_eq!(rank(wgpu::DeviceType::Cpu, AdapterChoice::Hardware), None);
        assert!(rank(wgpu::DeviceType::Cpu, AdapterChoice::Any).is_some());
        assert!(
            rank(wgpu::DeviceType::DiscreteGpu, AdapterChoice::Hardware)
                < rank(wgpu::DeviceType::IntegratedGpu, AdapterChoice::Hardware)
        );
    }

    #[test]
    fn grids_cover_the_work_within_limits() {
        assert_eq!(grid(0).unwrap(), (0, 0));
        assert_eq!(grid(10).unwrap(), (10, 1));
        let (x, y) = grid(200_000).unwrap();
        assert!(u64::from(x) * u64::from(y) >= 200_000 && x <= MAX_GROUPS);
        assert!(grid(u64::from(MAX_GROUPS) * u64::from(MAX_GROUPS) + 1).is_err());
    }
}
