//! Recycling of large f32 buffers between the CPU tensor ops of a forward pass.
//!
//! Every op returns a fresh matrix, and a batch-32 SigLIP-base layer makes ~230 MB of them.
//! Buffers that large come straight from `mmap` and go back to the OS when dropped, so each op
//! paid a page fault per 4 KiB on first touch: 15% of the forward's time in a profile. Matrices
//! hand their buffers back here on drop ([`recycle`]), and the next op of a similar size takes
//! one ([`take_zeroed`]), already mapped. Small buffers are left to the allocator.

use std::sync::Mutex;

/// Buffers below this many values are not worth pooling (the allocator serves them from its
/// own free lists without faults).
const MIN_POOLED: usize = 1 << 16;
/// At most this many values (1 GiB) are kept idle in the pool, so a burst of large temporaries does not pin memory after the forward is done with it.
const MAX_IDLE_VALUES: usize = 1 << 28;

static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// A zero-filled vector of `len` values, reusing a pooled buffer when one fits: the smallest
/// whose capacity holds `len` without wasting more than half of it.
pub fn take_zeroed(len: usize) -> Vec<f32> {
    if len >= MIN_POOLED
        && let Some(mut v) = take_fitting(len)
    {
        v.clear();
        v.resize(len, 0.0);
        return v;
    }
    vec![0.0; len]
}

/// An empty vector with room for `len` values (a pooled buffer when one fits), for a caller
/// that writes every value itself: it skips `take_zeroed`'s fill.
pub fn take_empty(len: usize) -> Vec<f32> {
    if len >= MIN_POOLED
        && let Some(mut v) = take_fitting(len)
    {
        v.clear();
        return v;
    }
    Vec::with_capacity(len)
}

fn take_fitting(len: usize) -> Option<Vec<f32>> {
    // A poisoned lock only means another thread panicked mid-push/pop; the Vec is still valid.
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let best = pool
        .iter()
        .enumerate()
        .filter(|(_, v)| v.capacity() >= len && v.capacity() / 2 <= len)
        .min_by_key(|(_, v)| v.capacity())
        .map(|(i, _)| i)?;
    Some(pool.swap_remove(best))
}

/// Gives a buffer back for reuse (dropped instead when small or when the pool is full).
pub fn recycle(v: Vec<f32>) {
    if v.capacity() < MIN_POOLED {
        return;
    }
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let idle: usize = pool.iter().map(Vec::capacity).sum();
    if idle + v.capacity() <= MAX_IDLE_VALUES {
        pool.push(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recycled_buffer_comes_back_zeroed_and_sized() {
        let len = MIN_POOLED * 3;
        let mut v = take_zeroed(len);
        v.iter_mut().for_each(|x| *x = 7.0);
        let ptr = v.as_ptr();
        recycle(v);
        // Other tests may take it concurrently; when we get it back it must be clean.
        let w = take_zeroed(len - 5);
        assert_eq!(w.len(), len - 5);
        assert!(w.iter().all(|&x| x == 0.0));
        if w.as_ptr() == ptr {
            assert!(w.capacity() >= len);
        }
        let small = take_zeroed(10);
        assert_eq!(small, vec![0.0; 10]);
    }
}
