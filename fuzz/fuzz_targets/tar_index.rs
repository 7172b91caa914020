//! Fuzz target for the tar index: any bytes must index without panicking, and the index must
//! only ever describe what is really in the input.
#![no_main]

use std::collections::HashSet;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vlmprep::shard::tar::index_tar;

const KINDS: [&str; 8] = [
    "truncated",
    "bad-checksum",
    "past-end",
    "not-a-tar",
    "empty-shard",
    "duplicate-key",
    "duplicate-member",
    "bad-header",
];

fuzz_target!(|data: &[u8]| {
    let shard = Path::new("fuzz.tar");
    let (samples, problems) = index_tar(data, shard);
    let len = data.len() as u64;

    let mut keys = HashSet::new();
    let mut prev: Option<(u64, u64)> = None;
    for s in &samples {
        assert!(!s.key.is_empty(), "empty key");
        assert!(keys.insert(s.key.as_str()), "key {} indexed twice", s.key);
        assert!(!s.members.is_empty(), "sample {} has no members", s.key);
        let first = &s.members[0];
        // The sample starts at a header, which lies before its first member's data.
        assert!(
            s.offset + 512 <= first.offset,
            "sample offset after its data"
        );
        let mut exts = HashSet::new();
        for m in &s.members {
            assert!(
                exts.insert(m.ext.as_str()),
                "ext {} twice in {}",
                m.ext,
                s.key
            );
            let end = m.offset.checked_add(m.len).expect("member end overflows");
            assert!(
                end <= len,
                "member {}..{end} past the input ({len})",
                m.offset
            );
            // Every member is preceded by its own header: ranges strictly increase.
            if let Some((p_off, p_end)) = prev {
                assert!(m.offset >= p_end + 512, "members overlap or go back");
                assert!(m.offset > p_off);
            }
            assert_eq!(m.offset % 512, 0, "data starts on a block boundary");
            prev = Some((m.offset, end));
        }
    }

    // Rule: every problem has an offset within the input; it equals the input length only for a
    // shard that stops without an end-of-archive marker (truncated) or a 0-byte shard.
    for p in &problems {
        assert!(KINDS.contains(&p.kind), "unknown kind {}", p.kind);
        assert_eq!(p.shard, shard);
        let offset = p.offset.expect("tar problems always have an offset");
        assert!(
            offset <= len,
            "problem offset {offset} past the input ({len})"
        );
        if offset == len {
            assert!(
                p.kind == "truncated" || (p.kind == "empty-shard" && len == 0),
                "{p}"
            );
        }
    }
    // A shard that yields nothing always says why.
    if samples.is_empty() {
        assert!(!problems.is_empty(), "no samples and no problem");
    }
    // Indexing is a pure function of the bytes.
    assert_eq!(index_tar(data, shard), (samples, problems));
});
