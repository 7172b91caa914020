//! End-to-end tests of the `vlmprep` binary on the demo pool plus a damaged shard: every image
//! that can be tiled is written with a shape that matches index.jsonl, every one that cannot is
//! in problems.jsonl with its reason, and the run goes on.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn vlmprep(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vlmprep"))
        .args(args)
        .output()
        .expect("running vlmprep")
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Shape from a .npy header, e.g. `(3, 3, 64, 64)`.
fn npy_shape(path: &Path) -> Vec<u64> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
    let dims = &header[header.find("'shape': (").unwrap() + 10..];
    let dims = &dims[..dims.find(')').unwrap()];
    dims.split(',')
        .filter(|d| !d.trim().is_empty())
        .map(|d| d.trim().parse().unwrap())
        .collect()
}

#[test]
fn tile_writes_every_good_image_and_records_every_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool");
    let shards = vlmprep::demo::build_demo_pool(&pool).unwrap();
    // A third shard: a copy of the first with the checksum of its 4th header broken.
    let mut bytes = std::fs::read(&shards[0]).unwrap();
    let headers = vlmprep::shard::tar::index_tar(&bytes, Path::new("x")).0;
    let damaged_at = (headers[1].offset) as usize; // the second sample's first header
    bytes[damaged_at + 148] ^= 0x11;
    std::fs::write(pool.join("damaged.tar"), &bytes).unwrap();

    let out = dir.path().join("tiles");
    let damaged = pool.join("damaged.tar").display().to_string();
    let run = tile_demo(&pool, &[&damaged], &out, &[]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let index = jsonl(&out.join("index.jsonl"));
    for line in &index {
        let shape: Vec<u64> = line["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(shape, vec![1, 3, 64, 64]);
        assert_eq!(npy_shape(&out.join(line["file"].as_str().unwrap())), shape);
    }
    let problems = jsonl(&out.join("problems.jsonl"));
    let kinds: BTreeSet<&str> = problems
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "bad-checksum",
        "decode",
        "unknown-format",
        "no-image",
        "duplicate-key",
    ] {
        assert!(kinds.contains(kind), "no {kind} problem in {kinds:?}");
    }
    // The damaged copy repeats the first shard's keys: all of its readable images are
    // duplicates, so exactly the 22 good demo images are written once each.
    assert_eq!(index.len(), 22);
    let keys: BTreeSet<&str> = index.iter().map(|l| l["key"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), 22);
    let bad = problems
        .iter()
        .find(|p| p["kind"] == "bad-checksum")
        .unwrap();
    assert_eq!(bad["offset"].as_u64().unwrap(), damaged_at as u64);
    assert!(bad["shard"].as_str().unwrap().ends_with("damaged.tar"));

    let summary: Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["images"].as_u64().unwrap(), 22);
    assert_eq!(summary["shards"].as_u64().unwrap(), 3);
}

#[test]
fn inspect_json_counts_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    vlmprep::demo::build_demo_pool(dir.path()).unwrap();
    let glob = format!("{}/*.tar", dir.path().display());
    let run = vlmprep(&["inspect", &glob, "--json"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(report["shards"], 2);
    assert_eq!(report["samples"], 26);
    assert_eq!(report["samples_without_image"], 2);
    assert_eq!(report["formats"]["jpeg"], 17); // 18 .jpg members, one of them HTML
    assert_eq!(report["problems"]["problems"].as_array().unwrap().len(), 1);
}

#[test]
fn a_missing_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope-{000..002}.tar").display().to_string();
    let run = vlmprep(&[
        "tile",
        "--input",
        &missing,
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("nope-000.tar"), "{stderr}");
}

/// `tile` on the demo pool's two shards plus `more_inputs` into `out` (fixed 64, f32), with
/// extra arguments.
fn tile_demo(
    pool: &Path,
    more_inputs: &[&str],
    out: &Path,
    extra: &[&str],
) -> std::process::Output {
    let spec = format!("{}/pool-{{000000..000001}}.tar", pool.display());
    let mut args = vec!["--threads", "2", "tile", "--input", &spec];
    args.extend_from_slice(more_inputs);
    args.extend_from_slice(&[
        "--mode",
        "fixed",
        "--tile-size",
        "64",
        "--dtype",
        "f32",
        "--out",
        out.to_str().unwrap(),
    ]);
    args.extend_from_slice(extra);
    vlmprep(&args)
}

#[test]
fn tile_output_does_not_depend_on_the_chunking() {
    // One image per chunk (--memory-mib 0) sends every image through the writer thread on its
    // own; the index (order included) and every file must equal the default run's.
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool");
    vlmprep::demo::build_demo_pool(&pool).unwrap();
    let (whole, split) = (dir.path().join("whole"), dir.path().join("split"));
    for (out, extra) in [(&whole, &[][..]), (&split, &["--memory-mib", "0"][..])] {
        let run = tile_demo(&pool, &[], out, extra);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let index = std::fs::read_to_string(whole.join("index.jsonl")).unwrap();
    assert_eq!(
        index,
        std::fs::read_to_string(split.join("index.jsonl")).unwrap()
    );
    let lines = jsonl(&whole.join("index.jsonl"));
    assert_eq!(lines.len(), 22);
    for line in lines {
        let file = line["file"].as_str().unwrap();
        assert_eq!(
            std::fs::read(whole.join(file)).unwrap(),
            std::fs::read(split.join(file)).unwrap(),
            "{file}"
        );
    }
}

#[test]
fn a_write_error_stops_the_run_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool");
    vlmprep::demo::build_demo_pool(&pool).unwrap();
    let first = dir.path().join("first");
    assert!(tile_demo(&pool, &[], &first, &[]).status.success());
    // A folder where a later image's .npy must go: creating that file fails (even as root).
    let lines = jsonl(&first.join("index.jsonl"));
    let file = lines[lines.len() / 2]["file"].as_str().unwrap();
    let out = dir.path().join("blocked");
    std::fs::create_dir_all(out.join(file)).unwrap();
    let run = tile_demo(&pool, &[], &out, &["--memory-mib", "0"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "the run succeeded: {stderr}");
    assert!(stderr.contains(file), "{stderr}");
}

#[test]
fn tile_chunks_hold_at_most_the_memory_budget_tiles_included() {
    // InternVL tiles in f32 are many times larger than the demo's small JPEGs decoded: a budget
    // counted on decoded bytes alone put the whole pool in one chunk. Counting the tiles, the
    // run needs at least (tile bytes of the pool) / (budget) chunks.
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool");
    vlmprep::demo::build_demo_pool(&pool).unwrap();
    let spec = format!("{}/pool-{{000000..000001}}.tar", pool.display());
    let out = dir.path().join("tiles");
    let budget_mib = 64u64;
    let run = vlmprep(&[
        "--threads",
        "2",
        "tile",
        "--input",
        &spec,
        "--mode",
        "internvl",
        "--dtype",
        "f32",
        "--no-write",
        "--memory-mib",
        &budget_mib.to_string(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let tile_bytes: u64 = jsonl(&out.join("index.jsonl"))
        .iter()
        .map(|line| {
            let shape = line["shape"].as_array().unwrap();
            4 * shape.iter().map(|d| d.as_u64().unwrap()).product::<u64>()
        })
        .sum();
    let budget = budget_mib << 20;
    assert!(
        tile_bytes > 3 * budget,
        "the pool's tiles: {tile_bytes} bytes"
    );
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let chunks = summary["chunks"].as_u64().unwrap();
    assert!(
        chunks >= tile_bytes.div_ceil(budget),
        "{chunks} chunks for {tile_bytes} bytes of tiles under {budget_mib} MiB"
    );
}
