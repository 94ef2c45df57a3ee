//! Memory per backend in lb-core, counted by a global allocator that tallies live bytes:
//! `cargo run --release -p lb-benches --example memory`.
//!
//! For each algorithm, a pool of N backends is built (all added, then the algorithm set, so
//! that only one snapshot of it is alive), and the bytes still allocated are divided by N. The
//! snapshot holds the members, the candidates and the selector (round-robin cycle, alias
//! table, Maglev table, least-connections index); each backend's slot (its counters and
//! identity) is shared by every snapshot. The Maglev table alone is measured too.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

use lb_benches::{addr, pool, POOLS};
use lb_core::selection::MaglevTable;

/// The system allocator, counting the bytes allocated and not yet freed.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is a side note.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() {
    println!("{:<18} {:>8} {:>14} {:>10}", "algorithm", "backends", "bytes", "per backend");
    for n in [100usize, 1_000, 10_000] {
        for (name, algorithm, factor) in POOLS {
            // On a thread of its own: a pick caches its snapshot in a thread-local, which must
            // not be an earlier pool's.
            let bytes = std::thread::spawn(move || {
                let before = LIVE.load(Relaxed);
                let pool = pool(algorithm, factor, n);
                // The cached snapshot is now the current one, counted once.
                drop(pool.pick(None, &[]));
                LIVE.load(Relaxed) - before
            })
            .join()
            .unwrap();
            println!("{name:<18} {n:>8} {bytes:>14} {:>10.0}", bytes as f64 / n as f64);
        }
        let backends: Vec<(SocketAddr, u32)> = (0..n).map(|i| (addr(i), 1)).collect();
        let before = LIVE.load(Relaxed);
        let table = MaglevTable::build(&backends);
        let bytes = LIVE.load(Relaxed) - before;
        println!(
            "{:<18} {n:>8} {bytes:>14} {:>10.0}   ({} slots)",
            "  maglev table",
            bytes as f64 / n as f64,
            table.len()
        );
        drop(table);
    }
}
