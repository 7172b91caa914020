//! `vlmprep curate` end to end, through the binary: a run killed part-way and restarted ends
//! with the same manifest as an uninterrupted one; the same inputs and seed give the same
//! manifest; `--reference` drops what an earlier run kept; `--write-shards` writes exactly the
//! kept samples, byte for byte; bad flag combinations are clear errors.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vlmprep::curate::planted::{planted_pool, write_planted_shards};
use vlmprep::shard::{Shard, ShardSource};
use vlmprep::sink::table::{Table, Values, read_table};

fn vlmprep(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vlmprep"));
    cmd.args(args).args(["--threads", "2"]);
    cmd.env_remove("VLMPREP_TEST_CRASH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("vlmprep runs")
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "vlmprep failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A planted pool of `originals` groups in shards of 10 samples.
fn pool(dir: &Path, originals: usize) -> Vec<PathBuf> {
    let samples = planted_pool(originals, 11).unwrap();
    write_planted_shards(&dir.join("pool"), &samples, 10).unwrap()
}

fn curate_args<'a>(shards: &'a [String], out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["curate", "--out", out, "--input"];
    args.extend(shards.iter().map(String::as_str));
    args.extend_from_slice(extra);
    args
}

fn manifest(out: &Path) -> Table {
    read_table(&out.join("manifest.parquet")).unwrap()
}

fn strings(table: &Table, name: &str) -> Vec<Option<String>> {
    match table.column(name) {
        Some(Values::Str(v)) => v.clone(),
        other => panic!("column {name}: {other:?}"),
    }
}

fn keeps(table: &Table) -> Vec<bool> {
    match table.column("keep") {
        Some(Values::Bool(v)) => v.iter().map(|k| k.unwrap()).collect(),
        other => panic!("keep column: {other:?}"),
    }
}

#[test]
fn a_killed_run_restarts_and_ends_with_the_same_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let shards: Vec<String> = pool(dir.path(), 12)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        shards.len() >= 4,
        "the pool needs several shards to stop part-way"
    );
    let whole = dir.path().join("whole");
    let whole_s = whole.display().to_string();
    let extra = ["--demo-model", "--keep", "largest"];
    ok(&vlmprep(&curate_args(&shards, &whole_s, &extra), &[]));

    let resumed = dir.path().join("resumed");
    let resumed_s = resumed.display().to_string();
    // Abort in the middle of writing the third shard's signals, after its files exist under
    // the .partial name and before the rename.
    let crashed = vlmprep(
        &curate_args(&shards, &resumed_s, &extra),
        &[("VLMPREP_TEST_CRASH", "signals-written:3")],
    );
    assert!(
        !crashed.status.success(),
        "the run should have been aborted"
    );
    assert!(!resumed.join("manifest.parquet").exists());
    let folders: Vec<String> = std::fs::read_dir(resumed.join("signals"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        folders.iter().filter(|f| f.ends_with(".partial")).count(),
        1,
        "{folders:?}"
    );
    assert_eq!(folders.len(), 3, "{folders:?}");

    let rerun = vlmprep(&curate_args(&shards, &resumed_s, &extra), &[]);
    ok(&rerun);
    let stdout = String::from_utf8_lossy(&rerun.stdout);
    assert!(stdout.contains("2 reused"), "{stdout}");
    assert_eq!(manifest(&whole), manifest(&resumed));
    let listed = std::fs::read_dir(resumed.join("signals")).unwrap().count();
    assert_eq!(listed, shards.len(), "no .partial folder is left behind");
}

#[test]
fn same_inputs_and_seed_give_the_same_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let shards: Vec<String> = pool(dir.path(), 8)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let (a_s, b_s) = (a.display().to_string(), b.display().to_string());
    let extra = ["--demo-model", "--seed", "3", "--keep", "least-central"];
    ok(&vlmprep(&curate_args(&shards, &a_s, &extra), &[]));
    ok(&vlmprep(&curate_args(&shards, &b_s, &extra), &[]));
    let (ma, mb) = (manifest(&a), manifest(&b));
    assert_eq!(ma, mb);
    // The tiers did find something to decide on.
    assert!(keeps(&ma).iter().any(|k| !k));
    assert!(
        strings(&ma, "dup_tier")
            .iter()
            .any(|t| t.as_deref() == Some("exact"))
    );
}

#[test]
fn a_reference_run_drops_what_the_earlier_run_kept() {
    let dir = tempfile::tempdir().unwrap();
    let paths = pool(dir.path(), 8);
    let first: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let earlier = dir.path().join("earlier");
    let earlier_s = earlier.display().to_string();
    ok(&vlmprep(&curate_args(&first, &earlier_s, &[]), &[]));

    // The new pool: a byte copy of the first shard under another name.
    let copy = dir.path().join("new-000000.tar");
    std::fs::copy(&paths[0], &copy).unwrap();
    let second = vec![copy.display().to_string()];
    let later = dir.path().join("later");
    let later_s = later.display().to_string();
    ok(&vlmprep(
        &curate_args(&second, &later_s, &["--reference", &earlier_s]),
        &[],
    ));
    let old = manifest(&earlier);
    let old_kept: BTreeSet<String> = strings(&old, "key")
        .into_iter()
        .zip(keeps(&old))
        .zip(strings(&old, "shard"))
        .filter(|((_, k), s)| *k && s.as_deref() == Some(first[0].as_str()))
        .map(|((key, _), _)| key.unwrap())
        .collect();
    assert!(!old_kept.is_empty());
    let new = manifest(&later);
    for ((key, reference), kind) in strings(&new, "key")
        .into_iter()
        .zip(strings(&new, "dup_of_reference"))
        .zip(strings(&new, "reason_kind"))
    {
        let key = key.unwrap();
        if old_kept.contains(&key) {
            assert_eq!(kind.as_deref(), Some("exact-duplicate"), "{key}");
            assert_eq!(reference, Some(format!("{}:{key}", first[0])));
        }
    }
    // This run's reference holds both corpora: the earlier one and what this run kept.
    let kept_now = keeps(&new).iter().filter(|k| **k).count();
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(later.join("reference/meta.json")).unwrap()).unwrap();
    let earlier_meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(earlier.join("reference/meta.json")).unwrap())
            .unwrap();
    assert_eq!(
        meta["samples"].as_u64().unwrap(),
        earlier_meta["samples"].as_u64().unwrap() + kept_now as u64
    );
}

#[test]
fn written_shards_hold_exactly_the_kept_samples_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let paths = pool(dir.path(), 6);
    let shards: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let out = dir.path().join("out");
    let kept_dir = dir.path().join("kept");
    let (out_s, kept_s) = (out.display().to_string(), kept_dir.display().to_string());
    ok(&vlmprep(
        &curate_args(
            &shards,
            &out_s,
            &["--write-shards", &kept_s, "--shard-samples", "7"],
        ),
        &[],
    ));
    let m = manifest(&out);
    let kept: Vec<(String, String)> = strings(&m, "shard")
        .into_iter()
        .zip(strings(&m, "key"))
        .zip(keeps(&m))
        .filter(|(_, k)| *k)
        .map(|((s, k), _)| (s.unwrap(), k.unwrap()))
        .collect();
    let originals: BTreeMap<(String, String), Vec<u8>> = paths
        .iter()
        .flat_map(|p| {
            let shard = Shard::open(&ShardSource::Tar(p.clone())).unwrap();
            shard
                .samples()
                .iter()
                .map(|s| {
                    let m = s.member("jpg").unwrap();
                    (
                        (p.display().to_string(), s.key.clone()),
                        shard.member_data(m).unwrap().to_vec(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let mut written = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(&kept_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert_eq!(names.len(), kept.len().div_ceil(7));
    for path in names {
        let shard = Shard::open(&ShardSource::Tar(path)).unwrap();
        for s in shard.samples() {
            let m = s.member("jpg").unwrap();
            written.push((s.key.clone(), shard.member_data(m).unwrap().to_vec()));
            assert!(
                s.member("txt").is_some(),
                "captions travel with their image"
            );
        }
    }
    assert_eq!(written.len(), kept.len());
    for ((shard, key), (wkey, bytes)) in kept.iter().zip(&written) {
        assert_eq!(key, wkey);
        assert_eq!(&originals[&(shard.clone(), key.clone())], bytes, "{key}");
    }
}

#[test]
fn model_only_flags_without_a_model_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let shards: Vec<String> = pool(dir.path(), 2)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let out = dir.path().join("out").display().to_string();
    let run = vlmprep(&curate_args(&shards, &out, &["--min-score", "0.5"]), &[]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("--model"), "{stderr}");
    let missing = dir.path().join("nothing").display().to_string();
    let run = vlmprep(&curate_args(&shards, &out, &["--reference", &missing]), &[]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("--reference") && stderr.contains("nothing"),
        "{stderr}"
    );
}
