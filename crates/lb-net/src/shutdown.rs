//! Shutting down: the switches that start and end it ([`Shutdown`]), and the [`Tracker`] of
//! connection tasks that lets it wait for open connections and then close the rest, or close
//! one backend's connections when a drain's deadline passes.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::AbortHandle;

/// The stages of a balancer's shutdown, each a switch that only ever turns on, so anyone can
/// wait for it: requested (stop accepting), cut now (end the grace period at once), finished
/// (every connection has ended or been cut).
#[derive(Debug)]
pub(crate) struct Shutdown {
    requested: watch::Sender<bool>,
    cut_now: watch::Sender<bool>,
    finished: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            requested: watch::channel(false).0,
            cut_now: watch::channel(false).0,
            finished: watch::channel(false).0,
        }
    }
}

/// Resolves once `switch` is on. The sender outlives the wait (it is borrowed), so the wait
/// cannot fail.
async fn on(switch: &watch::Sender<bool>) {
    let _ = switch.subscribe().wait_for(|&on| on).await;
}

impl Shutdown {
    /// Starts a graceful shutdown.
    pub(crate) fn request(&self) {
        self.requested.send_replace(true);
    }

    /// Ends the grace period at once (also starting shutdown if it has not begun).
    pub(crate) fn cut_now(&self) {
        self.cut_now.send_replace(true);
        self.request();
    }

    /// Marks shutdown complete.
    pub(crate) fn finish(&self) {
        self.finished.send_replace(true);
    }

    /// Whether shutdown has begun.
    pub(crate) fn is_requested(&self) -> bool {
        *self.requested.borrow()
    }

    /// Resolves once shutdown has begun.
    pub(crate) async fn requested(&self) {
        on(&self.requested).await;
    }

    /// Whether the grace period was ended at once (a second signal, `quit now`).
    pub(crate) fn is_cut(&self) -> bool {
        *self.cut_now.borrow()
    }

    /// Resolves once the grace period is to end at once.
    pub(crate) async fn cut_requested(&self) {
        on(&self.cut_now).await;
    }

    /// Resolves once shutdown is complete.
    pub(crate) async fn finished(&self) {
        on(&self.finished).await;
    }
}

/// Counts open connections and can abort them all, or those of one backend.
///
/// Aborting drops each task's future, which closes its sockets and drops its lease, so every
/// counter ends where it should even for connections cut short.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    open: AtomicU64,
    next_id: AtomicU64,
    /// Running tasks by id. `None` is a task that ended before `spawn` could register it: the
    /// marker tells `spawn` not to register it after all.
    tasks: Mutex<HashMap<u64, Option<Running>>>,
    /// Accept loops running ([`Tracker::accepting`]). A drain waits for them to stop before it
    /// looks for the last connection: one accepted on another thread just as shutdown began is
    /// then counted, and served, rather than dropped with its runtime.
    accepting: AtomicU64,
    /// Told when the last connection ends and when the last accept loop stops.
    idle: Notify,
}

/// An accept loop's place among the running ones ([`Tracker::accepting`]): dropped when the
/// loop has stopped and spawned the last connection it accepted.
#[derive(Debug)]
pub(crate) struct Accepting(Arc<Tracker>);

impl Drop for Accepting {
    fn drop(&mut self) {
        if self.0.accepting.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A registered task: how to abort it, and what it says about itself.
#[derive(Debug)]
struct Running {
    abort: AbortHandle,
    cell: Arc<TaskCell>,
}

/// What a connection task tells its tracker: the pool and backend it is on (so that a drain's
/// deadline closes exactly that backend's connections), and whether it was closed that way (so
/// that its access line says `drained`). Written by the task, read by the tracker.
#[derive(Debug, Default)]
pub(crate) struct TaskCell {
    /// The pool's identity, [`PoolKey`]; 0 until the connection is routed.
    pool: AtomicUsize,
    /// The backend's id plus one; 0 while it has none.
    backend: AtomicU64,
    drained: AtomicBool,
}

/// A pool's identity while connections hold it: the address of its shared runtime. A pool's
/// connections keep it alive, so no other pool can have the same address while they run.
pub(crate) type PoolKey = usize;

impl TaskCell {
    /// The connection is on `backend` of the pool `pool` (after a pick; again after a retry).
    pub(crate) fn on_backend(&self, pool: PoolKey, backend: lb_core::BackendId) {
        self.pool.store(pool, Ordering::Relaxed);
        self.backend.store(backend.get() + 1, Ordering::Release);
    }

    /// Whether a drain's deadline closed the connection.
    pub(crate) fn drained(&self) -> bool {
        self.drained.load(Ordering::Acquire)
    }

    fn is_on(&self, pool: PoolKey, backend: lb_core::BackendId) -> bool {
        self.backend.load(Ordering::Acquire) == backend.get() + 1
            && self.pool.load(Ordering::Relaxed) == pool
    }
}

/// A place among the open connections, reserved by [`Tracker::try_enter`].
#[derive(Debug)]
pub(crate) struct Ticket(());

/// Releases a task's place when the task ends, however it ends (also when aborted).
struct Exit {
    tracker: Arc<Tracker>,
    id: u64,
}

impl Drop for Exit {
    fn drop(&mut self) {
        self.tracker.meet(self.id, None);
        if self.tracker.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.tracker.idle.notify_waiters();
        }
    }
}

pin_project_lite::pin_project! {
    /// A tracked task: its future, and the [`Exit`] dropped with it. A struct rather than an
    /// `async` block, which would hold the future twice (captured, then awaited) and so
    /// double the size of every connection's task.
    struct Tracked<F> {
        #[pin]
        task: F,
        _exit: Exit,
    }
}

impl<F: Future<Output = ()>> Future for Tracked<F> {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        self.project().task.poll(cx)
    }
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Option<Running>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open connections now.
    pub(crate) fn open(&self) -> u64 {
        self.open.load(Ordering::Acquire)
    }

    /// Reserves a place if fewer than `limit` are open.
    pub(crate) fn try_enter(&self, limit: u64) -> Option<Ticket> {
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        if before >= limit {
            self.release();
            return None;
        }
        Some(Ticket(()))
    }

    fn release(&self) {
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Runs the task `start` makes on its own tokio task in the place `ticket` reserved,
    /// giving it the cell it tells the tracker about itself through.
    pub(crate) fn spawn<F>(self: &Arc<Self>, ticket: Ticket, start: impl FnOnce(Arc<TaskCell>) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Ticket(()) = ticket; // the place it reserved is now released by `Exit`
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let exit = Exit { tracker: Arc::clone(self), id };
        let cell = Arc::new(TaskCell::default());
        let task = start(Arc::clone(&cell));
        // Not holding the lock while spawning: on a runtime that is shutting down, `spawn`
        // drops the task (and so `Exit`, which takes the lock) before returning.
        let handle = tokio::spawn(Tracked { task, _exit: exit });
        self.meet(id, Some(Running { abort: handle.abort_handle(), cell }));
    }

    /// Closes every connection on `backend` of the pool `pool`, marking each `drained`.
    /// Returns how many. Their tasks end (and their leases are released) as soon as the
    /// runtime gets to them.
    pub(crate) fn cut_backend(&self, pool: PoolKey, backend: lb_core::BackendId) -> usize {
        let tasks = self.lock();
        let mut cut = 0;
        for running in tasks.values().flatten() {
            if running.cell.is_on(pool, backend) {
                running.cell.drained.store(true, Ordering::Release);
                running.abort.abort();
                cut += 1;
            }
        }
        cut
    }

    /// The task's end and its registration by `spawn` meet here, in either order: whichever
    /// comes first leaves its entry (a marker `None` from the end, the abort handle from
    /// `spawn`), and the second removes it.
    fn meet(&self, id: u64, entry: Option<Running>) {
        match self.lock().entry(id) {
            Entry::Occupied(first) => {
                first.remove();
            }
            Entry::Vacant(slot) => {
                slot.insert(entry);
            }
        }
    }

    /// Counts an accept loop as running until the returned guard is dropped.
    pub(crate) fn accepting(self: &Arc<Self>) -> Accepting {
        self.accepting.fetch_add(1, Ordering::AcqRel);
        Accepting(Arc::clone(self))
    }

    /// Waits until no connection is open.
    pub(crate) async fn wait_idle(&self) {
        self.wait_until(|t| t.open() == 0).await;
    }

    /// Waits until `done` holds, looking again each time `idle` is told (the last connection
    /// ended, or the last accept loop stopped).
    async fn wait_until(&self, done: impl Fn(&Self) -> bool) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(self) {
                return;
            }
            notified.await;
        }
    }

    /// Lets open connections finish for up to `grace` (or until `cut_now` resolves), then
    /// aborts the rest and waits for them to be gone. Returns how many were cut.
    pub(crate) async fn drain(&self, grace: Duration, cut_now: impl Future<Output = ()>) -> usize {
        let idle = tokio::time::timeout(grace, async {
            tokio::select! {
                () = async {
                    self.wait_until(|t| t.accepting.load(Ordering::Acquire) == 0).await;
                    self.wait_idle().await;
                } => true,
                () = cut_now => false,
            }
        });
        if idle.await == Ok(true) {
            return 0;
        }
        let handles: Vec<AbortHandle> =
            self.lock().values().flatten().map(|r| r.abort.clone()).collect();
        for h in &handles {
            h.abort();
        }
        self.wait_idle().await;
        handles.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_that_end_at_once_leave_no_entry_behind() {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
        let tracker = Arc::new(Tracker::default());
        runtime.block_on(async {
            for _ in 0..10_000 {
                let ticket = tracker.try_enter(u64::MAX).unwrap();
                // Ends as soon as it runs, often before `spawn` has registered it.
                tracker.spawn(ticket, |_| async {});
            }
            tracker.wait_idle().await;
        });
        // Either order of end and registration leaves nothing behind.
        assert_eq!(tracker.open(), 0);
        assert!(tracker.lock().is_empty(), "{} entries left", tracker.lock().len());
    }

    #[test]
    fn tracking_a_task_adds_its_guard_not_a_second_copy() {
        let big = async {
            let buffer = [0u8; 1000];
            std::future::ready(()).await;
            assert_eq!(buffer[999], 0);
        };
        let exit = Exit { tracker: Arc::new(Tracker::default()), id: 0 };
        let task_size = std::mem::size_of_val(&big);
        let tracked = Tracked { task: big, _exit: exit };
        // The guard and alignment padding: far from twice the task.
        let size = std::mem::size_of_val(&tracked);
        assert!(size <= task_size + 32, "{size} for a task of {task_size}");
    }

    #[test]
    fn spawning_on_a_runtime_that_has_shut_down_does_not_deadlock() {
        let (done, finished) = std::sync::mpsc::channel();
        let tracker = Arc::new(Tracker::default());
        let in_thread = Arc::clone(&tracker);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().build().unwrap();
            let handle = runtime.handle().clone();
            // Wait until it is fully down: its task list is closed, so `spawn` drops a new task
            // at once, on this thread.
            runtime.shutdown_timeout(Duration::from_secs(10));
            let _entered = handle.enter();
            let ticket = in_thread.try_enter(u64::MAX).unwrap();
            // The runtime drops the task, and with it the `Exit` that takes the lock, inside
            // `spawn`.
            in_thread.spawn(ticket, |_| async {});
            let _ = done.send(());
        });
        finished.recv_timeout(Duration::from_secs(20)).expect("spawn returned");
        assert_eq!(tracker.open(), 0);
        assert!(tracker.lock().is_empty());
    }
}
