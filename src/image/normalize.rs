//! Tile output formats: u8 HWC as resized, or float CHW normalized with a per-channel mean/std
//! (x/255 − mean)/std in f32 — what torchvision's ToTensor + Normalize compute — stored as f32,
//! f16 or bf16.

use std::str::FromStr;

use crate::error::{Error, Result};

/// Element type of output tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 8-bit, HWC, not normalized.
    #[default]
    U8,
    /// 32-bit float, CHW, normalized.
    F32,
    /// IEEE half, CHW, normalized (rounded to nearest even from the f32 value).
    F16,
    /// bfloat16, CHW, normalized (rounded to nearest even from the f32 value).
    Bf16,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::U8 => 1,
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
        }
    }

    /// NumPy `descr` string. bf16 has no NumPy type: it is stored as its uint16 bit pattern
    /// (`torch.from_numpy(a).view(torch.bfloat16)` recovers it).
    pub fn npy_descr(self) -> &'static str {
        match self {
            Dtype::U8 => "|u1",
            Dtype::F32 => "<f4",
            Dtype::F16 => "<f2",
            Dtype::Bf16 => "<u2",
        }
    }

    /// Whether tiles of this type are channel-first and normalized.
    pub fn is_float(self) -> bool {
        self != Dtype::U8
    }
}

impl FromStr for Dtype {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "u8" => Ok(Dtype::U8),
            "f32" => Ok(Dtype::F32),
            "f16" => Ok(Dtype::F16),
            "bf16" => Ok(Dtype::Bf16),
            _ => Err(Error::TilingSettings(format!(
                "unknown dtype `{s}` (u8, f32, f16, bf16)"
            ))),
        }
    }
}

/// Per-channel mean and standard deviation, in units of the [0, 1] range.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Normalization {
    /// Mean per channel (R, G, B).
    pub mean: [f32; 3],
    /// Standard deviation per channel (R, G, B).
    pub std: [f32; 3],
}

impl Normalization {
    /// SigLIP's image processor: mean 0.5, std 0.5 (maps to [-1, 1]).
    pub const SIGLIP: Normalization = Normalization {
        mean: [0.5; 3],
        std: [0.5; 3],
    };
    /// ImageNet statistics, used by InternVL.
    pub const IMAGENET: Normalization = Normalization {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
    /// OpenAI CLIP statistics, used by CLIP and Qwen2-VL. Written as the references spell them
    /// (f32 rounds them the same way torch does).
    #[allow(clippy::excessive_precision)]
    pub const CLIP: Normalization = Normalization {
        mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
        std: [0.268_629_54, 0.261_302_58, 0.275_777_11],
    };

    /// A preset by name: `siglip`, `imagenet` (InternVL) or `clip` (Qwen2-VL).
    pub fn preset(name: &str) -> Option<Normalization> {
        match name {
            "siglip" => Some(Self::SIGLIP),
            "imagenet" | "internvl" => Some(Self::IMAGENET),
            "clip" | "qwen2vl" => Some(Self::CLIP),
            _ => None,
        }
    }
}

/// Precomputed normalized value of every u8 level per channel: the per-pixel work becomes a
/// table lookup, with results bit-identical to computing (v/255 − mean)/std in f32.
#[derive(Debug, Clone)]
pub struct NormalizeTable {
    values: [[f32; 256]; 3],
}

impl NormalizeTable {
    /// Builds the table; errors on a zero or non-finite std.
    pub fn new(norm: &Normalization) -> Result<Self> {
        let mut values = [[0f32; 256]; 3];
        for ((row, &mean), &std) in values.iter_mut().zip(&norm.mean).zip(&norm.std) {
            if !(std.is_finite() && std != 0.0 && mean.is_finite()) {
                return Err(Error::TilingSettings(format!("bad normalization {norm:?}")));
            }
            for (v, out) in row.iter_mut().enumerate() {
                *out = (v as f32 / 255.0 - mean) / std;
            }
        }
        Ok(NormalizeTable { values })
    }

    /// Normalized value of level `v` in channel `c`.
    pub fn get(&self, c: usize, v: u8) -> f32 {
        self.values[c][v as usize]
    }
}

/// Writes an RGB8 HWC tile (`pixels` = width·height) as CHW `dtype` elements into `dst`
/// (`3 · pixels · dtype.size()` bytes, little-endian).
pub fn write_chw(rgb: &[u8], table: &NormalizeTable, dtype: Dtype, dst: &mut [u8]) -> Result<()> {
    let pixels = rgb.len() / 3;
    if dst.len() != 3 * pixels * dtype.size() || rgb.len() != 3 * pixels {
        return Err(Error::Resize(format!(
            "tile buffer of {} bytes does not fit {pixels} pixels of {dtype:?}",
            dst.len()
        )));
    }
    let plane_bytes = pixels * dtype.size();
    for (c, plane) in dst.chunks_exact_mut(plane_bytes).enumerate() {
        let levels = rgb.chunks_exact(3).map(|px| px[c]);
        let lut = &table.values[c];
        // Each level's bytes in the output encoding, computed once per plane (256 conversions)
        // instead of once per pixel; the per-pixel work is then a fixed-size copy.
        match dtype {
            Dtype::U8 => plane.iter_mut().zip(levels).for_each(|(out, v)| *out = v),
            Dtype::F32 => fill(plane, levels, &lut.map(f32::to_le_bytes)),
            Dtype::F16 => fill(
                plane,
                levels,
                &lut.map(|v| half::f16::from_f32(v).to_le_bytes()),
            ),
            Dtype::Bf16 => fill(
                plane,
                levels,
                &lut.map(|v| half::bf16::from_f32(v).to_le_bytes()),
            ),
        }
    }
    Ok(())
}

/// Writes `encoded[level]` for each level into consecutive `N`-byte elements of `plane`.
fn fill<const N: usize>(
    plane: &mut [u8],
    levels: impl Iterator<Item = u8>,
    encoded: &[[u8; N]; 256],
) {
    for (out, v) in plane.chunks_exact_mut(N).zip(levels) {
        out.copy_from_slice(&encoded[v as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_direct_formula() {
        let table = NormalizeTable::new(&Normalization::IMAGENET).unwrap();
        for v in [0u8, 1, 127, 128, 254, 255] {
            let direct = (v as f32 / 255.0 - 0.456) / 0.224;
            assert_eq!(table.get(1, v), direct);
        }
        assert_eq!(
            NormalizeTable::new(&Normalization::SIGLIP)
                .unwrap()
                .get(0, 255),
            1.0
        );
        assert_eq!(
            NormalizeTable::new(&Normalization::SIGLIP)
                .unwrap()
                .get(2, 0),
            -1.0
        );
    }

    #[test]
    fn chw_layout_and_dtypes() {
        // Two pixels: (0, 255, 51) and (255, 0, 102).
        let rgb = [0u8, 255, 51, 255, 0, 102];
        let table = NormalizeTable::new(&Normalization::SIGLIP).unwrap();
        let mut f32s = vec![0u8; 6 * 4];
        write_chw(&rgb, &table, Dtype::F32, &mut f32s).unwrap();
        let values: Vec<f32> = f32s
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(values[..4], [-1.0, 1.0, 1.0, -1.0]); // R plane, then G plane
        assert!((values[4] - (51.0 / 255.0 - 0.5) / 0.5).abs() < 1e-7);

        let mut bf = vec![0u8; 6 * 2];
        write_chw(&rgb, &table, Dtype::Bf16, &mut bf).unwrap();
        assert_eq!(
            u16::from_le_bytes([bf[0], bf[1]]),
            half::bf16::from_f32(-1.0).to_bits()
        );
        let mut h = vec![0u8; 6 * 2];
        write_chw(&rgb, &table, Dtype::F16, &mut h).unwrap();
        assert_eq!(
            u16::from_le_bytes([h[2], h[3]]),
            half::f16::from_f32(1.0).to_bits()
        );
        assert!(write_chw(&rgb, &table, Dtype::F32, &mut h).is_err());
    }

    #[test]
    fn zero_std_is_rejected() {
        let norm = Normalization {
            mean: [0.5; 3],
            std: [0.5, 0.0, 0.5],
        };
        assert!(NormalizeTable::new(&norm).is_err());
    }
}
