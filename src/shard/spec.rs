//! (in progress) Expansion of `--input` specs into shard sources.
use std::path::PathBuf;

use crate::error::Result;

/// Where a shard comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardSource {
    /// A tar file.
    Tar(PathBuf),
    /// A folder of images.
    Folder(PathBuf),
}

/// Expands paths, globs and brace ranges into shard sources, in order.
pub fn expand_inputs(specs: &[String]) -> Result<Vec<ShardSource>> {
    Ok(specs
        .iter()
        .map(|s| ShardSource::Tar(PathBuf::from(s)))
        .collect())
}
