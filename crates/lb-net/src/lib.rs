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
//! - [`Connector`] / [`TcpConnector`] / [`ByteStream`]: how backends are reached.
//! - [`bind`] / [`bind_shared`]: listening sockets set up as the balancer wants them.
//! - [`AccessLine`] / [`Termination`]: the per-connection log line.
//! - [`admin`]: the HTTP admin endpoint (metrics, JSON stats, remote commands).
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
pub mod admin;
mod connector;
mod control;
mod error;
mod health_check;
pub mod inspect;
mod metrics;
mod proxy;
mod relay;
mod shutdown;
mod sockets;
#[cfg(target_os = "linux")]
mod splice;
mod time;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use lb_core::Pool;
use tokio::net::TcpListener;

pub use connector::{is_local_exhaustion, ByteStream, Connector, TcpConnector};
#[cfg(any(test, feature = "test-util"))]
pub use connector::{Behavior, MemoryConnector, MemoryListener, MemoryStream};
pub use control::{
    BackendOptions, BoxFuture, Command, Handle, ProxyStats, Reloader, Reply, Stats, Target,
    COMMAND_NAMES, HELP,
};
pub use error::Error;
pub use health_check::{CheckKind, CheckStatus, HealthCheckConfig};
pub use proxy::{AccessLine, ProxyConfig, Termination};
pub use sockets::{bind, bind_shared};

use proxy::{ProxyCounters, ProxyShared};
use shutdown::Tracker;

/// How a balancer's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections still open when the grace period ended, closed by shutdown.
    pub cut: usize,
}

/// A load balancer: proxy, health checker and control handle around one pool.
#[derive(Debug)]
pub struct Balancer<C: Connector = TcpConnector> {
    shared: Arc<ProxyShared<C>>,
    health: HealthCheckConfig,
    handle: Handle,
}

impl<C: Connector> Balancer<C> {
    /// A balancer over `pool`, reaching backends through `connector`.
    pub fn new(pool: Pool, connector: C, proxy: ProxyConfig, health: HealthCheckConfig) -> Self {
        let counters = Arc::new(ProxyCounters::default());
        let tracker = Arc::new(Tracker::default());
        let handle =
            Handle::new(pool.clone(), Arc::clone(&counters), Arc::clone(&tracker), health.enabled);
        let shared = Arc::new(ProxyShared {
            pool,
            connector: Arc::new(connector),
            config: proxy,
            counters,
            tracker,
            passive_health: health.enabled,
        });
        Balancer { shared, health, handle }
    }

    /// A handle to control this balancer (commands, stats, shutdown); clones share it.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Serves one already-accepted client stream on its own task, exactly as an accepted TCP
    /// connection would be (limits, retries, accounting, logging). `peer` is the client's
    /// address, the key for `ip_hash`. For in-memory clients in tests, and for programs that
    /// accept connections themselves.
    pub fn serve_connection<S>(&self, stream: S, peer: Option<SocketAddr>)
    where
        S: ByteStream,
    {
        self.shared.spawn_connection(stream, peer);
    }

    /// An accept loop that can run on another runtime (or thread) than the balancer itself:
    /// for one listener per worker thread, each bound with `SO_REUSEPORT` (see [`bind`]).
    pub fn acceptor(&self) -> Acceptor<C> {
        Acceptor { shared: Arc::clone(&self.shared), handle: self.handle.clone() }
    }

    /// Runs until `shutdown` resolves or [`Handle::shutdown`] is called, then shuts down
    /// gracefully: stops accepting (the listener is closed), lets open connections finish for
    /// the grace period, closes the rest, stops health checks, and returns.
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

    /// Like [`run`](Self::run), for acceptors running elsewhere ([`Balancer::acceptor`]): runs
    /// the health checker until `shutdown` resolves or [`Handle::shutdown`] is called, then
    /// (the acceptors having stopped) drains open connections for the grace period and returns.
    pub async fn supervise(self, shutdown: impl Future<Output = ()>) -> ShutdownReport {
        let handle = self.handle.clone();
        tracing::info!(algorithm = %self.shared.pool.algorithm(), "running");
        let checker = tokio::spawn(health_check::run(
            self.shared.pool.clone(),
            Arc::clone(&self.shared.connector),
            self.health.clone(),
            Arc::clone(&self.handle.inner.checks),
            {
                let handle = self.handle.clone();
                async move { handle.shutdown_requested().await }
            },
        ));
        tokio::select! {
            () = shutdown => handle.shutdown(),
            () = handle.shutdown_requested() => {}
        }
        let open = self.shared.tracker.open();
        let grace = self.shared.config.shutdown_grace;
        tracing::info!(
            open,
            grace_ms = grace.as_millis() as u64,
            "shutting down: no longer accepting"
        );
        let cut = self.shared.tracker.drain(grace, handle.inner.shutdown.cut_requested()).await;
        if cut > 0 {
            tracing::warn!(cut, "grace period over: closed connections still open");
        }
        let _ = checker.await;
        self.handle.inner.shutdown.finish();
        tracing::info!("shut down");
        ShutdownReport { cut }
    }
}

/// One accept loop of a [`Balancer`], movable to any runtime. Connections it accepts are served
/// on the runtime it runs on.
#[derive(Debug)]
pub struct Acceptor<C: Connector = TcpConnector> {
    shared: Arc<ProxyShared<C>>,
    handle: Handle,
}

impl<C: Connector> Clone for Acceptor<C> {
    fn clone(&self) -> Self {
        Acceptor { shared: Arc::clone(&self.shared), handle: self.handle.clone() }
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
        let handle = self.handle.clone();
        let stop = async move { handle.shutdown_requested().await };
        tokio::pin!(stop);
        self.shared.accept_loop(&listener, &mut stop).await;
        drop(listener);
        self.handle.drained().await;
    }
}
