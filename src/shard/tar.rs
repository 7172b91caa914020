//! (in progress) WebDataset tar index over a memory map.
use std::path::{Path, PathBuf};

use super::{MemberEntry, SampleEntry};
use crate::error::Result;
use crate::problems::Problem;

/// An indexed tar shard.
pub struct TarShard {
    path: PathBuf,
    map: Option<memmap2::Mmap>,
    samples: Vec<SampleEntry>,
    problems: Vec<Problem>,
}

impl TarShard {
    /// Maps and indexes a tar file.
    pub fn open(path: &Path) -> Result<TarShard> {
        Ok(TarShard {
            path: path.to_path_buf(),
            map: None,
            samples: vec![],
            problems: vec![],
        })
    }
    /// Path of the shard.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Samples in shard order.
    pub fn samples(&self) -> &[SampleEntry] {
        &self.samples
    }
    /// Problems found while indexing.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
    /// Bytes of a member, borrowed from the mapping.
    pub fn member_bytes(&self, m: &MemberEntry) -> &[u8] {
        let map: &[u8] = self.map.as_deref().unwrap_or(&[]);
        &map[m.offset as usize..(m.offset + m.len) as usize]
    }
}
