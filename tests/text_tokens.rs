//! Text encodings must equal the Python `tokenizers` library's, id for id, on the committed tiny
//! tokenizers (GPT-2 style byte-level BPE and a Qwen2 style NFC + regex-split one). The goldens
//! and tokenizers are made by `tests/fixtures/text/make_tokenizer.py`.

use std::path::{Path, PathBuf};

use serde_json::Value;
use vlmprep::model::tokenizer::TextTokenizer;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/text")
}

fn golden() -> Value {
    let bytes = std::fs::read(fixtures().join("golden.json")).expect("read golden.json");
    serde_json::from_slice(&bytes).expect("parse golden.json")
}

/// Checks every golden case of `name` against `tok`; returns how many were checked.
fn check_against_golden(name: &str, tok: &TextTokenizer) -> usize {
    let golden = golden();
    let entry = &golden["tokenizers"][name];
    for (token, id) in entry["special"].as_object().expect("special") {
        assert_eq!(
            tok.token_id(token),
            Some(id.as_u64().unwrap() as u32),
            "{name}: id of {token}"
        );
    }
    let cases = entry["cases"].as_array().expect("cases");
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(text).unwrap();
        if got != want {
            failures.push(format!("{text:?}: got {got:?}, want {want:?}"));
        }
        assert_eq!(
            tok.count(text).unwrap(),
            want.len(),
            "{name}: count of {text:?}"
        );
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} encodings differ from Python:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    cases.len()
}

#[test]
fn byte_level_bpe_matches_python() {
    let tok = TextTokenizer::from_file(&fixtures().join("tokenizer.json")).unwrap();
    let n = check_against_golden("tokenizer.json", &tok);
    assert!(n >= 190, "only {n} golden cases");
}

#[test]
fn qwen_style_regex_split_matches_python() {
    let tok = TextTokenizer::from_file(&fixtures().join("qwen_style.json")).unwrap();
    let n = check_against_golden("qwen_style.json", &tok);
    assert!(n >= 190, "only {n} golden cases");
}

#[test]
fn demo_tokenizer_is_the_fixture() {
    let embedded =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/model/demo_tokenizer.json"))
            .unwrap();
    let fixture = std::fs::read(fixtures().join("tokenizer.json")).unwrap();
    assert!(
        embedded == fixture,
        "src/model/demo_tokenizer.json differs from the fixture"
    );
    check_against_golden("tokenizer.json", &TextTokenizer::demo());
}

#[test]
fn encoding_from_many_threads_agrees() {
    use rayon::prelude::*;
    let tok = TextTokenizer::demo();
    let golden = golden();
    let cases = golden["tokenizers"]["tokenizer.json"]["cases"]
        .as_array()
        .unwrap()
        .clone();
    let ok = (0..8)
        .into_par_iter()
        .flat_map(|_| cases.par_iter())
        .all(|case| {
            let want: Vec<u32> = case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            tok.encode(case["text"].as_str().unwrap()).unwrap() == want
        });
    assert!(ok);
}
