//! How the proxy and the health checker reach a backend: the [`Connector`] trait, the real
//! [`TcpConnector`], the [`ByteStream`] trait every relayed stream implements, and (with the
//! `test-util` feature) an in-memory `MemoryConnector` for tests.
//!
//! Timeouts are not the connector's business: the proxy and the checker wrap every `connect`
//! in their own timeout, so a backend that hangs is handled the same way whichever connector is
//! in use (the in-memory one can hang on purpose).

#[cfg(any(test, feature = "test-util"))]
mod memory;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::accept::Backoff;
use crate::stream::TcpConn;

#[cfg(any(test, feature = "test-util"))]
pub use memory::{Behavior, MemoryConnector, MemoryListener, MemoryStream};

/// A byte stream the balancer relays: a client's connection or a backend's.
///
/// Anything readable and writable will do; implementing it is one line
/// (`impl ByteStream for MyStream {}`). The methods are opt-ins: a stream that is a TCP
/// socket says so, and between two TCP sockets the relay moves bulk data with `splice(2)` on
/// Linux, kernel to kernel, instead of copying it through a buffer, and the io_uring engine
/// relays on its ring.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// This stream as a TCP socket, if it is one. The default, `None`, relays through a
    /// buffer, which is right for everything else (TLS streams, Unix sockets, pipes).
    fn as_tcp(&self) -> Option<&TcpStream> {
        None
    }

    /// The descriptor of this stream's TCP socket, if it is one, for an engine that does its
    /// own I/O on it (the io_uring relay, which then leaves the stream alone until it is
    /// done). Unlike [`as_tcp`](Self::as_tcp), asking must not make the stream join tokio's
    /// reactor ([`TcpConn`](crate::TcpConn) does not). The default is `as_tcp`'s socket.
    #[cfg(unix)]
    fn tcp_fd(&self) -> Option<std::os::fd::RawFd> {
        self.as_tcp().map(std::os::fd::AsRawFd::as_raw_fd)
    }

    /// The local address of this stream's TCP socket (the address a client reached), for a
    /// PROXY header; like [`tcp_fd`](Self::tcp_fd), asking must not register the stream.
    /// The default is `as_tcp`'s.
    fn tcp_local_addr(&self) -> Option<SocketAddr> {
        self.as_tcp()?.local_addr().ok()
    }

    /// Makes closing this stream abortive (a TCP reset) rather than an orderly end of stream.
    /// The relay asks it of one side when the other failed, typically reset, so that a peer
    /// whose transfer was cut short learns it, as it would from the failed side itself, instead
    /// of taking the end of stream for a complete answer. The default does it through
    /// [`as_tcp`](Self::as_tcp), and nothing for other streams.
    fn abort_on_close(&self) {
        if let Some(tcp) = self.as_tcp() {
            let _ = socket2::SockRef::from(tcp).set_linger(Some(std::time::Duration::ZERO));
        }
    }
}

impl ByteStream for TcpStream {
    fn as_tcp(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

#[cfg(unix)]
impl ByteStream for tokio::net::UnixStream {}

impl ByteStream for tokio::io::DuplexStream {}

/// Opens byte streams to backends.
pub trait Connector: Send + Sync + 'static {
    /// The stream to a backend.
    type Stream: ByteStream;

    /// Connects to `addr`. An error is a failed attempt: it counts as a passive health failure
    /// and the proxy retries another backend, unless [`is_local_exhaustion`] says the balancer
    /// itself ran out of resources, which says nothing about the backend.
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    /// Connects to `addr` unless `deadline` passes first (then `None`). The proxy connects
    /// through this. The default runs [`connect`](Self::connect) under a tokio timer; a
    /// connector that can bound the attempt more cheaply itself overrides it
    /// ([`TcpConnector`] does on the io_uring engine, where the kernel times the connect).
    fn connect_by(
        &self,
        addr: SocketAddr,
        deadline: Instant,
    ) -> impl Future<Output = Option<io::Result<Self::Stream>>> + Send {
        async move { tokio::time::timeout_at(deadline, self.connect(addr)).await.ok() }
    }
}

/// Whether `e` means this process or host ran out of something a connection needs (file
/// descriptors, local ports, kernel buffers or memory) rather than the peer failing.
///
/// Such an error must not count against a backend: under a flood of connections every connect
/// would fail this way, and blaming the backends would take every one of them down at once. The
/// proxy instead waits for resources to free up (within the connect timeout) and the health
/// checker skips the check.
pub fn is_local_exhaustion(e: &io::Error) -> bool {
    if matches!(e.kind(), io::ErrorKind::OutOfMemory | io::ErrorKind::AddrNotAvailable) {
        return true;
    }
    #[cfg(unix)]
    {
        use rustix::io::Errno;
        let errno = Errno::from_io_error(e);
        if matches!(errno, Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)) {
            return true;
        }
    }
    false
}

/// Connects to `addr` through `connector` within `timeout`. A local resource shortage (see
/// [`is_local_exhaustion`]) is waited out rather than reported at once: descriptors and ports
/// come back as other connections end, so under a brief flood a client waits a little instead
/// of losing its connection. Waited out for [`LOCAL_WAIT_MAX`] at most, however long the
/// connect timeout: a connection waiting holds its client's descriptor, and one whose client
/// has gone would hold it for nothing.
pub(crate) async fn connect_within<C: Connector>(
    connector: &C,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<C::Stream, ConnectError> {
    let start = Instant::now();
    let deadline = crate::time::deadline(start, timeout);
    let local_deadline = crate::time::deadline(start, LOCAL_WAIT_MAX.min(timeout));
    let (min, max) = LOCAL_RETRY_PAUSE;
    let mut backoff = Backoff::new(min, max);
    loop {
        match connector.connect_by(addr, deadline).await {
            Some(Ok(stream)) => return Ok(stream),
            Some(Err(e)) if is_local_exhaustion(&e) => {
                // The spare splice pipes' descriptors go first.
                #[cfg(target_os = "linux")]
                crate::splice::Pipe::release_spares();
                if Instant::now() + backoff.pause() >= local_deadline {
                    return Err(ConnectError::Local(e));
                }
                tokio::time::sleep(backoff.advance()).await;
            }
            Some(Err(e)) => return Err(ConnectError::Backend(e)),
            None => return Err(ConnectError::TimedOut),
        }
    }
}

/// Why a connect to a backend failed.
pub(crate) enum ConnectError {
    /// The backend refused, reset, or was unreachable.
    Backend(io::Error),
    /// No answer within the connect timeout.
    TimedOut,
    /// The balancer had no descriptor, port or memory to connect with, for the whole timeout.
    Local(io::Error),
}

/// Longest wait for a descriptor, port or memory to connect with (or the connect timeout, if
/// shorter): a shortage that lasts longer is not a brief flood, and the client is better told.
pub(crate) const LOCAL_WAIT_MAX: Duration = Duration::from_secs(5);

/// First and longest pause before trying again to connect after a local resource shortage.
const LOCAL_RETRY_PAUSE: (Duration, Duration) =
    (Duration::from_millis(5), Duration::from_millis(100));

/// Plain TCP, with `TCP_NODELAY` set: a balancer relays whatever it has at once, and Nagle's
/// algorithm would hold small writes back for up to 40 ms waiting for an ACK.
///
/// Its streams are [`TcpConn`]s. On a worker thread whose io_uring engine is running, the
/// connect is made on the ring and the stream is not registered with epoll unless something
/// reads it through tokio (see [`TcpConn`]); elsewhere it connects as `TcpStream::connect`
/// does.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    type Stream = TcpConn;

    /// Connects with epoll readiness, with no `getsockopt` after a successful connect (see
    /// `connect_with_epoll`).
    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpConn> {
        connect_with_epoll(backend_socket(addr)?, addr).await
    }

    /// On a worker thread whose io_uring engine runs, connects on the ring, timed by the
    /// kernel (a linked timeout): no epoll registration, no readiness event, no tokio timer
    /// (whose arming wakes the runtime's driver with a system call when it is the earliest).
    /// Elsewhere as [`connect`](Self::connect) under a tokio timer.
    async fn connect_by(&self, addr: SocketAddr, deadline: Instant) -> Option<io::Result<TcpConn>> {
        let socket = match backend_socket(addr) {
            Ok(socket) => socket,
            Err(e) => return Some(Err(e)),
        };
        #[cfg(target_os = "linux")]
        {
            let limit = deadline.saturating_duration_since(Instant::now());
            if let Some(connecting) = crate::uring::connect(&socket, addr, limit) {
                return match connecting.await {
                    crate::uring::Connected::Yes => Some(Ok(TcpConn::unregistered(socket.into()))),
                    crate::uring::Connected::Failed(e) => Some(Err(e)),
                    crate::uring::Connected::TimedOut => None,
                };
            }
        }
        tokio::time::timeout_at(deadline, connect_with_epoll(socket, addr)).await.ok()
    }
}

/// A backend socket: non-blocking, `TCP_NODELAY` set before the connect.
fn backend_socket(addr: SocketAddr) -> io::Result<socket2::Socket> {
    let socket = nonblocking_socket(addr)?;
    socket.set_nodelay(true)?;
    crate::congestion::apply_for_backend(&socket, addr);
    Ok(socket)
}

/// Connects `socket` as `TcpStream::connect` does, with one system call fewer: the outcome is
/// read from the readiness event the connect ends with rather than asked with
/// `getsockopt(SO_ERROR)` every time. A failed connect is the only way a socket not yet used
/// becomes write-closed (hung up), so only then is the error fetched.
async fn connect_with_epoll(socket: socket2::Socket, addr: SocketAddr) -> io::Result<TcpConn> {
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if in_progress(&e) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(socket.into())?;
    let ready = stream.ready(tokio::io::Interest::WRITABLE).await?;
    if ready.is_write_closed() {
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
    }
    Ok(TcpConn::from(stream))
}

/// A TCP socket for `addr`, non-blocking from its creation where the system allows it (one
/// system call), else set so afterwards.
fn nonblocking_socket(addr: SocketAddr) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = Domain::for_address(addr);
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    let socket = Socket::new(domain, Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    let socket = {
        let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
        socket.set_nonblocking(true)?;
        socket
    };
    Ok(socket)
}

/// Whether a non-blocking `connect` failed only in that the handshake is still going on.
fn in_progress(e: &io::Error) -> bool {
    #[cfg(unix)]
    if rustix::io::Errno::from_io_error(e) == Some(rustix::io::Errno::INPROGRESS) {
        return true;
    }
    e.kind() == io::ErrorKind::WouldBlock
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_local_exhaustion_from_backend_failures() {
        #[cfg(unix)]
        for errno in [rustix::io::Errno::MFILE, rustix::io::Errno::NFILE, rustix::io::Errno::NOBUFS]
        {
            let e = io::Error::from_raw_os_error(errno.raw_os_error());
            assert!(is_local_exhaustion(&e), "{e}");
        }
        assert!(is_local_exhaustion(&io::Error::from(io::ErrorKind::AddrNotAvailable)));
        assert!(is_local_exhaustion(&io::Error::from(io::ErrorKind::OutOfMemory)));
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::TimedOut,
            io::ErrorKind::HostUnreachable,
        ] {
            assert!(!is_local_exhaustion(&io::Error::from(kind)), "{kind:?}");
        }
    }

    /// A backend connection on loopback, made by either connect, has the algorithm
    /// `congestion` chooses for it (checked with the kernel: what the connected socket has).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn backend_connections_get_their_congestion_control() {
        let Ok(system) = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        else {
            return;
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let expected = crate::congestion::for_backend(addr).unwrap_or(system.trim());
        let far = Instant::now() + std::time::Duration::from_secs(10);
        let by_epoll = TcpConnector.connect(addr).await.unwrap();
        let by_deadline = TcpConnector.connect_by(addr, far).await.unwrap().unwrap();
        for conn in [&by_epoll, &by_deadline] {
            let name = conn.with_socket(|s| s.tcp_congestion()).unwrap();
            assert_eq!(String::from_utf8_lossy(&name).trim_end_matches('\0'), expected);
        }
    }
}
