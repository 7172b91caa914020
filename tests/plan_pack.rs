//! `plan` then `pack` on the demo pool, through the library: the plan respects both limits and
//! places every sample once (or records why not); the packed arrays agree with each other
//! (cu_seqlens, position_ids, labels, image spans, tile rows) and with the plan; plans do not
//! depend on the thread count; materialized tiles equal what `tile` makes of the same image.

mod common;
use common::{load_i64, load_npy};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vlmprep::backend::{Backend, CpuBackend, TileSpec};
use vlmprep::image::decode::{DecodeOptions, decode};
use vlmprep::image::normalize::{Dtype, Normalization};
use vlmprep::image::resize::ResizeFilter;
use vlmprep::image::tiling::{InternVlSettings, Qwen2VlSettings, Tiler, TilingRule};
use vlmprep::model::tokenizer::TextTokenizer;
use vlmprep::pack::sample_cost::VisionTokens;
use vlmprep::pack::sequence::{ImageTokenIds, TextFormat};
use vlmprep::pipeline::pack::{IdsDtype, PackConfig, run_pack};
use vlmprep::pipeline::plan::{
    AlgoSetting, BalanceSettings, OversizeSetting, PlanSettings, TokenizerSource, run_plan,
};
use vlmprep::shard::{Shard, ShardSource, expand_inputs};
use vlmprep::sink::parquet::{PlanRow, read_plan};

const L: u32 = 8192;
const T: u32 = 24;

fn settings(tokenizer: &TextTokenizer, algo: AlgoSetting) -> PlanSettings {
    let id = |t: &str| {
        tokenizer
            .token_id(t)
            .expect("demo tokenizer has the image tokens")
    };
    PlanSettings {
        rule: TilingRule::InternVl(InternVlSettings::default()),
        vision: VisionTokens::PerTile(256),
        max_image_pixels: 89_478_485,
        ids: ImageTokenIds {
            start: id("<img>"),
            context: id("<IMG_CONTEXT>"),
            end: id("</img>"),
        },
        format: TextFormat::default(),
        tokenizer: TokenizerSource::Demo,
        tokens_per_pack: L,
        tiles_per_pack: Some(T),
        algo,
        oversize: OversizeSetting::Drop,
        seed: 7,
        balance: Some(BalanceSettings { world: 2 }),
    }
}

fn demo_pool(dir: &Path) -> Vec<ShardSource> {
    vlmprep::demo::build_demo_pool(&dir.join("pool")).unwrap();
    let spec = format!("{}/pool/pool-{{000000..000001}}.tar", dir.display());
    expand_inputs(&[spec]).unwrap()
}

fn packs_of(rows: &[PlanRow]) -> BTreeMap<u64, Vec<&PlanRow>> {
    let mut packs: BTreeMap<u64, Vec<&PlanRow>> = BTreeMap::new();
    for row in rows {
        if let Some(id) = row.pack_id {
            packs.entry(id).or_default().push(row);
        }
    }
    packs
}

#[test]
fn plan_places_every_sample_within_both_limits() {
    let dir = tempfile::tempdir().unwrap();
    let sources = demo_pool(dir.path());
    let tokenizer = TextTokenizer::demo();
    let s = settings(&tokenizer, AlgoSetting::Bfd);
    let (summary, problems) =
        run_plan(&sources, &s, &tokenizer, &dir.path().join("plan"), &|| {}).unwrap();
    let rows = read_plan(&dir.path().join("plan/plan.parquet")).unwrap();

    assert_eq!(rows.len(), summary.samples);
    assert_eq!(
        summary.samples, 26,
        "24 image samples + 2 caption-only orphans"
    );
    // The HTML page saved as .jpg cannot be probed: failed, recorded, not packed.
    let failed: Vec<&PlanRow> = rows.iter().filter(|r| r.placement == "failed").collect();
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("unknown-format")
    );
    assert!(failed[0].pack_id.is_none());
    assert_eq!(problems.counts().get("unknown-format"), Some(&1));
    // Caption-only samples are text-only samples: packed, no tiles.
    assert!(
        rows.iter()
            .any(|r| r.images == 0 && r.pack_id.is_some() && r.text_tokens > 0)
    );

    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.sample, i as u64);
        assert_eq!(
            row.tokens,
            row.image_tokens + row.text_tokens,
            "{}",
            row.key
        );
        if row.placement == "packed" {
            assert!(row.pack_id.is_some() && row.slot.is_some());
        }
        // InternVL: 256 context tokens per tile plus start and end per image.
        if row.placement == "failed" {
            continue;
        }
        assert_eq!(
            row.image_tokens,
            256 * row.tiles + 2 * row.images,
            "{}",
            row.key
        );
    }
    let packs = packs_of(&rows);
    assert_eq!(packs.len(), summary.packs);
    assert_eq!(
        packs.keys().copied().collect::<Vec<_>>(),
        (0..summary.packs as u64).collect::<Vec<_>>()
    );
    for (id, pack) in &packs {
        let tokens: u32 = pack.iter().map(|r| r.tokens).sum();
        let tiles: u32 = pack.iter().map(|r| r.tiles).sum();
        assert!(
            tokens <= L && tiles <= T,
            "pack {id}: {tokens} tokens, {tiles} tiles"
        );
        let mut slots: Vec<u32> = pack.iter().map(|r| r.slot.unwrap()).collect();
        slots.sort();
        assert_eq!(slots, (0..pack.len() as u32).collect::<Vec<_>>());
    }
    assert!(summary.packs as u64 >= summary.lower_bound);
}

#[test]
fn plan_does_not_depend_on_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let sources = demo_pool(dir.path());
    let tokenizer = TextTokenizer::demo();
    for algo in [
        AlgoSetting::Bfd,
        AlgoSetting::Online { buffer: 4 },
        AlgoSetting::Ordered,
    ] {
        let s = settings(&tokenizer, algo);
        let plan_with = |threads: usize, name: &str| {
            let out = dir.path().join(name);
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| run_plan(&sources, &s, &tokenizer, &out, &|| {}).unwrap());
            std::fs::read(out.join("plan.parquet")).unwrap()
        };
        assert_eq!(plan_with(1, "one"), plan_with(3, "three"), "{algo:?}");
    }
}

#[test]
fn packed_arrays_agree_with_each_other_and_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let sources = demo_pool(dir.path());
    let tokenizer = TextTokenizer::demo();
    let s = settings(&tokenizer, AlgoSetting::Bfd);
    let plan_dir = dir.path().join("plan");
    run_plan(&sources, &s, &tokenizer, &plan_dir, &|| {}).unwrap();
    let rows = read_plan(&plan_dir.join("plan.parquet")).unwrap();
    let spec = TileSpec {
        filter: ResizeFilter::Bicubic,
        dtype: Dtype::U8,
        norm: Normalization::IMAGENET,
    };
    let cfg = PackConfig {
        plan_dir: plan_dir.clone(),
        out: dir.path().join("packs"),
        materialize: true,
        spec,
        decode: DecodeOptions::default(),
        ids_dtype: IdsDtype::I64,
        packs_per_shard: 4,
        chunk_bytes: 8 << 20,
    };
    let bar = indicatif::ProgressBar::hidden();
    let (summary, problems) = run_pack(&CpuBackend, &cfg, &tokenizer, &bar).unwrap();
    // The truncated JPEG has a good header: planned and packed, then left out when it fails
    // to decode.
    assert_eq!(summary.left_out, 1);
    assert_eq!(problems.counts().get("decode"), Some(&1));
    let planned_packs = packs_of(&rows);
    assert_eq!(summary.packs, planned_packs.len());

    let mut pack_id = 0u64;
    let mut folders: Vec<PathBuf> = std::fs::read_dir(&cfg.out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    folders.sort();
    assert_eq!(folders.len(), planned_packs.len().div_ceil(4));
    let tiler = Tiler::new(s.rule).unwrap();
    for folder in &folders {
        let ids = load_i64(&folder.join("input_ids.npy"));
        let labels = load_i64(&folder.join("labels.npy"));
        let positions = load_i64(&folder.join("position_ids.npy"));
        let pack_offsets = load_i64(&folder.join("pack_offsets.npy"));
        let cu = load_i64(&folder.join("cu_seqlens.npy"));
        let cu_offsets = load_i64(&folder.join("cu_offsets.npy"));
        let spans = load_i64(&folder.join("image_spans.npy"));
        let tile_offsets = load_i64(&folder.join("tile_offsets.npy"));
        let (descr, pixel_shape, pixels) = load_npy(&folder.join("pixel_values.npy"));
        assert_eq!(descr, "|u1");
        assert_eq!(&pixel_shape[1..], &[448, 448, 3]);
        assert_eq!(pixel_shape[0] as i64, *tile_offsets.last().unwrap());
        assert_eq!(pixels.len(), pixel_shape.iter().product::<usize>());
        assert_eq!(ids.len(), labels.len());
        assert_eq!(ids.len(), positions.len());
        assert_eq!(*pack_offsets.last().unwrap() as usize, ids.len());
        let packs_here = pack_offsets.len() - 1;
        assert_eq!(cu_offsets.len() - 1, packs_here);
        assert_eq!(tile_offsets.len() - 1, packs_here);

        for p in 0..packs_here {
            let (a, b) = (pack_offsets[p] as usize, pack_offsets[p + 1] as usize);
            let seqlens = &cu[cu_offsets[p] as usize..cu_offsets[p + 1] as usize];
            assert_eq!(seqlens[0], 0);
            assert_eq!(*seqlens.last().unwrap() as usize, b - a);
            assert!(b - a <= L as usize);
            // One sample per cu_seqlens gap: positions restart, the first label is masked.
            for w in seqlens.windows(2) {
                assert!(w[0] < w[1]);
                for (k, t) in (a + w[0] as usize..a + w[1] as usize).enumerate() {
                    assert_eq!(positions[t], k as i64);
                }
                assert_eq!(labels[a + w[0] as usize], -100);
            }
            let planned = &planned_packs[&pack_id];
            let kept: Vec<&&PlanRow> = planned.iter().filter(|r| r.key != "000000016").collect();
            assert_eq!(seqlens.len() - 1, kept.len(), "pack {pack_id}");
            let planned_tokens: u32 = kept.iter().map(|r| r.tokens).sum();
            assert_eq!(planned_tokens as usize, b - a, "pack {pack_id}");

            // Image spans: start, context × n, end; labels masked; tile rows add up.
            let mut tiles_seen = 0;
            for span in spans.chunks_exact(5).filter(|s| s[0] == p as i64) {
                let (start, len, tile_start, tiles) = (span[1], span[2], span[3], span[4]);
                let t0 = a + start as usize;
                let t1 = t0 + len as usize;
                assert_eq!(ids[t0], i64::from(s.ids.start));
                assert_eq!(ids[t1 - 1], i64::from(s.ids.end));
                assert!(
                    ids[t0 + 1..t1 - 1]
                        .iter()
                        .all(|&t| t == i64::from(s.ids.context))
                );
                assert_eq!(len - 2, 256 * tiles);
                assert!(labels[t0..t1].iter().all(|&l| l == -100));
                assert_eq!(tile_start, tiles_seen);
                tiles_seen += tiles;
            }
            assert_eq!(tiles_seen, tile_offsets[p + 1] - tile_offsets[p]);
            pack_id += 1;
        }
        // Materialized tiles equal a direct decode + tile of the first image of the folder.
        let lines = std::fs::read_to_string(folder.join("packs.jsonl")).unwrap();
        let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
        let sample = &first["samples"][0];
        let key = sample["key"].as_str().unwrap();
        let row = rows.iter().find(|r| r.key == key).unwrap();
        if row.images == 1 {
            let shard = Shard::open(&ShardSource::Tar(PathBuf::from(&row.shard))).unwrap();
            let entry = shard.samples().iter().find(|e| e.key == key).unwrap();
            let member = entry
                .members
                .iter()
                .find(|m| m.offset == row.image_offsets[0])
                .unwrap();
            let data = shard.member_data(member).unwrap();
            let image = decode(&data, &DecodeOptions::default()).unwrap().image;
            let plan = tiler.plan(image.width, image.height).unwrap();
            let tiles = CpuBackend
                .tiles_to_host(CpuBackend.tile_batch(&[&image], &[plan], &spec).unwrap())
                .unwrap();
            assert_eq!(&pixels[..tiles.data.len()], &tiles.data[..], "{key}");
        }
    }
    assert_eq!(pack_id as usize, planned_packs.len());
}

/// Qwen2-VL packs: `pixel_values` holds flattened 14 px patches, `image_grid_thw` one grid per
/// image span, each span's rows are its grid's squares (back to back), and its context tokens
/// are those squares merged 2×2.
#[test]
fn qwen2vl_packs_carry_patches_that_match_grids_and_spans() {
    let dir = tempfile::tempdir().unwrap();
    let sources = demo_pool(dir.path());
    let tokenizer = TextTokenizer::demo();
    let rule = Qwen2VlSettings {
        max_pixels: 28 * 28 * 64,
        ..Qwen2VlSettings::default()
    };
    let s = PlanSettings {
        rule: TilingRule::Qwen2Vl(rule),
        vision: VisionTokens::ResizedArea { factor: 28 },
        tiles_per_pack: None,
        ..settings(&tokenizer, AlgoSetting::Bfd)
    };
    let plan_dir = dir.path().join("plan");
    run_plan(&sources, &s, &tokenizer, &plan_dir, &|| {}).unwrap();
    let mut cfg = PackConfig {
        plan_dir,
        out: dir.path().join("packs"),
        materialize: true,
        spec: TileSpec {
            filter: ResizeFilter::Bicubic,
            dtype: Dtype::U8,
            norm: Normalization::CLIP,
        },
        decode: DecodeOptions::default(),
        ids_dtype: IdsDtype::I64,
        packs_per_shard: 4,
        chunk_bytes: 8 << 20,
    };
    let bar = indicatif::ProgressBar::hidden();
    // u8 patches are refused before any work: the model takes normalized floats.
    assert!(run_pack(&CpuBackend, &cfg, &tokenizer, &bar).is_err());
    cfg.spec.dtype = Dtype::F32;
    let (summary, _) = run_pack(&CpuBackend, &cfg, &tokenizer, &bar).unwrap();
    assert!(summary.tiles > 0);

    let mut images = 0;
    for entry in std::fs::read_dir(&cfg.out).unwrap() {
        let folder = entry.unwrap().path();
        if !folder.is_dir() {
            continue;
        }
        let spans = load_i64(&folder.join("image_spans.npy"));
        let grids = load_i64(&folder.join("image_grid_thw.npy"));
        let tile_offsets = load_i64(&folder.join("tile_offsets.npy"));
        let (descr, shape, _) = load_npy(&folder.join("pixel_values.npy"));
        assert_eq!(descr, "<f4");
        assert_eq!(shape[1..], [3 * 2 * 14 * 14]);
        assert_eq!(shape[0] as i64, *tile_offsets.last().unwrap());
        assert_eq!(grids.len() / 3, spans.len() / 5);
        let mut next_row = vec![0i64; tile_offsets.len() - 1];
        for (span, grid) in spans.chunks_exact(5).zip(grids.chunks_exact(3)) {
            let (pack, len, row, rows) = (span[0] as usize, span[2], span[3], span[4]);
            assert_eq!(grid[0], 1);
            assert_eq!(rows, grid[0] * grid[1] * grid[2]);
            assert_eq!(len - 2, rows / 4, "context tokens = squares merged 2x2");
            assert_eq!(row, next_row[pack]);
            next_row[pack] += rows;
            images += 1;
        }
        for (p, rows) in next_row.iter().enumerate() {
            assert_eq!(*rows, tile_offsets[p + 1] - tile_offsets[p]);
        }
    }
    assert!(images > 0);
}
