//! `inspect`: index every shard and probe every image header (no pixel decode) to summarize a
//! pool: samples, members by extension, formats, JPEG properties, a size histogram, problems.

use std::collections::BTreeMap;

use rayon::prelude::*;

use super::{image_error_kind, image_member, sample_problem};
use crate::image::probe::probe;
use crate::problems::ProblemLog;
use crate::shard::{Shard, ShardSource};

/// Buckets of the size histogram, by the longer side in pixels.
pub const SIZE_BUCKETS: [(u32, &str); 6] = [
    (0, "<256"),
    (256, "256-511"),
    (512, "512-1023"),
    (1024, "1024-2047"),
    (2048, "2048-4095"),
    (4096, ">=4096"),
];

/// What `inspect` found.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct InspectReport {
    /// Shards read (opened, even if damaged).
    pub shards: usize,
    /// Samples indexed.
    pub samples: usize,
    /// Bytes of all members.
    pub member_bytes: u64,
    /// Members per extension.
    pub members_by_ext: BTreeMap<String, usize>,
    /// Samples without an image member.
    pub samples_without_image: usize,
    /// Images per format.
    pub formats: BTreeMap<String, usize>,
    /// Progressive JPEGs.
    pub jpeg_progressive: usize,
    /// JPEGs per chroma subsampling.
    pub jpeg_subsampling: BTreeMap<String, usize>,
    /// Images with an EXIF orientation other than 1.
    pub exif_rotated: usize,
    /// Images per longer-side bucket (after orientation), in [`SIZE_BUCKETS`] order.
    pub size_histogram: Vec<(String, usize)>,
    /// Smallest and largest (width, height) by area, after orientation.
    pub smallest: Option<(u32, u32)>,
    /// See `smallest`.
    pub largest: Option<(u32, u32)>,
    /// Total decoded megapixels, a proxy for decode work.
    pub megapixels: f64,
    /// Everything that went wrong, located.
    pub problems: ProblemLog,
}

impl InspectReport {
    fn merge(&mut self, other: InspectReport) {
        self.shards += other.shards;
        self.samples += other.samples;
        self.member_bytes += other.member_bytes;
        self.samples_without_image += other.samples_without_image;
        self.jpeg_progressive += other.jpeg_progressive;
        self.exif_rotated += other.exif_rotated;
        self.megapixels += other.megapixels;
        for (k, v) in other.members_by_ext {
            *self.members_by_ext.entry(k).or_default() += v;
        }
        for (k, v) in other.formats {
            *self.formats.entry(k).or_default() += v;
        }
        for (k, v) in other.jpeg_subsampling {
            *self.jpeg_subsampling.entry(k).or_default() += v;
        }
        if self.size_histogram.is_empty() {
            self.size_histogram = other.size_histogram;
        } else {
            for (mine, theirs) in self.size_histogram.iter_mut().zip(other.size_histogram) {
                mine.1 += theirs.1;
            }
        }
        let area = |s: &(u32, u32)| s.0 as u64 * s.1 as u64;
        self.smallest = [self.smallest, other.smallest]
            .into_iter()
            .flatten()
            .min_by_key(area);
        self.largest = [self.largest, other.largest]
            .into_iter()
            .flatten()
            .max_by_key(area);
        self.problems.extend(other.problems.problems);
    }

    fn record_size(&mut self, size: (u32, u32)) {
        let longer = size.0.max(size.1);
        let bucket = SIZE_BUCKETS
            .iter()
            .rposition(|(min, _)| longer >= *min)
            .unwrap_or(0);
        self.size_histogram[bucket].1 += 1;
        self.megapixels += size.0 as f64 * size.1 as f64 / 1e6;
        let area = |s: (u32, u32)| s.0 as u64 * s.1 as u64;
        if self.smallest.is_none_or(|s| area(size) < area(s)) {
            self.smallest = Some(size);
        }
        if self.largest.is_none_or(|s| area(size) > area(s)) {
            self.largest = Some(size);
        }
    }

    fn empty() -> InspectReport {
        InspectReport {
            size_histogram: SIZE_BUCKETS
                .iter()
                .map(|(_, name)| (name.to_string(), 0))
                .collect(),
            ..Default::default()
        }
    }
}

/// Inspects every shard (in parallel); `on_shard` is called after each shard with its
/// sample count (for progress).
pub fn inspect(sources: &[ShardSource], on_shard: &(dyn Fn(usize) + Sync)) -> InspectReport {
    let mut total = sources
        .par_iter()
        .map(|source| {
            let report = inspect_shard(source);
            on_shard(report.samples);
            report
        })
        .reduce(InspectReport::empty, |mut a, b| {
            a.merge(b);
            a
        });
    // Parallel reduction order varies; the report must not.
    total
        .problems
        .problems
        .sort_by(|a, b| (&a.shard, a.offset).cmp(&(&b.shard, b.offset)));
    total
}

fn inspect_shard(source: &ShardSource) -> InspectReport {
    let mut report = InspectReport::empty();
    let shard = match Shard::open(source) {
        Ok(shard) => shard,
        Err(err) => {
            let path = match source {
                ShardSource::Tar(p) | ShardSource::Folder(p) => p.clone(),
            };
            report.problems.push(crate::problems::Problem {
                shard: path,
                offset: None,
                key: None,
                kind: "io",
                message: err.to_string(),
            });
            return report;
        }
    };
    report.shards = 1;
    report.problems.extend(shard.problems().iter().cloned());
    report.samples = shard.samples().len();
    for sample in shard.samples() {
        for member in &sample.members {
            *report
                .members_by_ext
                .entry(member.ext.to_ascii_lowercase())
                .or_default() += 1;
            report.member_bytes += member.len;
        }
    }
    let probed: Vec<_> = shard
        .samples()
        .par_iter()
        .filter_map(|sample| {
            let member = image_member(sample)?;
            let result = shard.member_data(member).and_then(|data| probe(&data));
            Some((sample, result))
        })
        .collect();
    report.samples_without_image = report.samples - probed.len();
    for (sample, result) in probed {
        match result {
            Ok(header) => {
                *report
                    .formats
                    .entry(header.format.name().to_string())
                    .or_default() += 1;
                if header.progressive {
                    report.jpeg_progressive += 1;
                }
                if let Some(sub) = header.subsampling {
                    *report
                        .jpeg_subsampling
                        .entry(format!("{sub:?}"))
                        .or_default() += 1;
                }
                if header.orientation != 1 {
                    report.exif_rotated += 1;
                }
                report.record_size(header.oriented_size());
            }
            Err(err) => {
                let kind = image_error_kind(&err);
                report
                    .problems
                    .push(sample_problem(&shard, sample, kind, err.to_string()));
            }
        }
    }
    report
}
