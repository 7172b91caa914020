//! Stand-in for the CUDA backend in builds without the `cuda` feature: same entry point, which
//! says how to get the real one instead of failing to compile callers.

use crate::error::{Error, Result};

/// The CUDA backend is not compiled into this build; [`CudaBackend::new`] always errors.
#[derive(Debug)]
pub struct CudaBackend {
    _private: (),
}

impl CudaBackend {
    /// Always an error naming the feature to build with.
    pub fn new(_ordinal: usize) -> Result<CudaBackend> {
        Err(Error::cuda(
            "this vlmprep was built without CUDA support: rebuild with \
             `cargo build --release --features cuda`, or use --device cpu",
        ))
    }
}
