//! `GET /metrics`: the balancer's counters in the Prometheus text format, read at scrape time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use lb_core::{AdminState, BackendStats, CounterKind, Health};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::control::{Handle, ListenerStats};
use crate::metrics::HistogramSnapshot;

/// Reads the balancer's counters at scrape time and encodes them as Prometheus metrics.
#[derive(Debug)]
pub(super) struct StatsCollector {
    pub(super) handle: Handle,
    /// Admin connections closed at once at [`MAX_ADMIN_CONNECTIONS`].
    pub(super) rejected: Arc<AtomicU64>,
}

/// A label set: names and values.
type Labels = Vec<(&'static str, String)>;

/// A sample's value: whole numbers print without a decimal point, as they always have.
#[derive(Debug, Clone, Copy)]
enum Value {
    Whole(u64),
    Real(f64),
}

/// One metric family with a value per label set.
fn family(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: impl IntoIterator<Item = (Labels, Value)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in rows {
        let mut family = metric.encode_family(&labels)?;
        match (kind, value) {
            (MetricType::Counter, Value::Whole(v)) => {
                family.encode_counter::<NoLabelSet, _, u64>(&v, None)?
            }
            (MetricType::Counter, Value::Real(v)) => {
                family.encode_counter::<NoLabelSet, _, u64>(&v, None)?
            }
            (_, Value::Whole(v)) => family.encode_gauge(&v)?,
            (_, Value::Real(v)) => family.encode_gauge(&v)?,
        }
    }
    Ok(())
}

fn single(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    match kind {
        MetricType::Counter => metric.encode_counter::<NoLabelSet, _, u64>(&value, None),
        _ => metric.encode_gauge(&value),
    }
}

fn histogram(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    h: &HistogramSnapshot,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    // The encoder wants per-bucket counts and accumulates them itself.
    let mut previous = 0;
    let buckets: Vec<(f64, u64)> = h
        .buckets
        .iter()
        .map(|&(bound, cumulative)| {
            let own = cumulative - previous;
            previous = cumulative;
            (bound, own)
        })
        .collect();
    metric.encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)
}

/// A backend's gauges that are not counters of lb-core's table: name, help, value.
type BackendGauge = (&'static str, &'static str, fn(&BackendStats) -> u64);

/// A listener's counter: name, help, value.
type ListenerFamily = (&'static str, &'static str, fn(&ListenerStats) -> u64);

const BACKEND_GAUGES: [BackendGauge; 3] = [
    ("lb_backend_up", "1 if the backend passes health checks, else 0.", |b| {
        u64::from(b.health == Health::Up && !b.removed)
    }),
    ("lb_backend_weight", "The backend's weight.", |b| u64::from(b.weight)),
    (
        "lb_backend_backup",
        "1 if the backend is a backup (new connections only while no primary is available).",
        |b| u64::from(b.backup),
    ),
];

/// A pool's gauges: name, help, value.
type PoolGauge = (&'static str, &'static str, fn(&lb_core::PoolStats) -> u64);

const POOL_GAUGES: [PoolGauge; 4] = [
    ("lb_backends", "Backends in the pool.", |s| s.totals.backends as u64),
    ("lb_backends_available", "Backends that can take a new connection now.", |s| {
        s.totals.available as u64
    }),
    (
        "lb_pool_backup_active",
        "1 while the pool's backups carry its new connections (no primary is available).",
        |s| u64::from(s.backup_active),
    ),
    (
        "lb_pool_panic",
        "1 while the pool is in panic (fail-open): too few primaries are up, so new connections \
         spread over every ready primary regardless of health.",
        |s| u64::from(s.panic),
    ),
];

impl Collector for StatsCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge};
        let stats = self.handle.stats();
        // One entry per address within a pool: a label set must not repeat, and a removed
        // backend still draining can share its address with the one added again.
        let backends: Vec<(&str, BackendStats)> = stats
            .pools
            .iter()
            .flat_map(|p| p.stats.per_address().into_iter().map(move |b| (p.name.as_str(), b)))
            .collect();
        let labels = |pool: &str, b: &BackendStats| -> Labels {
            vec![("pool", pool.to_owned()), ("backend", b.addr.to_string())]
        };
        // Every counter of lb-core's table, then the gauges that are not counters.
        for counter in BackendStats::COUNTERS {
            let kind = match counter.kind {
                CounterKind::Counter => Counter,
                CounterKind::Gauge => Gauge,
            };
            let rows = backends.iter().map(|(pool, b)| {
                (labels(pool, b), Value::Whole(b.value(counter).unwrap_or_default()))
            });
            family(&mut e, counter.metric, counter.help, kind, rows)?;
        }
        for (name, help, value) in BACKEND_GAUGES {
            let rows = backends.iter().map(|(pool, b)| (labels(pool, b), Value::Whole(value(b))));
            family(&mut e, name, help, Gauge, rows)?;
        }
        let states = [AdminState::Ready, AdminState::Drain, AdminState::Maint];
        family(
            &mut e,
            "lb_backend_admin_state",
            "1 for the backend's admin state (ready, drain, maint), 0 for the others.",
            Gauge,
            backends.iter().filter(|(_, b)| !b.removed).flat_map(|(pool, b)| {
                states.into_iter().map(move |state| {
                    let mut l = labels(pool, b);
                    l.push(("state", state.as_str().to_owned()));
                    (l, Value::Whole(u64::from(b.admin == state)))
                })
            }),
        )?;
        let health = self.handle.health_by_pool();
        family(
            &mut e,
            "lb_backend_health_check_duration_seconds",
            "How long the backend's last health check took.",
            Gauge,
            health.iter().flat_map(|p| {
                p.backends.iter().filter_map(|b| {
                    let labels = vec![("pool", p.pool.clone()), ("backend", b.addr.to_string())];
                    b.check.as_ref().map(|s| (labels, Value::Real(s.duration.as_secs_f64())))
                })
            }),
        )?;
        let pool_rows = |f: fn(&lb_core::PoolStats) -> u64| {
            stats
                .pools
                .iter()
                .filter(|p| !p.removed)
                .map(move |p| (vec![("pool", p.name.clone())], Value::Whole(f(&p.stats))))
        };
        for (name, help, value) in POOL_GAUGES {
            family(&mut e, name, help, Gauge, pool_rows(value))?;
        }
        family(
            &mut e,
            "lb_algorithm",
            "The pool's balancing algorithm (value 1).",
            Gauge,
            stats.pools.iter().filter(|p| !p.removed).map(|p| {
                (
                    vec![("pool", p.name.clone()), ("algorithm", p.stats.algorithm.to_string())],
                    Value::Whole(1),
                )
            }),
        )?;
        // Pools with DNS discovery: its counters (one table, lb-net's counters.rs) and how
        // many members it gave.
        let discovering: Vec<(&str, &crate::DiscoveryStats)> = stats
            .pools
            .iter()
            .filter(|p| !p.removed)
            .filter_map(|p| p.discovery.as_ref().map(|d| (p.name.as_str(), d)))
            .collect();
        if let Some((_, first)) = discovering.first() {
            for (i, (counter, _)) in first.counts.counters().enumerate() {
                let rows = discovering.iter().map(|(pool, d)| {
                    let value = d.counts.counters().nth(i).map_or(0, |(_, v)| v);
                    (vec![("pool", (*pool).to_owned())], Value::Whole(value))
                });
                family(&mut e, counter.metric, counter.help, Counter, rows)?;
            }
            family(
                &mut e,
                "lb_dns_backends",
                "Backends of the pool that DNS discovery gave (the last known ones while lookups fail).",
                Gauge,
                discovering.iter().map(|(pool, d)| {
                    (vec![("pool", (*pool).to_owned())], Value::Whole(d.members.len() as u64))
                }),
            )?;
        }
        let p = &stats.proxy;
        single(&mut e, "lb_connections_open", "Client connections open now.", Gauge, p.open)?;
        single(
            &mut e,
            "lb_placement_packed",
            "1 while new connections go to one worker thread (--placement pack, while one worker carries the load), 0 while they are spread.",
            Gauge,
            u64::from(stats.placement_packed),
        )?;
        for (counter, value) in p.counters() {
            single(&mut e, counter.metric, counter.help, Counter, value)?;
        }
        let listener_families: [ListenerFamily; 7] = [
            ("lb_listener_connections_accepted", "Client connections the listener accepted.", |l| l.accepted),
            ("lb_listener_connections_no_route", "Connections closed because no SNI route matched and there was no default pool.", |l| l.no_route),
            ("lb_listener_connections_bad_hello", "Connections closed for want of a usable TLS ClientHello where SNI routing needed one.", |l| l.bad_hello),
            ("lb_listener_connections_bad_proxy", "Connections closed for a missing or bad PROXY protocol header.", |l| l.bad_proxy),
            (
                "lb_listener_connections_denied",
                "Connections refused at once by the listener's allow/deny address ranges.",
                |l| l.denied,
            ),
            (
                "lb_listener_connections_rate_limited",
                "Connections refused at once at a per-client limit.",
                |l| l.rate_limited,
            ),
            (
                "lb_listener_connections_untracked",
                "Connections let through without per-client counting because their slot of the fixed client table was full.",
                |l| l.untracked,
            ),
        ];
        for (name, help, value) in listener_families {
            let rows = stats
                .listeners
                .iter()
                .map(|l| (vec![("listener", l.name.clone())], Value::Whole(value(l))));
            family(&mut e, name, help, Counter, rows)?;
        }
        single(
            &mut e,
            "lb_admin_connections_rejected",
            "Admin endpoint connections closed at once because the admin connection limit was reached.",
            Counter,
            self.rejected.load(Relaxed),
        )?;
        let counters = &self.handle.inner.counters;
        histogram(
            &mut e,
            "lb_connection_duration_seconds",
            "Client connection lifetimes, accept to close.",
            &counters.connection_duration.snapshot(),
        )?;
        histogram(
            &mut e,
            "lb_backend_connect_duration_seconds",
            "Time to connect to a backend, every attempt.",
            &counters.connect_time.snapshot(),
        )?;
        Ok(())
    }
}
