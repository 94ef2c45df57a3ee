//! Slots and candidates: a backend as the selectors and leases hold it.
//!
//! This module sits below both the pool and the selectors: the pool builds candidates, the
//! selectors read them, and neither has to know the other.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Instant;

use crate::backend::{Backend, BackendId};
use crate::counters::Counters;
use crate::health::Transition;

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
    pub(crate) pool: Weak<dyn PassiveHealth>,
}

/// Where a lease reports a failed connect: the pool its backend belongs to.
///
/// A trait, with the pool's shared state as its one implementation, only so that slots (and the
/// selectors that read them) do not depend on the pool's type.
pub(crate) trait PassiveHealth: Send + Sync {
    /// Feeds a failed connect to backend `id` into its health as a failed check; returns the
    /// transition this causes, if any.
    fn connect_failed(
        self: Arc<Self>,
        id: BackendId,
        detail: &str,
        now: Instant,
    ) -> Option<Transition>;
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

    pub(crate) fn addr(&self) -> SocketAddr {
        self.slot.backend.addr
    }

    /// A candidate outside any pool with `active` connections open, for selector tests.
    #[cfg(test)]
    pub(crate) fn for_test(i: u16, weight: u32, active: u64) -> Candidate {
        /// No pool: a weak reference to it never upgrades.
        enum NoPool {}
        impl PassiveHealth for NoPool {
            fn connect_failed(
                self: Arc<Self>,
                _: BackendId,
                _: &str,
                _: Instant,
            ) -> Option<Transition> {
                match *self {}
            }
        }
        let addr = SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 80));
        let slot = Arc::new(Slot {
            backend: Backend { id: BackendId(u64::from(i)), addr, weight },
            counters: Counters::default(),
            pool: Weak::<NoPool>::new(),
        });
        for _ in 0..active {
            assert!(slot.counters.try_acquire(u64::MAX));
        }
        Candidate { slot, weight }
    }
}
