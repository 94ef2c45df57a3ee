//! Criterion benchmarks and the algorithm simulation of the `lb` workspace.
//!
//! Run everything with `cargo bench` at the workspace root, or one part:
//!
//! - `cargo bench -p lb-benches --bench pick`: pick cost of every algorithm at 3, 100, 1,000
//!   and 10,000 backends, on one thread and on two threads at once, and Maglev table builds.
//! - `cargo bench -p lb-benches --bench publish`: the writer's side, one change (weight, add or
//!   remove, drain or enable) and its snapshot rebuild at 1,000 and 10,000 backends.
//! - `cargo run --release -p lb-benches --example pick_during_publish`: pick latency
//!   percentiles with and without another thread publishing changes in a loop;
//!   `--example memory`: bytes per backend; `--example pick_loop`: a fixed number of picks,
//!   for instruction counts under callgrind.
//! - `cargo bench -p lb-benches --bench simulation`: the deterministic workload replayed through
//!   each algorithm, printed as a table; a skewed-client workload through `ip_hash` with and
//!   without bounded load; and Maglev's disruption on removal.
//!
//! This library holds what they share: the pools they measure, built the same way.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use lb_core::{Algorithm, Pool, PoolConfig};

/// Backend `i`'s address: distinct for up to 2^24 backends.
pub fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 8000))
}

/// Client `i`'s address: distinct, spread over the IPv4 space.
pub fn client(i: u64) -> Option<IpAddr> {
    Some(IpAddr::V4(Ipv4Addr::from((i as u32).wrapping_mul(2_654_435_761))))
}

/// The pools measured, by name: every algorithm, and `ip_hash` with bounded load (factor 125),
/// as `(name, algorithm, hash_balance_factor)`.
pub const POOLS: [(&str, Algorithm, u32); 6] = [
    ("round_robin", Algorithm::RoundRobin, 0),
    ("least_connections", Algorithm::LeastConnections, 0),
    ("random", Algorithm::Random, 0),
    ("ip_hash", Algorithm::IpHash, 0),
    ("ip_hash_bounded", Algorithm::IpHash, 125),
    ("p2c", Algorithm::P2c, 0),
];

/// A pool of `n` backends with uneven weights (1 to 4, so the weighted paths are exercised)
/// under `algorithm`.
pub fn pool(algorithm: Algorithm, hash_balance_factor: u32, n: usize) -> Pool {
    // Every add publishes a snapshot; `random`'s is the cheapest to build (no Maglev table, no
    // round-robin cycle), so the backends go in under it and the algorithm is set once at the
    // end: a 10,000-backend `ip_hash` pool would otherwise build 10,000 Maglev tables.
    let config =
        PoolConfig { algorithm: Algorithm::Random, hash_balance_factor, ..PoolConfig::default() };
    let pool = Pool::new(config).expect("a valid configuration");
    for i in 0..n {
        pool.add(addr(i), Some(1 + (i % 4) as u32)).expect("distinct addresses");
    }
    pool.set_algorithm(algorithm);
    pool
}
