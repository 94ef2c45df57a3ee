//! systemd's notification protocol (`sd_notify(3)`): `Type=notify` services say when they
//! are ready, reloading and stopping, a status line, and watchdog pings.
//!
//! Messages go out on a non-blocking socket: a notification socket that nobody reads (a
//! stalled or misconfigured manager) loses the messages it has no room for, with a warning,
//! instead of stalling the control thread that sends them. The `sd-notify` crate formats them;
//! its own `notify` sends on a blocking socket.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io;
use std::os::unix::net::UnixDatagram;
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
    /// The socket `NOTIFY_SOCKET` names, if it names one.
    socket: Option<OsString>,
    retired: Arc<AtomicBool>,
    /// Whether a message was lost for want of room, so that the warning is logged once.
    dropped: Arc<AtomicBool>,
}

impl Notifier {
    /// A notifier for the service manager named in `NOTIFY_SOCKET`, if any.
    pub fn from_env() -> Notifier {
        Notifier::to(std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()))
    }

    fn to(socket: Option<OsString>) -> Notifier {
        Notifier {
            socket,
            retired: Arc::new(AtomicBool::new(false)),
            dropped: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether anything is sent at all.
    pub fn is_enabled(&self) -> bool {
        self.socket.is_some() && !self.retired.load(SeqCst)
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
        sd_notify::watchdog_enabled().filter(|_| self.socket.is_some()).map(|d| d / 2)
    }

    /// Sends nothing from now on: another process is the service now.
    pub fn retire(&self) {
        self.retired.store(true, SeqCst);
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        let Some(path) = self.socket.as_ref().filter(|_| self.is_enabled()) else { return };
        let mut message = String::new();
        for state in states {
            let _ = writeln!(message, "{state}");
        }
        let sent = UnixDatagram::unbound().and_then(|socket| {
            socket.set_nonblocking(true)?;
            socket.connect(path)?;
            socket.send(message.as_bytes())
        });
        match sent {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !self.dropped.swap(true, SeqCst) {
                    tracing::warn!(
                        "systemd is not reading its notification socket (NOTIFY_SOCKET): \
                         notifications are dropped until it does"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_nobody_reads_never_blocks_the_sender() {
        let dir = std::env::temp_dir().join(format!("lb-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let manager = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::to(Some(path.clone().into()));
        // Far more messages than the socket's queue holds: with a blocking send, this thread
        // would stop at the first one without room.
        let (done, finished) = std::sync::mpsc::channel();
        let sender = notifier.clone();
        std::thread::spawn(move || {
            for _ in 0..5_000 {
                sender.watchdog();
            }
            done.send(()).unwrap();
        });
        finished
            .recv_timeout(Duration::from_secs(30))
            .expect("5,000 notifications to a full socket return at once");
        assert!(notifier.dropped.load(SeqCst), "the overflow was noticed");
        // The messages that fit were delivered, in the protocol's form.
        let mut buf = [0u8; 64];
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1\n");
        drop(manager);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
