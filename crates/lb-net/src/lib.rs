//! `lb-net`: the part of the `lb` load balancer that moves bytes.
//!
//! A [`Balancer`] accepts TCP connections, picks a backend from an `lb_core::Pool` (client IP
//! as the key), connects through a [`Connector`] — retrying other backends when a connect
//! fails or times out — and relays bytes both ways with correct half-close, an idle timeout and
//! live byte counts. Beside it a health checker probes every backend (TCP connect or HTTP) and
//! feeds the pool's rise/fall state machine. Everything is controlled through a cloneable
//! [`Handle`], whose text [`Command`] grammar is shared by the REPL and the admin endpoint.
//!
//! # Example: a balancer inside a tokio program
//!
//! ```no_run
//! use lb_core::{Algorithm, Pool, PoolConfig};
//! use lb_net::{Balancer, HealthCheckConfig, ProxyConfig, TcpConnector};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = Pool::new(PoolConfig { algorithm: Algorithm::LeastConnections, ..Default::default() })?;
//! pool.add("127.0.0.1:8001".parse()?, None)?;
//! pool.add("127.0.0.1:8002".parse()?, Some(2))?;
//!
//! let balancer = Balancer::new(pool, TcpConnector, ProxyConfig::default(), HealthCheckConfig::default());
//! let handle = balancer.handle();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let server = tokio::spawn(balancer.run(listener, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! }));
//!
//! // Change it while it runs, with the same commands the REPL takes.
//! println!("{}", handle.execute("add 127.0.0.1:8003 weight=3").await?);
//! println!("{}", handle.execute("stats").await?);
//!
//! handle.shutdown(); // or Ctrl-C: stop accepting, let connections finish, return
//! server.await?;
//! # Ok(())
//! # }
//! ```
//!
//! More, runnable: `cargo run -p lb-net --example embed` (the above with backends and
//! clients), `--example custom_connector` (backends over Unix-domain sockets through a
//! [`Connector`] of your own).
//!
//! # The API in one list
//!
//! - [`Balancer`] (with [`Acceptor`] for one accept loop per worker thread, and
//!   [`ShutdownReport`]): runs the proxy and the health checker.
//! - [`Handle`]: every control action; [`Command`] / [`BackendOptions`] / [`Target`] are the
//!   text grammar, [`Reply`] / [`Stats`] / [`ProxyStats`] / [`CheckStatus`] the answers.
//! - [`ProxyConfig`], [`HealthCheckConfig`] / [`CheckKind`]: settings.
//! - [`DiscoveryConfig`] / [`DnsQuery`] / [`DnsSource`]: pool members from DNS (A/AAAA or
//!   SRV), kept up to date by [`Handle::set_discovery`].
//! - [`Connector`] / [`TcpConnector`] / [`ByteStream`]: how backends are reached.
//! - [`bind`] / [`bind_shared`]: listening sockets set up as the balancer wants them;
//!   [`CongestionControl`]: the TCP congestion control a listener gives its connections.
//! - [`AccessLine`] / [`Termination`]: the per-connection log line.
//! - [`admin`]: the HTTP admin endpoint (metrics, JSON stats, remote commands).
//! - [`lifecycle`]: where listening sockets come from (bound, inherited from a predecessor
//!   during an upgrade, or passed by systemd), the upgrade's hand-over, systemd notifications.
//! - [`inspect`]: pure parsers for a connection's first bytes: the PROXY protocol header
//!   (`accept-proxy` / `send-proxy`) and the TLS ClientHello's server name (SNI routing).
//! - [`Error`]: the one error type.
//!
//! With the `test-util` feature, `MemoryConnector` stands in for [`TcpConnector`]: backends
//! are in-memory pipes that can accept, refuse, hang or reset on demand, so code embedding the
//! balancer can be tested without sockets.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub, rust_2018_idioms)]
#![deny(unsafe_code)]

mod accept;
mod access_log;
pub mod admin;
mod admission;
mod congestion;
mod connector;
mod control;
mod counters;
mod discovery;
mod error;
mod events;
#[cfg(test)]
mod footprint;
mod health_check;
pub mod inspect;
pub mod lifecycle;
mod listener;
mod metrics;
mod placement;
mod pools;
mod preamble;
mod proxy;
mod relay;
mod shutdown;
mod sockets;
#[cfg(target_os = "linux")]
mod splice;
mod stream;
mod tasks;
mod time;
#[cfg(target_os = "linux")]
mod uring;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use lb_core::Pool;
use tokio::net::TcpListener;

pub use access_log::{AccessLine, AccessLogFormat, Termination};
pub use admission::{AddressRange, Admission};
pub use congestion::CongestionControl;
pub use connector::{is_local_exhaustion, ByteStream, Connector, TcpConnector};
#[cfg(any(test, feature = "test-util"))]
pub use connector::{Behavior, MemoryConnector, MemoryListener, MemoryStream};
pub use control::{
    validate_pool_name, BackendHealth, BackendOptions, BackendRef, BoxFuture, Command,
    DrainOutcome, DrainStatus, ExplainReply, Handle, ListenerStats, NamedPoolStats, PoolHealth,
    ProxyStats, Reloader, Reply, Stats, Summary, Target, Upgrader, WhatIfReply, COMMAND_NAMES,
    HELP, MAX_POOL_NAME,
};
pub use counters::{DiscoveryCounter, ProxyCounter};
pub use discovery::{
    Answer, DiscoveryConfig, DiscoveryCounts, DiscoveryStats, DnsQuery, DnsSource, Member,
    DEFAULT_DNS_MAX_REFRESH, DEFAULT_DNS_MIN_REFRESH, DEFAULT_DNS_TIMEOUT,
};
#[cfg(any(test, feature = "test-util"))]
pub use discovery::{DnsBehavior, SrvRecord, TestDnsServer};
pub use error::Error;
pub use events::{Event, EventKind, EVENTS_KEPT};
pub use health_check::{CheckKind, CheckStatus, HealthCheckConfig, HttpCheck, StatusSet};
pub use listener::{ListenerConfig, Routing, ServerName, SniRoute, DEFAULT_INSPECT_TIMEOUT};
pub use placement::Placement;
pub use pools::{PoolSettings, DEFAULT_POOL};
pub use proxy::{IoEngine, ProxyConfig};
pub use sockets::{bind, bind_shared};
pub use stream::TcpConn;
pub use time::{parse_duration, write_rfc3339, TimestampPrecision};

use counters::ProxyCounters;
use listener::ListenerRuntime;
use proxy::ProxyShared;
use shutdown::{Shutdown, Tracker};
use tasks::Tasks;

/// How a balancer's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections still open when the grace period ended, closed by shutdown.
    pub cut: usize,
    /// Whether the grace period was ended before its time ([`Handle::shutdown_now`], which a
    /// second signal calls) rather than having run out.
    pub cut_early: bool,
}

/// The name of the listener that [`Balancer::run`], [`Balancer::serve_connection`] and
/// [`Balancer::acceptor`] serve (created by [`Balancer::new`], routing to its pool).
pub const DEFAULT_LISTENER: &str = "default";

/// A load balancer: pools (each with its health checker), listeners routing connections to
/// them, and the control [`Handle`].
///
/// [`Balancer::new`] builds the one-pool balancer (a pool and a listener both named
/// `default`); [`Balancer::empty`] one to which pools and listeners are added through the
/// handle ([`Handle::add_pool`], [`Handle::add_listener`]), also while it runs.
#[derive(Debug)]
pub struct Balancer<C: Connector = TcpConnector> {
    shared: Arc<ProxyShared<C>>,
    handle: Handle,
}

impl<C: Connector> Balancer<C> {
    /// A balancer over `pool`, reaching backends through `connector`: the pool is named
    /// `default` ([`DEFAULT_POOL`]), with `proxy`'s timeouts and retries and `health`'s checks,
    /// and the `default` listener routes to it.
    pub fn new(pool: Pool, connector: C, proxy: ProxyConfig, health: HealthCheckConfig) -> Self {
        let balancer = Balancer::empty(connector, proxy.clone());
        let settings = PoolSettings::from_proxy(&proxy, health);
        // Neither can fail: the registries are empty and the names valid.
        let added = balancer.handle.add_pool(DEFAULT_POOL, pool, settings);
        debug_assert!(added.is_ok(), "{added:?}");
        let listener = ListenerConfig::to_pool(DEFAULT_LISTENER, DEFAULT_POOL);
        let registered = balancer.handle.register_listener(listener, None);
        debug_assert!(registered.is_ok(), "{registered:?}");
        balancer
    }

    /// A balancer with no pool and no listener yet, reaching backends through `connector`;
    /// `proxy`'s global limit and grace period apply to all its listeners.
    pub fn empty(connector: C, proxy: ProxyConfig) -> Self {
        let counters = Arc::new(ProxyCounters::default());
        let tracker = Arc::new(Tracker::default());
        let shutdown = Arc::new(Shutdown::default());
        let shared = Arc::new(ProxyShared {
            connector: Arc::new(connector),
            config: proxy,
            counters: Arc::clone(&counters),
            tracker: Arc::clone(&tracker),
            shutdown: Arc::clone(&shutdown),
            workers: std::sync::Mutex::new(Vec::new()),
            control: std::sync::Mutex::new(None),
        });
        let tasks: Arc<dyn Tasks> = Arc::clone(&shared) as Arc<dyn Tasks>;
        let handle = Handle::new(tasks, counters, tracker, shutdown);
        Balancer { shared, handle }
    }

    /// A handle to control this balancer (commands, stats, pools, listeners, shutdown); clones
    /// share it.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The runtimes that accept loops of listeners added from now on run on, one socket each
    /// in turn: typically one single-threaded runtime per worker thread, each keeping the
    /// connections it accepts. Without any, a listener accepts on the runtime that adds it.
    pub fn set_workers(&self, runtimes: Vec<tokio::runtime::Handle>) {
        *self.shared.workers.lock().unwrap_or_else(|p| p.into_inner()) = runtimes;
    }

    /// The listener `run`, `serve_connection` and `acceptor` serve: the `default` one, or, on
    /// a balancer built without it, one routing to the first pool (to none if there is none:
    /// its connections are then closed as `no-route`).
    fn implicit_listener(&self) -> Arc<ListenerRuntime> {
        let existing = self.handle.inner.listeners.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = existing.iter().find(|l| &*l.name == DEFAULT_LISTENER) {
            return Arc::clone(l);
        }
        drop(existing);
        let first = self.handle.pool_names().into_iter().next();
        let config = ListenerConfig::to_pool(DEFAULT_LISTENER, first.unwrap_or_default());
        self.handle.register_listener(config.clone(), None).unwrap_or_else(|_| {
            Arc::new(ListenerRuntime::new(None, listener::Routes::nowhere(config)))
        })
    }

    /// Serves one already-accepted client stream on its own task, exactly as an accepted TCP
    /// connection of the `default` listener would be (limits, retries, accounting, logging).
    /// `peer` is the client's address, the key for `ip_hash`. For in-memory clients in tests,
    /// and for programs that accept connections themselves.
    pub fn serve_connection<S>(&self, stream: S, peer: Option<SocketAddr>)
    where
        S: ByteStream,
    {
        let ends = proxy::Endpoints { peer };
        self.shared.spawn_connection(stream, ends, &self.implicit_listener());
    }

    /// An accept loop for the `default` listener that can run on another runtime (or thread)
    /// than the balancer itself: for one listening socket per worker thread, each bound with
    /// `SO_REUSEPORT` (see [`bind_shared`]).
    pub fn acceptor(&self) -> Acceptor<C> {
        Acceptor { shared: Arc::clone(&self.shared), listener: self.implicit_listener() }
    }

    /// Accepts on `listener` for the `default` listener and runs until `shutdown` resolves or
    /// [`Handle::shutdown`] is called, then shuts down gracefully: stops accepting (the
    /// listener is closed), lets open connections finish for the grace period, closes the
    /// rest, stops health checks, and returns.
    ///
    /// Errors from `accept` never end the run; they are logged and, when resources are
    /// exhausted, waited out.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> ShutdownReport {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(address = %addr, "listening");
        }
        let acceptor = tokio::spawn(self.acceptor().accept(listener));
        let report = self.supervise(shutdown).await;
        let _ = acceptor.await;
        report
    }

    /// Runs the pools' health checkers (on this runtime) until `shutdown` resolves or
    /// [`Handle::shutdown`] is called, then, the accept loops having stopped, drains open
    /// connections for the grace period and returns. The listeners' accept loops run on their
    /// runtimes ([`set_workers`](Self::set_workers)); [`run`](Self::run) is the one-socket
    /// shorthand.
    pub async fn supervise(self, shutdown: impl Future<Output = ()>) -> ShutdownReport {
        let handle = self.handle.clone();
        *self.shared.control.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(tokio::runtime::Handle::current());
        let pools = handle.inner.pools.all();
        for pool in pools.iter() {
            self.shared.start_checker(pool);
        }
        let names: Vec<String> =
            pools.iter().map(|p| format!("{} ({})", p.name, p.pool.algorithm())).collect();
        // Not held while running: a pool removed later must be free to go once its
        // connections end.
        drop(pools);
        tracing::info!(pools = %names.join(", "), "running");
        let placing = async {
            if self.shared.config.placement != Placement::Pack {
                return std::future::pending().await;
            }
            let workers = self.shared.workers.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let listeners =
                || handle.inner.listeners.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let steering = &handle.inner.steering;
            placement::monitor(workers, listeners, steering, &self.shared.counters).await;
            std::future::pending().await
        };
        tokio::select! {
            () = shutdown => handle.shutdown(),
            () = handle.shutdown_requested() => {}
            () = placing => {}
        }
        let open = self.shared.tracker.open();
        let grace = self.shared.config.shutdown_grace;
        tracing::info!(
            open,
            grace_ms = grace.as_millis() as u64,
            "shutting down: no longer accepting"
        );
        let cut = self.shared.tracker.drain(grace, self.shared.shutdown.cut_requested()).await;
        if cut > 0 {
            tracing::warn!(cut, "grace period over: closed connections still open");
        }
        for pool in handle.inner.pools.all().iter() {
            pool.stop_checker();
            pool.discovery.stop(false);
        }
        self.shared.shutdown.finish();
        tracing::info!("shut down");
        ShutdownReport { cut, cut_early: self.shared.shutdown.is_cut() }
    }
}

/// One accept loop of a [`Balancer`]'s `default` listener, movable to any runtime.
/// Connections it accepts are served on the runtime it runs on.
#[derive(Debug)]
pub struct Acceptor<C: Connector = TcpConnector> {
    shared: Arc<ProxyShared<C>>,
    listener: Arc<ListenerRuntime>,
}

impl<C: Connector> Clone for Acceptor<C> {
    fn clone(&self) -> Self {
        Acceptor { shared: Arc::clone(&self.shared), listener: Arc::clone(&self.listener) }
    }
}

impl<C: Connector> Acceptor<C> {
    /// Accepts on `listener` until shutdown begins, then closes it and waits until shutdown is
    /// complete, so that the connections this runtime serves can finish during the grace period
    /// (a caller that drops its runtime when this returns cuts nothing early). Never returns
    /// early: accept errors are logged and, when resources are exhausted, waited out.
    pub async fn accept(self, listener: TcpListener) {
        if let Ok(addr) = listener.local_addr() {
            tracing::debug!(address = %addr, "accepting");
        }
        // Out of tokio's registration into the balancer's own (see `TcpConn`).
        match listener.into_std().and_then(accept::Listening::new) {
            Ok(listener) => self.shared.accept_on(&self.listener, &listener).await,
            Err(e) => tracing::error!(error = %e, "cannot register a listening socket"),
        }
        self.shared.shutdown.finished().await;
    }
}
