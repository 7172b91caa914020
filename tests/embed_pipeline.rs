//! `embed` end to end on the demo pool with the tiny SigLIP fixture: every sample is embedded
//! or recorded, the files agree with each other and with the model called directly.

mod common;

use std::path::Path;

use common::{load_f32, load_npy};
use vlmprep::backend::CpuBackend;
use vlmprep::image::decode::{DecodeOptions, decode_rgb8};
use vlmprep::model::siglip::{SiglipModel, sigmoid};
use vlmprep::pipeline::embed::{EmbedConfig, run_embed};
use vlmprep::shard::{Shard, expand_inputs};

#[test]
fn embeds_every_good_sample_and_records_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    vlmprep::demo::build_demo_pool(&tmp.path().join("pool")).unwrap();
    let spec = format!("{}/pool/pool-{{000000..000001}}.tar", tmp.path().display());
    let sources = expand_inputs(&[spec]).unwrap();
    let model_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/siglip/tiny-a");
    let model = SiglipModel::load(&model_dir, CpuBackend).unwrap();
    let out = tmp.path().join("embeds");
    let cfg = EmbedConfig {
        out: out.clone(),
        batch: 5, // several batches per shard, the last one short
        decode: DecodeOptions::default(),
    };
    let bar = indicatif::ProgressBar::hidden();
    let (summary, problems) = run_embed(&model, "cpu", &sources, &cfg, &bar).unwrap();

    // every sample is embedded or named in a problem (orphan captions, the bad images)
    let bad: std::collections::HashSet<String> = problems
        .problems
        .iter()
        .filter(|p| p.kind != "no-caption")
        .filter_map(|p| p.key.clone())
        .collect();
    assert_eq!(
        summary.embedded + bad.len(),
        summary.samples,
        "{problems:?}"
    );
    assert!(problems.counts().contains_key("decode"));
    assert!(problems.counts().contains_key("unknown-format"));

    let keys: Vec<String> = std::fs::read_to_string(out.join("keys.txt"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(keys.len(), summary.embedded);
    assert!(keys.iter().all(|k| !bad.contains(k)));
    let d = model.embed_dim();
    let (_, shape, _) = load_npy(&out.join("image_embeds.npy"));
    assert_eq!(shape, vec![keys.len(), d]);
    let img = load_f32(&out.join("image_embeds.npy"));
    let txt = load_f32(&out.join("text_embeds.npy"));
    let scores = load_f32(&out.join("scores.npy"));
    assert_eq!((txt.len(), scores.len()), (img.len(), keys.len()));

    // row i is key i: recompute one sample directly through the model
    let i = keys.len() / 2;
    let shard = Shard::open(&sources[0]).unwrap();
    let (sample, shard) = match shard.samples().iter().find(|s| s.key == keys[i]) {
        Some(s) => (s.clone(), shard),
        None => {
            let other = Shard::open(&sources[1]).unwrap();
            let s = other
                .samples()
                .iter()
                .find(|s| s.key == keys[i])
                .unwrap()
                .clone();
            (s, other)
        }
    };
    let member = vlmprep::pipeline::image_member(&sample).unwrap();
    let image = decode_rgb8(
        &shard.member_data(member).unwrap(),
        &DecodeOptions::default(),
    )
    .unwrap();
    let direct = model.embed_images(&[&image]).unwrap();
    assert_eq!(&img[i * d..(i + 1) * d], &direct[..]);
    let caption = String::from_utf8(
        shard
            .member_data(sample.member("txt").unwrap())
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    let direct_txt = model
        .embed_texts(&[caption.trim_end_matches('\n')])
        .unwrap();
    assert_eq!(&txt[i * d..(i + 1) * d], &direct_txt[..]);
    let want = sigmoid(model.pair_logit(&direct, &direct_txt));
    assert!((scores[i] - want).abs() < 1e-6);
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
    assert!(out.join("embeds.parquet").is_file());
    assert!(out.join("summary.json").is_file());
}
