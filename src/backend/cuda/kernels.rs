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

    /// The CUDA C++ source: `cuda/common.cuh`, then the family's file (a `#line` directive keeps
    /// NVRTC's messages on the file's own line numbers).
    pub fn source(self) -> &'static str {
        macro_rules! with_common {
            ($file:literal) => {
                concat!(
                    include_str!("../../../cuda/common.cuh"),
                    "#line 1 \"",
                    $file,
                    "\"\n",
                    include_str!(concat!("../../../cuda/", $file))
                )
            };
        }
        match self {
            KernelFamily::Tile => with_common!("tile.cu"),
            KernelFamily::Siglip => with_common!("siglip.cu"),
            KernelFamily::Decode => with_common!("decode.cu"),
            KernelFamily::Phash => with_common!("phash.cu"),
            KernelFamily::Attention => with_common!("attention.cu"),
        }
    }
}
