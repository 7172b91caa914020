//! Text encodings must equal the Python `tokenizers` library's, id for id, on the committed tiny
//! tokenizers (GPT-2 style byte-level BPE and a Qwen2 style NFC + regex-split one). The goldens
//! and tokenizers are made by `tests/fixtures/text/make_tokenizer.py`.

mod common;
use common::golden_ids;

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
        let want = golden_ids(case);
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
            let want = golden_ids(case);
            tok.encode(case["text"].as_str().unwrap()).unwrap() == want
        });
    assert!(ok);
}

fn load(name: &str) -> TextTokenizer {
    TextTokenizer::from_file(&fixtures().join(name)).unwrap()
}

/// Loads a variant of fixture `name` edited by `edit`.
fn load_edited(name: &str, edit: impl FnOnce(&mut Value)) -> TextTokenizer {
    let bytes = std::fs::read(fixtures().join(name)).unwrap();
    let mut json: Value = serde_json::from_slice(&bytes).unwrap();
    edit(&mut json);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tokenizer.json");
    std::fs::write(&p, json.to_string()).unwrap();
    TextTokenizer::from_file(&p).unwrap()
}

#[test]
fn both_fixtures_take_the_fast_path() {
    for name in ["tokenizer.json", "qwen_style.json"] {
        assert_eq!(load(name).fast_path(), Ok(()), "{name}");
    }
    assert_eq!(TextTokenizer::demo().fast_path(), Ok(()));
}

/// Deterministic random text made of pieces that stress each step: added tokens (whole and cut),
/// contractions, digits, whitespace runs of every kind, decomposed accents (NFC), CJK, emoji.
fn random_texts(n: usize, seed: u64) -> Vec<String> {
    const PIECES: &[&str] = &[
        "a",
        "the",
        "dog",
        "photo",
        "Running",
        "DOG",
        " ",
        " ",
        "  ",
        "   ",
        "\t",
        "\n",
        "\r\n",
        "\n\n",
        " \n ",
        "\u{a0}",
        "\u{3000}",
        "\u{2003}",
        "0",
        "7",
        "2024",
        "3.14",
        "1,000",
        "'s",
        "'S",
        "'ll",
        "'LL",
        "'ve",
        "'re",
        "'d",
        "'m",
        "'t",
        "'",
        "\"",
        ".",
        ",",
        "!?",
        "...",
        "-",
        "(",
        ")",
        "#",
        "@",
        "$5",
        "é",
        "e\u{301}",
        "A\u{30a}",
        "ñ",
        "ſ",
        "ß",
        "ﬁ",
        "一只猫",
        "窗台",
        "。",
        "、",
        "日本語",
        "한국어",
        "Привет",
        "مرحبا",
        "שלום",
        "🐱",
        "👍🏽",
        "👨\u{200d}👩\u{200d}👧",
        "🇫🇷",
        "\u{200b}",
        "\u{feff}",
        "<img>",
        "</img>",
        "<IMG_CONTEXT>",
        "<|endoftext|>",
        "<im",
        "g>",
        "<",
        ">",
        "<<img>>",
        "<img></img>",
        "\u{0}",
        "\u{7f}",
        "\u{1f}",
        "x\u{308}",
    ];
    let mut state = seed;
    let mut next = move || {
        // xorshift64*: reproducible without a dependency.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    (0..n)
        .map(|_| {
            let len = (next() % 24) as usize;
            (0..len)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect()
        })
        .collect()
}

fn assert_fast_equals_reference(what: &str, tok: &TextTokenizer, texts: &[String]) {
    assert_eq!(tok.fast_path(), Ok(()), "{what}");
    let mut failures = Vec::new();
    for t in texts {
        let (fast, hf) = (tok.encode(t).unwrap(), tok.encode_reference(t).unwrap());
        if fast != hf {
            failures.push(format!("{t:?}: fast {fast:?}, hf {hf:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{what}: {} of {} differ:\n{}",
        failures.len(),
        texts.len(),
        failures[..failures.len().min(20)].join("\n")
    );
}

#[test]
fn fast_path_equals_hf_on_random_text() {
    let texts = random_texts(3000, 0x5eed);
    for name in ["tokenizer.json", "qwen_style.json"] {
        assert_fast_equals_reference(name, &load(name), &texts);
    }
}

#[test]
fn fast_path_equals_hf_on_supported_variants() {
    let texts = random_texts(1000, 42);
    // Added tokens matched after normalization, and one that is not special.
    let normalized = |j: &mut Value| {
        for t in j["added_tokens"].as_array_mut().unwrap() {
            if t["content"] != "<|endoftext|>" {
                t["normalized"] = Value::Bool(true);
            }
        }
        j["added_tokens"][1]["special"] = Value::Bool(false);
    };
    for name in ["tokenizer.json", "qwen_style.json"] {
        assert_fast_equals_reference(
            &format!("{name} + normalized added tokens"),
            &load_edited(name, normalized),
            &texts,
        );
        assert_fast_equals_reference(
            &format!("{name} + ignore_merges"),
            &load_edited(name, |j| j["model"]["ignore_merges"] = Value::Bool(true)),
            &texts,
        );
        // Merges written as legacy "a b" strings.
        let legacy = |j: &mut Value| {
            let merges = j["model"]["merges"].as_array().unwrap().clone();
            j["model"]["merges"] = merges
                .iter()
                .map(|m| {
                    Value::String(format!(
                        "{} {}",
                        m[0].as_str().unwrap(),
                        m[1].as_str().unwrap()
                    ))
                })
                .collect();
        };
        assert_fast_equals_reference(
            &format!("{name} + legacy merges"),
            &load_edited(name, legacy),
            &texts,
        );
    }
    // The Llama-3 pre-tokenizer regex (digits in groups of up to three).
    let llama3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let tok = load_edited("qwen_style.json", |j| {
        j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = Value::String(llama3.into())
    });
    assert_fast_equals_reference("llama3 regex", &tok, &texts);
}

/// An edit of a tokenizer.json.
type Edit = Box<dyn Fn(&mut Value)>;

#[test]
fn unsupported_configurations_fall_back_and_still_match() {
    let texts = random_texts(300, 7);
    let cases: Vec<(&str, &str, Edit)> = vec![
        (
            "tokenizer.json",
            "prefix space",
            Box::new(|j| j["pre_tokenizer"]["add_prefix_space"] = Value::Bool(true)),
        ),
        (
            "tokenizer.json",
            "lstrip",
            Box::new(|j| j["added_tokens"][1]["lstrip"] = Value::Bool(true)),
        ),
        (
            "tokenizer.json",
            "rstrip",
            Box::new(|j| j["added_tokens"][1]["rstrip"] = Value::Bool(true)),
        ),
        (
            "tokenizer.json",
            "single_word",
            Box::new(|j| j["added_tokens"][1]["single_word"] = Value::Bool(true)),
        ),
        (
            "tokenizer.json",
            "dropout",
            Box::new(|j| j["model"]["dropout"] = serde_json::json!(0.5)),
        ),
        (
            "qwen_style.json",
            "NFKC",
            Box::new(|j| j["normalizer"]["type"] = Value::String("NFKC".into())),
        ),
        (
            "qwen_style.json",
            "merged-with-previous split",
            Box::new(|j| {
                j["pre_tokenizer"]["pretokenizers"][0]["behavior"] =
                    Value::String("MergedWithPrevious".into())
            }),
        ),
        (
            "qwen_style.json",
            "lookbehind regex",
            Box::new(|j| {
                j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] =
                    Value::String(r"(?<=a)b|\s+|\S+".into())
            }),
        ),
    ];
    for (name, what, edit) in cases {
        let tok = load_edited(name, edit);
        assert!(tok.fast_path().is_err(), "{name} + {what} should fall back");
        if what != "dropout" {
            for t in &texts {
                assert_eq!(tok.encode(t).unwrap(), tok.encode_reference(t).unwrap());
            }
        }
    }
}
