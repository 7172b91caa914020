//! `manifest.parquet`: one row per sample of the pool, in pool order — where it is (shard, key,
//! offsets), what it is (size, format, hashes, score, cluster), which duplicate group it is in,
//! and whether it is kept, with the reason when it is not.

use std::path::Path;

use super::dedup::DupDecision;
use super::signals::SignalRow;
use crate::error::Result;
use crate::sink::table::{Table, Values, write_table};

/// One sample of the pool with everything pass 2 decided about it.
pub struct ManifestEntry<'a> {
    /// The shard it came from.
    pub shard: &'a str,
    /// Its signals.
    pub row: &'a SignalRow,
    /// The dedup tiers' decision.
    pub decision: &'a DupDecision,
    /// Why it is dropped; `None` when kept.
    pub reason: Option<&'a str>,
}

/// The manifest columns, in order.
pub const COLUMNS: [&str; 22] = [
    "sample",
    "key",
    "shard",
    "offset",
    "image_offset",
    "image_bytes",
    "format",
    "width",
    "height",
    "xxh3",
    "phash",
    "caption_chars",
    "score",
    "cluster",
    "centrality",
    "dup_tier",
    "dup_group",
    "dup_of_sample",
    "dup_of_reference",
    "keep",
    "reason",
    "reason_kind",
];

/// The drop reason's kind: the part before the first `:` (`exact-duplicate`, `too-small`, …).
pub fn reason_kind(reason: &str) -> &str {
    reason.split(':').next().unwrap_or(reason).trim()
}

/// The manifest of `entries` as a table.
pub fn manifest_table(entries: &[ManifestEntry]) -> Table {
    let i64s =
        |f: &dyn Fn(&ManifestEntry) -> Option<i64>| Values::I64(entries.iter().map(f).collect());
    let strs =
        |f: &dyn Fn(&ManifestEntry) -> Option<String>| Values::Str(entries.iter().map(f).collect());
    let columns = vec![
        Values::I64((0..entries.len() as i64).map(Some).collect()),
        strs(&|e| Some(e.row.key.clone())),
        strs(&|e| Some(e.shard.to_string())),
        i64s(&|e| Some(e.row.offset as i64)),
        i64s(&|e| e.row.image_offset.map(|v| v as i64)),
        i64s(&|e| e.row.image_bytes.map(|v| v as i64)),
        strs(&|e| e.row.format.clone()),
        i64s(&|e| e.row.width.map(i64::from)),
        i64s(&|e| e.row.height.map(i64::from)),
        strs(&|e| e.row.xxh3.clone()),
        strs(&|e| e.row.phash.map(|h| format!("{h:016x}"))),
        i64s(&|e| e.row.caption_chars.map(i64::from)),
        Values::F32(entries.iter().map(|e| e.row.score).collect()),
        i64s(&|e| e.decision.cluster.map(i64::from)),
        Values::F32(entries.iter().map(|e| e.decision.centrality).collect()),
        strs(&|e| e.decision.tier.map(str::to_string)),
        i64s(&|e| e.decision.group.map(i64::from)),
        i64s(&|e| e.decision.dup_of_sample.map(i64::from)),
        strs(&|e| e.decision.dup_of_reference.clone()),
        Values::Bool(entries.iter().map(|e| Some(e.reason.is_none())).collect()),
        strs(&|e| e.reason.map(str::to_string)),
        strs(&|e| e.reason.map(|r| reason_kind(r).to_string())),
    ];
    Table {
        columns: COLUMNS.iter().map(|c| c.to_string()).zip(columns).collect(),
    }
}

/// Writes the manifest of `entries` to `path` (atomically).
pub fn write_manifest(path: &Path, entries: &[ManifestEntry]) -> Result<()> {
    write_table(path, &manifest_table(entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::table::read_table;

    #[test]
    fn manifest_rows_say_what_was_kept_and_why() {
        let rows = [
            SignalRow {
                key: "a".into(),
                phash: Some(0xdead_beef),
                ..Default::default()
            },
            SignalRow {
                key: "b".into(),
                ..Default::default()
            },
        ];
        let kept = DupDecision {
            tier: Some("exact"),
            group: Some(0),
            ..Default::default()
        };
        let dropped = DupDecision {
            tier: Some("exact"),
            group: Some(0),
            dup_of_sample: Some(0),
            ..Default::default()
        };
        let entries = [
            ManifestEntry {
                shard: "s.tar",
                row: &rows[0],
                decision: &kept,
                reason: None,
            },
            ManifestEntry {
                shard: "s.tar",
                row: &rows[1],
                decision: &dropped,
                reason: Some("exact-duplicate: of a"),
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.parquet");
        write_manifest(&path, &entries).unwrap();
        let table = read_table(&path).unwrap();
        assert_eq!(table.columns.len(), COLUMNS.len());
        assert_eq!(
            table.column("keep"),
            Some(&Values::Bool(vec![Some(true), Some(false)]))
        );
        assert_eq!(
            table.column("phash"),
            Some(&Values::Str(vec![Some("00000000deadbeef".into()), None]))
        );
        assert_eq!(
            table.column("reason_kind"),
            Some(&Values::Str(vec![None, Some("exact-duplicate".into())]))
        );
        assert_eq!(
            table.column("dup_of_sample"),
            Some(&Values::I64(vec![None, Some(0)]))
        );
    }
}
