//! What a pick reads: one immutable view of the whole pool, and the pick itself.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use super::plan::{plan, Serving, Standing};
use super::{Lease, PoolConfig};
use crate::backend::{AdminState, Backend, BackendId};
use crate::counters::{BackendState, BackendStats, RetiredTotals};
use crate::health::{Health, Reason};
use crate::selection::{Algorithm, PickCtx, Randomness, Selector};
use crate::slot::{Candidate, Slot};
use crate::slow_start::Ramp;
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
    /// Takes connections only while no primary is available.
    pub(super) backup: bool,
    /// Its slow-start ramp, while one runs.
    pub(super) ramp: Option<Ramp>,
    /// Why health last went down, while it is down (for `explain`).
    pub(super) down_reason: Option<Arc<Reason>>,
}

impl Member {
    pub(super) fn standing(&self) -> Standing {
        Standing {
            addr: self.slot.backend.addr,
            weight: self.weight,
            backup: self.backup,
            admin: self.admin,
            health: self.health,
            ramp: self.ramp,
        }
    }

    pub(super) fn backend(&self) -> Backend {
        Backend { weight: self.weight, ..self.slot.backend }
    }

    pub(super) fn stats(&self, removed: bool) -> BackendStats {
        let state = BackendState {
            health: self.health,
            checked: self.checked,
            admin: self.admin,
            last_change: self.last_change,
            removed,
            backup: self.backup,
            ramp_percent: self.ramp.map(Ramp::percent),
        };
        BackendStats::read(self.backend(), &self.slot.counters, state)
    }
}

/// An immutable view of the whole pool: what every pick and every stats call reads.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(super) algorithm: Algorithm,
    pub(super) members: Vec<Member>,
    pub(super) candidates: Vec<Candidate>,
    /// For each candidate, its index in `members`.
    pub(super) candidate_members: Vec<usize>,
    pub(super) selector: Selector,
    /// Primaries, backups, panic or nobody: which members became the candidates.
    pub(super) serving: Serving,
    /// The configuration the snapshot was built with.
    pub(super) config: PoolConfig,
    /// Removed backends whose counters may still change or be read through an older snapshot:
    /// shown in stats while they have connections open, counted in the totals until folded
    /// into `folded`.
    retired: Vec<Member>,
    /// The counters of removed backends dropped from `retired`, so totals never go backwards.
    folded: RetiredTotals,
    /// The per-backend connection limit, `u64::MAX` for none.
    pub(super) limit: u64,
}

impl Snapshot {
    /// The snapshot of these members under `config`: the plan (primaries, backups or panic,
    /// slow-start weights; see `plan`) gives the candidates, and the algorithm's selector is
    /// built for them.
    pub(super) fn build(
        config: PoolConfig,
        members: Vec<Member>,
        retired: Vec<Member>,
        folded: RetiredTotals,
    ) -> Snapshot {
        let standings: Vec<Standing> = members.iter().map(Member::standing).collect();
        let plan = plan(&standings, config.panic_threshold);
        let candidates: Vec<Candidate> = plan
            .picks
            .iter()
            .map(|&(i, weight)| Candidate { slot: Arc::clone(&members[i].slot), weight })
            .collect();
        let candidate_members = plan.picks.iter().map(|&(i, _)| i).collect();
        let limit = config.max_connections_per_backend.unwrap_or(u64::MAX);
        let selector =
            Selector::build(config.algorithm, &candidates, config.hash_balance_factor, limit);
        Snapshot {
            algorithm: config.algorithm,
            members,
            candidates,
            candidate_members,
            selector,
            serving: plan.serving,
            config,
            retired,
            folded,
            limit,
        }
    }

    /// What a pick skips besides backends the selector does not know: those in `exclude` and
    /// those at the connection limit. One definition for [`pick`](Self::pick) and `explain`.
    #[inline(always)]
    pub(super) fn skip<'a>(
        &'a self,
        exclude: &'a [BackendId],
    ) -> impl Fn(usize) -> bool + Copy + 'a {
        let (candidates, limit) = (&self.candidates[..], self.limit);
        move |i: usize| {
            let c = &candidates[i];
            (!exclude.is_empty() && exclude.contains(&c.slot.backend.id))
                || (limit != u64::MAX && c.active() >= limit)
        }
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
        // A retry's own cursor (see `Selector::pick_retry`), set below: the pool's takes no turn.
        let own_cursor = AtomicU64::new(0);
        let retry = !exclude.is_empty();
        let mut ctx = PickCtx { candidates, client, rng, cursor };
        if retry {
            own_cursor.store(ctx.rng().u64(..), Relaxed);
            ctx.cursor = &own_cursor;
        }
        let skip = self.skip(exclude);
        // A candidate can fill up between the selector's look and our increment (another thread
        // took the last place); then `skip` sees it full and the next round picks another. Each
        // round that fails has seen one more candidate full, so this ends.
        for _ in 0..=candidates.len() {
            let i = match retry {
                false => self.selector.pick(&mut ctx, skip),
                true => self.selector.pick_retry(&mut ctx, skip),
            }?;
            let slot = &candidates[i].slot;
            if slot.counters.try_acquire(limit) {
                slot.track(|| self.selector.tree().map(|t| &**t));
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
        PoolStats::new(
            self.algorithm,
            backends,
            retired,
            self.candidates.len(),
            no_backend,
            self.serving,
        )
    }
}
