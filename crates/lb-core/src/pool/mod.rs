//! The pool: backends with their live state, published as immutable snapshots.
//!
//! Writers (adding, removing, reweighting, health results, admin changes, switching algorithm)
//! serialise on a mutex, rebuild a whole [`Snapshot`] — members, eligible candidates, and the
//! algorithm's selector together — and publish it with one atomic pointer swap (`arc-swap`).
//! A reader therefore never sees half of one update and half of another, and a pick takes no
//! lock: it loads the current snapshot (usually from a per-thread cache, checked against a
//! generation counter), asks the selector, and counts the connection on the chosen backend's
//! atomics.
//!
//! - this file: the [`Pool`] handle, its shared state and everything that reads it (picks,
//!   stats, lookups);
//! - `snapshot`: what a pick reads, and how one is built from the writer's state;
//! - `writer`: the writer's state and every method that changes the pool;
//! - `batch`: writes of many backends at once, published as one snapshot;
//! - `lease`: the [`Lease`] a pick returns.

use std::cell::RefCell;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use fastrand::Rng;

use crate::backend::{AdminState, Backend, BackendId};
use crate::error::{Error, Result};
use crate::health::HealthConfig;
use crate::selection::{Algorithm, CurrentTree, Randomness};
use crate::stats::PoolStats;

mod batch;
mod explain;
mod lease;
mod plan;
mod snapshot;
mod what_if;
mod writer;

pub use explain::{BoundedLoad, Explain, Inputs, Load, PassReason, PassedOver};
pub use lease::{ByteMeter, Lease};
pub use plan::Serving;
use snapshot::{Member, Snapshot};
pub use what_if::{Change, ShareChange, WhatIf};
pub use writer::AddOptions;
use writer::WriterState;

/// How a pool starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolConfig {
    /// The balancing algorithm. Default `round_robin`, the usual default of load balancers
    /// (nginx's and HAProxy's too): it needs no knowledge of load or clients to spread evenly.
    pub algorithm: Algorithm,
    /// Health thresholds and the state new backends start in.
    pub health: HealthConfig,
    /// Most active connections per backend; a backend at its limit is skipped. Default none.
    pub max_connections_per_backend: Option<u64>,
    /// Fail-open (Envoy's panic threshold), in percent, 0 to 100: when fewer than this share
    /// of the `ready` primaries is up (and no backup is), new connections spread over every
    /// `ready` primary regardless of health, rather than crushing the few left. Default 0,
    /// off: sending traffic to backends known to be down is a choice to make knowingly.
    pub panic_threshold: u8,
    /// Slow start: a backend that becomes available (comes up, or is added or enabled through
    /// a call that passes the time) gets its weight ramped from 10% to full over this window,
    /// in tenths, for every algorithm (see [`crate::slow_start`]; the owner calls
    /// [`Pool::tick`]). Default none: a backend gets its full share at once, which is right
    /// for backends that need no warm-up, and costs nothing.
    pub slow_start: Option<Duration>,
    /// Bounded-load consistent hashing for `ip_hash` (HAProxy's `hash-balance-factor`), in
    /// percent: 0 (off, the default: plain Maglev) or at least 100. A client goes to its
    /// Maglev backend unless that backend would then hold more than this share of the
    /// average load per weight; then to the next backend in its preference order under the
    /// bound (the formula is at [`load_bound`](crate::selection::load_bound)).
    pub hash_balance_factor: u32,
}

/// The largest [`PoolConfig::hash_balance_factor`]: beyond 100 times the average load the
/// bound no longer bounds anything.
pub const MAX_HASH_BALANCE_FACTOR: u32 = 10_000;

impl PoolConfig {
    /// Checks every setting: health thresholds at least 1, `panic_threshold` at most 100,
    /// `slow_start` longer than zero, `hash_balance_factor` 0 or 100 to
    /// [`MAX_HASH_BALANCE_FACTOR`].
    pub fn validate(&self) -> Result<()> {
        self.health.validate()?;
        validate_panic_threshold(self.panic_threshold)?;
        validate_slow_start(self.slow_start)?;
        validate_hash_balance_factor(self.hash_balance_factor)
    }
}

fn validate_panic_threshold(percent: u8) -> Result<()> {
    if percent > 100 {
        return Err(Error::PanicThresholdOutOfRange(percent));
    }
    Ok(())
}

fn validate_slow_start(window: Option<Duration>) -> Result<()> {
    if window == Some(Duration::ZERO) {
        return Err(Error::ZeroSlowStart);
    }
    Ok(())
}

fn validate_hash_balance_factor(factor: u32) -> Result<()> {
    if factor != 0 && !(100..=MAX_HASH_BALANCE_FACTOR).contains(&factor) {
        return Err(Error::HashBalanceFactorOutOfRange(factor));
    }
    Ok(())
}

/// A value alone on its cache line (128 bytes: x86 prefetches lines in pairs).
#[derive(Debug)]
#[repr(align(128))]
struct CacheLine<T>(T);

/// The snapshot this thread last picked from, so that the next pick from the same pool skips
/// `ArcSwap::load`, whose two atomic read-modify-writes (taking a debt slot and giving it back)
/// measured about 6 ns of a 23 ns round-robin pick; checking `generation`, a plain load, and
/// this thread-local took under 2 ns. The price: a thread keeps the last snapshot it used
/// alive until its next pick (from any pool) or its exit, one snapshot per thread, which is
/// memory only (a removed backend's accounting lives in its counters, not in who holds it).
/// A thread alternating between pools loads afresh each time, at about the cost of
/// `ArcSwap::load`.
struct LastSnapshot {
    pool: u64,
    generation: u64,
    snapshot: Arc<Snapshot>,
}

thread_local! {
    static LAST_SNAPSHOT: RefCell<Option<LastSnapshot>> = const { RefCell::new(None) };
}

/// Source of pool ids: unlike addresses, never reused, so a cached snapshot cannot be taken
/// for that of a later pool.
static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
struct Inner {
    id: u64,
    /// Bumped after each new snapshot is stored.
    generation: AtomicU64,
    snapshot: ArcSwap<Snapshot>,
    writer: Mutex<WriterState>,
    /// Round robin's position in its cycle and least-connections' tie rotation; outlives
    /// snapshots so a rebuild does not restart the cycle. Every such pick writes it, so it gets
    /// a cache line of its own rather than invalidating the snapshot pointer next to it, which
    /// every pick on every thread reads.
    cursor: CacheLine<AtomicU64>,
    /// Picks that found no backend.
    no_backend: AtomicU64,
    /// Least connections' tree of the current snapshot, if it has one, for releases to find.
    trees: Arc<CurrentTree>,
}

/// A set of backends and the algorithm that chooses among them.
///
/// Cheap to clone: clones share the same pool. See the [crate docs](crate) for an example.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snap = self.inner.snapshot.load();
        f.debug_struct("Pool")
            .field("algorithm", &snap.algorithm)
            .field("backends", &snap.members.len())
            .field("eligible", &snap.candidates.len())
            .finish()
    }
}

impl Default for Pool {
    fn default() -> Self {
        Pool::new(PoolConfig::default()).expect("the default configuration is valid")
    }
}

impl Pool {
    /// An empty pool. Fails if a setting in `config` is invalid (see
    /// [`PoolConfig::validate`]).
    pub fn new(config: PoolConfig) -> Result<Pool> {
        config.validate()?;
        let writer = WriterState::new(config);
        let snapshot = writer.snapshot();
        Ok(Pool {
            inner: Arc::new(Inner {
                id: NEXT_POOL_ID.fetch_add(1, Relaxed),
                generation: AtomicU64::new(0),
                snapshot: ArcSwap::from_pointee(snapshot),
                writer: Mutex::new(writer),
                cursor: CacheLine(AtomicU64::new(0)),
                no_backend: AtomicU64::new(0),
                trees: Arc::default(),
            }),
        })
    }

    /// The current algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.inner.snapshot.load().algorithm
    }

    /// The backends currently in the pool, in the order they were added.
    pub fn backends(&self) -> Vec<Backend> {
        let snap = self.inner.snapshot.load();
        snap.members.iter().map(Member::backend).collect()
    }

    /// The backend with this address, if it is in the pool.
    pub fn get(&self, addr: SocketAddr) -> Option<Backend> {
        let snap = self.inner.snapshot.load();
        snap.members.iter().find(|m| m.slot.backend.addr == addr).map(Member::backend)
    }

    /// The admin state of the backend `id` and the connections open on it (picked and not
    /// yet released), if it is in the pool: what a drain watches. `None` once it has been
    /// removed.
    pub fn admin_and_open(&self, id: BackendId) -> Option<(AdminState, u64)> {
        let snap = self.inner.snapshot.load();
        let member = snap.members.iter().find(|m| m.slot.backend.id == id)?;
        Some((member.admin, member.slot.counters.active()))
    }

    /// Which backends new connections go to now: primaries, backups, every `ready` primary in
    /// panic, or nobody. One snapshot load, for an owner that logs or exports each change
    /// (the same value as [`PoolStats::backup_active`] and [`PoolStats::panic`]).
    pub fn serving(&self) -> Serving {
        self.inner.snapshot.load().serving
    }

    /// Number of backends in the pool (removed ones not counted).
    pub fn len(&self) -> usize {
        self.inner.snapshot.load().members.len()
    }

    /// Whether the pool has no backend.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of backends new connections are spread over now: the available primaries, or
    /// while none is, the available backups, or in panic every `ready` primary.
    pub fn available(&self) -> usize {
        self.inner.snapshot.load().candidates.len()
    }

    /// Chooses a backend for a new connection from `client`, never one in `exclude` (the
    /// backends this connection already tried), and counts the connection as active on it.
    ///
    /// Uses thread-local randomness; see [`pick_with_rng`](Self::pick_with_rng) for a seeded
    /// pick.
    #[inline]
    pub fn pick(&self, client: Option<IpAddr>, exclude: &[BackendId]) -> Result<Lease> {
        self.pick_from(client, exclude, Randomness::Lazy(None))
    }

    /// [`pick`](Self::pick) with the caller's random number generator, for reproducible runs.
    #[inline]
    pub fn pick_with_rng(
        &self,
        client: Option<IpAddr>,
        exclude: &[BackendId],
        rng: &mut Rng,
    ) -> Result<Lease> {
        self.pick_from(client, exclude, Randomness::Given(rng))
    }

    #[inline]
    fn pick_from(
        &self,
        client: Option<IpAddr>,
        exclude: &[BackendId],
        rng: Randomness<'_>,
    ) -> Result<Lease> {
        let inner = &*self.inner;
        // The writer stores a snapshot before bumping the generation, so a snapshot loaded after
        // reading `generation` is at least that recent; at worst it is newer than its tag says
        // and the next pick loads it again.
        let generation = inner.generation.load(Acquire);
        let mut rng = Some(rng);
        let cached = LAST_SNAPSHOT.try_with(|last| {
            let mut last = last.borrow_mut();
            let last = match &mut *last {
                Some(l) if l.pool == inner.id && l.generation == generation => l,
                stale => stale.insert(LastSnapshot {
                    pool: inner.id,
                    generation,
                    snapshot: inner.snapshot.load_full(),
                }),
            };
            self.pick_in(&last.snapshot, client, exclude, rng.take().expect("taken once"))
        });
        // Without thread-locals (the thread is being torn down), through `ArcSwap` as usual.
        cached.unwrap_or_else(|_| {
            let rng = rng.take().expect("not taken: the closure did not run");
            self.pick_in(&inner.snapshot.load(), client, exclude, rng)
        })
    }

    // Always: otherwise it stays an out-of-line call from the two paths in `pick_from`, which
    // measured as more instructions than the cached snapshot saves.
    #[inline(always)]
    fn pick_in(
        &self,
        snap: &Snapshot,
        client: Option<IpAddr>,
        exclude: &[BackendId],
        rng: Randomness<'_>,
    ) -> Result<Lease> {
        match snap.pick(&self.inner.cursor.0, client, exclude, rng) {
            Some(lease) => Ok(lease),
            None => {
                self.inner.no_backend.fetch_add(1, Relaxed);
                Err(Error::NoBackendAvailable)
            }
        }
    }

    /// A consistent snapshot of every backend's counters and state, plus totals.
    ///
    /// Removed backends are listed while they have connections open; after that their counters
    /// are in [`PoolStats::retired`], so the totals never go backwards.
    pub fn stats(&self) -> PoolStats {
        self.inner.snapshot.load().stats(self.inner.no_backend.load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::atomic::Ordering::Release;

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 8000))
    }

    fn pool_of(addrs: &[u8]) -> Pool {
        let pool = Pool::default();
        for &i in addrs {
            pool.add(addr(i), None).unwrap();
        }
        pool
    }

    #[test]
    fn picks_from_pools_used_in_turn_on_one_thread_stay_apart() {
        let (a, b) = (pool_of(&[1, 2]), pool_of(&[3]));
        for _ in 0..10 {
            assert!([addr(1), addr(2)].contains(&a.pick(None, &[]).unwrap().addr()));
            assert_eq!(b.pick(None, &[]).unwrap().addr(), addr(3));
        }
    }

    #[test]
    fn a_new_pool_never_picks_from_a_dropped_ones_snapshot() {
        for i in 1..50 {
            // A new pool may well be allocated where the dropped one was.
            let pool = pool_of(&[i]);
            assert_eq!(pool.pick(None, &[]).unwrap().addr(), addr(i));
        }
    }

    fn retired_len(pool: &Pool) -> usize {
        pool.writer().retired.len()
    }

    #[test]
    fn a_removed_backend_is_folded_only_once_nothing_can_reach_it() {
        let pool = pool_of(&[1, 2]);
        let lease = pool.pick(None, &[]).unwrap();
        assert_eq!(lease.addr(), addr(1));
        lease.record_connected();
        lease.record_bytes_in(7);
        pool.remove(addr(1)).unwrap();
        pool.set_weight(addr(2), 2).unwrap();
        assert_eq!(retired_len(&pool), 1, "a lease is open");
        drop(lease);
        // This thread's cached snapshot, from before the removal, could still pick it.
        pool.set_weight(addr(2), 3).unwrap();
        assert_eq!(retired_len(&pool), 1, "an older snapshot can still pick it");
        assert_eq!(pool.stats().retired.bytes_in, 7, "counted all the same");
        drop(pool.pick(None, &[]).unwrap());
        pool.set_weight(addr(2), 4).unwrap();
        assert_eq!(retired_len(&pool), 0, "folded");
        let stats = pool.stats();
        assert_eq!((stats.retired.backends, stats.retired.connections), (1, 1));
        assert_eq!((stats.totals.picks, stats.totals.bytes_in), (2, 7));
    }

    #[test]
    fn totals_never_go_backwards_under_concurrent_churn() {
        const THREADS: usize = 3;
        const ROUNDS: u64 = 20_000;
        let pool = pool_of(&[1, 2, 3]);
        let done = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    let mut held = Vec::new();
                    for i in 0..ROUNDS {
                        if let Ok(lease) = pool.pick(None, &[]) {
                            lease.record_connected();
                            lease.record_bytes_in(1);
                            held.push(lease);
                        }
                        if i % 3 == 0 {
                            held.clear();
                        }
                    }
                    done.fetch_add(1, Release);
                });
            }
            s.spawn(|| {
                let mut i = 0u8;
                while done.load(Acquire) < THREADS as u64 {
                    let a = addr(1 + i % 3);
                    pool.remove(a).unwrap();
                    pool.add(a, None).unwrap();
                    i = i.wrapping_add(1);
                }
            });
            let mut previous = pool.stats().totals;
            while done.load(Acquire) < THREADS as u64 {
                let t = pool.stats().totals;
                assert!(t.picks >= previous.picks, "{t:?} after {previous:?}");
                assert!(t.connections >= previous.connections, "{t:?} after {previous:?}");
                assert!(t.bytes_in >= previous.bytes_in, "{t:?} after {previous:?}");
                previous = t;
            }
        });
        let t = pool.stats().totals;
        assert_eq!(t.active, 0);
        assert_eq!(t.picks, t.connections);
        assert_eq!(t.connections, t.bytes_in);
        assert_eq!(t.picks + t.no_backend, THREADS as u64 * ROUNDS);
    }

    #[test]
    fn a_change_is_seen_by_the_next_pick_on_another_thread() {
        let pool = pool_of(&[1, 2]);
        let (picking, drained) = (AtomicBool::new(false), AtomicBool::new(false));
        std::thread::scope(|s| {
            s.spawn(|| {
                // Pick before and after: the thread's cached snapshot must not outlive the drain.
                while !drained.load(Acquire) {
                    drop(pool.pick(None, &[]).unwrap());
                    picking.store(true, Release);
                }
                for _ in 0..100 {
                    assert_eq!(pool.pick(None, &[]).unwrap().addr(), addr(2));
                }
            });
            while !picking.load(Acquire) {
                std::hint::spin_loop();
            }
            pool.set_admin_state(addr(1), AdminState::Drain).unwrap();
            drained.store(true, Release);
        });
    }
}
