//! Cheap, consistent snapshots of the pool's counters for display and metrics.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use crate::backend::{AdminState, Backend, BackendId};
use crate::counters::Counters;
use crate::health::Health;
use crate::selection::Algorithm;

/// One backend's state and counters at the moment [`Pool::stats`](crate::Pool::stats) was called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStats {
    /// Stable id.
    pub id: BackendId,
    /// Address.
    pub addr: SocketAddr,
    /// Current weight.
    pub weight: u32,
    /// Health as the checks and real traffic last established it.
    pub health: Health,
    /// Admin state.
    pub admin: AdminState,
    /// Whether the backend has been removed (shown only while connections are still open).
    pub removed: bool,
    /// Connections open now.
    pub active: u64,
    /// Most connections open at once since the backend was added. A connection closing while
    /// another is being picked can make this miss that one pick's peak; it never overstates.
    pub peak_active: u64,
    /// Times an algorithm chose this backend (including attempts whose connect then failed).
    pub picks: u64,
    /// Connections established to this backend.
    pub connections: u64,
    /// Attempts to connect that failed (refused, timed out, ...).
    pub connect_failures: u64,
    /// Failed connects after which the connection was retried on another backend.
    pub retries: u64,
    /// Bytes from clients, sent to this backend.
    pub bytes_in: u64,
    /// Bytes from this backend, sent to clients.
    pub bytes_out: u64,
    /// When health last changed (as passed in by whoever reported it), if ever.
    pub last_change: Option<Instant>,
}

impl BackendStats {
    pub(crate) fn read(
        backend: Backend,
        counters: &Counters,
        health: Health,
        admin: AdminState,
        last_change: Option<Instant>,
        removed: bool,
    ) -> Self {
        BackendStats {
            id: backend.id,
            addr: backend.addr,
            weight: backend.weight,
            health,
            admin,
            removed,
            active: counters.active(),
            peak_active: counters.peak_active.load(Relaxed),
            picks: counters.picks(),
            connections: counters.connections.load(Relaxed),
            connect_failures: counters.connect_failures.load(Relaxed),
            retries: counters.retries.load(Relaxed),
            bytes_in: counters.bytes_in.load(Relaxed),
            bytes_out: counters.bytes_out.load(Relaxed),
            last_change,
        }
    }

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
}

/// Sums over every backend the pool has ever had: those listed in [`PoolStats::backends`] plus
/// the removed ones no longer listed ([`PoolStats::retired`]). The cumulative fields (everything
/// but `backends`, `available` and `active`) therefore never go backwards, also across removals,
/// re-adds and reloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Backends in the pool (not counting removed ones).
    pub backends: usize,
    /// Backends that can take a new connection now (up and ready).
    pub available: usize,
    /// Connections open now.
    pub active: u64,
    /// Picks.
    pub picks: u64,
    /// Connections established.
    pub connections: u64,
    /// Failed connection attempts.
    pub connect_failures: u64,
    /// Failed connects retried on another backend.
    pub retries: u64,
    /// Bytes from clients.
    pub bytes_in: u64,
    /// Bytes to clients.
    pub bytes_out: u64,
    /// Picks that found no backend available.
    pub no_backend: u64,
}

/// Adds the cumulative counters (picks, connections, connect failures, retries, bytes each
/// way) of `$from` to `$to`: the one list of them, for every struct that sums backends.
macro_rules! add_cumulative {
    ($to:expr, $from:expr) => {{
        let (to, from) = (&mut $to, &$from);
        to.picks += from.picks;
        to.connections += from.connections;
        to.connect_failures += from.connect_failures;
        to.retries += from.retries;
        to.bytes_in += from.bytes_in;
        to.bytes_out += from.bytes_out;
    }};
}

/// The cumulative counters of removed backends that are no longer listed in
/// [`PoolStats::backends`] (their last connection has ended), summed.
///
/// [`Totals`] include them, so that dropping a removed backend's record never makes a total go
/// backwards: `totals.connections` is the sum of the listed backends' `connections` plus
/// `retired.connections`, and likewise for the other fields here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetiredTotals {
    /// Removed backends counted here (records dropped or about to be).
    pub backends: u64,
    /// Picks.
    pub picks: u64,
    /// Connections established.
    pub connections: u64,
    /// Failed connection attempts.
    pub connect_failures: u64,
    /// Failed connects retried on another backend.
    pub retries: u64,
    /// Bytes from clients.
    pub bytes_in: u64,
    /// Bytes to clients.
    pub bytes_out: u64,
}

impl RetiredTotals {
    /// Adds one removed backend's counters as read into `stats`.
    pub(crate) fn add_stats(&mut self, stats: &BackendStats) {
        self.backends += 1;
        add_cumulative!(*self, *stats);
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
}

impl PoolStats {
    pub(crate) fn new(
        algorithm: Algorithm,
        backends: Vec<BackendStats>,
        retired: RetiredTotals,
        available: usize,
        no_backend: u64,
    ) -> Self {
        let mut totals = Totals {
            backends: backends.iter().filter(|b| !b.removed).count(),
            available,
            no_backend,
            ..Totals::default()
        };
        add_cumulative!(totals, retired);
        for b in &backends {
            totals.active += b.active;
            add_cumulative!(totals, *b);
        }
        PoolStats { algorithm, backends, retired, totals }
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
        for b in &self.backends {
            match merged.iter_mut().find(|m| m.addr == b.addr) {
                Some(m) => {
                    // Pool members come before removed backends, so `m` is the one to describe
                    // the address when either is still in the pool.
                    m.active += b.active;
                    m.peak_active = m.peak_active.max(b.peak_active);
                    add_cumulative!(*m, *b);
                }
                None => merged.push(b.clone()),
            }
        }
        merged
    }
}
