//! The one error type of `lb-core`.

use std::net::SocketAddr;

use crate::backend::{MAX_WEIGHT, MIN_WEIGHT};

/// Everything that can go wrong when changing or querying a [`Pool`](crate::Pool).
///
/// Messages are written for the person at the console: each one names the thing that was wrong
/// and, where it helps, what would have been accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A backend with this address is already in the pool.
    #[error("backend {0} is already in the pool")]
    DuplicateBackend(SocketAddr),
    /// No backend with this address is in the pool.
    #[error("no backend {0} in the pool")]
    UnknownBackend(SocketAddr),
    /// A weight outside `MIN_WEIGHT..=MAX_WEIGHT`.
    #[error(
        "weight {0} is out of range: a weight is a whole number from {MIN_WEIGHT} to {MAX_WEIGHT}"
    )]
    WeightOutOfRange(u64),
    /// An algorithm name that is not one of [`Algorithm::ALL`](crate::Algorithm::ALL).
    #[error("unknown algorithm {name:?}: expected one of {}", crate::Algorithm::names())]
    UnknownAlgorithm {
        /// The name that was given.
        name: String,
    },
    /// An admin state name that is not `ready`, `drain` or `maint`.
    #[error("unknown admin state {name:?}: expected one of ready, drain, maint")]
    UnknownAdminState {
        /// The name that was given.
        name: String,
    },
    /// `rise` or `fall` of zero: the backend could never change state.
    #[error("{name} must be at least 1 (got {value})")]
    InvalidThreshold {
        /// `"rise"` or `"fall"`.
        name: &'static str,
        /// The value that was given.
        value: u32,
    },
    /// A panic threshold above 100 percent.
    #[error("panic threshold {0}% is out of range: a percentage from 0 (off) to 100")]
    PanicThresholdOutOfRange(u8),
    /// A slow-start window of zero.
    #[error("slow start must be longer than zero (leave it unset for none)")]
    ZeroSlowStart,
    /// A hash balance factor that is neither 0 nor within 100 to 10000.
    #[error(
        "hash balance factor {0} is out of range: 0 (off) or a percentage of the average load \
         from 100 to 10000, e.g. 125"
    )]
    HashBalanceFactorOutOfRange(u32),
    /// Every backend is removed, down, draining, in maintenance, excluded or at its limit.
    #[error("no backend available")]
    NoBackendAvailable,
}

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
