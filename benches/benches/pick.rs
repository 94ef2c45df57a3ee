//! Pick cost of every algorithm (3, 100, 1,000 and 10,000 backends; one thread and two at once),
//! `ip_hash` with bounded load among them, and Maglev table builds.
//! `cargo bench -p lb-benches --bench pick`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_main, BenchmarkId, Criterion};
use lb_benches::{addr, client, pool, POOLS};
use lb_core::selection::MaglevTable;
use lb_core::Pool;

/// Backend counts measured.
const SIZES: [usize; 4] = [3, 100, 1_000, 10_000];

/// Picks `iters` times on `threads` threads at once; the time returned is per thread, so it is
/// the cost of one pick while the other thread is picking too.
fn picks_on_threads(pool: &Pool, threads: usize, iters: u64) -> Duration {
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (pool, barrier) = (pool.clone(), &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..iters {
                        black_box(pool.pick(client(i ^ (t as u64) << 40), &[]).ok());
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).max().unwrap()
    })
}

fn pick(c: &mut Criterion) {
    for threads in [1usize, 2] {
        let mut group = c.benchmark_group(format!("pick/{threads}-thread"));
        for (name, algorithm, factor) in POOLS {
            for n in SIZES {
                let pool = pool(algorithm, factor, n);
                group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                    b.iter_custom(|iters| picks_on_threads(&pool, threads, iters))
                });
            }
        }
        group.finish();
    }
}

fn maglev_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("maglev_build");
    group.sample_size(20);
    for n in [10usize, 100, 1000, 10_000] {
        let backends: Vec<(SocketAddr, u32)> = (0..n).map(|i| (addr(i), 1)).collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &backends, |b, backends| {
            b.iter(|| black_box(MaglevTable::build(backends)))
        });
    }
    group.finish();
}

#[allow(missing_docs)] // the macro generates an undocumented public function
mod group {
    criterion::criterion_group!(benches, super::pick, super::maglev_build);
}
criterion_main!(group::benches);
