//! [`CudaDecodeTile`]: the CUDA backend with nvJPEG in front, so pipelines hand it encoded
//! images and the pixels go from the decoder to the tiles without visiting the host.

use std::sync::Arc;

use super::nvjpeg::NvJpegDecoder;
use super::tile::DeviceTiles;
use super::{CudaBackend, DeviceImage};
use crate::backend::{Backend, HostTiles, TileSpec, split_decoded};
use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::image::tiling::TilePlan;

/// A [`CudaBackend`] that decodes too (nvJPEG, with its CPU fallback per image).
pub struct CudaDecodeTile {
    backend: Arc<CudaBackend>,
    decoder: NvJpegDecoder,
}

impl CudaDecodeTile {
    /// nvJPEG on `backend`'s device, with the hardware engine where the GPU has one.
    pub fn new(backend: Arc<CudaBackend>) -> Result<Self> {
        let decoder = NvJpegDecoder::new(backend.clone(), true)?;
        Ok(CudaDecodeTile { backend, decoder })
    }
}

impl Backend for CudaDecodeTile {
    type Tiles = DeviceTiles;

    fn name(&self) -> String {
        let engine = match self.decoder.hardware_available() {
            true => "hardware JPEG engine",
            false => "hybrid JPEG decode",
        };
        format!("{}, nvJPEG {engine}", self.backend.device_name())
    }

    fn tile_batch(
        &self,
        images: &[&RgbImage],
        plans: &[TilePlan],
        spec: &TileSpec,
    ) -> Result<DeviceTiles> {
        self.backend.tile_batch(images, plans, spec)
    }

    fn tiles_to_host(&self, tiles: DeviceTiles) -> Result<HostTiles> {
        self.backend.tiles_to_host(tiles)
    }

    fn decodes(&self) -> bool {
        true
    }

    fn decode_tile_batch(
        &self,
        encoded: &[&[u8]],
        plans: &[TilePlan],
        spec: &TileSpec,
        max_pixels: u64,
    ) -> Result<(DeviceTiles, Vec<Option<Error>>)> {
        if encoded.len() != plans.len() {
            return Err(Error::Resize(format!(
                "{} images but {} plans",
                encoded.len(),
                plans.len()
            )));
        }
        let decoded = self.decoder.decode_batch(encoded, max_pixels);
        let (images, kept_plans, errors) = split_decoded(
            decoded.into_iter().map(|r| r.map(|(image, _route)| image)),
            plans,
        );
        let refs: Vec<&DeviceImage> = images.iter().collect();
        let tiles = self.backend.tile_device_batch(&refs, &kept_plans, spec)?;
        Ok((tiles, errors))
    }
}
