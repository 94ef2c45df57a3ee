//! Named pools: each `lb_core::Pool` with the settings and the health checker that serve it
//! (HAProxy's backends, nginx's upstreams, Envoy's clusters).
//!
//! The pools of a balancer live in a [`Pools`] registry that commands, stats and reloads read
//! and change. The connection path never looks a pool up by name: a listener's routes hold the
//! [`PoolRuntime`]s themselves, re-resolved whenever pools change.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use lb_core::{Pool, PoolStats, RetiredTotals};
use tokio::task::AbortHandle;

use crate::control::validate_pool_name;
use crate::discovery::DiscoveryState;
use crate::error::Error;
use crate::events::EventLog;
use crate::health_check::{self, CheckLog, HealthCheckConfig};
use crate::inspect::proxy_header::Version as ProxyVersion;
use crate::proxy::ProxyConfig;
use crate::shutdown::PoolKey;

/// The name of the pool a one-pool setup (today's flags, [`Balancer::new`]) gets. Its
/// backends appear without a pool prefix in the access log.
///
/// [`Balancer::new`]: crate::Balancer::new
pub const DEFAULT_POOL: &str = "default";

/// How a pool reaches its backends: the per-pool part of the proxy's settings, and its health
/// checks. The algorithm, the rise/fall thresholds and the per-backend limit belong to the
/// `lb_core::Pool` itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Longest wait for one of the pool's backends to accept (see [`ProxyConfig`]).
    pub connect_timeout: Duration,
    /// Close a connection when nothing has moved either way for this long; `None` never.
    pub idle_timeout: Option<Duration>,
    /// Close a connection the client has half-closed once the backend has sent nothing for
    /// this long, so a backend that never answers a client who gave up does not hold it for
    /// the idle timeout; `None` never.
    pub client_fin_timeout: Option<Duration>,
    /// Close a connection the backend has half-closed once the client has sent nothing for
    /// this long; `None` never.
    pub server_fin_timeout: Option<Duration>,
    /// Close a connection on which the backend has not sent a single byte, once nothing has
    /// moved for this long (a backend that accepted and hung); `None` never.
    pub server_timeout: Option<Duration>,
    /// When a backend closes or resets before sending a byte, send the client's bytes so far
    /// (if at most 8 KiB) to another backend instead, invisibly to the client. Only safe when
    /// the first request is idempotent. Default off.
    pub retry_on_empty: bool,
    /// Count a backend that closes or resets before sending a byte as a failure of that
    /// backend (see [`ProxyConfig::observe_empty`]). Default off.
    pub observe_empty: bool,
    /// Further backends of the pool to try after a failed connect.
    pub retries: u32,
    /// How the pool's backends are checked.
    pub health: HealthCheckConfig,
    /// Whether each connection to a backend starts with a PROXY protocol header (v1 text or
    /// v2 binary) carrying the client's address and the address it connected to, so that
    /// backends see real clients. Default: none.
    pub send_proxy: Option<ProxyVersion>,
}

impl PoolSettings {
    /// The pool settings that `proxy`'s per-pool fields and `health` describe: what
    /// [`Balancer::new`](crate::Balancer::new) gives its one pool.
    pub fn from_proxy(proxy: &ProxyConfig, health: HealthCheckConfig) -> Self {
        PoolSettings {
            connect_timeout: proxy.connect_timeout,
            idle_timeout: proxy.idle_timeout,
            client_fin_timeout: proxy.client_fin_timeout,
            server_fin_timeout: proxy.server_fin_timeout,
            server_timeout: proxy.server_timeout,
            retry_on_empty: proxy.retry_on_empty,
            observe_empty: proxy.observe_empty,
            retries: proxy.retries,
            health,
            send_proxy: None,
        }
    }
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings::from_proxy(&ProxyConfig::default(), HealthCheckConfig::default())
    }
}

/// A pool in a running balancer.
pub(crate) struct PoolRuntime {
    pub(crate) name: Arc<str>,
    pub(crate) pool: Pool,
    /// Read once per connection (one atomic load); replaced whole on a change.
    pub(crate) settings: ArcSwap<PoolSettings>,
    /// The last health check of each backend, for the `health` command and the metrics.
    pub(crate) checks: CheckLog,
    /// The running health checker, stopped when the pool goes or its checks change.
    pub(crate) checker: Mutex<Option<AbortHandle>>,
    /// Members from DNS, if the pool has any: the task, the members it owns, its counters.
    pub(crate) discovery: Arc<DiscoveryState>,
    /// Wakes the health checker's task after a change from outside it, so it advances
    /// slow-start ramps from now ([`PoolRuntime::pool_changed`]).
    pub(crate) wake: Arc<tokio::sync::Notify>,
}

impl fmt::Debug for PoolRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolRuntime").field("name", &self.name).field("pool", &self.pool).finish()
    }
}

impl PoolRuntime {
    /// This pool's identity for the connections it serves (see [`PoolKey`]).
    pub(crate) fn key(&self) -> PoolKey {
        std::ptr::from_ref(self) as PoolKey
    }
}

impl PoolRuntime {
    /// A pool called `name`, whose health transitions also go to `events`.
    pub(crate) fn new(
        name: &str,
        pool: Pool,
        settings: PoolSettings,
        events: Arc<EventLog>,
    ) -> Self {
        PoolRuntime {
            name: name.into(),
            pool,
            settings: ArcSwap::from_pointee(settings),
            checks: health_check::health_log(name, events),
            checker: Mutex::new(None),
            discovery: Arc::default(),
            wake: Arc::default(),
        }
    }

    /// Says the pool was changed from outside its task (a command, a reload): the task
    /// advances its slow-start ramps from now, and a change of who serves is logged at once.
    pub(crate) fn pool_changed(&self) {
        self.wake.notify_one();
        self.note_serving();
    }

    /// Logs a change of who serves this pool's new connections ([`health_check::note_serving`]).
    pub(crate) fn note_serving(&self) {
        health_check::note_serving(&self.pool, &self.checks);
    }

    /// The name as the access log and commands write it before a backend: empty for the
    /// default pool, so one-pool setups log `HOST:PORT` as they always have.
    pub(crate) fn log_prefix(&self) -> Option<&str> {
        (&*self.name != DEFAULT_POOL).then_some(&*self.name)
    }

    /// Stops the health checker, if one runs.
    pub(crate) fn stop_checker(&self) {
        if let Some(task) = self.checker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

impl Drop for PoolRuntime {
    fn drop(&mut self) {
        self.stop_checker();
        self.discovery.stop(false);
    }
}

/// The pools of a balancer, in the order they were added. Readers load the current list
/// (no lock); writers serialise on a mutex and publish a new list.
///
/// A removed pool stays in `removed` while connections to its backends are open (stats show
/// it, marked removed); once they have all ended, what it did is added to `retired` and it is
/// dropped, so the balancer's totals never go backwards.
#[derive(Debug, Default)]
pub(crate) struct Pools {
    list: ArcSwap<Vec<Arc<PoolRuntime>>>,
    writer: Mutex<()>,
    removed: Mutex<Vec<Arc<PoolRuntime>>>,
    retired: Mutex<RetiredTotals>,
}

impl Pools {
    /// Every pool, in order.
    pub(crate) fn all(&self) -> Arc<Vec<Arc<PoolRuntime>>> {
        self.list.load_full()
    }

    /// The pool called `name`.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<PoolRuntime>> {
        self.list.load().iter().find(|p| &*p.name == name).cloned()
    }

    /// The pool a command that names none means: the only one. With several pools the
    /// command must say which, and the error lists them.
    pub(crate) fn only(&self, what: &str) -> Result<Arc<PoolRuntime>, Error> {
        let list = self.list.load();
        match list.as_slice() {
            [only] => Ok(Arc::clone(only)),
            [] => Err(Error::BadCommand(format!("{what}: there are no pools"))),
            many => Err(Error::BadCommand(format!(
                "{what}: name the pool, one of {}",
                many.iter().map(|p| &*p.name).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// The pool `name` names, or the only one for `None`.
    pub(crate) fn named_or_only(
        &self,
        name: Option<&str>,
        what: &str,
    ) -> Result<Arc<PoolRuntime>, Error> {
        match name {
            Some(name) => self.get(name).ok_or_else(|| self.unknown(name)),
            None => self.only(what),
        }
    }

    /// The error for a pool name that is not in the balancer, listing those that are.
    pub(crate) fn unknown(&self, name: &str) -> Error {
        let names: Vec<String> = self.list.load().iter().map(|p| p.name.to_string()).collect();
        Error::BadCommand(format!("no pool named {name:?} (pools: {})", names.join(", ")))
    }

    /// Adds a pool. Its name must be valid and not taken.
    pub(crate) fn add(&self, runtime: Arc<PoolRuntime>) -> Result<(), Error> {
        validate_pool_name(&runtime.name)?;
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut list = Vec::clone(&self.list.load());
        if list.iter().any(|p| p.name == runtime.name) {
            return Err(Error::BadCommand(format!("a pool named {:?} exists", runtime.name)));
        }
        list.push(runtime);
        self.list.store(Arc::new(list));
        Ok(())
    }

    /// Removes the pool called `name` and returns it; it is kept (for stats) until its
    /// connections end.
    pub(crate) fn remove(&self, name: &str) -> Result<Arc<PoolRuntime>, Error> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut list = Vec::clone(&self.list.load());
        let at = list.iter().position(|p| &*p.name == name).ok_or_else(|| self.unknown(name))?;
        let removed = list.remove(at);
        self.list.store(Arc::new(list));
        self.removed.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::clone(&removed));
        Ok(removed)
    }

    /// The removed pools that still have connections open, with their stats now; those whose
    /// connections have all ended are folded into the retired totals (returned too) and
    /// dropped.
    pub(crate) fn removed(&self) -> (Vec<(Arc<str>, PoolStats)>, RetiredTotals) {
        let mut removed = self.removed.lock().unwrap_or_else(|p| p.into_inner());
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        let mut open = Vec::new();
        removed.retain(|pool| {
            let stats = pool.pool.stats();
            // Another holder (a connection that routed here just before the removal) could
            // still open a connection on it: only this list's reference means it is final.
            if stats.totals.active > 0 || Arc::strong_count(pool) > 1 {
                open.push((Arc::clone(&pool.name), stats));
                return true;
            }
            let listed = stats.backends.len() as u64;
            retired.add_totals(&stats.totals, listed + stats.retired.backends);
            false
        });
        (open, *retired)
    }
}
