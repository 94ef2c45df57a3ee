//! `GET /stats`: the `stats` answer as JSON, with the table's column names as keys.

use serde::{Deserialize, Serialize};

use crate::control::{ProxyStats, Stats};

/// One backend in `GET /stats`: the `stats` table's columns, by the same names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendJson {
    /// `host:port`.
    pub backend: String,
    /// `up`, `down`, `drain`, `maint` or `removed`, as in the STATE column.
    pub state: String,
    /// `up` or `down`.
    pub health: String,
    /// `ready`, `drain` or `maint`.
    pub admin: String,
    /// Weight.
    pub weight: u32,
    /// Connections open now.
    pub active: u64,
    /// Most open at once.
    pub peak: u64,
    /// Connections established.
    pub total: u64,
    /// Failed connects.
    pub failures: u64,
    /// Failed connects retried on another backend.
    pub retries: u64,
    /// Bytes from clients.
    pub bytes_in: u64,
    /// Bytes to clients.
    pub bytes_out: u64,
    /// Times chosen by the algorithm.
    pub picks: u64,
}

/// The client-side counters in `GET /stats`: the proxy's own counters, serialised as they are.
pub type ClientsJson = ProxyStats;

/// The TOTAL row in `GET /stats`: every backend the pool has had, listed or retired, so the
/// cumulative fields never go backwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotalsJson {
    /// Backends in the pool.
    pub backends: usize,
    /// Backends that can take a connection now.
    pub available: usize,
    /// Connections open now.
    pub active: u64,
    /// Connections established.
    pub total: u64,
    /// Failed connects.
    pub failures: u64,
    /// Failed connects retried on another backend.
    #[serde(default)]
    pub retries: u64,
    /// Bytes from clients.
    pub bytes_in: u64,
    /// Bytes to clients.
    pub bytes_out: u64,
    /// Times the algorithm chose a backend.
    #[serde(default)]
    pub picks: u64,
}

/// The RETIRED row in `GET /stats`: removed backends whose connections have all ended, no longer
/// listed in `backends` but still counted in `totals`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RetiredJson {
    /// How many such backends.
    pub backends: u64,
    /// Connections established.
    pub total: u64,
    /// Failed connects.
    pub failures: u64,
    /// Failed connects retried on another backend.
    pub retries: u64,
    /// Bytes from clients.
    pub bytes_in: u64,
    /// Bytes to clients.
    pub bytes_out: u64,
    /// Times the algorithm chose one of them.
    pub picks: u64,
}

/// `GET /stats`: everything `stats` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsJson {
    /// The algorithm.
    pub algorithm: String,
    /// Seconds since start.
    pub uptime_seconds: f64,
    /// Client-side counters.
    pub clients: ClientsJson,
    /// Per backend, in pool order (removed ones with open connections last, with state
    /// `removed`; such a one can share its address with a backend added again).
    pub backends: Vec<BackendJson>,
    /// Removed backends no longer listed.
    #[serde(default)]
    pub retired: RetiredJson,
    /// Sums over `backends` and `retired`.
    pub totals: TotalsJson,
}

impl From<&Stats> for StatsJson {
    fn from(s: &Stats) -> Self {
        let t = &s.pool.totals;
        let r = &s.pool.retired;
        let p = &s.proxy;
        StatsJson {
            algorithm: s.pool.algorithm.to_string(),
            uptime_seconds: s.uptime.as_secs_f64(),
            clients: *p,
            backends: s
                .pool
                .backends
                .iter()
                .map(|b| BackendJson {
                    backend: b.addr.to_string(),
                    state: b.state().to_owned(),
                    health: b.health.to_string(),
                    admin: b.admin.to_string(),
                    weight: b.weight,
                    active: b.active,
                    peak: b.peak_active,
                    total: b.connections,
                    failures: b.connect_failures,
                    retries: b.retries,
                    bytes_in: b.bytes_in,
                    bytes_out: b.bytes_out,
                    picks: b.picks,
                })
                .collect(),
            retired: RetiredJson {
                backends: r.backends,
                total: r.connections,
                failures: r.connect_failures,
                retries: r.retries,
                bytes_in: r.bytes_in,
                bytes_out: r.bytes_out,
                picks: r.picks,
            },
            totals: TotalsJson {
                backends: t.backends,
                available: t.available,
                active: t.active,
                total: t.connections,
                failures: t.connect_failures,
                retries: t.retries,
                bytes_in: t.bytes_in,
                bytes_out: t.bytes_out,
                picks: t.picks,
            },
        }
    }
}
