//! The one accept loop of the crate, used by the proxy's listeners and the admin endpoint:
//! which `accept` errors to skip, and the pause (doubling, bounded) after the others, so a
//! shortage of file descriptors or memory is waited out instead of spun on. The proxy's
//! connect retry during such a shortage uses the same [`Backoff`] with its own bounds.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, TcpStream};

use crate::stream::TcpConn;

/// A listening socket the accept loop takes connections from.
pub(crate) trait Listen {
    /// What an accepted connection is.
    type Stream;

    /// The next connection, once one is queued.
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Stream, SocketAddr)>>;
}

/// The admin endpoint's: connections registered with the reactor at once (hyper reads them).
impl Listen for TcpListener {
    type Stream = TcpStream;

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
        TcpListener::poll_accept(self, cx)
    }
}

/// A proxy listener's socket: its connections are accepted non-blocking and left out of the
/// reactor until used through it ([`TcpConn`]), so that one relayed on the io_uring engine
/// never joins it.
#[derive(Debug)]
pub(crate) struct Listening(AsyncFd<std::net::TcpListener>);

impl Listening {
    /// Registers `socket` (non-blocking) with the current runtime's reactor.
    #[allow(unsafe_code)]
    pub(crate) fn new(socket: std::net::TcpListener) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        // SAFETY: the listener is owned by the `AsyncFd`, so its descriptor stays open, and the
        // same, for as long as the registration.
        unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }
            .map(Listening)
            .map_err(|e| e.into_parts().1)
    }

    /// The listening socket.
    pub(crate) fn socket(&self) -> &std::net::TcpListener {
        self.0.get_ref()
    }

    /// A connection already queued, if there is one (never waits).
    pub(crate) fn try_accept(&self) -> Option<(TcpConn, SocketAddr)> {
        accept_nonblocking(self.socket()).ok()
    }
}

impl Listen for Listening {
    type Stream = TcpConn;

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpConn, SocketAddr)>> {
        loop {
            let mut ready = ready!(self.0.poll_read_ready(cx))?;
            if let Ok(accepted) = ready.try_io(|socket| accept_nonblocking(socket.get_ref())) {
                return Poll::Ready(accepted);
            }
        }
    }
}

/// Accepts a connection already in non-blocking mode: one system call (`accept4`) on Linux.
fn accept_nonblocking(socket: &std::net::TcpListener) -> io::Result<(TcpConn, SocketAddr)> {
    #[cfg(target_os = "linux")]
    {
        use rustix::net::{acceptfrom_with, SocketFlags};
        let (fd, peer) = acceptfrom_with(socket, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC)?;
        let peer = peer.and_then(|p| SocketAddr::try_from(p).ok());
        let stream = std::net::TcpStream::from(fd);
        // TCP's accept always says who; asked again should it not, and a client already gone
        // is that client's problem only.
        let peer = match peer {
            Some(peer) => peer,
            None => {
                stream.peer_addr().map_err(|_| io::Error::from(io::ErrorKind::ConnectionAborted))?
            }
        };
        Ok((TcpConn::unregistered(stream), peer))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let (stream, peer) = socket.accept()?;
        stream.set_nonblocking(true)?;
        Ok((TcpConn::unregistered(stream), peer))
    }
}

/// Accepts on `listener` until `stop` resolves, handing each connection to `accepted`.
///
/// Never returns early and never fails: an error that concerns one connection only (the
/// client gave up) is reported to `failed` with no pause and skipped; any other (out of file
/// descriptors, out of memory) is reported with the pause about to be taken, then waited out
/// with a [`Backoff::accept`] pause (cut short by `stop`).
pub(crate) async fn accept_loop<L: Listen>(
    listener: &L,
    stop: &mut (impl Future<Output = ()> + Unpin),
    mut accepted: impl FnMut(L::Stream, SocketAddr),
    mut failed: impl FnMut(&io::Error, Option<Duration>),
) {
    let mut backoff = Backoff::accept();
    loop {
        let result = tokio::select! {
            biased;
            () = &mut *stop => return,
            result = std::future::poll_fn(|cx| listener.poll_accept(cx)) => result,
        };
        match result {
            Ok((stream, peer)) => {
                backoff.reset();
                accepted(stream, peer);
            }
            Err(e) if is_connection_error(&e) => failed(&e, None),
            Err(e) => {
                failed(&e, Some(backoff.pause()));
                if !backoff.wait(stop).await {
                    return;
                }
            }
        }
    }
}

/// Accept errors that concern one connection only (the client gave up before we accepted):
/// accepting again at once is right. Anything else (out of file descriptors, out of memory)
/// needs a pause, or the loop would spin on the same error.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// First pause after a resource error in `accept`; doubled on each further error up to
/// [`MAX_ACCEPT_BACKOFF`], reset by a successful accept.
pub(crate) const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(5);
/// Longest pause between accepts while resources are exhausted: long enough not to burn a CPU,
/// short enough that service resumes within a second of descriptors being freed.
pub(crate) const MAX_ACCEPT_BACKOFF: Duration = Duration::from_millis(500);

/// A doubling, bounded pause: an accept loop's after a resource error ([`Backoff::accept`]:
/// [`MIN_ACCEPT_BACKOFF`] doubling up to [`MAX_ACCEPT_BACKOFF`], back to the minimum after a
/// successful accept), and the proxy's between connect attempts while the balancer is short
/// of descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    /// A backoff from `min`, doubling up to `max`.
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff { next: min, min, max }
    }

    /// An accept loop's backoff, at its minimum.
    pub(crate) fn accept() -> Self {
        Backoff::new(MIN_ACCEPT_BACKOFF, MAX_ACCEPT_BACKOFF)
    }

    /// The pause the next [`wait`](Self::wait) or [`advance`](Self::advance) takes.
    pub(crate) fn pause(&self) -> Duration {
        self.next
    }

    /// After a success: the next pause is the minimum again.
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }

    /// Returns the pause to take now and doubles the next one (up to the maximum).
    pub(crate) fn advance(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        pause
    }

    /// Sleeps for [`pause`](Self::pause), or until `stop` resolves, and doubles the pause (up to
    /// the maximum). Returns `false` if `stop` resolved: the loop should return.
    pub(crate) async fn wait(&mut self, stop: &mut (impl Future<Output = ()> + Unpin)) -> bool {
        let pause = self.advance();
        tokio::select! {
            biased;
            () = &mut *stop => false,
            () = tokio::time::sleep(pause) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn pauses_double_up_to_the_maximum_and_reset_to_the_minimum() {
        let mut backoff = Backoff::accept();
        let mut never = std::pin::pin!(std::future::pending::<()>());
        let mut pauses = Vec::new();
        for _ in 0..10 {
            let start = Instant::now();
            let announced = backoff.pause();
            assert!(backoff.wait(&mut never).await);
            assert_eq!(start.elapsed(), announced, "waits exactly what it announced");
            pauses.push(announced.as_millis());
        }
        assert_eq!(pauses, [5, 10, 20, 40, 80, 160, 320, 500, 500, 500]);
        backoff.reset();
        assert_eq!(backoff.pause(), MIN_ACCEPT_BACKOFF);
    }

    #[tokio::test(start_paused = true)]
    async fn stop_cuts_the_pause_short() {
        let mut backoff = Backoff::accept();
        let mut stop = std::pin::pin!(std::future::ready(()));
        let start = Instant::now();
        assert!(!backoff.wait(&mut stop).await);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[test]
    fn only_per_connection_errors_are_skipped() {
        assert!(is_connection_error(&io::Error::from(io::ErrorKind::ConnectionAborted)));
        assert!(!is_connection_error(&io::Error::from_raw_os_error(24))); // EMFILE
    }
}
