//! `GET /stats`: the `stats` answer as JSON, with the table's column names as keys.

use serde::{Deserialize, Serialize};

use lb_core::PoolStats;

use crate::control::{ProxyStats, Stats};

/// One backend in `GET /stats`: the `stats` table's columns, by the same names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendJson {
    /// `host:port`.
    pub backend: String,
    /// The pool it belongs to.
    #[serde(default)]
    pub pool: String,
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
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
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

/// One pool in `GET /stats`: what `stats POOL` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolJson {
    /// The pool's name.
    pub name: String,
    /// Its algorithm.
    pub algorithm: String,
    /// Its backends, in pool order (removed ones with open connections last, with state
    /// `removed`).
    pub backends: Vec<BackendJson>,
    /// Its removed backends no longer listed.
    pub retired: RetiredJson,
    /// Sums over its `backends` and `retired`.
    pub totals: TotalsJson,
}

/// One listener in `GET /stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerJson {
    /// The listener's name.
    pub name: String,
    /// The address it listens on, when known.
    pub address: Option<String>,
    /// Connections it accepted.
    pub accepted: u64,
    /// Closed because no SNI route matched and there was no default pool.
    pub no_route: u64,
    /// Closed for want of a usable TLS ClientHello where SNI routing needed one.
    pub bad_hello: u64,
    /// Closed for a missing or bad PROXY header.
    pub bad_proxy: u64,
}

/// `GET /stats`: everything `stats` shows.
///
/// `pools` has each pool on its own; the top-level `algorithm`, `backends`, `retired` and
/// `totals` describe all pools together, so a one-pool balancer's answer reads as it did
/// before pools existed (`algorithm` is `mixed` when the pools' algorithms differ).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsJson {
    /// The algorithm (`mixed` if the pools differ).
    pub algorithm: String,
    /// Seconds since start.
    pub uptime_seconds: f64,
    /// Client-side counters.
    pub clients: ClientsJson,
    /// Every backend of every pool, pool by pool.
    pub backends: Vec<BackendJson>,
    /// Removed backends no longer listed, summed over the pools.
    #[serde(default)]
    pub retired: RetiredJson,
    /// Sums over every pool.
    pub totals: TotalsJson,
    /// Each pool.
    #[serde(default)]
    pub pools: Vec<PoolJson>,
    /// Each listener.
    #[serde(default)]
    pub listeners: Vec<ListenerJson>,
}

impl PoolJson {
    fn from_stats(name: &str, s: &PoolStats) -> Self {
        let t = &s.totals;
        let r = &s.retired;
        PoolJson {
            name: name.to_owned(),
            algorithm: s.algorithm.to_string(),
            backends: s
                .backends
                .iter()
                .map(|b| BackendJson {
                    backend: b.addr.to_string(),
                    pool: name.to_owned(),
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

impl From<&Stats> for StatsJson {
    fn from(s: &Stats) -> Self {
        let pools: Vec<PoolJson> =
            s.pools.iter().map(|p| PoolJson::from_stats(&p.name, &p.stats)).collect();
        let mut algorithms: Vec<&str> = pools.iter().map(|p| p.algorithm.as_str()).collect();
        algorithms.dedup();
        let algorithm = match algorithms.as_slice() {
            [one] => (*one).to_owned(),
            _ => "mixed".to_owned(),
        };
        let mut retired = RetiredJson::default();
        let mut totals = TotalsJson::default();
        for p in &pools {
            let (r, t) = (&p.retired, &p.totals);
            retired.backends += r.backends;
            retired.total += r.total;
            retired.failures += r.failures;
            retired.retries += r.retries;
            retired.bytes_in += r.bytes_in;
            retired.bytes_out += r.bytes_out;
            retired.picks += r.picks;
            totals.backends += t.backends;
            totals.available += t.available;
            totals.active += t.active;
            totals.total += t.total;
            totals.failures += t.failures;
            totals.retries += t.retries;
            totals.bytes_in += t.bytes_in;
            totals.bytes_out += t.bytes_out;
            totals.picks += t.picks;
        }
        StatsJson {
            algorithm,
            uptime_seconds: s.uptime.as_secs_f64(),
            clients: s.proxy,
            backends: pools.iter().flat_map(|p| p.backends.iter().cloned()).collect(),
            retired,
            totals,
            listeners: s
                .listeners
                .iter()
                .map(|l| ListenerJson {
                    name: l.name.clone(),
                    address: l.address.map(|a| a.to_string()),
                    accepted: l.accepted,
                    no_route: l.no_route,
                    bad_hello: l.bad_hello,
                    bad_proxy: l.bad_proxy,
                })
                .collect(),
            pools,
        }
    }
}
