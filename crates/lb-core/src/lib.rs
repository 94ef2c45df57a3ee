//! `lb-core`: the I/O-free heart of a TCP load balancer.
//!
//! A [`Pool`] holds backends (address, weight, stable id) with their live state: active
//! connections, totals, bytes, health and admin state. It chooses a backend for each new
//! connection with one of five [`Algorithm`]s — smooth weighted `round_robin`,
//! `least_connections`, weighted `random`, Maglev `ip_hash` and `p2c` (power of two choices) —
//! all weight-aware, all skipping backends that are down, draining or in maintenance.
//!
//! Nothing here does I/O or reads a clock: time is passed in, randomness can be injected. The
//! pick path takes no lock: every change publishes a new immutable snapshot, and a pick loads it
//! and touches only atomics. That makes the crate as usable inside an async proxy (see
//! `lb-net`) as inside a simulation ([`sim`]).
//!
//! Traffic management is decided here too, once per published snapshot: backup backends
//! ([`AddOptions::backup`]), fail-open below a panic threshold, slow start
//! ([`PoolConfig::slow_start`], driven by [`Pool::tick`]) and bounded-load `ip_hash`
//! ([`PoolConfig::hash_balance_factor`]). Two read-only questions are answered on the side:
//! [`Pool::what_if`] (what a change would move) and [`Pool::explain`] (why a client would get
//! the backend it gets).
//!
//! `cargo run -p lb-core --example pick` runs a pool on its own: weighted picks, a drain, failed
//! connects, and its stats printed from the counter table ([`CounterInfo`]).
//!
//! # Example: embedding the pool
//!
//! ```
//! use std::time::Instant;
//! use lb_core::{Algorithm, Pool, PoolConfig};
//!
//! let pool = Pool::new(PoolConfig { algorithm: Algorithm::RoundRobin, ..PoolConfig::default() })?;
//! let a = "127.0.0.1:8001".parse()?;
//! let b = "127.0.0.1:8002".parse()?;
//! pool.add(a, Some(2))?;
//! pool.add(b, None)?;
//!
//! // Each new client connection asks for a backend; the lease counts it as active.
//! let client = Some("203.0.113.7".parse()?);
//! let lease = pool.pick(client, &[])?;
//! assert_eq!(lease.addr(), a);
//! assert_eq!(pool.stats().backend(a).unwrap().active, 1);
//!
//! // The connect failed? Record it (a passive health failure) and retry elsewhere.
//! lease.record_connect_failure("connection refused", Instant::now());
//! let retry = pool.pick(client, &[lease.id()])?;
//! assert_eq!(retry.addr(), b);
//! retry.record_connected();
//! retry.record_bytes_in(512);
//!
//! drop((lease, retry)); // the connections are over
//! assert_eq!(pool.stats().totals.active, 0);
//!
//! // Change the algorithm at runtime; counts carry over.
//! pool.set_algorithm("least_connections".parse()?);
//! assert_eq!(pool.stats().totals.bytes_in, 512);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs, missing_debug_implementations, unreachable_pub, rust_2018_idioms)]
#![forbid(unsafe_code)]

mod backend;
mod counters;
mod error;
mod health;
mod pool;
pub mod selection;
pub mod sim;
mod slot;
pub mod slow_start;
mod stats;

pub use backend::{
    validate_weight, AdminState, Backend, BackendId, DEFAULT_WEIGHT, MAX_WEIGHT, MIN_WEIGHT,
};
pub use counters::{BackendStats, CounterInfo, CounterKind, RetiredTotals, Totals};
pub use error::{Error, Result};
pub use health::{Health, HealthConfig, HealthMachine, Reason, Transition};
pub use pool::{
    AddOptions, BoundedLoad, ByteMeter, Change, Explain, Inputs, Lease, Load, PassReason,
    PassedOver, Pool, PoolConfig, Serving, ShareChange, WhatIf, MAX_HASH_BALANCE_FACTOR,
};
pub use selection::Algorithm;
pub use stats::PoolStats;
