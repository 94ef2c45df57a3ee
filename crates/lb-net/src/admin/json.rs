//! `GET /stats`: the `stats` answer as JSON, with the table's column names as keys.
//!
//! The counters of each backend, pool total and retired row are not written out here: they
//! come from lb-core's counter table ([`lb_core::BackendStats::COUNTERS`] and its siblings),
//! each under its JSON key and in the table's order, so a counter added there appears here
//! with no change. The other fields (a backend's address, state, weight...) are declared below.

use std::fmt;
use std::ops::Index;

use lb_core::{BackendStats, RetiredTotals, Totals};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::control::{ListenerStats, NamedPoolStats, ProxyStats, Stats};
use crate::events::Event;
use crate::time::{Rfc3339, TimestampPrecision};

/// Counter values by their JSON key, in the counter table's order; serialised as the keys of
/// the object that holds them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CounterValues(Vec<(String, u64)>);

impl CounterValues {
    /// The value under `key` (`"total"`, `"failures"`, ...), if there is one.
    pub fn get(&self, key: &str) -> Option<u64> {
        self.0.iter().find(|(k, _)| k == key).map(|&(_, v)| v)
    }

    /// Every key and value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }

    fn of<'a>(counters: impl Iterator<Item = (&'a lb_core::CounterInfo, u64)>) -> Self {
        CounterValues(counters.map(|(c, v)| (c.json.to_owned(), v)).collect())
    }

    /// Adds `other`'s values to the same keys (adding keys it lacks).
    fn add(&mut self, other: &CounterValues) {
        for (key, value) in other.iter() {
            match self.0.iter_mut().find(|(k, _)| k == key) {
                Some((_, v)) => *v += value,
                None => self.0.push((key.to_owned(), value)),
            }
        }
    }
}

impl Index<&str> for CounterValues {
    type Output = u64;

    /// # Panics
    /// If there is no such key, as indexing a map does.
    fn index(&self, key: &str) -> &u64 {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v).unwrap_or_else(|| {
            panic!(
                "no counter {key:?} (keys: {:?})",
                self.iter().map(|(k, _)| k).collect::<Vec<_>>()
            )
        })
    }
}

impl Serialize for CounterValues {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for CounterValues {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Values;
        impl<'de> Visitor<'de> for Values {
            type Value = CounterValues;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("counter values by name")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CounterValues, A::Error> {
                let mut values = Vec::new();
                while let Some(entry) = map.next_entry::<String, u64>()? {
                    values.push(entry);
                }
                Ok(CounterValues(values))
            }
        }
        deserializer.deserialize_map(Values)
    }
}

/// One backend in `GET /stats`: the `stats` table's columns, by the same names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendJson {
    /// `host:port`.
    pub backend: String,
    /// The pool it belongs to.
    #[serde(default)]
    pub pool: String,
    /// `up`, `init` (up, not checked yet), `down`, `drain`, `maint` or `removed`, as in the
    /// STATE column.
    pub state: String,
    /// `up` or `down`.
    pub health: String,
    /// `ready`, `drain` or `maint`.
    pub admin: String,
    /// Its share of new connections relative to the others (1-1000).
    pub weight: u32,
    /// Whether it is a backup: it takes new connections only while no primary is available.
    #[serde(default)]
    pub backup: bool,
    /// While a slow-start ramp runs, the share of its weight it has now, in percent (10 to
    /// 90); `null` when it has its full weight.
    #[serde(default)]
    pub ramp_percent: Option<u8>,
    /// The weight it has now: `weight`, or while it ramps, `weight` × `ramp_percent` / 100.
    #[serde(default)]
    pub effective_weight: f64,
    /// Its counters: `active`, `peak`, `total`, `failures`, `retries`, `bytes_in`,
    /// `bytes_out`, `picks` (lb-core's counter table, [`BackendStats::COUNTERS`]).
    #[serde(flatten)]
    pub counters: CounterValues,
    /// How long its last health check took, in microseconds (`null`: not checked yet).
    /// Microseconds because a check of a backend on the same host takes well under one
    /// millisecond.
    #[serde(default)]
    pub check_us: Option<u64>,
    /// Why its last health check failed (`null` if it passed or has not run).
    #[serde(default)]
    pub check_error: Option<String>,
    /// Why its health last changed, e.g. `3 consecutive failures, last: connection refused`
    /// (`null` if it never has): for a backend that is down, the reason it is.
    #[serde(default)]
    pub reason: Option<String>,
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
    /// `active` and the cumulative counters ([`Totals::COUNTERS`]).
    #[serde(flatten)]
    pub counters: CounterValues,
}

/// The RETIRED row in `GET /stats`: removed backends whose connections have all ended, no longer
/// listed in `backends` but still counted in `totals`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RetiredJson {
    /// How many such backends.
    pub backends: u64,
    /// Their cumulative counters ([`RetiredTotals::COUNTERS`]).
    #[serde(flatten)]
    pub counters: CounterValues,
}

/// One pool in `GET /stats`: what `stats POOL` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolJson {
    /// The pool's name.
    pub name: String,
    /// Whether it was removed (listed while connections to it are still open).
    #[serde(default)]
    pub removed: bool,
    /// Its algorithm.
    pub algorithm: String,
    /// Whether its backups carry its new connections now (no primary is available).
    #[serde(default)]
    pub backup_active: bool,
    /// Whether it is in panic (fail-open) now: too few primaries are up, so new connections
    /// spread over every `ready` primary regardless of health.
    #[serde(default)]
    pub panic: bool,
    /// Its backends, in pool order (removed ones with open connections last, with state
    /// `removed`).
    pub backends: Vec<BackendJson>,
    /// Its removed backends no longer listed.
    pub retired: RetiredJson,
    /// Sums over its `backends` and `retired`.
    pub totals: TotalsJson,
    /// Its DNS discovery, for a pool whose members (some of them) come from DNS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoveryJson>,
    /// Its backends' drains: running ones and the last few finished, oldest first.
    #[serde(default)]
    pub drains: Vec<DrainJson>,
}

/// A drain in `GET /stats` (see the `drain` command): running while `outcome` is `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainJson {
    /// Numbered from 1 in the order drains started.
    pub id: u64,
    /// The backend drained.
    pub backend: String,
    /// The deadline it was given, in seconds; `null` for none.
    pub deadline_seconds: Option<f64>,
    /// Whether the backend is removed at the end.
    pub remove: bool,
    /// Seconds since it started.
    pub elapsed_seconds: f64,
    /// Seconds left before the deadline closes what is open (while it runs).
    pub remaining_seconds: Option<f64>,
    /// Connections open on the backend now (running), or when it ended.
    pub open: u64,
    /// `null` while it runs; then `emptied`, `cut` (the deadline closed `cut` connections) or
    /// `cancelled` (by `cancelled_by`).
    pub outcome: Option<String>,
    /// Connections the deadline closed.
    #[serde(default)]
    pub cut: u64,
    /// What cancelled it: `enable`, `maint`, `remove`, `a new drain` or `the backend's
    /// removal`.
    #[serde(default)]
    pub cancelled_by: Option<String>,
    /// Whether the backend was removed at its end.
    #[serde(default)]
    pub removed: bool,
}

impl From<&crate::control::DrainStatus> for DrainJson {
    fn from(d: &crate::control::DrainStatus) -> Self {
        use crate::control::DrainOutcome;
        let (outcome, cut, cancelled_by) = match d.outcome {
            None => (None, 0, None),
            Some(DrainOutcome::Emptied) => (Some("emptied"), 0, None),
            Some(DrainOutcome::Cut(n)) => (Some("cut"), n, None),
            Some(DrainOutcome::Cancelled(by)) => (Some("cancelled"), 0, Some(by.to_owned())),
        };
        DrainJson {
            id: d.id,
            backend: d.backend.to_string(),
            deadline_seconds: d.deadline.map(|t| t.as_secs_f64()),
            remove: d.remove,
            elapsed_seconds: d.elapsed.as_secs_f64(),
            remaining_seconds: d.remaining.map(|t| t.as_secs_f64()),
            open: d.open,
            outcome: outcome.map(str::to_owned),
            cut,
            cancelled_by,
            removed: d.removed,
        }
    }
}

/// A pool's DNS discovery in `GET /stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscoveryJson {
    /// What is looked up, and where: `srv:_http._tcp.web.service.consul via 127.0.0.1:8600`.
    pub source: String,
    /// The backends DNS gave (`host:port`), in address order.
    pub members: Vec<String>,
    /// Seconds since the last lookup ended; `null` before the first.
    pub last_refresh_seconds_ago: Option<f64>,
    /// Seconds until the next lookup.
    pub next_refresh_seconds: Option<f64>,
    /// Why the last lookup failed, while lookups fail (the members are the last known ones).
    pub last_error: Option<String>,
    /// `refreshes`, `errors`, `added`, `removed`, `reweighted` (lb-net's discovery counter
    /// table).
    #[serde(flatten)]
    pub counts: crate::DiscoveryCounts,
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
    /// Refused by `allow`/`deny`.
    #[serde(default)]
    pub denied: u64,
    /// Refused at a per-client limit.
    #[serde(default)]
    pub rate_limited: u64,
    /// Let through without per-client counting (their slot of the fixed table was full).
    #[serde(default)]
    pub untracked: u64,
    /// The TCP congestion control of the connections it accepts, as the kernel names it
    /// (absent where the system does not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub congestion_control: Option<String>,
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
    /// Each pool (then removed ones whose connections are still open).
    #[serde(default)]
    pub pools: Vec<PoolJson>,
    /// What removed pools whose connections have all ended did (included in `totals`).
    #[serde(default)]
    pub retired_pools: RetiredJson,
    /// Each listener.
    #[serde(default)]
    pub listeners: Vec<ListenerJson>,
    /// The most recent health transitions and commands, oldest first (at most
    /// [`EVENTS_KEPT`](crate::EVENTS_KEPT)).
    #[serde(default)]
    pub events: Vec<EventJson>,
    /// Whether new connections go to one worker thread now (`--placement pack`, while one
    /// worker carries the load); `false` while spread.
    #[serde(default)]
    pub placement_packed: bool,
    /// Whether commands that change something need the admin token (`--admin-token` is set).
    /// The dashboard offers its actions only then. Filled in by the admin endpoint: `false` in
    /// a `StatsJson` made from [`Stats`] alone.
    #[serde(default)]
    pub token_required: bool,
}

/// One recent event in `GET /stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventJson {
    /// Its number: events are numbered from 1 in the order they happened.
    pub id: u64,
    /// When, in RFC 3339 (UTC, milliseconds).
    pub time: String,
    /// When, as seconds since start (compare with `uptime_seconds` for how long ago).
    pub uptime_seconds: f64,
    /// `health-down`, `health-up`, `command`, `command-failed` or `drain`.
    pub kind: String,
    /// The pool, for health transitions.
    pub pool: Option<String>,
    /// What happened, as the log says it.
    pub text: String,
}

impl From<&Event> for EventJson {
    fn from(e: &Event) -> Self {
        EventJson {
            id: e.id,
            time: Rfc3339(e.time, TimestampPrecision::Millis).to_string(),
            uptime_seconds: e.uptime.as_secs_f64(),
            kind: e.kind.as_str().to_owned(),
            pool: e.pool.clone(),
            text: e.text.clone(),
        }
    }
}

impl BackendJson {
    fn from_stats(pool: &NamedPoolStats, b: &BackendStats) -> Self {
        let check = pool.checks.get(&b.id);
        BackendJson {
            backend: b.addr.to_string(),
            pool: pool.name.clone(),
            state: pool.shown_state(b).to_owned(),
            health: b.health.to_string(),
            admin: b.admin.to_string(),
            weight: b.weight,
            backup: b.backup,
            ramp_percent: b.ramp_percent,
            effective_weight: b.effective_weight(),
            counters: CounterValues::of(b.counters()),
            check_us: check.map(|c| u64::try_from(c.duration.as_micros()).unwrap_or(u64::MAX)),
            check_error: check.and_then(|c| c.result.clone().err()),
            reason: pool.changes.get(&b.id).map(|t| t.reason.to_string()),
        }
    }
}

impl PoolJson {
    fn from_stats(pool: &NamedPoolStats) -> Self {
        let s = &pool.stats;
        PoolJson {
            name: pool.name.clone(),
            removed: pool.removed,
            algorithm: s.algorithm.to_string(),
            backup_active: s.backup_active,
            panic: s.panic,
            backends: s.backends.iter().map(|b| BackendJson::from_stats(pool, b)).collect(),
            retired: retired(&s.retired),
            totals: totals(&s.totals),
            discovery: pool.discovery.as_ref().map(|d| DiscoveryJson {
                source: d.source.clone(),
                members: d.members.iter().map(ToString::to_string).collect(),
                last_refresh_seconds_ago: d.last_refresh.map(|t| t.as_secs_f64()),
                next_refresh_seconds: d.next_refresh.map(|t| t.as_secs_f64()),
                last_error: d.last_error.clone(),
                counts: d.counts,
            }),
            drains: pool.drains.iter().map(DrainJson::from).collect(),
        }
    }
}

fn retired(r: &RetiredTotals) -> RetiredJson {
    RetiredJson { backends: r.backends, counters: CounterValues::of(r.counters()) }
}

fn totals(t: &Totals) -> TotalsJson {
    TotalsJson {
        backends: t.backends,
        available: t.available,
        counters: CounterValues::of(t.counters()),
    }
}

impl From<&ListenerStats> for ListenerJson {
    fn from(l: &ListenerStats) -> Self {
        ListenerJson {
            name: l.name.clone(),
            address: l.address.map(|a| a.to_string()),
            accepted: l.accepted,
            no_route: l.no_route,
            bad_hello: l.bad_hello,
            bad_proxy: l.bad_proxy,
            denied: l.denied,
            rate_limited: l.rate_limited,
            untracked: l.untracked,
            congestion_control: l.congestion_control.clone(),
        }
    }
}

impl From<&Stats> for StatsJson {
    fn from(s: &Stats) -> Self {
        let pools: Vec<PoolJson> = s.pools.iter().map(PoolJson::from_stats).collect();
        let mut algorithms: Vec<&str> =
            pools.iter().filter(|p| !p.removed).map(|p| p.algorithm.as_str()).collect();
        algorithms.dedup();
        let algorithm = match algorithms.as_slice() {
            [one] => (*one).to_owned(),
            _ => "mixed".to_owned(),
        };
        // Every key present even with no pool, at zero; removed and retired pools count in
        // the totals, which so never go backwards.
        let mut sum_retired = retired(&s.retired_pools);
        for p in &pools {
            sum_retired.backends += p.retired.backends;
            sum_retired.counters.add(&p.retired.counters);
        }
        let all = s.totals();
        StatsJson {
            algorithm,
            uptime_seconds: s.uptime.as_secs_f64(),
            clients: s.proxy,
            backends: pools.iter().flat_map(|p| p.backends.iter().cloned()).collect(),
            retired: sum_retired,
            totals: totals(&all),
            retired_pools: retired(&s.retired_pools),
            listeners: s.listeners.iter().map(ListenerJson::from).collect(),
            pools,
            events: s.events.iter().map(EventJson::from).collect(),
            placement_packed: s.placement_packed,
            token_required: false,
        }
    }
}

/// `what-if` as JSON (`POST /command` with `Accept: application/json`): the moved share with
/// its exact fraction and each backend's shares before and after, as the text answer says.
pub(super) fn what_if(reply: &crate::control::WhatIfReply) -> serde_json::Value {
    let w = &reply.what_if;
    serde_json::json!({
        "pool": reply.pool,
        "command": reply.command,
        "algorithm_before": w.algorithm_before.as_str(),
        "algorithm_after": w.algorithm_after.as_str(),
        "serving_before": w.serving_before.as_str(),
        "serving_after": w.serving_after.as_str(),
        "moved_keys": w.moved_keys,
        "key_space": w.key_space,
        "moved_share": w.moved_share(),
        "backends": w.backends.iter().map(|b| serde_json::json!({
            "backend": b.addr.to_string(),
            "table_before": b.table_before,
            "table_after": b.table_after,
            "share_before": b.share_before,
            "share_after": b.share_after,
        })).collect::<Vec<_>>(),
    })
}

/// `explain` as JSON: the chosen backend, who serves, the backends passed over with the
/// reason in words (as the text answer writes it), and the whole answer as text in `text`
/// for the algorithm's inputs.
pub(super) fn explain(reply: &crate::control::ExplainReply) -> serde_json::Value {
    let e = &reply.explain;
    serde_json::json!({
        "pool": reply.pool,
        "client": reply.client.to_string(),
        "algorithm": e.algorithm.as_str(),
        "serving": e.serving.as_str(),
        "chosen": e.chosen.as_ref().map(|b| b.addr.to_string()),
        "passed_over": e.passed_over.iter().map(|p| serde_json::json!({
            "backend": p.backend.addr.to_string(),
            "reason": crate::control::pass_reason_text(&p.reason),
        })).collect::<Vec<_>>(),
        "ramping": e.ramping.iter().map(|(b, percent)| serde_json::json!({
            "backend": b.addr.to_string(),
            "ramp_percent": percent,
        })).collect::<Vec<_>>(),
        "text": reply.to_string(),
    })
}
