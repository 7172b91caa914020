//! SigLIP parity with transformers on the two tiny random-weight models made by
//! tests/fixtures/siglip/make_siglip.py (goldens computed there by transformers):
//! image features, text features and logits within 1e-4 (f32), token ids exactly, and pixel
//! values within the foundation resize's one-level tolerance. Plus the loading errors.

mod common;

use std::path::{Path, PathBuf};

use common::{golden_ids, load_f32, load_i64, load_npy};
use vlmprep::backend::CpuBackend;
use vlmprep::image::decode::{DecodeOptions, decode_rgb8};
use vlmprep::model::siglip::{SiglipModel, SiglipTextInput, preprocess};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/siglip")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn captions(golden: &Path) -> (Vec<String>, Vec<String>) {
    let inputs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden.join("inputs.json")).unwrap())
            .unwrap();
    let list = |k: &str| {
        inputs[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    (list("images"), list("captions"))
}

fn check_model(name: &str, golden: &str) {
    let dir = fixtures().join(name);
    let golden = fixtures().join(golden);
    let model = SiglipModel::load(&dir, CpuBackend).unwrap();
    let d = model.embed_dim();
    let (image_names, caption_list) = captions(&golden);

    // image features from transformers' own pixel values: the model alone
    let pixels = load_f32(&golden.join("pixel_values.npy"));
    let want_img = load_f32(&golden.join("image_embeds.npy"));
    let img = model.image_features(&pixels).unwrap();
    let diff = max_abs_diff(&img, &want_img);
    assert!(diff <= 1e-4, "{name}: image features differ by {diff}");

    // token ids, then text features from them
    let want_ids: Vec<u32> = load_i64(&golden.join("input_ids.npy"))
        .into_iter()
        .map(|v| v as u32)
        .collect();
    let mut ids = Vec::new();
    for c in &caption_list {
        ids.extend(model.text_input.encode(c).unwrap());
    }
    assert_eq!(ids, want_ids, "{name}: caption ids");
    let txt = model.text_features(&ids).unwrap();
    let want_txt = load_f32(&golden.join("text_embeds.npy"));
    let diff = max_abs_diff(&txt, &want_txt);
    assert!(diff <= 1e-4, "{name}: text features differ by {diff}");

    // logits of every image against every caption
    let want_logits = load_f32(&golden.join("logits_per_image.npy"));
    let n_txt = caption_list.len();
    for (i, row) in want_logits.chunks(n_txt).enumerate() {
        for (j, &want) in row.iter().enumerate() {
            let got = model.pair_logit(&img[i * d..(i + 1) * d], &txt[j * d..(j + 1) * d]);
            assert!(
                (got - want).abs() <= 1e-4,
                "{name}: logit[{i}][{j}] {got} vs {want}"
            );
        }
    }

    // our preprocessing against transformers' (Pillow decode + resize): the foundation's
    // criterion, mean absolute difference per image within one level of 255; the largest
    // single difference is printed (JPEG decoders and resize rounding differ on noise)
    let images: Vec<_> = image_names
        .iter()
        .map(|n| {
            let bytes = std::fs::read(fixtures().join("images").join(n)).unwrap();
            decode_rgb8(&bytes, &DecodeOptions::default()).unwrap()
        })
        .collect();
    let refs: Vec<_> = images.iter().collect();
    let ours = preprocess::pixel_values(&refs, &model.preprocess).unwrap();
    let (_, std) = model.preprocess.normalize.unwrap();
    let level = 1.0 / 255.0 / std[0];
    let per = ours.len() / refs.len();
    for (i, (a, b)) in ours.chunks(per).zip(pixels.chunks(per)).enumerate() {
        let mean = a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / per as f32;
        let max = max_abs_diff(a, b);
        eprintln!(
            "{name} {}: pixel values mean {:.3} max {:.1} levels",
            image_names[i],
            mean / level,
            max / level
        );
        assert!(
            mean <= level,
            "{name} {}: mean {} levels",
            image_names[i],
            mean / level
        );
        // A PNG decodes to the same pixels everywhere, and the resize is Pillow's own
        // arithmetic: transformers' pixel values exactly (up to the f32 normalize).
        if image_names[i].ends_with(".png") {
            assert!(
                max <= 1e-6,
                "{name} {}: PNG pixel values differ by {} levels",
                image_names[i],
                max / level
            );
        }
    }
    // and the features of our own preprocessing point where transformers' do: a random-weight
    // model amplifies the small pixel differences, so this is a direction check, not 1e-4
    let end_to_end = model.embed_images(&refs).unwrap();
    for (i, (a, b)) in end_to_end.chunks(d).zip(want_img.chunks(d)).enumerate() {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let cos = dot / (norm(a) * norm(b));
        eprintln!("{name} {}: end-to-end cosine {cos:.6}", image_names[i]);
        assert!(cos > 0.999, "{name} {}: cosine {cos}", image_names[i]);
    }
}

#[test]
fn tiny_a_f32_single_file_matches_transformers() {
    check_model("tiny-a", "golden-a");
}

#[test]
fn tiny_b_bf16_sharded_matches_transformers() {
    check_model("tiny-b", "golden-b");
}

#[test]
fn tokenizer_ids_match_transformers_on_hard_strings() {
    let cases: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("tokenizer_cases.json")).unwrap(),
    )
    .unwrap();
    let a = SiglipModel::load(&fixtures().join("tiny-a"), CpuBackend).unwrap();
    let b = SiglipModel::load(&fixtures().join("tiny-b"), CpuBackend).unwrap();
    let mut checked = 0;
    for case in &cases {
        let text = case["text"].as_str().unwrap();
        let want = golden_ids(case);
        let model = if case["model"] == "tiny-a" { &a } else { &b };
        assert_eq!(
            model.text_input.encode(text).unwrap(),
            want,
            "{}: {text:?}",
            case["model"]
        );
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} cases");
}

/// A folder whose tokenizer is a `tokenizer.json` (SigLIP 2 style), against transformers'
/// AutoTokenizer on the same hard strings (fixture: make_tokenizer_json.py): truncation keeps
/// the appended `</s>`, padding uses the config's `<pad>`.
#[test]
fn tokenizer_json_ids_match_transformers_on_hard_strings() {
    let cases: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("tokenizer_json_cases.json")).unwrap(),
    )
    .unwrap();
    let tok = SiglipTextInput::from_dir(&fixtures().join("tok-json"), 16, None).unwrap();
    assert!(cases.len() >= 20, "only {} cases", cases.len());
    for case in &cases {
        let text = case["text"].as_str().unwrap();
        let want = golden_ids(case);
        assert_eq!(tok.encode(text).unwrap(), want, "{text:?}");
    }
}

/// A copy of tiny-a in a temp folder, for breaking it.
fn broken_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join("tiny-a")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    tmp
}

/// Rewrites model.safetensors with `edit` applied to its JSON header (data kept).
fn edit_header(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&path, out).unwrap();
}

fn load_error(dir: &Path) -> String {
    match SiglipModel::load(dir, CpuBackend) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_tensor_is_named() {
    let tmp = broken_copy();
    edit_header(tmp.path(), |h| {
        // renamed rather than removed: safetensors refuses data no header entry covers
        let t = h.remove("vision_model.post_layernorm.weight").unwrap();
        h.insert("unused.renamed".into(), t);
    });
    let e = load_error(tmp.path());
    assert!(
        e.contains("vision_model.post_layernorm.weight") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn wrong_shape_is_named_with_both_shapes() {
    let tmp = broken_copy();
    edit_header(tmp.path(), |h| {
        // same byte count, other shape: [64, 32] stored as [32, 64]
        h["text_model.encoder.layers.0.mlp.fc1.weight"]["shape"] = serde_json::json!([32, 64]);
    });
    let e = load_error(tmp.path());
    assert!(
        e.contains("text_model.encoder.layers.0.mlp.fc1.weight")
            && e.contains("[32, 64]")
            && e.contains("[64, 32]"),
        "{e}"
    );
}

#[test]
fn corrupt_safetensors_header_is_reported() {
    let tmp = broken_copy();
    let path = tmp.path().join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..20].copy_from_slice(b"garbage!!!!!");
    std::fs::write(&path, bytes).unwrap();
    let e = load_error(tmp.path());
    assert!(
        e.contains("model.safetensors") && e.contains("not a valid safetensors"),
        "{e}"
    );
}

#[test]
fn missing_tokenizer_and_config_are_reported() {
    let tmp = broken_copy();
    std::fs::remove_file(tmp.path().join("spiece.model")).unwrap();
    let e = load_error(tmp.path());
    assert!(e.contains("no tokenizer"), "{e}");
    std::fs::remove_file(tmp.path().join("config.json")).unwrap();
    let e = load_error(tmp.path());
    assert!(e.contains("config.json"), "{e}");
    let e = load_error(&tmp.path().join("nope"));
    assert!(e.contains("not a folder"), "{e}");
}

#[test]
fn golden_files_have_the_expected_shapes() {
    // guards the fixtures themselves: a regenerated fixture with other shapes fails here first
    let (descr, shape, _) = load_npy(&fixtures().join("golden-b/pixel_values.npy"));
    assert_eq!((descr.as_str(), shape), ("<f4", vec![6, 3, 42, 42]));
}
