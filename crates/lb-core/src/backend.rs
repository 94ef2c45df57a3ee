//! Backends: what a backend is (address, weight, id) and its admin state.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The smallest weight a backend may have.
pub const MIN_WEIGHT: u32 = 1;
/// The largest weight a backend may have. A bound keeps every precomputed table (the round-robin
/// cycle, the Maglev table) small enough to rebuild in milliseconds.
pub const MAX_WEIGHT: u32 = 1000;
/// The weight a backend gets when none is given.
pub const DEFAULT_WEIGHT: u32 = 1;

/// Checks that `weight` is within [`MIN_WEIGHT`]`..=`[`MAX_WEIGHT`].
///
/// ```
/// assert!(lb_core::validate_weight(3).is_ok());
/// assert!(lb_core::validate_weight(0).is_err());
/// ```
pub fn validate_weight(weight: u64) -> Result<u32> {
    if (u64::from(MIN_WEIGHT)..=u64::from(MAX_WEIGHT)).contains(&weight) {
        Ok(weight as u32)
    } else {
        Err(Error::WeightOutOfRange(weight))
    }
}

/// A backend's identity within one [`Pool`](crate::Pool).
///
/// Ids are never reused: a backend removed and added again gets a new id, so a late result about
/// the old one (a health check, a finished connection) cannot be mistaken for the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub(crate) u64);

impl BackendId {
    /// The raw number, for logs and metrics labels.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What an operator has asked of a backend, independent of its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AdminState {
    /// Takes new connections (if healthy).
    #[default]
    Ready,
    /// Takes no new connections; open ones continue until they finish.
    Drain,
    /// Maintenance: takes no new connections and is not expected to be serving.
    Maint,
}

impl AdminState {
    /// The name used on the command line and in stats.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }
}

impl fmt::Display for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for AdminState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ready" | "enable" | "enabled" => Ok(AdminState::Ready),
            "drain" | "draining" => Ok(AdminState::Drain),
            "maint" | "maintenance" => Ok(AdminState::Maint),
            _ => Err(Error::UnknownAdminState { name: s.to_owned() }),
        }
    }
}

/// A backend as configured: where it is and how much traffic it should get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Backend {
    /// Stable id within the pool.
    pub id: BackendId,
    /// Where to connect.
    pub addr: SocketAddr,
    /// Relative share of new connections, [`MIN_WEIGHT`]`..=`[`MAX_WEIGHT`].
    pub weight: u32,
}
