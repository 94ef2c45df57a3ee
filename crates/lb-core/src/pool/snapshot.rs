//! What a pick reads: one immutable view of the whole pool, and the pick itself.

use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use super::Lease;
use crate::backend::{AdminState, Backend, BackendId};
use crate::counters::{BackendStats, RetiredTotals};
use crate::health::Health;
use crate::selection::{Algorithm, PickCtx, Randomness, Selector};
use crate::slot::{Candidate, Slot};
use crate::stats::PoolStats;

/// A member of the pool as of one snapshot.
#[derive(Debug, Clone)]
pub(super) struct Member {
    pub(super) slot: Arc<Slot>,
    pub(super) weight: u32,
    pub(super) admin: AdminState,
    pub(super) health: Health,
    pub(super) checked: bool,
    pub(super) last_change: Option<Instant>,
}

impl Member {
    fn eligible(&self) -> bool {
        self.health == Health::Up && self.admin == AdminState::Ready
    }

    pub(super) fn backend(&self) -> Backend {
        Backend { weight: self.weight, ..self.slot.backend }
    }

    pub(super) fn stats(&self, removed: bool) -> BackendStats {
        BackendStats::read(
            self.backend(),
            &self.slot.counters,
            self.health,
            self.checked,
            self.admin,
            self.last_change,
            removed,
        )
    }
}

/// An immutable view of the whole pool: what every pick and every stats call reads.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(super) algorithm: Algorithm,
    pub(super) members: Vec<Member>,
    pub(super) candidates: Vec<Candidate>,
    selector: Selector,
    /// Removed backends whose counters may still change or be read through an older snapshot:
    /// shown in stats while they have connections open, counted in the totals until folded
    /// into `folded`.
    retired: Vec<Member>,
    /// The counters of removed backends dropped from `retired`, so totals never go backwards.
    folded: RetiredTotals,
    limit: u64,
}

impl Snapshot {
    /// The snapshot of these members: the eligible ones become the candidates, and the
    /// algorithm's selector is built for them. `limit` is the per-backend connection limit
    /// (`u64::MAX` for none).
    pub(super) fn build(
        algorithm: Algorithm,
        members: Vec<Member>,
        retired: Vec<Member>,
        folded: RetiredTotals,
        limit: u64,
    ) -> Snapshot {
        let candidates: Vec<Candidate> = members
            .iter()
            .filter(|m| m.eligible())
            .map(|m| Candidate { slot: Arc::clone(&m.slot), weight: m.weight })
            .collect();
        let selector = Selector::build(algorithm, &candidates);
        Snapshot { algorithm, members, candidates, selector, retired, folded, limit }
    }

    /// Chooses a candidate not in `exclude` and below the limit, and counts the connection on
    /// it; `None` if there is none. `cursor` is the pool's (see `PickCtx::cursor`).
    #[inline(always)]
    pub(super) fn pick(
        &self,
        cursor: &AtomicU64,
        client: Option<IpAddr>,
        exclude: &[BackendId],
        rng: Randomness<'_>,
    ) -> Option<Lease> {
        let candidates = &self.candidates[..];
        let limit = self.limit;
        let mut ctx = PickCtx { candidates, client, rng, cursor };
        let skip = |i: usize| {
            let c = &candidates[i];
            (!exclude.is_empty() && exclude.contains(&c.slot.backend.id))
                || (limit != u64::MAX && c.active() >= limit)
        };
        // A candidate can fill up between the selector's look and our increment (another thread
        // took the last place); then `skip` sees it full and the next round picks another. Each
        // round that fails has seen one more candidate full, so this ends.
        for _ in 0..=candidates.len() {
            let i = self.selector.pick(&mut ctx, skip)?;
            let slot = &candidates[i].slot;
            if slot.counters.try_acquire(limit) {
                return Some(Lease::new(Arc::clone(slot)));
            }
        }
        None
    }

    /// Every backend's counters and state, plus totals; `no_backend` is the pool's count of
    /// picks that found no backend.
    pub(super) fn stats(&self, no_backend: u64) -> PoolStats {
        let mut backends: Vec<BackendStats> = self.members.iter().map(|m| m.stats(false)).collect();
        let mut retired = self.folded;
        for m in &self.retired {
            // One read decides, so the backend is counted exactly once: listed or retired.
            let stats = m.stats(true);
            if stats.active > 0 {
                backends.push(stats);
            } else {
                retired.add_stats(&stats);
            }
        }
        PoolStats::new(self.algorithm, backends, retired, self.candidates.len(), no_backend)
    }
}
