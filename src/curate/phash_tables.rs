//! Pillow's LANCZOS tables for the perceptual hash's 32×32 image, as the device kernels read
//! them (the wgpu shader `shaders/phash.wgsl`, the CUDA kernel `cuda/phash.cu`): one table per
//! source length, shared by every image and axis of that length, each output position a
//! (first source index, taps, weight offset) triple into Pillow's own 22-bit fixed-point
//! weights. With these, summing in i32 and rounding as Pillow does gives the CPU's
//! [`gray32`](super::phash::gray32) bit for bit.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::image::pillow_resample::{self, PRECISION_BITS, PillowFilter};

/// Side of the hash's grayscale image.
pub const SIDE: usize = 32;

/// The tables of a batch, built as images are added.
#[derive(Debug, Default)]
pub struct Gray32Tables {
    /// Per output position: first source index, taps, weight offset.
    pub pos: Vec<u32>,
    /// Pillow's 22-bit weights (i32 bit patterns: the kernels read them as i32).
    pub weights: Vec<u32>,
    /// `pos` index of the table of each source length (the output is always 32).
    tables: HashMap<u32, u32>,
}

impl Gray32Tables {
    /// The `pos` index of output 0 of the `in_size → 32` table, made on first use. A source
    /// already 32 long is not resampled by Pillow: one tap of weight 2^22 is the same.
    pub fn table(&mut self, in_size: u32) -> Result<u32> {
        if let Some(&t) = self.tables.get(&in_size) {
            return Ok(t);
        }
        let base = self.pos.len() / 3;
        let wbase = self.weights.len();
        if in_size as usize == SIDE {
            for i in 0..SIDE {
                self.pos
                    .extend_from_slice(&[i as u32, 1, (wbase + i) as u32]);
                self.weights.push(1 << PRECISION_BITS);
            }
        } else {
            let c = pillow_resample::coefficients(in_size as usize, SIDE, PillowFilter::Lanczos);
            for (i, (&s, &n)) in c.start.iter().zip(&c.count).enumerate() {
                self.pos
                    .extend_from_slice(&[s as u32, n as u32, (wbase + i * c.ksize) as u32]);
            }
            self.weights.extend(c.weights.iter().map(|&w| w as u32));
        }
        if self.weights.len() > u32::MAX as usize {
            return Err(Error::Resize("phash coefficient tables too large".into()));
        }
        self.tables.insert(in_size, base as u32);
        Ok(base as u32)
    }
}

/// Whether Pillow resamples a `width × height` image's columns before its rows on the way to
/// 32×32 (Pillow 13's pass-order rule).
pub fn vertical_first(width: u32, height: u32) -> bool {
    pillow_resample::vertical_pass_first(width as usize, height as usize, SIDE, SIDE)
}
