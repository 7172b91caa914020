//! Images: header probe (no pixel decode), CPU decode to RGB8 with EXIF orientation, the VLM
//! tiling rules (pure functions of width/height/settings), and CPU resize/normalize.

pub mod decode;
pub mod fir_fixed;
pub mod normalize;
pub mod orientation;
pub mod pillow_resample;
pub mod probe;
pub mod qwen2vl_patches;
pub mod resample_simd;
pub mod resize;
#[cfg(test)]
mod test_images;
pub mod tiling;

/// The container formats vlmprep reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// JPEG (JFIF/EXIF), baseline or progressive.
    Jpeg,
    /// PNG.
    Png,
    /// WebP (lossy VP8, lossless VP8L, extended VP8X).
    Webp,
}

impl ImageFormat {
    /// Lower-case name, as used in reports.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpeg",
            ImageFormat::Png => "png",
            ImageFormat::Webp => "webp",
        }
    }
}

/// JPEG chroma subsampling, from the SOF sampling factors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum ChromaSubsampling {
    /// One component.
    Gray,
    /// No subsampling.
    S444,
    /// Chroma halved horizontally.
    S422,
    /// Chroma halved in both directions.
    S420,
    /// Chroma halved vertically.
    S440,
    /// Chroma quartered horizontally.
    S411,
    /// Any other combination (including 4-component CMYK/YCCK layouts).
    Other,
}

/// What the header says, read without decoding pixels.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageHeader {
    /// Container format.
    pub format: ImageFormat,
    /// Width as stored (before EXIF rotation).
    pub width: u32,
    /// Height as stored (before EXIF rotation).
    pub height: u32,
    /// Number of color components (JPEG: 1, 3 or 4; PNG: 1–4 after palette expansion, counting
    /// the alpha a tRNS chunk adds; WebP: 3 or 4).
    pub components: u8,
    /// Bits per sample (JPEG 8 or 12; PNG 1–16; WebP 8).
    pub bit_depth: u8,
    /// JPEG progressive (SOF2, or SOF6/10/14) or not.
    pub progressive: bool,
    /// JPEG chroma subsampling; None for other formats.
    pub subsampling: Option<ChromaSubsampling>,
    /// EXIF orientation 1..=8 (1 when absent or invalid).
    pub orientation: u8,
    /// Whether the image carries an alpha channel (PNG/WebP).
    pub has_alpha: bool,
    /// JPEG only: the Adobe APP14 color transform flag when that segment is present
    /// (0 = none: RGB or CMYK, 1 = YCbCr, 2 = YCCK). Decides how 3- and 4-component JPEGs
    /// are converted to RGB.
    pub adobe_transform: Option<u8>,
}

impl ImageHeader {
    /// Width and height as displayed, i.e. after the EXIF orientation is applied
    /// (orientations 5–8 swap the axes).
    pub fn oriented_size(&self) -> (u32, u32) {
        if self.orientation >= 5 {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }

    /// Number of stored pixels, as u64 (never overflows).
    pub fn pixels(&self) -> u64 {
        self.width as u64 * self.height as u64
    }
}

/// A decoded image, 8-bit RGB, interleaved, rows packed (stride = 3 * width).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `3 * width * height` bytes, RGBRGB...
    pub data: Vec<u8>,
}

impl RgbImage {
    /// Pixel at (x, y) as [r, g, b]; for tests and debugging (not a hot-path accessor).
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = 3 * (y as usize * self.width as usize + x as usize);
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
}
