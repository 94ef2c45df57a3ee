//! The control surface: one command grammar, parsed in one place, and the [`Handle`] that
//! carries commands out.
//!
//! The REPL, the admin endpoint and embedding programs all go through [`Handle`]; text commands
//! go through [`Command::parse`] first, so every front end accepts exactly the same language
//! and answers with exactly the same words.
//!
//! ```text
//! add <host> <port> [weight=N] [ready|drain|maint]    add 127.0.0.1 8004
//! add <host:port> [weight=N] [ready|drain|maint]      add 127.0.0.1:8004 weight=3
//! remove <backend>     drain <backend>     enable <backend>     maint <backend>
//! weight <backend> <N>
//! algorithm [name]     stats     health     help     quit
//! ```
//!
//! A `<backend>` is `host:port`, `[v6]:port`, or `host port`.

mod command;
mod reply;
mod stats;
mod target;

pub use command::{BackendOptions, Command, COMMAND_NAMES, HELP};
pub use reply::Reply;
pub use stats::{ProxyStats, Stats};
pub use target::Target;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use lb_core::{AdminState, Algorithm, Pool};
use tokio::time::Instant;

use crate::error::Error;
use crate::health_check::{CheckLog, CheckStatus};
use crate::proxy::ProxyCounters;
use crate::shutdown::{Shutdown, Tracker};

#[derive(Debug)]
pub(crate) struct HandleInner {
    pub(crate) pool: Pool,
    pub(crate) counters: Arc<ProxyCounters>,
    pub(crate) tracker: Arc<Tracker>,
    pub(crate) checks: CheckLog,
    /// Whether the health checker runs at all (for the `health` command's answer).
    pub(crate) checks_enabled: bool,
    pub(crate) shutdown: Shutdown,
    pub(crate) started: Instant,
    pub(crate) reloader: ReloadSlot,
}

/// What `reload` runs: re-reads the configuration and applies it, answering with a summary of
/// the changes or an error that says why nothing was changed.
pub type Reloader = Arc<dyn Fn() -> BoxFuture<Result<String, Error>> + Send + Sync>;

/// The reload hook, if the binary set one.
#[derive(Default)]
pub(crate) struct ReloadSlot(Mutex<Option<Reloader>>);

impl fmt::Debug for ReloadSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = self.0.lock().map(|r| r.is_some()).unwrap_or(false);
        f.write_str(if set { "Some(<reloader>)" } else { "None" })
    }
}

/// A boxed, sendable future.
pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Controls a running balancer. Cheap to clone; every clone controls the same balancer.
#[derive(Debug, Clone)]
pub struct Handle {
    pub(crate) inner: Arc<HandleInner>,
}

impl Handle {
    pub(crate) fn new(
        pool: Pool,
        counters: Arc<ProxyCounters>,
        tracker: Arc<Tracker>,
        checks_enabled: bool,
    ) -> Handle {
        Handle {
            inner: Arc::new(HandleInner {
                pool,
                counters,
                tracker,
                checks_enabled,
                checks: Arc::new(Mutex::new(HashMap::new())),
                shutdown: Shutdown::default(),
                started: Instant::now(),
                reloader: ReloadSlot::default(),
            }),
        }
    }

    /// Sets what the `reload` command does (the binary re-reads its configuration file).
    pub fn set_reloader(&self, reloader: Reloader) {
        *self.inner.reloader.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(reloader);
    }

    /// The pool, for anything the commands do not cover.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// Parses and runs one text command; see [`Command::parse`] for the grammar. A command that
    /// does not parse, or fails, changes nothing.
    pub async fn execute(&self, line: &str) -> Result<Reply, Error> {
        let command = Command::parse(line)?;
        self.execute_command(command).await
    }

    /// Runs a command. Every command that changes something is logged (target `lb::control`).
    pub async fn execute_command(&self, command: Command) -> Result<Reply, Error> {
        let result = self.apply(&command).await;
        let changes = !matches!(
            command,
            Command::Stats | Command::Health | Command::Help | Command::Algorithm(None)
        );
        match &result {
            Ok(reply) if changes => {
                tracing::info!(target: "lb::control", command = %command, "{reply}")
            }
            Ok(_) => tracing::debug!(target: "lb::control", command = %command, "ok"),
            Err(e) => {
                tracing::warn!(target: "lb::control", command = %command, error = %e, "command failed")
            }
        }
        result
    }

    async fn apply(&self, command: &Command) -> Result<Reply, Error> {
        let pool = &self.inner.pool;
        Ok(match command {
            Command::Add { target, weight, state } => {
                let addrs = target.resolve().await?;
                // Prefer IPv4 when a name resolves to both: backends usually listen on IPv4,
                // and `localhost` often resolves to ::1 first.
                let addr = addrs.iter().find(|a| a.is_ipv4()).copied().unwrap_or(addrs[0]);
                pool.add_with_state(addr, *weight, state.unwrap_or_default())?;
                let weight = weight.unwrap_or(lb_core::DEFAULT_WEIGHT);
                Reply::Done(format!(
                    "added {addr} (weight {weight}, {})",
                    state.unwrap_or_default()
                ))
            }
            Command::Remove(target) => {
                let addr = self.find(target).await?;
                pool.remove(addr)?;
                Reply::Done(format!("removed {addr}; its open connections will finish"))
            }
            Command::Drain(target) => {
                let addr = self.find(target).await?;
                pool.set_admin_state(addr, AdminState::Drain)?;
                Reply::Done(format!("draining {addr}: no new connections, open ones continue"))
            }
            Command::Maint(target) => {
                let addr = self.find(target).await?;
                pool.set_admin_state(addr, AdminState::Maint)?;
                Reply::Done(format!("{addr} in maintenance: no new connections"))
            }
            Command::Enable(target) => {
                let addr = self.find(target).await?;
                pool.set_admin_state(addr, AdminState::Ready)?;
                Reply::Done(format!("{addr} ready"))
            }
            Command::Weight(target, weight) => {
                let addr = self.find(target).await?;
                pool.set_weight(addr, *weight)?;
                Reply::Done(format!("{addr} weight {weight}"))
            }
            Command::Algorithm(None) => Reply::Done(format!(
                "algorithm {} (available: {})",
                pool.algorithm(),
                Algorithm::names()
            )),
            Command::Algorithm(Some(a)) => {
                pool.set_algorithm(*a);
                Reply::Done(format!("algorithm {a}"))
            }
            Command::Stats => Reply::Stats(Box::new(self.stats())),
            Command::Health if !self.inner.checks_enabled => Reply::Done(
                "health checks are off: backends are not checked (failed connects are retried \
                 elsewhere)"
                    .into(),
            ),
            Command::Health => Reply::Health(self.health()),
            Command::Help => Reply::Help,
            Command::Reload => {
                let reloader =
                    self.inner.reloader.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let Some(reload) = reloader else {
                    return Err(Error::Reload(
                        "no configuration file to reload (start lb with --config FILE)".into(),
                    ));
                };
                Reply::Done(reload().await?)
            }
            Command::Quit => {
                self.shutdown();
                Reply::ShuttingDown
            }
        })
    }

    /// The pool address a target names: its first resolved address that is in the pool.
    async fn find(&self, target: &Target) -> Result<SocketAddr, Error> {
        let addrs = target.resolve().await?;
        addrs
            .iter()
            .copied()
            .find(|a| self.inner.pool.get(*a).is_some())
            .ok_or(Error::Pool(lb_core::Error::UnknownBackend(addrs[0])))
    }

    /// Stats of the pool and the proxy.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        Stats {
            pool: self.inner.pool.stats(),
            proxy: ProxyStats {
                open: self.inner.tracker.open(),
                accepted: c.accepted.load(Relaxed),
                rejected_at_limit: c.rejected_at_limit.load(Relaxed),
                no_backend: c.no_backend.load(Relaxed),
                connect_failed: c.connect_failed.load(Relaxed),
                retries: c.retries.load(Relaxed),
                accept_errors: c.accept_errors.load(Relaxed),
                resource_errors: c.resource_errors.load(Relaxed),
            },
            uptime: self.inner.started.elapsed(),
        }
    }

    /// The last health check of each backend, in pool order.
    pub fn health(&self) -> Vec<(SocketAddr, Option<CheckStatus>)> {
        let log = self.inner.checks.lock().unwrap_or_else(|p| p.into_inner());
        self.inner.pool.backends().iter().map(|b| (b.addr, log.get(&b.id).cloned())).collect()
    }

    /// Begins graceful shutdown: the balancer stops accepting, lets open connections finish
    /// for the grace period, then closes the rest. Returns at once; [`Balancer::run`] returns
    /// when shutdown is complete.
    ///
    /// [`Balancer::run`]: crate::Balancer::run
    pub fn shutdown(&self) {
        self.inner.shutdown.request();
    }

    /// Shuts down without waiting: like [`shutdown`](Self::shutdown), but connections still
    /// open are closed at once instead of at the end of the grace period (also when a graceful
    /// shutdown is already under way). Each is logged and counted as cut by shutdown.
    pub fn shutdown_now(&self) {
        self.inner.shutdown.cut_now();
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.is_requested()
    }

    /// Resolves once shutdown is complete: every connection has finished or been cut.
    pub async fn drained(&self) {
        self.inner.shutdown.finished().await;
    }

    /// Resolves once shutdown has begun.
    pub async fn shutdown_requested(&self) {
        self.inner.shutdown.requested().await;
    }
}
