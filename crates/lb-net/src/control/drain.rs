//! Drains that are watched to their end: `drain <backend> [deadline=60s] [remove]`.
//!
//! A drain stops new connections at once (the backend's admin state, in lb-core). What this
//! adds is a task per drain that watches the backend's open connections: when none is left,
//! the drain has emptied the backend; when a deadline passes first, the connections still open
//! are closed ([`Tracker::cut_backend`], access log termination `drained`). With `remove`, the
//! backend is then removed. `enable`, `maint`, `remove` or a new `drain` of the backend cancel
//! the countdown. Each drain, running or finished, is in `stats` ([`DrainStatus`]) so that
//! `lb ctl drain ... --wait` can follow it to its end.
//!
//! [`Tracker::cut_backend`]: crate::shutdown::Tracker::cut_backend

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_core::{AdminState, BackendId};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::{lock, named, remove_backend, Handle};
use crate::events::EventKind;
use crate::pools::PoolRuntime;

/// How often a drain looks at its backend's open connections: the delay between the last
/// connection ending and the drain saying so (and removing the backend).
const WATCH_INTERVAL: Duration = Duration::from_millis(200);

/// How long, after a deadline closed its connections, a drain waits for their tasks to be
/// gone before it removes the backend anyway (they are aborted; this is a bound, not a wait
/// anyone should see).
const CUT_SETTLE: Duration = Duration::from_secs(5);

/// Finished drains kept for `stats` (for `lb ctl drain --wait` to read the outcome of its own).
const FINISHED_KEPT: usize = 32;

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// The last connection ended on its own.
    Emptied,
    /// The deadline passed with connections open; this many were closed.
    Cut(u64),
    /// Stopped before its end by the command named (`enable`, `maint`, `remove`, `drain`), or
    /// by the backend leaving the pool otherwise (`reload`, discovery).
    Cancelled(&'static str),
}

impl fmt::Display for DrainOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DrainOutcome::Emptied => f.write_str("emptied"),
            DrainOutcome::Cut(n) => write!(
                f,
                "deadline passed: closed {n} connection{}",
                if *n == 1 { "" } else { "s" }
            ),
            DrainOutcome::Cancelled(by) => write!(f, "cancelled by {by}"),
        }
    }
}

/// A drain, running or finished, as `stats` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainStatus {
    /// Numbered from 1 in the order drains started: a new drain of the same backend has a
    /// higher one.
    pub id: u64,
    /// The backend's pool.
    pub pool: String,
    /// The backend.
    pub backend: SocketAddr,
    /// The deadline it was given, if any.
    pub deadline: Option<Duration>,
    /// Whether the backend is removed at the end.
    pub remove: bool,
    /// Time since it started.
    pub elapsed: Duration,
    /// Time left before the deadline closes what is open (running drains with a deadline).
    pub remaining: Option<Duration>,
    /// Connections open on the backend now (running), or when it ended.
    pub open: u64,
    /// How it ended; `None` while it runs.
    pub outcome: Option<DrainOutcome>,
    /// Whether the backend was removed at its end.
    pub removed: bool,
}

impl DrainStatus {
    /// The line under a pool's table while the drain runs: `(drain: 10.0.0.5:80 has 3
    /// connections open, closed in 42s, then removed)`.
    pub(crate) fn note(&self) -> String {
        let s = if self.open == 1 { "" } else { "s" };
        let mut line = format!("(drain: {} has {} connection{s} open", self.backend, self.open);
        match self.remaining {
            Some(left) => line.push_str(&format!(", closed in {}", format_deadline(left))),
            None => line.push_str(", no deadline"),
        }
        if self.remove {
            line.push_str(", then removed");
        }
        line.push(')');
        line
    }
}

/// A deadline or the time left to it as `stats` and answers show it: `500ms` under a second,
/// else as uptimes are shown (`42s`, `1m00s`, `2h05m`), rounded up.
pub(super) fn format_deadline(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        super::stats::format_duration(d.saturating_add(Duration::from_millis(999)))
    }
}

/// The running drains (at most one per backend) and the last finished ones.
#[derive(Debug, Default)]
pub(crate) struct Drains {
    state: Mutex<DrainsState>,
}

#[derive(Debug, Default)]
struct DrainsState {
    next_id: u64,
    running: Vec<Running>,
    finished: VecDeque<DrainStatus>,
}

#[derive(Debug)]
struct Running {
    id: u64,
    pool: Arc<PoolRuntime>,
    backend: SocketAddr,
    backend_id: BackendId,
    started: Instant,
    deadline: Option<Duration>,
    remove: bool,
    /// Set when the deadline's cut has been made: from then on the drain ends as cut, and a
    /// command can no longer cancel it (an `enable` or `maint` only keeps the backend).
    cut: bool,
    task: AbortHandle,
}

impl Running {
    fn status(&self, now: Instant, outcome: Option<DrainOutcome>, open: u64) -> DrainStatus {
        let elapsed = now.saturating_duration_since(self.started);
        DrainStatus {
            id: self.id,
            pool: self.pool.name.to_string(),
            backend: self.backend,
            deadline: self.deadline,
            remove: self.remove,
            elapsed,
            remaining: match outcome {
                None => self.deadline.map(|d| d.saturating_sub(elapsed)),
                Some(_) => None,
            },
            open,
            outcome,
            removed: false,
        }
    }

    fn open(&self) -> u64 {
        self.pool.pool.admin_and_open(self.backend_id).map_or(0, |(_, open)| open)
    }
}

impl DrainsState {
    /// Where the running drain of `backend` of `pool` is, if there is one.
    fn position(&self, pool: &PoolRuntime, backend: SocketAddr) -> Option<usize> {
        self.running
            .iter()
            .position(|r| std::ptr::eq(Arc::as_ptr(&r.pool), pool) && r.backend == backend)
    }

    /// The running drain numbered `id`, if it still runs.
    fn by_id(&mut self, id: u64) -> Option<&mut Running> {
        self.running.iter_mut().find(|r| r.id == id)
    }

    fn finish(&mut self, status: DrainStatus) {
        if self.finished.len() == FINISHED_KEPT {
            self.finished.pop_front();
        }
        self.finished.push_back(status);
    }
}

impl Drains {
    /// Every running drain and the last finished ones, oldest first.
    pub(crate) fn statuses(&self) -> Vec<DrainStatus> {
        let now = Instant::now();
        let state = lock(&self.state);
        let mut all: Vec<DrainStatus> = state.finished.iter().cloned().collect();
        all.extend(state.running.iter().map(|r| r.status(now, None, r.open())));
        all.sort_by_key(|d| d.id);
        all
    }
}

impl Handle {
    /// Starts watching the drain of `backend` of `pool`, which the caller has just set
    /// draining, replacing any drain of it already running.
    pub(super) fn start_drain(
        &self,
        pool: &Arc<PoolRuntime>,
        backend: SocketAddr,
        deadline: Option<Duration>,
        remove: bool,
    ) {
        let Some(backend_id) = pool.pool.get(backend).map(|b| b.id) else { return };
        self.cancel_drain(pool, backend, "a new drain");
        let mut state = lock(&self.inner.drains.state);
        state.next_id += 1;
        let id = state.next_id;
        let started = Instant::now();
        let handle = self.clone();
        let watched = Arc::clone(pool);
        let task = tokio::spawn(async move {
            handle.watch_drain(&watched, id, backend_id, started, deadline).await;
        });
        state.running.push(Running {
            id,
            pool: Arc::clone(pool),
            backend,
            backend_id,
            started,
            deadline,
            remove,
            cut: false,
            task: task.abort_handle(),
        });
    }

    /// Stops the running drain of `backend` of `pool`, if any, because of `by` (a command's
    /// name); the backend's admin state is the caller's business. Returns whether a countdown
    /// (a deadline or a removal to come) was cancelled. A drain whose deadline has already cut
    /// is not cancelled (it ends as cut), but no longer removes the backend.
    pub(super) fn cancel_drain(
        &self,
        pool: &PoolRuntime,
        backend: SocketAddr,
        by: &'static str,
    ) -> bool {
        let mut state = lock(&self.inner.drains.state);
        let Some(at) = state.position(pool, backend) else { return false };
        if state.running[at].cut {
            state.running[at].remove = false;
            return false;
        }
        let running = state.running.swap_remove(at);
        running.task.abort();
        let outcome = DrainOutcome::Cancelled(by);
        state.finish(running.status(Instant::now(), Some(outcome), running.open()));
        drop(state);
        self.drain_ended(&running.pool, backend, format!("{outcome}"));
        running.deadline.is_some() || running.remove
    }

    /// The drain's task: waits for the backend to empty or the deadline to pass, then ends the
    /// drain; or ends it as cancelled when the backend leaves `drain` some other way (a
    /// reload, an embedding program) or leaves the pool.
    async fn watch_drain(
        &self,
        pool: &Arc<PoolRuntime>,
        drain: u64,
        id: BackendId,
        started: Instant,
        deadline: Option<Duration>,
    ) {
        let cut_at = deadline.map(|d| crate::time::deadline(started, d));
        let outcome = loop {
            // By id: a backend removed and added again at the address is another backend.
            let Some((admin, open)) = pool.pool.admin_and_open(id) else {
                break DrainOutcome::Cancelled("the backend's removal");
            };
            if let Some(by) = left_drain(admin) {
                break DrainOutcome::Cancelled(by);
            }
            if open == 0 {
                break DrainOutcome::Emptied;
            }
            let now = Instant::now();
            if cut_at.is_some_and(|at| now >= at) {
                match self.cut(pool, drain, id) {
                    Ok(cut) => break DrainOutcome::Cut(cut + self.settle(pool, id).await),
                    Err(Some(by)) => break DrainOutcome::Cancelled(by),
                    Err(None) => return, // cancelled by a command, which recorded it
                }
            }
            let next = now + WATCH_INTERVAL;
            tokio::time::sleep_until(cut_at.map_or(next, |at| at.min(next))).await;
        };
        self.end_drain(pool, drain, outcome);
    }

    /// The deadline's cut, decided under the drains' lock so that a command cancelling the
    /// drain either comes first (nothing is cut) or finds it cut: `Err(None)` if a command
    /// cancelled it, `Err(Some(by))` if the backend left `drain` otherwise, else how many
    /// connections were closed.
    fn cut(
        &self,
        pool: &PoolRuntime,
        drain: u64,
        id: BackendId,
    ) -> Result<u64, Option<&'static str>> {
        let mut state = lock(&self.inner.drains.state);
        let Some(running) = state.by_id(drain) else { return Err(None) };
        match pool.pool.admin_and_open(id) {
            None => return Err(Some("the backend's removal")),
            Some((admin, _)) => {
                if let Some(by) = left_drain(admin) {
                    return Err(Some(by));
                }
            }
        }
        running.cut = true;
        Ok(self.inner.tracker.cut_backend(pool.key(), id) as u64)
    }

    /// After the cut: connections that were still connecting join the backend afterwards, and
    /// are closed as they do until none is left (within [`CUT_SETTLE`]). Returns how many.
    async fn settle(&self, pool: &PoolRuntime, id: BackendId) -> u64 {
        let settle = crate::time::deadline(Instant::now(), CUT_SETTLE);
        let mut more = 0;
        while pool.pool.admin_and_open(id).is_some_and(|(_, open)| open > 0)
            && Instant::now() < settle
        {
            tokio::time::sleep(WATCH_INTERVAL / 4).await;
            more += self.inner.tracker.cut_backend(pool.key(), id) as u64;
        }
        more
    }

    /// Records how the drain numbered `drain` ended, removing its backend if it was asked to.
    fn end_drain(&self, pool: &Arc<PoolRuntime>, drain: u64, outcome: DrainOutcome) {
        let mut state = lock(&self.inner.drains.state);
        // Gone: cancelled meanwhile, and already recorded as such.
        let Some(at) = state.running.iter().position(|r| r.id == drain) else { return };
        let running = state.running.swap_remove(at);
        let mut status = running.status(Instant::now(), Some(outcome), running.open());
        let mut text = format!("{outcome}");
        if running.remove && !matches!(outcome, DrainOutcome::Cancelled(_)) {
            match remove_backend(&pool.pool, running.backend) {
                Ok(()) => {
                    status.removed = true;
                    text.push_str("; removed");
                    pool.note_serving();
                }
                Err(e) => text.push_str(&format!("; not removed: {e}")),
            }
        }
        state.finish(status);
        drop(state);
        self.drain_ended(pool, running.backend, text);
    }

    /// Logs a drain's end and keeps it among the recent events.
    fn drain_ended(&self, pool: &PoolRuntime, backend: SocketAddr, how: String) {
        let text = format!("drain of {}: {how}", named(pool, backend));
        tracing::info!(target: "lb::control", "{text}");
        self.inner.events.push(EventKind::Drain, Some(&pool.name), text);
    }
}

/// What took a backend out of `drain`, if it is no longer draining.
fn left_drain(admin: AdminState) -> Option<&'static str> {
    match admin {
        AdminState::Drain => None,
        AdminState::Ready => Some("a change of state to ready"),
        AdminState::Maint => Some("a change of state to maint"),
    }
}
