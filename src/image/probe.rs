//! (in progress: being written on branch wt-probe)
use super::ImageHeader;
use crate::error::{Error, Result};
/// Reads the header.
pub fn probe(_data: &[u8]) -> Result<ImageHeader> {
    Err(Error::UnknownFormat("probe not merged yet".into()))
}
