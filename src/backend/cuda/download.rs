//! Device-to-host copies of tile batches through two pinned (page-locked) staging buffers.
//!
//! A copy into pageable memory is staged by the driver anyway, one piece at a time, with the
//! calling thread waiting on each. Here the batch goes over in pieces of [`PIECE_BYTES`]: while
//! the DMA engine fills one staging buffer, the CPU copies the other one's finished piece to
//! its place in the destination. The staging buffers are allocated once per backend, at the
//! first download, without the write-combined flag (write-combined memory is fast for the
//! device to read but very slow for the CPU to read, and here the CPU reads it).
//!
//! `VLMPREP_CUDA_PINNED=0` turns this off (one direct copy into the destination, as before);
//! so does a failure to allocate pinned memory (a locked-memory limit, say), which is printed
//! once.

use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaSlice, CudaStream, PinnedHostSlice};

use super::cuda_err;
use crate::error::Result;

/// Bytes per piece and per staging buffer.
pub const PIECE_BYTES: usize = 32 << 20;

/// A backend's staging buffers; None when staging is off or could not be set up.
pub(super) struct Staging {
    buffers: OnceLock<Option<Mutex<[PinnedHostSlice<u8>; 2]>>>,
}

impl Staging {
    pub fn new() -> Self {
        Staging {
            buffers: OnceLock::new(),
        }
    }

    /// Copies the first `dst.len()` bytes of `src` into `dst` on `stream` and waits for them.
    pub fn download(
        &self,
        stream: &Arc<CudaStream>,
        src: &CudaSlice<u8>,
        dst: &mut [u8],
    ) -> Result<()> {
        let total = dst.len();
        if total == 0 {
            return Ok(());
        }
        let buffers = match total > PIECE_BYTES / 4 {
            true => self.buffers.get_or_init(|| allocate(stream)).as_ref(),
            // Small copies gain nothing from staging.
            false => None,
        };
        let Some(buffers) = buffers else {
            stream
                .memcpy_dtoh(&src.slice(..total), dst)
                .map_err(cuda_err("downloading the tile batch"))?;
            return stream
                .synchronize()
                .map_err(cuda_err("waiting for the tile download"));
        };
        // A poisoned lock only means another download panicked; the buffers are still valid.
        let mut buffers = buffers.lock().unwrap_or_else(|e| e.into_inner());
        let pieces: Vec<(usize, usize)> = (0..total)
            .step_by(PIECE_BYTES)
            .map(|start| (start, (start + PIECE_BYTES).min(total)))
            .collect();
        let queue = |buffers: &mut [PinnedHostSlice<u8>; 2], i: usize| -> Result<()> {
            let (start, end) = pieces[i];
            stream
                .memcpy_dtoh(&src.slice(start..end), &mut buffers[i % 2])
                .map_err(cuda_err("downloading the tile batch"))
        };
        for i in 0..pieces.len().min(2) {
            queue(&mut buffers, i)?;
        }
        for (i, &(start, end)) in pieces.iter().enumerate() {
            // as_slice waits for the copy queued into this buffer (its event).
            let staged = buffers[i % 2]
                .as_slice()
                .map_err(cuda_err("waiting for the tile download"))?;
            dst[start..end].copy_from_slice(&staged[..end - start]);
            if i + 2 < pieces.len() {
                queue(&mut buffers, i + 2)?;
            }
        }
        Ok(())
    }
}

/// Two staging buffers, or None (printed once) when staging is off or pinned memory cannot be
/// had.
fn allocate(stream: &Arc<CudaStream>) -> Option<Mutex<[PinnedHostSlice<u8>; 2]>> {
    if std::env::var("VLMPREP_CUDA_PINNED").as_deref() == Ok("0") {
        return None;
    }
    let ctx = stream.context();
    // SAFETY: the buffers are only read (as_slice) after a copy into them completed; flags 0:
    // plain page-locked memory, not write-combined.
    let alloc = || unsafe { ctx.alloc_pinned_with_flags::<u8>(PIECE_BYTES, 0) };
    match alloc().and_then(|a| Ok([a, alloc()?])) {
        Ok(buffers) => Some(Mutex::new(buffers)),
        Err(e) => {
            eprintln!(
                "note: no pinned staging for tile downloads ({e}); copying to pageable memory"
            );
            None
        }
    }
}
