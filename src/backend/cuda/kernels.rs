//! The kernel families of the CUDA backend: one `.cu` file under `cuda/` each, embedded in the
//! binary and compiled by NVRTC when first used (see [`super::nvrtc`]).

/// A CUDA source file of kernels that are compiled and loaded together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelFamily {
    /// `cuda/tile.cu`: fused resize + tile + normalize into the batch tensor.
    Tile,
    /// `cuda/siglip.cu`: the transformer ops cuBLAS does not cover.
    Siglip,
    /// `cuda/decode.cu`: what follows nvJPEG (EXIF orientation, colour conversion).
    Decode,
    /// `cuda/phash.cu`: the perceptual hash's 32×32 grayscale image.
    Phash,
    /// `cuda/attention.cu`: fused self-attention on the tensor cores (sm_80 and newer).
    Attention,
}

impl KernelFamily {
    /// Every family, for the compile-everything test.
    pub const ALL: [KernelFamily; 5] = [
        KernelFamily::Tile,
        KernelFamily::Siglip,
        KernelFamily::Decode,
        KernelFamily::Phash,
        KernelFamily::Attention,
    ];

    /// The source file's name under `cuda/`.
    pub fn file_name(self) -> &'static str {
        match self {
            KernelFamily::Tile => "tile.cu",
            KernelFamily::Siglip => "siglip.cu",
            KernelFamily::Decode => "decode.cu",
            KernelFamily::Phash => "phash.cu",
            KernelFamily::Attention => "attention.cu",
        }
    }

    /// The CUDA C++ source.
    pub fn source(self) -> &'static str {
        match self {
            KernelFamily::Tile => include_str!("../../../cuda/tile.cu"),
            KernelFamily::Siglip => include_str!("../../../cuda/siglip.cu"),
            KernelFamily::Decode => include_str!("../../../cuda/decode.cu"),
            KernelFamily::Phash => include_str!("../../../cuda/phash.cu"),
            KernelFamily::Attention => include_str!("../../../cuda/attention.cu"),
        }
    }
}
