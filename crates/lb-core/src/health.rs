//! Health as a pure state machine: consecutive results move a backend up or down.
//!
//! Nothing here reads a clock or does I/O. Callers feed in results (from active checks or from
//! real traffic) and get back a [`Transition`] exactly when the state changes, so they log only
//! what an operator needs to see.
//!
//! ```
//! use lb_core::{Health, HealthConfig, HealthMachine};
//!
//! let config = HealthConfig { rise: 2, fall: 3, initial: Health::Up };
//! let mut machine = HealthMachine::new(config);
//! assert_eq!(machine.observe(false), None);
//! assert_eq!(machine.observe(false), None);
//! assert_eq!(machine.observe(false), Some((Health::Up, Health::Down)));
//! assert_eq!(machine.observe(true), None);
//! assert_eq!(machine.observe(true), Some((Health::Down, Health::Up)));
//! ```

use std::fmt;
use std::time::Instant;

use crate::backend::Backend;
use crate::error::{Error, Result};

/// Whether a backend is answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Answering, as far as checks and real traffic tell: takes new connections unless its
    /// admin state says otherwise.
    Up,
    /// Skipped by every algorithm until it passes `rise` checks in a row.
    Down,
}

impl Health {
    /// `"up"` or `"down"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Thresholds of the health state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// Consecutive successes that bring a down backend up. Default 2, as HAProxy: one lucky
    /// answer from a flapping backend is not enough.
    pub rise: u32,
    /// Consecutive failures that take an up backend down. Default 3, as HAProxy: a single lost
    /// check on a busy backend should not take it out of rotation.
    pub fall: u32,
    /// The state of a newly added backend. Default up, so traffic flows at once and the first
    /// `fall` failures take out a backend that is really dead.
    pub initial: Health,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig { rise: 2, fall: 3, initial: Health::Up }
    }
}

impl HealthConfig {
    /// Checks that both thresholds are at least 1.
    pub fn validate(&self) -> Result<()> {
        if self.rise == 0 {
            return Err(Error::InvalidThreshold { name: "rise", value: 0 });
        }
        if self.fall == 0 {
            return Err(Error::InvalidThreshold { name: "fall", value: 0 });
        }
        Ok(())
    }
}

/// One backend's health: its state and the current run of equal results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthMachine {
    config: HealthConfig,
    state: Health,
    /// Length of the current run of results that point away from `state` (successes while
    /// down, failures while up). Reset by any result that agrees with `state`.
    streak: u32,
    /// Whether any result (or a forced state) has been seen since the machine was made.
    checked: bool,
}

impl HealthMachine {
    /// A machine in `config.initial` state.
    pub fn new(config: HealthConfig) -> Self {
        HealthMachine { config, state: config.initial, streak: 0, checked: false }
    }

    /// The current state.
    pub fn state(&self) -> Health {
        self.state
    }

    /// Whether any result, or a forced state, has been seen yet. Until then the state is only
    /// `config.initial`, taken on trust (HAProxy's "init" state).
    pub fn checked(&self) -> bool {
        self.checked
    }

    /// The thresholds in use.
    pub fn config(&self) -> HealthConfig {
        self.config
    }

    /// Replaces the thresholds, keeping the state and the current streak.
    pub fn set_config(&mut self, config: HealthConfig) {
        self.config = config;
    }

    /// Feeds one result; returns `(old, new)` when it changes the state.
    pub fn observe(&mut self, ok: bool) -> Option<(Health, Health)> {
        self.checked = true;
        let (toward, threshold) = match (self.state, ok) {
            (Health::Up, true) | (Health::Down, false) => {
                self.streak = 0;
                return None;
            }
            (Health::Up, false) => (Health::Down, self.config.fall),
            (Health::Down, true) => (Health::Up, self.config.rise),
        };
        self.streak += 1;
        if self.streak >= threshold {
            let old = self.state;
            self.state = toward;
            self.streak = 0;
            Some((old, toward))
        } else {
            None
        }
    }

    /// Forces a state (an operator's decision), clearing the streak.
    pub fn force(&mut self, state: Health) -> Option<(Health, Health)> {
        self.streak = 0;
        self.checked = true;
        let old = std::mem::replace(&mut self.state, state);
        (old != state).then_some((old, state))
    }
}

/// Why a backend's health changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Enough active checks in a row succeeded.
    ChecksPassed {
        /// How many in a row (the `rise` threshold).
        consecutive: u32,
    },
    /// Enough active checks or real connection attempts in a row failed.
    ChecksFailed {
        /// How many in a row (the `fall` threshold).
        consecutive: u32,
        /// What the last failure was, as the caller described it.
        detail: String,
    },
    /// Set by an operator or embedding program.
    Forced,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::ChecksPassed { consecutive } => {
                write!(f, "{consecutive} consecutive successful checks")
            }
            Reason::ChecksFailed { consecutive, detail } if detail.is_empty() => {
                write!(f, "{consecutive} consecutive failures")
            }
            Reason::ChecksFailed { consecutive, detail } => {
                write!(f, "{consecutive} consecutive failures, last: {detail}")
            }
            Reason::Forced => f.write_str("set by operator"),
        }
    }
}

/// A health change, reported so the caller can log it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The backend that changed.
    pub backend: Backend,
    /// The backend's health before the change.
    pub from: Health,
    /// The backend's health after the change.
    pub to: Health,
    /// What changed it: checks passing or failing (active or passive), or an operator.
    pub reason: Reason,
    /// When (as passed in by the caller).
    pub at: Instant,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "backend {} is {} (was {}): {}",
            self.backend.addr, self.to, self.from, self.reason
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(rise: u32, fall: u32, initial: Health) -> HealthMachine {
        HealthMachine::new(HealthConfig { rise, fall, initial })
    }

    #[test]
    fn a_machine_is_unchecked_until_its_first_result_or_forced_state() {
        let mut m = machine(2, 3, Health::Up);
        assert!(!m.checked());
        assert_eq!(m.observe(true), None);
        assert!(m.checked(), "a result that changes nothing still counts as checked");
        let mut m = machine(2, 3, Health::Up);
        assert_eq!(m.force(Health::Up), None);
        assert!(m.checked());
    }

    #[test]
    fn fall_failures_in_a_row_take_it_down() {
        let mut m = machine(2, 3, Health::Up);
        assert_eq!(m.observe(false), None);
        assert_eq!(m.observe(false), None);
        assert_eq!(m.observe(false), Some((Health::Up, Health::Down)));
        assert_eq!(m.state(), Health::Down);
        assert_eq!(m.observe(false), None, "no repeated transition while already down");
    }

    #[test]
    fn a_success_breaks_a_run_of_failures() {
        let mut m = machine(2, 3, Health::Up);
        for _ in 0..10 {
            assert_eq!(m.observe(false), None);
            assert_eq!(m.observe(false), None);
            assert_eq!(m.observe(true), None);
        }
        assert_eq!(m.state(), Health::Up);
    }

    #[test]
    fn rise_successes_bring_it_up() {
        let mut m = machine(2, 3, Health::Down);
        assert_eq!(m.observe(true), None);
        assert_eq!(m.observe(false), None);
        assert_eq!(m.observe(true), None);
        assert_eq!(m.observe(true), Some((Health::Down, Health::Up)));
    }

    #[test]
    fn thresholds_of_one_switch_at_once() {
        let mut m = machine(1, 1, Health::Up);
        assert_eq!(m.observe(false), Some((Health::Up, Health::Down)));
        assert_eq!(m.observe(true), Some((Health::Down, Health::Up)));
    }

    #[test]
    fn zero_thresholds_are_rejected() {
        let bad = HealthConfig { rise: 0, ..HealthConfig::default() };
        assert_eq!(bad.validate(), Err(Error::InvalidThreshold { name: "rise", value: 0 }));
        let bad = HealthConfig { fall: 0, ..HealthConfig::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("fall must be at least 1"));
    }

    #[test]
    fn force_reports_only_real_changes() {
        let mut m = machine(2, 3, Health::Up);
        assert_eq!(m.force(Health::Up), None);
        assert_eq!(m.force(Health::Down), Some((Health::Up, Health::Down)));
    }
}
