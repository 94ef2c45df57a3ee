//! One direction of a relay: copy what the reader gives to the writer, through the per-thread
//! scratch buffer (or, between TCP sockets in bulk, `splice(2)`), keeping only what the writer
//! could not take yet, and pass the end of stream on.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::ReadBuf;

use super::{Side, REPLAY_LIMIT};
use crate::connector::ByteStream;

/// Bytes read per system call. 64 KiB matches the default socket buffer sizes on Linux, so
/// bulk transfers move a full socket buffer per read.
const SCRATCH_SIZE: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_SIZE].into_boxed_slice());
}

/// One direction's state.
#[derive(Debug, Default)]
pub(super) struct Half {
    /// Read but not yet written (only under backpressure; empty and unallocated otherwise).
    pub(super) pending: Vec<u8>,
    pub(super) written: usize,
    /// The reader reached end of stream.
    pub(super) eof: bool,
    /// The writer has been shut down after `eof`: this direction is finished.
    pub(super) done: bool,
    /// The half-close was held back for one scheduler round (see `Relay::poll`).
    pub(super) deferred: bool,
    /// A read filled the whole scratch buffer between two TCP sockets: from now on this
    /// direction splices (Linux), keeping its bytes out of user space.
    pub(super) bulk: bool,
    /// The pipe it splices through, only while data is flowing.
    #[cfg(target_os = "linux")]
    pipe: Option<crate::splice::Pipe>,
    /// The reader's error, reported to the io_uring engine before it handed the relay over:
    /// the relay fails with it once `pending` is written.
    #[cfg(target_os = "linux")]
    pub(super) failed: Option<io::Error>,
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

/// Whether `reader`, whose last read was short, is known to be at end of stream without
/// another read: the peer's FIN had arrived before that read began, so the read took
/// everything before it. nginx does the same with `EPOLLRDHUP` (`pending_eof`).
///
/// Read from the socket's readiness as tokio keeps it: after a short read, tokio clears its
/// readable state, unless an event arrived since the read began; the closed state is never
/// cleared. Closed but not readable thus means that the event which reported the FIN came
/// before the read. Anything else (readable again, an error, or not a TCP socket) says nothing,
/// and the next read finds out as before.
fn peer_closed_before_read<R: ByteStream>(reader: &R, cx: &mut Context<'_>) -> bool {
    let Some(tcp) = reader.as_tcp() else { return false };
    // Nothing at all is the common case: no FIN yet. `poll_read_ready` tells that without a
    // lock (registering the waker the next read would register).
    if tcp.poll_read_ready(cx).is_pending() {
        return false;
    }
    // Something is set, so this completes at once, with the flags (the error flag too: a
    // reset also reads as closed, and must be read, to be passed on as one).
    let interest = tokio::io::Interest::READABLE | tokio::io::Interest::ERROR;
    let ready = std::pin::pin!(tcp.ready(interest));
    match ready.poll(cx) {
        // Only closed: `is_readable` would say yes to that too.
        Poll::Ready(Ok(ready)) => ready == tokio::io::Ready::READ_CLOSED,
        _ => false,
    }
}

/// What one poll of a direction achieved: bytes moved (poll again), or nothing to do until the
/// sockets are ready (its finish is `Half::done`, not a step).
pub(super) enum Step {
    Progress,
    Idle,
}

impl Half {
    /// Moves bytes from `reader` to `writer` until it would block or is finished. `record` is
    /// told every chunk read.
    ///
    /// `keep`, while `Some`, gets a copy of every chunk read (for a replay on another backend);
    /// it is dropped (`None`) once it would pass [`REPLAY_LIMIT`], and a kept direction never
    /// splices, whose bytes would bypass it.
    pub(super) fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
        other_eof: bool,
        record: &impl Fn(u64),
        keep: &mut Option<Vec<u8>>,
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
            if let Some(e) = self.failed.take() {
                return Poll::Ready(Err((Side::Client, e)));
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
                if data.len() < scratch_len && peer_closed_before_read(&*reader, cx) {
                    // Everything up to the end of stream was just read: the read that would
                    // return 0 is not needed (one system call less per connection).
                    self.eof = true;
                }
                record(data.len() as u64);
                if let Some(kept) = keep {
                    if kept.len() + data.len() > REPLAY_LIMIT {
                        *keep = None;
                    } else {
                        kept.extend_from_slice(data);
                    }
                }
                #[cfg(target_os = "linux")]
                if data.len() == scratch_len
                    && keep.is_none()
                    && as_tcp(&*reader, &*writer).is_some()
                {
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
