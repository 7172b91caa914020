//! Device buffers reused across batches and ops: a buffer handed back (dropped) goes into a
//! free list keyed by size class and usage, and the next request of that class takes it instead
//! of allocating. Sizes are rounded up to powers of two (256 bytes at least), so a stream of
//! batches of similar sizes settles on a fixed set of buffers.
//!
//! Reuse is safe while the GPU may still read a returned buffer: all work goes through one
//! queue, and wgpu orders a later write or dispatch on the same buffer after earlier ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Bytes of free buffers kept for reuse at most; buffers handed back past it are freed.
const MAX_RETAINED: u64 = 1 << 30;

/// The free lists of one device.
pub struct BufferPool {
    device: wgpu::Device,
    free: Mutex<Free>,
}

#[derive(Default)]
struct Free {
    lists: HashMap<(u64, wgpu::BufferUsages), Vec<wgpu::Buffer>>,
    retained: u64,
    allocations: u64,
}

/// A buffer on loan from a [`BufferPool`]; goes back to it when dropped. At least as large as
/// asked (its size class); bytes past what a user wrote mean nothing.
pub struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    class: u64,
    usage: wgpu::BufferUsages,
    pool: Arc<BufferPool>,
}

impl std::fmt::Debug for PooledBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBuffer")
            .field("bytes", &self.class)
            .finish()
    }
}

/// The size class of a request: the next power of two, 256 bytes at least.
pub fn size_class(bytes: u64) -> u64 {
    bytes.max(256).next_power_of_two()
}

impl BufferPool {
    /// An empty pool for `device`.
    pub fn new(device: wgpu::Device) -> BufferPool {
        BufferPool {
            device,
            free: Mutex::new(Free::default()),
        }
    }

    /// A buffer of at least `bytes` with `usage`, reused when one of its class is free.
    pub fn take(self: &Arc<Self>, bytes: u64, usage: wgpu::BufferUsages) -> PooledBuffer {
        let class = size_class(bytes);
        let reused = self.free.lock().ok().and_then(|mut f| {
            let b = f.lists.get_mut(&(class, usage)).and_then(Vec::pop);
            if b.is_some() {
                f.retained -= class;
            } else {
                f.allocations += 1;
            }
            b
        });
        let buffer = reused.unwrap_or_else(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("vlmprep pool"),
                size: class,
                usage,
                mapped_at_creation: false,
            })
        });
        PooledBuffer {
            buffer: Some(buffer),
            class,
            usage,
            pool: self.clone(),
        }
    }

    /// Buffers allocated so far (requests that found no free buffer of their class).
    pub fn allocations(&self) -> u64 {
        self.free.lock().map(|f| f.allocations).unwrap_or(0)
    }

    fn give_back(&self, buffer: wgpu::Buffer, class: u64, usage: wgpu::BufferUsages) {
        if let Ok(mut f) = self.free.lock()
            && f.retained + class <= MAX_RETAINED
        {
            f.retained += class;
            f.lists.entry((class, usage)).or_default().push(buffer);
        }
    }
}

impl PooledBuffer {
    /// The wgpu buffer.
    pub fn buffer(&self) -> &wgpu::Buffer {
        // Only `drop` takes it out.
        self.buffer.as_ref().expect("buffer present until drop")
    }

    /// Its size in bytes (the size class).
    pub fn size(&self) -> u64 {
        self.class
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            self.pool.give_back(b, self.class, self.usage);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_are_powers_of_two_at_least_256() {
        assert_eq!(size_class(0), 256);
        assert_eq!(size_class(256), 256);
        assert_eq!(size_class(257), 512);
        assert_eq!(size_class(3 << 20), 4 << 20);
    }
}
