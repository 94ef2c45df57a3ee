//! The control surface: one command grammar, parsed in one place, and the [`Handle`] that
//! carries commands out.
//!
//! The REPL, the admin endpoint and embedding programs all go through [`Handle`]; text commands
//! go through [`Command::parse`] first, so every front end accepts exactly the same language
//! and answers with exactly the same words.
//!
//! ```text
//! add [pool] <host> <port> [weight=N] [ready|drain|maint]    add 127.0.0.1 8004
//! add [pool] <host:port> [weight=N] [ready|drain|maint]      add web 127.0.0.1:8004 weight=3
//! remove <backend>     drain <backend>     enable <backend>     maint <backend>
//! weight <backend> <N>
//! algorithm [pool] [name]     stats [pool]     health [pool]     help     quit
//! ```
//!
//! A `<backend>` is `host:port`, `[v6]:port`, or `host port`, after `pool/` where the pool
//! does not go without saying (`drain web/10.0.0.5:443`).
//!
//! The handle is also how pools and listeners are added, changed and removed while the
//! balancer runs ([`Handle::add_pool`], [`Handle::add_listener`], ...): the configuration
//! file's reload and embedding programs go through it, as commands do.

mod apply;
mod command;
mod drain;
mod reply;
mod stats;
mod target;
mod traffic;

pub use command::{BackendOptions, Command, COMMAND_NAMES, HELP};
pub use drain::{DrainOutcome, DrainStatus};
pub use reply::{BackendHealth, PoolHealth, Reply};
pub use stats::{ListenerStats, NamedPoolStats, ProxyStats, Stats, Summary};
pub use target::{validate_pool_name, BackendRef, Target, MAX_POOL_NAME};
pub(crate) use traffic::pass_reason_text;
pub use traffic::{ExplainReply, WhatIfReply};

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use lb_core::{AdminState, Pool};
use tokio::time::Instant;

use crate::counters::ProxyCounters;
use crate::discovery::{self, DiscoveryConfig};
use crate::error::Error;
use crate::events::{EventKind, EventLog};
use crate::health_check::CheckStatus;
use crate::listener::{ListenerConfig, ListenerRuntime, Routes};
use crate::pools::{PoolRuntime, PoolSettings, Pools};
use crate::shutdown::{Shutdown, Tracker};
use crate::tasks::Tasks;

#[derive(Debug)]
pub(crate) struct HandleInner {
    pub(crate) pools: Pools,
    /// The listeners, in the order added (a control-plane list: connections hold their own
    /// listener).
    pub(crate) listeners: Mutex<Vec<Arc<ListenerRuntime>>>,
    pub(crate) counters: Arc<ProxyCounters>,
    pub(crate) tracker: Arc<Tracker>,
    pub(crate) shutdown: Arc<Shutdown>,
    pub(crate) started: Instant,
    /// Recent health transitions and commands, for the dashboard.
    pub(crate) events: Arc<EventLog>,
    pub(crate) reloader: ReloadSlot,
    /// Where new connections go among the workers ([`crate::placement`]).
    pub(crate) steering: crate::placement::Steering,
    pub(crate) upgrader: ReloadSlot,
    /// Starts health checkers and accept loops (it knows the connector's type).
    pub(crate) tasks: Arc<dyn Tasks>,
    /// Drains watched to their end (deadline, remove).
    pub(crate) drains: drain::Drains,
}

/// What `reload` runs: re-reads the configuration and applies it, answering with a summary of
/// the changes or an error that says why nothing was changed.
pub type Reloader = Arc<dyn Fn() -> BoxFuture<Result<String, Error>> + Send + Sync>;

/// What `upgrade` runs: starts a successor process, hands it the listening sockets and, once
/// it is ready, shuts this balancer down gracefully, answering with what happened; or an
/// error saying why this process keeps serving. (The `lb` binary's is in
/// [`lifecycle`](crate::lifecycle).)
pub type Upgrader = Arc<dyn Fn() -> BoxFuture<Result<String, Error>> + Send + Sync>;

/// The reload (or upgrade) hook, if the binary set one.
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Handle {
    pub(crate) fn new(
        tasks: Arc<dyn Tasks>,
        counters: Arc<ProxyCounters>,
        tracker: Arc<Tracker>,
        shutdown: Arc<Shutdown>,
    ) -> Handle {
        let started = Instant::now();
        Handle {
            inner: Arc::new(HandleInner {
                pools: Pools::default(),
                listeners: Mutex::new(Vec::new()),
                counters,
                tracker,
                shutdown,
                started,
                events: Arc::new(EventLog::new(started)),
                reloader: ReloadSlot::default(),
                upgrader: ReloadSlot::default(),
                tasks,
                drains: drain::Drains::default(),
                steering: crate::placement::Steering::default(),
            }),
        }
    }

    /// Sets what the `reload` command does (the binary re-reads its configuration file).
    pub fn set_reloader(&self, reloader: Reloader) {
        *lock(&self.inner.reloader.0) = Some(reloader);
    }

    /// Sets what the `upgrade` command does (the binary starts its successor).
    pub fn set_upgrader(&self, upgrader: Upgrader) {
        *lock(&self.inner.upgrader.0) = Some(upgrader);
    }

    /// New descriptors of every listener's listening sockets (all of each listener's, one per
    /// worker), by listener name, for handing them to another process: each shares its
    /// socket (and the connections queued on it) with the one the listener accepts on. A
    /// listener that stopped accepting has none.
    pub fn listening_sockets(&self) -> Result<Vec<(String, Vec<std::net::TcpListener>)>, Error> {
        let listeners = lock(&self.inner.listeners).clone();
        // The successor steers them as its own settings say: this process stops steering
        // (and spreads) first, so that it cannot undo the successor's choice meanwhile.
        self.inner.steering.stop(&listeners);
        let mut all = Vec::with_capacity(listeners.len());
        for l in listeners {
            let sockets = l.clone_sockets().map_err(|source| Error::Listen {
                addr: l.address.unwrap_or_else(|| ([0, 0, 0, 0], 0).into()),
                source,
            })?;
            if !sockets.is_empty() {
                all.push((l.name.to_string(), sockets));
            }
        }
        Ok(all)
    }

    /// The first pool: the pool of a one-pool balancer ([`Balancer::new`]), for anything the
    /// commands do not cover. A balancer without pools gives a new empty pool that belongs to
    /// nothing.
    ///
    /// [`Balancer::new`]: crate::Balancer::new
    pub fn pool(&self) -> Pool {
        self.inner.pools.all().first().map_or_else(Pool::default, |p| p.pool.clone())
    }

    /// The pool called `name`.
    pub fn pool_named(&self, name: &str) -> Option<Pool> {
        self.inner.pools.get(name).map(|p| p.pool.clone())
    }

    /// The names of the pools, in the order they were added.
    pub fn pool_names(&self) -> Vec<String> {
        self.inner.pools.all().iter().map(|p| p.name.to_string()).collect()
    }

    /// The settings of the pool called `name`.
    pub fn pool_settings(&self, name: &str) -> Option<PoolSettings> {
        self.inner.pools.get(name).map(|p| PoolSettings::clone(&p.settings.load()))
    }

    /// Adds a pool: `pool` (with its backends, algorithm and thresholds) reached and checked as
    /// `settings` say. Its health checker starts at once if the balancer runs, else when it
    /// starts. The name must be a valid pool name ([`validate_pool_name`]) not in use.
    pub fn add_pool(&self, name: &str, pool: Pool, settings: PoolSettings) -> Result<(), Error> {
        let runtime =
            Arc::new(PoolRuntime::new(name, pool, settings, Arc::clone(&self.inner.events)));
        self.inner.pools.add(Arc::clone(&runtime))?;
        self.inner.tasks.start_checker(&runtime);
        Ok(())
    }

    /// Makes the members of the pool called `name` follow DNS as `config` says (see
    /// [`DiscoveryConfig`]), in place of what it followed; `None` stops following DNS, and
    /// the members it had added stay, as ordinary members. The lookups run on a task of the
    /// current runtime until the pool goes, discovery changes or shutdown begins.
    ///
    /// With a new configuration, this resolves once the first lookup has been applied, with
    /// what it did in words (`3 backends in DNS (3 added)`, or why the lookup failed: the pool
    /// then keeps what it has and the task tries again). The same configuration again
    /// changes nothing and answers `None`. Fails only when the resolver cannot be set up (the
    /// system's DNS configuration cannot be read) or there is no such pool.
    pub async fn set_discovery(
        &self,
        name: &str,
        config: Option<DiscoveryConfig>,
    ) -> Result<Option<String>, Error> {
        let pool = self.inner.pools.get(name).ok_or_else(|| self.inner.pools.unknown(name))?;
        let state = Arc::clone(&pool.discovery);
        if state.config() == config {
            return Ok(None);
        }
        let Some(config) = config else {
            state.stop(true);
            tracing::info!(target: "lb::discovery", pool = name, "discovery stopped; its members stay as ordinary members");
            return Ok(Some("discovery stopped".into()));
        };
        tracing::info!(target: "lb::discovery", pool = name, source = %config.describe(), "discovery started");
        let shutdown = Arc::clone(&self.inner.shutdown);
        let stop = async move { shutdown.requested().await };
        let first =
            discovery::start(Arc::clone(&pool.name), pool.pool.clone(), state, config, stop)
                .await?;
        Ok(Some(first))
    }

    /// The members of the pool called `name` that DNS discovery added and manages: a
    /// configuration reload leaves these alone rather than removing them as unlisted.
    pub fn discovered(&self, name: &str) -> Vec<SocketAddr> {
        self.inner.pools.get(name).map(|p| p.discovery.owned()).unwrap_or_default()
    }

    /// What the pool called `name` discovers, if anything.
    pub fn discovery_config(&self, name: &str) -> Option<DiscoveryConfig> {
        self.inner.pools.get(name).and_then(|p| p.discovery.config())
    }

    /// Removes the pool called `name`: its health checker stops, connections open to its
    /// backends finish on their own. A pool a listener still routes to cannot be removed
    /// (change or remove the listener first).
    pub fn remove_pool(&self, name: &str) -> Result<(), Error> {
        let users: Vec<String> = lock(&self.inner.listeners)
            .iter()
            .filter(|l| l.routes.load().config.pools().contains(&name))
            .map(|l| l.name.to_string())
            .collect();
        if !users.is_empty() {
            return Err(Error::BadCommand(format!(
                "pool {name:?} is used by listener {}",
                users.join(", ")
            )));
        }
        let removed = self.inner.pools.remove(name)?;
        removed.stop_checker();
        removed.discovery.stop(true);
        Ok(())
    }

    /// Tells the pool called `name` that its `lb_core::Pool` was changed directly (through
    /// [`pool_named`](Self::pool_named)): its task advances slow-start ramps from now, and a
    /// change of who serves (backups, panic) is logged. Commands do this themselves; a
    /// configuration reload calls it after applying a pool's changes.
    pub fn pool_changed(&self, name: &str) {
        if let Some(pool) = self.inner.pools.get(name) {
            pool.pool_changed();
        }
    }

    /// Changes how the pool called `name` reaches and checks its backends. New connections use
    /// the new settings; a change of the health checks restarts its checker (backends keep
    /// their health state).
    pub fn set_pool_settings(&self, name: &str, settings: PoolSettings) -> Result<(), Error> {
        let pool = self.inner.pools.get(name).ok_or_else(|| self.inner.pools.unknown(name))?;
        let checks_changed = pool.settings.load().health != settings.health;
        pool.settings.store(Arc::new(settings));
        if checks_changed {
            pool.stop_checker();
            self.inner.tasks.start_checker(&pool);
        }
        Ok(())
    }

    /// Adds a listener accepting on `sockets` (listening sockets sharing one address, one per
    /// worker thread: see [`bind_shared`](crate::bind_shared)), routing as `config` says and
    /// with its congestion control. Every pool it names must exist, and its name must be new.
    pub fn add_listener(
        &self,
        config: ListenerConfig,
        sockets: Vec<std::net::TcpListener>,
    ) -> Result<(), Error> {
        let address = sockets.first().and_then(|s| s.local_addr().ok());
        for socket in &sockets {
            config.congestion_control.apply(socket).map_err(|e| {
                Error::InvalidSetting(format!(
                    "listener {}: congestion control {}: {e}",
                    config.name, config.congestion_control
                ))
            })?;
        }
        let runtime = self.register_listener(config, address)?;
        Arc::clone(&self.inner.tasks).start_listener(Arc::clone(&runtime), sockets)?;
        // Steered as the others are (which also undoes a program left on passed sockets).
        self.inner.steering.join(&runtime);
        Ok(())
    }

    /// Registers a listener without starting anything (its accept loops are the caller's).
    pub(crate) fn register_listener(
        &self,
        config: ListenerConfig,
        address: Option<SocketAddr>,
    ) -> Result<Arc<ListenerRuntime>, Error> {
        let mut listeners = lock(&self.inner.listeners);
        if listeners.iter().any(|l| *l.name == config.name) {
            return Err(Error::InvalidSetting(format!(
                "a listener named {:?} exists",
                config.name
            )));
        }
        let routes = Routes::resolve(config, &self.inner.pools)?;
        let runtime = Arc::new(ListenerRuntime::new(address, routes));
        listeners.push(Arc::clone(&runtime));
        Ok(runtime)
    }

    /// Changes an existing listener's routes, PROXY header, inspect settings and congestion
    /// control (its address cannot change: add a new listener and remove this one).
    /// Connections already routed keep their pool; those accepted already keep their
    /// congestion control.
    pub fn set_listener(&self, config: ListenerConfig) -> Result<(), Error> {
        let listeners = lock(&self.inner.listeners);
        let listener = listeners
            .iter()
            .find(|l| *l.name == config.name)
            .ok_or_else(|| Error::InvalidSetting(format!("no listener named {:?}", config.name)))?;
        let routes = Routes::resolve(config, &self.inner.pools)?;
        let congestion = &routes.config.congestion_control;
        if *congestion != listener.routes.load().config.congestion_control {
            listener.set_congestion(congestion).map_err(|e| {
                Error::InvalidSetting(format!(
                    "listener {}: congestion control {congestion}: {e}",
                    listener.name
                ))
            })?;
        }
        listener.routes.store(Arc::new(routes));
        Ok(())
    }

    /// Removes a listener: it stops accepting and its sockets close; connections it accepted
    /// finish on their own.
    pub fn remove_listener(&self, name: &str) -> Result<(), Error> {
        let mut listeners = lock(&self.inner.listeners);
        let at = listeners
            .iter()
            .position(|l| *l.name == *name)
            .ok_or_else(|| Error::InvalidSetting(format!("no listener named {name:?}")))?;
        listeners.remove(at).stop();
        Ok(())
    }

    /// The listeners: their settings and, when known, the address they listen on.
    pub fn listeners(&self) -> Vec<(ListenerConfig, Option<SocketAddr>)> {
        lock(&self.inner.listeners)
            .iter()
            .map(|l| (l.routes.load().config.clone(), l.address))
            .collect()
    }

    /// Parses and runs one text command; see [`Command::parse`] for the grammar. A command that
    /// does not parse, or fails, changes nothing.
    pub async fn execute(&self, line: &str) -> Result<Reply, Error> {
        let command = parse_logged(line)?;
        self.execute_command(command).await
    }

    /// Runs a command. Every command that changes something is logged (target `lb::control`)
    /// and kept among the recent events ([`Stats::events`]), as is every failed one.
    pub async fn execute_command(&self, command: Command) -> Result<Reply, Error> {
        let result = self.apply(&command).await;
        let changes = command.changes_state();
        let events = &self.inner.events;
        match &result {
            Ok(reply) if changes => {
                tracing::info!(target: "lb::control", command = %command, "{reply}");
                events.push(EventKind::Command, None, format!("{command}: {reply}"));
                // A drain, a removal or a weight can hand the traffic to backups or end it.
                for pool in self.inner.pools.all().iter() {
                    pool.note_serving();
                }
            }
            Ok(_) => tracing::debug!(target: "lb::control", command = %command, "ok"),
            Err(e) => {
                tracing::warn!(target: "lb::control", command = %command, error = %e, "command failed");
                events.push(EventKind::CommandFailed, None, format!("{command}: {e}"));
            }
        }
        result
    }

    /// Stats of every pool and of the proxy.
    pub fn stats(&self) -> Stats {
        let (removed, retired_pools) = self.inner.pools.removed();
        let current = self.inner.pools.all();
        let drains = self.inner.drains.statuses();
        let current = current.iter().map(|p| {
            let stats = p.pool.stats();
            // Only what this snapshot lists: the log may still hold a backend removed since.
            let listed: HashSet<lb_core::BackendId> = stats.backends.iter().map(|b| b.id).collect();
            let log = lock(&p.checks);
            let checks = log.checks.iter().filter(|(id, _)| listed.contains(id));
            let changes = log.changes.iter().filter(|(id, _)| listed.contains(id));
            NamedPoolStats {
                name: p.name.to_string(),
                checks: checks.map(|(id, c)| (*id, c.clone())).collect(),
                changes: changes.map(|(id, t)| (*id, t.clone())).collect(),
                stats,
                removed: false,
                checks_enabled: p.settings.load().health.enabled,
                discovery: p.discovery.stats(),
                drains: drains.iter().filter(|d| *d.pool == *p.name).cloned().collect(),
            }
        });
        let removed = removed.into_iter().map(|(name, stats)| NamedPoolStats {
            name: name.to_string(),
            stats,
            removed: true,
            checks_enabled: false,
            checks: HashMap::new(),
            changes: HashMap::new(),
            discovery: None,
            drains: Vec::new(),
        });
        Stats {
            pools: current.chain(removed).collect(),
            retired_pools,
            listeners: lock(&self.inner.listeners)
                .iter()
                .map(|l| {
                    let c = &l.counters;
                    ListenerStats {
                        name: l.name.to_string(),
                        address: l.address,
                        accepted: c.accepted.load(Relaxed),
                        no_route: c.no_route.load(Relaxed),
                        bad_hello: c.bad_hello.load(Relaxed),
                        bad_proxy: c.bad_proxy.load(Relaxed),
                        denied: c.denied.load(Relaxed),
                        rate_limited: c.rate_limited.load(Relaxed),
                        untracked: l.gate.untracked(),
                        congestion_control: l.congestion(),
                    }
                })
                .collect(),
            proxy: self.inner.counters.snapshot(self.inner.tracker.open()),
            uptime: self.inner.started.elapsed(),
            events: self.inner.events.recent(),
            placement_packed: self.inner.steering.packed(),
        }
    }

    /// How many backends there are, how many are available and how many connections are
    /// open: [`stats`](Self::stats)'s totals, without copying every backend's counters and
    /// health (for a status line, refreshed often).
    pub fn summary(&self) -> Summary {
        let pools = self.inner.pools.all();
        Summary {
            backends: pools.iter().map(|p| p.pool.len()).sum(),
            available: pools.iter().map(|p| p.pool.available()).sum(),
            open: self.inner.tracker.open(),
        }
    }

    /// The last health check of each backend of every pool, in pool order.
    pub fn health(&self) -> Vec<(SocketAddr, Option<CheckStatus>)> {
        let pools = self.health_by_pool().into_iter();
        pools.flat_map(|p| p.backends.into_iter().map(|b| (b.addr, b.check))).collect()
    }

    /// Each backend's health, last check and last change, pool by pool.
    pub fn health_by_pool(&self) -> Vec<PoolHealth> {
        self.inner
            .pools
            .all()
            .iter()
            .map(|p| {
                let stats = p.pool.stats();
                let log = lock(&p.checks);
                PoolHealth {
                    pool: p.name.to_string(),
                    checks_enabled: p.settings.load().health.enabled,
                    backends: stats
                        .backends
                        .iter()
                        .filter(|b| !b.removed)
                        .map(|b| BackendHealth {
                            addr: b.addr,
                            health: b.health,
                            check: log.checks.get(&b.id).cloned(),
                            change: log.changes.get(&b.id).cloned(),
                            backup: b.backup,
                        })
                        .collect(),
                }
            })
            .collect()
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

/// Adds a backend found by DNS discovery: at its full weight at once, ready, a primary.
pub(crate) fn add_backend(
    pool: &Pool,
    addr: SocketAddr,
    weight: Option<u32>,
    state: AdminState,
) -> Result<(), Error> {
    pool.add_with_state(addr, weight, state)?;
    Ok(())
}

/// Removes a backend (its open connections finish): the `remove` command's change, also made
/// by DNS discovery.
pub(crate) fn remove_backend(pool: &Pool, addr: SocketAddr) -> Result<(), Error> {
    pool.remove(addr)?;
    Ok(())
}

/// Sets a backend's weight: the `weight` command's change, also made by DNS discovery.
pub(crate) fn set_backend_weight(pool: &Pool, addr: SocketAddr, weight: u32) -> Result<(), Error> {
    pool.set_weight(addr, weight)?;
    Ok(())
}

/// A backend as answers name it: `POOL/HOST:PORT`, or `HOST:PORT` in the default pool.
fn named(pool: &PoolRuntime, addr: SocketAddr) -> String {
    match pool.log_prefix() {
        Some(name) => format!("{name}/{addr}"),
        None => addr.to_string(),
    }
}

/// [`Command::parse`], logging a line that does not parse (target `lb::control`, as a command
/// that fails is), blank lines excepted: every command refused is in the log.
pub(crate) fn parse_logged(line: &str) -> Result<Command, Error> {
    Command::parse(line).inspect_err(|e| {
        if !line.trim().is_empty() {
            let line = line.trim().escape_debug();
            tracing::warn!(target: "lb::control", command = %line, error = %e, "command failed");
        }
    })
}
