//! Reads tar shards written by an independent writer (Python's `tarfile`, in GNU, pax and ustar
//! formats; see tests/fixtures/shard/make_tars.py) and checks the samples against what
//! WebDataset's rules give for them (tests/fixtures/shard/expected.json).

use std::path::{Path, PathBuf};

use vlmprep::shard::{Shard, ShardSource, expand_inputs};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shard")
}

/// [key, [[ext, text], ...]] per sample, as the fixture script writes them.
type Samples = Vec<(String, Vec<(String, String)>)>;

fn expected(file: &str) -> Samples {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    serde_json::from_value(all[file].clone()).unwrap()
}

fn read(shard: &Shard) -> Samples {
    shard
        .samples()
        .iter()
        .map(|s| {
            let members = s
                .members
                .iter()
                .map(|m| {
                    let data = shard.member_data(m).unwrap();
                    (m.ext.clone(), String::from_utf8(data.to_vec()).unwrap())
                })
                .collect();
            (s.key.clone(), members)
        })
        .collect()
}

#[test]
fn python_written_tars_read_as_webdataset_would() {
    for file in ["gnu.tar", "pax.tar", "ustar.tar"] {
        let shard = Shard::open(&ShardSource::Tar(fixtures().join(file))).unwrap();
        assert_eq!(shard.problems(), &[], "{file}");
        let want = expected(file);
        assert!(!want.is_empty());
        assert_eq!(read(&shard), want, "{file}");
    }
}

#[test]
fn pax_fixture_keeps_non_ascii_and_long_keys() {
    let shard = Shard::open(&ShardSource::Tar(fixtures().join("pax.tar"))).unwrap();
    let keys: Vec<&str> = shard.samples().iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys.len(), 4);
    assert_eq!(keys[0], "top/000001");
    assert_eq!(keys[1], "top/000002");
    assert!(keys[2].len() > 100 && keys[2].ends_with("/sample"));
    let exts: Vec<&str> = shard.samples()[2]
        .members
        .iter()
        .map(|m| m.ext.as_str())
        .collect();
    assert_eq!(exts, ["with.dots.webp", "txt"]);
    assert_eq!(keys[3], "caf\u{e9}/\u{fc}mlaut");
    assert_eq!(shard.samples()[1].members[0].ext, "seg.png");
}

#[test]
fn brace_spec_over_the_fixtures() {
    let spec = format!("{}/{{gnu,pax,ustar}}.tar", fixtures().display());
    let sources = expand_inputs(&[spec]).unwrap();
    let names: Vec<_> = sources
        .iter()
        .map(|s| s.path().file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["gnu.tar", "pax.tar", "ustar.tar"]);
    assert!(matches!(sources[0], ShardSource::Tar(_)));
}
