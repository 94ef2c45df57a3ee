//! `lb`'s process lifecycle, wired to lb-net's [`lb_net::lifecycle`]: where the listening
//! sockets come from (a predecessor, systemd, or bound here), the `upgrade` command and
//! SIGUSR2, and what systemd is told (ready, reloading, stopping, status, watchdog).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_net::lifecycle::{start_successor, Notifier, PassedSockets, Readiness, READY_TIMEOUT};
use lb_net::{Command, Handle};
use tokio::signal::unix::Signal;
use tokio::sync::watch;

use crate::services::ListenSpec;

/// How often systemd's status line is refreshed (more often when the watchdog wants pings).
const STATUS_INTERVAL: Duration = Duration::from_secs(5);

/// What this process was started as and with: the program and arguments an upgrade starts
/// again, the sockets passed to it, and the channels to its predecessor and to systemd.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    /// Sockets from a predecessor or systemd not claimed yet.
    pub(crate) passed: PassedSockets,
    /// The predecessor waiting for `ready`, if this process was started by an upgrade.
    pub(crate) readiness: Readiness,
    pub(crate) notifier: Notifier,
    pub(crate) exec: Exec,
}

/// The program and arguments an upgrade runs: the path this process was started from,
/// resolved once at start-up (after a new binary is installed over it, `/proc/self/exe`
/// reads "... (deleted)", while the path names the new binary), and the same arguments.
#[derive(Debug, Clone)]
pub(crate) struct Exec {
    pub(crate) program: Result<PathBuf, String>,
    pub(crate) args: Vec<OsString>,
}

impl Exec {
    /// This process's program path and arguments.
    pub(crate) fn current() -> Exec {
        let program = std::env::current_exe()
            .map_err(|e| format!("cannot tell which program this process runs: {e}"));
        Exec { program, args: std::env::args_os().skip(1).collect() }
    }
}

impl Lifecycle {
    /// The listening sockets of the listener `spec` on `addr`, one per worker: the passed ones
    /// meant for it if any (all of them, even more than `workers`: closing one would drop the
    /// connections queued on it), else bound here.
    pub(crate) fn listener_sockets(
        &mut self,
        spec: &ListenSpec,
        addr: SocketAddr,
        workers: usize,
    ) -> Result<Vec<std::net::TcpListener>, String> {
        let mut sockets = self.passed.take_listener(&spec.config.name, addr);
        let Some(first) = sockets.first() else { return spec.bind(addr, workers) };
        let local = first.local_addr().map_err(|e| spec.about(e))?;
        tracing::info!(listener = %spec.config.name, address = %local, sockets = sockets.len(), "taking over passed listening sockets");
        // More workers than sockets: more sockets on the same port. Without bind_shared's
        // check, which fails while the predecessor holds the port, as it does now. A socket
        // systemd bound without ReusePort= cannot be joined: then workers share sockets.
        let passed = sockets.len();
        while sockets.len() < workers {
            match lb_net::bind(local, true) {
                Ok(socket) => sockets.push(socket),
                Err(e) => {
                    tracing::info!(listener = %spec.config.name, error = %e, "cannot add a socket beside the passed ones; workers share them");
                    break;
                }
            }
        }
        for i in sockets.len()..workers {
            let shared = sockets[i % passed].try_clone().map_err(|e| spec.about(e))?;
            sockets.push(shared);
        }
        Ok(sockets)
    }

    /// The admin endpoint's socket on `addr`, if one was passed.
    pub(crate) fn admin_socket(&mut self, addr: SocketAddr) -> Option<std::net::TcpListener> {
        self.passed.take_admin(addr)
    }

    /// Everything is listening: closes the passed sockets nobody took, tells systemd (with
    /// `MAINPID=` after an upgrade) and then the predecessor, which stops accepting.
    pub(crate) fn ready(&mut self, handle: &Handle) {
        for unused in self.passed.close_unused() {
            tracing::info!("closed a passed socket no longer configured: {unused}");
        }
        let upgraded = self.readiness.upgrading_from();
        self.notifier.ready(&status_line(handle), upgraded.is_some());
        if let Some(pid) = upgraded {
            tracing::info!(predecessor = pid, "upgrade: serving; the old process stops accepting");
        }
        self.readiness.ready();
    }
}

/// One line for systemd's status: `3 of 3 backends available, 12 connections open`.
pub(crate) fn status_line(handle: &Handle) -> String {
    // Not `stats()`: at 10,000 backends that copies every counter, check and reason, a
    // good part of a reload's time, for three numbers.
    let summary = handle.summary();
    let state = if handle.is_shutting_down() { "stopping: " } else { "" };
    format!(
        "{state}{} of {} backends available, {} connections open",
        summary.available, summary.backends, summary.open
    )
}

/// Keeps systemd's status line current and pings its watchdog (at half of `WatchdogSec=`),
/// until the process ends; says `STOPPING=1` once shutdown begins (not after an upgrade:
/// then the successor is the service). Nothing without `NOTIFY_SOCKET`.
pub(crate) async fn notify_systemd(handle: Handle, notifier: Notifier) {
    if !notifier.is_enabled() {
        return;
    }
    let watchdog = notifier.watchdog_interval();
    let every = watchdog.map_or(STATUS_INTERVAL, |w| w.min(STATUS_INTERVAL));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = std::pin::pin!(handle.shutdown_requested());
    let mut said_stopping = false;
    loop {
        tokio::select! {
            () = &mut stopping, if !said_stopping => {
                said_stopping = true;
                notifier.stopping();
            }
            _ = ticks.tick() => {
                if watchdog.is_some() {
                    notifier.watchdog();
                }
                notifier.status(&status_line(&handle));
            }
        }
    }
}

/// What `upgrade` (and SIGUSR2) runs.
#[derive(Debug)]
pub(crate) struct Upgrader {
    pub(crate) exec: Exec,
    pub(crate) handle: Handle,
    pub(crate) notifier: Notifier,
    /// A second descriptor of the admin endpoint's socket, once it listens.
    pub(crate) admin: Mutex<Option<std::net::TcpListener>>,
    /// Turned on when a successor took over: the admin endpoint stops accepting.
    pub(crate) handed_over: watch::Sender<bool>,
    /// One upgrade at a time.
    pub(crate) busy: tokio::sync::Mutex<()>,
}

impl Upgrader {
    pub(crate) fn new(exec: Exec, handle: Handle, notifier: Notifier) -> Upgrader {
        Upgrader {
            exec,
            handle,
            notifier,
            admin: Mutex::new(None),
            handed_over: watch::channel(false).0,
            busy: tokio::sync::Mutex::new(()),
        }
    }

    /// Resolves once a successor took over.
    pub(crate) fn handed_over(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut handed_over = self.handed_over.subscribe();
        async move {
            let _ = handed_over.wait_for(|&done| done).await;
        }
    }

    /// Starts the successor with every listening socket; once it is ready, stops accepting
    /// and shuts down gracefully. An error leaves this process serving as before.
    pub(crate) async fn upgrade(&self) -> Result<String, lb_net::Error> {
        let fail = lb_net::Error::Upgrade;
        let Ok(_one) = self.busy.try_lock() else {
            return Err(fail("an upgrade is already under way".into()));
        };
        if self.handle.is_shutting_down() {
            return Err(lb_net::Error::ShuttingDown);
        }
        let program = self.exec.program.clone().map_err(fail)?;
        let listeners = self.handle.listening_sockets()?;
        let admin = {
            let admin = self.admin.lock().unwrap_or_else(|p| p.into_inner());
            admin.as_ref().map(std::net::TcpListener::try_clone).transpose()
        };
        let admin = admin.map_err(|e| fail(format!("cannot hand over the admin socket: {e}")))?;
        tracing::info!(program = %program.display(), "upgrade: starting a new process");
        let successor =
            start_successor(&program, &self.exec.args, &listeners, admin.as_ref(), READY_TIMEOUT)
                .await?;
        drop((listeners, admin));
        // The successor is the service now: systemd hears from it alone.
        self.notifier.retire();
        self.handed_over.send_replace(true);
        let open = self.handle.stats().proxy.open;
        let own = std::process::id();
        tracing::info!(
            successor = successor.pid,
            open,
            "upgrade: process {} serves; no longer accepting, exiting once the open connections end",
            successor.pid
        );
        self.handle.shutdown();
        Ok(format!(
            "upgraded: process {} serves now; this process ({own}) no longer accepts and exits \
             once its {open} open connections end",
            successor.pid
        ))
    }
}

/// Each SIGUSR2 runs `upgrade`, as typed at the prompt: the same answer (printed unless
/// quiet) and the same log line (target `lb::control`).
pub(crate) async fn upgrade_on_usr2(mut usr2: Signal, handle: Handle, quiet: bool) {
    while usr2.recv().await.is_some() {
        tracing::info!("SIGUSR2: upgrading");
        let answer = match handle.execute_command(Command::Upgrade).await {
            Ok(reply) => reply.to_string(),
            Err(e) => format!("error: {e}"),
        };
        if !quiet {
            out!("SIGUSR2: {answer}");
        }
    }
}

/// The reload hook with systemd told around it: `RELOADING=1`, then `READY=1` with the
/// status line (whether the reload worked or not: the service runs either way).
pub(crate) fn notify_around_reload(
    reload: lb_net::Reloader,
    notifier: Notifier,
    handle: Handle,
) -> lb_net::Reloader {
    Arc::new(move || {
        let (reload, notifier, handle) = (reload.clone(), notifier.clone(), handle.clone());
        Box::pin(async move {
            notifier.reloading();
            let result = reload().await;
            let status = match &result {
                Ok(_) => status_line(&handle),
                Err(e) => format!(
                    "{}; {}",
                    e.to_string().lines().next().unwrap_or(""),
                    status_line(&handle)
                ),
            };
            notifier.ready(&status, false);
            result
        })
    })
}
