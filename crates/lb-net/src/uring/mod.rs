//! The io_uring relay engine (Linux; `--io uring`, the default where the kernel allows it).
//!
//! Each worker thread has one ring, driven by one task on that thread's runtime. A connection
//! is accepted, inspected, routed and connected on tokio as always; its relay (the part that
//! runs for every request of a keep-alive connection) then runs on the ring instead of on
//! epoll readiness and `recvfrom`/`sendto` calls:
//!
//! - each socket has one receive armed at a time, drawing from the ring's provided buffers
//!   ([`buffers`]) and re-armed with the round's other entries, so a connection waiting for its
//!   next request costs no system call and holds no buffer. Each arming takes in at most one
//!   buffer's worth, which is what bounds what a connection can hold: a plain multishot
//!   receive goes on receiving for as long as the socket has data and buffers are free, so a
//!   client that stops reading a large answer (or one sending faster than its backend reads)
//!   left up to a megabyte per connection in lb's heap at each pause, against the 64 KiB the
//!   epoll engine holds (found by a black-box round: 100 stalled readers, 90 MB against
//!   10 MB now). Where the kernel caps a multishot receive's total (6.16 and later, found out
//!   at set-up) the receive is multishot with that cap, re-armed once a buffer's worth has
//!   come; elsewhere it is a single receive that waits for readiness first, a submission and
//!   a poll more per message;
//! - what arrives is copied out of the buffer, which goes straight back, and sent on from the
//!   direction's own bytes (held only until sent, as the epoll engine holds backpressure);
//! - every send and re-arm of a round goes to the kernel in one `io_uring_enter`, which also
//!   collects the completions that arrived meanwhile (`COOP_TASKRUN`: the kernel finishes them
//!   on this thread when it next enters the kernel or wakes, without interrupting it). A
//!   half-close is a plain `shutdown` call: the ring would run it on a kernel worker thread.
//!
//! Not `DEFER_TASKRUN`, which leaves that work for the next `io_uring_enter` and tells the
//! eventfd when some is waiting: from the network's softirq, where the wake-up comes, Linux
//! 6.18 defers the eventfd's signal by an RCU grace period (13-32 ms on the 2-vCPU machine
//! of docs/performance.md), so each exchange of a keep-alive connection waited that long.
//!
//! The ring tells the runtime it has completions through an eventfd registered with both, so
//! the worker still sleeps in one place (tokio's `epoll_wait`) and accepts, connects, health
//! checks and timers go on as before.
//!
//! A direction whose receive fills a whole buffer is carrying bulk data, which the epoll
//! engine moves with `splice(2)`, kernel to kernel: the relay is handed over to it, with every
//! byte not yet written, its ends of stream and its clock ([`Outcome::Bulk`]).
//!
//! Semantics are the epoll engine's (see [`crate::relay`]): half-close passed on (held back to
//! the end of a round, so a close seen from both sides in one round needs no `shutdown`), the
//! idle / fin / server timeouts from the same [`Timing`], an empty answer reported before the
//! client learns of it so the connection can go to another backend, with the client's bytes
//! kept for a replay.

#![allow(unsafe_code)]

mod buffers;

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll, Waker};

use io_uring::{cqueue, opcode, squeue, types::Fd, IoUring};
use lb_core::ByteMeter;
use tokio::io::unix::AsyncFd;
use tokio::time::{Instant, Sleep};

use crate::relay::{RelayEnd, Resumed, ResumedHalf, Side, Timeouts, Timing, Traffic, REPLAY_LIMIT};
use buffers::Buffers;

/// Submission queue entries; the completion queue has eight times as many (and the kernel
/// keeps any overflow rather than dropping it). A round with more entries than this hands them
/// to the kernel in batches of this many. Both rings are resident in full (their indices go
/// round them), 48 KiB per worker at these sizes.
const ENTRIES: u32 = 256;

/// Bytes a direction holds unsent before its receive is paused (backpressure), as the epoll
/// engine holds at most one read's worth.
const PAUSE_AT: usize = 64 * 1024;

/// Spare vectors an engine keeps (see `Engine::spare`), and the largest capacity it keeps one
/// of: at most 1 MiB held, so that exchanges of up to a buffer's size allocate nothing once
/// the spares have grown to their sizes.
const SPARES: usize = 64;
const SPARE_CAPACITY: usize = buffers::SIZE;

/// Rounds of submit-and-collect a turn of the driver makes before it yields to the other
/// tasks of its thread.
const MAX_ROUNDS: u32 = 16;

/// `IORING_RECVSEND_POLL_FIRST` (linux/io_uring.h): a receive waits for readiness before
/// trying, as a re-armed one would mostly find nothing yet (the next request, the answer).
const RECV_POLL_FIRST: u16 = 1;

/// `IORING_ENTER_GETEVENTS` (linux/io_uring.h): collect completions, running the pending
/// work that produces them.
const ENTER_GETEVENTS: u32 = 1;

/// Which direction: client to backend (reads the client) or backend to client.
const UP: usize = 0;
const DOWN: usize = 1;

/// What an operation's `user_data` names besides its connection (low two bits).
const OP_RECV: u64 = 0; // + direction
const OP_SEND: u64 = 2; // + direction
/// The `user_data` of cancellations, whose own completions say nothing.
const CANCEL: u64 = u64::MAX;
/// The `user_data` of the set-up probe's receive ([`Engine::capped_multishot_works`]).
const PROBE: u64 = u64::MAX - 1;
/// Set in the `user_data` of a connect, whose low bits are its index in `Engine::connects`.
const OP_CONNECT: u64 = 1 << 62;

fn user_data(slot: u32, op: u64) -> u64 {
    (u64::from(slot) << 2) | op
}

/// Whether `Handle::current()` is a runtime whose tasks stay on this thread, which the
/// engine's per-thread ring needs.
fn on_current_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread)
}

/// Checks that this kernel (and any seccomp policy) lets the engine run: sets a ring up as the
/// engine does and registers its buffers. `--io auto` uses the engine when this succeeds.
pub(crate) fn probe() -> io::Result<()> {
    Engine::new().map(drop)
}

thread_local! {
    static ENGINE: RefCell<Option<Engine>> = const { RefCell::new(None) };
    /// The engine could not be set up on this thread: relays here use epoll.
    static UNAVAILABLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// How a relay on the engine ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// As the epoll engine's relay would have ended.
    Ended(RelayEnd),
    /// A direction carries bulk data: the epoll engine is to carry on from this state.
    Bulk(Resumed),
}

/// One direction's state.
#[derive(Debug, Default)]
struct Dir {
    /// Being sent: not touched until its send completes.
    sending: Vec<u8>,
    /// Bytes of `sending` already sent.
    sent: usize,
    /// Whether a send is in flight.
    in_flight: bool,
    /// Received since, waiting for the send in flight.
    next: Vec<u8>,
    /// Whether a receive is armed.
    receiving: bool,
    /// Whether it was cancelled for backpressure (re-armed once drained).
    paused: bool,
    /// The reader's end of stream was seen.
    eof: bool,
    /// The half-close was passed on (or needs no passing on): this direction is finished.
    done: bool,
    /// The last receive filled a whole buffer.
    bulk: bool,
}

impl Dir {
    fn unsent(&self) -> usize {
        self.sending.len() - self.sent + self.next.len()
    }

    /// Everything read and not yet written, in order.
    fn take_unsent(&mut self) -> Vec<u8> {
        let mut bytes = std::mem::take(&mut self.sending);
        bytes.drain(..self.sent);
        bytes.append(&mut self.next);
        self.sent = 0;
        bytes
    }
}

/// One relayed connection.
#[derive(Debug)]
struct Conn {
    /// The sockets, owned by the connection's task (which closes them only after this
    /// connection is detached, see [`UringRelay`]).
    fds: [RawFd; 2],
    dirs: [Dir; 2],
    meter: ByteMeter,
    /// Bytes received from the client and from the backend by this relay.
    bytes: [u64; 2],
    /// Whether the client had sent anything before this relay.
    client_sent_before: bool,
    /// The relay's clock, kept up to date only while some limit is set.
    timing: Timing,
    /// The earliest deadline the timer heap holds for this connection.
    timer_at: Option<Instant>,
    replay: Option<Vec<u8>>,
    /// How it ends, once decided; delivered once nothing is in flight. Boxed: set once at the
    /// end, it would otherwise take 40 bytes in every idle connection's entry.
    ending: Option<Box<Ending>>,
    /// Operations in flight.
    in_flight: u32,
    /// The relay's future, to wake when the outcome is ready.
    waker: Option<Waker>,
    /// Whether the future is still there (else the slot frees itself when idle).
    attached: bool,
}

#[derive(Debug)]
enum Ending {
    End(RelayEnd),
    /// The backend ended without a word (reset if `Some`): an `Empty` end, made up once the
    /// client's last bytes are in.
    Empty(Option<io::Error>),
    /// Handed to the epoll engine, with the error each direction's receive reported meanwhile
    /// (after the bytes it had: the kernel reports a socket's error once, so the epoll relay
    /// must be told).
    Bulk([Option<io::Error>; 2]),
    /// The future went away.
    Aborted,
}

impl Conn {
    /// The earliest time limit and what passing it means.
    fn next_deadline(&self) -> Option<(Instant, RelayEnd)> {
        self.timing.next_deadline(self.dirs[UP].done, self.dirs[DOWN].done, self.backend_spoke())
    }

    /// Adds what this relay moved to the connection's counts (for its access line).
    fn count_on(&self, traffic: &Traffic) {
        traffic.bytes_in.fetch_add(self.bytes[UP], Relaxed);
        traffic.bytes_out.fetch_add(self.bytes[DOWN], Relaxed);
    }

    fn backend_spoke(&self) -> bool {
        self.bytes[DOWN] > 0
    }

    fn empty_end(&self, reset: bool) -> bool {
        self.timing.empty_end(
            self.backend_spoke(),
            reset,
            self.dirs[UP].eof,
            self.client_sent_before || self.bytes[UP] > 0,
        )
    }

    /// The side a direction reads from, and the side it writes to.
    fn sides(d: usize) -> (Side, Side) {
        if d == UP {
            (Side::Client, Side::Backend)
        } else {
            (Side::Backend, Side::Client)
        }
    }
}

/// What one connection's entry in the engine's table weighs (see `footprint`).
#[cfg(test)]
pub(crate) const ENTRY_BYTES: usize = std::mem::size_of::<Entry>();

#[derive(Debug)]
struct Entry {
    generation: u32,
    conn: Option<Conn>,
}

/// The connections, in chunks that never move once allocated: a growing `Vec` would copy
/// every connection at each doubling and leave the old copies resident in the allocator.
#[derive(Debug, Default)]
struct Slab {
    chunks: Vec<Box<[Entry]>>,
    len: u32,
}

/// Connections per chunk.
const CHUNK: u32 = 256;

impl Slab {
    /// A new, empty slot.
    fn grow(&mut self) -> u32 {
        if self.len == self.chunks.len() as u32 * CHUNK {
            let chunk = (0..CHUNK).map(|_| Entry { generation: 0, conn: None }).collect();
            self.chunks.push(chunk);
        }
        self.len += 1;
        self.len - 1
    }
}

impl std::ops::Index<u32> for Slab {
    type Output = Entry;

    fn index(&self, slot: u32) -> &Entry {
        &self.chunks[(slot / CHUNK) as usize][(slot % CHUNK) as usize]
    }
}

impl std::ops::IndexMut<u32> for Slab {
    fn index_mut(&mut self, slot: u32) -> &mut Entry {
        &mut self.chunks[(slot / CHUNK) as usize][(slot % CHUNK) as usize]
    }
}

/// A backend connection being opened on the ring ([`connect`]).
#[derive(Debug)]
struct Connecting {
    /// The address, which the kernel may read until the completion.
    addr: socket2::SockAddr,
    /// The time limit, relative (the linked timeout's).
    limit: io_uring::types::Timespec,
    /// The outcome (`connect`'s result, or minus an errno), once completed.
    result: Option<i32>,
    /// The connect's future, to wake when the outcome is in.
    waker: Option<Waker>,
    /// Whether the future is still there (else the entry frees itself on completion).
    attached: bool,
}

/// One thread's ring and the relays on it.
struct Engine {
    // Dropped in this order: the buffers are unregistered (in `Drop`) while the ring is alive.
    buffers: Buffers,
    ring: IoUring,
    conns: Slab,
    free: Vec<u32>,
    /// Connects, boxed so that the addresses the kernel reads never move.
    connects: Vec<Option<Box<Connecting>>>,
    free_connects: Vec<u32>,
    /// Connects whose completion has not come yet.
    connecting: usize,
    /// Deadlines: (when, slot, generation). Stale entries are skipped when they come up, and
    /// swept when they outnumber the connections.
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    live: usize,
    /// Directions with bytes received this round, sent at its end: by then a round that
    /// brought the reader's end of stream too has seen it, and the send is marked as the last
    /// (see [`Engine::send`]).
    sends: Vec<(u32, usize)>,
    /// Directions whose half-close is due at the end of this turn.
    half_closes: Vec<(u32, usize)>,
    /// Directions to re-arm at the end of this turn (out of buffers, or drained after a pause).
    rearm: Vec<(u32, usize)>,
    /// Completions collected in a round.
    batch: Vec<(u64, i32, u32)>,
    /// A receive found no buffer free this round: the ring grows at its end.
    starved: bool,
    /// Emptied vectors of drained directions, for the next receives to copy into: a
    /// request-response exchange then allocates nothing.
    spare: Vec<Vec<u8>>,
    /// The driver task, to wake when a relay was added or left.
    driver: Option<Waker>,
    /// Whether a turn is under way.
    in_turn: bool,
    /// Whether this kernel ends a multishot receive after a total it is given (6.16 and
    /// later; see [`Engine::capped_multishot_works`]): receives are then multishot, capped at
    /// one buffer's worth per arming, else single.
    capped: bool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("live", &self.live).finish_non_exhaustive()
    }
}

impl Drop for Engine {
    /// At the thread's exit: every operation still in flight is cancelled and waited for (for
    /// a second at most) before the memory they point at goes, then the buffers are
    /// unregistered.
    fn drop(&mut self) {
        for chunk in 0..self.conns.chunks.len() as u32 {
            for slot in chunk * CHUNK..(chunk + 1) * CHUNK {
                if let Some(conn) = self.conns[slot].conn.as_mut() {
                    conn.attached = false;
                    conn.waker = None;
                    self.end(slot, Ending::Aborted);
                }
            }
        }
        for index in 0..self.connects.len() {
            self.give_up_connect(index);
        }
        let tick = io_uring::types::Timespec::new().nsec(10_000_000);
        let args = io_uring::types::SubmitArgs::new().timespec(&tick);
        for _ in 0..100 {
            if self.live + self.connecting == 0 {
                break;
            }
            // Waits for a completion, or 10 ms.
            let _ = self.ring.submitter().submit_with_args(1, &args);
            self.collect();
        }
        if self.live + self.connecting > 0 {
            // Not all came back: their memory must outlive the kernel's use of it.
            std::mem::forget(std::mem::take(&mut self.conns));
            std::mem::forget(std::mem::take(&mut self.connects));
            return;
        }
        self.buffers.unregister(&self.ring);
    }
}

impl Engine {
    fn new() -> io::Result<Engine> {
        // Completions come as task work on this thread, run when it next enters the kernel
        // or wakes (not at once, by an interrupt: `COOP_TASKRUN`), and flagged meanwhile in
        // the ring (`TASKRUN_FLAG`, see `quiet`). See the module's docs for `DEFER_TASKRUN`.
        let ring = IoUring::builder()
            .setup_cqsize(ENTRIES * 8)
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .build(ENTRIES)
            // Kernels before 6.0 have neither flag: completions then interrupt the thread.
            .or_else(|_| IoUring::builder().setup_cqsize(ENTRIES * 8).build(ENTRIES))?;
        let buffers = Buffers::register(&ring)?;
        let mut engine = Engine {
            buffers,
            ring,
            conns: Slab::default(),
            free: Vec::new(),
            connects: Vec::new(),
            free_connects: Vec::new(),
            connecting: 0,
            timers: BinaryHeap::new(),
            live: 0,
            sends: Vec::new(),
            half_closes: Vec::new(),
            rearm: Vec::new(),
            batch: Vec::with_capacity(256),
            starved: false,
            spare: Vec::new(),
            driver: None,
            in_turn: false,
            capped: false,
        };
        engine.capped = engine.capped_multishot_works();
        Ok(engine)
    }

    /// A receive of at most one buffer's worth on `fd`: multishot with a total cap where the
    /// kernel has one (`capped`: each message of a request/response exchange then takes no new
    /// submission and no new poll until a buffer's worth has come), else a single receive
    /// that waits for readiness first.
    fn receive_entry(fd: RawFd, capped: bool) -> squeue::Entry {
        if !capped {
            return opcode::Recv::new(Fd(fd), std::ptr::null_mut(), buffers::SIZE as u32)
                .buf_group(buffers::GROUP)
                .ioprio(RECV_POLL_FIRST)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT);
        }
        let entry = opcode::RecvMulti::new(Fd(fd), buffers::GROUP).build();
        // The total goes in the entry's `optlen` (bytes 44-47), which the crate does not
        // expose.
        // SAFETY: an `Entry` is the kernel's 64-byte `io_uring_sqe` (`transmute` checks the
        // size), plain data; only that field changes.
        let mut bytes: [u8; 64] = unsafe { std::mem::transmute(entry) };
        bytes[44..48].copy_from_slice(&(buffers::SIZE as u32).to_ne_bytes());
        // SAFETY: as above.
        unsafe { std::mem::transmute::<[u8; 64], squeue::Entry>(bytes) }
    }

    /// Whether a multishot receive given a total ends after that total: asked of the kernel
    /// once, at set-up, on a socket pair holding three buffers' worth. Kernels before 6.16
    /// refuse the field (`EINVAL`); one that took it and went on receiving would be caught too,
    /// as would one that ended it with a completion of its own (which would read as an end of
    /// stream) rather than on its last bytes.
    fn capped_multishot_works(&mut self) -> bool {
        use std::io::Write;
        let Ok((mut ours, theirs)) = std::os::unix::net::UnixStream::pair() else { return false };
        if ours.write_all(&[0u8; 3 * buffers::SIZE]).is_err() {
            return false;
        }
        let entry = Self::receive_entry(theirs.as_raw_fd(), true).user_data(PROBE);
        self.buffers.publish();
        // SAFETY: the receive points at no memory of ours (its buffers are the engine's).
        unsafe { self.push(&entry) };
        let mut total = 0;
        let mut ending = None;
        for _ in 0..8 {
            let (bytes, ended) = self.probe_completions();
            total += bytes;
            ending = ending.or(ended);
            if ending.is_some() || total >= 3 * buffers::SIZE {
                break;
            }
        }
        if ending.is_none() {
            // Still receiving: no cap. Cancel it and wait for its end.
            let cancel = opcode::AsyncCancel::new(PROBE).build().user_data(CANCEL);
            // SAFETY: a cancellation points at no memory.
            unsafe { self.push(&cancel) };
            for _ in 0..8 {
                if self.probe_completions().1.is_some() {
                    break;
                }
            }
            return false;
        }
        ending.is_some_and(|result| result > 0) && total == buffers::SIZE
    }

    /// Submits and waits for a completion, then handles the probe's among those posted: gives
    /// their buffers back, and returns the bytes they carried and the result of the one that
    /// ended the receive, if one did.
    fn probe_completions(&mut self) -> (usize, Option<i32>) {
        if self.ring.submit_and_wait(1).is_err() {
            return (0, None);
        }
        let (mut bytes, mut ended) = (0, None);
        let completions: Vec<_> = self.ring.completion().collect();
        for c in completions.into_iter().filter(|c| c.user_data() == PROBE) {
            bytes += c.result().max(0) as usize;
            if let Some(bid) = cqueue::buffer_select(c.flags()) {
                self.buffers.give_back(bid);
            }
            if !cqueue::more(c.flags()) {
                ended = Some(c.result());
            }
        }
        self.buffers.publish();
        (bytes, ended)
    }

    /// Registers an eventfd the kernel signals when completions are ready (the ring holds its
    /// own reference), for the driver to wait on in the runtime. It is never read: each signal
    /// is an edge for the runtime's edge-triggered epoll, and the count cannot overflow.
    fn notify_fd(&mut self) -> io::Result<OwnedFd> {
        let fd = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?;
        self.ring.submitter().register_eventfd(fd.as_raw_fd())?;
        Ok(fd)
    }

    fn conn(&mut self, slot: u32) -> &mut Conn {
        self.conns[slot].conn.as_mut().expect("an operation of a live connection")
    }

    /// Queues `entry` for the next submission.
    ///
    /// # Safety
    /// What `entry` points to stays valid until its completion.
    unsafe fn push(&mut self, entry: &squeue::Entry) {
        loop {
            // SAFETY: as the caller promises.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return;
            }
            // Full: hand what is queued to the kernel, making room (with the buffers given
            // back so far visible to any receive among it).
            self.buffers.publish();
            if let Err(e) = self.ring.submit() {
                if e.raw_os_error() != Some(libc::EINTR) {
                    tracing::error!(error = %e, "io_uring submission failed");
                    std::thread::yield_now();
                }
            }
        }
    }

    /// Hands what is queued to the kernel if fewer than `n` entries are free, so that the next
    /// `n` pushes go in one submission.
    fn make_room(&mut self, n: usize) {
        let (queued, capacity) = {
            let submission = self.ring.submission();
            (submission.len(), submission.capacity())
        };
        if capacity - queued < n {
            self.buffers.publish();
            if let Err(e) = self.ring.submit() {
                tracing::error!(error = %e, "io_uring submission failed");
            }
        }
    }

    fn arm_receive(&mut self, slot: u32, d: usize) {
        let conn = self.conn(slot);
        let dir = &mut conn.dirs[d];
        if dir.receiving || dir.eof || conn.ending.is_some() {
            return;
        }
        dir.receiving = true;
        dir.paused = false;
        conn.in_flight += 1;
        let entry = Self::receive_entry(conn.fds[d], self.capped)
            .user_data(user_data(slot, OP_RECV + d as u64));
        // SAFETY: a receive points at no memory of ours (the kernel picks a buffer of the
        // ring, which lives as long as the engine).
        unsafe { self.push(&entry) };
    }

    /// Sends what direction `d` has, if nothing is in flight.
    ///
    /// Once the reader's end of stream is in, the send says so (`MSG_MORE`): the kernel holds a
    /// short last piece back, and the `shutdown` (or close) that follows once it is sent puts
    /// the FIN on that same segment. A response followed by a close (every `Connection:
    /// close` exchange) then costs the peer one packet and one acknowledgement instead of two
    /// of each, and a wake-up less. Nothing waits on it: the half-close or close that
    /// releases the segment is issued when this send completes.
    fn send(&mut self, slot: u32, d: usize) {
        let conn = self.conn(slot);
        if conn.ending.is_some() {
            return;
        }
        let dir = &mut conn.dirs[d];
        if dir.in_flight {
            return;
        }
        if dir.sent == dir.sending.len() {
            if dir.next.is_empty() {
                return;
            }
            // The sent buffer's memory is reused for the next round's receives.
            dir.sending.clear();
            std::mem::swap(&mut dir.sending, &mut dir.next);
            dir.sent = 0;
        }
        let rest = &dir.sending[dir.sent..];
        let (ptr, len) = (rest.as_ptr(), rest.len() as u32);
        dir.in_flight = true;
        conn.in_flight += 1;
        let to = conn.fds[1 - d];
        let last = if dir.eof { libc::MSG_MORE } else { 0 };
        let entry = opcode::Send::new(Fd(to), ptr, len)
            .flags(libc::MSG_NOSIGNAL | last)
            .build()
            .user_data(user_data(slot, OP_SEND + d as u64));
        // SAFETY: `sending` is neither changed nor dropped while its send is in flight: it is
        // only touched again on this send's completion, and a connection (with its `Dir`s) is
        // only freed when nothing is in flight.
        unsafe { self.push(&entry) };
    }

    /// Decides how the connection ends and cancels what is in flight; the outcome reaches the
    /// future once everything has completed.
    fn end(&mut self, slot: u32, ending: Ending) {
        let conn = self.conn(slot);
        if conn.ending.is_some() {
            return;
        }
        conn.ending = Some(Box::new(ending));
        let mut cancels = [None; 4];
        for d in [UP, DOWN] {
            if conn.dirs[d].receiving {
                cancels[d] = Some(user_data(slot, OP_RECV + d as u64));
            }
            if conn.dirs[d].in_flight {
                cancels[2 + d] = Some(user_data(slot, OP_SEND + d as u64));
            }
        }
        for target in cancels.into_iter().flatten() {
            self.cancel(target);
        }
        self.settle(slot);
    }

    /// Cancels the operation whose `user_data` is `target`.
    fn cancel(&mut self, target: u64) {
        let entry = opcode::AsyncCancel::new(target).build().user_data(CANCEL);
        // SAFETY: a cancellation points at no memory.
        unsafe { self.push(&entry) };
    }

    /// Once nothing is in flight: wakes the future to take its outcome, or frees the slot of
    /// one that went away.
    fn settle(&mut self, slot: u32) {
        let Some(conn) = self.conns[slot].conn.as_mut() else { return };
        if conn.in_flight > 0 || conn.ending.is_none() {
            return;
        }
        if conn.attached {
            if let Some(waker) = conn.waker.take() {
                waker.wake();
            }
        } else {
            self.release(slot);
        }
    }

    fn release(&mut self, slot: u32) {
        let entry = &mut self.conns[slot];
        entry.conn = None;
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(slot);
        self.live -= 1;
    }

    /// Handles every completion posted.
    fn collect(&mut self) {
        let mut batch = std::mem::take(&mut self.batch);
        batch.extend(self.ring.completion().map(|c| (c.user_data(), c.result(), c.flags())));
        let now = Instant::now();
        for &(data, res, flags) in &batch {
            self.complete(data, res, flags, now);
        }
        batch.clear();
        self.batch = batch;
    }

    /// Handles one completion.
    fn complete(&mut self, data: u64, res: i32, flags: u32, now: Instant) {
        if data == CANCEL || data == PROBE {
            return;
        }
        if data & OP_CONNECT != 0 {
            self.connected((data & !OP_CONNECT) as usize, res);
            return;
        }
        let slot = (data >> 2) as u32;
        let op = data & 3;
        match op {
            OP_RECV | 1 => self.received(slot, op as usize, res, flags, now),
            _ => self.sent(slot, (op - OP_SEND) as usize, res),
        }
        self.settle(slot);
    }

    fn received(&mut self, slot: u32, d: usize, res: i32, flags: u32, now: Instant) {
        let more = cqueue::more(flags);
        let conn = self.conns[slot].conn.as_mut().expect("a live connection");
        if !more {
            conn.dirs[d].receiving = false;
            conn.in_flight -= 1;
        }
        if res > 0 {
            let bid = cqueue::buffer_select(flags).expect("a receive with data names its buffer");
            let n = res as usize;
            let data = self.buffers.data(bid, n);
            let conn = self.conns[slot].conn.as_mut().expect("a live connection");
            let keep = match conn.ending.as_deref() {
                None => true,
                // Still the client's, for the next backend: the replay copy below keeps it.
                Some(Ending::Empty(_)) => d == UP,
                // The epoll engine carries on with it.
                Some(Ending::Bulk(_)) => true,
                Some(Ending::End(_) | Ending::Aborted) => false,
            };
            if keep {
                conn.bytes[d] += n as u64;
                if d == UP {
                    conn.meter.record_in(n as u64);
                    if conn.timing.any() {
                        conn.timing.last_up = now;
                    }
                    if let Some(kept) = &mut conn.replay {
                        if kept.len() + n > REPLAY_LIMIT {
                            conn.replay = None;
                        } else {
                            kept.extend_from_slice(data);
                        }
                    }
                } else {
                    conn.meter.record_out(n as u64);
                    if conn.timing.any() {
                        conn.timing.last_down = now;
                    }
                    // The backend answered: nothing to replay any more.
                    conn.replay = None;
                }
                let dir = &mut conn.dirs[d];
                if !matches!(conn.ending.as_deref(), Some(Ending::Empty(_))) {
                    if dir.next.capacity() == 0 {
                        dir.next = self.spare.pop().unwrap_or_default();
                    }
                    dir.next.extend_from_slice(data);
                }
                dir.bulk = n == buffers::SIZE;
                let bulk = dir.bulk && conn.replay.is_none();
                let unsent = dir.unsent();
                let receiving = dir.receiving;
                self.buffers.give_back(bid);
                if conn.ending.is_none() {
                    if bulk {
                        self.end(slot, Ending::Bulk([None, None]));
                        return;
                    }
                    self.sends.push((slot, d));
                    if unsent >= PAUSE_AT {
                        // Backpressure: no more from this reader until the writer catches up
                        // (not re-armed, see `end_of_round`; or cancelled if still armed).
                        self.conn(slot).dirs[d].paused = true;
                        if receiving {
                            self.cancel(user_data(slot, OP_RECV + d as u64));
                        }
                    }
                }
            } else {
                self.buffers.give_back(bid);
            }
            if !more {
                self.rearm.push((slot, d));
            }
            return;
        }
        if res == 0 {
            let conn = self.conn(slot);
            conn.dirs[d].eof = true;
            if conn.timing.any() {
                let at = Some(now);
                if d == UP {
                    conn.timing.client_eof_at = at;
                } else {
                    conn.timing.backend_eof_at = at;
                }
            }
            if conn.ending.is_some() {
                return;
            }
            if d == DOWN && conn.empty_end(false) {
                self.end(slot, Ending::Empty(None));
                return;
            }
            self.half_closes.push((slot, d));
            self.schedule(slot);
            return;
        }
        let errno = -res;
        if errno == libc::ENOBUFS {
            // Every buffer was taken when data came: again once some are back, and with more
            // buffers from this round's end.
            self.starved = true;
            self.rearm.push((slot, d));
            return;
        }
        if errno == libc::ECANCELED {
            // Paused for backpressure (re-armed once drained: maybe already), or ending.
            if self.conn(slot).dirs[d].paused {
                self.rearm.push((slot, d));
            }
            return;
        }
        let (reader, _) = Conn::sides(d);
        if self.failed_after_ending(slot, Some(d), errno) {
            return;
        }
        let error = io::Error::from_raw_os_error(errno);
        let conn = self.conn(slot);
        if reader == Side::Backend && conn.empty_end(true) {
            self.end(slot, Ending::Empty(Some(error)));
        } else {
            self.end(slot, Ending::End(RelayEnd::Failed(reader, error)));
        }
    }

    fn sent(&mut self, slot: u32, d: usize, res: i32) {
        let conn = self.conns[slot].conn.as_mut().expect("a live connection");
        conn.in_flight -= 1;
        let dir = &mut conn.dirs[d];
        dir.in_flight = false;
        if res >= 0 {
            dir.sent += res as usize;
            if conn.ending.is_some() {
                return;
            }
            let drained = dir.unsent() == 0;
            if drained {
                // An idle connection holds no bytes (nor the capacity of earlier rounds): its
                // vectors go to the engine's spares, for the next receive of any connection.
                for mut bytes in [std::mem::take(&mut dir.sending), std::mem::take(&mut dir.next)] {
                    if bytes.capacity() > 0
                        && bytes.capacity() <= SPARE_CAPACITY
                        && self.spare.len() < SPARES
                    {
                        bytes.clear();
                        self.spare.push(bytes);
                    }
                }
                dir.sent = 0;
            }
            let rearm = dir.paused && !dir.receiving && dir.unsent() < PAUSE_AT;
            let half_close = drained && dir.eof && !dir.done;
            self.send(slot, d);
            if rearm {
                self.rearm.push((slot, d));
            }
            if half_close {
                self.half_closes.push((slot, d));
            }
            return;
        }
        let errno = -res;
        if errno == libc::ECANCELED {
            return;
        }
        let (_, writer) = Conn::sides(d);
        if self.failed_after_ending(slot, None, errno) {
            return;
        }
        let error = io::Error::from_raw_os_error(errno);
        let conn = self.conn(slot);
        if writer == Side::Backend && conn.empty_end(true) {
            self.end(slot, Ending::Empty(Some(error)));
        } else {
            self.end(slot, Ending::End(RelayEnd::Failed(writer, error)));
        }
    }

    /// A connect's completion: its future learns the outcome, or a future that went away
    /// leaves its entry free.
    fn connected(&mut self, index: usize, res: i32) {
        self.connecting -= 1;
        let Some(connect) = self.connects[index].as_mut() else { return };
        if connect.attached {
            connect.result = Some(res);
            if let Some(waker) = connect.waker.take() {
                waker.wake();
            }
        } else {
            self.free_connect(index);
        }
    }

    /// The connect's future went away: a completed connect's entry is freed; one still in
    /// flight is cancelled, its entry freed when its completion comes. Returns whether a
    /// cancellation was queued.
    fn give_up_connect(&mut self, index: usize) -> bool {
        let Some(connect) = self.connects[index].as_mut() else { return false };
        if connect.result.is_some() {
            self.free_connect(index);
            return false;
        }
        connect.attached = false;
        connect.waker = None;
        self.cancel(OP_CONNECT | index as u64);
        true
    }

    fn free_connect(&mut self, index: usize) {
        self.connects[index] = None;
        self.free_connects.push(index as u32);
    }

    /// A receive or send of a connection whose end is already decided failed with `errno`:
    /// returns whether the end was decided (nothing else is then to be done). A receive's
    /// error goes with a hand-over to epoll, to end its relay once the bytes received before
    /// it are written: the kernel reports a socket's error once, and the epoll relay would
    /// otherwise find the reset socket merely at its end and log a backend that reset in the
    /// middle of an answer as a normal close. (A send's error needs no such care: the epoll
    /// relay's next write to that socket fails too.)
    fn failed_after_ending(&mut self, slot: u32, receive: Option<usize>, errno: i32) -> bool {
        let conn = self.conn(slot);
        match (conn.ending.as_deref_mut(), receive) {
            (None, _) => false,
            (Some(Ending::Bulk(failed)), Some(d)) => {
                failed[d] = Some(io::Error::from_raw_os_error(errno));
                true
            }
            (Some(_), _) => true,
        }
    }

    fn check_closed(&mut self, slot: u32) {
        let conn = self.conn(slot);
        if conn.dirs[UP].done && conn.dirs[DOWN].done && conn.ending.is_none() {
            self.end(slot, Ending::End(RelayEnd::Closed));
        }
    }

    /// Passes on the half-closes due this turn. A direction whose other direction has reached
    /// its end of stream too needs none: both sockets are about to be closed, which sends the
    /// FIN anyway (one `shutdown` less per connection, as in the epoll engine).
    fn half_close(&mut self, slot: u32, d: usize) {
        let Some(conn) = self.conns[slot].conn.as_mut() else { return };
        let dir = &conn.dirs[d];
        if conn.ending.is_some() || !dir.eof || dir.done || dir.unsent() > 0 {
            return;
        }
        let other = &conn.dirs[1 - d];
        if other.eof && other.unsent() == 0 && !other.in_flight {
            conn.dirs[d].done = true;
            conn.dirs[1 - d].done = true;
            self.check_closed(slot);
            return;
        }
        // A system call of its own rather than an entry: the ring runs a shutdown on a kernel
        // worker thread (it may block), a thread switch dearer than the call.
        let fd = conn.fds[1 - d];
        // SAFETY: `shutdown` on a descriptor the connection's task keeps open while the relay
        // is attached (a detached relay is ending, and half-closes nothing).
        let failed = unsafe { libc::shutdown(fd, libc::SHUT_WR) } != 0;
        let error = io::Error::last_os_error();
        // The peer already gone has nothing left to be told.
        if failed && error.raw_os_error() != Some(libc::ENOTCONN) {
            let (_, writer) = Conn::sides(d);
            self.end(slot, Ending::End(RelayEnd::Failed(writer, error)));
            return;
        }
        conn.dirs[d].done = true;
        self.check_closed(slot);
    }

    /// The end-of-round work: sends, half-closes, re-arms, buffers back to the kernel.
    fn end_of_round(&mut self) {
        let sends = std::mem::take(&mut self.sends);
        for &(slot, d) in &sends {
            if self.conns[slot].conn.is_some() {
                self.send(slot, d);
            }
        }
        self.sends = sends;
        self.sends.clear();
        let half_closes = std::mem::take(&mut self.half_closes);
        for &(slot, d) in &half_closes {
            if self.conns[slot].conn.is_some() {
                self.half_close(slot, d);
                self.settle(slot);
            }
        }
        self.half_closes = half_closes;
        self.half_closes.clear();
        // Buffers first, grown if a receive found none, and visible to the kernel before any
        // re-armed receive is submitted: one submitted early (a full queue is handed over at
        // once) would otherwise find none free while this round's sit unpublished.
        if std::mem::take(&mut self.starved) && self.buffers.grow() {
            tracing::debug!(buffers = self.buffers.provided(), "io_uring receive buffers grown");
        }
        self.buffers.publish();
        let rearm = std::mem::take(&mut self.rearm);
        for &(slot, d) in &rearm {
            let Some(conn) = self.conns[slot].conn.as_ref() else { continue };
            let dir = &conn.dirs[d];
            if dir.unsent() < PAUSE_AT || !dir.paused {
                self.arm_receive(slot, d);
            }
        }
        self.rearm = rearm;
        self.rearm.clear();
    }

    /// Puts the connection's next deadline on the timer heap, if earlier than what it holds.
    fn schedule(&mut self, slot: u32) {
        let generation = self.conns[slot].generation;
        let conn = self.conn(slot);
        if !conn.timing.any() || conn.ending.is_some() {
            return;
        }
        if let Some((at, _)) = conn.next_deadline() {
            if conn.timer_at.is_none_or(|armed| at < armed) {
                conn.timer_at = Some(at);
                self.timers.push(Reverse((at, slot, generation)));
                if !self.in_turn {
                    if let Some(driver) = &self.driver {
                        // The driver's timer may be armed for later (a turn re-arms it anyway).
                        driver.wake_by_ref();
                    }
                }
            }
        }
    }

    /// Ends the connections whose time limit has passed (their cancellations are queued for
    /// the next turn to submit).
    fn expire(&mut self, now: Instant) {
        if self.timers.len() > 2 * self.live + 64 {
            let conns = &self.conns;
            self.timers.retain(|Reverse((_, slot, generation))| {
                let entry = &conns[*slot];
                entry.generation == *generation && entry.conn.is_some()
            });
        }
        while let Some(&Reverse((at, slot, generation))) = self.timers.peek() {
            if at > now {
                return;
            }
            self.timers.pop();
            let entry = &mut self.conns[slot];
            if entry.generation != generation {
                continue;
            }
            let Some(conn) = entry.conn.as_mut() else { continue };
            if conn.ending.is_some() || conn.timer_at != Some(at) {
                continue;
            }
            conn.timer_at = None;
            match conn.next_deadline() {
                Some((due, end)) if due <= now => self.end(slot, Ending::End(end)),
                Some((due, _)) => {
                    conn.timer_at = Some(due);
                    self.timers.push(Reverse((due, slot, generation)));
                }
                None => {}
            }
        }
    }

    /// Whether nothing is queued and no completion is waiting: neither posted, nor flagged by
    /// the kernel as work to run on our next entry (`IORING_SQ_TASKRUN`).
    fn quiet(&mut self) -> bool {
        let pending = {
            let submission = self.ring.submission();
            !submission.is_empty() || submission.taskrun()
        };
        !pending && self.ring.completion().is_empty()
    }

    /// Submits what is queued and processes completions until there are none and nothing is
    /// queued, or for [`MAX_ROUNDS`] rounds. Returns whether it stopped early with work left.
    fn turn(&mut self) -> bool {
        self.in_turn = true;
        // The kernel's signals are off during the turn (the turn collects whatever comes), so
        // the completions it posts itself do not wake the driver again for nothing.
        self.ring.completion().disable_eventfd();
        let mut busy = true;
        for _ in 0..MAX_ROUNDS {
            let queued = self.ring.submission().len() as u32;
            // SAFETY: no argument; every queued entry's memory is kept alive (see `push`).
            let entered = unsafe {
                self.ring.submitter().enter::<libc::sigset_t>(queued, 0, ENTER_GETEVENTS, None)
            };
            if let Err(e) = entered {
                let errno = e.raw_os_error();
                // Interrupted, or busy with completions to collect first: collect them.
                if ![Some(libc::EINTR), Some(libc::EBUSY), Some(libc::EAGAIN)].contains(&errno) {
                    tracing::error!(error = %e, "io_uring_enter failed");
                }
            }
            self.collect();
            self.end_of_round();
            // Another round only for entries to submit or completions to collect: without
            // either, entering again would only find nothing.
            if self.quiet() {
                // About to sleep: signals back on, then a last look for work that came while
                // they were off.
                self.ring.completion().enable_eventfd();
                if self.quiet() {
                    busy = false;
                    break;
                }
                self.ring.completion().disable_eventfd();
            }
        }
        if busy {
            self.ring.completion().enable_eventfd();
            // Nothing may stay queued while the driver yields: a connection's task could close
            // a socket an entry names.
            if let Err(e) = self.ring.submit() {
                tracing::error!(error = %e, "io_uring submission failed");
            }
        }
        self.in_turn = false;
        busy
    }
}

/// Runs `f` on this thread's engine, if it has one.
fn with_engine<R>(f: impl FnOnce(&mut Engine) -> R) -> Option<R> {
    ENGINE.try_with(|cell| cell.try_borrow_mut().ok()?.as_mut().map(f)).ok().flatten()
}

/// This thread's engine, set up (with its driver task) on first use; `None` where it cannot
/// run (not a single-threaded runtime, or io_uring refused), after a warning the first time.
pub(crate) fn ensure_engine() -> bool {
    if UNAVAILABLE.get() || !on_current_thread_runtime() {
        return false;
    }
    // An engine is only ever set with its driver task started.
    if ENGINE.with_borrow(Option::is_some) {
        return true;
    }
    let started = (|| -> io::Result<AsyncFd<OwnedFd>> {
        let mut engine = Engine::new()?;
        let fd = engine.notify_fd()?;
        // SAFETY: the descriptor is owned by the `AsyncFd`, open until it is dropped.
        let notify = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        ENGINE.set(Some(engine));
        Ok(notify)
    })();
    match started {
        Ok(notify) => {
            tokio::spawn(Driver { notify, timer: None });
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot set up io_uring on this worker thread; its connections use epoll");
            UNAVAILABLE.set(true);
            false
        }
    }
}

/// The task that runs a thread's engine: a turn whenever the kernel signals completions, a
/// relay was added or left, or a deadline passes.
struct Driver {
    notify: AsyncFd<OwnedFd>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            // Readiness is cleared before the turn, so a signal during it wakes us again.
            if let Poll::Ready(Ok(mut guard)) = this.notify.poll_read_ready(cx) {
                guard.clear_ready();
            }
            let outcome = with_engine(|engine| {
                engine.driver = Some(cx.waker().clone());
                // Expired first: the turn submits the cancellations that end them.
                engine.expire(Instant::now());
                let busy = engine.turn();
                (busy, engine.timers.peek().map(|Reverse((at, _, _))| *at))
            });
            let Some((busy, next)) = outcome else { return Poll::Ready(()) };
            if busy {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match next {
                Some(at) => {
                    let timer =
                        this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                    if timer.deadline() != at {
                        timer.as_mut().reset(at);
                    }
                    if timer.as_mut().poll(cx).is_ready() {
                        continue;
                    }
                }
                None => this.timer = None,
            }
            if this.notify.poll_read_ready(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// A relay running on this thread's engine; resolves to how it ended. Dropping it before then
/// stops the relay at once (the connection's task was aborted).
#[derive(Debug)]
pub(crate) struct UringRelay<'a> {
    slot: u32,
    generation: u32,
    traffic: &'a Traffic,
    done: bool,
}

/// Starts relaying between `client` and `backend` on this thread's engine, or gives `first`
/// and `replay` back where the engine cannot run (the caller then relays with epoll).
///
/// `first` is written to the backend before anything else (a PROXY header, the client's bytes
/// read while inspecting or a replay; recorded by the caller); `client_eof` says whether the
/// client had already half-closed; `replay`, if kept, is the client's bytes before this relay,
/// to which the relay adds for a replay should the backend end without a word. Bytes are
/// recorded on `meter` as they pass, and on `traffic` when the relay ends.
///
/// The caller keeps both sockets open until the returned future has completed or been
/// dropped.
#[allow(clippy::too_many_arguments)]
pub(crate) fn relay<'a>(
    client: RawFd,
    backend: RawFd,
    meter: ByteMeter,
    traffic: &'a Traffic,
    timeouts: Timeouts,
    first: Vec<u8>,
    client_eof: bool,
    replay: Option<Vec<u8>>,
) -> Result<UringRelay<'a>, (Vec<u8>, Option<Vec<u8>>)> {
    if !ensure_engine() {
        return Err((first, replay));
    }
    let now = Instant::now();
    let timing = Timing::new(timeouts, now);
    let mut conn = Conn {
        fds: [client, backend],
        dirs: [Dir::default(), Dir::default()],
        meter,
        bytes: [0; 2],
        client_sent_before: traffic.bytes_in.load(Relaxed) > 0,
        timing,
        timer_at: None,
        replay: replay.filter(|r| r.len() <= REPLAY_LIMIT),
        ending: None,
        in_flight: 0,
        waker: None,
        attached: true,
    };
    conn.dirs[UP].next = first;
    if client_eof {
        conn.dirs[UP].eof = true;
        conn.timing.client_eof_at = Some(now);
    }
    let mut conn = Some(conn);
    let started = with_engine(|engine| {
        let slot = match engine.free.pop() {
            Some(slot) => slot,
            None => engine.conns.grow(),
        };
        let entry = &mut engine.conns[slot];
        entry.conn = conn.take();
        let generation = entry.generation;
        engine.live += 1;
        engine.arm_receive(slot, UP);
        engine.arm_receive(slot, DOWN);
        engine.send(slot, UP);
        if client_eof {
            engine.half_closes.push((slot, UP));
        }
        engine.schedule(slot);
        if let Some(driver) = &engine.driver {
            driver.wake_by_ref();
        }
        UringRelay { slot, generation, traffic, done: false }
    });
    match (started, conn) {
        (Some(relay), _) => Ok(relay),
        (None, Some(mut conn)) => Err((std::mem::take(&mut conn.dirs[UP].next), conn.replay)),
        (None, None) => unreachable!("the engine took the connection"),
    }
}

/// Starts connecting `socket` (non-blocking, not yet connected) to `addr` on this thread's
/// engine, giving up after `limit`; `None` if the thread has no engine, for the caller to
/// connect with epoll.
///
/// On the ring the connect needs no registration with epoll and no readiness event, and the
/// socket none afterwards if its relay runs on the ring too: on loopback or a fast network the
/// handshake completes within the `io_uring_enter` that submits it. The time limit is a
/// linked timeout, run by the kernel. The caller keeps `socket` open until the returned future
/// has completed or been dropped.
pub(crate) fn connect(
    socket: &socket2::Socket,
    addr: std::net::SocketAddr,
    limit: std::time::Duration,
) -> Option<RingConnect> {
    let fd = socket.as_raw_fd();
    with_engine(|engine| {
        let connect = Box::new(Connecting {
            addr: addr.into(),
            limit: io_uring::types::Timespec::from(limit),
            result: None,
            waker: None,
            attached: true,
        });
        let index = match engine.free_connects.pop() {
            Some(index) => index,
            None => {
                engine.connects.push(None);
                engine.connects.len() as u32 - 1
            }
        };
        let entry = opcode::Connect::new(Fd(fd), connect.addr.as_ptr().cast(), connect.addr.len())
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(OP_CONNECT | u64::from(index));
        let timeout = opcode::LinkTimeout::new(&connect.limit).build().user_data(CANCEL);
        engine.connects[index as usize] = Some(connect);
        engine.connecting += 1;
        // The two go to the kernel together (a link cannot span two submissions).
        engine.make_room(2);
        // SAFETY: the address and the time limit are boxed in `connects`, kept until the
        // completion (a future that goes away leaves them there; the engine's drop outwaits
        // or leaks them).
        unsafe {
            engine.push(&entry);
            engine.push(&timeout);
        }
        if let Some(driver) = &engine.driver {
            driver.wake_by_ref();
        }
        RingConnect { index, done: false }
    })
}

/// How a connect on the ring ended.
#[derive(Debug)]
pub(crate) enum Connected {
    Yes,
    Failed(io::Error),
    /// Its time limit passed first.
    TimedOut,
}

/// A connect on this thread's engine ([`connect`]); resolves to its outcome. Dropping it
/// before then cancels the connect.
#[derive(Debug)]
pub(crate) struct RingConnect {
    index: u32,
    done: bool,
}

impl Future for RingConnect {
    type Output = Connected;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Connected> {
        let index = self.index as usize;
        let result = with_engine(|engine| {
            let connect = engine.connects[index].as_mut().expect("a connect's entry outlives it");
            let Some(result) = connect.result else {
                connect.waker = Some(cx.waker().clone());
                return None;
            };
            engine.free_connect(index);
            Some(result)
        });
        let connected = match result {
            Some(None) => return Poll::Pending,
            Some(Some(result)) if result >= 0 => Connected::Yes,
            // Cancelled by its linked timeout (a cancellation of ours comes only once the
            // future is gone).
            Some(Some(result)) if -result == libc::ECANCELED => Connected::TimedOut,
            Some(Some(result)) => Connected::Failed(io::Error::from_raw_os_error(-result)),
            None => Connected::Failed(io::Error::other("the worker thread is stopping")),
        };
        self.done = true;
        Poll::Ready(connected)
    }
}

impl Drop for RingConnect {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let index = self.index as usize;
        with_engine(|engine| {
            // The caller closes the socket next: a connect still naming it goes to the kernel
            // now (with its cancellation), while the number is still its.
            if engine.give_up_connect(index) {
                if let Err(e) = engine.ring.submit() {
                    tracing::error!(error = %e, "io_uring submission failed");
                }
            }
        });
    }
}

impl Future for UringRelay<'_> {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let (slot, generation) = (self.slot, self.generation);
        let taken = with_engine(|engine| {
            let entry = &mut engine.conns[slot];
            assert_eq!(entry.generation, generation, "a relay's slot outlives it");
            let conn = entry.conn.as_mut().expect("a relay's slot outlives it");
            if conn.in_flight > 0 || conn.ending.is_none() {
                conn.waker = Some(cx.waker().clone());
                return None;
            }
            let conn = entry.conn.take().expect("checked above");
            engine.release(slot);
            Some(conn)
        });
        let Some(taken) = taken else {
            // No engine: the thread is shutting down.
            self.done = true;
            return Poll::Ready(Outcome::Ended(RelayEnd::Failed(
                Side::Client,
                io::Error::other("the worker thread is stopping"),
            )));
        };
        let Some(mut conn) = taken else { return Poll::Pending };
        self.done = true;
        conn.count_on(self.traffic);
        Poll::Ready(match *conn.ending.take().expect("checked above") {
            Ending::End(end) => Outcome::Ended(end),
            Ending::Empty(error) => Outcome::Ended(RelayEnd::Empty {
                error,
                replay: conn.replay.take(),
                client_eof: conn.dirs[UP].eof,
            }),
            Ending::Bulk(mut failed) => {
                let [up, down] = std::array::from_fn(|d| {
                    let dir = &mut conn.dirs[d];
                    ResumedHalf {
                        pending: dir.take_unsent(),
                        eof: dir.eof,
                        done: dir.done,
                        bulk: dir.bulk,
                        failed: failed[d].take(),
                    }
                });
                Outcome::Bulk(Resumed { up, down, timing: conn.timing, replay: conn.replay })
            }
            Ending::Aborted => unreachable!("only a dropped relay aborts"),
        })
    }
}

impl Drop for UringRelay<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (slot, generation) = (self.slot, self.generation);
        with_engine(|engine| {
            let entry = &mut engine.conns[slot];
            let Some(conn) = entry.conn.as_mut().filter(|_| entry.generation == generation) else {
                return;
            };
            conn.attached = false;
            conn.waker = None;
            // What moved so far, for the access line the task writes next (a relay cut by a
            // shutdown or a drain's deadline).
            conn.count_on(self.traffic);
            if conn.ending.is_none() {
                engine.end(slot, Ending::Aborted);
            } else {
                engine.settle(slot);
            }
            // The task closes the sockets next: every entry naming them goes to the kernel
            // now, while the numbers are still theirs (cancellations name operations, not
            // sockets, and may follow later).
            if let Err(e) = engine.ring.submit() {
                tracing::error!(error = %e, "io_uring submission failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;

    fn socket_for(addr: SocketAddr) -> socket2::Socket {
        socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM.nonblocking(),
            None,
        )
        .unwrap()
    }

    /// A listener whose accept queue is full: further connects to it get no answer (the
    /// kernel drops their SYNs), so they hang until their time limit.
    fn unanswering_listener() -> (SocketAddr, std::net::TcpListener, std::net::TcpStream) {
        let socket = socket_for("127.0.0.1:0".parse().unwrap());
        socket.set_nonblocking(false).unwrap();
        socket.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
        socket.listen(0).unwrap();
        let listener: std::net::TcpListener = socket.into();
        let addr = listener.local_addr().unwrap();
        // Backlog 0 holds one connection, never accepted.
        let filler = std::net::TcpStream::connect(addr).unwrap();
        (addr, listener, filler)
    }

    /// Nothing in flight and no entry left: every connect's memory is back.
    fn connects_settled() -> bool {
        with_engine(|e| e.connecting == 0 && e.connects.iter().all(Option::is_none)).unwrap()
    }

    #[tokio::test]
    async fn connects_on_the_ring_succeed_fail_and_time_out() {
        assert!(ensure_engine(), "io_uring is needed for this test");

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let socket = socket_for(addr);
        let connecting = connect(&socket, addr, Duration::from_secs(10)).unwrap();
        assert!(matches!(connecting.await, Connected::Yes));
        let (accepted, from) = listener.accept().unwrap();
        assert_eq!(from, socket.local_addr().unwrap().as_socket().unwrap());
        drop(accepted);
        assert!(connects_settled());

        drop(listener);
        let socket = socket_for(addr);
        let outcome = connect(&socket, addr, Duration::from_secs(10)).unwrap().await;
        let Connected::Failed(e) = outcome else { panic!("{outcome:?}") };
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert!(connects_settled());

        let (addr, _listener, _filler) = unanswering_listener();
        let socket = socket_for(addr);
        let outcome = connect(&socket, addr, Duration::from_millis(50)).unwrap().await;
        assert!(matches!(outcome, Connected::TimedOut), "{outcome:?}");
        assert!(connects_settled());
    }

    #[tokio::test]
    async fn a_connect_given_up_is_cancelled_and_its_entry_freed() {
        assert!(ensure_engine(), "io_uring is needed for this test");
        let (addr, _listener, _filler) = unanswering_listener();
        let socket = socket_for(addr);
        let connecting = connect(&socket, addr, Duration::from_secs(3600)).unwrap();
        // Given up on by its caller (a shutdown cutting the connection, say).
        assert!(tokio::time::timeout(Duration::from_millis(20), connecting).await.is_err());
        drop(socket);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !connects_settled() {
            assert!(std::time::Instant::now() < deadline, "the cancelled connect never completed");
            tokio::task::yield_now().await;
        }
        // The slot serves the next connect.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let socket = socket_for(addr);
        assert!(matches!(
            connect(&socket, addr, Duration::from_secs(10)).unwrap().await,
            Connected::Yes
        ));
        assert_eq!(with_engine(|e| e.connects.len()).unwrap(), 1, "one entry, reused");
    }

    /// A connected pair of loopback sockets: (the end lb holds, the peer's).
    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        (ours, peer)
    }

    /// A backend with a lot queued for a client that reads nothing: the relay goes to
    /// splice holding at most one pause's worth and one buffer, not whatever the socket had
    /// (a multishot receive took buffer after buffer while data was there: 0.5-1 MB a
    /// connection).
    #[tokio::test]
    async fn what_a_relay_holds_for_a_reader_that_stalls_is_bounded() {
        assert!(ensure_engine());
        holds_at_most_a_pause_and_a_buffer().await;
    }

    /// The same with single receives, as on kernels without a capped multishot receive.
    #[tokio::test]
    async fn what_a_relay_holds_with_single_receives_is_bounded() {
        assert!(ensure_engine());
        with_engine(|e| e.capped = false);
        holds_at_most_a_pause_and_a_buffer().await;
    }

    async fn holds_at_most_a_pause_and_a_buffer() {
        use std::io::Write;
        let (client, _client_peer) = pair();
        let (backend, mut backend_peer) = pair();
        // Room for a few times the bound (the kernel caps it at twice `rmem_max`).
        socket2::SockRef::from(&backend).set_recv_buffer_size(1 << 20).unwrap();
        // The backend writes until its socket and lb's are full (then fails once dropped).
        let writer = std::thread::spawn(move || {
            let chunk = vec![7u8; 64 * 1024];
            for _ in 0..128 {
                if backend_peer.write_all(&chunk).is_err() {
                    break;
                }
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let queued = || rustix::io::ioctl_fionread(&backend).unwrap_or(0);
        let enough = (2 * (PAUSE_AT + buffers::SIZE)) as u64;
        while queued() < enough && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(queued() >= enough, "{} bytes queued at lb", queued());
        let pool = lb_core::Pool::new(lb_core::PoolConfig::default()).unwrap();
        pool.add("127.0.0.1:9".parse().unwrap(), None).unwrap();
        let lease = pool.pick(None, &[]).unwrap();
        let traffic = Traffic::default();
        let relay = relay(
            client.as_raw_fd(),
            backend.as_raw_fd(),
            lease.byte_meter(),
            &traffic,
            Timeouts::default(),
            Vec::new(),
            false,
            None,
        )
        .expect("an engine on this thread");
        let held = match tokio::time::timeout(Duration::from_secs(10), relay).await.unwrap() {
            Outcome::Bulk(resumed) => resumed.down.pending.len() + resumed.up.pending.len(),
            Outcome::Ended(end) => panic!("handed over to splice, not {end:?}"),
        };
        assert!(held > 0 && held <= PAUSE_AT + buffers::SIZE, "held {held} bytes");
        drop((client, backend, _client_peer));
        writer.join().unwrap();
    }

    #[tokio::test]
    async fn no_engine_no_ring_connect() {
        // A thread without an engine: the caller connects with epoll.
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let socket = socket_for(addr);
        let on_other_thread =
            std::thread::spawn(move || connect(&socket, addr, Duration::from_secs(1)).is_none());
        assert!(on_other_thread.join().unwrap());
    }
}
