//! Pixel parity with Pillow: each committed input is decoded, planned and tiled by vlmprep's CPU
//! backend and compared with the tiles Pillow makes (tests/fixtures/pixels/make_pixels.py):
//! the mean absolute difference must be ≤ 1.0 level per image; the max difference is reported.

use std::path::Path;

use serde_json::Value;
use vlmprep::backend::{Backend, CpuBackend, TileSpec};
use vlmprep::image::decode::{DecodeOptions, decode_rgb8};
use vlmprep::image::normalize::{Dtype, Normalization};
use vlmprep::image::probe::probe;
use vlmprep::image::resize::ResizeFilter;
use vlmprep::image::tiling::{InternVlSettings, Qwen2VlSettings, TilingRule, plan};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pixels");

fn rule_of(case: &Value) -> TilingRule {
    let s = &case["settings"];
    let n = |k: &str| s[k].as_u64().unwrap();
    match case["rule"].as_str().unwrap() {
        "internvl" => TilingRule::InternVl(InternVlSettings {
            tile_size: n("tile_size") as u32,
            min_tiles: n("min_tiles") as u32,
            max_tiles: n("max_tiles") as u32,
            thumbnail: s["thumbnail"].as_bool().unwrap(),
        }),
        "qwen2vl" => TilingRule::Qwen2Vl(Qwen2VlSettings {
            factor: n("factor") as u32,
            min_pixels: n("min_pixels"),
            max_pixels: n("max_pixels"),
        }),
        "fixed" => TilingRule::Fixed {
            size: n("size") as u32,
        },
        other => panic!("unknown rule {other}"),
    }
}

#[test]
fn tiles_match_pillow_within_one_level() {
    let cases: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(Path::new(FIXTURES).join("cases.json")).unwrap(),
    )
    .unwrap();
    assert!(cases.len() >= 50, "fixture has {} cases", cases.len());
    let spec = TileSpec {
        filter: ResizeFilter::Bicubic,
        dtype: Dtype::U8,
        norm: Normalization::SIGLIP,
    };
    let mut failures = Vec::new();
    println!("{:<28} {:<9} {:>6} {:>4}", "input", "rule", "mad", "max");
    for case in &cases {
        let input = case["input"].as_str().unwrap();
        let data = std::fs::read(Path::new(FIXTURES).join("inputs").join(input)).unwrap();
        let header = probe(&data).unwrap();
        let (w, h) = header.oriented_size();
        assert_eq!(
            (w as u64, h as u64),
            (
                case["width"].as_u64().unwrap(),
                case["height"].as_u64().unwrap()
            ),
            "{input}"
        );
        let p = plan(&rule_of(case), w, h).unwrap();
        let expected_resize = case["resize"].as_array().unwrap();
        assert_eq!(
            p.resize.0 as u64,
            expected_resize[0].as_u64().unwrap(),
            "{input} {}",
            case["rule"]
        );
        assert_eq!(
            p.resize.1 as u64,
            expected_resize[1].as_u64().unwrap(),
            "{input} {}",
            case["rule"]
        );
        assert_eq!(
            p.num_tiles() as u64,
            case["tiles"].as_u64().unwrap(),
            "{input} {}",
            case["rule"]
        );

        let image = decode_rgb8(&data, &DecodeOptions::default()).unwrap();
        let tiles = CpuBackend.tile_batch(&[&image], &[p], &spec).unwrap();
        let reference_png = std::fs::read(
            Path::new(FIXTURES)
                .join("reference")
                .join(case["reference"].as_str().unwrap()),
        )
        .unwrap();
        let reference = decode_rgb8(&reference_png, &DecodeOptions::default()).unwrap();
        assert_eq!(
            reference.data.len(),
            tiles.data.len(),
            "{input} {}: tile bytes",
            case["rule"]
        );

        let (mut sum, mut max) = (0u64, 0u8);
        for (a, b) in tiles.data.iter().zip(&reference.data) {
            let d = a.abs_diff(*b);
            sum += d as u64;
            max = max.max(d);
        }
        let mad = sum as f64 / tiles.data.len() as f64;
        println!(
            "{input:<28} {:<9} {mad:>6.3} {max:>4}",
            case["rule"].as_str().unwrap()
        );
        if mad > 1.0 {
            failures.push(format!(
                "{input} {}: mean abs diff {mad:.3} (max {max})",
                case["rule"]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "tiles differ from Pillow's:\n{}",
        failures.join("\n")
    );
}
