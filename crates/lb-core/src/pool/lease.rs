//! The lease a pick returns: one connection's accounting on its backend.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use crate::backend::{Backend, BackendId};
use crate::health::Transition;
use crate::slot::Slot;

/// Counts a connection as active on its backend until dropped.
///
/// Returned by [`Pool::pick`](crate::Pool::pick). Record what happens to the connection on it;
/// dropping it ends the connection's accounting (also after the backend was removed from the
/// pool).
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
    /// The lease of a connection already counted on `slot` (by `Counters::try_acquire`).
    #[inline]
    pub(super) fn new(slot: Arc<Slot>) -> Lease {
        Lease { slot }
    }

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

    /// A handle on the backend's byte counters, for a relay that runs apart from the
    /// connection's own task (lb-net's io_uring engine) and records into them as bytes pass.
    /// It is not a lease: it counts no connection, and dropping it releases nothing. Held past
    /// the lease, it only delays folding a removed backend's counters into the pool's totals.
    pub fn byte_meter(&self) -> ByteMeter {
        ByteMeter { slot: Arc::clone(&self.slot) }
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

    /// Records that connecting to the backend failed in its stats only (`connect_failures`),
    /// without counting it against the backend's health as
    /// [`record_connect_failure`](Self::record_connect_failure) does: for a balancer with no
    /// active health checks, where nothing would bring a backend that passive failures took
    /// down back up.
    pub fn record_connect_failure_stats_only(&self) {
        self.slot.counters.connect_failures.fetch_add(1, Relaxed);
    }

    /// Records that connecting to the backend failed, counting as a passive health failure.
    /// Returns the health transition this causes, if any. `detail` says what failed (e.g.
    /// "connection refused") and ends up in the transition's reason.
    ///
    /// [`record_connect_failure_stats_only`](Self::record_connect_failure_stats_only) counts
    /// the failure the same way but leaves health alone.
    pub fn record_connect_failure(&self, detail: &str, now: Instant) -> Option<Transition> {
        self.record_connect_failure_stats_only();
        let pool = self.slot.pool.upgrade()?;
        pool.connect_failed(self.slot.backend.id, detail, now)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.slot.counters.release();
        self.slot.track(|| None);
    }
}

/// Records bytes relayed to and from one backend, as [`Lease::record_bytes_in`] and
/// [`Lease::record_bytes_out`] do (see [`Lease::byte_meter`]).
#[derive(Clone)]
pub struct ByteMeter {
    slot: Arc<Slot>,
}

impl fmt::Debug for ByteMeter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteMeter").field("backend", &self.slot.backend).finish()
    }
}

impl ByteMeter {
    /// Records bytes received from the client and sent to the backend.
    #[inline]
    pub fn record_in(&self, n: u64) {
        self.slot.counters.bytes_in.fetch_add(n, Relaxed);
    }

    /// Records bytes received from the backend and sent to the client.
    #[inline]
    pub fn record_out(&self, n: u64) {
        self.slot.counters.bytes_out.fetch_add(n, Relaxed);
    }
}
