//! Every kernel family under cuda/ compiles with NVRTC for the architectures we ship for
//! (Ampere sm_80, Hopper sm_90). Needs libnvrtc, not a GPU: CI installs the PyPI wheel
//! `nvidia-cuda-nvrtc` and sets `VLMPREP_REQUIRE_NVRTC=1`, which turns a missing NVRTC into a
//! failure instead of a skip.
#![cfg(feature = "cuda")]

use vlmprep::backend::cuda::kernels::KernelFamily;
use vlmprep::backend::cuda::nvrtc;

fn nvrtc_or_skip() -> bool {
    if nvrtc::nvrtc_present() {
        return true;
    }
    assert!(
        std::env::var_os("VLMPREP_REQUIRE_NVRTC").is_none(),
        "VLMPREP_REQUIRE_NVRTC is set but libnvrtc cannot be loaded (LD_LIBRARY_PATH?)"
    );
    eprintln!("skipped: libnvrtc not found (install nvidia-cuda-nvrtc, set LD_LIBRARY_PATH)");
    false
}

#[test]
fn every_kernel_family_compiles_for_sm80_and_sm90() {
    if !nvrtc_or_skip() {
        return;
    }
    let (major, minor) = nvrtc::nvrtc_version().unwrap();
    eprintln!("NVRTC {major}.{minor}");
    for arch in [80, 90] {
        for family in KernelFamily::ALL {
            let cubin = nvrtc::compile_cubin(family, arch)
                .unwrap_or_else(|e| panic!("{} for sm_{arch}: {e}", family.file_name()));
            // An ELF object: magic bytes, and more than a header.
            assert_eq!(&cubin[..4], b"\x7fELF", "{} sm_{arch}", family.file_name());
            assert!(cubin.len() > 512, "{} sm_{arch}", family.file_name());
        }
    }
}

#[test]
fn a_compile_error_is_reported_with_the_log() {
    if !nvrtc_or_skip() {
        return;
    }
    // sm_10 does not exist: NVRTC refuses the option, and the error says which file and arch.
    let err = nvrtc::compile_cubin(KernelFamily::Tile, 10)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tile.cu") && err.contains("sm_10"), "{err}");
}
