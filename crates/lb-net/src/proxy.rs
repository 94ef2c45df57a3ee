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
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lb_core::{BackendId, Lease};
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::accept::{accept_loop, Backoff};
use crate::connector::{is_local_exhaustion, ByteStream, Connector};
use crate::counters::ProxyCounters;
use crate::inspect::proxy_header;
use crate::listener::ListenerRuntime;
use crate::preamble::{self, Preamble, Refusal};
use crate::relay::{Relay, RelayEnd, Side, Traffic};
use crate::shutdown::{Shutdown, Tracker};

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
    /// SNI routing found no pool for the client's server name (and there is no default).
    NoRoute,
    /// SNI routing needed a TLS ClientHello and the client's first bytes were not one (not
    /// TLS, malformed, too large, or not complete within the inspect timeout).
    BadHello,
    /// An `accept-proxy` listener got no valid PROXY protocol header in time.
    BadProxy,
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
            Termination::NoRoute => "no-route",
            Termination::BadHello => "bad-hello",
            Termination::BadProxy => "bad-proxy",
        }
    }
}

impl fmt::Display for Termination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the proxy needs, shared by the accept loops and every connection task.
pub(crate) struct ProxyShared<C> {
    pub(crate) connector: Arc<C>,
    /// The balancer-wide settings (the global limit, the grace period).
    pub(crate) config: ProxyConfig,
    pub(crate) counters: Arc<ProxyCounters>,
    pub(crate) tracker: Arc<Tracker>,
    pub(crate) shutdown: Arc<Shutdown>,
    /// Runtimes for accept loops (one per worker thread); empty: the caller's runtime.
    pub(crate) workers: std::sync::Mutex<Vec<tokio::runtime::Handle>>,
    /// The runtime health checkers run on, once the balancer is supervised.
    pub(crate) control: std::sync::Mutex<Option<tokio::runtime::Handle>>,
}

impl<C> fmt::Debug for ProxyShared<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyShared")
            .field("config", &self.config)
            .field("open", &self.tracker.open())
            .finish_non_exhaustive()
    }
}

impl<C: Connector> ProxyShared<C> {
    /// Accepts on `socket` for `listener` until shutdown begins or the listener is removed.
    /// Never returns early: every accept error is logged and, for resource exhaustion, waited
    /// out.
    pub(crate) async fn accept_on(
        self: &Arc<Self>,
        listener: &Arc<ListenerRuntime>,
        socket: &TcpListener,
    ) {
        let mut stop = std::pin::pin!(async {
            tokio::select! {
                () = self.shutdown.requested() => {}
                () = listener.stopped() => {}
            }
        });
        let accepted = |stream: tokio::net::TcpStream, peer| {
            // Relayed bytes should leave at once, not wait for Nagle's algorithm.
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().ok();
            self.spawn_connection(stream, Endpoints { peer: Some(peer), local }, listener);
        };
        let failed = |e: &io::Error, pause: Option<Duration>| match pause {
            None => tracing::debug!(error = %e, "accept: client gave up before being accepted"),
            Some(pause) => {
                self.counters.accept_errors.fetch_add(1, Relaxed);
                tracing::error!(
                    listener = %listener.name,
                    error = %e,
                    pause_ms = pause.as_millis() as u64,
                    "accept failed (out of file descriptors or memory?); pausing before accepting again"
                );
            }
        };
        accept_loop(socket, &mut stop, accepted, failed).await;
    }

    /// Serves one client connection on its own task, unless the global limit is reached.
    pub(crate) fn spawn_connection<S>(
        self: &Arc<Self>,
        stream: S,
        ends: Endpoints,
        listener: &Arc<ListenerRuntime>,
    ) where
        S: ByteStream,
    {
        self.counters.accepted.fetch_add(1, Relaxed);
        listener.count(|c| &c.accepted);
        let limit = self.config.max_connections.unwrap_or(u64::MAX);
        let Some(ticket) = self.tracker.try_enter(limit) else {
            self.counters.rejected_at_limit.fetch_add(1, Relaxed);
            let mut session = Session::new(ends.peer, &self.counters);
            session.end = Some(Termination::Limit);
            return; // dropping the stream closes it; dropping the session logs it
        };
        let shared = Arc::clone(self);
        let listener = Arc::clone(listener);
        self.tracker
            .spawn(ticket, async move { shared.proxy_connection(stream, ends, &listener).await });
    }

    /// Inspects (if the listener asks), routes, picks, connects (with retries) and relays one
    /// client connection to the end.
    pub(crate) async fn proxy_connection<S>(
        &self,
        mut client: S,
        ends: Endpoints,
        listener: &ListenerRuntime,
    ) where
        S: ByteStream,
    {
        // Logged when dropped, however this ends: also when shutdown aborts the task.
        let mut session = Session::new(ends.peer, &self.counters);
        let routes = listener.routes.load_full();
        let sni = routes.by_server_name();
        let preamble = if routes.config.accept_proxy || sni {
            let inspected = preamble::read(
                &mut client,
                routes.config.accept_proxy,
                sni,
                routes.config.inspect_timeout,
            )
            .await;
            match inspected {
                Ok(preamble) => preamble,
                Err(refusal) => {
                    session.end = Some(self.refused(listener, &refusal, ends.peer));
                    return;
                }
            }
        } else {
            Preamble::default()
        };
        // What an upstream proxy says about the client stands for the client everywhere.
        let peer = preamble.source.or(ends.peer);
        let local = preamble.destination.or(ends.local);
        session.client = peer;
        session.server_name = preamble.server_name.as_deref().map(Arc::from);
        let Some(pool) = routes.for_name(preamble.server_name.as_deref()).cloned() else {
            // SNI routing with no pool for this client: no route for a TLS client, no usable
            // hello for the others.
            let end = if preamble.tls || !sni {
                self.counters.no_route.fetch_add(1, Relaxed);
                listener.count(|c| &c.no_route);
                Termination::NoRoute
            } else {
                self.counters.bad_hello.fetch_add(1, Relaxed);
                listener.count(|c| &c.bad_hello);
                Termination::BadHello
            };
            session.end = Some(end);
            return;
        };
        session.pool = pool.log_prefix().map(Arc::from);
        let settings = pool.settings.load_full();
        let client_ip = peer.map(|p| p.ip());
        let mut tried: Vec<BackendId> = Vec::new();
        let mut timeouts = 0usize;
        let mut last_failed: Option<Lease> = None;
        let (lease, mut backend) = loop {
            let lease = match pool.pool.pick(client_ip, &tried) {
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
            let attempt = self.connect(lease.addr(), settings.connect_timeout).await;
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
                    format!("connect timed out after {:?}", settings.connect_timeout)
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
            if !settings.health.enabled {
                lease.count_connect_failure();
            } else if let Some(t) = lease.record_connect_failure(&error, started.into_std()) {
                crate::health_check::log_transition(&t);
            }
            tried.push(lease.id());
            if tried.len() > settings.retries as usize {
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
        // What goes to the backend before the relay's own reads: a PROXY header for it, then
        // the client bytes the inspect stage read. Nothing (no allocation) for a plain pool
        // behind a plain listener.
        let mut first = match settings.send_proxy {
            Some(version) => proxy_header_for(version, peer, local),
            None => Vec::new(),
        };
        if !preamble.pending.is_empty() {
            let n = preamble.pending.len() as u64;
            lease.record_bytes_in(n);
            session.traffic.bytes_in.store(n, Relaxed);
            first.extend_from_slice(&preamble.pending);
        }
        let mut relay =
            Relay::new(&mut client, &mut backend, &lease, &session.traffic, settings.idle_timeout);
        if !first.is_empty() || preamble.client_eof {
            relay = relay.with_pending(first, preamble.client_eof);
        }
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

    /// Counts and logs a connection refused while being inspected; returns its termination.
    fn refused(
        &self,
        listener: &ListenerRuntime,
        refusal: &Refusal,
        peer: Option<SocketAddr>,
    ) -> Termination {
        match refusal {
            Refusal::BadProxy(why) => {
                self.counters.bad_proxy.fetch_add(1, Relaxed);
                listener.count(|c| &c.bad_proxy);
                tracing::debug!(listener = %listener.name, client = %DisplayPeer(peer), reason = %why, "connection refused: bad PROXY header");
                Termination::BadProxy
            }
            Refusal::BadHello(why) => {
                self.counters.bad_hello.fetch_add(1, Relaxed);
                listener.count(|c| &c.bad_hello);
                tracing::debug!(listener = %listener.name, client = %DisplayPeer(peer), reason = %why, "connection refused: no usable TLS ClientHello");
                Termination::BadHello
            }
            Refusal::ClientGone(why) => {
                tracing::debug!(listener = %listener.name, client = %DisplayPeer(peer), reason = %why, "client left while being inspected");
                Termination::ClientError
            }
        }
    }

    /// Connects to `addr` within `timeout`. A local resource shortage (see
    /// [`is_local_exhaustion`]) is waited out rather than reported at once: descriptors and
    /// ports come back as other connections end, so under a brief flood a client waits a little
    /// instead of losing its connection.
    async fn connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<C::Stream, ConnectError> {
        let deadline = crate::time::deadline(Instant::now(), timeout);
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

/// The two ends of an accepted connection as the socket knows them (either may be unknown
/// for a stream handed over by a program).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Endpoints {
    /// The client.
    pub(crate) peer: Option<SocketAddr>,
    /// The address the client connected to.
    pub(crate) local: Option<SocketAddr>,
}

/// The PROXY header a backend connection starts with: the client's address and the one it
/// connected to, or, when either is unknown (a stream handed over without addresses), v1's
/// `UNKNOWN` and v2's `LOCAL`, which tell the backend to use the connection's own addresses.
fn proxy_header_for(
    version: proxy_header::Version,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
) -> Vec<u8> {
    match (peer, local, version) {
        (Some(peer), Some(local), _) => proxy_header::encode(version, peer, local),
        (_, _, proxy_header::Version::V1) => b"PROXY UNKNOWN\r\n".to_vec(),
        (_, _, proxy_header::Version::V2) => proxy_header::encode_v2_local(),
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

/// What the access log says about one client connection. Dropping it writes the line, so
/// every way a connection can end (including being cut by shutdown) is logged exactly once.
struct Session<'a> {
    client: Option<SocketAddr>,
    accepted: Instant,
    accepted_wall: SystemTime,
    backend: Option<SocketAddr>,
    /// The pool's name, unless it is the default pool.
    pool: Option<Arc<str>>,
    /// The TLS server name routing went by, if it did.
    server_name: Option<Arc<str>>,
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
            pool: None,
            server_name: None,
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
                pool: self.pool.clone(),
                server_name: self.server_name.clone(),
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
/// <client> [<accept time>] [<pool>/]<backend> <Tc>/<Tt> <bytes_in> <bytes_out> <termination> <retries>[ sni=<name>]
/// 127.0.0.1:51514 [2026-11-25T22:38:16.709Z] 127.0.0.1:8001 0/3 79 108 normal 0
/// 127.0.0.1:51520 [2026-11-25T22:38:17.002Z] api/10.0.0.7:443 1/40 517 3120 normal 0 sni=api.example.com
/// ```
///
/// `Tc` is the time to connect to the backend and `Tt` the whole connection, in milliseconds;
/// `Tc` is `-1` when no backend connection was made and the backend is `-` when none was picked.
/// The backend is written after its pool's name and a `/`, except in the pool named `default`
/// (the one-pool setup), whose lines stay as they were before pools existed.
/// Bytes are from the client (`bytes_in`) and to the client (`bytes_out`). The termination is
/// one of the words of [`Termination`]. `sni=` ends the line when the listener routed by the
/// TLS server name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLine {
    /// The client's address.
    pub client: Option<SocketAddr>,
    /// When the connection was accepted.
    pub accepted: SystemTime,
    /// The backend last tried (the one used, if any).
    pub backend: Option<SocketAddr>,
    /// The backend's pool, unless it is the default pool.
    pub pool: Option<Arc<str>>,
    /// The TLS server name the listener routed by, if it did.
    pub server_name: Option<Arc<str>>,
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
            "{} [{}] ",
            DisplayPeer(self.client),
            humantime::format_rfc3339_millis(self.accepted)
        )?;
        if let (Some(pool), Some(_)) = (&self.pool, self.backend) {
            write!(f, "{pool}/")?;
        }
        write!(
            f,
            "{} {}/{} {} {} {} {}",
            DisplayPeer(self.backend),
            self.connect_time.map_or(-1, |d| d.as_millis() as i64),
            self.total.as_millis(),
            self.bytes_in,
            self.bytes_out,
            self.end,
            self.retries
        )?;
        if let Some(name) = &self.server_name {
            write!(f, " sni={name}")?;
        }
        Ok(())
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
