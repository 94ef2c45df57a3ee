//! Copying bytes both ways between a client and a backend, with half-close, timeouts and live
//! byte counts.
//!
//! Memory: a relay owns no buffer while its connection is idle. Reads go into one scratch buffer
//! per thread and are written straight on; only when the other side cannot take everything
//! (backpressure) is the remainder copied into a buffer owned by that direction, which is freed
//! as soon as it has been written. Thousands of idle connections therefore cost their sockets
//! and a few hundred bytes of state each, not two 64 KiB buffers.

mod half;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use lb_core::Lease;
use tokio::time::{Instant, Sleep};

use crate::connector::ByteStream;
use half::{Half, Step};

/// How soon after connecting a backend's close counts as an empty answer although the client
/// has sent nothing: a backend that accepts and hangs up at once does so within milliseconds,
/// while one closing an idle connection after its own timeout (a speculative pre-connect that
/// never sent a request) is doing its job.
const EMPTY_WINDOW: Duration = Duration::from_millis(250);

/// Most client bytes kept for a replay on another backend (`retry-on-empty`): a first request
/// (an HTTP request head, a protocol handshake) fits; a client that sends more before the
/// backend's first byte is not replayed, and its copy is freed.
pub(crate) const REPLAY_LIMIT: usize = 8 * 1024;

/// Rounds of progress a relay makes per poll before it yields to other connections.
const MAX_ROUNDS: u32 = 16;

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
    /// This side half-closed, and the other stayed silent for its fin timeout.
    FinTimeout(Side),
    /// The backend sent nothing at all, and nothing moved, for the server timeout.
    ServerTimeout,
    /// The backend closed or reset before sending a single byte while the client still
    /// expected an answer (see [`Relay`]). Its half-close has not been passed on: the
    /// connection may go to another backend.
    Empty {
        /// The reset, if it was one (a plain close otherwise).
        error: Option<io::Error>,
        /// The client's bytes so far, if kept (`retry-on-empty`) and not too many.
        replay: Option<Vec<u8>>,
        /// Whether the client had half-closed.
        client_eof: bool,
    },
}

/// The relay's time limits (all optional).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Timeouts {
    /// Nothing moved either way.
    pub(crate) idle: Limit,
    /// The client half-closed and the backend has sent nothing since.
    pub(crate) client_fin: Limit,
    /// The backend half-closed and the client has sent nothing since.
    pub(crate) server_fin: Limit,
    /// The backend has sent nothing at all, and nothing has moved.
    pub(crate) server: Limit,
}

/// One time limit, or none, in whole milliseconds: 4 bytes where an `Option<Duration>` takes
/// 16, in the state every relayed connection keeps. A limit never passes early: it is rounded
/// up to the next millisecond (a zero limit, which passes at once, becomes 1 ms), and one
/// longer than `u32::MAX` milliseconds (49.7 days) is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Limit(Option<std::num::NonZeroU32>);

impl Limit {
    pub(crate) fn new(limit: Option<Duration>) -> Limit {
        Limit(limit.and_then(|d| {
            let ms = u32::try_from(d.as_nanos().div_ceil(1_000_000)).ok()?;
            std::num::NonZeroU32::new(ms.max(1))
        }))
    }

    pub(crate) fn get(self) -> Option<Duration> {
        self.0.map(|ms| Duration::from_millis(u64::from(ms.get())))
    }

    fn is_set(self) -> bool {
        self.0.is_some()
    }
}

/// Relays between `client` and `backend` until both directions are finished, one side fails,
/// or a time limit passes. Bytes are recorded on `lease` as they pass.
///
/// A backend that ends its side (closes or resets) before sending a single byte is reported as
/// [`RelayEnd::Empty`] rather than passed on, when the client still expected an answer: it had
/// not half-closed (for a close; a reset always counts), and it had sent something or the
/// backend ended within [`EMPTY_WINDOW`] of the relay's start (an accept-then-close backend).
/// A backend that closes after the client's half-close without a word is a normal end: some
/// protocols (a log sink) never answer.
pub(crate) struct Relay<'a, C, B> {
    client: &'a mut C,
    backend: &'a mut B,
    lease: &'a Lease,
    traffic: &'a Traffic,
    /// Client to backend.
    up: Half,
    /// Backend to client.
    down: Half,
    timing: Timing,
    /// A copy of the client's bytes for a replay, until the backend's first byte.
    replay: Option<Vec<u8>>,
    /// One timer for every limit, armed for the earliest; `None` without any limit.
    timer: Option<Pin<Box<Sleep>>>,
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
        timeouts: Timeouts,
    ) -> Self {
        Self::with_timing(client, backend, lease, traffic, Timing::new(timeouts, Instant::now()))
    }

    fn with_timing(
        client: &'a mut C,
        backend: &'a mut B,
        lease: &'a Lease,
        traffic: &'a Traffic,
        timing: Timing,
    ) -> Self {
        let mut relay = Relay {
            client,
            backend,
            lease,
            traffic,
            up: Half::default(),
            down: Half::default(),
            timing,
            replay: None,
            timer: None,
        };
        relay.arm_timer();
        relay
    }

    /// Carries on a relay another engine started (the io_uring engine hands bulk transfers
    /// over, to splice them): its bytes not yet written each way, its ends of stream and half-
    /// closes, its clock and its replay copy. The caller has recorded every byte so far.
    #[cfg(target_os = "linux")]
    pub(crate) fn resume(
        client: &'a mut C,
        backend: &'a mut B,
        lease: &'a Lease,
        traffic: &'a Traffic,
        state: Resumed,
    ) -> Self {
        let mut relay = Self::with_timing(client, backend, lease, traffic, state.timing);
        for (half, given) in [(&mut relay.up, state.up), (&mut relay.down, state.down)] {
            half.pending = given.pending;
            half.eof = given.eof;
            half.done = given.done;
            half.bulk = given.bulk;
            half.failed = given.failed;
        }
        relay.replay = state.replay;
        relay
    }
}

impl<C, B> Relay<'_, C, B> {
    /// Arms the one timer for the earliest limit that applies yet, or far away if none does
    /// (only the fin timeouts, which start with an end of stream); no timer without any limit.
    fn arm_timer(&mut self) {
        if !self.timing.any() {
            return;
        }
        let far = crate::time::deadline(self.timing.started, Duration::MAX);
        let deadline = self.next_deadline().map_or(far, |(at, _)| at);
        self.timer = Some(Box::pin(tokio::time::sleep_until(deadline)));
    }

    /// Starts the client-to-backend direction with `bytes` already to write (what the inspect
    /// stage read or a replay, after any PROXY header to send), and at end of stream if the
    /// client already half-closed. The caller has recorded the client's bytes among them.
    pub(crate) fn with_pending(mut self, bytes: Vec<u8>, client_eof: bool) -> Self {
        self.up.pending = bytes;
        self.up.written = 0;
        self.up.eof = client_eof;
        if client_eof {
            self.timing.client_eof_at = Some(self.timing.started);
        }
        self
    }

    /// Keeps a copy of the client's bytes, starting with `already` (those sent before this
    /// relay, without any PROXY header), for a replay should the backend end without a word.
    pub(crate) fn keep_for_replay(mut self, already: Vec<u8>) -> Self {
        self.replay = (already.len() <= REPLAY_LIMIT).then_some(already);
        self
    }

    fn backend_spoke(&self) -> bool {
        self.traffic.bytes_out.load(Relaxed) > 0
    }

    /// Whether the backend's end, seen now with nothing sent to the client yet, leaves the
    /// client without the answer it expected (see [`Relay`]).
    fn empty_end(&self, reset: bool) -> bool {
        self.timing.empty_end(
            self.backend_spoke(),
            reset,
            self.up.eof,
            self.traffic.bytes_in.load(Relaxed) > 0,
        )
    }

    fn empty(&mut self, error: Option<io::Error>) -> RelayEnd {
        RelayEnd::Empty { error, replay: self.replay.take(), client_eof: self.up.eof }
    }

    /// The earliest time limit and what passing it means.
    fn next_deadline(&self) -> Option<(Instant, RelayEnd)> {
        self.timing.next_deadline(self.up.done, self.down.done, self.backend_spoke())
    }
}

/// What an engine hands over when another carries its relay on (see [`Relay::resume`]).
#[cfg(target_os = "linux")]
#[derive(Debug)]
pub(crate) struct Resumed {
    /// Client to backend.
    pub(crate) up: ResumedHalf,
    /// Backend to client.
    pub(crate) down: ResumedHalf,
    /// The relay's clock.
    pub(crate) timing: Timing,
    /// The client's bytes kept for a replay, if still kept.
    pub(crate) replay: Option<Vec<u8>>,
}

/// One direction of a relay handed over (see [`Resumed`]).
#[cfg(target_os = "linux")]
#[derive(Debug, Default)]
pub(crate) struct ResumedHalf {
    /// Read and not yet written.
    pub(crate) pending: Vec<u8>,
    /// The reader's end of stream was seen.
    pub(crate) eof: bool,
    /// The half-close was passed on: this direction is finished.
    pub(crate) done: bool,
    /// Moving full buffers (splice from now on).
    pub(crate) bulk: bool,
    /// The reader's error, after the bytes of `pending` (the kernel reports it only once, to
    /// the engine that handed over).
    pub(crate) failed: Option<std::io::Error>,
}

/// A relay's clock: when it started, when each direction last moved and when each side's end
/// of stream came, from which its time limits fall due. Both engines keep one and ask it the
/// same questions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) timeouts: Timeouts,
    pub(crate) started: Instant,
    /// Last progress of each direction (only kept up to date while some timeout is set).
    pub(crate) last_up: Instant,
    pub(crate) last_down: Instant,
    /// When each side's end of stream was seen.
    pub(crate) client_eof_at: Option<Instant>,
    pub(crate) backend_eof_at: Option<Instant>,
}

impl Timing {
    pub(crate) fn new(timeouts: Timeouts, now: Instant) -> Timing {
        Timing {
            timeouts,
            started: now,
            last_up: now,
            last_down: now,
            client_eof_at: None,
            backend_eof_at: None,
        }
    }

    /// Whether any limit is set (without one, nothing needs the clock).
    pub(crate) fn any(&self) -> bool {
        let t = self.timeouts;
        t.idle.is_set() || t.client_fin.is_set() || t.server_fin.is_set() || t.server.is_set()
    }

    /// The earliest time limit and what passing it means, given which directions are finished
    /// and whether the backend has sent anything.
    pub(crate) fn next_deadline(
        &self,
        up_done: bool,
        down_done: bool,
        backend_spoke: bool,
    ) -> Option<(Instant, RelayEnd)> {
        let t = self.timeouts;
        let mut best: Option<(Instant, RelayEnd)> = None;
        let mut consider = |from: Instant, limit: Limit, end: fn() -> RelayEnd| {
            if let Some(limit) = limit.get() {
                let at = crate::time::deadline(from, limit);
                if best.as_ref().is_none_or(|(b, _)| at < *b) {
                    best = Some((at, end()));
                }
            }
        };
        consider(self.last_up.max(self.last_down), t.idle, || RelayEnd::IdleTimeout);
        if let (Some(at), false) = (self.client_eof_at, down_done) {
            consider(at.max(self.last_down), t.client_fin, || RelayEnd::FinTimeout(Side::Client));
        }
        if let (Some(at), false) = (self.backend_eof_at, up_done) {
            consider(at.max(self.last_up), t.server_fin, || RelayEnd::FinTimeout(Side::Backend));
        }
        if t.server.is_set() && !backend_spoke {
            consider(self.last_up.max(self.started), t.server, || RelayEnd::ServerTimeout);
        }
        best
    }

    /// Whether the backend's end (a reset, or a close), seen now with nothing sent to the
    /// client yet, leaves the client without the answer it expected (see [`Relay`]).
    pub(crate) fn empty_end(
        &self,
        backend_spoke: bool,
        reset: bool,
        client_eof: bool,
        client_sent: bool,
    ) -> bool {
        if backend_spoke {
            return false;
        }
        reset || (!client_eof && (client_sent || self.started.elapsed() < EMPTY_WINDOW))
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
        let (mut moved_up, mut moved_down) = (false, false);
        let (up_eof, down_eof) = (this.up.eof, this.down.eof);
        let mut rounds = 0;
        loop {
            // One writer per counter, so a plain load and store (no locked instruction) suffice.
            let up = this.up.poll_copy(
                cx,
                this.client,
                this.backend,
                this.down.eof,
                &|n| {
                    lease.record_bytes_in(n);
                    traffic.bytes_in.store(traffic.bytes_in.load(Relaxed) + n, Relaxed);
                },
                &mut this.replay,
            );
            let down = this
                .down
                .poll_copy(
                    cx,
                    this.backend,
                    this.client,
                    this.up.eof,
                    &|n| {
                        lease.record_bytes_out(n);
                        traffic.bytes_out.store(traffic.bytes_out.load(Relaxed) + n, Relaxed);
                    },
                    &mut None,
                )
                .map_err(|(side, e)| (flip(side), e));
            let mut again = false;
            for (poll, moved) in [(up, &mut moved_up), (down, &mut moved_down)] {
                match poll {
                    Poll::Ready(Ok(Step::Progress)) => {
                        *moved = true;
                        again = true;
                    }
                    Poll::Ready(Ok(Step::Idle)) | Poll::Pending => {}
                    Poll::Ready(Err((Side::Backend, e))) if this.empty_end(true) => {
                        return Poll::Ready(this.empty(Some(e)))
                    }
                    Poll::Ready(Err((side, e))) => return Poll::Ready(RelayEnd::Failed(side, e)),
                }
            }
            // The backend's end before its first byte: decided before the half-close reaches
            // the client (it is held back at least one round, below), so the client can still
            // be given another backend.
            if this.down.eof && !down_eof && this.empty_end(false) {
                return Poll::Ready(this.empty(None));
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
        if this.replay.is_some() && this.backend_spoke() {
            // The backend answered: nothing to replay any more.
            this.replay = None;
        }
        if this.timer.is_none() {
            this.defer_half_closes(cx);
            return Poll::Pending;
        }
        if moved_up || moved_down || this.up.eof != up_eof || this.down.eof != down_eof {
            let now = Instant::now();
            if moved_up {
                this.timing.last_up = now;
            }
            if moved_down {
                this.timing.last_down = now;
            }
            let new_eof = (this.up.eof && !up_eof) || (this.down.eof && !down_eof);
            if this.up.eof && !up_eof {
                this.timing.client_eof_at = Some(now);
            }
            if this.down.eof && !down_eof {
                this.timing.backend_eof_at = Some(now);
            }
            // A new end of stream can bring a deadline earlier than the one armed: re-arm
            // now. Activity only moves deadlines later, which the timer finds out when it
            // fires (keeping the timer wheel out of the data path).
            if new_eof {
                if let Some((deadline, _)) = this.next_deadline() {
                    let timer = this.timer.as_mut().expect("checked above");
                    if timer.is_elapsed() || deadline < timer.deadline() {
                        timer.as_mut().reset(deadline);
                    }
                }
            }
        }
        if this.defer_half_closes(cx) {
            return Poll::Pending;
        }
        loop {
            let timer = this.timer.as_mut().expect("checked above");
            ready!(timer.as_mut().poll(cx));
            // Fired. No limit left to watch: stay elapsed (polling it again costs nothing and
            // registers no wake-up) until a new end of stream re-arms it.
            let Some((deadline, end)) = this.next_deadline() else { return Poll::Pending };
            if Instant::now() >= deadline {
                return Poll::Ready(end);
            }
            this.timer.as_mut().expect("checked above").as_mut().reset(deadline);
        }
    }
}

impl<C, B> Relay<'_, C, B> {
    /// A direction at end of stream holds its half-close back for one scheduler round: a
    /// backend typically closes right after its response, and the client, having the whole
    /// response, closes a moment later. If the client's close arrives within that round, both
    /// ends are at end of stream and the connection closes with no `shutdown` call at all (one
    /// system call less per connection for request/response traffic); if not, the half-close
    /// goes out one round late. Returns whether it is deferring (the task is woken at once).
    fn defer_half_closes(&mut self, cx: &mut Context<'_>) -> bool {
        let mut deferring = false;
        for half in [&mut self.up, &mut self.down] {
            if half.eof && !half.done && !half.deferred {
                half.deferred = true;
                deferring = true;
            }
        }
        if deferring {
            cx.waker().wake_by_ref();
        }
        deferring
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_keeps_whole_milliseconds_rounded_up_and_capped() {
        let ms = Duration::from_millis;
        assert_eq!(Limit::new(None).get(), None);
        // The settings say "no limit" with `None`; a zero limit passes as soon as it can.
        assert_eq!(Limit::new(Some(Duration::ZERO)).get(), Some(ms(1)));
        assert_eq!(Limit::new(Some(Duration::from_nanos(1))).get(), Some(ms(1)));
        assert_eq!(Limit::new(Some(Duration::from_micros(1_500))).get(), Some(ms(2)));
        assert_eq!(Limit::new(Some(ms(300_000))).get(), Some(ms(300_000)));
        let longest = ms(u64::from(u32::MAX));
        assert_eq!(Limit::new(Some(longest)).get(), Some(longest));
        // Longer than it can hold: no limit rather than an early one.
        assert_eq!(Limit::new(Some(longest + Duration::from_nanos(1))).get(), None);
        assert_eq!(Limit::new(Some(Duration::from_secs(100 * 86_400))).get(), None);
        assert_eq!(Limit::new(Some(Duration::MAX)).get(), None);
        assert_eq!(std::mem::size_of::<Limit>(), 4);
    }
}
