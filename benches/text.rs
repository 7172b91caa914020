//! Text-side costs per sample: tokenizing short captions (the planner encodes every caption once),
//! reading a sample's `.txt`/`.json`, and building its token layout.
//!
//! `cargo bench --bench text`. Throughput is in captions (samples) per second.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vlmprep::model::tokenizer::TextTokenizer;
use vlmprep::pack::sample_text::parse_sample_text;
use vlmprep::pack::sequence::{ImageTokenIds, TextFormat, build_sequence};

/// Caption-like texts of typical length (40–80 bytes), mixed scripts.
const CAPTIONS: [&str; 8] = [
    "A photo of a dog running on the beach at sunset.",
    "Two people riding bicycles down a city street in the rain.",
    "一只猫坐在窗台上。 A cat on a windowsill 🐱",
    "An aerial view of a river winding through a green forest, 2024.",
    "Close-up of a red apple on a wooden table, shallow depth of field",
    "Une photo d'un chat noir assis sur une chaise.",
    "The bar chart compares sales in 2021, 2022 and 2023.",
    "black and white photo of an old building with tall windows",
];

fn tokenizers() -> Vec<(&'static str, TextTokenizer)> {
    let qwen = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/text/qwen_style.json");
    vec![
        ("bytelevel_bpe", TextTokenizer::demo()),
        ("qwen_style_bpe", TextTokenizer::from_file(&qwen).unwrap()),
        ("bytes", TextTokenizer::bytes()),
    ]
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("cpu/text_encode");
    group.throughput(Throughput::Elements(CAPTIONS.len() as u64));
    for (name, tok) in tokenizers() {
        group.bench_function(name, |b| {
            b.iter(|| {
                for cap in CAPTIONS {
                    black_box(tok.encode(black_box(cap)).unwrap());
                }
            })
        });
    }
    group.finish();

    // The same captions through the `tokenizers` crate, for the fast path's speed-up.
    let mut group = c.benchmark_group("cpu/text_encode_hf_reference");
    group.throughput(Throughput::Elements(CAPTIONS.len() as u64));
    for (name, tok) in tokenizers() {
        if tok.fast_path().is_err() {
            continue;
        }
        group.bench_function(name, |b| {
            b.iter(|| {
                for cap in CAPTIONS {
                    black_box(tok.encode_reference(black_box(cap)).unwrap());
                }
            })
        });
    }
    group.finish();
}

fn parse_and_layout(c: &mut Criterion) {
    let tok = TextTokenizer::demo();
    let ids = ImageTokenIds::internvl(&tok).unwrap();
    let fmt = TextFormat::default();
    let json = br#"{"url": "http://example.com/a.jpg", "key": "000000001", "width": 640,
                    "height": 480, "caption": "A photo of a dog running on the beach."}"#;
    let conv = br#"{"conversations": [{"from": "human", "value": "<image>\nWhat is this?"},
                    {"from": "gpt", "value": "A dog running on the beach at sunset."}]}"#;

    let mut group = c.benchmark_group("cpu/sample_text");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_img2dataset_json", |b| {
        b.iter(|| parse_sample_text(None, Some(black_box(json))).unwrap())
    });
    group.bench_function("parse_and_layout_caption", |b| {
        b.iter(|| {
            let text = parse_sample_text(Some(black_box(CAPTIONS[0].as_bytes())), None).unwrap();
            build_sequence(&text, &tok, &[256], &ids, &fmt).unwrap()
        })
    });
    group.bench_function("parse_and_layout_conversation", |b| {
        b.iter(|| {
            let text = parse_sample_text(None, Some(black_box(conv))).unwrap();
            build_sequence(&text, &tok, &[256], &ids, &fmt).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, encode, parse_and_layout);
criterion_main!(benches);
