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

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

#[cfg(any(test, feature = "test-util"))]
pub use memory::{Behavior, MemoryConnector, MemoryListener, MemoryStream};

/// A byte stream the balancer relays: a client's connection or a backend's.
///
/// Anything readable and writable will do; implementing it is one line
/// (`impl ByteStream for MyStream {}`). The one method is an opt-in: a stream that is a TCP
/// socket says so, and between two TCP sockets the relay moves bulk data with `splice(2)` on
/// Linux, kernel to kernel, instead of copying it through a buffer.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// This stream as a TCP socket, if it is one. The default, `None`, relays through a
    /// buffer, which is right for everything else (TLS streams, Unix sockets, pipes).
    fn as_tcp(&self) -> Option<&TcpStream> {
        None
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

/// Plain TCP, with `TCP_NODELAY` set: a balancer relays whatever it has at once, and Nagle's
/// algorithm would hold small writes back for up to 40 ms waiting for an ACK.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    type Stream = TcpStream;

    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
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
}
