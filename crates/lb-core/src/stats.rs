//! Cheap, consistent snapshots of the pool's counters for display and metrics.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use crate::backend::{AdminState, Backend, BackendId, Counters};
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

/// Sums over all backends, including removed ones still shown.
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

/// The whole pool at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    /// The algorithm in use.
    pub algorithm: Algorithm,
    /// Every backend, in the order added; removed ones with open connections last.
    pub backends: Vec<BackendStats>,
    /// Sums.
    pub totals: Totals,
}

impl PoolStats {
    pub(crate) fn new(
        algorithm: Algorithm,
        backends: Vec<BackendStats>,
        available: usize,
        no_backend: u64,
    ) -> Self {
        let mut totals = Totals {
            backends: backends.iter().filter(|b| !b.removed).count(),
            available,
            no_backend,
            ..Totals::default()
        };
        for b in &backends {
            totals.active += b.active;
            totals.picks += b.picks;
            totals.connections += b.connections;
            totals.connect_failures += b.connect_failures;
            totals.retries += b.retries;
            totals.bytes_in += b.bytes_in;
            totals.bytes_out += b.bytes_out;
        }
        PoolStats { algorithm, backends, totals }
    }

    /// The stats of the backend at `addr`, if listed.
    pub fn backend(&self, addr: SocketAddr) -> Option<&BackendStats> {
        self.backends.iter().find(|b| b.addr == addr && !b.removed)
    }
}
