//! Cheap, consistent snapshots of the pool's counters for display and metrics.
//!
//! [`PoolStats`] is the whole pool at one moment; the per-backend and summed structs it holds
//! ([`BackendStats`], [`Totals`], [`RetiredTotals`]) are generated, with their counter fields,
//! from the counter table in `counters.rs`.

use std::collections::hash_map::Entry;
use std::net::SocketAddr;

use foldhash::{HashMap, HashMapExt};

use crate::backend::AdminState;
use crate::counters::{BackendStats, RetiredTotals, Totals};
use crate::health::Health;
use crate::pool::Serving;
use crate::selection::Algorithm;

impl BackendStats {
    /// A one-word state for display: `up`, `down`, `drain`, `maint` or `removed`.
    pub fn state(&self) -> &'static str {
        if self.removed {
            "removed"
        } else if self.admin != AdminState::Ready {
            self.admin.as_str()
        } else {
            self.health.as_str()
        }
    }

    /// Whether the backend takes traffic only on trust so far: in the pool, ready, up, and no
    /// health result yet. A display of a pool whose backends are checked shows it as `init`
    /// (HAProxy's word), so a backend just added is not mistaken for one that passed a check.
    pub fn awaiting_first_check(&self) -> bool {
        !self.checked
            && !self.removed
            && self.admin == AdminState::Ready
            && self.health == Health::Up
    }

    /// The weight the backend has now: its weight, or while a slow-start ramp runs, the
    /// ramp's share of it (a backend of weight 1 at 30% has 0.3).
    pub fn effective_weight(&self) -> f64 {
        f64::from(self.weight) * f64::from(self.ramp_percent.unwrap_or(100)) / 100.0
    }
}

/// The whole pool at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    /// The algorithm in use.
    pub algorithm: Algorithm,
    /// Every backend, in the order added; then removed ones that still have open connections.
    /// One address can appear twice: a backend removed while connections were open, then added
    /// again, is listed both as the new backend and (marked removed) as the old one.
    pub backends: Vec<BackendStats>,
    /// What removed backends no longer listed contributed to the totals.
    pub retired: RetiredTotals,
    /// Sums over all backends, listed or retired.
    pub totals: Totals,
    /// Whether backups are carrying the new connections now: no primary is available and a
    /// backup is. Computed when the pool's state last changed, so a gauge and a log line on
    /// each change of this value follow the pool exactly.
    pub backup_active: bool,
    /// Whether the pool is in panic (fail-open) now: fewer than its `panic_threshold` share of
    /// `ready` primaries is up, so new connections spread over all of them regardless of
    /// health.
    pub panic: bool,
}

impl PoolStats {
    pub(crate) fn new(
        algorithm: Algorithm,
        backends: Vec<BackendStats>,
        retired: RetiredTotals,
        available: usize,
        no_backend: u64,
        serving: Serving,
    ) -> Self {
        let mut totals = Totals {
            backends: backends.iter().filter(|b| !b.removed).count(),
            available,
            no_backend,
            ..Totals::default()
        };
        totals.add_retired(&retired);
        for b in &backends {
            totals.add_backend(b);
        }
        PoolStats {
            algorithm,
            backends,
            retired,
            totals,
            backup_active: serving == Serving::Backups,
            panic: serving == Serving::Panic,
        }
    }

    /// The stats of the backend at `addr`, if listed.
    pub fn backend(&self, addr: SocketAddr) -> Option<&BackendStats> {
        self.backends.iter().find(|b| b.addr == addr && !b.removed)
    }

    /// The backends with one entry per address, for outputs keyed by address alone (the
    /// Prometheus `backend` label).
    ///
    /// A removed backend still draining and a backend added again at the same address are
    /// merged into one entry: counters, `active` and the counters' sums; `peak_active` the
    /// larger of the two (a lower bound of the address's true peak, like each one's); identity,
    /// weight, health, admin state and `removed` from the backend in the pool. Entries are in
    /// the order of [`backends`](Self::backends), first occurrence of each address.
    pub fn per_address(&self) -> Vec<BackendStats> {
        let mut merged: Vec<BackendStats> = Vec::with_capacity(self.backends.len());
        // Each address's entry in `merged`: one pass, however many backends.
        let mut at: HashMap<SocketAddr, usize> = HashMap::with_capacity(self.backends.len());
        for b in &self.backends {
            match at.entry(b.addr) {
                // Pool members come before removed backends, so the entry is the one to
                // describe the address when either is still in the pool.
                Entry::Occupied(i) => merged[*i.get()].merge(b),
                Entry::Vacant(slot) => {
                    slot.insert(merged.len());
                    merged.push(b.clone());
                }
            }
        }
        merged
    }
}
