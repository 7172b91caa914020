//! `tile`'s path for backends that decode on their device (nvJPEG on CUDA), run in CI through
//! a stand-in backend that "decodes on its device" with the CPU decoder: the chunk planning from
//! headers, the per-image decode errors kept out of the batch and recorded, and the writer
//! thread must give exactly what the CPU path gives (index, tiles and problems), whatever the
//! chunking. On a GPU, the same path runs with `CudaDecodeTile`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use vlmprep::backend::{Backend, CpuBackend, HostTiles, TileSpec, split_decoded};
use vlmprep::error::{Error, Result};
use vlmprep::image::RgbImage;
use vlmprep::image::decode::{DecodeOptions, decode_rgb8};
use vlmprep::image::normalize::{Dtype, Normalization};
use vlmprep::image::resize::ResizeFilter;
use vlmprep::image::tiling::{TilePlan, TilingRule};
use vlmprep::pipeline::tile::{TileConfig, run_tile};
use vlmprep::shard::ShardSource;

/// The CPU backend, but taking encoded images as a decoding device does. With `fail_download`
/// set, bringing the tiles "to the host" fails from that download on (0: the first).
#[derive(Default)]
struct DecodesItself {
    fail_download: Option<usize>,
    downloads: AtomicUsize,
}

impl Backend for DecodesItself {
    type Tiles = HostTiles;

    fn name(&self) -> String {
        "cpu, decoding as a device".into()
    }

    fn tile_batch(
        &self,
        images: &[&RgbImage],
        plans: &[TilePlan],
        spec: &TileSpec,
    ) -> Result<HostTiles> {
        CpuBackend.tile_batch(images, plans, spec)
    }

    fn tiles_to_host(&self, tiles: HostTiles) -> Result<HostTiles> {
        let n = self.downloads.fetch_add(1, Ordering::Relaxed);
        match self.fail_download {
            Some(at) if n >= at => Err(Error::cuda(format!("download {n} failed"))),
            _ => Ok(tiles),
        }
    }

    fn decodes(&self) -> bool {
        true
    }

    fn decode_tile_batch(
        &self,
        encoded: &[&[u8]],
        plans: &[TilePlan],
        spec: &TileSpec,
        max_pixels: u64,
    ) -> Result<(HostTiles, Vec<Option<Error>>)> {
        let opts = DecodeOptions {
            max_pixels,
            ..DecodeOptions::default()
        };
        let decoded = encoded.iter().map(|e| decode_rgb8(e, &opts));
        let (images, kept, errors) = split_decoded(decoded, plans);
        let refs: Vec<&RgbImage> = images.iter().collect();
        let tiles = CpuBackend.tile_batch(&refs, &kept, spec)?;
        Ok((tiles, errors))
    }
}

fn config(out: PathBuf, chunk_bytes: u64) -> TileConfig {
    TileConfig {
        rule: TilingRule::Fixed { size: 64 },
        spec: TileSpec {
            filter: ResizeFilter::Bicubic,
            dtype: Dtype::F32,
            norm: Normalization::SIGLIP,
        },
        decode: DecodeOptions::default(),
        dct_scaling: false,
        out,
        write_tiles: true,
        png: false,
        chunk_bytes,
    }
}

/// What a run left in its output folder.
struct Outputs {
    /// index.jsonl as text.
    index: String,
    /// Every written file by name.
    files: BTreeMap<String, Vec<u8>>,
    /// The problems as (kind, key), sorted (the device path records an image's decode failure
    /// after its batch, not in sample order).
    problems: Vec<(String, String)>,
}

fn outputs(out: &Path) -> Outputs {
    let index = std::fs::read_to_string(out.join("index.jsonl")).unwrap();
    let mut files = BTreeMap::new();
    for line in index.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let file = v["file"].as_str().unwrap().to_string();
        files.insert(file.clone(), std::fs::read(out.join(&file)).unwrap());
    }
    let mut problems: Vec<(String, String)> = std::fs::read_to_string(out.join("problems.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["kind"].to_string(), v["key"].to_string())
        })
        .collect();
    problems.sort();
    Outputs {
        index,
        files,
        problems,
    }
}

/// The demo pool's shards in a temporary folder. They hold corrupt, truncated and non-image
/// samples: per-image failures.
fn demo_pool() -> (tempfile::TempDir, Vec<ShardSource>) {
    let dir = tempfile::tempdir().unwrap();
    let shards = vlmprep::demo::build_demo_pool(&dir.path().join("pool")).unwrap();
    let sources = shards.into_iter().map(ShardSource::Tar).collect();
    (dir, sources)
}

#[test]
fn the_device_decoding_path_gives_what_the_cpu_path_gives() {
    let (dir, sources) = demo_pool();
    let bar = indicatif::ProgressBar::hidden();
    let cpu_out = dir.path().join("cpu");
    let (cpu_summary, _) = run_tile(
        &CpuBackend,
        &sources,
        &config(cpu_out.clone(), 1 << 30),
        &bar,
    )
    .unwrap();
    let want = outputs(&cpu_out);
    assert!(
        cpu_summary.images > 0 && !want.problems.is_empty(),
        "{cpu_summary:?}"
    );
    for chunk_bytes in [1 << 30, 0] {
        let out = dir.path().join(format!("device-{chunk_bytes}"));
        let (summary, _) = run_tile(
            &DecodesItself::default(),
            &sources,
            &config(out.clone(), chunk_bytes),
            &bar,
        )
        .unwrap();
        assert_eq!(
            summary.images, cpu_summary.images,
            "chunk bytes {chunk_bytes}"
        );
        assert_eq!(summary.tiles, cpu_summary.tiles);
        let got = outputs(&out);
        assert_eq!(got.index, want.index, "index, chunk bytes {chunk_bytes}");
        assert!(
            got.files == want.files,
            "tiles differ, chunk bytes {chunk_bytes}"
        );
        assert_eq!(
            got.problems, want.problems,
            "problems, chunk bytes {chunk_bytes}"
        );
    }
}

#[test]
fn a_failed_download_stops_the_run_with_its_error() {
    // The download runs on a thread of its own; its error must end the making side (which
    // would otherwise block on its next chunk) and be the run's error.
    let (dir, sources) = demo_pool();
    let bar = indicatif::ProgressBar::hidden();
    for at in [0, 3] {
        let backend = DecodesItself {
            fail_download: Some(at),
            ..Default::default()
        };
        // One image per chunk: many chunks queued behind the failed one.
        let result = run_tile(&backend, &sources, &config(dir.path().join("out"), 0), &bar);
        let err = result.expect_err("the run should fail").to_string();
        assert!(err.contains(&format!("download {at} failed")), "{err}");
    }
}
