//! Output writers: NumPy `.npy` tensors, WebDataset tar shards, PNG previews and the parquet
//! plan table. Files are written under a
//! temporary name and renamed, so an interrupted run never leaves a half-written file behind.

pub mod embed_table;
pub mod npy;
pub mod parquet;
pub mod png;
pub mod table;
pub mod tar;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Writes `path` through `write`, atomically: a `.partial` sibling first, then a rename.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let mut partial = PathBuf::from(path);
    partial.as_mut_os_string().push(".partial");
    let file = fs::File::create(&partial).map_err(|e| Error::io(&partial, e))?;
    // 64 KiB gathers small writes (JSON lines, headers) into few syscalls; a write at least
    // that large goes straight to the file instead of being copied through the buffer (a
    // tile array is ~1 MB: a 1 MiB buffer copied every one of them once more).
    let mut out = std::io::BufWriter::with_capacity(64 << 10, file);
    write(&mut out)
        .and_then(|()| out.flush())
        .map_err(|e| Error::io(&partial, e))?;
    drop(out);
    fs::rename(&partial, path).map_err(|e| Error::io(path, e))
}

/// Writes `value` as pretty JSON to `path` (atomically).
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let json = serde_json::to_vec_pretty(value).map_err(|e| Error::Output {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_atomically(path, |out| out.write_all(&json))
}
