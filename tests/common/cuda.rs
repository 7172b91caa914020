//! The GPU for the CUDA tests that need one (`--features cuda`).

use vlmprep::backend::cuda::CudaBackend;

/// Device 0, or `None` after printing why the test is skipped; a panic instead when
/// `VLMPREP_REQUIRE_GPU=1` (the GPU machine's run, where a skip would hide a broken setup).
pub fn gpu_or_skip() -> Option<CudaBackend> {
    match CudaBackend::new(0) {
        Ok(gpu) => Some(gpu),
        Err(e) => {
            assert!(
                std::env::var("VLMPREP_REQUIRE_GPU").as_deref() != Ok("1"),
                "VLMPREP_REQUIRE_GPU=1 but no GPU: {e}"
            );
            eprintln!("skipped: no GPU ({e})");
            None
        }
    }
}
