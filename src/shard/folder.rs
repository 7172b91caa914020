//! (in progress) A folder of images as a shard.
use std::path::{Path, PathBuf};

use super::{MemberData, MemberEntry, SampleEntry};
use crate::error::Result;
use crate::problems::Problem;

/// A folder of images with optional same-named .txt/.json.
pub struct FolderShard {
    path: PathBuf,
    samples: Vec<SampleEntry>,
    problems: Vec<Problem>,
}

impl FolderShard {
    /// Lists and indexes a folder.
    pub fn open(path: &Path) -> Result<FolderShard> {
        Ok(FolderShard {
            path: path.to_path_buf(),
            samples: vec![],
            problems: vec![],
        })
    }
    /// Path of the folder.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Samples in name order.
    pub fn samples(&self) -> &[SampleEntry] {
        &self.samples
    }
    /// Problems found while listing.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
    /// Maps one member's file.
    pub fn member_data(&self, _m: &MemberEntry) -> Result<MemberData<'_>> {
        Ok(MemberData::Empty)
    }
}
