//! Active health checks: every backend, every interval, by TCP connect or an HTTP request.
//!
//! One task runs the rounds; within a round each backend's check runs concurrently with the
//! others, so a backend that hangs until the timeout never delays anyone else's check. Results
//! feed `lb-core`'s rise/fall state machine, and only transitions are logged.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_core::{BackendId, Health, Pool, Serving, Transition};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

mod http;

pub use http::{HttpCheck, StatusSet};

use crate::connector::{is_local_exhaustion, Connector};
use crate::error::Error;
use crate::events::{EventKind, EventLog};
use crate::inspect::proxy_header::Version as ProxyVersion;

/// How a backend is checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CheckKind {
    /// The backend accepts a TCP connection. The default: it works for any TCP service.
    #[default]
    Tcp,
    /// An HTTP request whose answer must meet the check's conditions.
    Http(HttpCheck),
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckKind::Tcp => f.write_str("tcp"),
            CheckKind::Http(check) => write!(f, "{check}"),
        }
    }
}

impl FromStr for CheckKind {
    type Err = Error;

    /// `tcp`, or an HTTP check: `http:/path` or `http://HOST/path` (`http` alone checks `/`),
    /// optionally followed by `,host=NAME`, `,status=200|300-399`, `,body=TEXT` (see
    /// [`HttpCheck`]).
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.strip_prefix("http") {
            _ if s == "tcp" => Ok(CheckKind::Tcp),
            Some(rest) => {
                HttpCheck::parse(rest, s).map(CheckKind::Http).map_err(Error::InvalidHealthCheck)
            }
            None => Err(Error::InvalidHealthCheck(format!(
                "{s:?}: expected \"tcp\" or \"http:/path\" (for example http:/healthz)"
            ))),
        }
    }
}

/// Health checking settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    /// Time between the starts of two rounds of checks. Default 2 s, as HAProxy's `inter`:
    /// with `fall` 3 a dead backend is out of rotation within about 6 s even with no traffic
    /// (real traffic's failed connects take it out sooner).
    pub interval: Duration,
    /// Longest wait for one check. Default 1 s.
    pub timeout: Duration,
    /// What a check does.
    pub kind: CheckKind,
    /// Whether checks run at all. Default true. Without them, connect failures from traffic
    /// are counted and retried elsewhere but take no backend down: nothing would bring it back.
    pub enabled: bool,
    /// A PROXY protocol header each check starts with, for backends that demand one on every
    /// connection: v2's `LOCAL` or v1's `UNKNOWN`, which say "a connection of the proxy's own,
    /// no client behind it". Default none: checks are plain.
    pub proxy_header: Option<ProxyVersion>,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            kind: CheckKind::Tcp,
            enabled: true,
            proxy_header: None,
        }
    }
}

/// The last check of one backend, for the `health` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckStatus {
    /// The backend checked.
    pub id: BackendId,
    /// Its address.
    pub addr: SocketAddr,
    /// `Ok(())` if it passed, or what went wrong.
    pub result: Result<(), String>,
    /// How long the check took.
    pub duration: Duration,
    /// When it finished.
    pub at: Instant,
}

/// What the `health` command tells about a pool's backends: the last check of each, and the
/// last change of health with its reason (from checks or from traffic). Shared by the health
/// checker, the connection tasks that report failures, and the control handle.
#[derive(Debug)]
pub(crate) struct HealthLog {
    /// The pool, for the log lines.
    pub(crate) pool: Arc<str>,
    pub(crate) checks: HashMap<BackendId, CheckStatus>,
    pub(crate) changes: HashMap<BackendId, Transition>,
    /// The balancer's recent events, where transitions are also kept for the dashboard.
    pub(crate) events: Arc<EventLog>,
    /// Who served new connections when last looked at ([`note_serving`]): a change is logged.
    pub(crate) serving: Serving,
}

/// A pool's [`HealthLog`], shared.
pub(crate) type CheckLog = Arc<Mutex<HealthLog>>;

/// A new, empty log for the pool called `pool`, whose transitions also go to `events`.
pub(crate) fn health_log(pool: &str, events: Arc<EventLog>) -> CheckLog {
    Arc::new(Mutex::new(HealthLog {
        pool: pool.into(),
        checks: HashMap::new(),
        changes: HashMap::new(),
        events,
        serving: Serving::default(),
    }))
}

/// Logs a change of who serves `pool`'s new connections since the last call (target
/// `lb::health`): backups taking over or handing back, panic starting or ending. Called after
/// anything that can change it (a health transition, a command, a reload, a ramp step); a
/// pool whose serving did not change costs one snapshot load and a lock.
pub(crate) fn note_serving(pool: &Pool, log: &CheckLog) {
    let now = pool.serving();
    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
    let was = std::mem::replace(&mut log.serving, now);
    if was == now {
        return;
    }
    let name = &*log.pool;
    // Only backups and panic are news: a pool with nothing left to serve says so through its
    // backends' own transitions.
    let message = match (was, now) {
        (_, Serving::Backups) => "backups are carrying new connections: no primary is available",
        (Serving::Backups, Serving::Primaries) => {
            "a primary is available: backups no longer carry new connections"
        }
        (Serving::Backups, _) => "backups no longer carry new connections",
        (_, Serving::Panic) => {
            "panic: too few primaries are up; new connections spread over every ready primary \
             regardless of health"
        }
        (Serving::Panic, _) => "panic over",
        _ => return,
    };
    let good = now == Serving::Primaries;
    if good {
        tracing::info!(target: "lb::health", pool = name, from = %was, to = %now, "{message}");
    } else {
        tracing::warn!(target: "lb::health", pool = name, from = %was, to = %now, "{message}");
    }
    // Kept with the health events: primaries back reads as good news, anything else not.
    let kind = if good { EventKind::HealthUp } else { EventKind::HealthDown };
    log.events.push(kind, Some(name), message.to_owned());
}

/// Logs a health transition (`warn` when a backend goes down, `info` when it comes back) and
/// keeps it for the `health` command and the recent events.
pub(crate) fn record_transition(log: &CheckLog, t: Transition) {
    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
    let pool = &*log.pool;
    match t.to {
        Health::Down => tracing::warn!(
            target: "lb::health",
            pool, backend = %t.backend.addr, from = %t.from, to = %t.to, reason = %t.reason,
            "backend is down"
        ),
        Health::Up => tracing::info!(
            target: "lb::health",
            pool, backend = %t.backend.addr, from = %t.from, to = %t.to, reason = %t.reason,
            "backend is up"
        ),
    }
    log.events.transition(pool, &t);
    log.changes.insert(t.backend.id, t);
}

/// Why a check did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CheckError {
    /// The backend failed it.
    Failed(String),
    /// The check could not run: the balancer itself was out of descriptors, ports or memory.
    /// Says nothing about the backend, so it is not counted.
    NotRun(String),
}

/// Runs one check of `addr`.
pub(crate) async fn check_once<C: Connector>(
    connector: &C,
    addr: SocketAddr,
    config: &HealthCheckConfig,
) -> Result<(), CheckError> {
    let attempt = async {
        let mut stream = connector.connect(addr).await.map_err(|e| {
            if is_local_exhaustion(&e) {
                CheckError::NotRun(e.to_string())
            } else {
                CheckError::Failed(e.to_string())
            }
        })?;
        if let Some(version) = config.proxy_header {
            let header = match version {
                ProxyVersion::V1 => b"PROXY UNKNOWN\r\n".to_vec(),
                ProxyVersion::V2 => crate::inspect::proxy_header::encode_v2_local(),
            };
            stream
                .write_all(&header)
                .await
                .map_err(|e| CheckError::Failed(format!("sending the PROXY header: {e}")))?;
        }
        match &config.kind {
            CheckKind::Tcp => Ok(()),
            CheckKind::Http(check) => {
                check.run(stream, &addr.to_string()).await.map_err(CheckError::Failed)
            }
        }
    };
    let timeout = config.timeout;
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(CheckError::Failed(format!("check timed out after {timeout:?}"))),
    }
}

/// Checks every backend each interval until `stop` resolves; and, checks or not, advances the
/// pool's slow-start ramps at the instants [`Pool::tick`] names and logs each change of who
/// serves ([`note_serving`]). `wake` says the pool was changed from outside (a command, a
/// reload): a ramp may have started.
///
/// A backend whose previous check is still running when its next is due (it hangs, and the
/// timeout is longer than the interval) is skipped for that round rather than checked twice at
/// once; nobody else waits for it.
pub(crate) async fn run<C: Connector>(
    pool: Pool,
    connector: Arc<C>,
    config: HealthCheckConfig,
    log: CheckLog,
    wake: Arc<Notify>,
    stop: impl std::future::Future<Output = ()>,
) {
    let config = Arc::new(config);
    tokio::pin!(stop);
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut in_flight: HashSet<BackendId> = HashSet::new();
    let mut checks = JoinSet::new();
    // When the next ramp step is due; `None` while nothing ramps (or slow start is off), so
    // an idle pool has no timer at all.
    let mut ramp = advance(&pool, &log);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => return, // dropping `checks` aborts the checks in flight
            Some(done) = checks.join_next(), if !checks.is_empty() => {
                let Ok((backend, result, duration)) = done else { continue };
                let backend: lb_core::Backend = backend;
                in_flight.remove(&backend.id);
                record(&pool, &log, backend, result, duration);
                // A backend that came up starts a ramp; one that went down may hand the
                // pool to its backups.
                ramp = advance(&pool, &log);
            }
            () = wake.notified() => ramp = advance(&pool, &log),
            () = sleep_until_some(ramp), if ramp.is_some() => ramp = advance(&pool, &log),
            _ = ticks.tick(), if config.enabled => {
                for backend in pool.backends() {
                    if !in_flight.insert(backend.id) {
                        continue;
                    }
                    let connector = Arc::clone(&connector);
                    let config = Arc::clone(&config);
                    checks.spawn(async move {
                        let started = Instant::now();
                        let result = check_once(&*connector, backend.addr, &config).await;
                        (backend, result, started.elapsed())
                    });
                }
            }
        }
    }
}

/// Advances the pool's ramps to now and logs a change of who serves; returns when the next
/// ramp step is due.
fn advance(pool: &Pool, log: &CheckLog) -> Option<Instant> {
    let next = pool.tick(Instant::now().into_std()).map(Instant::from_std);
    note_serving(pool, log);
    next
}

/// Sleeps until `at` (only polled while it is `Some`).
async fn sleep_until_some(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// Feeds one check result to the pool, logs a transition, and keeps it for the `health` command.
/// A check that could not run for want of local resources is shown but not counted.
fn record(
    pool: &Pool,
    log: &CheckLog,
    backend: lb_core::Backend,
    result: Result<(), CheckError>,
    duration: Duration,
) {
    let now = Instant::now();
    let (result, counted) = match result {
        Ok(()) => (Ok(()), true),
        Err(CheckError::Failed(why)) => {
            tracing::debug!(backend = %backend.addr, error = %why, "health check failed");
            (Err(why), true)
        }
        Err(CheckError::NotRun(why)) => {
            tracing::warn!(backend = %backend.addr, error = %why, "health check not run: the balancer is out of resources; not counted");
            (Err(format!("not run ({why}); not counted")), false)
        }
    };
    if counted {
        let outcome = result.as_ref().map(|_| ()).map_err(String::as_str);
        if let Some(transition) = pool.observe(backend.id, outcome, now.into_std()) {
            record_transition(log, transition);
        }
    }
    let status = CheckStatus { id: backend.id, addr: backend.addr, result, duration, at: now };
    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
    log.checks.insert(backend.id, status);
    // Forget backends that have been removed since.
    let live = pool.backends();
    if log.checks.len() > live.len() || log.changes.len() > live.len() {
        log.checks.retain(|id, _| live.iter().any(|b| b.id == *id));
        log.changes.retain(|id, _| live.iter().any(|b| b.id == *id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_check_kinds() {
        assert_eq!("tcp".parse::<CheckKind>().unwrap(), CheckKind::Tcp);
        assert_eq!("http".parse::<CheckKind>().unwrap(), CheckKind::Http(HttpCheck::get("/")));
        assert_eq!(
            "http:/healthz".parse::<CheckKind>().unwrap(),
            CheckKind::Http(HttpCheck::get("/healthz"))
        );
        assert!("http:healthz"
            .parse::<CheckKind>()
            .unwrap_err()
            .to_string()
            .contains("start with '/'"));
        assert!("udp".parse::<CheckKind>().unwrap_err().to_string().contains("expected \"tcp\""));
        assert_eq!(CheckKind::Http(HttpCheck::get("/x")).to_string(), "http:/x");
    }
}
