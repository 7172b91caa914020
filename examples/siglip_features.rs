//! Image features of given pixel values, for checking the forward alone against transformers
//! at sizes too large to commit as fixtures (benches/siglip_base.py uses it): the pixels are
//! exactly what transformers' processor produced, so any difference is the model's.
//!
//!     cargo run --release --example siglip_features -- MODEL_DIR PIXELS.npy OUT.npy [cuda]
//!
//! PIXELS.npy: float32 [N, 3, S, S] (C order); OUT.npy: float32 [N, D]. A fourth argument
//! `cuda` (builds with `--features cuda`) runs the forward on GPU 0 with bf16 GEMMs.

use std::path::Path;

use anyhow::{Context, Result, bail};
use vlmprep::backend::CpuBackend;
use vlmprep::model::siglip::SiglipModel;
use vlmprep::sink::npy::write_npy;

/// The shape and values of a little-endian float32 .npy in C order (version 1 or 2 header).
fn read_f32_npy(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() < 12 || &bytes[..6] != b"\x93NUMPY" {
        bail!("{}: not a .npy file", path.display());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (u32::from_le_bytes(bytes[8..12].try_into()?) as usize, 12),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len])?;
    if !header.contains("'<f4'") || header.contains("'fortran_order': True") {
        bail!(
            "{}: expected little-endian float32 in C order, header {header}",
            path.display()
        );
    }
    let shape_text = header
        .split_once("'shape': (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(s, _)| s)
        .with_context(|| format!("{}: no shape in header {header}", path.display()))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<Vec<usize>, _>>()?;
    let data: Vec<f32> = bytes[start + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if data.len() != shape.iter().product::<usize>() {
        bail!(
            "{}: {} values for shape {shape:?}",
            path.display(),
            data.len()
        );
    }
    Ok((shape, data))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (model_dir, pixels, out, device) = match args.as_slice() {
        [m, p, o] => (m, p, o, "cpu"),
        [m, p, o, d] => (m, p, o, d.as_str()),
        _ => bail!("usage: siglip_features MODEL_DIR PIXELS.npy OUT.npy [cpu|cuda]"),
    };
    let (shape, values) = read_f32_npy(Path::new(pixels))?;
    let features = match device {
        "cpu" => SiglipModel::load(Path::new(model_dir), CpuBackend)?.image_features(&values)?,
        #[cfg(feature = "cuda")]
        "cuda" => {
            use std::sync::Arc;
            use vlmprep::backend::cuda::{CudaBackend, tensor::CudaTensorOps};
            let ops = CudaTensorOps::new(Arc::new(CudaBackend::new(0)?))?;
            SiglipModel::load(Path::new(model_dir), ops)?.image_features(&values)?
        }
        other => bail!("device {other}: expected cpu, or cuda in a --features cuda build"),
    };
    let n = shape.first().copied().unwrap_or(0);
    let bytes: Vec<u8> = features.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy(
        Path::new(out),
        "<f4",
        &[n, features.len() / n.max(1)],
        &bytes,
    )?;
    Ok(())
}
