//! `tile`, `embed` and device selection through the binary with `--device wgpu`, against the
//! same commands with `--device cpu` on the demo pool: tiles byte for byte (see
//! tests/wgpu_tile.rs), embeddings within 1e-3 relative. Needs a wgpu adapter (lavapipe counts); skips with the reason printed unless
//! `VLMPREP_REQUIRE_WGPU=1`.
#![cfg(feature = "wgpu")]

mod common;

use std::path::Path;
use std::process::Command;

use vlmprep::backend::wgpu::{AdapterChoice, WgpuBackend};
use vlmprep::sink::table::{Values, read_table};

fn vlmprep(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_vlmprep"))
        .args(args)
        .output()
        .expect("running vlmprep");
    assert!(
        out.status.success(),
        "vlmprep {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn adapter_or_skip() -> bool {
    common::wgpu::backend_or_skip().is_some()
}

/// The data bytes of a .npy file (after its header).
fn npy_data(path: &Path) -> Vec<u8> {
    common::load_npy(path).2
}

/// (key, file) of every tiled image in a `tile` output's index.jsonl, sorted by key.
fn tiled(out: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_to_string(out.join("index.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let j: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                j["key"].as_str().unwrap().to_string(),
                j["file"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn tile_on_wgpu_matches_tile_on_the_cpu() {
    if !adapter_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool");
    vlmprep::demo::build_demo_pool(&pool).unwrap();
    // The first shard only: the second holds 3000-pixel images, whose 48-pixel tiles take more
    // loop iterations per invocation than lavapipe runs (refused there; see
    // WgpuBackend::loop_budget).
    let spec = format!("{}/pool-000000.tar", pool.display());
    let mut files = Vec::new();
    for device in ["cpu", "wgpu"] {
        let out = dir.path().join(device);
        let run = vlmprep(&[
            "tile",
            "--input",
            &spec,
            "--mode",
            "fixed",
            "--tile-size",
            "48",
            "--dtype",
            "u8",
            "--device",
            device,
            "--out",
            out.to_str().unwrap(),
        ]);
        if device == "wgpu" {
            let stderr = String::from_utf8_lossy(&run.stderr);
            assert!(stderr.contains("device   wgpu: wgpu ("), "{stderr}");
        }
        files.push((out.clone(), tiled(&out)));
    }
    let ((cpu_dir, cpu), (gpu_dir, gpu)) = (&files[0], &files[1]);
    assert!(!cpu.is_empty());
    assert_eq!(cpu, gpu);
    for (_, file) in cpu {
        let (c, g) = (npy_data(&cpu_dir.join(file)), npy_data(&gpu_dir.join(file)));
        // The shader does the CPU's integer resize: equal levels, not merely close ones.
        assert!(c == g, "{file}: the wgpu tiles differ from the CPU's");
    }
}

#[test]
fn embed_on_wgpu_matches_embed_on_the_cpu() {
    if !adapter_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool");
    vlmprep::demo::build_demo_pool(&pool).unwrap();
    let spec = format!("{}/pool-{{000000..000001}}.tar", pool.display());
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/siglip/tiny-a");
    let mut embeds = Vec::new();
    for device in ["cpu", "wgpu"] {
        let out = dir.path().join(device);
        vlmprep(&[
            "embed",
            "--input",
            &spec,
            "--model",
            model.to_str().unwrap(),
            "--batch",
            "8",
            "--device",
            device,
            "--out",
            out.to_str().unwrap(),
        ]);
        let mut both = Vec::new();
        for name in ["image_embeds.npy", "text_embeds.npy"] {
            let bytes = npy_data(&out.join(name));
            let v: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            both.push(v);
        }
        embeds.push(both);
    }
    for (i, name) in ["image", "text"].iter().enumerate() {
        let (c, g) = (&embeds[0][i], &embeds[1][i]);
        assert!(!c.is_empty());
        assert_eq!(c.len(), g.len());
        let num: f64 = c.iter().zip(g).map(|(a, b)| f64::from(a - b).powi(2)).sum();
        let den: f64 = c.iter().map(|a| f64::from(*a).powi(2)).sum();
        let rel = (num / den).sqrt();
        eprintln!("{name} embeddings: relative difference {rel:.2e}");
        assert!(rel <= 1e-3, "{name} embeddings differ by {rel:.2e}");
    }
}

#[test]
fn curate_on_wgpu_hashes_as_curate_on_the_cpu() {
    if !adapter_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Planted near-duplicates (resized, re-encoded, mirrored copies): the perceptual tier's
    // groups depend on every hash bit.
    let samples = vlmprep::curate::planted::planted_pool(6, 5).unwrap();
    let shards =
        vlmprep::curate::planted::write_planted_shards(&dir.path().join("pool"), &samples, 50)
            .unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/siglip/tiny-a");
    let mut manifests = Vec::new();
    for device in ["cpu", "wgpu"] {
        let out = dir.path().join(device);
        let mut args = vec![
            "curate".to_string(),
            "--model".into(),
            model.to_str().unwrap().into(),
            "--device".into(),
            device.into(),
            "--out".into(),
            out.to_str().unwrap().into(),
            "--input".into(),
        ];
        args.extend(shards.iter().map(|p| p.to_str().unwrap().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = vlmprep(&args);
        assert!(
            run.status.success(),
            "{device}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        manifests.push(read_table(&out.join("manifest.parquet")).unwrap());
    }
    // The manifest has one row per sample in input order, the hash as hex.
    let (c, g) = (manifests[0].column("phash"), manifests[1].column("phash"));
    match c {
        Some(Values::Str(v)) => assert!(
            v.len() == samples.len() && v.iter().all(Option::is_some),
            "{v:?}"
        ),
        other => panic!("phash column: {other:?}"),
    }
    assert_eq!(c, g, "wgpu hashes differ from the CPU's");
}

#[test]
fn auto_never_picks_a_software_adapter() {
    if !adapter_or_skip() {
        return;
    }
    let hardware = WgpuBackend::new(AdapterChoice::Hardware).is_ok();
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool");
    vlmprep::demo::build_demo_pool(&pool).unwrap();
    let spec = format!("{}/pool-000000.tar", pool.display());
    let out = dir.path().join("auto");
    let run = vlmprep(&[
        "tile",
        "--input",
        &spec,
        "--mode",
        "fixed",
        "--tile-size",
        "16",
        "--device",
        "auto",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    eprintln!("{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("device   auto:"))
        .unwrap_or_else(|| panic!("auto did not say what it picked: {stderr}"));
    if hardware {
        assert!(!line.contains("software"), "{line}");
    } else if !cfg!(feature = "cuda") {
        // Only a software adapter here (lavapipe in CI): auto must fall back to the CPU and
        // say why.
        assert!(line.contains("using the CPU"), "{line}");
        assert!(line.contains("no hardware GPU adapter"), "{line}");
    }
}
