//! Record readers: WebDataset tar shards over a memory map, and folders of images, behind one
//! `Shard` type; plus the expansion of `--input` specs (paths, globs, brace ranges) into shards.
//!
//! Members are borrowed slices of the mapping (tar) or of a per-file mapping (folder): nothing is
//! copied. Indexes are built in one pass; problems are recorded and the rest of the shard is kept.

pub mod folder;
pub mod spec;
pub mod tar;

use std::path::Path;

use crate::error::Result;
use crate::problems::Problem;

pub use spec::{ShardSource, expand_inputs};

/// One member of a sample: its extension (everything after the key's first '.', e.g. `jpg`,
/// `txt`, `json`, `seg.png`) and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberEntry {
    /// Extension, without the leading dot, as WebDataset names it.
    pub ext: String,
    /// Byte offset of the member's data in the shard (tar), or 0 for a folder file.
    pub offset: u64,
    /// Length of the member's data in bytes.
    pub len: u64,
    /// Index into the folder's file list (folders only; 0 for tar).
    pub file: u32,
}

/// A sample: all members sharing one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleEntry {
    /// WebDataset key: the member path up to the first '.' of its last path component.
    pub key: String,
    /// Byte offset of the first member's header in the shard (tar), 0 for folders.
    pub offset: u64,
    /// The members, in shard order.
    pub members: Vec<MemberEntry>,
}

impl SampleEntry {
    /// The member with this exact extension, if any.
    pub fn member(&self, ext: &str) -> Option<&MemberEntry> {
        self.members.iter().find(|m| m.ext == ext)
    }
}

/// Bytes of a member: borrowed from the shard's mapping, or a mapping of its own (folder files).
pub enum MemberData<'a> {
    /// A slice of the tar shard's memory map.
    Borrowed(&'a [u8]),
    /// A memory map of a whole file (folder inputs).
    Mapped(memmap2::Mmap),
    /// An empty file (cannot be mapped).
    Empty,
}

impl std::ops::Deref for MemberData<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            MemberData::Borrowed(bytes) => bytes,
            MemberData::Mapped(map) => map,
            MemberData::Empty => &[],
        }
    }
}

/// An opened shard: its sample index and the problems found while building it.
pub enum Shard {
    /// A WebDataset tar file.
    Tar(tar::TarShard),
    /// A folder of images with optional sidecar .txt/.json.
    Folder(folder::FolderShard),
}

impl Shard {
    /// Opens and indexes a shard. Errors only when nothing at all can be read (missing file,
    /// unreadable folder); a damaged shard opens with the samples before the damage and problems.
    pub fn open(source: &ShardSource) -> Result<Shard> {
        match source {
            ShardSource::Tar(path) => tar::TarShard::open(path).map(Shard::Tar),
            ShardSource::Folder(path) => folder::FolderShard::open(path).map(Shard::Folder),
        }
    }

    /// The path this shard was opened from.
    pub fn path(&self) -> &Path {
        match self {
            Shard::Tar(s) => s.path(),
            Shard::Folder(s) => s.path(),
        }
    }

    /// The samples, in shard order.
    pub fn samples(&self) -> &[SampleEntry] {
        match self {
            Shard::Tar(s) => s.samples(),
            Shard::Folder(s) => s.samples(),
        }
    }

    /// Problems found while indexing (bad headers, truncation, duplicate keys, ...).
    pub fn problems(&self) -> &[Problem] {
        match self {
            Shard::Tar(s) => s.problems(),
            Shard::Folder(s) => s.problems(),
        }
    }

    /// The bytes of one member, without copying.
    pub fn member_data(&self, member: &MemberEntry) -> Result<MemberData<'_>> {
        match self {
            Shard::Tar(s) => Ok(MemberData::Borrowed(s.member_bytes(member))),
            Shard::Folder(s) => s.member_data(member),
        }
    }
}
