//! Pick latency with and without another thread publishing changes in a loop, at 10,000
//! backends: `cargo run --release -p lb-benches --example pick_during_publish [backends]`.
//!
//! Each pick (and the drop of its lease) is timed on its own with `Instant`, whose own cost
//! (measured the same way around nothing, and printed) is included in every number. The
//! publishing thread toggles one backend's weight as fast as it can; picks never wait for it,
//! they keep the snapshot they have until the next one is stored, so the difference between
//! the two rows is the cost of sharing the cores and caches with a rebuild, not of a lock.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use lb_benches::{addr, client, pool, POOLS};
use lb_core::Pool;

/// Picks timed per run; at least this long is spent picking, whatever the publisher does.
const PICKS: usize = 300_000;

/// Nanoseconds of each of `PICKS` picks.
fn timed_picks(pool: &Pool) -> Vec<u64> {
    let mut out = Vec::with_capacity(PICKS);
    for i in 0..PICKS as u64 {
        let start = Instant::now();
        black_box(pool.pick(client(i), &[]).ok());
        out.push(start.elapsed().as_nanos() as u64);
    }
    out
}

fn percentiles(mut ns: Vec<u64>) -> String {
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() as f64 * q) as usize).min(ns.len() - 1)];
    format!("{:>6} {:>6} {:>7} {:>9}", at(0.5), at(0.99), at(0.999), ns[ns.len() - 1])
}

fn main() {
    let n: usize = std::env::args().nth(1).map_or(10_000, |s| s.parse().expect("a backend count"));
    let timer: Vec<u64> = (0..PICKS)
        .map(|_| {
            let start = Instant::now();
            black_box(());
            start.elapsed().as_nanos() as u64
        })
        .collect();
    println!("{n} backends; Instant around nothing, ns p50/p99/p99.9/max: {}", percentiles(timer));
    println!(
        "{:<18} {:<14} {:>6} {:>6} {:>7} {:>9} {:>10}",
        "algorithm", "publishing", "p50", "p99", "p99.9", "max", "publishes"
    );
    for (name, algorithm, factor) in POOLS {
        let pool = pool(algorithm, factor, n);
        // Warm the caches and the thread's snapshot.
        timed_picks(&pool);
        let quiet = timed_picks(&pool);
        println!("{name:<18} {:<14} {} {:>10}", "no", percentiles(quiet), 0);
        let stop = AtomicBool::new(false);
        let publishes = AtomicU64::new(0);
        let busy = std::thread::scope(|s| {
            s.spawn(|| {
                let target = addr(n / 2);
                let mut flip = false;
                while !stop.load(Relaxed) {
                    flip = !flip;
                    pool.set_weight(target, if flip { 7 } else { 3 }).unwrap();
                    publishes.fetch_add(1, Relaxed);
                }
            });
            // Let the publisher get going before timing.
            let deadline = Instant::now() + Duration::from_secs(5);
            while publishes.load(Relaxed) == 0 && Instant::now() < deadline {
                std::hint::spin_loop();
            }
            let before = publishes.load(Relaxed);
            let busy = timed_picks(&pool);
            stop.store(true, Relaxed);
            (busy, publishes.load(Relaxed) - before)
        });
        println!("{name:<18} {:<14} {} {:>10}", "weight loop", percentiles(busy.0), busy.1);
    }
}
