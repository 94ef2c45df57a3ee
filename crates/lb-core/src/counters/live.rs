//! How the live counters count: a pick and a release are one atomic read-modify-write each,
//! and the peak is kept without making either more expensive.

use std::sync::atomic::Ordering::{Acquire, Relaxed, SeqCst};

use super::Counters;

impl Counters {
    // Orderings: a lease is opened before it is closed, and `release` publishes its close with
    // `Release` (part of `SeqCst`). Whoever loads `closed` with `Acquire` and then reads `opened`
    // therefore sees the opening of every close it counted, so `opened - closed` never goes
    // below zero. The read-modify-writes are `SeqCst` for the least-connections tree: whoever
    // changes a count then reads the tree (`Slot::track`), and the writer that installs a tree
    // reads the counts after pointing the slots at it; sequential consistency makes sure at
    // least one of the two sees the other (on x86 a locked instruction is that strong anyway,
    // so this costs nothing there).

    /// Counts a pick and one more active connection, unless that would exceed `limit`.
    #[inline]
    pub(crate) fn try_acquire(&self, limit: u64) -> bool {
        let mut closed = self.closed.load(Acquire);
        let opened = if limit == u64::MAX {
            self.opened.fetch_add(1, SeqCst)
        } else {
            // Open only if the count read is below the limit: the compare-exchange fails if
            // anyone opened in between, and closes in between only make the count smaller.
            let mut opened = self.opened.load(Relaxed);
            loop {
                if opened - closed >= limit {
                    // Closes since `closed` was read may have made room.
                    let closed_now = self.closed.load(Acquire);
                    if closed_now == closed {
                        return false;
                    }
                    closed = closed_now;
                    opened = self.opened.load(Relaxed);
                    continue;
                }
                match self.opened.compare_exchange_weak(opened, opened + 1, SeqCst, Relaxed) {
                    Ok(_) => break opened,
                    Err(actual) => opened = actual,
                }
            }
        };
        // At most this many were open right after this pick: closes after `closed` was read
        // are not subtracted. A load first; the exact check runs only for a possible new peak.
        if opened + 1 - closed > self.peak_active.load(Relaxed) {
            self.record_peak(opened);
        }
        true
    }

    /// Raises the peak to the count right after the pick that found `opened` opened before it.
    /// Closes counted from now on may belong to connections opened after that pick, so this is
    /// a lower bound, and exact unless a connection closed during the pick: the peak never
    /// shows more connections than were open at once.
    #[cold]
    fn record_peak(&self, opened: u64) {
        let closed = self.closed.load(Acquire);
        self.peak_active.fetch_max((opened + 1).saturating_sub(closed), Relaxed);
    }

    /// Ends one active connection counted by a successful [`try_acquire`](Self::try_acquire).
    /// Only a dropped `Lease` calls this, once per lease.
    #[inline]
    pub(crate) fn release(&self) {
        self.closed.fetch_add(1, SeqCst);
    }

    /// Connections open now. Picks and releases running meanwhile can make it count a
    /// connection that closed while it was being read, never miss one that is open.
    #[inline]
    pub(crate) fn active(&self) -> u64 {
        let closed = self.closed.load(Acquire);
        self.opened.load(Relaxed) - closed
    }

    /// [`active`](Self::active) with sequentially consistent loads, for the least-connections
    /// tree (see the orderings above).
    #[inline]
    pub(crate) fn active_seq_cst(&self) -> u64 {
        let closed = self.closed.load(SeqCst);
        self.opened.load(SeqCst) - closed
    }

    /// Successful picks so far.
    pub(crate) fn picks(&self) -> u64 {
        self.opened.load(Relaxed)
    }

    /// The most connections open at once so far (see [`record_peak`](Self::record_peak)).
    pub(crate) fn peak_active(&self) -> u64 {
        self.peak_active.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::sync::atomic::Ordering::Relaxed;

    use super::Counters;

    #[test]
    fn counts_stay_exact_and_within_the_limit_across_threads() {
        const THREADS: u64 = 4;
        const ROUNDS: u64 = 50_000;
        for limit in [1, 3, u64::MAX] {
            let counters = Counters::default();
            // Leases held right now, counted after each acquire and before each release, so it
            // can never be above the true count.
            let held = AtomicU64::new(0);
            let successes = AtomicU64::new(0);
            std::thread::scope(|s| {
                for _ in 0..THREADS {
                    s.spawn(|| {
                        for _ in 0..ROUNDS {
                            if counters.try_acquire(limit) {
                                let now = held.fetch_add(1, Relaxed) + 1;
                                assert!(now <= limit, "{now} open with a limit of {limit}");
                                successes.fetch_add(1, Relaxed);
                                held.fetch_sub(1, Relaxed);
                                counters.release();
                            }
                        }
                    });
                }
            });
            assert_eq!(counters.active(), 0);
            assert_eq!(counters.picks(), successes.load(Relaxed));
            let peak = counters.peak_active.load(Relaxed);
            assert!((1..=limit.min(THREADS)).contains(&peak), "peak {peak}, limit {limit}");
        }
    }

    #[test]
    fn peak_and_limit_are_exact_on_one_thread() {
        let counters = Counters::default();
        assert!(counters.try_acquire(2));
        assert!(counters.try_acquire(2));
        assert!(!counters.try_acquire(2));
        counters.release();
        assert!(counters.try_acquire(2));
        counters.release();
        counters.release();
        assert_eq!((counters.active(), counters.picks()), (0, 3));
        assert_eq!(counters.peak_active.load(Relaxed), 2);
    }
}
