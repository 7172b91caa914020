//! PNG previews of tiles (`tile --png`), for looking at what a model will see. Float tiles are
//! mapped back to 8-bit through the inverse of their normalization.

use std::path::Path;

use crate::backend::{HostTiles, TileSpec};
use crate::error::{Error, Result};
use crate::image::normalize::Dtype;

/// Writes every tile of image `i` as `KEY.tNN.png` under `out`.
pub fn write_tile_pngs(
    out: &Path,
    key: &str,
    tiles: &HostTiles,
    i: usize,
    spec: &TileSpec,
) -> Result<()> {
    let slot = &tiles.layout.slots[i];
    let (w, h) = (slot.plan.tile.0 as usize, slot.plan.tile.1 as usize);
    let bytes = tiles.image_bytes(i);
    let per_tile = bytes.len() / slot.plan.num_tiles().max(1) as usize;
    for (t, tile) in bytes.chunks_exact(per_tile).enumerate() {
        let rgb = to_rgb8(tile, w * h, spec);
        let path = out.join(format!("{key}.t{t:02}.png"));
        super::write_atomically(&path, |sink| {
            let mut encoder = png::Encoder::new(sink, w as u32, h as u32);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
            writer
                .write_image_data(&rgb)
                .map_err(std::io::Error::other)?;
            writer.finish().map_err(std::io::Error::other)
        })
        .map_err(|e| match e {
            Error::Io { path, source } => Error::Output {
                path,
                reason: source.to_string(),
            },
            other => other,
        })?;
    }
    Ok(())
}

/// HWC RGB8 from one tile of any dtype.
fn to_rgb8(tile: &[u8], pixels: usize, spec: &TileSpec) -> Vec<u8> {
    if spec.dtype == Dtype::U8 {
        return tile.to_vec();
    }
    let size = spec.dtype.size();
    let value = |c: usize, p: usize| -> f32 {
        let at = (c * pixels + p) * size;
        let b = &tile[at..at + size];
        match spec.dtype {
            Dtype::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            Dtype::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            Dtype::Bf16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            Dtype::U8 => b[0] as f32,
        }
    };
    let mut rgb = Vec::with_capacity(3 * pixels);
    for p in 0..pixels {
        for c in 0..3 {
            let v = (value(c, p) * spec.norm.std[c] + spec.norm.mean[c]) * 255.0;
            rgb.push(v.round().clamp(0.0, 255.0) as u8);
        }
    }
    rgb
}
