//! The proxy: accept a client, pick a backend, connect (retrying elsewhere on failure), relay.
//!
//! Connections are accepted in one loop and each is served by its own task: the accept loop
//! never waits on a backend. Picking goes through `lb-core` with the client's IP as key; a
//! failed or timed-out connect is recorded on the pool as a passive health failure and the next
//! try excludes every backend this connection already tried, so a dead backend costs a client a
//! few milliseconds, not its connection.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{atomic::Ordering::Relaxed, Arc};
use std::time::Duration;

use lb_core::{BackendId, Lease};
use tokio::time::Instant;

use crate::accept::{accept_loop, Listening};
use crate::access_log::{AccessLogFormat, DisplayPeer, Session, Termination};
use crate::admission::{ClientPlace, Refused};
use crate::connector::{connect_within, ByteStream, ConnectError, Connector};
use crate::counters::ProxyCounters;
use crate::inspect::proxy_header;
use crate::listener::ListenerRuntime;
use crate::placement::Placement;
use crate::pools::{PoolRuntime, PoolSettings};
use crate::preamble::{self, Preamble, Refusal};
use crate::relay::{Limit, Relay, RelayEnd, Side, Timeouts};
use crate::shutdown::{Shutdown, TaskCell, Tracker};
use crate::stream::TcpConn;

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
    /// Further backends to try after a failed connect (or, with `retry_on_empty`, an empty
    /// answer). Default 2: three tries in all, each on a different backend.
    pub retries: u32,
    /// After the client half-closed, how long the backend may stay silent. Default 30 s: a
    /// client that has said all it will say and waits longer than that for the first byte of
    /// more has usually given up.
    pub client_fin_timeout: Option<Duration>,
    /// After the backend half-closed, how long the client may stay silent. Default 30 s.
    pub server_fin_timeout: Option<Duration>,
    /// How long a connection may sit with nothing moving before the backend's first byte.
    /// Default 60 s: a backend that accepted and says nothing (hung, overloaded) frees the
    /// client well before the idle timeout. Protocols whose server legitimately never speaks
    /// (a log sink) keep flowing: the limit counts only silence.
    pub server_timeout: Option<Duration>,
    /// Replay the client's first bytes on another backend when one closes or resets before
    /// answering. Default off (safe only for idempotent first requests).
    pub retry_on_empty: bool,
    /// Count a backend that closes or resets before sending a byte, while its client waits, as
    /// a failure of that backend (passive health, like a refused connect; HAProxy's `observe
    /// layer4`). Default off: a client can provoke it, by sending what makes a backend hang up
    /// (garbage to a TLS server), and so take healthy backends out of rotation.
    pub observe_empty: bool,
    /// How long graceful shutdown lets open connections finish before closing them. Default
    /// 10 s.
    pub shutdown_grace: Duration,
    /// How each access-log event carries its line ([`AccessLogFormat`]). Default: one
    /// formatted message.
    pub access_log: AccessLogFormat,
    /// Which engine relays the bytes of TCP connections ([`IoEngine`]). Default: epoll, which
    /// runs everywhere; the `lb` binary asks for io_uring where the kernel allows it.
    pub io: IoEngine,
    /// How new connections are placed on the worker threads ([`Placement`]). Default: spread
    /// by the kernel, as `SO_REUSEPORT` does; the `lb` binary packs them while one worker can
    /// carry the load.
    pub placement: Placement,
}

/// The engine that relays a connection's bytes once it is connected (accepting, inspecting and
/// connecting are the same for both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoEngine {
    /// Readiness from epoll (tokio's reactor), then `recv`/`send` calls, or `splice` for bulk.
    /// Every platform.
    #[default]
    Epoll,
    /// io_uring (Linux): one ring per worker thread, one receive of at most a buffer's
    /// worth at a time per socket from shared provided buffers, a turn's sends in one system
    /// call. Bulk transfers go on with epoll's `splice`. It runs on worker threads with a single-threaded runtime (as the
    /// `lb` binary's are); elsewhere, and where the ring cannot be set up, connections use
    /// epoll. Needs [`IoEngine::uring_available`].
    Uring,
}

impl IoEngine {
    /// Whether this kernel lets the io_uring engine run (Linux 6.1 or later is tested; a
    /// container's seccomp policy may forbid io_uring): `Err` says why not.
    pub fn uring_available() -> std::io::Result<()> {
        #[cfg(target_os = "linux")]
        return crate::uring::probe().map_err(|e| {
            // The kernel's errno alone rarely says which setting is in the way.
            let why = match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => {
                    "forbidden here: see the sysctl kernel.io_uring_disabled, or the container's \
                     seccomp profile"
                }
                Some(libc::ENOSYS) => "this kernel has no io_uring",
                Some(libc::EINVAL) => "this kernel's io_uring is too old (5.19 or later needed)",
                _ => return e,
            };
            std::io::Error::new(e.kind(), format!("{e}: {why}"))
        });
        #[cfg(not(target_os = "linux"))]
        return Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "io_uring is Linux only"));
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Some(Duration::from_secs(300)),
            max_connections: None,
            retries: 2,
            client_fin_timeout: Some(Duration::from_secs(30)),
            server_fin_timeout: Some(Duration::from_secs(30)),
            server_timeout: Some(Duration::from_secs(60)),
            retry_on_empty: false,
            observe_empty: false,
            shutdown_grace: Duration::from_secs(10),
            access_log: AccessLogFormat::Line,
            io: IoEngine::Epoll,
            placement: Placement::Spread,
        }
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
        socket: &Listening,
    ) {
        // Held until the last connection this loop accepts is spawned: a drain waits for it.
        let _accepting = self.tracker.accepting();
        let mut stop = std::pin::pin!(async {
            tokio::select! {
                () = self.shutdown.requested() => {}
                () = listener.stopped() => {}
            }
        });
        // The ring, if asked for, from the first connection on: its backend connect goes on
        // it too.
        #[cfg(target_os = "linux")]
        if self.config.io == IoEngine::Uring {
            crate::uring::ensure_engine();
        }
        // Accepted sockets inherit TCP_NODELAY from the listener where the system says so;
        // elsewhere each is set (relayed bytes should leave at once, not wait for Nagle).
        let nodelay_inherited = crate::sockets::nodelay_inherited(socket.socket());
        let accepted = |stream: TcpConn, peer: SocketAddr| {
            if !nodelay_inherited {
                let _ = stream.set_nodelay(true);
            }
            self.spawn_connection(stream, Endpoints { peer: Some(canonical(peer)) }, listener);
        };
        let failed = |e: &io::Error, pause: Option<Duration>| match pause {
            None => tracing::debug!(error = %e, "accept: client gave up before being accepted"),
            Some(pause) => {
                self.counters.accept_errors.fetch_add(1, Relaxed);
                // Out of descriptors, perhaps: the spare splice pipes go first.
                #[cfg(target_os = "linux")]
                crate::splice::Pipe::release_spares();
                tracing::error!(
                    listener = %listener.name,
                    error = %e,
                    pause_ms = pause.as_millis() as u64,
                    "accept failed (out of file descriptors or memory?); pausing before accepting again"
                );
            }
        };
        accept_loop(socket, &mut stop, &accepted, failed).await;
        // Stopped accepting: its port closes with its last socket (a successor process that
        // took it over keeps its own descriptors).
        listener.release_sockets();
        if !self.shutdown.is_requested() {
            // The listener was removed: serve the clients already queued on its socket (they
            // completed their handshake with us) rather than reset them when it closes.
            while let Some((stream, peer)) = socket.try_accept() {
                accepted(stream, peer);
            }
        }
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
        // Who may connect: checked on the peer before anything else, unless a PROXY header is
        // to say who the client is (then once it has).
        let mut place = None;
        {
            let routes = listener.routes.load();
            let rules = &routes.config.admission;
            if !rules.is_open() && !routes.config.accept_proxy {
                if let Some(peer) = ends.peer {
                    match listener.gate.admit(peer.ip(), rules) {
                        Ok(held) => place = held.map(Box::new),
                        Err(refused) => {
                            let mut session =
                                Session::new(ends.peer, &self.counters, self.config.access_log);
                            session.end = Some(self.refuse(listener, refused));
                            return;
                        }
                    }
                }
            }
        }
        let limit = self.config.max_connections.unwrap_or(u64::MAX);
        let Some(ticket) = self.tracker.try_enter(limit) else {
            self.counters.rejected_at_limit.fetch_add(1, Relaxed);
            let mut session = Session::new(ends.peer, &self.counters, self.config.access_log);
            session.end = Some(Termination::Limit);
            return; // dropping the stream closes it; dropping the session logs it
        };
        self.tracker.spawn(ticket, |cell| {
            Arc::clone(self).proxy_connection(stream, ends, Arc::clone(listener), place, cell)
        });
    }

    /// Inspects (if the listener asks), routes, picks, connects (with retries) and relays one
    /// client connection to the end, holding the client's place among its limits meanwhile.
    ///
    /// This is the connection's whole task, and idle connections cost what it weighs (a
    /// test bounds it): an `async` block rather than an `async fn`, which would hold each
    /// argument twice (rust-lang/rust#62958), and the rarely used or short stages boxed.
    #[allow(clippy::manual_async_fn)]
    pub(crate) fn proxy_connection<S>(
        self: Arc<Self>,
        mut client: S,
        ends: Endpoints,
        listener: Arc<ListenerRuntime>,
        mut _place: Option<Box<ClientPlace>>,
        cell: Arc<TaskCell>,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        S: ByteStream,
    {
        async move {
            // Logged when dropped, however this ends: also when shutdown or a drain's deadline
            // aborts the task.
            let mut session = Session::new(ends.peer, &self.counters, self.config.access_log);
            session.cell = Some(&cell);
            // Routing, in a block of its own: what only it needs (the routes, the server name,
            // the preamble) is gone from the task before the relay, which the task's size is
            // set by. The client as an upstream proxy told it is `session.client` from here on.
            let (pool, local, pending, client_eof) = {
                let routes = listener.routes.load_full();
                let sni = routes.by_server_name();
                // Taken apart at once: a value moved out of in part would keep its whole size
                // in the task for the connection's life.
                let Preamble { source, destination: local, server_name, tls, pending, client_eof } =
                    if routes.config.accept_proxy || sni {
                        // Not cut short by a shutdown or an upgrade: the client was accepted,
                        // and is served like any other within the grace period (the inspect
                        // timeout bounds the wait for its header). Boxed: inline, its reads and
                        // timers would make every connection's task (which is as big as its
                        // largest stage) bigger, inspected or not.
                        let inspected = Box::pin(preamble::read(
                            &mut client,
                            routes.config.accept_proxy,
                            sni,
                            routes.config.inspect_timeout,
                        ))
                        .await;
                        match inspected {
                            Ok(preamble) => preamble,
                            Err(refusal) => {
                                session.end = Some(self.refused(&listener, &refusal, ends.peer));
                                return;
                            }
                        }
                    } else {
                        Preamble::default()
                    };
                // What an upstream proxy says about the client stands for the client everywhere.
                session.client = source.or(ends.peer);
                if routes.config.accept_proxy && !routes.config.admission.is_open() {
                    if let Some(client) = session.client {
                        match listener.gate.admit(client.ip(), &routes.config.admission) {
                            Ok(held) => _place = held.map(Box::new),
                            Err(refused) => {
                                session.end = Some(self.refuse(&listener, refused));
                                return;
                            }
                        }
                    }
                }
                session.server_name = server_name.as_deref().map(Arc::from);
                let Some(pool) = routes.for_name(server_name.as_deref()).cloned() else {
                    // SNI routing with no pool for this client: no route for a TLS client, no
                    // usable hello for the others.
                    let end = if tls || !sni {
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
                (pool, local, pending, client_eof)
            };
            session.pool = pool.log_prefix().map(Arc::from);
            let settings = pool.settings.load_full();
            let mut tries = Tries::default();
            // The client's bytes to send before relaying (read while inspecting, or a replay),
            // and whether the client had half-closed.
            let (mut client_bytes, mut client_eof) = (pending, client_eof);
            let mut replayed = false;
            loop {
                // Boxed for the moment it takes: its timers would otherwise stay in the task
                // for the connection's life.
                let (lease, mut backend) = match Box::pin(self.connect_pool(
                    &pool,
                    &settings,
                    session.client.map(|p| p.ip()),
                    &mut tries,
                    &mut session,
                ))
                .await
                {
                    Ok(connected) => connected,
                    Err(end) => {
                        session.end = Some(end);
                        return;
                    }
                };
                // A block of its own, so that none of what it makes stays in the task meanwhile.
                let end = {
                    // What goes to the backend before the relay's own reads: a PROXY header for
                    // it, then the client's bytes so far. Nothing (no allocation) for a plain
                    // pool behind a plain listener.
                    let mut first = match settings.send_proxy {
                        // The address the client reached, asked of the socket (a system call) only
                        // here, where a header needs it.
                        Some(version) => {
                            let local = local.or_else(|| client.tcp_local_addr().map(canonical));
                            proxy_header_for(version, session.client, local)
                        }
                        None => Vec::new(),
                    };
                    if !client_bytes.is_empty() {
                        let n = client_bytes.len() as u64;
                        lease.record_bytes_in(n);
                        if !replayed {
                            session.traffic.bytes_in.store(n, Relaxed);
                        }
                        first.extend_from_slice(&client_bytes);
                    }
                    let timeouts = Timeouts {
                        idle: Limit::new(settings.idle_timeout),
                        client_fin: Limit::new(settings.client_fin_timeout),
                        server_fin: Limit::new(settings.server_fin_timeout),
                        server: Limit::new(settings.server_timeout),
                    };
                    let replay = settings.retry_on_empty.then(|| std::mem::take(&mut client_bytes));
                    relay(
                        self.config.io,
                        &self.counters,
                        &mut client,
                        &mut backend,
                        &lease,
                        &session.traffic,
                        timeouts,
                        (first, client_eof),
                        replay,
                    )
                }
                .await;
                session.end = Some(match end {
                    RelayEnd::Closed => Termination::Normal,
                    RelayEnd::IdleTimeout => Termination::IdleTimeout,
                    RelayEnd::FinTimeout(Side::Client) => Termination::ClientFinTimeout,
                    RelayEnd::FinTimeout(Side::Backend) => Termination::ServerFinTimeout,
                    RelayEnd::ServerTimeout => Termination::ServerTimeout,
                    RelayEnd::Failed(side, error) => {
                        tracing::debug!(client = %DisplayPeer(session.client), backend = %lease.addr(), ?side, %error, "relay failed");
                        // The failure is passed on: the other peer's connection is reset too
                        // when it closes, so a transfer cut short does not look complete.
                        match side {
                            Side::Client => {
                                backend.abort_on_close();
                                Termination::ClientError
                            }
                            Side::Backend => {
                                client.abort_on_close();
                                Termination::BackendError
                            }
                        }
                    }
                    RelayEnd::Empty { error, replay, client_eof: eof } => {
                        let what = match &error {
                            Some(e) => format!("reset before sending a byte ({e})"),
                            None => "closed before sending a byte".to_owned(),
                        };
                        // A client can provoke this (garbage a backend hangs up on), so it counts
                        // against the backend only where the operator asked (`observe_empty`).
                        if settings.observe_empty {
                            tracing::warn!(client = %DisplayPeer(session.client), backend = %lease.addr(), "backend {what}");
                            self.count_failure(&lease, &pool, &what, Instant::now());
                        } else {
                            tracing::debug!(client = %DisplayPeer(session.client), backend = %lease.addr(), "backend {what}");
                        }
                        match replay {
                            // Invisible to the client: another backend gets the same bytes.
                            Some(bytes) if tries.tried.len() < settings.retries as usize => {
                                tries.failed(lease);
                                (client_bytes, client_eof, replayed) = (bytes, eof, true);
                                continue;
                            }
                            // The reset is passed on, as a failed relay's is: the client's
                            // connection is reset too, not ended as if the answer were empty.
                            _ if error.is_some() => {
                                client.abort_on_close();
                                Termination::BackendError
                            }
                            _ => Termination::BackendEmpty,
                        }
                    }
                });
                return;
            }
        }
    }

    /// Picks a backend of `pool` and connects to it, trying others (up to the retries) when a
    /// connect fails; each failure is recorded against its backend. `Err` is how the
    /// connection ends when no backend could be had.
    async fn connect_pool(
        &self,
        pool: &PoolRuntime,
        settings: &PoolSettings,
        client_ip: Option<std::net::IpAddr>,
        tries: &mut Tries,
        session: &mut Session<'_>,
    ) -> Result<(Lease, C::Stream), Termination> {
        loop {
            let Ok(lease) = pool.pool.pick(client_ip, &tries.tried) else {
                return Err(if tries.tried.is_empty() {
                    self.counters.no_backend.fetch_add(1, Relaxed);
                    Termination::NoBackend
                } else {
                    self.counters.connect_failed.fetch_add(1, Relaxed);
                    tries.termination()
                });
            };
            if let Some(failed) = tries.last_failed.take() {
                // Counted once another backend is really tried, on the one that failed.
                failed.record_retried();
                self.counters.retries.fetch_add(1, Relaxed);
                session.retries += 1;
            }
            session.picked(pool.key(), &lease);
            let started = Instant::now();
            let attempt =
                connect_within(&*self.connector, lease.addr(), settings.connect_timeout).await;
            let connect_time = started.elapsed();
            self.counters.connect_time.observe(connect_time);
            let error = match attempt {
                Ok(stream) => {
                    lease.record_connected();
                    session.connect_time = Some(connect_time);
                    return Ok((lease, stream));
                }
                Err(ConnectError::Backend(e)) => e.to_string(),
                Err(ConnectError::TimedOut) => {
                    tries.timeouts += 1;
                    format!("connect timed out after {:?}", settings.connect_timeout)
                }
                Err(ConnectError::Local(e)) => {
                    // Ours, not the backend's: nothing is recorded against it, and another
                    // backend would fail the same way.
                    tracing::warn!(
                        client = %DisplayPeer(session.client),
                        backend = %lease.addr(),
                        error = %e,
                        "cannot open a backend connection: the balancer is out of resources (raise the open files limit or lower --max-connections)"
                    );
                    self.counters.resource_errors.fetch_add(1, Relaxed);
                    return Err(Termination::Resource);
                }
            };
            tracing::warn!(
                client = %DisplayPeer(session.client),
                backend = %lease.addr(),
                error = %error,
                "connect to backend failed"
            );
            self.count_failure(&lease, pool, &error, started);
            if tries.tried.len() >= settings.retries as usize {
                tries.tried.push(lease.id());
                self.counters.connect_failed.fetch_add(1, Relaxed);
                return Err(tries.termination());
            }
            tries.failed(lease);
        }
    }

    /// Records a failure of the lease's backend (a failed connect, or an end before its first
    /// byte): a passive health failure when active checks run, else only counted (nothing
    /// would bring a backend taken down by traffic back up).
    fn count_failure(&self, lease: &Lease, pool: &PoolRuntime, detail: &str, at: Instant) {
        if !pool.settings.load().health.enabled {
            lease.record_connect_failure_stats_only();
        } else if let Some(t) = lease.record_connect_failure(detail, at.into_std()) {
            crate::health_check::record_transition(&pool.checks, t);
            pool.note_serving();
        }
    }

    /// Counts a client refused by a listener's admission rules; returns its termination.
    fn refuse(&self, listener: &ListenerRuntime, refused: Refused) -> Termination {
        match refused {
            Refused::Denied => {
                self.counters.denied.fetch_add(1, Relaxed);
                listener.count(|c| &c.denied);
                Termination::Denied
            }
            Refused::RateLimited => {
                self.counters.rate_limited.fetch_add(1, Relaxed);
                listener.count(|c| &c.rate_limited);
                Termination::RateLimited
            }
        }
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
}

/// The backends one connection has tried, and how they failed.
#[derive(Debug, Default)]
struct Tries {
    /// Every backend that failed this connection, never picked again for it.
    tried: Vec<BackendId>,
    /// How many of them timed out connecting.
    timeouts: usize,
    /// The last one, whose retry is counted once another backend is really tried.
    last_failed: Option<Lease>,
}

impl Tries {
    fn failed(&mut self, lease: Lease) {
        self.tried.push(lease.id());
        self.last_failed = Some(lease);
    }

    /// How a connection ends whose every try failed: `connect-timeout` if they all timed out.
    fn termination(&self) -> Termination {
        if self.timeouts == self.tried.len() {
            Termination::ConnectTimeout
        } else {
            Termination::ConnectFailed
        }
    }
}

/// What is known of an accepted connection before reading from it: the client's address
/// (unknown for a stream handed over by a program). The address the client reached is asked
/// of the socket only when a PROXY header needs it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Endpoints {
    /// The client.
    pub(crate) peer: Option<SocketAddr>,
}

/// `addr` with an IPv4-mapped IPv6 address (a client of a dual-stack `[::]` listener) written
/// as the IPv4 address it is, as a PROXY header would carry it.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
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

/// Relays `client` and `backend` to the end on `engine` (see [`IoEngine`]): `first` bytes go to
/// the backend first and the client may already have half-closed; `replay`, when kept, is the
/// client's bytes so far (see [`Relay::keep_for_replay`]).
#[allow(clippy::too_many_arguments)]
fn relay<'a, S: ByteStream, B: ByteStream>(
    engine: IoEngine,
    counters: &'a ProxyCounters,
    client: &'a mut S,
    backend: &'a mut B,
    lease: &'a Lease,
    traffic: &'a crate::relay::Traffic,
    timeouts: Timeouts,
    (first, client_eof): (Vec<u8>, bool),
    replay: Option<Vec<u8>>,
) -> Relaying<'a, S, B> {
    #[cfg(target_os = "linux")]
    let (first, replay) = {
        let (mut first, mut replay) = (first, replay);
        if let (IoEngine::Uring, Some(c), Some(b)) = (engine, client.tcp_fd(), backend.tcp_fd()) {
            let meter = lease.byte_meter();
            let started =
                crate::uring::relay(c, b, meter, traffic, timeouts, first, client_eof, replay);
            match started {
                Ok(on_ring) => {
                    counters.uring_relays.fetch_add(1, Relaxed);
                    let parts = Parts { client, backend, lease, traffic };
                    return Relaying::Ring { on_ring, parts: Some(parts), counters };
                }
                // No ring on this thread: as if epoll had been asked for.
                Err((given, kept)) => (first, replay) = (given, kept),
            }
        }
        (first, replay)
    };
    #[cfg(not(target_os = "linux"))]
    let _ = (engine, counters);
    let mut relay = Relay::new(client, backend, lease, traffic, timeouts);
    if !first.is_empty() || client_eof {
        relay = relay.with_pending(first, client_eof);
    }
    if let Some(already) = replay {
        relay = relay.keep_for_replay(already);
    }
    Relaying::Epoll(Box::pin(relay))
}

/// A connection's relay on either engine, small enough to stay in the connection's task: a
/// relay on the ring keeps its state in the engine, and the epoll [`Relay`] (with its timer
/// and both directions) is boxed for as long as it runs.
enum Relaying<'a, S, B> {
    /// On this thread's ring, with what the epoll engine needs should it hand bulk over.
    #[cfg(target_os = "linux")]
    Ring {
        on_ring: crate::uring::UringRelay<'a>,
        parts: Option<Parts<'a, S, B>>,
        counters: &'a ProxyCounters,
    },
    /// On epoll.
    Epoll(std::pin::Pin<Box<Relay<'a, S, B>>>),
}

/// What a [`Relay`] is made of besides the ring's state, kept while the ring relays.
#[cfg(target_os = "linux")]
struct Parts<'a, S, B> {
    client: &'a mut S,
    backend: &'a mut B,
    lease: &'a Lease,
    traffic: &'a crate::relay::Traffic,
}

impl<S: ByteStream, B: ByteStream> Future for Relaying<'_, S, B> {
    type Output = RelayEnd;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<RelayEnd> {
        loop {
            match &mut *self {
                #[cfg(target_os = "linux")]
                Relaying::Ring { on_ring, parts, counters } => {
                    let state = match std::task::ready!(std::pin::Pin::new(on_ring).poll(cx)) {
                        crate::uring::Outcome::Ended(end) => return std::task::Poll::Ready(end),
                        crate::uring::Outcome::Bulk(state) => state,
                    };
                    counters.uring_bulk_handoffs.fetch_add(1, Relaxed);
                    let Parts { client, backend, lease, traffic } =
                        parts.take().expect("handed over once");
                    let relay = Relay::resume(client, backend, lease, traffic, state);
                    *self = Relaying::Epoll(Box::pin(relay));
                }
                Relaying::Epoll(relay) => return relay.as_mut().poll(cx),
            }
        }
    }
}
