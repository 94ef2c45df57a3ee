//! Cost of publishing one change to a pool of 10,000 backends (1,000 for comparison), for every
//! algorithm: the writer's side of a reload. `cargo bench -p lb-benches --bench publish`.
//!
//! Each iteration is one change and its snapshot rebuild: a weight change (toggling between
//! two weights), an add or a remove (alternating, so the time is their mean), a drain or an
//! enable (alternating). Picks never wait on this: they keep using the previous snapshot until
//! the new one is stored.

use criterion::{criterion_main, BenchmarkId, Criterion};
use lb_benches::{addr, pool, POOLS};
use lb_core::AdminState;

fn publish(c: &mut Criterion) {
    for n in [1_000usize, 10_000] {
        let mut group = c.benchmark_group(format!("publish/{n}"));
        group.sample_size(10);
        for (name, algorithm, factor) in POOLS {
            let pool = pool(algorithm, factor, n);
            // A backend in the middle, so that nothing favours either end.
            let target = addr(n / 2);
            let extra = addr(n + 1);
            let mut flip = false;
            group.bench_function(BenchmarkId::new("weight", name), |b| {
                b.iter(|| {
                    flip = !flip;
                    pool.set_weight(target, if flip { 7 } else { 3 }).unwrap();
                })
            });
            group.bench_function(BenchmarkId::new("add_remove", name), |b| {
                b.iter(|| match pool.get(extra) {
                    Some(_) => drop(pool.remove(extra).unwrap()),
                    None => drop(pool.add(extra, Some(2)).unwrap()),
                })
            });
            group.bench_function(BenchmarkId::new("drain_ready", name), |b| {
                b.iter(|| {
                    flip = !flip;
                    let state = if flip { AdminState::Drain } else { AdminState::Ready };
                    pool.set_admin_state(target, state).unwrap();
                })
            });
            // Leave the pool as it was for the next algorithm's numbers to be comparable.
            let _ = pool.remove(extra);
            pool.set_admin_state(target, AdminState::Ready).unwrap();
        }
        group.finish();
    }
}

#[allow(missing_docs)] // the macro generates an undocumented public function
mod group {
    criterion::criterion_group!(benches, super::publish);
}
criterion_main!(group::benches);
