//! Helpers shared by the integration tests: reading the .npy files vlmprep writes and the
//! fixture scripts save; backend parity helpers ([`parity`], [`tile_parity`]); test images
//! ([`images`]); the wgpu adapter (`wgpu`), the GPU (`cuda`) and the CUDA kernel emulator
//! (`cuda_emu`), each with its feature.
#![allow(dead_code)] // each test crate uses a subset

#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "cuda")]
pub mod cuda_emu;
pub mod images;
pub mod parity;
pub mod tile_parity;
#[cfg(feature = "wgpu")]
pub mod wgpu;

use std::path::Path;

/// (dtype descr, shape, raw little-endian data) of a version-1 .npy file.
pub fn load_npy(path: &Path) -> (String, Vec<usize>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    let descr = header
        .split("'descr': '")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape = shape_text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    (descr.to_string(), shape, bytes[10 + header_len..].to_vec())
}

/// An integer .npy (i8 or i4) as i64.
pub fn load_i64(path: &Path) -> Vec<i64> {
    let (descr, _, data) = load_npy(path);
    match descr.as_str() {
        "<i8" => data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        "<i4" => data
            .chunks_exact(4)
            .map(|c| i64::from(i32::from_le_bytes(c.try_into().unwrap())))
            .collect(),
        other => panic!("{}: unexpected dtype {other}", path.display()),
    }
}

/// A float32 .npy as values.
pub fn load_f32(path: &Path) -> Vec<f32> {
    let (descr, _, data) = load_npy(path);
    assert_eq!(descr, "<f4", "{}: expected float32", path.display());
    data.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// The token ids (`ids`) a tokenizer golden case expects.
pub fn golden_ids(case: &serde_json::Value) -> Vec<u32> {
    case["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}
