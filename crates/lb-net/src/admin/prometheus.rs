//! `GET /metrics`: the balancer's counters in the Prometheus text format, read at scrape time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use lb_core::{AdminState, Health};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::control::Handle;
use crate::metrics::HistogramSnapshot;

/// Reads the balancer's counters at scrape time and encodes them as Prometheus metrics.
#[derive(Debug)]
pub(super) struct StatsCollector {
    pub(super) handle: Handle,
    /// Admin connections closed at once at [`MAX_ADMIN_CONNECTIONS`].
    pub(super) rejected: Arc<AtomicU64>,
}

type Labels<'a> = [(&'static str, &'a str); 1];

/// One metric family with a value per backend.
fn per_backend<V>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: &[(String, V)],
) -> Result<(), std::fmt::Error>
where
    V: prometheus_client::encoding::EncodeGaugeValue
        + prometheus_client::encoding::EncodeCounterValue,
{
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (backend, value) in rows {
        let labels: Labels<'_> = [("backend", backend.as_str())];
        let mut family = metric.encode_family(&labels)?;
        match kind {
            MetricType::Counter => family.encode_counter::<NoLabelSet, _, u64>(value, None)?,
            _ => family.encode_gauge(value)?,
        }
    }
    Ok(())
}

fn single<V>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    value: V,
) -> Result<(), std::fmt::Error>
where
    V: prometheus_client::encoding::EncodeGaugeValue
        + prometheus_client::encoding::EncodeCounterValue,
{
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

impl Collector for StatsCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge};
        let stats = self.handle.stats();
        let health = self.handle.health();
        // One entry per address: a label set must not repeat, and a removed backend still
        // draining can share its address with the one added again.
        let backends = &stats.pool.per_address();
        let rows = |f: &dyn Fn(&lb_core::BackendStats) -> u64| -> Vec<(String, u64)> {
            backends.iter().map(|b| (b.addr.to_string(), f(b))).collect()
        };
        per_backend(
            &mut e,
            "lb_backend_active_connections",
            "Connections open to the backend now.",
            Gauge,
            &rows(&|b| b.active),
        )?;
        per_backend(
            &mut e,
            "lb_backend_peak_active_connections",
            "Most connections open to the backend at once.",
            Gauge,
            &rows(&|b| b.peak_active),
        )?;
        per_backend(
            &mut e,
            "lb_backend_connections",
            "Connections established to the backend.",
            Counter,
            &rows(&|b| b.connections),
        )?;
        per_backend(
            &mut e,
            "lb_backend_connect_failures",
            "Failed attempts to connect to the backend.",
            Counter,
            &rows(&|b| b.connect_failures),
        )?;
        per_backend(
            &mut e,
            "lb_backend_picks",
            "Times the algorithm chose the backend.",
            Counter,
            &rows(&|b| b.picks),
        )?;
        per_backend(
            &mut e,
            "lb_backend_retries",
            "Failed connects to the backend after which another backend was tried.",
            Counter,
            &rows(&|b| b.retries),
        )?;
        per_backend(
            &mut e,
            "lb_backend_in_bytes",
            "Bytes from clients relayed to the backend.",
            Counter,
            &rows(&|b| b.bytes_in),
        )?;
        per_backend(
            &mut e,
            "lb_backend_out_bytes",
            "Bytes from the backend relayed to clients.",
            Counter,
            &rows(&|b| b.bytes_out),
        )?;
        per_backend(
            &mut e,
            "lb_backend_up",
            "1 if the backend passes health checks, else 0.",
            Gauge,
            &rows(&|b| u64::from(b.health == Health::Up && !b.removed)),
        )?;
        per_backend(
            &mut e,
            "lb_backend_weight",
            "The backend's weight.",
            Gauge,
            &rows(&|b| u64::from(b.weight)),
        )?;
        {
            let mut metric = e.encode_descriptor(
                "lb_backend_admin_state",
                "1 for the backend's admin state (ready, drain, maint), 0 for the others.",
                None,
                Gauge,
            )?;
            for b in backends.iter().filter(|b| !b.removed) {
                let addr = b.addr.to_string();
                for state in [AdminState::Ready, AdminState::Drain, AdminState::Maint] {
                    let labels = [("backend", addr.as_str()), ("state", state.as_str())];
                    metric.encode_family(&labels)?.encode_gauge(&u64::from(b.admin == state))?;
                }
            }
        }
        {
            let mut metric = e.encode_descriptor(
                "lb_backend_health_check_duration_seconds",
                "How long the backend's last health check took.",
                None,
                Gauge,
            )?;
            for (addr, status) in &health {
                if let Some(s) = status {
                    let addr = addr.to_string();
                    let labels: Labels<'_> = [("backend", addr.as_str())];
                    metric.encode_family(&labels)?.encode_gauge(&s.duration.as_secs_f64())?;
                }
            }
        }
        let p = &stats.proxy;
        single(&mut e, "lb_connections_open", "Client connections open now.", Gauge, p.open)?;
        single(
            &mut e,
            "lb_connections_accepted",
            "Client connections accepted.",
            Counter,
            p.accepted,
        )?;
        single(
            &mut e,
            "lb_connections_rejected",
            "Client connections closed at once because the global limit was reached.",
            Counter,
            p.rejected_at_limit,
        )?;
        single(
            &mut e,
            "lb_connections_no_backend",
            "Client connections closed because no backend was available.",
            Counter,
            p.no_backend,
        )?;
        single(
            &mut e,
            "lb_connections_connect_failed",
            "Client connections closed because every backend tried failed to connect.",
            Counter,
            p.connect_failed,
        )?;
        single(
            &mut e,
            "lb_retries",
            "Connect attempts beyond a connection's first.",
            Counter,
            p.retries,
        )?;
        single(
            &mut e,
            "lb_accept_errors",
            "Errors accepting client connections.",
            Counter,
            p.accept_errors,
        )?;
        single(
            &mut e,
            "lb_connections_resource_errors",
            "Client connections closed because the balancer had no descriptor, local port or memory for a backend connection within the connect timeout.",
            Counter,
            p.resource_errors,
        )?;
        single(
            &mut e,
            "lb_backends",
            "Backends in the pool.",
            Gauge,
            stats.pool.totals.backends as u64,
        )?;
        single(
            &mut e,
            "lb_backends_available",
            "Backends that can take a new connection now.",
            Gauge,
            stats.pool.totals.available as u64,
        )?;
        {
            let algorithm = stats.pool.algorithm.to_string();
            let mut metric = e.encode_descriptor(
                "lb_algorithm",
                "The balancing algorithm in use (value 1).",
                None,
                Gauge,
            )?;
            let labels: Labels<'_> = [("algorithm", algorithm.as_str())];
            metric.encode_family(&labels)?.encode_gauge(&1u64)?;
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
