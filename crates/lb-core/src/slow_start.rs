//! Slow start: a backend that has just become available gets its weight ramped up over a
//! window instead of a full share at once (HAProxy's `slowstart`, Envoy's slow-start window).
//!
//! The ramp is not computed per pick. It advances in [`STEPS`] steps of a tenth of the window
//! each, and each step is published as a new snapshot with the backend's reduced weight baked
//! into the selectors (the caller drives [`Pool::tick`](crate::Pool::tick), which says when the
//! next step is due). A pick therefore costs the same with and without slow start, and a pool
//! without it never ramps anything.
//!
//! A backend `elapsed` into a window `window` is at step `k = floor(STEPS × elapsed / window)`
//! and has `max(k, 1) / STEPS` of its weight: 10% for the first fifth of the window, then 20%,
//! 30%, ... 90% for the last tenth, and 100% once the window has passed. That is HAProxy's
//! `weight × elapsed / window` with a floor of a tenth, rounded down to a tenth. So that a weight of 1 can
//! ramp too, every selector weight of a snapshot in which some backend ramps is scaled by
//! `STEPS` (HAProxy scales its weights by 16 for the same reason); scaling every weight by one
//! factor changes no algorithm's shares, and leaves Maglev's table exactly as it was.
//!
//! Time is passed in (lb-core reads no clock): a ramp starts at the `now` of the call that made
//! the backend available (a health result, [`Pool::add_backend`](crate::Pool::add_backend) or
//! [`Pool::set_admin_state_at`](crate::Pool::set_admin_state_at) with a time).

use std::time::{Duration, Instant};

/// Steps of a ramp: the backend's weight goes 10%, 20%, ... 100%.
pub const STEPS: u32 = 10;

/// One backend's ramp: when it became available, and the step last published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ramp {
    pub(crate) since: Instant,
    pub(crate) step: u32,
}

impl Ramp {
    /// A ramp starting at `now`, at its first step.
    pub(crate) fn start(now: Instant) -> Ramp {
        Ramp { since: now, step: 0 }
    }

    /// The ramp as of `now`, or `None` once `window` has passed since it started.
    pub(crate) fn at(self, now: Instant, window: Duration) -> Option<Ramp> {
        let elapsed = now.saturating_duration_since(self.since).as_nanos();
        let window = window.as_nanos().max(1);
        if elapsed >= window {
            return None;
        }
        // `elapsed < window`, so this is below STEPS.
        let step = (elapsed * u128::from(STEPS) / window) as u32;
        // A `now` earlier than one seen before does not take the ramp back.
        Some(Ramp { since: self.since, step: step.max(self.step) })
    }

    /// When the next step is due: the first instant at which [`at`](Self::at) gives a later
    /// step (or ends the ramp).
    pub(crate) fn next_step_at(self, window: Duration) -> Instant {
        let nanos = (window.as_nanos() * u128::from(self.step + 1)).div_ceil(u128::from(STEPS));
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
        self.since.checked_add(Duration::from_nanos(nanos)).unwrap_or(self.since)
    }

    /// The share of its weight the backend has now, in percent.
    pub(crate) fn percent(self) -> u8 {
        (self.tenths() * 100 / STEPS) as u8
    }

    /// The backend's selector weight in a snapshot whose weights are scaled by `STEPS`.
    pub(crate) fn scaled_weight(self, weight: u32) -> u32 {
        weight * self.tenths()
    }

    fn tenths(self) -> u32 {
        self.step.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ramp_steps_by_tenths_and_ends_with_the_window() {
        let t0 = Instant::now();
        let window = Duration::from_secs(30);
        let ramp = Ramp::start(t0);
        assert_eq!(ramp.percent(), 10);
        assert_eq!(ramp.scaled_weight(1), 1, "a weight of 1 ramps too: 1 of 10");
        let at = |s: f64| ramp.at(t0 + Duration::from_secs_f64(s), window);
        assert_eq!(at(2.9).unwrap().step, 0);
        assert_eq!(at(3.0).unwrap().step, 1);
        assert_eq!(at(3.0).unwrap().percent(), 10, "a tenth at least");
        assert_eq!(at(6.0).unwrap().percent(), 20);
        assert_eq!(at(15.0).unwrap().percent(), 50);
        assert_eq!(at(29.999).unwrap().percent(), 90);
        assert_eq!(at(30.0), None);
        // Time going backwards (a caller's clocks disagreeing) never lowers the step.
        let later = at(15.0).unwrap();
        assert_eq!(later.at(t0, window).unwrap().step, later.step);
    }

    #[test]
    fn the_next_step_is_due_exactly_when_the_step_changes() {
        let t0 = Instant::now();
        for window in
            [Duration::from_nanos(17), Duration::from_millis(333), Duration::from_secs(61)]
        {
            let mut ramp = Ramp::start(t0);
            for step in 0..STEPS {
                assert_eq!(ramp.step, step);
                let due = ramp.next_step_at(window);
                let before = due - Duration::from_nanos(1);
                assert_eq!(ramp.at(before, window).map(|r| r.step), Some(step), "{window:?}");
                match ramp.at(due, window) {
                    Some(next) => ramp = next,
                    None => assert_eq!(step, STEPS - 1),
                }
            }
        }
    }
}
