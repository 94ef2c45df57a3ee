//! What `stats` answers: the pool's and the proxy's counters at one moment, and the table the
//! REPL and `lb ctl` print.

use std::fmt;
use std::time::Duration;

use lb_core::PoolStats;

/// Counters of the proxy as a whole at one moment; also the `clients` object of `GET /stats`,
/// with the same field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ProxyStats {
    /// Client connections open now.
    pub open: u64,
    /// Client connections accepted since start.
    pub accepted: u64,
    /// Closed at once because the global limit was reached.
    pub rejected_at_limit: u64,
    /// Closed because no backend was available.
    pub no_backend: u64,
    /// Closed because every backend tried failed to connect.
    pub connect_failed: u64,
    /// Connect attempts beyond each connection's first.
    pub retries: u64,
    /// Errors from accept itself.
    pub accept_errors: u64,
    /// Closed because the balancer was out of descriptors, ports or memory for a backend
    /// connection (not counted against any backend).
    #[serde(default)]
    pub resource_errors: u64,
}

/// Everything `stats` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// The pool: algorithm, per-backend counters, totals.
    pub pool: PoolStats,
    /// The proxy's own counters.
    pub proxy: ProxyStats,
    /// Time since the balancer started.
    pub uptime: Duration,
}

pub(crate) fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.proxy;
        let t = &self.pool.totals;
        writeln!(
            f,
            "algorithm {}, up {}, {} of {} backends available",
            self.pool.algorithm,
            format_duration(self.uptime),
            t.available,
            t.backends
        )?;
        writeln!(
            f,
            "clients: {} open, {} accepted, {} rejected at limit, {} with no backend, {} failed to connect, {} retries",
            p.open, p.accepted, p.rejected_at_limit, p.no_backend, p.connect_failed, p.retries
        )?;
        if p.resource_errors > 0 || p.accept_errors > 0 {
            writeln!(
                f,
                "balancer out of resources: {} accept errors, {} clients closed for want of a descriptor or port",
                p.accept_errors, p.resource_errors
            )?;
        }
        let width =
            self.pool.backends.iter().map(|b| b.addr.to_string().len()).max().unwrap_or(0).max(7);
        writeln!(
            f,
            "{:<width$}  {:<7}  {:>6}  {:>6}  {:>6}  {:>8}  {:>8}  {:>7}  {:>12}  {:>12}",
            "BACKEND",
            "STATE",
            "WEIGHT",
            "ACTIVE",
            "PEAK",
            "TOTAL",
            "FAILURES",
            "RETRIES",
            "BYTES_IN",
            "BYTES_OUT"
        )?;
        for b in &self.pool.backends {
            writeln!(
                f,
                "{:<width$}  {:<7}  {:>6}  {:>6}  {:>6}  {:>8}  {:>8}  {:>7}  {:>12}  {:>12}",
                b.addr.to_string(),
                b.state(),
                b.weight,
                b.active,
                b.peak_active,
                b.connections,
                b.connect_failures,
                b.retries,
                b.bytes_in,
                b.bytes_out
            )?;
        }
        if self.pool.backends.is_empty() {
            writeln!(f, "(no backends: add one with `add <host> <port>`)")?;
        }
        // Removed backends whose connections have all ended are no longer listed, but what they
        // did stays in TOTAL, so TOTAL never goes backwards; this row makes the column sums add up.
        let r = &self.pool.retired;
        if r.backends > 0 {
            writeln!(
                f,
                "{:<width$}  {:<7}  {:>6}  {:>6}  {:>6}  {:>8}  {:>8}  {:>7}  {:>12}  {:>12}",
                "RETIRED",
                "",
                "",
                "",
                "",
                r.connections,
                r.connect_failures,
                r.retries,
                r.bytes_in,
                r.bytes_out
            )?;
        }
        write!(
            f,
            "{:<width$}  {:<7}  {:>6}  {:>6}  {:>6}  {:>8}  {:>8}  {:>7}  {:>12}  {:>12}",
            "TOTAL",
            "",
            "",
            t.active,
            "",
            t.connections,
            t.connect_failures,
            t.retries,
            t.bytes_in,
            t.bytes_out
        )
    }
}
