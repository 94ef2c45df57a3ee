//! [`TcpConn`]: the balancer's TCP connections (accepted from clients, opened to backends),
//! which join tokio's reactor only when something first reads or writes them through tokio.
//!
//! A connection relayed by the io_uring engine never does: the ring reads and writes the
//! socket itself, so registering it with epoll (and removing it again at close) would be two
//! system calls per socket for nothing, four per proxied connection.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::connector::ByteStream;

/// A TCP connection that joins tokio's reactor on first use through tokio.
///
/// It is what [`TcpConnector`](crate::TcpConnector) opens and what the balancer's listeners
/// accept: a non-blocking socket, read and written through [`AsyncRead`] and [`AsyncWrite`]
/// like a [`TcpStream`] (which it becomes, registered with the current runtime's reactor, the
/// first time it is polled or [`as_tcp`](ByteStream::as_tcp) is asked for), while an engine that
/// does its own I/O on the descriptor ([`ByteStream::tcp_fd`]) leaves it unregistered.
///
/// If registering fails (the reactor is gone, or the kernel is out of memory), every read and
/// write fails with that error, and the socket is closed.
#[derive(Debug)]
pub struct TcpConn {
    /// The socket until it is registered (then the registered stream owns it).
    socket: std::sync::Mutex<Option<std::net::TcpStream>>,
    /// The registered stream, or why registering failed. Boxed: a connection relayed on the
    /// ring never has one, and weighs 32 bytes (as a `TcpStream` does) rather than 56.
    registered: OnceLock<Box<io::Result<TcpStream>>>,
}

impl TcpConn {
    /// A connection not yet registered; `socket` must be in non-blocking mode.
    pub fn unregistered(socket: std::net::TcpStream) -> Self {
        TcpConn { socket: std::sync::Mutex::new(Some(socket)), registered: OnceLock::new() }
    }

    /// The registered stream, registering it now with the current runtime's reactor if it is
    /// not yet. Panics, as tokio does, outside a runtime.
    fn registered(&self) -> io::Result<&TcpStream> {
        let registered = self.registered.get_or_init(|| {
            let socket = self.socket.lock().unwrap_or_else(|p| p.into_inner()).take();
            Box::new(TcpStream::from_std(socket.expect("a connection is registered once")))
        });
        registered.as_ref().as_ref().map_err(|e| io::Error::new(e.kind(), e.to_string()))
    }

    fn registered_mut(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        self.registered()?;
        match self.registered.get_mut().map(|r| &mut **r) {
            Some(Ok(stream)) => Ok(Pin::new(stream)),
            _ => unreachable!("registered just above"),
        }
    }

    /// The address of the peer.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.with_socket(|s| s.peer_addr()?.as_socket().ok_or_else(not_inet))
    }

    /// The local address of the connection.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.with_socket(|s| s.local_addr()?.as_socket().ok_or_else(not_inet))
    }

    /// Sets `TCP_NODELAY` (send small writes at once rather than wait for an ACK).
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.with_socket(|s| s.set_nodelay(on))
    }

    /// Runs `f` on the socket, registered or not, without registering it.
    pub(crate) fn with_socket<R>(
        &self,
        f: impl FnOnce(socket2::SockRef<'_>) -> io::Result<R>,
    ) -> io::Result<R> {
        if self.registered.get().is_none() {
            let socket = self.socket.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(socket) = socket.as_ref() {
                return f(socket2::SockRef::from(socket));
            }
        }
        // Registered (or being registered by another thread, which this waits for).
        f(socket2::SockRef::from(self.registered()?))
    }
}

fn not_inet() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket")
}

impl From<TcpStream> for TcpConn {
    /// A connection already registered.
    fn from(stream: TcpStream) -> Self {
        TcpConn {
            socket: std::sync::Mutex::new(None),
            registered: OnceLock::from(Box::new(Ok(stream))),
        }
    }
}

impl ByteStream for TcpConn {
    fn as_tcp(&self) -> Option<&TcpStream> {
        self.registered().ok()
    }

    #[cfg(unix)]
    fn tcp_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.with_socket(|s| Ok(s.as_raw_fd())).ok()
    }

    fn tcp_local_addr(&self) -> Option<SocketAddr> {
        self.local_addr().ok()
    }

    fn abort_on_close(&self) {
        let _ = self.with_socket(|s| s.set_linger(Some(std::time::Duration::ZERO)));
    }
}

impl AsyncRead for TcpConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().registered_mut()?.poll_read(cx, buf)
    }
}

impl AsyncWrite for TcpConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().registered_mut()?.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().registered_mut()?.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().registered_mut()?.poll_flush(cx)
    }

    /// Half-closes (`shutdown(SHUT_WR)`), with no need to register.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.with_socket(|s| s.shutdown(std::net::Shutdown::Write)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (TcpConn, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.set_nonblocking(true).unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (TcpConn::unregistered(client), server)
    }

    #[test]
    fn weighs_what_a_tcp_stream_does() {
        assert!(std::mem::size_of::<TcpConn>() <= std::mem::size_of::<TcpStream>());
    }

    #[tokio::test]
    async fn registers_on_first_use_and_relays_both_ways() {
        let (mut conn, mut peer) = pair().await;
        assert!(conn.registered.get().is_none(), "not registered until used");
        assert_eq!(conn.local_addr().unwrap(), peer.peer_addr().unwrap());
        assert_eq!(conn.peer_addr().unwrap(), peer.local_addr().unwrap());
        let fd = conn.tcp_fd().unwrap();
        assert!(conn.registered.get().is_none(), "the descriptor is lent without registering");

        peer.write_all(b"ping").await.unwrap();
        let mut got = [0; 4];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        assert!(matches!(conn.registered.get().map(|r| &**r), Some(Ok(_))));
        assert_eq!(conn.tcp_fd(), Some(fd), "the same socket once registered");

        conn.write_all(b"pong").await.unwrap();
        conn.shutdown().await.unwrap();
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"pong");
    }

    #[tokio::test]
    async fn tells_its_address_and_half_closes_without_registering() {
        let (mut conn, mut peer) = pair().await;
        assert_eq!(conn.tcp_local_addr(), Some(peer.peer_addr().unwrap()));
        conn.shutdown().await.unwrap();
        assert!(conn.registered.get().is_none(), "neither asking its address nor half-closing");
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "end of stream");
    }

    #[tokio::test]
    async fn an_unregistered_connection_is_closed_when_dropped() {
        let (conn, mut peer) = pair().await;
        drop(conn);
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "closed");
    }

    #[tokio::test]
    async fn as_tcp_registers_on_demand() {
        let (conn, _peer) = pair().await;
        let tcp = conn.as_tcp().expect("registered on demand");
        assert_eq!(tcp.local_addr().unwrap(), conn.local_addr().unwrap());
        assert!(matches!(conn.registered.get().map(|r| &**r), Some(Ok(_))));
    }

    #[tokio::test]
    async fn a_registered_stream_converts() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (dialed, accepted) =
            tokio::join!(TcpStream::connect(listener.local_addr().unwrap()), listener.accept());
        let (dialed, (mut peer, _)) = (dialed.unwrap(), accepted.unwrap());
        let fd = std::os::fd::AsRawFd::as_raw_fd(&dialed);
        let mut conn = TcpConn::from(dialed);
        assert_eq!(conn.tcp_fd(), Some(fd));
        assert_eq!(conn.as_tcp().map(|s| s.peer_addr().unwrap()), Some(peer.local_addr().unwrap()));
        conn.write_all(b"x").await.unwrap();
        let mut got = [0; 1];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"x");
    }
}
