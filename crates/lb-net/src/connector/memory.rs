//! In-memory backends for tests (the `test-util` feature): addresses mapped to pipes that can
//! accept, refuse, hang, or reset after some bytes, so proxy logic is tested without sockets.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::mpsc;

use super::{ByteStream, Connector};

/// What an in-memory backend does with a connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Accepts: the other end of the stream arrives on the backend's [`MemoryListener`].
    Accept,
    /// Refuses at once (`ConnectionRefused`).
    Refuse,
    /// Never answers: the connect hangs until the caller's timeout.
    Hang,
    /// Accepts, then fails the stream with `ConnectionReset` after this many bytes have been
    /// read from the backend side.
    ResetAfter(u64),
}

/// The backend side of an in-memory backend: accepted connections arrive here.
#[derive(Debug)]
pub struct MemoryListener {
    rx: mpsc::UnboundedReceiver<DuplexStream>,
}

impl MemoryListener {
    /// The next accepted connection, or `None` once the connector is gone.
    pub async fn accept(&mut self) -> Option<DuplexStream> {
        self.rx.recv().await
    }
}

#[derive(Debug)]
struct MemoryBackend {
    behavior: Behavior,
    tx: mpsc::UnboundedSender<DuplexStream>,
    attempts: u64,
}

/// In-memory backends for tests: each address maps to a backend whose behaviour can be changed
/// at any time. Connecting to an address that was never registered panics, so a test cannot
/// silently reach the network.
#[derive(Debug, Clone, Default)]
pub struct MemoryConnector {
    backends: Arc<Mutex<HashMap<SocketAddr, MemoryBackend>>>,
}

/// Size of each in-memory pipe's buffer.
const PIPE_CAPACITY: usize = 64 * 1024;

impl MemoryConnector {
    /// A connector with no backends.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, MemoryBackend>> {
        self.backends.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a backend at `addr` that accepts; returns where its connections arrive.
    /// Registering an address again replaces the backend.
    pub fn listen(&self, addr: SocketAddr) -> MemoryListener {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().insert(addr, MemoryBackend { behavior: Behavior::Accept, tx, attempts: 0 });
        MemoryListener { rx }
    }

    /// Changes what the backend at `addr` does with new connections.
    ///
    /// # Panics
    /// If `addr` was never registered with [`listen`](Self::listen).
    pub fn set_behavior(&self, addr: SocketAddr, behavior: Behavior) {
        self.lock().get_mut(&addr).expect("unknown in-memory backend").behavior = behavior;
    }

    /// How many connection attempts the backend at `addr` has seen (of any outcome).
    pub fn attempts(&self, addr: SocketAddr) -> u64 {
        self.lock().get(&addr).map_or(0, |b| b.attempts)
    }
}

impl ByteStream for MemoryStream {}

impl Connector for MemoryConnector {
    type Stream = MemoryStream;

    async fn connect(&self, addr: SocketAddr) -> io::Result<MemoryStream> {
        let (behavior, tx) = {
            let mut backends = self.lock();
            let backend = backends.get_mut(&addr).unwrap_or_else(|| {
                panic!("MemoryConnector: no in-memory backend at {addr} (tests must not reach the network)")
            });
            backend.attempts += 1;
            (backend.behavior, backend.tx.clone())
        };
        let reset_after = match behavior {
            Behavior::Refuse => {
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused"))
            }
            Behavior::Hang => std::future::pending().await,
            Behavior::Accept => None,
            Behavior::ResetAfter(n) => Some(n),
        };
        let (ours, theirs) = tokio::io::duplex(PIPE_CAPACITY);
        // A backend whose listener was dropped refuses, as a closed port would.
        tx.send(theirs).map_err(|_| {
            io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused (listener closed)")
        })?;
        Ok(MemoryStream { inner: ours, reset_after })
    }
}

/// The proxy's end of an in-memory connection.
#[derive(Debug)]
pub struct MemoryStream {
    inner: DuplexStream,
    /// Bytes still to deliver before failing with `ConnectionReset`, if set to fail.
    reset_after: Option<u64>,
}

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "connection reset by in-memory backend")
}

impl AsyncRead for MemoryStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.reset_after {
            None => Pin::new(&mut this.inner).poll_read(cx, buf),
            Some(0) => Poll::Ready(Err(reset())),
            Some(left) => {
                // Read through a bounded scratch buffer so no more than `left` bytes get through.
                let mut scratch = [0u8; 4096];
                let allowed = buf.remaining().min(scratch.len()).min(left as usize);
                let mut limited = ReadBuf::new(&mut scratch[..allowed]);
                let poll = Pin::new(&mut this.inner).poll_read(cx, &mut limited);
                let n = limited.filled().len();
                buf.put_slice(limited.filled());
                this.reset_after = Some(left - n as u64);
                if poll.is_ready() && n == 0 && allowed > 0 {
                    // End of stream before the reset point: still a reset, as promised.
                    return Poll::Ready(Err(reset()));
                }
                poll
            }
        }
    }
}

impl AsyncWrite for MemoryStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.reset_after == Some(0) {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
