//! Copying bytes both ways between a client and a backend, with half-close, an idle timeout and
//! live byte counts.
//!
//! Memory: a relay owns no buffer while its connection is idle. Reads go into one scratch buffer
//! per thread and are written straight on; only when the other side cannot take everything
//! (backpressure) is the remainder copied into a buffer owned by that direction, which is freed
//! as soon as it has been written. Thousands of idle connections therefore cost their sockets
//! and a few hundred bytes of state each, not two 64 KiB buffers.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use lb_core::Lease;
use tokio::io::ReadBuf;
use tokio::time::{Instant, Sleep};

use crate::connector::ByteStream;

/// Bytes read per system call. 64 KiB matches the default socket buffer sizes on Linux, so
/// bulk transfers move a full socket buffer per read.
const SCRATCH_SIZE: usize = 64 * 1024;

/// Rounds of progress a relay makes per poll before it yields to other connections.
const MAX_ROUNDS: u32 = 16;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_SIZE].into_boxed_slice());
}

/// Bytes relayed by one connection, readable after the relay is gone (even if aborted).
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
}

/// Which peer a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The client.
    Client,
    /// The backend.
    Backend,
}

/// How a relay ended.
#[derive(Debug)]
pub(crate) enum RelayEnd {
    /// Both directions reached end of stream and were shut down in turn.
    Closed,
    /// Reading from or writing to one side failed (typically a reset).
    Failed(Side, io::Error),
    /// No byte moved in either direction for the idle timeout.
    IdleTimeout,
}

/// One direction's state.
#[derive(Debug, Default)]
struct Half {
    /// Read but not yet written (only under backpressure; empty and unallocated otherwise).
    pending: Vec<u8>,
    written: usize,
    /// The reader reached end of stream.
    eof: bool,
    /// The writer has been shut down after `eof`: this direction is finished.
    done: bool,
    /// The half-close was held back for one scheduler round (see `Relay::poll`).
    deferred: bool,
    /// A read filled the whole scratch buffer between two TCP sockets: from now on this
    /// direction splices (Linux), keeping its bytes out of user space.
    bulk: bool,
    /// The pipe it splices through, only while data is flowing.
    #[cfg(target_os = "linux")]
    pipe: Option<crate::splice::Pipe>,
}

#[cfg(target_os = "linux")]
impl Drop for Half {
    fn drop(&mut self) {
        if let Some(pipe) = self.pipe.take() {
            pipe.give_back();
        }
    }
}

/// Both ends as TCP sockets, when they are (the only case `splice` applies to).
#[cfg(target_os = "linux")]
fn as_tcp<'a, R: ByteStream, W: ByteStream>(
    reader: &'a R,
    writer: &'a W,
) -> Option<(&'a tokio::net::TcpStream, &'a tokio::net::TcpStream)> {
    Some((reader.as_tcp()?, writer.as_tcp()?))
}

/// What one poll of a direction achieved: bytes moved (poll again), or nothing to do until the
/// sockets are ready (its finish is `Half::done`, not a step).
enum Step {
    Progress,
    Idle,
}

impl Half {
    /// Moves bytes from `reader` to `writer` until it would block or is finished. `record` is
    /// told every chunk read.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
        other_eof: bool,
        record: &impl Fn(u64),
    ) -> Poll<Result<Step, (Side, io::Error)>>
    where
        R: ByteStream,
        W: ByteStream,
    {
        // Errors are tagged by the caller's orientation: reader errors as `Side::Client` and
        // writer errors as `Side::Backend`, swapped by the caller for the other direction.
        let mut moved = false;
        loop {
            if self.done {
                return Poll::Ready(Ok(if moved { Step::Progress } else { Step::Idle }));
            }
            // 1. Whatever is left over from the last read goes first.
            while self.written < self.pending.len() {
                match Pin::new(&mut *writer).poll_write(cx, &self.pending[self.written..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err((Side::Backend, io::ErrorKind::WriteZero.into())))
                    }
                    Poll::Ready(Ok(n)) => {
                        self.written += n;
                        moved = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err((Side::Backend, e))),
                    Poll::Pending => return self.pending_or(moved),
                }
            }
            if !self.pending.is_empty() {
                // Drained: give the memory back, an idle connection holds no buffer.
                self.pending = Vec::new();
                self.written = 0;
            }
            #[cfg(target_os = "linux")]
            if self.bulk {
                if let Some((tcp_reader, tcp_writer)) = as_tcp(&*reader, &*writer) {
                    match self.poll_splice(cx, tcp_reader, tcp_writer, record) {
                        // A round moved data: let the relay poll the other direction too (it
                        // comes back here while there is more).
                        Poll::Ready(Ok(true)) if !self.eof => {
                            return Poll::Ready(Ok(Step::Progress))
                        }
                        // End of stream: on to the half-close below.
                        Poll::Ready(Ok(true)) => moved = true,
                        // No pipe to be had: copying through user space resumes below.
                        Poll::Ready(Ok(false)) => {}
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => return self.pending_or(moved),
                    }
                }
            }
            // 2. After end of stream, pass the half-close on. If the other direction has reached
            // its end of stream too, both sockets are about to be closed, and closing sends the
            // FIN anyway: only flush (a no-op for TCP), saving a `shutdown` call. Otherwise the
            // half-close waits one scheduler round first (see `Relay::poll`).
            if self.eof {
                if !other_eof && !self.deferred {
                    return self.pending_or(moved);
                }
                let writer = Pin::new(&mut *writer);
                let done = if other_eof { writer.poll_flush(cx) } else { writer.poll_shutdown(cx) };
                match done {
                    Poll::Ready(Ok(())) => {}
                    // The peer already went away: nothing left to tell it.
                    Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::NotConnected => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err((Side::Backend, e))),
                    Poll::Pending => return self.pending_or(moved),
                }
                self.done = true;
                continue;
            }
            // 3. Read a chunk and write it straight on.
            let step = SCRATCH.with_borrow_mut(|scratch| {
                let scratch_len = scratch.len();
                let mut buf = ReadBuf::new(scratch);
                match Pin::new(&mut *reader).poll_read(cx, &mut buf) {
                    Poll::Pending => return Ok(false),
                    Poll::Ready(Err(e)) => return Err((Side::Client, e)),
                    Poll::Ready(Ok(())) => {}
                }
                let data = buf.filled();
                if data.is_empty() {
                    self.eof = true;
                    return Ok(true);
                }
                record(data.len() as u64);
                #[cfg(target_os = "linux")]
                if data.len() == scratch_len && as_tcp(&*reader, &*writer).is_some() {
                    self.bulk = true;
                }
                let mut off = 0;
                while off < data.len() {
                    match Pin::new(&mut *writer).poll_write(cx, &data[off..]) {
                        Poll::Ready(Ok(0)) => {
                            return Err((Side::Backend, io::ErrorKind::WriteZero.into()))
                        }
                        Poll::Ready(Ok(n)) => off += n,
                        Poll::Ready(Err(e)) => return Err((Side::Backend, e)),
                        Poll::Pending => {
                            // Backpressure: keep the rest until the writer is ready (it has
                            // registered our waker).
                            self.pending = data[off..].to_vec();
                            self.written = 0;
                            break;
                        }
                    }
                }
                Ok(true)
            });
            match step {
                Ok(true) => moved = true,
                Ok(false) => return self.pending_or(moved),
                Err(e) => return Poll::Ready(Err(e)),
            }
            if !self.pending.is_empty() {
                return self.pending_or(true);
            }
        }
    }

    /// One round of splicing: empty the pipe into the writer, then fill it from the reader.
    /// `Ready(Ok(moved))` once a round completes (or end of stream is reached); `Pending` when
    /// a socket is not ready (its waker is registered).
    #[cfg(target_os = "linux")]
    fn poll_splice(
        &mut self,
        cx: &mut Context<'_>,
        reader: &tokio::net::TcpStream,
        writer: &tokio::net::TcpStream,
        record: &impl Fn(u64),
    ) -> Poll<Result<bool, (Side, io::Error)>> {
        let mut moved = false;
        if let Some(pipe) = self.pipe.as_mut() {
            match pipe.poll_drain(cx, writer) {
                Poll::Ready(Ok(n)) => moved = n > 0,
                Poll::Ready(Err(e)) => return Poll::Ready(Err((Side::Backend, e))),
                Poll::Pending => return Poll::Pending,
            }
            if pipe.len > 0 {
                // Partly drained; the writer is registered for more room.
                return if moved { Poll::Ready(Ok(true)) } else { Poll::Pending };
            }
        }
        let pipe = match self.pipe.as_mut() {
            Some(pipe) => pipe,
            None => match crate::splice::Pipe::take() {
                Ok(pipe) => self.pipe.insert(pipe),
                // Out of descriptors for a pipe: carry on copying through user space.
                Err(_) => {
                    self.bulk = false;
                    return Poll::Ready(Ok(moved));
                }
            },
        };
        match pipe.poll_fill(cx, reader) {
            Poll::Ready(Ok(0)) => {
                self.eof = true;
                Poll::Ready(Ok(true))
            }
            Poll::Ready(Ok(n)) => {
                record(n as u64);
                Poll::Ready(Ok(true))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err((Side::Client, e))),
            Poll::Pending => {
                // Caught up: the empty pipe goes back to the pool until data flows again.
                if let Some(pipe) = self.pipe.take() {
                    pipe.give_back();
                }
                if moved {
                    Poll::Ready(Ok(true))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn pending_or(&self, moved: bool) -> Poll<Result<Step, (Side, io::Error)>> {
        if moved {
            Poll::Ready(Ok(Step::Progress))
        } else {
            Poll::Pending
        }
    }
}

/// Relays between `client` and `backend` until both directions are finished, one side fails,
/// or nothing moves for `idle_timeout`. Bytes are recorded on `lease` as they pass.
pub(crate) struct Relay<'a, C, B> {
    client: &'a mut C,
    backend: &'a mut B,
    lease: &'a Lease,
    traffic: &'a Traffic,
    /// Client to backend.
    up: Half,
    /// Backend to client.
    down: Half,
    idle_timeout: Option<Duration>,
    last_activity: Instant,
    idle: Option<Pin<Box<Sleep>>>,
}

impl<'a, C, B> Relay<'a, C, B>
where
    C: ByteStream,
    B: ByteStream,
{
    pub(crate) fn new(
        client: &'a mut C,
        backend: &'a mut B,
        lease: &'a Lease,
        traffic: &'a Traffic,
        idle_timeout: Option<Duration>,
    ) -> Self {
        let now = Instant::now();
        Relay {
            client,
            backend,
            lease,
            traffic,
            up: Half::default(),
            down: Half::default(),
            idle_timeout,
            last_activity: now,
            idle: idle_timeout
                .map(|d| Box::pin(tokio::time::sleep_until(crate::time::deadline(now, d)))),
        }
    }
}

impl<C, B> Relay<'_, C, B> {
    /// Starts the client-to-backend direction with `bytes` already to write (what the inspect
    /// stage read, after any PROXY header to send), and at end of stream if the client already
    /// half-closed. The caller has recorded the client's bytes among them.
    pub(crate) fn with_pending(mut self, bytes: Vec<u8>, client_eof: bool) -> Self {
        self.up.pending = bytes;
        self.up.written = 0;
        self.up.eof = client_eof;
        self
    }
}

fn flip(side: Side) -> Side {
    match side {
        Side::Client => Side::Backend,
        Side::Backend => Side::Client,
    }
}

impl<C, B> Future for Relay<'_, C, B>
where
    C: ByteStream,
    B: ByteStream,
{
    type Output = RelayEnd;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<RelayEnd> {
        let this = &mut *self;
        let (lease, traffic) = (this.lease, this.traffic);
        let mut moved = false;
        let mut rounds = 0;
        loop {
            // One writer per counter, so a plain load and store (no locked instruction) suffice.
            let down_eof = this.down.eof;
            let up = this.up.poll_copy(cx, this.client, this.backend, down_eof, &|n| {
                lease.record_bytes_in(n);
                traffic.bytes_in.store(traffic.bytes_in.load(Relaxed) + n, Relaxed);
            });
            let down = this
                .down
                .poll_copy(cx, this.backend, this.client, this.up.eof, &|n| {
                    lease.record_bytes_out(n);
                    traffic.bytes_out.store(traffic.bytes_out.load(Relaxed) + n, Relaxed);
                })
                .map_err(|(side, e)| (flip(side), e));
            let mut again = false;
            for poll in [up, down] {
                match poll {
                    Poll::Ready(Ok(Step::Progress)) => {
                        moved = true;
                        again = true;
                    }
                    Poll::Ready(Ok(Step::Idle)) | Poll::Pending => {}
                    Poll::Ready(Err((side, e))) => return Poll::Ready(RelayEnd::Failed(side, e)),
                }
            }
            if this.up.done && this.down.done {
                return Poll::Ready(RelayEnd::Closed);
            }
            // A half that made progress stopped early (backpressure handed over, or a budget);
            // poll again until both are genuinely waiting, so every waker is registered.
            if !again {
                break;
            }
            rounds += 1;
            if rounds == MAX_ROUNDS {
                // A connection that always has more to move would otherwise keep this thread
                // from every other connection: yield, and ask to be polled again at once.
                cx.waker().wake_by_ref();
                break;
            }
        }
        if moved && this.idle_timeout.is_some() {
            this.last_activity = Instant::now();
        }
        // A direction at end of stream holds its half-close back for one scheduler round: a
        // backend typically closes right after its response, and the client, having the whole
        // response, closes a moment later. If the client's close arrives within that round,
        // both ends are at end of stream and the connection closes with no `shutdown` call at
        // all (one system call less per connection for request/response traffic); if not, the
        // half-close goes out one round late.
        let mut deferring = false;
        for half in [&mut this.up, &mut this.down] {
            if half.eof && !half.done && !half.deferred {
                half.deferred = true;
                deferring = true;
            }
        }
        if deferring {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let Some(timeout) = this.idle_timeout else { return Poll::Pending };
        let sleep = this.idle.as_mut().expect("a timer exists when a timeout is set");
        loop {
            ready!(sleep.as_mut().poll(cx));
            let deadline = crate::time::deadline(this.last_activity, timeout);
            if Instant::now() >= deadline {
                return Poll::Ready(RelayEnd::IdleTimeout);
            }
            // Activity since the timer was set: re-arm for the real deadline. Resetting lazily
            // here, rather than on every read, keeps the timer wheel out of the data path.
            sleep.as_mut().reset(deadline);
        }
    }
}
