//! Stages wired together: `inspect` (index + probe a pool) and `tile` (decode → plan → tile →
//! write), processed shard by shard in bounded chunks so memory stays flat however large the
//! pool, with rayon across samples.

pub mod curate;
pub mod curate_signals;
pub mod embed;
pub mod inspect;
pub mod pack;
pub mod pixels;
pub mod plan;
pub mod tile;
mod tile_chunks;

use crate::problems::Problem;
use crate::shard::folder::IMAGE_EXTS;
use crate::shard::{MemberEntry, SampleEntry, Shard};

/// The sample's image member: the first member whose extension is an image extension
/// (the same list folder inputs recognize).
pub fn image_member(sample: &SampleEntry) -> Option<&MemberEntry> {
    sample
        .members
        .iter()
        .find(|m| IMAGE_EXTS.iter().any(|ext| m.ext.eq_ignore_ascii_case(ext)))
}

/// A problem about one sample of a shard.
pub fn sample_problem(
    shard: &Shard,
    sample: &SampleEntry,
    kind: &'static str,
    message: String,
) -> Problem {
    Problem {
        shard: shard.path().to_path_buf(),
        offset: Some(sample.offset),
        key: Some(sample.key.clone()),
        kind,
        message,
    }
}

/// The problem kind for an image-stage error.
pub fn image_error_kind(err: &crate::Error) -> &'static str {
    use crate::Error;
    match err {
        Error::UnknownFormat(_) => "unknown-format",
        Error::BadHeader { .. } => "bad-header",
        Error::TooManyPixels { .. } => "too-many-pixels",
        Error::Decode { .. } => "decode",
        Error::TilingSettings(_) | Error::TilingRefused { .. } => "tiling",
        Error::Resize(_) => "resize",
        Error::Io { .. } => "io",
        _ => "other",
    }
}
