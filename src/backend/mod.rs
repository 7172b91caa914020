//! The Backend trait: batch-oriented device work (resize + tile + normalize), and [`TensorOps`]
//! (the dense ops SigLIP's forward is written in), with device buffers as associated types.
//! Stages are written once against them; the CPU backend is the reference every other backend
//! is tested against.

pub(crate) mod buffer_pool;
pub mod cpu;
mod cpu_gemm;
mod cpu_tensor;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(not(feature = "cuda"))]
#[path = "cuda_stub.rs"]
pub mod cuda;
mod fast_math;
pub(crate) mod shapes;
pub mod tensor;
#[cfg(feature = "wgpu")]
pub mod wgpu;
#[cfg(not(feature = "wgpu"))]
#[path = "wgpu_stub.rs"]
pub mod wgpu;

use crate::error::Result;
use crate::image::RgbImage;
use crate::image::normalize::{Dtype, Normalization};
use crate::image::resize::ResizeFilter;
use crate::image::tiling::TilePlan;

pub use cpu::CpuBackend;
pub use cpu_tensor::CpuMatrix;
pub use tensor::TensorOps;

/// How tiles are produced: resampling filter, output dtype and normalization.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TileSpec {
    /// Resampling filter of the resize.
    pub filter: ResizeFilter,
    /// Output element type: u8 → HWC as resized; floats → CHW normalized.
    pub dtype: Dtype,
    /// Mean/std applied to float outputs (ignored for u8).
    pub norm: Normalization,
}

/// Where one image's tiles lie in a batch tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileSlot {
    /// Byte offset of the image's first tile in the batch.
    pub offset: usize,
    /// Bytes taken by all of the image's tiles.
    pub len: usize,
    /// The plan the tiles follow.
    pub plan: TilePlan,
}

impl TileSlot {
    /// NumPy shape of the image's tiles: u8 `[T, H, W, 3]`, float `[T, 3, H, W]`.
    /// A thumbnail has the grid tiles' size in every rule that makes one.
    pub fn shape(&self, dtype: Dtype) -> [usize; 4] {
        let (w, h) = (self.plan.tile.0 as usize, self.plan.tile.1 as usize);
        let t = self.plan.num_tiles() as usize;
        if dtype.is_float() {
            [t, 3, h, w]
        } else {
            [t, h, w, 3]
        }
    }
}

/// The layout of a batch: every image's tiles back to back, each at a fixed offset, so each
/// tile can be written once, at its final place, in parallel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TileLayout {
    /// One slot per image, in batch order.
    pub slots: Vec<TileSlot>,
    /// Total bytes of the batch.
    pub total_bytes: usize,
}

impl TileLayout {
    /// Lays out the tiles of `plans` for `dtype`.
    pub fn new(plans: &[TilePlan], dtype: Dtype) -> TileLayout {
        let mut offset = 0;
        let slots = plans
            .iter()
            .map(|plan| {
                let len = tile_bytes(plan, dtype) * plan.num_tiles() as usize;
                let slot = TileSlot {
                    offset,
                    len,
                    plan: *plan,
                };
                offset += len;
                slot
            })
            .collect();
        TileLayout {
            slots,
            total_bytes: offset,
        }
    }
}

/// Bytes of one grid tile of `plan` in `dtype`.
pub fn tile_bytes(plan: &TilePlan, dtype: Dtype) -> usize {
    3 * plan.tile.0 as usize * plan.tile.1 as usize * dtype.size()
}

/// A batch of tiles in host memory.
#[derive(Debug, Clone)]
pub struct HostTiles {
    /// Element type of `data`.
    pub dtype: Dtype,
    /// Where each image's tiles are.
    pub layout: TileLayout,
    /// The batch tensor bytes (little-endian elements).
    pub data: Vec<u8>,
}

impl HostTiles {
    /// The bytes of image `i`'s tiles.
    pub fn image_bytes(&self, i: usize) -> &[u8] {
        let slot = &self.layout.slots[i];
        &self.data[slot.offset..slot.offset + slot.len]
    }
}

/// How a decoding backend's [`Backend::decode_tile_batch`] sorts per-image decode results:
/// the images that decoded with their plans, in input order (what it tiles), and per input the
/// error that kept it out (`None`: it is in the batch).
pub fn split_decoded<I>(
    decoded: impl IntoIterator<Item = crate::error::Result<I>>,
    plans: &[TilePlan],
) -> (Vec<I>, Vec<TilePlan>, Vec<Option<crate::error::Error>>) {
    let mut images = Vec::with_capacity(plans.len());
    let mut kept = Vec::with_capacity(plans.len());
    let mut errors = Vec::with_capacity(plans.len());
    for (result, plan) in decoded.into_iter().zip(plans) {
        match result {
            Ok(image) => {
                images.push(image);
                kept.push(*plan);
                errors.push(None);
            }
            Err(e) => errors.push(Some(e)),
        }
    }
    (images, kept, errors)
}

/// A compute device that runs the batch stages.
pub trait Backend: Send + Sync {
    /// The batch tensor of tiles as this device holds it.
    type Tiles;

    /// A human-readable name of the device (shown in summaries).
    fn name(&self) -> String;

    /// Resizes, cuts and converts every image per its plan; all tiles of the batch go into one
    /// tensor laid out by [`TileLayout::new`], each written once at its final offset.
    fn tile_batch(
        &self,
        images: &[&RgbImage],
        plans: &[TilePlan],
        spec: &TileSpec,
    ) -> Result<Self::Tiles>;

    /// Brings a batch to host memory (a move on the CPU).
    fn tiles_to_host(&self, tiles: Self::Tiles) -> Result<HostTiles>;

    /// Whether this backend decodes images itself ([`decode_tile_batch`](Self::decode_tile_batch));
    /// when it does, pipelines hand it encoded bytes instead of decoding on the CPU.
    fn decodes(&self) -> bool {
        false
    }

    /// Decodes encoded images on the device and tiles them per plan (each plan made from the
    /// image's header, in display orientation). Returns the tiles of the images that decoded,
    /// in input order, and per input the error that kept it out (`None`: it is in the batch).
    /// Only backends whose [`decodes`](Self::decodes) is true implement it.
    fn decode_tile_batch(
        &self,
        encoded: &[&[u8]],
        plans: &[TilePlan],
        spec: &TileSpec,
        max_pixels: u64,
    ) -> Result<(Self::Tiles, Vec<Option<crate::error::Error>>)> {
        let _ = (encoded, plans, spec, max_pixels);
        Err(crate::error::Error::Resize(format!(
            "{} does not decode images itself",
            self.name()
        )))
    }
}
