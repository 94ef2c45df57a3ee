//! Slots and candidates: a backend as the selectors and leases hold it.
//!
//! This module sits below both the pool and the selectors: the pool builds candidates, the
//! selectors read them, and neither has to know the other.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Release, SeqCst};
use std::sync::{Arc, Weak};
use std::time::Instant;

use crate::backend::{Backend, BackendId};
use crate::counters::Counters;
use crate::health::Transition;
use crate::selection::{CurrentTree, LoadTree};

/// One backend's shared, long-lived part: identity and counters. Leases hold it, so accounting
/// outlives the backend's removal.
///
/// `repr(C)` with the tree tag and the counters first puts what every pick and release reads
/// and writes right after the `Arc`'s reference count, which both also write: usually one
/// cache line for all of it.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Slot {
    /// Where this backend is in its pool's least-connections tree: the tree's id in the high
    /// 32 bits and the leaf's index plus one in the low ones, or 0 when no tree tracks it (any
    /// other algorithm, a small pool, not a candidate). Set by the pool's writer.
    tree_leaf: AtomicU64,
    pub(crate) counters: Counters,
    pub(crate) backend: Backend,
    /// The pool, for reporting passive failures from a lease; weak so a leaked lease cannot keep
    /// a dropped pool alive.
    pub(crate) pool: Weak<dyn PassiveHealth>,
    /// The pool's current least-connections tree, for a release to find it.
    pub(crate) trees: Arc<CurrentTree>,
}

impl Slot {
    /// A new backend's slot, in no tree yet.
    pub(crate) fn new(
        backend: Backend,
        pool: Weak<dyn PassiveHealth>,
        trees: Arc<CurrentTree>,
    ) -> Slot {
        Slot { tree_leaf: AtomicU64::new(0), counters: Counters::default(), backend, pool, trees }
    }

    /// After this backend's active count changed (a pick counted, a lease dropped): brings the
    /// least-connections tree it is in up to date, if there is one. `picked_from` is the tree
    /// of the snapshot a pick used, which spares the lookup of the pool's current one when
    /// they are the same. Costs one load of this slot's tag when no tree tracks it.
    #[inline(always)]
    pub(crate) fn track<'a>(&self, picked_from: impl FnOnce() -> Option<&'a LoadTree>) {
        // Sequentially consistent, after the counter's sequentially consistent change: see
        // `CurrentTree::install` for the other half.
        let tag = self.tree_leaf.load(SeqCst);
        if tag != 0 {
            self.track_in(tag, picked_from());
        }
    }

    #[inline]
    fn track_in(&self, tag: u64, picked_from: Option<&LoadTree>) {
        let (id, leaf) = ((tag >> 32) as u32, (tag as u32 - 1) as usize);
        if let Some(tree) = picked_from.filter(|t| t.id() == id) {
            return tree.refresh(leaf, &self.counters);
        }
        // A tree other than the current one (being replaced right now) needs nothing: the
        // writer refreshes every leaf of the new one after tagging the slots.
        let current = self.trees.load();
        if let Some(tree) = current.as_deref().filter(|t| t.id() == id) {
            tree.refresh(leaf, &self.counters);
        }
    }

    /// Places this backend in a tree (`tag` as in `tree_leaf`; 0 for none); see
    /// `CurrentTree::install`.
    pub(crate) fn place(&self, tag: u64) {
        self.tree_leaf.store(tag, Release);
    }
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
        let backend = Backend { id: BackendId(u64::from(i)), addr, weight };
        let slot = Arc::new(Slot::new(backend, Weak::<NoPool>::new(), Arc::default()));
        for _ in 0..active {
            assert!(slot.counters.try_acquire(u64::MAX));
        }
        Candidate { slot, weight }
    }
}
