//! Active health checks: every backend, every interval, by TCP connect or an HTTP request.
//!
//! One task runs the rounds; within a round each backend's check runs concurrently with the
//! others, so a backend that hangs until the timeout never delays anyone else's check (a large
//! pool's checks are spread over the interval: `round`). Results feed `lb-core`'s rise/fall
//! state machine in batches, at most one every [`BATCH_EVERY`] (one snapshot published for
//! each), and only transitions are logged.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_core::{Backend, BackendId, Health, Pool, Serving, Transition};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

mod http;
mod round;

pub use http::{HttpCheck, StatusSet};

use crate::connector::{is_local_exhaustion, Connector};
use crate::error::Error;
use crate::events::{EventKind, EventLog};
use crate::inspect::proxy_header::Version as ProxyVersion;
use round::Round;

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

/// The least time between two batches of results applied to the pool. Each batch that changes
/// something publishes a new snapshot, whose cost grows with the pool: results one by one (a
/// first round of checks, a mass failure) would publish 10,000 snapshots of a 10,000-backend
/// pool, tens of seconds of work. A result that comes alone is applied at once; one that
/// comes within this of the last batch waits for the next, at most this long, which is
/// nothing next to the interval between checks.
const BATCH_EVERY: Duration = Duration::from_millis(10);

/// A finished check: the backend, its result, and how long it took.
type Checked = (Backend, Result<(), CheckError>, Duration);

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
    let mut checks: JoinSet<Checked> = JoinSet::new();
    // The backends of the round not started yet: a large pool's are spread over the interval.
    let mut round = Round::new(Vec::new(), Instant::now(), config.interval);
    let start = |checks: &mut JoinSet<_>, in_flight: &mut HashSet<_>, backends: &[Backend]| {
        for &backend in backends {
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
    };
    // Results in, not yet applied, and when they will be: at once, unless a batch was applied
    // less than BATCH_EVERY ago.
    let mut results: Vec<Checked> = Vec::new();
    let (mut last_batch, mut batch_due): (Option<Instant>, Option<Instant>) = (None, None);
    // When the next ramp step is due; `None` while nothing ramps (or slow start is off), so
    // an idle pool has no timer at all.
    let mut ramp = advance(&pool, &log);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => return, // dropping `checks` aborts the checks in flight
            Some(done) = checks.join_next(), if !checks.is_empty() => {
                // This result and every other one already in.
                let mut next = Some(done);
                while let Some(done) = next {
                    if let Ok(result) = done {
                        in_flight.remove(&result.0.id);
                        results.push(result);
                    }
                    next = checks.try_join_next();
                }
                let now = Instant::now();
                match last_batch.map(|at| at + BATCH_EVERY).filter(|&due| due > now) {
                    Some(due) => batch_due = Some(due),
                    None => batch_due = Some(now),
                }
            }
            () = sleep_until_some(batch_due), if batch_due.is_some() => {
                record(&pool, &log, std::mem::take(&mut results));
                (last_batch, batch_due) = (Some(Instant::now()), None);
                // A backend that came up starts a ramp; one that went down may hand the
                // pool to its backups.
                ramp = advance(&pool, &log);
            }
            () = wake.notified() => ramp = advance(&pool, &log),
            () = sleep_until_some(ramp), if ramp.is_some() => ramp = advance(&pool, &log),
            () = sleep_until_some(round.next_due()), if round.next_due().is_some() => {
                start(&mut checks, &mut in_flight, round.due(Instant::now()));
            }
            _ = ticks.tick(), if config.enabled => {
                // A round still behind (a busy runtime) finishes first.
                start(&mut checks, &mut in_flight, round.rest());
                let backends = pool.backends();
                forget_removed(&log, &backends);
                round = Round::new(backends, Instant::now(), config.interval);
                start(&mut checks, &mut in_flight, round.due(Instant::now()));
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

/// Feeds check results to the pool in one batch, logs the transitions, and keeps each result
/// for the `health` command. A check that could not run for want of local resources is shown
/// but not counted.
fn record(pool: &Pool, log: &CheckLog, results: Vec<Checked>) {
    let now = Instant::now();
    let mut statuses = Vec::with_capacity(results.len());
    let mut counted = Vec::with_capacity(results.len());
    for (backend, result, duration) in results {
        let (result, counts) = match result {
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
        if counts {
            counted.push(statuses.len());
        }
        let (id, addr) = (backend.id, backend.addr);
        statuses.push(CheckStatus { id, addr, result, duration, at: now });
    }
    let outcomes = counted.iter().map(|&i| {
        let s = &statuses[i];
        (s.id, s.result.as_ref().map(|_| ()).map_err(String::as_str))
    });
    for transition in pool.observe_all(outcomes, now.into_std()) {
        record_transition(log, transition);
    }
    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
    log.checks.extend(statuses.into_iter().map(|s| (s.id, s)));
}

/// Forgets the checks and changes of backends no longer in the pool (`live`), once a round.
fn forget_removed(log: &CheckLog, live: &[Backend]) {
    let live: HashSet<BackendId> = live.iter().map(|b| b.id).collect();
    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
    log.checks.retain(|id, _| live.contains(id));
    log.changes.retain(|id, _| live.contains(id));
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
