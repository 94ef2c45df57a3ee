//! systemd's notification protocol (`sd_notify(3)`): `Type=notify` services say when they
//! are ready, reloading and stopping, a status line, and watchdog pings.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

/// Tells systemd (the socket in `NOTIFY_SOCKET`) what this process is doing. Without
/// `NOTIFY_SOCKET` every method does nothing. Clones share one switch: after
/// [`retire`](Self::retire) (a successor took over) nothing more is sent, so the old process
/// of an upgrade never tells systemd that the service is stopping.
#[derive(Debug, Clone)]
pub struct Notifier {
    enabled: bool,
    retired: Arc<AtomicBool>,
}

impl Notifier {
    /// A notifier for the service manager named in `NOTIFY_SOCKET`, if any.
    pub fn from_env() -> Notifier {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty());
        Notifier { enabled, retired: Arc::new(AtomicBool::new(false)) }
    }

    /// Whether anything is sent at all.
    pub fn is_enabled(&self) -> bool {
        self.enabled && !self.retired.load(SeqCst)
    }

    /// `READY=1` with a status line: the service is up. After an upgrade (`main_pid`) also
    /// `MAINPID=` this process, so systemd follows it as the service's main process (which
    /// systemd accepts from it with `NotifyAccess=all`).
    pub fn ready(&self, status: &str, main_pid: bool) {
        let pid = std::process::id();
        let mut states = vec![NotifyState::Ready, NotifyState::Status(status)];
        if main_pid {
            states.insert(0, NotifyState::MainPid(pid));
        }
        self.send(&states);
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=` (which systemd 253 and later require with it): a
    /// reload began. [`ready`](Self::ready) ends it.
    pub fn reloading(&self) {
        let mut states = vec![NotifyState::Reloading];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        self.send(&states);
    }

    /// `STOPPING=1`: shutdown began.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// `STATUS=` one line.
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// `WATCHDOG=1`: still alive.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// How often to ping the watchdog: half of `WATCHDOG_USEC` (as `sd_watchdog_enabled(3)`
    /// advises), if systemd set one for this process.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        sd_notify::watchdog_enabled().filter(|_| self.enabled).map(|d| d / 2)
    }

    /// Sends nothing from now on: another process is the service now.
    pub fn retire(&self) {
        self.retired.store(true, SeqCst);
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.is_enabled() {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
        }
    }
}
