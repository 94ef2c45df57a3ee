//! The pool's writers: every change goes through the writer's state, under its mutex, and is
//! published as a new snapshot.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::{Arc, MutexGuard};
use std::time::Instant;

use super::snapshot::{Member, Snapshot};
use super::{Inner, Pool, PoolConfig};
use crate::backend::{validate_weight, AdminState, Backend, BackendId, DEFAULT_WEIGHT};
use crate::counters::{Counters, RetiredTotals};
use crate::error::{Error, Result};
use crate::health::{Health, HealthConfig, HealthMachine, Reason, Transition};
use crate::selection::Algorithm;
use crate::slot::{PassiveHealth, Slot};

/// What only writers touch, under the mutex.
#[derive(Debug)]
pub(super) struct WriterState {
    pub(super) config: PoolConfig,
    next_id: u64,
    members: Vec<WriterMember>,
    pub(super) retired: Vec<Member>,
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

impl Pool {
    pub(super) fn writer(&self) -> MutexGuard<'_, WriterState> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters (every write rebuilds the snapshot from scratch), so poisoning is ignored.
        self.inner.writer.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    fn publish(&self, writer: &mut WriterState) {
        writer.fold_retired();
        self.inner.snapshot.store(Arc::new(writer.snapshot()));
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
            counters: Counters::default(),
            pool: Arc::<Inner>::downgrade(&self.inner),
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
        let first = !member.health.checked();
        let Some((from, to)) = member.health.force(health) else {
            if first {
                self.publish(&mut w);
            }
            return Ok(None);
        };
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
        let first = !member.health.checked();
        let Some((from, to)) = member.health.observe(result.is_ok()) else {
            if first {
                // No change of health, but the backend is no longer waiting for its first
                // result, which the stats show.
                self.publish(&mut w);
            }
            return None;
        };
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
        }
    }

    /// The snapshot of the state as it is.
    pub(super) fn snapshot(&self) -> Snapshot {
        Snapshot::build(
            self.config.algorithm,
            self.members.iter().map(WriterMember::snapshot).collect(),
            self.retired.clone(),
            self.folded,
            self.config.max_connections_per_backend.unwrap_or(u64::MAX),
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
            checked: self.health.checked(),
            last_change: self.last_change,
        }
    }
}
