//! Stand-in for the wgpu backend in builds without the `wgpu` feature: same entry point, which
//! says how to get the real one instead of failing to compile callers.

use crate::error::{Error, Result};

/// Which adapters [`WgpuBackend::new`] may pick (see the real backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterChoice {
    /// A hardware GPU only.
    Hardware,
    /// Any adapter, software ones included.
    Any,
}

/// The wgpu backend is not compiled into this build; [`WgpuBackend::new`] always errors.
#[derive(Debug)]
pub struct WgpuBackend {
    _private: (),
}

impl WgpuBackend {
    /// Always an error naming the feature to build with.
    pub fn new(_choice: AdapterChoice) -> Result<WgpuBackend> {
        Err(Error::Device {
            device: "wgpu",
            reason: "this vlmprep was built without wgpu support: rebuild with \
                     `cargo build --release --features wgpu`, or use --device cpu"
                .into(),
        })
    }
}
