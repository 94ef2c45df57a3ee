//! A deterministic simulation that replays one synthetic workload through each algorithm.
//!
//! Connections arrive as a Poisson process from a fixed population of client IPs; each has a
//! heavy-tailed (Pareto, shape 1.5) amount of work, and a backend of speed `s` takes
//! `work / s` to serve it. Slow backends therefore accumulate connections, which is exactly
//! what separates the algorithms: round robin and random keep sending them their share, least
//! connections and p2c steer around them, ip_hash stays sticky whatever the load.
//!
//! Everything is driven by a seeded generator and virtual time, so the same [`Workload`] gives
//! the same [`Report`] on every run. It runs the real [`Pool`] (the same code as the
//! proxy), so the numbers are those of the shipped algorithms, not of a model of them.
//!
//! ```
//! use lb_core::sim::{simulate, Workload};
//! use lb_core::Algorithm;
//!
//! let workload = Workload { connections: 2_000, ..Workload::default() };
//! let rr = simulate(Algorithm::RoundRobin, &workload);
//! let lc = simulate(Algorithm::LeastConnections, &workload);
//! assert_eq!(rr, simulate(Algorithm::RoundRobin, &workload), "deterministic");
//! assert!(lc.imbalance < rr.imbalance, "least connections steers around the slow backend");
//!
//! // A few heavy clients: bounded load keeps ip_hash's busiest backend near the average.
//! let skewed = Workload { connections: 4_000, ..Workload::skewed() };
//! let plain = simulate(Algorithm::IpHash, &skewed);
//! let bounded = simulate(Algorithm::IpHash, &Workload { hash_balance_factor: 125, ..skewed });
//! assert!(bounded.peak_imbalance < plain.peak_imbalance);
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use fastrand::Rng;

use crate::pool::{Pool, PoolConfig};
use crate::selection::{hash_client, Algorithm, MaglevTable};

/// One simulated backend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimBackend {
    /// Its weight in the pool.
    pub weight: u32,
    /// Work units it does per second: a connection of `w` units stays open `w / speed` seconds.
    pub speed: f64,
}

/// The synthetic workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// The backends, in order.
    pub backends: Vec<SimBackend>,
    /// Connections to replay.
    pub connections: usize,
    /// Mean new connections per second.
    pub arrival_rate: f64,
    /// Mean work per connection (Pareto with shape 1.5 and this mean).
    pub mean_work: f64,
    /// Distinct client IPs the connections come from.
    pub clients: u32,
    /// Seed of every random choice (arrivals, work, clients, the algorithms' own).
    pub seed: u64,
    /// How unevenly connections come from the clients: the exponent `s` of a Zipf law (the
    /// `k`-th busiest client opens a share proportional to `1 / k^s`); 0 for every client
    /// alike. Skew is what bounded-load hashing is for: a few heavy clients pile onto their
    /// backends under plain `ip_hash`.
    pub client_skew: f64,
    /// The pool's `hash_balance_factor` (bounded load for `ip_hash`; 0 = off).
    pub hash_balance_factor: u32,
}

impl Default for Workload {
    /// Five equal-weight backends, one of them three times slower than the rest; 40,000
    /// connections at 400 a second, about 50 open at a time.
    fn default() -> Self {
        let mut backends = vec![SimBackend { weight: 1, speed: 1.0 }; 5];
        backends[4].speed = 1.0 / 3.0;
        Workload {
            backends,
            connections: 40_000,
            arrival_rate: 400.0,
            mean_work: 0.1,
            clients: 5_000,
            seed: 0x5eed,
            client_skew: 0.0,
            hash_balance_factor: 0,
        }
    }
}

impl Workload {
    /// The skewed-client workload of the bounded-load comparison: five equal backends of equal
    /// speed, clients drawn by a Zipf law with exponent 1.1 (the busiest client opens about
    /// 16% of all connections), everything else as the default.
    pub fn skewed() -> Self {
        Workload {
            backends: vec![SimBackend { weight: 1, speed: 1.0 }; 5],
            client_skew: 1.1,
            ..Workload::default()
        }
    }
}

/// Draws client numbers by the workload's skew: uniform, or Zipf by inverting the cumulative
/// weights.
struct Clients {
    cumulative: Vec<f64>,
    count: u32,
}

impl Clients {
    fn new(workload: &Workload) -> Clients {
        let count = workload.clients.max(1);
        let mut cumulative = Vec::new();
        if workload.client_skew > 0.0 {
            let mut sum = 0.0;
            cumulative = (1..=count)
                .map(|k| {
                    sum += 1.0 / f64::from(k).powf(workload.client_skew);
                    sum
                })
                .collect();
        }
        Clients { cumulative, count }
    }

    fn draw(&self, rng: &mut Rng) -> u32 {
        match self.cumulative.last() {
            None => rng.u32(..self.count),
            Some(&total) => {
                let point = rng.f64() * total;
                let k = self.cumulative.partition_point(|&c| c <= point);
                k.min(self.cumulative.len() - 1) as u32
            }
        }
    }
}

/// One backend's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendReport {
    /// Its simulated address.
    pub addr: SocketAddr,
    /// Its speed, from the workload.
    pub speed: f64,
    /// Connections it served.
    pub connections: u64,
    /// Most connections it had open at once.
    pub peak_active: u64,
    /// Connections open on it, averaged over the simulated time.
    pub mean_active: f64,
}

/// One algorithm's outcome on a workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The algorithm simulated.
    pub algorithm: Algorithm,
    /// Per backend, in the workload's order.
    pub backends: Vec<BackendReport>,
    /// Largest mean active count divided by the average of the mean active counts: 1.0 is a
    /// perfectly even spread of open connections.
    pub imbalance: f64,
    /// Largest peak active count divided by the average peak: the same for the worst moment
    /// of each backend.
    pub peak_imbalance: f64,
    /// Mean time a connection stayed open, in seconds (lower is better: less queued on slow
    /// backends).
    pub mean_duration: f64,
    /// Fraction of connections that went to their client's first choice in the Maglev table
    /// of all the backends: 1.0 for plain `ip_hash`, less with bounded load (the price of the
    /// bound), about `1/N` for the algorithms that do not look at the client.
    pub first_choice: f64,
    /// Fraction of clients whose backend changes when the last backend is removed from an idle
    /// pool (ideal for a consistent hash: 1/N; for the others it is close to 1 - 1/N).
    pub remapped_on_removal: f64,
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, (i + 1) as u8], 8000))
}

fn client_ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i)) // 198.18.0.0/15, the benchmarking range
}

fn pool_for(algorithm: Algorithm, workload: &Workload) -> Pool {
    let config = PoolConfig {
        algorithm,
        hash_balance_factor: workload.hash_balance_factor,
        ..PoolConfig::default()
    };
    let pool = Pool::new(config).expect("the workload's hash balance factor is valid");
    for (i, b) in workload.backends.iter().enumerate() {
        pool.add(addr(i), Some(b.weight)).expect("simulated backends are distinct and valid");
    }
    pool
}

/// Runs the workload through one algorithm.
///
/// # Panics
/// If the workload has no backends, more than 250, a speed that is not positive, or an invalid
/// hash balance factor.
pub fn simulate(algorithm: Algorithm, workload: &Workload) -> Report {
    let n = workload.backends.len();
    assert!((1..=250).contains(&n), "the simulation takes 1 to 250 backends");
    assert!(workload.backends.iter().all(|b| b.speed > 0.0), "speeds must be positive");
    let pool = pool_for(algorithm, workload);
    let clients = Clients::new(workload);
    let mut rng = Rng::with_seed(workload.seed);
    let mut pick_rng = Rng::with_seed(workload.seed ^ 0x9e37_79b9_7f4a_7c15);
    // Pareto with shape a and mean m has scale m (a - 1) / a.
    const SHAPE: f64 = 1.5;
    let scale = workload.mean_work * (SHAPE - 1.0) / SHAPE;

    // Virtual time in nanoseconds; the heap holds (end time, sequence) of open connections.
    let mut open: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut leases: Vec<Option<crate::Lease>> = Vec::with_capacity(workload.connections);
    let mut active = vec![0u64; n];
    let mut area = vec![0f64; n];
    let mut last = 0u64;
    let mut served = vec![0u64; n];
    let table = MaglevTable::build(
        &workload.backends.iter().enumerate().map(|(i, b)| (addr(i), b.weight)).collect::<Vec<_>>(),
    );
    let mut first_choice = 0u64;
    let mut total_duration = 0f64;
    // Backends were added in order to a fresh pool, so ids are 1..=n.
    let index_of = |lease: &crate::Lease| (lease.id().get() - 1) as usize;
    let mut advance = |to: u64, active: &[u64], area: &mut [f64]| {
        let dt = (to - last) as f64;
        for (a, &c) in area.iter_mut().zip(active) {
            *a += c as f64 * dt;
        }
        last = to;
    };

    let mut now = 0u64;
    for seq in 0..workload.connections {
        let gap = -(1.0 - rng.f64()).ln() / workload.arrival_rate;
        now += (gap * 1e9) as u64;
        while let Some(&Reverse((end, done))) = open.peek() {
            if end > now {
                break;
            }
            open.pop();
            advance(end, &active, &mut area);
            if let Some(lease) = leases[done].take() {
                active[index_of(&lease)] -= 1;
            }
        }
        advance(now, &active, &mut area);
        let client = client_ip(clients.draw(&mut rng));
        let work = scale / (1.0 - rng.f64()).powf(1.0 / SHAPE);
        match pool.pick_with_rng(Some(client), &[], &mut pick_rng) {
            Ok(lease) => {
                let b = index_of(&lease);
                first_choice += u64::from(table.lookup(hash_client(client)) == Some(b));
                let duration = work / workload.backends[b].speed;
                total_duration += duration;
                active[b] += 1;
                served[b] += 1;
                open.push(Reverse((now + (duration * 1e9) as u64, seq)));
                leases.push(Some(lease));
            }
            Err(_) => leases.push(None),
        }
    }
    // Means are over the arrival window: the drain after the last arrival, when one heavy-tailed
    // straggler may run on alone, says nothing about balancing.
    let span = now.max(1) as f64;
    let stats = pool.stats();
    let backends: Vec<BackendReport> = (0..n)
        .map(|i| BackendReport {
            addr: addr(i),
            speed: workload.backends[i].speed,
            connections: served[i],
            peak_active: stats.backend(addr(i)).map_or(0, |s| s.peak_active),
            mean_active: area[i] / span,
        })
        .collect();
    let means: Vec<f64> = backends.iter().map(|b| b.mean_active).collect();
    let avg = means.iter().sum::<f64>() / n as f64;
    let imbalance = if avg > 0.0 { means.iter().cloned().fold(0.0, f64::max) / avg } else { 1.0 };
    let peaks: Vec<f64> = backends.iter().map(|b| b.peak_active as f64).collect();
    let avg_peak = peaks.iter().sum::<f64>() / n as f64;
    let peak_imbalance =
        if avg_peak > 0.0 { peaks.iter().cloned().fold(0.0, f64::max) / avg_peak } else { 1.0 };
    let served_total: u64 = served.iter().sum();
    Report {
        algorithm,
        backends,
        imbalance,
        peak_imbalance,
        first_choice: first_choice as f64 / served_total.max(1) as f64,
        mean_duration: total_duration / served_total.max(1) as f64,
        remapped_on_removal: remapped_on_removal(algorithm, workload),
    }
}

/// Fraction of the workload's clients whose backend changes when the last backend is removed.
fn remapped_on_removal(algorithm: Algorithm, workload: &Workload) -> f64 {
    let clients = workload.clients.max(1);
    let assign = |pool: &Pool| -> Vec<SocketAddr> {
        let mut rng = Rng::with_seed(workload.seed);
        (0..clients)
            .map(|c| {
                // Leases are dropped at once: an idle pool, so only the algorithm's own
                // preference shows.
                pool.pick_with_rng(Some(client_ip(c)), &[], &mut rng)
                    .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |l| l.addr())
            })
            .collect()
    };
    let pool = pool_for(algorithm, workload);
    let before = assign(&pool);
    if pool.remove(addr(workload.backends.len() - 1)).is_err() {
        return 0.0;
    }
    let after = assign(&pool);
    let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    moved as f64 / f64::from(clients)
}

/// Runs the workload through every algorithm.
pub fn simulate_all(workload: &Workload) -> Vec<Report> {
    Algorithm::ALL.iter().map(|&a| simulate(a, workload)).collect()
}

/// Runs the [skewed-client workload](Workload::skewed) through `ip_hash` with each of
/// `factors` as its `hash_balance_factor` (0 = plain Maglev), and through `least_connections`
/// for reference: the comparison of bounded-load hashing in docs/algorithms.md.
pub fn simulate_bounded_load(factors: &[u32]) -> Vec<(String, Report)> {
    let mut rows: Vec<(String, Report)> = factors
        .iter()
        .map(|&factor| {
            let workload = Workload { hash_balance_factor: factor, ..Workload::skewed() };
            let label = match factor {
                0 => "ip_hash".to_owned(),
                f => format!("ip_hash, factor {f}"),
            };
            (label, simulate(Algorithm::IpHash, &workload))
        })
        .collect();
    let reference = simulate(Algorithm::LeastConnections, &Workload::skewed());
    rows.push(("least_connections".to_owned(), reference));
    rows
}

/// Formats labelled reports as a Markdown table: per backend peak / mean active connections,
/// then max / average of the means and of the peaks.
pub fn format_load_table(rows: &[(String, Report)]) -> String {
    let mut out = String::new();
    let n = rows.first().map_or(0, |r| r.1.backends.len());
    let _ = write!(out, "| pool |");
    for i in 0..n {
        let _ = write!(out, " b{} peak/mean |", i + 1);
    }
    let _ = writeln!(out, " max/avg mean | max/avg peak | to first choice |");
    let _ = writeln!(out, "|---|{}---|---|---|", "---|".repeat(n));
    for (label, r) in rows {
        let _ = write!(out, "| {label} |");
        for b in &r.backends {
            let _ = write!(out, " {} / {:.1} |", b.peak_active, b.mean_active);
        }
        let _ = writeln!(
            out,
            " {:.2} | {:.2} | {:.1}% |",
            r.imbalance,
            r.peak_imbalance,
            r.first_choice * 100.0
        );
    }
    out
}

/// Formats reports as a Markdown table: one row per algorithm.
pub fn format_table(reports: &[Report]) -> String {
    let mut out = String::new();
    let n = reports.first().map_or(0, |r| r.backends.len());
    let _ = write!(out, "| algorithm |");
    for i in 0..n {
        let _ = write!(out, " b{} peak/mean |", i + 1);
    }
    let _ = writeln!(out, " imbalance | mean duration | remapped on removal |");
    let _ = write!(out, "|---|");
    for _ in 0..n {
        let _ = write!(out, "---|");
    }
    let _ = writeln!(out, "---|---|---|");
    for r in reports {
        let _ = write!(out, "| {} |", r.algorithm);
        for b in &r.backends {
            let _ = write!(out, " {} / {:.1} |", b.peak_active, b.mean_active);
        }
        let _ = writeln!(
            out,
            " {:.2} | {:.0} ms | {:.1}% |",
            r.imbalance,
            r.mean_duration * 1000.0,
            r.remapped_on_removal * 100.0
        );
    }
    out
}
