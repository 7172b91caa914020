//! Golden vectors for the tiling rules: every case in tests/fixtures/tiling/golden.jsonl (made by
//! make_golden.py from the reference rules, in Python) must equal `Tiler::plan`, and InternVL's
//! candidate order must equal CPython's (tests/fixtures/tiling/target_ratios.json).

use std::collections::BTreeMap;

use serde_json::Value;
use vlmprep::error::Error;
use vlmprep::image::tiling::{InternVlSettings, Qwen2VlSettings, TilePlan, Tiler, TilingRule};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiling");

fn read_fixture(name: &str) -> String {
    let path = format!("{FIXTURES}/{name}");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn uint(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("settings field `{key}` in {v}"))
}

fn u32_field(v: &Value, key: &str) -> u32 {
    u32::try_from(uint(v, key)).expect("fits u32")
}

fn rule_from_json(v: &Value) -> TilingRule {
    match v["rule"].as_str() {
        Some("internvl") => TilingRule::InternVl(InternVlSettings {
            tile_size: u32_field(v, "tile_size"),
            min_tiles: u32_field(v, "min_tiles"),
            max_tiles: u32_field(v, "max_tiles"),
            thumbnail: v["thumbnail"].as_bool().expect("thumbnail"),
        }),
        Some("qwen2vl") => TilingRule::Qwen2Vl(Qwen2VlSettings {
            factor: u32_field(v, "factor"),
            min_pixels: uint(v, "min_pixels"),
            max_pixels: uint(v, "max_pixels"),
        }),
        Some("fixed") => TilingRule::Fixed {
            size: u32_field(v, "size"),
        },
        other => panic!("unknown rule {other:?}"),
    }
}

/// The fixture's expectation in the same shape as `plan()`'s outcome.
fn expected_outcome(v: &Value) -> Result<TilePlan, String> {
    if let Some(reason) = v.as_str() {
        return Err(reason.to_string());
    }
    let a = v.as_array().expect("plan array");
    let n = |i: usize| u32::try_from(a[i].as_u64().expect("plan number")).expect("fits u32");
    Ok(TilePlan {
        resize: (n(0), n(1)),
        grid: (n(2), n(3)),
        tile: (n(4), n(5)),
        thumbnail: if a[6].is_null() { None } else { Some(n(6)) },
    })
}

fn actual_outcome(tiler: &Tiler, width: u32, height: u32) -> Result<TilePlan, String> {
    match tiler.plan(width, height) {
        Ok(plan) => Ok(plan),
        Err(Error::TilingRefused { reason, .. }) => Err(reason.name().to_string()),
        Err(e) => Err(format!("unexpected error: {e}")),
    }
}

#[test]
fn golden_plans_match_reference() {
    let text = read_fixture("golden.jsonl");
    let mut lines = text.lines();
    let header: Value = serde_json::from_str(lines.next().expect("header line")).expect("header");
    let tilers: BTreeMap<String, Tiler> = header["settings"]
        .as_object()
        .expect("settings")
        .iter()
        .map(|(id, s)| (id.clone(), Tiler::new(rule_from_json(s)).expect(id)))
        .collect();

    let mut checked = 0usize;
    let mut per_settings: BTreeMap<&str, usize> = BTreeMap::new();
    let mut mismatches = Vec::new();
    for (lineno, line) in lines.enumerate() {
        let case: Value = serde_json::from_str(line).expect("case line");
        let id = case[0].as_str().expect("settings id");
        let dim = |i: usize| u32::try_from(case[i].as_u64().expect("size")).expect("fits u32");
        let (width, height) = (dim(1), dim(2));
        let tiler = tilers.get(id).unwrap_or_else(|| panic!("unknown id {id}"));
        let (key, _) = tilers.get_key_value(id).unwrap();
        let expected = expected_outcome(&case[3]);
        let actual = actual_outcome(tiler, width, height);
        if expected != actual {
            mismatches.push(format!(
                "line {}: {id} {width}x{height}: expected {expected:?}, got {actual:?}",
                lineno + 2
            ));
        }
        checked += 1;
        *per_settings.entry(key.as_str()).or_default() += 1;
    }

    println!(
        "tiling golden: checked {checked} cases over {} settings",
        per_settings.len()
    );
    for (id, n) in &per_settings {
        println!("  {id}: {n}");
    }
    assert!(checked >= 5000, "only {checked} golden cases");
    assert_eq!(per_settings.len(), tilers.len(), "settings without cases");
    assert!(
        mismatches.is_empty(),
        "{} of {checked} cases differ; first ones:\n{}",
        mismatches.len(),
        mismatches
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn fnv1a64(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn settings_for(key: &str) -> InternVlSettings {
    let (min, max) = key.split_once('-').expect("min-max");
    InternVlSettings {
        min_tiles: min.parse().expect("min"),
        max_tiles: max.parse().expect("max"),
        ..Default::default()
    }
}

#[test]
fn internvl_candidate_order_matches_cpython() {
    let fixture: Value = serde_json::from_str(&read_fixture("target_ratios.json")).expect("json");
    let mut mismatches = Vec::new();

    let full = fixture["full"].as_object().expect("full");
    for (key, grids) in full {
        let expected: Vec<(u32, u32)> = grids
            .as_array()
            .expect("list")
            .iter()
            .map(|g| {
                let n = |i: usize| g[i].as_u64().expect("int") as u32;
                (n(0), n(1))
            })
            .collect();
        let actual = settings_for(key).target_ratios();
        if actual != expected {
            mismatches.push(format!("{key}: expected {expected:?}\n  got {actual:?}"));
        }
    }

    let digests = fixture["fnv1a64"].as_object().expect("fnv1a64");
    for (key, digest) in digests {
        let order = settings_for(key).target_ratios();
        let text = order
            .iter()
            .map(|(c, r)| format!("{c},{r}"))
            .collect::<Vec<_>>()
            .join(";");
        if fnv1a64(&text) != digest.as_str().expect("hex") {
            mismatches.push(format!("{key}: order digest differs, got {order:?}"));
        }
    }

    println!(
        "InternVL candidate order: {} full lists and {} digests checked",
        full.len(),
        digests.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} orders differ; first ones:\n{}",
        mismatches.len(),
        mismatches
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
