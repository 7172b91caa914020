//! The CPU backend, the reference for every other: rayon across images, SIMD resize inside
//! (`image::resample_simd`, fast_image_resize's arithmetic), each tile resized straight into
//! its place in the batch tensor.

use std::cell::RefCell;

use rayon::prelude::*;

use super::{Backend, HostTiles, TileLayout, TileSpec, tile_bytes};
use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::image::normalize::{NormalizeTable, write_chw};
use crate::image::resample_simd::Resampler;
use crate::image::resize::{Region, resize_region_into};
use crate::image::tiling::TilePlan;

/// CPU implementation of [`Backend`]; uses the current rayon pool.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuBackend;

thread_local! {
    // Resampler scratch and the u8 tile staging buffer of float outputs, reused across images.
    static SCRATCH: RefCell<(Resampler, Vec<u8>)> = RefCell::new((Resampler::new(), Vec::new()));
}

impl Backend for CpuBackend {
    type Tiles = HostTiles;

    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn tile_batch(
        &self,
        images: &[&RgbImage],
        plans: &[TilePlan],
        spec: &TileSpec,
    ) -> Result<HostTiles> {
        if images.len() != plans.len() {
            return Err(Error::Resize(format!(
                "{} images but {} plans",
                images.len(),
                plans.len()
            )));
        }
        let layout = TileLayout::new(plans, spec.dtype);
        // A batch buffer `tile` handed back after writing the previous chunk, when one fits.
        let mut data = super::buffer_pool::take_zeroed::<u8>(layout.total_bytes);
        let table = NormalizeTable::new(&spec.norm)?;

        // Hand each image its own disjoint part of the batch.
        let mut parts = Vec::with_capacity(images.len());
        let mut rest = data.as_mut_slice();
        for slot in &layout.slots {
            let (part, tail) = rest.split_at_mut(slot.len);
            parts.push(part);
            rest = tail;
        }
        parts
            .into_par_iter()
            .zip(images.par_iter().zip(plans.par_iter()))
            .try_for_each(|(part, (image, plan))| tile_image(image, plan, spec, &table, part))?;
        Ok(HostTiles {
            dtype: spec.dtype,
            layout,
            data,
        })
    }

    fn tiles_to_host(&self, tiles: HostTiles) -> Result<HostTiles> {
        Ok(tiles)
    }
}

/// Writes every tile of one image (grid tiles row-major, then the thumbnail) into `out`.
fn tile_image(
    image: &RgbImage,
    plan: &TilePlan,
    spec: &TileSpec,
    table: &NormalizeTable,
    out: &mut [u8],
) -> Result<()> {
    let (cols, rows) = plan.grid;
    let (tw, th) = plan.tile;
    let bytes = tile_bytes(plan, spec.dtype);
    let mut tiles = out.chunks_exact_mut(bytes);
    let mut jobs: Vec<((u32, u32), Region)> = (0..rows)
        .flat_map(|r| (0..cols).map(move |c| (c, r)))
        .map(|(c, r)| {
            (
                plan.resize,
                Region {
                    x: c * tw,
                    y: r * th,
                    width: tw,
                    height: th,
                },
            )
        })
        .collect();
    if let Some(side) = plan.thumbnail {
        jobs.push((
            (side, side),
            Region {
                x: 0,
                y: 0,
                width: side,
                height: side,
            },
        ));
    }
    SCRATCH.with_borrow_mut(|(resampler, staging)| {
        for (full, region) in jobs {
            let dst = tiles
                .next()
                .ok_or_else(|| Error::Resize("tile slot smaller than the plan".into()))?;
            if spec.dtype.is_float() {
                staging.resize(3 * region.width as usize * region.height as usize, 0);
                resize_region_into(resampler, image, full, region, spec.filter, staging)?;
                write_chw(staging, table, spec.dtype, dst)?;
            } else {
                resize_region_into(resampler, image, full, region, spec.filter, dst)?;
            }
        }
        Ok(())
    })
}
