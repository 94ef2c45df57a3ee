//! The pool: backends with their live state, published as immutable snapshots.
//!
//! Writers (adding, removing, reweighting, health results, admin changes, switching algorithm)
//! serialise on a mutex, rebuild a whole [`Snapshot`] — members, eligible candidates, and the
//! algorithm's selector together — and publish it with one atomic pointer swap (`arc-swap`).
//! A reader therefore never sees half of one update and half of another, and a pick takes no
//! lock: it loads the current snapshot (usually from a per-thread cache, checked against a
//! generation counter), asks the selector, and counts the connection on the chosen backend's
//! atomics.

use std::cell::RefCell;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use arc_swap::ArcSwap;
use fastrand::Rng;

use crate::backend::{validate_weight, AdminState, Backend, BackendId, Counters, DEFAULT_WEIGHT};
use crate::error::{Error, Result};
use crate::health::{Health, HealthConfig, HealthMachine, Reason};
use crate::selection::{Algorithm, PickCtx, Randomness, Selector};
use crate::stats::{BackendStats, PoolStats, RetiredTotals};

/// How a pool starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolConfig {
    /// The balancing algorithm. Default `round_robin`, as the seed balancer.
    pub algorithm: Algorithm,
    /// Health thresholds and the state new backends start in.
    pub health: HealthConfig,
    /// Most active connections per backend; a backend at its limit is skipped. Default none.
    pub max_connections_per_backend: Option<u64>,
}

/// One backend's shared, long-lived part: identity and counters. Leases hold it, so accounting
/// outlives the backend's removal.
///
/// `repr(C)` with the counters first puts the ones every pick and release writes right after
/// the `Arc`'s reference count, which both also write: usually one cache line for all of it.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Slot {
    pub(crate) counters: Counters,
    pub(crate) backend: Backend,
    /// The pool, for reporting passive failures from a lease; weak so a leaked lease cannot keep
    /// a dropped pool alive.
    pool: Weak<Inner>,
}

/// An eligible backend as the selectors see it.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub(crate) slot: Arc<Slot>,
    pub(crate) weight: u32,
}

impl Candidate {
    #[inline]
    pub(crate) fn active(&self) -> u64 {
        self.slot.counters.active()
    }

    /// A candidate outside any pool with `active` connections open, for selector tests.
    #[cfg(test)]
    pub(crate) fn for_test(i: u16, weight: u32, active: u64) -> Candidate {
        let addr = SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 80));
        let slot = Arc::new(Slot {
            backend: Backend { id: BackendId(u64::from(i)), addr, weight },
            counters: Counters::new(),
            pool: Weak::new(),
        });
        for _ in 0..active {
            assert!(slot.counters.try_acquire(u64::MAX));
        }
        Candidate { slot, weight }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.slot.backend.addr
    }
}

/// A member of the pool as of one snapshot.
#[derive(Debug, Clone)]
struct Member {
    slot: Arc<Slot>,
    weight: u32,
    admin: AdminState,
    health: Health,
    last_change: Option<Instant>,
}

impl Member {
    fn eligible(&self) -> bool {
        self.health == Health::Up && self.admin == AdminState::Ready
    }
}

/// An immutable view of the whole pool: what every pick and every stats call reads.
#[derive(Debug)]
pub(crate) struct Snapshot {
    algorithm: Algorithm,
    members: Vec<Member>,
    candidates: Vec<Candidate>,
    selector: Selector,
    /// Removed backends whose counters may still change or be read through an older snapshot:
    /// shown in stats while they have connections open, counted in the totals until folded
    /// into `folded`.
    retired: Vec<Member>,
    /// The counters of removed backends dropped from `retired`, so totals never go backwards.
    folded: RetiredTotals,
    limit: u64,
}

/// A value alone on its cache line (128 bytes: x86 prefetches lines in pairs).
#[derive(Debug)]
#[repr(align(128))]
struct CacheLine<T>(T);

/// What only writers touch, under the mutex.
#[derive(Debug)]
struct WriterState {
    config: PoolConfig,
    next_id: u64,
    members: Vec<WriterMember>,
    retired: Vec<Member>,
    folded: RetiredTotals,
}

#[derive(Debug)]
struct WriterMember {
    slot: Arc<Slot>,
    weight: u32,
    admin: AdminState,
    health: HealthMachine,
    last_change: Option<Instant>,
}

/// The snapshot this thread last picked from, so that the next pick from the same pool skips
/// `ArcSwap::load`, whose two atomic read-modify-writes (taking a debt slot and giving it back)
/// measured about 6 ns of a 23 ns round-robin pick; checking `generation`, a plain load, and
/// this thread-local took under 2 ns. The price: a thread keeps the last snapshot it used
/// alive until its next pick (from any pool) or its exit, one snapshot per thread, which is
/// memory only (a removed backend's accounting lives in its counters, not in who holds it).
/// A thread alternating between pools loads afresh each time, at about the old cost.
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
}

/// A health change, reported so the caller can log it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The backend that changed.
    pub backend: Backend,
    /// State before.
    pub from: Health,
    /// State after.
    pub to: Health,
    /// Why.
    pub reason: Reason,
    /// When (as passed in by the caller).
    pub at: Instant,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "backend {} is {} (was {}): {}",
            self.backend.addr, self.to, self.from, self.reason
        )
    }
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

/// Counts a connection as active on its backend until dropped.
///
/// Returned by [`Pool::pick`]. Record what happens to the connection on it; dropping it ends
/// the connection's accounting (also after the backend was removed from the pool).
#[must_use = "the connection is counted as active until the lease is dropped"]
pub struct Lease {
    slot: Arc<Slot>,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease").field("backend", &self.slot.backend).finish()
    }
}

impl Lease {
    /// The chosen backend.
    pub fn backend(&self) -> &Backend {
        &self.slot.backend
    }

    /// The chosen backend's id.
    pub fn id(&self) -> BackendId {
        self.slot.backend.id
    }

    /// The chosen backend's address.
    pub fn addr(&self) -> SocketAddr {
        self.slot.backend.addr
    }

    /// Records that the connection to the backend was established.
    pub fn record_connected(&self) {
        self.slot.counters.connections.fetch_add(1, Relaxed);
    }

    /// Records bytes received from the client and sent to the backend.
    #[inline]
    pub fn record_bytes_in(&self, n: u64) {
        self.slot.counters.bytes_in.fetch_add(n, Relaxed);
    }

    /// Records bytes received from the backend and sent to the client.
    #[inline]
    pub fn record_bytes_out(&self, n: u64) {
        self.slot.counters.bytes_out.fetch_add(n, Relaxed);
    }

    /// Records that, after a failed connect here, the connection is being retried on another
    /// backend (the `retries` in stats and metrics).
    pub fn record_retried(&self) {
        self.slot.counters.retries.fetch_add(1, Relaxed);
    }

    /// Counts a failed connect in the backend's stats without touching its health: for a
    /// balancer with no active health checks, where nothing would bring a backend that passive
    /// failures took down back up.
    pub fn count_connect_failure(&self) {
        self.slot.counters.connect_failures.fetch_add(1, Relaxed);
    }

    /// Records that connecting to the backend failed, counting as a passive health failure.
    /// Returns the health transition this causes, if any. `detail` says what failed (e.g.
    /// "connection refused") and ends up in the transition's reason.
    pub fn record_connect_failure(&self, detail: &str, now: Instant) -> Option<Transition> {
        self.count_connect_failure();
        let inner = self.slot.pool.upgrade()?;
        Pool { inner }.observe(self.slot.backend.id, Err(detail), now)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.slot.counters.release();
    }
}

impl Pool {
    /// An empty pool.
    pub fn new(config: PoolConfig) -> Result<Pool> {
        config.health.validate()?;
        let writer = WriterState {
            config,
            next_id: 1,
            members: Vec::new(),
            retired: Vec::new(),
            folded: RetiredTotals::default(),
        };
        let snapshot = build_snapshot(&writer);
        Ok(Pool {
            inner: Arc::new(Inner {
                id: NEXT_POOL_ID.fetch_add(1, Relaxed),
                generation: AtomicU64::new(0),
                snapshot: ArcSwap::from_pointee(snapshot),
                writer: Mutex::new(writer),
                cursor: CacheLine(AtomicU64::new(0)),
                no_backend: AtomicU64::new(0),
            }),
        })
    }

    fn writer(&self) -> MutexGuard<'_, WriterState> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters (every write rebuilds the snapshot from scratch), so poisoning is ignored.
        self.inner.writer.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    fn publish(&self, writer: &mut WriterState) {
        writer.fold_retired();
        self.inner.snapshot.store(Arc::new(build_snapshot(writer)));
        // After the store: see `pick_from`.
        self.inner.generation.fetch_add(1, Release);
    }

    /// Adds a backend with a weight ([`DEFAULT_WEIGHT`] if `None`), ready and in the configured
    /// initial health state. Returns its new id.
    pub fn add(&self, addr: SocketAddr, weight: Option<u32>) -> Result<BackendId> {
        self.add_with_state(addr, weight, AdminState::Ready)
    }

    /// Like [`add`](Self::add), with an initial admin state.
    pub fn add_with_state(
        &self,
        addr: SocketAddr,
        weight: Option<u32>,
        admin: AdminState,
    ) -> Result<BackendId> {
        let weight = validate_weight(u64::from(weight.unwrap_or(DEFAULT_WEIGHT)))?;
        let mut w = self.writer();
        if w.members.iter().any(|m| m.slot.backend.addr == addr) {
            return Err(Error::DuplicateBackend(addr));
        }
        let id = BackendId(w.next_id);
        w.next_id += 1;
        let slot = Arc::new(Slot {
            backend: Backend { id, addr, weight },
            counters: Counters::new(),
            pool: Arc::downgrade(&self.inner),
        });
        let health = HealthMachine::new(w.config.health);
        w.members.push(WriterMember { slot, weight, admin, health, last_change: None });
        self.publish(&mut w);
        Ok(id)
    }

    /// Removes a backend. It is never picked again; connections already open on it keep their
    /// lease and finish normally, and it stays in [`stats`](Self::stats) (marked removed) until
    /// they have. Returns what it was.
    pub fn remove(&self, addr: SocketAddr) -> Result<Backend> {
        let mut w = self.writer();
        let at = w.position(addr)?;
        let member = w.members.remove(at).snapshot();
        let backend = member.backend();
        w.retired.push(member);
        self.publish(&mut w);
        Ok(backend)
    }

    /// Changes a backend's weight.
    pub fn set_weight(&self, addr: SocketAddr, weight: u32) -> Result<()> {
        let weight = validate_weight(u64::from(weight))?;
        let mut w = self.writer();
        let at = w.position(addr)?;
        if w.members[at].weight != weight {
            w.members[at].weight = weight;
            self.publish(&mut w);
        }
        Ok(())
    }

    /// Sets a backend's admin state: `Ready`, `Drain` (no new connections, open ones
    /// continue) or `Maint`.
    pub fn set_admin_state(&self, addr: SocketAddr, admin: AdminState) -> Result<()> {
        let mut w = self.writer();
        let at = w.position(addr)?;
        if w.members[at].admin != admin {
            w.members[at].admin = admin;
            self.publish(&mut w);
        }
        Ok(())
    }

    /// Forces a backend's health (for embedding programs without a health checker, and for
    /// operators). Returns the transition, if the state changed.
    pub fn set_health(
        &self,
        addr: SocketAddr,
        health: Health,
        now: Instant,
    ) -> Result<Option<Transition>> {
        let mut w = self.writer();
        let at = w.position(addr)?;
        let member = &mut w.members[at];
        let Some((from, to)) = member.health.force(health) else { return Ok(None) };
        member.last_change = Some(now);
        let backend = member.backend();
        self.publish(&mut w);
        Ok(Some(Transition { backend, from, to, reason: Reason::Forced, at: now }))
    }

    /// Switches the algorithm. Connection counts and all other state carry over.
    pub fn set_algorithm(&self, algorithm: Algorithm) {
        let mut w = self.writer();
        if w.config.algorithm != algorithm {
            w.config.algorithm = algorithm;
            self.publish(&mut w);
        }
    }

    /// The current algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.inner.snapshot.load().algorithm
    }

    /// Changes the health thresholds. Backends keep their state; `initial` applies to backends
    /// added from now on.
    pub fn set_health_config(&self, health: HealthConfig) -> Result<()> {
        health.validate()?;
        let mut w = self.writer();
        w.config.health = health;
        for m in &mut w.members {
            m.health.set_config(health);
        }
        Ok(())
    }

    /// Changes the per-backend connection limit (`None` for no limit). Connections above a
    /// lowered limit are not cut; the backend just takes no new ones until it is below.
    pub fn set_max_connections_per_backend(&self, limit: Option<u64>) {
        let mut w = self.writer();
        w.config.max_connections_per_backend = limit;
        self.publish(&mut w);
    }

    /// The configuration as it is now (algorithm, thresholds, limit).
    pub fn config(&self) -> PoolConfig {
        self.writer().config
    }

    /// Feeds one health result for a backend: `Ok(())` for a passed check, `Err(detail)` for
    /// a failed one. Returns the transition, if this result changed the backend's health. A
    /// result for a backend no longer in the pool (removed while its check was running) is
    /// ignored.
    pub fn observe(
        &self,
        id: BackendId,
        result: Result<(), &str>,
        now: Instant,
    ) -> Option<Transition> {
        let mut w = self.writer();
        let member = w.members.iter_mut().find(|m| m.slot.backend.id == id)?;
        let (from, to) = member.health.observe(result.is_ok())?;
        member.last_change = Some(now);
        let backend = member.backend();
        let reason = match result {
            Ok(()) => Reason::ChecksPassed { consecutive: member.health.config().rise },
            Err(detail) => Reason::ChecksFailed {
                consecutive: member.health.config().fall,
                detail: detail.to_owned(),
            },
        };
        self.publish(&mut w);
        Some(Transition { backend, from, to, reason, at: now })
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

    /// Number of backends that can take a new connection now (up and ready).
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
        let candidates = &snap.candidates[..];
        let limit = snap.limit;
        let mut ctx = PickCtx { client, rng, cursor: &self.inner.cursor.0 };
        let skip = |i: usize| {
            let c = &candidates[i];
            (!exclude.is_empty() && exclude.contains(&c.slot.backend.id))
                || (limit != u64::MAX && c.active() >= limit)
        };
        // A candidate can fill up between the selector's look and our increment (another thread
        // took the last place); then `skip` sees it full and the next round picks another. Each
        // round that fails has seen one more candidate full, so this ends.
        for _ in 0..=candidates.len() {
            let Some(i) = snap.selector.pick(candidates, &mut ctx, skip) else { break };
            let slot = &candidates[i].slot;
            if slot.counters.try_acquire(limit) {
                return Ok(Lease { slot: Arc::clone(slot) });
            }
        }
        self.inner.no_backend.fetch_add(1, Relaxed);
        Err(Error::NoBackendAvailable)
    }

    /// A consistent snapshot of every backend's counters and state, plus totals.
    ///
    /// Removed backends are listed while they have connections open; after that their counters
    /// are in [`PoolStats::retired`], so the totals never go backwards.
    pub fn stats(&self) -> PoolStats {
        let snap = self.inner.snapshot.load();
        let mut backends: Vec<BackendStats> = snap.members.iter().map(|m| m.stats(false)).collect();
        let mut retired = snap.folded;
        for m in &snap.retired {
            // One read decides, so the backend is counted exactly once: listed or retired.
            let stats = m.stats(true);
            if stats.active > 0 {
                backends.push(stats);
            } else {
                retired.add_stats(&stats);
            }
        }
        PoolStats::new(
            snap.algorithm,
            backends,
            retired,
            snap.candidates.len(),
            self.inner.no_backend.load(Relaxed),
        )
    }
}

impl WriterState {
    /// Drops the removed backends nobody else can reach any more, adding their counters to
    /// `folded`.
    ///
    /// A removed backend's counters keep changing while a lease holds its slot, and a pick can
    /// still open a lease on it through a snapshot from before its removal (a pick in flight,
    /// or a thread's cached last snapshot). Each lease and each snapshot holds references to
    /// the slot: the published snapshot always one at least (in `members` before the removal,
    /// in `retired` after), two if the backend is a candidate there. So when there are only two
    /// (this list's and one of the published snapshot's), no lease is open, no snapshot it can
    /// be picked from is left, and nothing can reach the slot to get one: its counters are
    /// final and folding them loses nothing. A snapshot kept by an idle thread only delays the
    /// fold; until then every snapshot counts the backend from its `retired` list.
    fn fold_retired(&mut self) {
        const OURS: usize = 2;
        let folded = &mut self.folded;
        self.retired.retain(|m| {
            if Arc::strong_count(&m.slot) > OURS {
                return true;
            }
            // Pairs with the release in each `Arc` drop (the last leases' and snapshots'), so
            // their counter updates are all visible before they are read.
            std::sync::atomic::fence(Acquire);
            folded.add_stats(&m.stats(true));
            false
        });
    }

    fn position(&self, addr: SocketAddr) -> Result<usize> {
        self.members
            .iter()
            .position(|m| m.slot.backend.addr == addr)
            .ok_or(Error::UnknownBackend(addr))
    }
}

impl WriterMember {
    fn backend(&self) -> Backend {
        Backend { weight: self.weight, ..self.slot.backend }
    }

    fn snapshot(&self) -> Member {
        Member {
            slot: Arc::clone(&self.slot),
            weight: self.weight,
            admin: self.admin,
            health: self.health.state(),
            last_change: self.last_change,
        }
    }
}

impl Member {
    fn backend(&self) -> Backend {
        Backend { weight: self.weight, ..self.slot.backend }
    }

    fn stats(&self, removed: bool) -> BackendStats {
        BackendStats::read(
            self.backend(),
            &self.slot.counters,
            self.health,
            self.admin,
            self.last_change,
            removed,
        )
    }
}

fn build_snapshot(w: &WriterState) -> Snapshot {
    let members: Vec<Member> = w.members.iter().map(WriterMember::snapshot).collect();
    let candidates: Vec<Candidate> = members
        .iter()
        .filter(|m| m.eligible())
        .map(|m| Candidate { slot: Arc::clone(&m.slot), weight: m.weight })
        .collect();
    let selector = Selector::build(w.config.algorithm, &candidates);
    Snapshot {
        algorithm: w.config.algorithm,
        members,
        candidates,
        selector,
        retired: w.retired.clone(),
        folded: w.folded,
        limit: w.config.max_connections_per_backend.unwrap_or(u64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

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
