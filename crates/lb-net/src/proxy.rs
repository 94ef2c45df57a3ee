//! The proxy: accept a client, pick a backend, connect (retrying elsewhere on failure), relay.
//!
//! Connections are accepted in one loop and each is served by its own task: the accept loop
//! never waits on a backend. Picking goes through `lb-core` with the client's IP as key; a
//! failed or timed-out connect is recorded on the pool as a passive health failure and the next
//! try excludes every backend this connection already tried, so a dead backend costs a client a
//! few milliseconds, not its connection.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lb_core::{BackendId, Lease, Pool};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::accept::{is_connection_error, Backoff};
use crate::connector::{is_local_exhaustion, Connector};
use crate::metrics::{Histogram, CONNECT_BUCKETS, DURATION_BUCKETS};
use crate::relay::{Relay, RelayEnd, Side};
use crate::shutdown::Tracker;

/// Proxy settings. Every field has a default suited to a general-purpose TCP service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Longest wait for a backend to accept a connection. Default 2 s: a healthy backend on a
    /// LAN answers in well under a millisecond, so anything slower is better retried elsewhere.
    pub connect_timeout: Duration,
    /// Close a connection when no byte has moved either way for this long. Default 5 min, long
    /// enough for slow request/response protocols and short enough to reclaim abandoned
    /// connections. `None` disables it.
    pub idle_timeout: Option<Duration>,
    /// Most client connections open at once; beyond it new connections are closed at once.
    /// Default none (the process's file descriptor limit is then the limit).
    pub max_connections: Option<u64>,
    /// Further backends to try after a failed connect. Default 2: three tries in all, each on
    /// a different backend.
    pub retries: u32,
    /// How long graceful shutdown lets open connections finish before closing them. Default
    /// 10 s.
    pub shutdown_grace: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Some(Duration::from_secs(300)),
            max_connections: None,
            retries: 2,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Counters of the proxy as a whole (per-backend ones live in the pool).
#[derive(Debug)]
pub struct ProxyCounters {
    /// Client connections accepted.
    pub accepted: AtomicU64,
    /// Client connections closed at once because `max_connections` were open.
    pub rejected_at_limit: AtomicU64,
    /// Client connections closed because no backend could be picked at all.
    pub no_backend: AtomicU64,
    /// Client connections closed because every backend tried failed to connect.
    pub connect_failed: AtomicU64,
    /// Connect attempts beyond each connection's first.
    pub retries: AtomicU64,
    /// Errors from `accept` itself (e.g. out of file descriptors).
    pub accept_errors: AtomicU64,
    /// Client connections closed because the balancer itself stayed out of descriptors, local
    /// ports or memory for a backend connection for the whole connect timeout.
    pub resource_errors: AtomicU64,
    /// Time to connect to a backend, every attempt.
    pub connect_time: Histogram,
    /// Time from accept to close, every client connection.
    pub connection_duration: Histogram,
}

impl Default for ProxyCounters {
    fn default() -> Self {
        ProxyCounters {
            accepted: AtomicU64::new(0),
            rejected_at_limit: AtomicU64::new(0),
            no_backend: AtomicU64::new(0),
            connect_failed: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            resource_errors: AtomicU64::new(0),
            connect_time: Histogram::new(CONNECT_BUCKETS),
            connection_duration: Histogram::new(DURATION_BUCKETS),
        }
    }
}

/// How a client connection ended, as written in the connection log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// Both sides closed normally.
    Normal,
    /// The client reset or broke the connection.
    ClientError,
    /// The backend reset or broke the connection after it was established.
    BackendError,
    /// Every backend tried refused or failed to connect.
    ConnectFailed,
    /// Every backend tried timed out connecting.
    ConnectTimeout,
    /// The balancer itself had no descriptor, local port or memory for a backend connection
    /// for the whole connect timeout. Not counted against any backend.
    Resource,
    /// No byte moved for the idle timeout.
    IdleTimeout,
    /// No backend was available (all down, draining, at their limit, or none configured).
    NoBackend,
    /// The global connection limit was reached.
    Limit,
    /// Closed by shutdown after the grace period.
    Shutdown,
}

impl Termination {
    /// The word used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Termination::Normal => "normal",
            Termination::ClientError => "client-reset",
            Termination::BackendError => "backend-reset",
            Termination::ConnectFailed => "backend-refused",
            Termination::ConnectTimeout => "connect-timeout",
            Termination::Resource => "resource",
            Termination::IdleTimeout => "idle-timeout",
            Termination::NoBackend => "no-backend",
            Termination::Limit => "limit",
            Termination::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for Termination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the proxy needs, shared by the accept loop and every connection task.
#[derive(Debug)]
pub(crate) struct ProxyShared<C> {
    pub(crate) pool: Pool,
    pub(crate) connector: Arc<C>,
    pub(crate) config: ProxyConfig,
    pub(crate) counters: Arc<ProxyCounters>,
    pub(crate) tracker: Arc<Tracker>,
    /// Whether connect failures count against a backend's health. Only when active health
    /// checks run: they are what brings a backend back up, so without them a backend that
    /// passive failures took down would stay down for good.
    pub(crate) passive_health: bool,
}

impl<C: Connector> ProxyShared<C> {
    /// Accepts until `stop` resolves. Never returns early: every accept error is logged and,
    /// for resource exhaustion, waited out.
    pub(crate) async fn accept_loop(
        self: &Arc<Self>,
        listener: &TcpListener,
        stop: &mut (impl std::future::Future<Output = ()> + Unpin),
    ) {
        let mut backoff = Backoff::accept();
        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut *stop => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff.reset();
                    // Relayed bytes should leave at once, not wait for Nagle's algorithm.
                    let _ = stream.set_nodelay(true);
                    self.spawn_connection(stream, Some(peer));
                }
                Err(e) if is_connection_error(&e) => {
                    tracing::debug!(error = %e, "accept: client gave up before being accepted");
                }
                Err(e) => {
                    self.counters.accept_errors.fetch_add(1, Relaxed);
                    tracing::error!(
                        error = %e,
                        pause_ms = backoff.pause().as_millis() as u64,
                        "accept failed (out of file descriptors or memory?); pausing before accepting again"
                    );
                    if !backoff.wait(stop).await {
                        return;
                    }
                }
            }
        }
    }

    /// Serves one client connection on its own task, unless the global limit is reached.
    pub(crate) fn spawn_connection<S>(self: &Arc<Self>, stream: S, peer: Option<SocketAddr>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.counters.accepted.fetch_add(1, Relaxed);
        let limit = self.config.max_connections.unwrap_or(u64::MAX);
        let Some(ticket) = self.tracker.try_enter(limit) else {
            self.counters.rejected_at_limit.fetch_add(1, Relaxed);
            let mut session = Session::new(peer, &self.counters);
            session.end = Some(Termination::Limit);
            return; // dropping the stream closes it; dropping the session logs it
        };
        let shared = Arc::clone(self);
        self.tracker.spawn(ticket, async move { shared.serve(stream, peer).await });
    }

    /// Picks, connects (with retries) and relays one client connection to the end.
    pub(crate) async fn serve<S>(&self, mut client: S, peer: Option<SocketAddr>)
    where
        S: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        // Logged when dropped, however this ends: also when shutdown aborts the task.
        let mut session = Session::new(peer, &self.counters);
        let client_ip = peer.map(|p| p.ip());
        let mut tried: Vec<BackendId> = Vec::new();
        let mut timeouts = 0usize;
        let mut last_failed: Option<Lease> = None;
        let (lease, mut backend) = loop {
            let lease = match self.pool.pick(client_ip, &tried) {
                Ok(lease) => lease,
                Err(_) => {
                    session.end = Some(if tried.is_empty() {
                        self.counters.no_backend.fetch_add(1, Relaxed);
                        Termination::NoBackend
                    } else {
                        self.counters.connect_failed.fetch_add(1, Relaxed);
                        if timeouts == tried.len() {
                            Termination::ConnectTimeout
                        } else {
                            Termination::ConnectFailed
                        }
                    });
                    return;
                }
            };
            if let Some(failed) = last_failed.take() {
                // Counted once another backend is really tried, on the one that failed.
                failed.record_retried();
                self.counters.retries.fetch_add(1, Relaxed);
                session.retries += 1;
            }
            session.backend = Some(lease.addr());
            let started = Instant::now();
            let attempt = self.connect(lease.addr()).await;
            let connect_time = started.elapsed();
            self.counters.connect_time.observe(connect_time);
            let error = match attempt {
                Ok(stream) => {
                    lease.record_connected();
                    session.connect_time = Some(connect_time);
                    break (lease, stream);
                }
                Err(ConnectError::Backend(e)) => e.to_string(),
                Err(ConnectError::TimedOut) => {
                    timeouts += 1;
                    format!("connect timed out after {:?}", self.config.connect_timeout)
                }
                Err(ConnectError::Local(e)) => {
                    // Ours, not the backend's: nothing is recorded against it, and another
                    // backend would fail the same way.
                    tracing::warn!(
                        client = %DisplayPeer(peer),
                        backend = %lease.addr(),
                        error = %e,
                        "cannot open a backend connection: the balancer is out of resources (raise the open files limit or lower --max-connections)"
                    );
                    self.counters.resource_errors.fetch_add(1, Relaxed);
                    session.end = Some(Termination::Resource);
                    return;
                }
            };
            tracing::warn!(
                client = %DisplayPeer(peer),
                backend = %lease.addr(),
                error = %error,
                "connect to backend failed"
            );
            if !self.passive_health {
                lease.record_connect_failure_stats_only();
            } else if let Some(t) = lease.record_connect_failure(&error, started.into_std()) {
                crate::log_transition(&t);
            }
            tried.push(lease.id());
            if tried.len() > self.config.retries as usize {
                self.counters.connect_failed.fetch_add(1, Relaxed);
                session.end = Some(if timeouts == tried.len() {
                    Termination::ConnectTimeout
                } else {
                    Termination::ConnectFailed
                });
                return;
            }
            last_failed = Some(lease);
        };
        let mut relay = Relay::new(
            &mut client,
            &mut backend,
            &lease,
            &session.traffic,
            self.config.idle_timeout,
        );
        session.end = Some(match (&mut relay).await {
            RelayEnd::Closed => Termination::Normal,
            RelayEnd::IdleTimeout => Termination::IdleTimeout,
            RelayEnd::Failed(side, error) => {
                tracing::debug!(client = %DisplayPeer(peer), backend = %lease.addr(), ?side, %error, "relay failed");
                match side {
                    Side::Client => Termination::ClientError,
                    Side::Backend => Termination::BackendError,
                }
            }
        });
    }

    /// Connects to `addr` within the connect timeout. A local resource shortage (see
    /// [`is_local_exhaustion`]) is waited out rather than reported at once: descriptors and
    /// ports come back as other connections end, so under a brief flood a client waits a little
    /// instead of losing its connection.
    async fn connect(&self, addr: SocketAddr) -> Result<C::Stream, ConnectError> {
        let deadline = crate::deadline(Instant::now(), self.config.connect_timeout);
        let (min, max) = LOCAL_RETRY_PAUSE;
        let mut backoff = Backoff::new(min, max);
        loop {
            match tokio::time::timeout_at(deadline, self.connector.connect(addr)).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) if is_local_exhaustion(&e) => {
                    if Instant::now() + backoff.pause() >= deadline {
                        return Err(ConnectError::Local(e));
                    }
                    tokio::time::sleep(backoff.advance()).await;
                }
                Ok(Err(e)) => return Err(ConnectError::Backend(e)),
                Err(_) => return Err(ConnectError::TimedOut),
            }
        }
    }
}

/// Why a connect to a backend failed.
enum ConnectError {
    /// The backend refused, reset, or was unreachable.
    Backend(io::Error),
    /// No answer within the connect timeout.
    TimedOut,
    /// The balancer had no descriptor, port or memory to connect with, for the whole timeout.
    Local(io::Error),
}

/// First and longest pause before trying again to connect after a local resource shortage.
const LOCAL_RETRY_PAUSE: (Duration, Duration) =
    (Duration::from_millis(5), Duration::from_millis(100));

/// Bytes relayed by one connection, readable after the relay is gone (even if aborted).
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
}

/// What the access log says about one client connection. Dropping it writes the line, so
/// every way a connection can end (including being cut by shutdown) is logged exactly once.
struct Session<'a> {
    client: Option<SocketAddr>,
    accepted: Instant,
    accepted_wall: SystemTime,
    backend: Option<SocketAddr>,
    connect_time: Option<Duration>,
    retries: u32,
    traffic: Traffic,
    /// `None` until the connection ends on its own; a session dropped without an end was cut
    /// by shutdown.
    end: Option<Termination>,
    counters: &'a ProxyCounters,
}

impl<'a> Session<'a> {
    fn new(client: Option<SocketAddr>, counters: &'a ProxyCounters) -> Self {
        Session {
            client,
            accepted: Instant::now(),
            accepted_wall: SystemTime::now(),
            backend: None,
            connect_time: None,
            retries: 0,
            traffic: Traffic::default(),
            end: None,
            counters,
        }
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let total = self.accepted.elapsed();
        self.counters.connection_duration.observe(total);
        let end = self.end.unwrap_or(Termination::Shutdown);
        tracing::info!(
            target: "lb::access",
            "{}",
            AccessLine {
                client: self.client,
                accepted: self.accepted_wall,
                backend: self.backend,
                connect_time: self.connect_time,
                total,
                bytes_in: self.traffic.bytes_in.load(Relaxed),
                bytes_out: self.traffic.bytes_out.load(Relaxed),
                end,
                retries: self.retries,
            }
        );
    }
}

/// One access log line, modelled on HAProxy's `tcplog`:
///
/// ```text
/// <client> [<accept time>] <backend> <Tc>/<Tt> <bytes_in> <bytes_out> <termination> <retries>
/// 127.0.0.1:51514 [2026-11-25T22:38:16.709Z] 127.0.0.1:8001 0/3 79 108 normal 0
/// ```
///
/// `Tc` is the time to connect to the backend and `Tt` the whole connection, in milliseconds;
/// `Tc` is `-1` when no backend connection was made and the backend is `-` when none was picked.
/// Bytes are from the client (`bytes_in`) and to the client (`bytes_out`). The termination is
/// one of the words of [`Termination`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessLine {
    /// The client's address.
    pub client: Option<SocketAddr>,
    /// When the connection was accepted.
    pub accepted: SystemTime,
    /// The backend last tried (the one used, if any).
    pub backend: Option<SocketAddr>,
    /// Time to connect to the backend used.
    pub connect_time: Option<Duration>,
    /// Time from accept to close.
    pub total: Duration,
    /// Bytes from the client.
    pub bytes_in: u64,
    /// Bytes to the client.
    pub bytes_out: u64,
    /// How it ended.
    pub end: Termination,
    /// Connect attempts beyond the first.
    pub retries: u32,
}

impl fmt::Display for AccessLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}] {} {}/{} {} {} {} {}",
            DisplayPeer(self.client),
            humantime::format_rfc3339_millis(self.accepted),
            DisplayPeer(self.backend),
            self.connect_time.map_or(-1, |d| d.as_millis() as i64),
            self.total.as_millis(),
            self.bytes_in,
            self.bytes_out,
            self.end,
            self.retries
        )
    }
}

/// Formats an optional peer address as the address or `-`.
pub(crate) struct DisplayPeer(pub(crate) Option<SocketAddr>);

impl fmt::Display for DisplayPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("-"),
        }
    }
}
