//! Zero-copy relaying on Linux: `splice(2)` from one TCP socket into a pipe and from the pipe into
//! the other socket, so bulk data never crosses into user space.
//!
//! A direction switches to splicing only once a plain read has filled the whole scratch buffer
//! (it is carrying bulk data), so request/response traffic never pays for a pipe. Pipes come
//! from a small per-thread pool and go back to it whenever a direction catches up (empty pipe,
//! nothing to read), so idle connections hold no pipe and a busy thread creates few.
//!
//! Pipes are enlarged from the default 64 KiB to [`LARGE`] (a quarter of the `splice` calls per
//! megabyte: 13% less CPU per MB in `benches/compare/run.sh -t bulk`), but only up to
//! [`MAX_LARGE`] of them at once. The kernel charges pipe capacity to the user
//! (`/proc/sys/fs/pipe-user-pages-soft`, 64 MiB by default) and gives a user over that limit
//! two-page pipes, so enlarging every pipe would bring that limit four times sooner for a
//! balancer relaying thousands of bulk transfers at once.

use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use rustix::pipe::{pipe_with, splice, PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The capacity asked for a new pipe, and the most bytes moved per `splice` call.
const LARGE: usize = 256 * 1024;

/// The most enlarged pipes alive at once in the process: 128 × 256 KiB is half the default
/// per-user limit; pipes made past it keep the default capacity.
const MAX_LARGE: usize = 128;

/// Enlarged pipes alive now.
static LARGE_PIPES: AtomicUsize = AtomicUsize::new(0);

/// Empty pipes kept per thread for reuse.
const POOL_SIZE: usize = 64;

/// A pipe, and how many bytes sit in it.
#[derive(Debug)]
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    pub(crate) len: usize,
    /// Whether it was enlarged to [`LARGE`] (and counts in [`LARGE_PIPES`]).
    large: bool,
}

impl Drop for Pipe {
    fn drop(&mut self) {
        if self.large {
            LARGE_PIPES.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

thread_local! {
    static POOL: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

impl Pipe {
    /// An empty pipe, from the pool if it has one.
    pub(crate) fn take() -> io::Result<Pipe> {
        if let Some(pipe) = POOL.with_borrow_mut(Vec::pop) {
            return Ok(pipe);
        }
        let (read, write) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        // Refused (over the user's limit, an older kernel): the default capacity serves.
        let large = LARGE_PIPES.fetch_add(1, Ordering::Relaxed) < MAX_LARGE
            && rustix::pipe::fcntl_setpipe_size(&write, LARGE).is_ok();
        if !large {
            LARGE_PIPES.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(Pipe { read, write, len: 0, large })
    }

    /// Returns an empty pipe to the pool; one holding data (its connection ended mid-transfer)
    /// is closed instead, so the pool only ever holds empty pipes.
    pub(crate) fn give_back(self) {
        if self.len == 0 {
            POOL.with_borrow_mut(|pool| {
                if pool.len() < POOL_SIZE {
                    pool.push(self);
                }
            });
        }
    }

    /// Closes this thread's spare pipes: called when the process is out of descriptors, whose
    /// two per pipe are worth more to a client (or a backend connection) than a saved `pipe2`.
    pub(crate) fn release_spares() -> usize {
        POOL.with_borrow_mut(|pool| std::mem::take(pool).len())
    }

    /// Moves what is in the pipe into `writer`, until the pipe is empty or the socket is full.
    /// `Ready(Ok(n))` is the bytes moved (the pipe is then empty).
    pub(crate) fn poll_drain(
        &mut self,
        cx: &mut Context<'_>,
        writer: &TcpStream,
    ) -> Poll<io::Result<usize>> {
        let mut moved = 0;
        while self.len > 0 {
            let result = writer.try_io(Interest::WRITABLE, || {
                splice(
                    &self.read,
                    None,
                    writer,
                    None,
                    self.len,
                    SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
                )
                .map_err(io::Error::from)
            });
            match result {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.len -= n;
                    moved += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Readiness was cleared by `try_io`; register for the next edge.
                    match writer.poll_write_ready(cx) {
                        Poll::Ready(Ok(())) => continue,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending if moved > 0 => return Poll::Ready(Ok(moved)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(moved))
    }

    /// Moves what `reader` has into the (empty) pipe. `Ready(Ok(0))` is end of stream.
    pub(crate) fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        reader: &TcpStream,
    ) -> Poll<io::Result<usize>> {
        debug_assert_eq!(self.len, 0, "fill only an empty pipe");
        loop {
            let result = reader.try_io(Interest::READABLE, || {
                splice(
                    reader,
                    None,
                    &self.write,
                    None,
                    LARGE,
                    SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
                )
                .map_err(io::Error::from)
            });
            match result {
                Ok(n) => {
                    self.len = n;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match reader.poll_read_ready(cx) {
                        Poll::Ready(Ok(())) => continue,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_keeps_only_empty_pipes() {
        let pipe = Pipe::take().unwrap();
        let before = POOL.with_borrow(Vec::len);
        pipe.give_back();
        assert_eq!(POOL.with_borrow(Vec::len), before + 1);
        let mut full = Pipe::take().unwrap();
        full.len = 10;
        full.give_back();
        assert_eq!(POOL.with_borrow(Vec::len), before, "a pipe with data is closed, not pooled");
    }

    #[test]
    fn spares_are_closed_when_descriptors_run_out() {
        // On a thread of its own, so its pool holds only these.
        std::thread::spawn(|| {
            let pipes: Vec<Pipe> = (0..3).map(|_| Pipe::take().unwrap()).collect();
            pipes.into_iter().for_each(Pipe::give_back);
            assert_eq!(POOL.with_borrow(Vec::len), 3);
            assert_eq!(Pipe::release_spares(), 3);
            assert_eq!(POOL.with_borrow(Vec::len), 0, "closed, not kept");
            assert!(Pipe::take().is_ok(), "a new pipe when needed");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn pipes_are_enlarged_up_to_the_bound() {
        // Other tests in this binary take pipes too: hold enough to pass the bound whatever
        // they hold, on a thread of its own so its pool is empty.
        std::thread::spawn(|| {
            let pipes: Vec<Pipe> = (0..MAX_LARGE + 2).map(|_| Pipe::take().unwrap()).collect();
            let large = pipes.iter().filter(|p| p.large).count();
            assert!((1..=MAX_LARGE).contains(&large), "{large} enlarged");
            for pipe in &pipes {
                let size = rustix::pipe::fcntl_getpipe_size(&pipe.write).unwrap();
                assert_eq!(size >= LARGE, pipe.large, "capacity {size}");
            }
            assert!(pipes.iter().any(|p| !p.large), "past the bound pipes keep the default");
            assert!(LARGE_PIPES.load(Ordering::Relaxed) <= MAX_LARGE);
            drop(pipes);
            let again = Pipe::take().unwrap();
            assert!(again.large, "closing enlarged pipes frees their place");
        })
        .join()
        .unwrap();
    }
}
