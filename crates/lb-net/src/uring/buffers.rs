//! The provided buffer ring every receive of one engine draws from (`IORING_REGISTER_PBUF_RING`).
//!
//! The kernel picks a free buffer when data arrives, so a connection waiting for its next
//! request holds none. The engine copies what it received out at once and gives the buffer
//! straight back, so buffers are only ever held between a completion and its processing, never
//! by a slow peer.

use std::io;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// Most buffers the ring holds (a power of two, as the kernel requires: the descriptor ring
/// has this many entries). A receive holds one only until the turn that collects it copies it
/// out, so the buffers provided bound the receives one round completes (more find none, are
/// re-armed at the round's end and make the ring grow), not the connections.
pub(super) const COUNT: u16 = 256;

/// Buffers given to the kernel at first, and added each time a receive finds none free, up to
/// [`COUNT`]. The kernel takes buffers in turn round the ring, so every buffer provided is soon
/// resident: starting small keeps a lightly loaded engine's memory to what its load needs
/// (16 buffers, 256 KiB) while a busy one grows to what its rounds use.
const STEP: u16 = 16;

/// Bytes per buffer. A receive that fills one is carrying bulk data: the engine hands that
/// connection to the epoll engine, which splices.
pub(super) const SIZE: usize = 16 * 1024;

/// The group id the engine's receives name.
pub(super) const GROUP: u16 = 0;

/// The ring of buffer descriptors the kernel reads, and the memory they describe.
#[derive(Debug)]
pub(super) struct Buffers {
    ring: *mut BufRingEntry,
    memory: *mut u8,
    /// Our copy of the tail: descriptors added but not yet published.
    tail: u16,
    /// Buffers provided so far (ids `0..provided`).
    provided: u16,
    registered: bool,
}

const RING_BYTES: usize = COUNT as usize * std::mem::size_of::<BufRingEntry>();
const MEMORY_BYTES: usize = COUNT as usize * SIZE;

/// Page-aligned, zeroed memory of `len` bytes, mapped directly so that pages no receive has
/// written to stay untouched (not resident): the allocator would clear the whole region for
/// an alignment this large.
fn map(len: usize) -> io::Result<*mut u8> {
    use rustix::mm::{mmap_anonymous, MapFlags, ProtFlags};
    // SAFETY: a new private anonymous mapping, which aliases nothing.
    let ptr = unsafe {
        mmap_anonymous(null_mut(), len, ProtFlags::READ | ProtFlags::WRITE, MapFlags::PRIVATE)
    }?;
    Ok(ptr.cast())
}

impl Buffers {
    /// Maps room for [`COUNT`] buffers and registers them with `ring` as group [`GROUP`], the
    /// first [`STEP`] of them provided.
    pub(super) fn register(ring: &IoUring) -> io::Result<Buffers> {
        let mut buffers = Buffers {
            ring: null_mut(),
            memory: null_mut(),
            tail: 0,
            provided: 0,
            registered: false,
        };
        buffers.ring = map(RING_BYTES)?.cast();
        buffers.memory = map(MEMORY_BYTES)?;
        let _ = buffers.grow();
        buffers.publish();
        // SAFETY: the descriptor ring is page-aligned, COUNT entries long, and lives until
        // `Drop` unregisters it (the engine drops its `Buffers` before its ring).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(buffers.ring as u64, COUNT, GROUP, 0)?;
        }
        buffers.registered = true;
        Ok(buffers)
    }

    /// The first `len` bytes of buffer `bid`, which a completion just handed us.
    pub(super) fn data(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < self.provided && len <= SIZE, "the kernel names one of our buffers");
        // SAFETY: in bounds (checked); the kernel wrote these bytes before posting the
        // completion and will not touch the buffer again until it is given back.
        unsafe { std::slice::from_raw_parts(self.memory.add(bid as usize * SIZE), len) }
    }

    /// Returns buffer `bid` to the kernel (visible from the next [`publish`](Self::publish)).
    pub(super) fn give_back(&mut self, bid: u16) {
        let index = (self.tail & (COUNT - 1)) as usize;
        // SAFETY: `index` < COUNT; the kernel only reads descriptors between its head and the
        // published tail, and this one is past the published tail.
        let entry = unsafe { &mut *self.ring.add(index) };
        // SAFETY: in bounds of the buffer memory.
        entry.set_addr(unsafe { self.memory.add(bid as usize * SIZE) } as u64);
        entry.set_len(SIZE as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Provides [`STEP`] more buffers, unless all [`COUNT`] are; visible from the next
    /// [`publish`](Self::publish). Called when a receive found none free. Returns whether
    /// any were added.
    pub(super) fn grow(&mut self) -> bool {
        let more = STEP.min(COUNT - self.provided);
        for bid in self.provided..self.provided + more {
            self.give_back(bid);
        }
        self.provided += more;
        more > 0
    }

    /// Buffers provided so far.
    pub(super) fn provided(&self) -> u16 {
        self.provided
    }

    /// Makes the buffers given back so far available to the kernel.
    pub(super) fn publish(&self) {
        // SAFETY: the tail field of the ring's first descriptor, which the kernel reads; it is
        // 2-byte aligned and lives as long as the ring.
        let tail = unsafe { &*(BufRingEntry::tail(self.ring) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }

    /// Unregisters the ring from `ring` (before its memory is freed).
    pub(super) fn unregister(&mut self, ring: &IoUring) {
        if self.registered && ring.submitter().unregister_buf_ring(GROUP).is_ok() {
            self.registered = false;
        }
    }
}

impl Drop for Buffers {
    fn drop(&mut self) {
        if self.registered {
            // Still registered (the ring could not be told): the kernel may yet write into the
            // memory, so it stays mapped. Only at a thread's exit.
            return;
        }
        for (ptr, len) in [(self.ring.cast::<u8>(), RING_BYTES), (self.memory, MEMORY_BYTES)] {
            if !ptr.is_null() {
                // SAFETY: mapped in `register` with this length, and no longer known to the
                // kernel's ring.
                let _ = unsafe { rustix::mm::munmap(ptr.cast(), len) };
            }
        }
    }
}
