//! When each check of a round starts: all at once for a small pool, spread evenly over the
//! interval for a large one.
//!
//! A pool of 10,000 backends checked all at once opens 10,000 sockets in one burst every
//! interval, on the runtime that also answers the admin endpoint and runs reloads, and gets
//! 10,000 results back together. Like HAProxy's `spread-checks`, a round starts at most
//! [`MAX_BURST`] checks at a time: the pool is cut into equal slices of at most that many, and
//! slice `k` of `n` starts `k/n` of the interval after the round began. So each backend is
//! still checked once per interval, and a pool of up to [`MAX_BURST`] backends is checked all
//! at once, as before.

use std::time::Duration;

use lb_core::Backend;
use tokio::time::Instant;

/// The most checks a round starts at once.
pub(super) const MAX_BURST: usize = 100;

/// The backends of one round of checks and when each slice of them is due.
#[derive(Debug)]
pub(super) struct Round {
    backends: Vec<Backend>,
    /// How many have been handed out.
    started: usize,
    began: Instant,
    interval: Duration,
    /// Slices (at least one) and backends per slice (the last may have fewer).
    slices: usize,
    per_slice: usize,
}

impl Round {
    /// A round of `backends` beginning at `began`, spread over `interval`.
    pub(super) fn new(backends: Vec<Backend>, began: Instant, interval: Duration) -> Round {
        let slices = backends.len().div_ceil(MAX_BURST).max(1);
        let per_slice = backends.len().div_ceil(slices).max(1);
        Round { backends, started: 0, began, interval, slices, per_slice }
    }

    /// When the next slice is due, if any is left.
    pub(super) fn next_due(&self) -> Option<Instant> {
        if self.started >= self.backends.len() {
            return None;
        }
        let slice = self.started / self.per_slice;
        // Far fewer slices than a u32 holds: a pool of 400 billion backends would not fit.
        let (k, n) = (slice as u32, self.slices as u32);
        Some(self.began + self.interval.saturating_mul(k) / n)
    }

    /// The backends whose slice is due by `now` (several slices if the caller is late), each
    /// handed out once.
    pub(super) fn due(&mut self, now: Instant) -> &[Backend] {
        let from = self.started;
        while self.next_due().is_some_and(|due| due <= now) {
            self.started = (self.started + self.per_slice).min(self.backends.len());
        }
        &self.backends[from..self.started]
    }

    /// Every backend not handed out yet: a new round begins while this one is behind.
    pub(super) fn rest(&mut self) -> &[Backend] {
        let from = self.started;
        self.started = self.backends.len();
        &self.backends[from..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::Pool;
    use std::net::SocketAddr;

    fn backends(n: u16) -> Vec<Backend> {
        let pool = Pool::default();
        let all = (0..n).map(|i| (SocketAddr::from(([10, 0, 0, 1], i + 1)), Default::default()));
        assert!(pool.add_backends(all, None).iter().all(Result::is_ok));
        pool.backends()
    }

    fn ports(list: &[Backend]) -> Vec<u16> {
        list.iter().map(|b| b.addr.port()).collect()
    }

    #[test]
    fn a_small_pool_is_checked_all_at_once() {
        let t = Instant::now();
        let mut round = Round::new(backends(100), t, Duration::from_secs(2));
        assert_eq!(round.next_due(), Some(t));
        assert_eq!(ports(round.due(t)), (1..=100).collect::<Vec<_>>());
        assert_eq!(round.next_due(), None);
        assert!(round.due(t + Duration::from_secs(5)).is_empty());
        let mut empty = Round::new(Vec::new(), t, Duration::from_secs(2));
        assert_eq!(empty.next_due(), None);
        assert!(empty.due(t).is_empty());
    }

    #[test]
    fn a_large_pool_is_spread_evenly_over_the_interval_each_backend_once() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        // 250 backends: 3 slices of 84, 84 and 82, at 0, 1/3 and 2/3 of the interval.
        let mut round = Round::new(backends(250), t, ms(3000));
        assert_eq!(ports(round.due(t)), (1..=84).collect::<Vec<_>>());
        assert_eq!(round.next_due(), Some(t + ms(1000)));
        assert!(round.due(t + ms(999)).is_empty());
        assert_eq!(ports(round.due(t + ms(1000))), (85..=168).collect::<Vec<_>>());
        assert_eq!(round.next_due(), Some(t + ms(2000)));
        assert_eq!(ports(round.due(t + ms(2500))), (169..=250).collect::<Vec<_>>());
        assert_eq!(round.next_due(), None);
        // Late: every slice due is handed out at once.
        let mut round = Round::new(backends(250), t, ms(3000));
        assert_eq!(round.due(t + ms(2000)).len(), 250);
        // A new round while this one is behind: the rest, once.
        let mut round = Round::new(backends(250), t, ms(3000));
        assert_eq!(round.due(t).len(), 84);
        assert_eq!(ports(round.rest()), (85..=250).collect::<Vec<_>>());
        assert!(round.rest().is_empty());
        // 10,000 backends: 100 slices of 100, one every 20 ms of a 2 s interval.
        let mut round = Round::new(backends(10_000), t, ms(2000));
        let mut seen = 0;
        for k in 0..100 {
            assert_eq!(round.next_due(), Some(t + ms(20 * k)));
            let slice = round.due(t + ms(20 * k));
            assert_eq!(slice.len(), 100);
            assert_eq!(slice[0].addr.port() as usize, seen + 1);
            seen += slice.len();
        }
        assert_eq!(round.next_due(), None);
    }
}
