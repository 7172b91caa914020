//! Recycling of large buffers: f32 matrices between the CPU tensor ops of a forward pass, and
//! byte buffers (decoded images, tile batches) between the chunks of a `tile` run.
//!
//! Every op returns a fresh matrix, and a batch-32 SigLIP-base layer makes ~230 MB of them.
//! Buffers that large come straight from `mmap` and go back to the OS when dropped, so each op
//! paid a page fault per 4 KiB on first touch: 15% of the forward's time in a profile. Matrices
//! hand their buffers back here on drop ([`recycle`]), and the next op of a similar size takes
//! one ([`take_zeroed`]), already mapped. `tile` does the same with each chunk's decoded images
//! and tile batch. Small buffers are left to the allocator.

use std::sync::Mutex;

/// An element type with a pool of its own.
pub trait Pooled: Copy + Default + Send + 'static {
    /// Buffers below this many values are not worth pooling (the allocator serves them from
    /// its own free lists without faults).
    const MIN_POOLED: usize;
    /// At most this many values are kept idle, so a burst of large temporaries does not pin
    /// memory after the work is done with it.
    const MAX_IDLE: usize;
    /// The pool of this type's buffers.
    fn pool() -> &'static Mutex<Vec<Vec<Self>>>;
}

impl Pooled for f32 {
    const MIN_POOLED: usize = 1 << 16;
    /// 1 GiB.
    const MAX_IDLE: usize = 1 << 28;
    fn pool() -> &'static Mutex<Vec<Vec<f32>>> {
        static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());
        &POOL
    }
}

impl Pooled for u8 {
    /// 256 KiB, twice glibc's initial threshold for serving an allocation by `mmap`.
    const MIN_POOLED: usize = 1 << 18;
    /// 1 GiB, as for f32: `tile`'s chunks reuse each other's buffers within it, and memory
    /// stays predictable (the `--memory-mib` help counts it).
    const MAX_IDLE: usize = 1 << 30;
    fn pool() -> &'static Mutex<Vec<Vec<u8>>> {
        static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
        &POOL
    }
}

/// A zero-filled vector of `len` values, reusing a pooled buffer when one fits: the smallest
/// whose capacity holds `len` without wasting more than half of it.
pub fn take_zeroed<T: Pooled>(len: usize) -> Vec<T> {
    if len >= T::MIN_POOLED
        && let Some(mut v) = take_fitting::<T>(len)
    {
        v.clear();
        v.resize(len, T::default());
        return v;
    }
    vec![T::default(); len]
}

/// An empty vector with room for `len` values (a pooled buffer when one fits), for a caller
/// that writes every value itself: it skips `take_zeroed`'s fill.
pub fn take_empty<T: Pooled>(len: usize) -> Vec<T> {
    if len >= T::MIN_POOLED
        && let Some(mut v) = take_fitting::<T>(len)
    {
        v.clear();
        return v;
    }
    Vec::with_capacity(len)
}

/// A vector of `len` values whose contents are left over from earlier use (initialized but
/// unspecified; zeros where the reused buffer was shorter), for a caller that overwrites every
/// value, such as a device-to-host copy: it skips `take_zeroed`'s fill.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub fn take_overwritable<T: Pooled>(len: usize) -> Vec<T> {
    if len >= T::MIN_POOLED
        && let Some(mut v) = take_fitting::<T>(len)
    {
        v.truncate(len);
        v.resize(len, T::default());
        return v;
    }
    vec![T::default(); len]
}

fn take_fitting<T: Pooled>(len: usize) -> Option<Vec<T>> {
    // A poisoned lock only means another thread panicked mid-push/pop; the Vec is still valid.
    let mut pool = T::pool().lock().unwrap_or_else(|e| e.into_inner());
    let best = pool
        .iter()
        .enumerate()
        .filter(|(_, v)| v.capacity() >= len && v.capacity() / 2 <= len)
        .min_by_key(|(_, v)| v.capacity())
        .map(|(i, _)| i)?;
    Some(pool.swap_remove(best))
}

/// Gives a buffer back for reuse (dropped instead when small or when the pool is full).
pub fn recycle<T: Pooled>(v: Vec<T>) {
    if v.capacity() < T::MIN_POOLED {
        return;
    }
    let mut pool = T::pool().lock().unwrap_or_else(|e| e.into_inner());
    let idle: usize = pool.iter().map(Vec::capacity).sum();
    if idle + v.capacity() <= T::MAX_IDLE {
        pool.push(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comes_back_zeroed<T: Pooled + PartialEq + std::fmt::Debug>(dirt: T) {
        let len = T::MIN_POOLED * 3;
        let mut v = take_zeroed::<T>(len);
        v.iter_mut().for_each(|x| *x = dirt);
        let ptr = v.as_ptr();
        recycle(v);
        // Other tests may take it concurrently; when we get it back it must be clean.
        let w = take_zeroed::<T>(len - 5);
        assert_eq!(w.len(), len - 5);
        assert!(w.iter().all(|&x| x == T::default()));
        if w.as_ptr() == ptr {
            assert!(w.capacity() >= len);
        }
        let small = take_zeroed::<T>(10);
        assert_eq!(small, vec![T::default(); 10]);
    }

    #[test]
    fn a_recycled_buffer_comes_back_zeroed_and_sized() {
        comes_back_zeroed(7.0f32);
        comes_back_zeroed(7u8);
    }

    #[test]
    fn an_overwritable_buffer_has_the_asked_length() {
        let len = <u8 as Pooled>::MIN_POOLED * 2;
        for want in [len, len - 3, len + 1, 10] {
            recycle(vec![1u8; len]);
            assert_eq!(take_overwritable::<u8>(want).len(), want);
        }
    }
}
