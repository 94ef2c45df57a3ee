//! The pool's writers: every change goes through the writer's state, under its mutex, and is
//! published as a new snapshot.

use std::net::SocketAddr;
use std::sync::atomic::fence;
use std::sync::atomic::Ordering::{Acquire, Release, SeqCst};
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use super::snapshot::{Member, Snapshot};
use super::{Inner, Pool, PoolConfig};
use crate::backend::{validate_weight, AdminState, Backend, BackendId};
use crate::counters::RetiredTotals;
use crate::error::{Error, Result};
use crate::health::{Health, HealthConfig, HealthMachine, Reason, Transition};
use crate::selection::Algorithm;
use crate::slot::{PassiveHealth, Slot};
use crate::slow_start::Ramp;

/// How a backend joins the pool: [`Pool::add_backend`]'s options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AddOptions {
    /// Its weight; [`DEFAULT_WEIGHT`](crate::DEFAULT_WEIGHT) if `None`.
    pub weight: Option<u32>,
    /// Its admin state to start with. Default `ready`.
    pub admin: AdminState,
    /// Whether it is a backup: it takes new connections only while no primary is available.
    /// Default no.
    pub backup: bool,
}

/// What only writers touch, under the mutex.
#[derive(Debug)]
pub(super) struct WriterState {
    pub(super) config: PoolConfig,
    next_id: u64,
    /// In id order: ids only grow, a new member is appended, and removal keeps the order.
    pub(super) members: Vec<WriterMember>,
    pub(super) retired: Vec<Member>,
    folded: RetiredTotals,
    /// Whether the last snapshot published has a least-connections tree, whose slots must be
    /// taken out of it when the next one has none.
    tree_installed: bool,
}

#[derive(Debug)]
pub(super) struct WriterMember {
    slot: Arc<Slot>,
    weight: u32,
    admin: AdminState,
    health: HealthMachine,
    last_change: Option<Instant>,
    backup: bool,
    ramp: Option<Ramp>,
    down_reason: Option<Arc<Reason>>,
}

impl Pool {
    pub(super) fn writer(&self) -> MutexGuard<'_, WriterState> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters (every write rebuilds the snapshot from scratch), so poisoning is ignored.
        self.inner.writer.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    pub(super) fn publish(&self, writer: &mut WriterState) {
        writer.fold_retired();
        let snapshot = Arc::new(writer.snapshot());
        let tree = snapshot.selector.tree();
        if tree.is_some() || writer.tree_installed {
            self.inner.trees.install(tree.cloned());
            writer.place_slots(&snapshot);
            writer.tree_installed = tree.is_some();
        }
        self.inner.snapshot.store(Arc::clone(&snapshot));
        // After the store: see `pick_from`.
        self.inner.generation.fetch_add(1, Release);
        if let Some(tree) = tree {
            // The tree was built from counts read before the slots were placed in it; see
            // `CurrentTree::install`.
            fence(SeqCst);
            for (i, c) in snapshot.candidates.iter().enumerate() {
                tree.refresh(i, &c.slot.counters);
            }
        }
    }

    /// Adds a backend with a weight ([`DEFAULT_WEIGHT`](crate::DEFAULT_WEIGHT) if `None`), ready and in the configured
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
        self.add_backend(addr, AddOptions { weight, admin, backup: false }, None)
    }

    /// Adds a backend with `options` (weight, admin state, backup), in the configured initial
    /// health state. Returns its new id.
    ///
    /// With slow start configured, `now` decides whether the backend ramps: with a time, a
    /// backend that is available at once ramps from `now`; with `None` it gets its full weight
    /// at once. Pass `None` for the backends a balancer starts with (HAProxy's rule: slow start
    /// never applies at start-up, it would only slow everything down alike) and the time for a
    /// backend added to a running pool.
    pub fn add_backend(
        &self,
        addr: SocketAddr,
        options: AddOptions,
        now: Option<Instant>,
    ) -> Result<BackendId> {
        let mut results = self.add_backends([(addr, options)], now);
        results.pop().expect("one result per backend")
    }

    /// Adds `addr` to the writer's members with the next id, unpublished: the one way a
    /// member is made, for [`add_backend`](Self::add_backend) and
    /// [`add_backends`](Self::add_backends). The caller has checked the address is new.
    pub(super) fn push_member(
        &self,
        w: &mut WriterState,
        addr: SocketAddr,
        weight: u32,
        options: AddOptions,
        now: Option<Instant>,
    ) -> BackendId {
        let id = BackendId(w.next_id);
        w.next_id += 1;
        let slot = Arc::new(Slot::new(
            Backend { id, addr, weight },
            Arc::<Inner>::downgrade(&self.inner),
            Arc::clone(&self.inner.trees),
        ));
        let health = HealthMachine::new(w.config.health);
        let mut member = WriterMember {
            slot,
            weight,
            admin: options.admin,
            health,
            last_change: None,
            backup: options.backup,
            ramp: None,
            down_reason: None,
        };
        member.update_ramp(false, now, w.config.slow_start);
        w.members.push(member);
        id
    }

    /// Removes a backend. It is never picked again; connections already open on it keep their
    /// lease and finish normally, and it stays in [`stats`](Self::stats) (marked removed) until
    /// they have. Returns what it was.
    pub fn remove(&self, addr: SocketAddr) -> Result<Backend> {
        self.remove_backends([addr]).pop().expect("one result per address")
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
    /// continue) or `Maint`. A backend enabled this way gets its full weight at once; see
    /// [`set_admin_state_at`](Self::set_admin_state_at) for one that slow-starts.
    pub fn set_admin_state(&self, addr: SocketAddr, admin: AdminState) -> Result<()> {
        self.change_admin_state(addr, admin, None)
    }

    /// [`set_admin_state`](Self::set_admin_state) at time `now`: with slow start configured,
    /// a backend this makes available (enabled after `drain` or `maint`, and up) ramps from
    /// `now`.
    pub fn set_admin_state_at(
        &self,
        addr: SocketAddr,
        admin: AdminState,
        now: Instant,
    ) -> Result<()> {
        self.change_admin_state(addr, admin, Some(now))
    }

    fn change_admin_state(
        &self,
        addr: SocketAddr,
        admin: AdminState,
        now: Option<Instant>,
    ) -> Result<()> {
        let mut w = self.writer();
        let at = w.position(addr)?;
        let window = w.config.slow_start;
        let member = &mut w.members[at];
        if member.admin != admin {
            let was = member.available();
            member.admin = admin;
            member.update_ramp(was, now, window);
            self.publish(&mut w);
        }
        Ok(())
    }

    /// Makes a backend a backup (`true`: it takes new connections only while no primary is
    /// available) or a primary (`false`).
    pub fn set_backup(&self, addr: SocketAddr, backup: bool) -> Result<()> {
        let mut w = self.writer();
        let at = w.position(addr)?;
        if w.members[at].backup != backup {
            w.members[at].backup = backup;
            self.publish(&mut w);
        }
        Ok(())
    }

    /// Changes the panic threshold (percent, 0 = off; see [`PoolConfig::panic_threshold`]).
    pub fn set_panic_threshold(&self, percent: u8) -> Result<()> {
        super::validate_panic_threshold(percent)?;
        let mut w = self.writer();
        if w.config.panic_threshold != percent {
            w.config.panic_threshold = percent;
            self.publish(&mut w);
        }
        Ok(())
    }

    /// Changes the slow-start window (`None` for none; see [`PoolConfig::slow_start`]).
    /// Ramps under way continue over the new window from when they started; with `None`
    /// they end at once.
    pub fn set_slow_start(&self, window: Option<Duration>) -> Result<()> {
        super::validate_slow_start(window)?;
        let mut w = self.writer();
        if w.config.slow_start != window {
            w.config.slow_start = window;
            if window.is_none() {
                w.members.iter_mut().for_each(|m| m.ramp = None);
            }
            self.publish(&mut w);
        }
        Ok(())
    }

    /// Changes the bounded-load factor of `ip_hash` (0 = off, else 100 to
    /// [`MAX_HASH_BALANCE_FACTOR`](super::MAX_HASH_BALANCE_FACTOR); see
    /// [`PoolConfig::hash_balance_factor`]).
    pub fn set_hash_balance_factor(&self, factor: u32) -> Result<()> {
        super::validate_hash_balance_factor(factor)?;
        let mut w = self.writer();
        if w.config.hash_balance_factor != factor {
            w.config.hash_balance_factor = factor;
            self.publish(&mut w);
        }
        Ok(())
    }

    /// Advances slow-start ramps to `now`, publishing a new snapshot if a backend's weight
    /// steps up (or its ramp ends). Returns when the next step is due, or `None` if no ramp
    /// is under way.
    ///
    /// A pool with slow start configured needs its owner to call this: at the instant it
    /// returned, or simply every second or so (a ramp has ten steps). Without slow start, or
    /// with nothing ramping, it publishes nothing.
    pub fn tick(&self, now: Instant) -> Option<Instant> {
        let mut w = self.writer();
        let window = w.config.slow_start?;
        let mut changed = false;
        let mut next: Option<Instant> = None;
        for m in &mut w.members {
            let Some(ramp) = m.ramp else { continue };
            let advanced = ramp.at(now, window);
            changed |= advanced != Some(ramp);
            m.ramp = advanced;
            if let Some(r) = advanced {
                let due = r.next_step_at(window);
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        if changed {
            self.publish(&mut w);
        }
        next
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
        let window = w.config.slow_start;
        let member = &mut w.members[at];
        let first = !member.health.checked();
        let was = member.available();
        let Some((from, to)) = member.health.force(health) else {
            if first {
                self.publish(&mut w);
            }
            return Ok(None);
        };
        member.changed_health(to, Reason::Forced, was, now, window);
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
        self.observe_all([(id, result)], now).pop()
    }
}

impl WriterState {
    /// Feeds one health result to its member, unpublished: the one place a result is
    /// recorded, for [`Pool::observe`] and [`Pool::observe_all`]. Returns the transition, if
    /// any, and whether the snapshot must be published (a transition, or the backend's first
    /// result, which the stats show).
    pub(super) fn observe(
        &mut self,
        id: BackendId,
        result: Result<(), &str>,
        now: Instant,
    ) -> (Option<Transition>, bool) {
        let window = self.config.slow_start;
        // Members are in id order (ids only grow, members are appended and removal keeps the
        // order), so a result finds its backend without a scan.
        let Ok(at) = self.members.binary_search_by_key(&id, |m| m.slot.backend.id) else {
            return (None, false);
        };
        let member = &mut self.members[at];
        let first = !member.health.checked();
        let was = member.available();
        let Some((from, to)) = member.health.observe(result.is_ok()) else {
            // No change of health; but a backend no longer waiting for its first result is
            // shown differently.
            return (None, first);
        };
        let backend = member.backend();
        let reason = match result {
            Ok(()) => Reason::ChecksPassed { consecutive: member.health.config().rise },
            Err(detail) => Reason::ChecksFailed {
                consecutive: member.health.config().fall,
                detail: detail.to_owned(),
            },
        };
        member.changed_health(to, reason.clone(), was, now, window);
        (Some(Transition { backend, from, to, reason, at: now }), true)
    }
}

impl PassiveHealth for Inner {
    fn connect_failed(
        self: Arc<Self>,
        id: BackendId,
        detail: &str,
        now: Instant,
    ) -> Option<Transition> {
        Pool { inner: self }.observe(id, Err(detail), now)
    }
}

impl WriterState {
    pub(super) fn new(config: PoolConfig) -> Self {
        WriterState {
            config,
            next_id: 1,
            members: Vec::new(),
            retired: Vec::new(),
            folded: RetiredTotals::default(),
            tree_installed: false,
        }
    }

    /// The snapshot of the state as it is.
    pub(super) fn snapshot(&self) -> Snapshot {
        Snapshot::build(
            self.config,
            self.members.iter().map(WriterMember::snapshot).collect(),
            self.retired.clone(),
            self.folded,
        )
    }

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

    /// Places every slot in `snapshot`'s least-connections tree: each candidate at its leaf,
    /// every other backend (not a candidate, or removed) in none.
    fn place_slots(&self, snapshot: &Snapshot) {
        let tree = snapshot.selector.tree();
        let mut tags = vec![0; self.members.len()];
        if let Some(tree) = tree {
            for (i, &m) in snapshot.candidate_members.iter().enumerate() {
                tags[m] = tree.tag(i);
            }
        }
        for (m, tag) in self.members.iter().zip(tags) {
            m.slot.place(tag);
        }
        for m in &self.retired {
            m.slot.place(0);
        }
    }

    fn position(&self, addr: SocketAddr) -> Result<usize> {
        self.members
            .iter()
            .position(|m| m.slot.backend.addr == addr)
            .ok_or(Error::UnknownBackend(addr))
    }
}

impl WriterMember {
    pub(super) fn addr(&self) -> SocketAddr {
        self.slot.backend.addr
    }

    fn backend(&self) -> Backend {
        Backend { weight: self.weight, ..self.slot.backend }
    }

    fn available(&self) -> bool {
        self.health.state() == Health::Up && self.admin == AdminState::Ready
    }

    /// After a change that may have made the backend available or unavailable (`was`: before
    /// it): a backend that just became available starts a slow-start ramp at `now` (when
    /// there is a time and a window); one no longer available drops its ramp, and starts a
    /// new one when it is back.
    fn update_ramp(&mut self, was: bool, now: Option<Instant>, window: Option<Duration>) {
        if !self.available() {
            self.ramp = None;
        } else if !was && window.is_some() {
            self.ramp = now.map(Ramp::start);
        }
    }

    /// Records a health transition to `to` for `reason` at `now`.
    fn changed_health(
        &mut self,
        to: Health,
        reason: Reason,
        was: bool,
        now: Instant,
        window: Option<Duration>,
    ) {
        self.last_change = Some(now);
        self.down_reason = (to == Health::Down).then(|| Arc::new(reason));
        self.update_ramp(was, Some(now), window);
    }

    pub(super) fn snapshot(&self) -> Member {
        Member {
            slot: Arc::clone(&self.slot),
            weight: self.weight,
            admin: self.admin,
            health: self.health.state(),
            checked: self.health.checked(),
            last_change: self.last_change,
            backup: self.backup,
            ramp: self.ramp,
            down_reason: self.down_reason.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::least_connections::TREE_FROM;
    use crate::selection::least_loaded_from;
    use crate::Lease;

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 8000))
    }

    /// Least connections' tree through the pool: picks, lease drops, and republishes (weight,
    /// drain, removal and re-adding, switching algorithm away and back) while leases are open.
    /// After every step the current tree is exact, and every pick is what the scan over the
    /// snapshot's candidates, from the pool's cursor, would have chosen.
    #[test]
    fn the_tree_follows_picks_releases_and_republishes() {
        const N: usize = 2 * TREE_FROM + 20;
        let mut rng = fastrand::Rng::with_seed(5);
        let config = PoolConfig {
            algorithm: Algorithm::LeastConnections,
            max_connections_per_backend: Some(4),
            ..PoolConfig::default()
        };
        let pool = Pool::new(config).unwrap();
        for i in 0..N {
            pool.add(addr(i), Some(1 + (i % 5) as u32)).unwrap();
        }
        let mut held = Vec::new();
        let mut with_tree = 0;
        for _ in 0..4000 {
            let target = addr(rng.usize(..N));
            match rng.u8(..20) {
                0..=9 => {
                    let snap = pool.inner.snapshot.load_full();
                    let n = snap.candidates.len() as u64;
                    let start = (pool.inner.cursor.0.load(Acquire) % n.max(1)) as usize;
                    let expected = least_loaded_from(&snap.candidates, start, snap.skip(&[]))
                        .map(|i| snap.candidates[i].addr());
                    let lease = pool.pick(None, &[]).ok();
                    assert_eq!(lease.as_ref().map(Lease::addr), expected);
                    held.extend(lease);
                }
                10..=15 if !held.is_empty() => drop(held.swap_remove(rng.usize(..held.len()))),
                16 => pool.set_weight(target, rng.u32(1..=5)).unwrap(),
                17 => {
                    // A quarter drained at most, on average: enough candidates for a tree.
                    let drain = rng.u8(..4) == 0;
                    let state = if drain { AdminState::Drain } else { AdminState::Ready };
                    pool.set_admin_state(target, state).unwrap();
                }
                18 => {
                    pool.remove(target).unwrap();
                    pool.add(target, Some(rng.u32(1..=5))).unwrap();
                }
                _ => {
                    pool.set_algorithm(Algorithm::RoundRobin);
                    drop(pool.pick(None, &[]));
                    pool.set_algorithm(Algorithm::LeastConnections);
                }
            }
            let snap = pool.inner.snapshot.load();
            if let Some(tree) = snap.selector.tree() {
                let counters: Vec<_> = snap.candidates.iter().map(|c| &c.slot.counters).collect();
                assert!(tree.is_exact(&counters));
                with_tree += 1;
            }
        }
        assert!(with_tree > 3500, "{with_tree} steps with a tree");
        drop(held);
        assert_eq!(pool.stats().totals.active, 0);
    }
}
