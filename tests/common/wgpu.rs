//! The wgpu adapter for the wgpu integration tests (their images are in `images`).

use vlmprep::backend::wgpu::{AdapterChoice, WgpuBackend};

/// The best adapter (lavapipe counts), or `None` after printing why the test is skipped; with
/// `VLMPREP_REQUIRE_WGPU=1` (CI) a missing adapter is a failure instead.
pub fn backend_or_skip() -> Option<WgpuBackend> {
    match WgpuBackend::new(AdapterChoice::Any) {
        Ok(gpu) => {
            eprintln!("adapter: {}", gpu.device_name());
            Some(gpu)
        }
        Err(e) => {
            assert!(
                std::env::var("VLMPREP_REQUIRE_WGPU").as_deref() != Ok("1"),
                "VLMPREP_REQUIRE_WGPU=1 but no wgpu adapter: {e}"
            );
            eprintln!("skipped: no wgpu adapter ({e})");
            None
        }
    }
}
