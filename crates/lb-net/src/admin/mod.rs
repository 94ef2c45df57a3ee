//! The admin endpoint: Prometheus metrics, JSON stats and remote commands over HTTP/1.1.
//!
//! - `GET /metrics`: Prometheus text exposition (format 0.0.4), encoded by `prometheus-client`
//!   from the same counters the `stats` command shows, read at scrape time. Series are keyed by
//!   address alone, so a removed backend still draining and the backend added again at its
//!   address are one series ([`PoolStats::per_address`](lb_core::PoolStats::per_address)).
//! - `GET /stats`: the `stats` table as JSON, with the same field names ([`StatsJson`]).
//! - `POST /command`: a command in the REPL's grammar as the body; the answer is the text the
//!   REPL would print, with status 200, or 400 and `error: ...` for a command that does not parse
//!   or fails. With a token configured, POST requires `Authorization: Bearer <token>`.
//!
//! Before any of that, every request passes [`guard`]: a `Host` that is not an IP address,
//! `localhost` or an allowed name, an `Origin` that is not the endpoint itself, or a command
//! without the [`CLIENT_HEADER`] is refused with 403, so a web page open in the operator's
//! browser can neither drive lb (cross-site requests) nor read it (DNS rebinding).
//!
//! HTTP is handled by `hyper`; nothing here parses HTTP by hand.
//!
//! The endpoint shares the process (and its file descriptors) with the proxy, so what a client
//! can hold is bounded: a request head must arrive within [`HEADER_READ_TIMEOUT`] (which also
//! closes a kept-alive connection idle for that long), no connection lives longer than
//! [`MAX_CONNECTION_AGE`] (plus [`CLOSE_GRACE`] to finish a request in progress), and at most
//! [`MAX_ADMIN_CONNECTIONS`] are open at once: beyond that a new one is closed at once and
//! counted in `lb_admin_connections_rejected_total`. Accept errors are waited out with the same
//! doubling pause as the proxy's accept loop.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use lb_core::{AdminState, Health};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

mod guard;

pub use guard::{AllowedHost, CLIENT_HEADER};

use crate::accept::{is_connection_error, Backoff};
use crate::control::{Handle, ProxyStats, Stats};
use crate::metrics::HistogramSnapshot;

/// Largest `POST /command` body accepted: a command is one short line.
const MAX_BODY: usize = 64 * 1024;

/// Longest wait for a complete request head (request line and headers), counted from the
/// connection's start or from the previous response: a client that sends part of a request and
/// stops (slowloris), or a kept-alive connection with no next request, is closed after this.
/// A scrape or a command is one small request sent at once, so 10 s is generous.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest life of one admin connection, however busy: once reached, the connection is closed
/// as soon as its request in progress is answered (at once if it has none). Bounds clients that
/// trickle a request body or never read their answer. A scraper keeping its connection alive
/// simply reconnects.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(60);

/// How long a connection past [`MAX_CONNECTION_AGE`] may take to finish its request in
/// progress before it is closed anyway.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Most admin connections open at once. Beyond it a new connection is closed at once (and
/// counted), so the endpoint never holds more than this many descriptors that the proxy might
/// need. Scrapers and `lb ctl` use one each, briefly.
pub const MAX_ADMIN_CONNECTIONS: usize = 64;

/// At most one warning per this interval about connections refused at
/// [`MAX_ADMIN_CONNECTIONS`]; the warning says how many were refused since the last one.
const REFUSED_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Admin endpoint settings.
#[derive(Clone, Default)]
pub struct AdminConfig {
    /// If set, `POST /command` requires `Authorization: Bearer <token>`. Reads (`/metrics`,
    /// `/stats`) never do, so a scraper needs no secret.
    pub token: Option<String>,
    /// Host names the endpoint answers to besides IP addresses and `localhost` (empty by
    /// default: a request naming any other `Host` is refused, which defeats DNS rebinding).
    pub allowed_hosts: Vec<AllowedHost>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("AdminConfig")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("allowed_hosts", &self.allowed_hosts)
            .finish()
    }
}

/// Serves the admin endpoint on `listener` until `shutdown` resolves.
///
/// Stops accepting when `shutdown` resolves; connections already open finish on their own
/// (each within [`MAX_CONNECTION_AGE`] and [`CLOSE_GRACE`]).
pub async fn serve(
    listener: TcpListener,
    handle: Handle,
    config: AdminConfig,
    shutdown: impl Future<Output = ()>,
) {
    let rejected = Arc::new(AtomicU64::new(0));
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StatsCollector {
        handle: handle.clone(),
        rejected: Arc::clone(&rejected),
    }));
    let state = Arc::new(Server { handle, config, registry });
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(target: "lb::admin", address = %addr, "admin endpoint listening");
    }
    let slots = Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS));
    let mut refused = RefusedLog::default();
    let mut backoff = Backoff::accept();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff.reset();
                a
            }
            Err(e) if is_connection_error(&e) => {
                tracing::debug!(target: "lb::admin", error = %e, "admin accept: client gave up before being accepted");
                continue;
            }
            Err(e) => {
                tracing::warn!(
                    target: "lb::admin",
                    error = %e,
                    pause_ms = backoff.pause().as_millis() as u64,
                    "admin accept failed (out of file descriptors or memory?); pausing before accepting again"
                );
                if !backoff.wait(&mut shutdown).await {
                    return;
                }
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Dropping the stream closes it.
            rejected.fetch_add(1, Relaxed);
            refused.refused(peer);
            continue;
        };
        tokio::spawn(serve_connection(Arc::clone(&state), stream, peer, slot));
    }
}

/// Serves one admin connection, holding one of the [`MAX_ADMIN_CONNECTIONS`] slots until it
/// closes.
async fn serve_connection(
    state: Arc<Server>,
    stream: TcpStream,
    peer: SocketAddr,
    _slot: OwnedSemaphorePermit,
) {
    let service = hyper::service::service_fn(move |req| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(state.respond(req, peer).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = tokio::time::sleep(MAX_CONNECTION_AGE) => {
            // Answer the request in progress, if any, then close; but not for ever.
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(CLOSE_GRACE, connection.as_mut()).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::debug!(target: "lb::admin", %peer, "admin connection closed: too old and its request unfinished");
                    Ok(())
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(target: "lb::admin", %peer, error = %e, "admin connection ended with an error");
    }
}

/// Warns about connections refused at [`MAX_ADMIN_CONNECTIONS`], at most once per
/// [`REFUSED_LOG_INTERVAL`].
#[derive(Debug, Default)]
struct RefusedLog {
    last: Option<Instant>,
    since_last: u64,
}

impl RefusedLog {
    fn refused(&mut self, peer: SocketAddr) {
        self.since_last += 1;
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < REFUSED_LOG_INTERVAL) {
            return;
        }
        tracing::warn!(
            target: "lb::admin",
            %peer,
            refused = self.since_last,
            limit = MAX_ADMIN_CONNECTIONS,
            "admin connection closed at once: too many admin connections open (at most one such warning per 10 s)"
        );
        self.last = Some(now);
        self.since_last = 0;
    }
}

/// What every admin request needs.
struct Server {
    handle: Handle,
    config: AdminConfig,
    registry: Registry,
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// Compares without stopping at the first difference, so response time says nothing about how
/// much of a guessed token was right.
fn same_token(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

impl Server {
    async fn respond(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let changes_state = req.method() == Method::POST;
        if let Err(why) =
            guard::admit(req.uri(), req.headers(), &self.config.allowed_hosts, changes_state)
        {
            tracing::warn!(target: "lb::admin", %peer, method = %req.method(), path = req.uri().path(), reason = %why, "admin request refused");
            return text(StatusCode::FORBIDDEN, format!("error: {why}\n"));
        }
        match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, "/metrics") => {
                let mut body = String::new();
                match prometheus_client::encoding::prometheus_text::encode(
                    &mut body,
                    &self.registry,
                ) {
                    Ok(()) => {
                        let mut r = text(StatusCode::OK, body);
                        r.headers_mut().insert(
                            CONTENT_TYPE,
                            HeaderValue::from_static(
                                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                            ),
                        );
                        r
                    }
                    Err(_) => {
                        text(StatusCode::INTERNAL_SERVER_ERROR, "error: encoding metrics failed\n")
                    }
                }
            }
            (&Method::GET | &Method::HEAD, "/stats") => {
                let json = StatsJson::from(&self.handle.stats());
                match serde_json::to_vec_pretty(&json) {
                    Ok(body) => {
                        let mut r = text(StatusCode::OK, body);
                        r.headers_mut()
                            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                        r
                    }
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("error: {e}\n")),
                }
            }
            (&Method::POST, "/command") => self.command(req, peer).await,
            (_, "/metrics" | "/stats") => method_not_allowed("GET, HEAD"),
            (_, "/command") => method_not_allowed("POST"),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try GET /metrics, GET /stats or POST /command\n",
            ),
        }
    }

    async fn command(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        if let Some(token) = &self.config.token {
            let given = req
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim_start().split_once(' '))
                // The scheme name is case-insensitive (RFC 9110, 11.1).
                .and_then(|(scheme, rest)| scheme.eq_ignore_ascii_case("bearer").then_some(rest));
            if !given.is_some_and(|g| same_token(g.trim().as_bytes(), token.as_bytes())) {
                tracing::warn!(target: "lb::admin", %peer, "command refused: missing or wrong bearer token");
                let mut r = text(
                    StatusCode::UNAUTHORIZED,
                    "error: this endpoint needs Authorization: Bearer <token>\n",
                );
                r.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return r;
            }
        }
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("error: a command body is at most {MAX_BODY} bytes\n"),
                )
            }
        };
        let Ok(line) = std::str::from_utf8(&body) else {
            return text(StatusCode::BAD_REQUEST, "error: the command is not UTF-8 text\n");
        };
        let line = line.trim();
        if line.lines().count() > 1 {
            return text(StatusCode::BAD_REQUEST, "error: send one command per request\n");
        }
        tracing::debug!(target: "lb::admin", %peer, command = line, "remote command");
        match self.handle.execute(line).await {
            Ok(reply) => text(StatusCode::OK, format!("{reply}\n")),
            Err(e) => text(StatusCode::BAD_REQUEST, format!("error: {e}\n")),
        }
    }
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, format!("error: use {allow}\n"));
    r.headers_mut().insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
    r
}

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

/// Reads the balancer's counters at scrape time and encodes them as Prometheus metrics.
#[derive(Debug)]
struct StatsCollector {
    handle: Handle,
    /// Admin connections closed at once at [`MAX_ADMIN_CONNECTIONS`].
    rejected: Arc<AtomicU64>,
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
