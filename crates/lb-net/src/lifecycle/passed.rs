//! Taking what another process left open for this one: listening sockets (from a predecessor
//! or from systemd) and the pipe on which a predecessor waits for `ready`.
//!
//! This is the crate's one place that turns descriptor numbers into owned descriptors, which
//! needs `unsafe`; [`adopt`] holds both blocks.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{BorrowedFd, FromRawFd as _, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use super::{ADMIN_KEY, INHERITED_FDS, READY_FD, UPGRADED_FROM};

/// Set once the environment's sockets were taken: a descriptor must have one owner, so a
/// second [`PassedSockets::take_from_env`] finds none.
static SOCKETS_TAKEN: AtomicBool = AtomicBool::new(false);
/// The same for the readiness pipe.
static READINESS_TAKEN: AtomicBool = AtomicBool::new(false);

/// Who a passed socket is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    /// A predecessor's listener of this name.
    Listener(String),
    /// A predecessor's admin endpoint.
    Admin,
    /// systemd's, with its `LISTEN_FDNAMES` name (`FileDescriptorName=`, by default the
    /// socket unit's name).
    Systemd(String),
}

#[derive(Debug)]
struct PassedSocket {
    owner: Owner,
    addr: SocketAddr,
    socket: TcpListener,
}

/// Listening sockets this process was started with, not yet claimed: a predecessor's
/// (`LB_INHERITED_FDS`) or systemd's (`LISTEN_FDS`).
///
/// Each listener [takes](Self::take_listener) the ones meant for it, the admin endpoint
/// [its own](Self::take_admin); what nobody claims is [closed](Self::close_unused).
#[derive(Debug, Default)]
pub struct PassedSockets {
    sockets: Vec<PassedSocket>,
}

/// Whether a passed socket bound to `have` serves a listener configured on `want`: the same
/// address, or the same IP when the configuration says port 0 (the port the listener had,
/// as a reload keeps it).
fn same_address(have: SocketAddr, want: SocketAddr) -> bool {
    have == want || (want.port() == 0 && have.ip() == want.ip())
}

impl PassedSockets {
    /// Takes the sockets named in the environment: `LB_INHERITED_FDS` (an upgrade) and
    /// systemd's `LISTEN_FDS`, read as `sd_listen_fds_with_names(3)` does (only if
    /// `LISTEN_PID` is this process). Each is marked close-on-exec and checked to be a
    /// listening TCP socket. The first call takes them; later calls find none.
    ///
    /// An error names the variable and the descriptor that is wrong.
    pub fn take_from_env() -> Result<PassedSockets, String> {
        if SOCKETS_TAKEN.swap(true, SeqCst) {
            return Ok(PassedSockets::default());
        }
        let mut seen = HashSet::new();
        let mut sockets = Vec::new();
        if let Ok(text) = std::env::var(INHERITED_FDS) {
            for entry in text.split(';').filter(|e| !e.is_empty()) {
                let bad = || format!("{INHERITED_FDS}: cannot read {entry:?} (NAME=FD,FD)");
                let (name, fds) = entry.split_once('=').ok_or_else(bad)?;
                let owner = match name {
                    ADMIN_KEY => Owner::Admin,
                    name => Owner::Listener(name.to_owned()),
                };
                for fd in fds.split(',') {
                    let fd: RawFd = fd.trim().parse().map_err(|_| bad())?;
                    let (socket, addr) = listening_socket(fd, &mut seen)
                        .map_err(|e| format!("{INHERITED_FDS}: {e}"))?;
                    sockets.push(PassedSocket { owner: owner.clone(), addr, socket });
                }
            }
        }
        let systemd = sd_notify::listen_fds_with_names()
            .map_err(|e| format!("LISTEN_FDS from systemd: {e}"))?;
        for (fd, name) in systemd {
            let (socket, addr) = listening_socket(fd, &mut seen)
                .map_err(|e| format!("LISTEN_FDS from systemd: {e}"))?;
            sockets.push(PassedSocket { owner: Owner::Systemd(name), addr, socket });
        }
        Ok(PassedSockets { sockets })
    }

    /// Whether no socket is left.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// Takes every socket meant for the listener `name` configured on `addr`: a
    /// predecessor's listener of that name on that address (port 0: any port of that IP),
    /// and systemd's sockets named `name` in `LISTEN_FDNAMES` or bound to exactly that
    /// address.
    /// Empty if none is: the listener binds its own.
    pub fn take_listener(&mut self, name: &str, addr: SocketAddr) -> Vec<TcpListener> {
        self.take(|s| match &s.owner {
            Owner::Listener(n) => n == name && same_address(s.addr, addr),
            Owner::Systemd(n) => n == name || s.addr == addr,
            Owner::Admin => false,
        })
    }

    /// Takes the admin endpoint's socket for `addr`: the predecessor's admin socket (port 0:
    /// any port of that IP), or a systemd socket bound to exactly that address.
    pub fn take_admin(&mut self, addr: SocketAddr) -> Option<TcpListener> {
        let mut taken = self.take(|s| match &s.owner {
            Owner::Admin => same_address(s.addr, addr),
            Owner::Systemd(_) => s.addr == addr,
            Owner::Listener(_) => false,
        });
        // Several would be a systemd configuration passing the same address twice: one is
        // enough, the rest close.
        (!taken.is_empty()).then(|| taken.swap_remove(0))
    }

    /// Closes every socket nobody took (a listener no longer in the configuration), and
    /// says which, one description each (`listener web on 0.0.0.0:443`).
    pub fn close_unused(&mut self) -> Vec<String> {
        std::mem::take(&mut self.sockets)
            .into_iter()
            .map(|s| match s.owner {
                Owner::Listener(name) => format!("listener {name} on {}", s.addr),
                Owner::Admin => format!("admin endpoint on {}", s.addr),
                Owner::Systemd(name) => format!("systemd socket {name} on {}", s.addr),
            })
            .collect()
    }

    fn take(&mut self, mut wanted: impl FnMut(&PassedSocket) -> bool) -> Vec<TcpListener> {
        let (taken, kept) = std::mem::take(&mut self.sockets).into_iter().partition(&mut wanted);
        self.sockets = kept;
        taken.into_iter().map(|s: PassedSocket| s.socket).collect()
    }
}

/// Takes descriptor `fd` as a listening TCP socket (non-blocking, close-on-exec), with the
/// address it is bound to.
fn listening_socket(
    fd: RawFd,
    seen: &mut HashSet<RawFd>,
) -> Result<(TcpListener, SocketAddr), String> {
    if !seen.insert(fd) {
        return Err(format!("descriptor {fd} is named twice"));
    }
    let socket = socket2::Socket::from(adopt(fd)?);
    let not = |why: String| format!("descriptor {fd} is not a listening TCP socket ({why})");
    let kind = socket.r#type().map_err(|e| not(e.to_string()))?;
    if kind != socket2::Type::STREAM || !socket.is_listener().map_err(|e| not(e.to_string()))? {
        return Err(not("not listening".into()));
    }
    let addr = socket.local_addr().map_err(|e| not(e.to_string()))?;
    let addr = addr.as_socket().ok_or_else(|| not("not an IP socket".into()))?;
    socket.set_nonblocking(true).map_err(|e| format!("descriptor {fd}: {e}"))?;
    Ok((socket.into(), addr))
}

/// Takes ownership of descriptor `fd`, which the process that started this one left open
/// for it, and marks it close-on-exec (so it is not leaked to processes started later,
/// which get their own copies explicitly).
#[allow(unsafe_code)]
fn adopt(fd: RawFd) -> Result<OwnedFd, String> {
    if fd < 3 {
        return Err(format!("descriptor {fd} is standard input, output or error"));
    }
    // SAFETY: the borrow lives for the two fcntl calls only. If `fd` is not open they fail
    // with EBADF, which is all we ask of them; no memory is touched through it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    rustix::io::fcntl_getfd(borrowed).map_err(|e| format!("descriptor {fd}: {e}"))?;
    rustix::io::fcntl_setfd(borrowed, rustix::io::FdFlags::CLOEXEC)
        .map_err(|e| format!("descriptor {fd}: {e}"))?;
    // SAFETY: `fd` is open (fcntl succeeded) and was left open for this process by the one
    // that started it, which named it in the environment. Nothing else in this process owns
    // it: descriptors are taken from the environment once (SOCKETS_TAKEN, READINESS_TAKEN),
    // each number once (the caller's `seen`), never 0 to 2 (std's), and before the
    // process opens anything that could have been given the same number.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The predecessor's process id, when this process was started by an upgrade.
pub(crate) fn upgraded_from() -> Option<u32> {
    std::env::var(UPGRADED_FROM).ok().and_then(|v| v.parse().ok())
}

/// How a process started by an upgrade tells its predecessor that it serves (`ready`) or
/// cannot (`error: WHY`), over the pipe in `LB_UPGRADE_READY_FD`. Without one (not an
/// upgrade) it does nothing. Clones share the pipe; the first report closes it.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    pipe: Arc<Mutex<Option<File>>>,
    from: Option<u32>,
}

impl Readiness {
    /// Takes the pipe named in `LB_UPGRADE_READY_FD`, if any (the first call only).
    pub fn take_from_env() -> Result<Readiness, String> {
        if READINESS_TAKEN.swap(true, SeqCst) {
            return Ok(Readiness::default());
        }
        let Ok(text) = std::env::var(READY_FD) else { return Ok(Readiness::default()) };
        let fd: RawFd =
            text.trim().parse().map_err(|_| format!("{READY_FD}: not a descriptor: {text:?}"))?;
        let pipe = File::from(adopt(fd).map_err(|e| format!("{READY_FD}: {e}"))?);
        Ok(Readiness { pipe: Arc::new(Mutex::new(Some(pipe))), from: upgraded_from() })
    }

    /// The predecessor's process id, if a predecessor waits for this process.
    pub fn upgrading_from(&self) -> Option<u32> {
        self.from.filter(|_| self.pipe.lock().is_ok_and(|p| p.is_some()))
    }

    /// Whether a predecessor waits for a report.
    pub fn is_upgrade(&self) -> bool {
        self.pipe.lock().is_ok_and(|p| p.is_some())
    }

    /// Reports that this process serves: the predecessor may stop accepting.
    pub fn ready(&self) {
        self.report("ready");
    }

    /// Reports why this process cannot serve (one line): the predecessor keeps serving.
    pub fn failed(&self, why: &str) {
        let line = why.lines().map(str::trim).collect::<Vec<_>>().join(" ");
        self.report(&format!("error: {line}"));
    }

    fn report(&self, line: &str) {
        let pipe = self.pipe.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut pipe) = pipe {
            // A predecessor that gave up waiting has closed its end: nothing to tell.
            if let Err(e) = writeln!(pipe, "{line}") {
                tracing::warn!(error = %e, "cannot report to the process that started this one");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passed(owner: Owner) -> PassedSocket {
        let socket = TcpListener::bind("127.0.0.1:0").unwrap();
        PassedSocket { owner, addr: socket.local_addr().unwrap(), socket }
    }

    #[test]
    fn sockets_go_to_the_listener_of_their_name_and_address_and_the_rest_close() {
        let web = passed(Owner::Listener("web".into()));
        let web2 = PassedSocket { socket: web.socket.try_clone().unwrap(), ..passed(Owner::Admin) };
        let web2 = PassedSocket { owner: Owner::Listener("web".into()), addr: web.addr, ..web2 };
        let admin = passed(Owner::Admin);
        let old = passed(Owner::Listener("old".into()));
        let systemd = passed(Owner::Systemd("lb.socket".into()));
        let named = passed(Owner::Systemd("api".into()));
        let (web_addr, admin_addr, systemd_addr) = (web.addr, admin.addr, systemd.addr);
        let mut sockets = PassedSockets { sockets: vec![web, web2, admin, old, systemd, named] };

        // The name alone is not enough: a listener moved to another address binds anew.
        assert!(sockets.take_listener("web", "127.0.0.1:1".parse().unwrap()).is_empty());
        // Port 0 in the configuration keeps the port the listener had.
        assert_eq!(sockets.take_listener("web", "127.0.0.1:0".parse().unwrap()).len(), 2);
        assert!(sockets.take_listener("web", web_addr).is_empty(), "taken once");
        // The admin endpoint's socket is no listener's, even on a matching address.
        assert!(sockets.take_listener("other", admin_addr).is_empty());
        assert!(sockets.take_admin(admin_addr).is_some());
        // systemd's: by address, or by name wherever bound.
        assert_eq!(sockets.take_listener("https", systemd_addr).len(), 1);
        assert_eq!(sockets.take_listener("api", "10.0.0.1:443".parse().unwrap()).len(), 1);
        let closed = sockets.close_unused();
        assert_eq!(closed.len(), 1);
        assert!(closed[0].starts_with("listener old on 127.0.0.1:"), "{closed:?}");
        assert!(sockets.is_empty());
    }

    #[test]
    fn descriptors_that_are_not_listening_tcp_sockets_are_refused() {
        let mut seen = HashSet::new();
        assert!(listening_socket(1, &mut seen).unwrap_err().contains("standard"));
        let bound = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(bound);
        let e = listening_socket(fd, &mut seen).unwrap_err();
        assert!(e.contains("not a listening TCP socket"), "{e}");
        // Taken (and closed) all the same: the number is not offered twice.
        assert!(listening_socket(fd, &mut seen).unwrap_err().contains("named twice"));
    }
}
