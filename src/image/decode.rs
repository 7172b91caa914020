//! (in progress: being written on branch wt-probe)
use super::RgbImage;
use crate::error::{Error, Result};
/// Decode options.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Guard.
    pub max_pixels: u64,
    /// Orientation.
    pub apply_orientation: bool,
    /// Needed size.
    pub min_size: Option<(u32, u32)>,
}
impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            max_pixels: 89_478_485,
            apply_orientation: true,
            min_size: None,
        }
    }
}
/// Decodes.
pub fn decode_rgb8(_data: &[u8], _opts: &DecodeOptions) -> Result<RgbImage> {
    Err(Error::UnknownFormat("decode not merged yet".into()))
}
