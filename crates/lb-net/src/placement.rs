//! Which worker thread a new connection goes to ([`Placement`]).
//!
//! A listener has one socket per worker, sharing its port with `SO_REUSEPORT`, and the kernel
//! hashes each new connection to one of them. Spread that way, every worker has a little work
//! and sleeps between its pieces; each sleep and wake-up is a context switch, and on a machine
//! with few CPUs that costs more than the work it waits for. Packed onto one worker, the same
//! load keeps that worker awake, handling many completions per wake-up: on the 2-vCPU machine
//! of docs/performance.md, a quarter as many context switches and about 10 % less CPU per
//! keep-alive request, 15-20 % less per MB of bulk.
//!
//! [`Placement::Pack`] does that while one worker can carry the load. A classic BPF program on
//! the listener's socket group (`SO_ATTACH_REUSEPORT_CBPF`) picks the group's first socket for
//! every connection, and a monitor on the control runtime reads the workers' CPU time every
//! [`INTERVAL`] ([`QUIET_INTERVAL`] while they are nearly idle), and the machine's idle time
//! (`/proc/stat`). When one worker was busy more than [`SPREAD_ABOVE`] of [`BUSY_INTERVALS`]
//! intervals in a row while the machine's CPUs had at least [`SPARE_CPU`] of one CPU idle among
//! them, the program is detached, so the kernel hashes connections again (spread). Without that
//! idle time, another worker would only compete for the same CPUs with more wake-ups, so
//! connections stay packed. Once all the workers together have been busy less than
//! [`PACK_BELOW`] of one CPU for [`CALM_INTERVALS`] intervals in a row, they are packed again
//! (longer after repeated switches, see [`CALM_INTERVALS`]). Connections stay on the worker
//! that accepted them; only new ones move. The program is one instruction, run by the kernel on
//! each SYN's way to a socket: nothing on the data path changes.

#![allow(unsafe_code)]

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::counters::ProxyCounters;
use crate::listener::ListenerRuntime;

/// How new connections are placed on the worker threads of a listener with one socket per
/// worker ([`crate::bind_shared`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// The kernel spreads new connections evenly over the workers (by a hash of their
    /// addresses), whatever the load.
    #[default]
    Spread,
    /// New connections go to one worker while it can carry them, and are spread once it is
    /// busy (Linux; elsewhere as [`Spread`](Self::Spread)). Fewer wake-ups, so less CPU per
    /// request at the loads one CPU can carry; the same as `Spread` above them. Needs the
    /// balancer supervised ([`crate::Balancer::supervise`]) with single-threaded worker
    /// runtimes ([`crate::Balancer::set_workers`]).
    Pack,
}

impl FromStr for Placement {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "spread" => Ok(Placement::Spread),
            "pack" => Ok(Placement::Pack),
            _ => Err(format!("invalid placement {s:?}: expected pack or spread")),
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Placement::Spread => "spread",
            Placement::Pack => "pack",
        })
    }
}

/// How often the monitor reads the workers' CPU time.
pub(crate) const INTERVAL: Duration = Duration::from_millis(250);
/// How often it reads them while packed and nearly idle (the workers together under
/// [`QUIET_BELOW`] of a CPU), so that an idle balancer wakes up rarely.
pub(crate) const QUIET_INTERVAL: Duration = Duration::from_secs(1);
/// See [`QUIET_INTERVAL`].
pub(crate) const QUIET_BELOW: f64 = 0.1;
/// The share of an interval one worker may be busy, [`BUSY_INTERVALS`] intervals in a row,
/// before new connections are spread.
pub(crate) const SPREAD_ABOVE: f64 = 0.85;
/// Busy intervals in a row before spreading: one alone is often the last of a burst.
pub(crate) const BUSY_INTERVALS: u32 = 2;
/// The idle time, in CPUs, the machine must have had for spreading to be worth it.
pub(crate) const SPARE_CPU: f64 = 0.5;
/// The share of one CPU all workers together stay under, for [`CALM_INTERVALS`] intervals in a
/// row, before new connections are packed again.
pub(crate) const PACK_BELOW: f64 = 0.5;
/// Intervals in a row of low load before packing again. Doubled, up to
/// [`MAX_CALM_INTERVALS`], each time connections are spread again within [`STABLE_FOR`] of
/// being packed, so that load coming and going in bursts does not switch back and forth every
/// second or two.
pub(crate) const CALM_INTERVALS: u32 = 4;
/// See [`CALM_INTERVALS`]: 16 s at most (spread, readings are [`INTERVAL`] apart).
pub(crate) const MAX_CALM_INTERVALS: u32 = 64;
/// Time packed after which a spread no longer counts as a switch back; the calm needed is
/// then [`CALM_INTERVALS`] again.
pub(crate) const STABLE_FOR: Duration = Duration::from_secs(60);

/// The packing decision, from one interval's busy shares to the next choice (pure, for tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decider {
    packed: bool,
    /// Busy intervals in a row, while packed.
    busy: u32,
    /// Calm intervals in a row, while spread, and how many it takes.
    calm: u32,
    calm_needed: u32,
    /// Time since last packed (saturating).
    packed_for: Duration,
}

impl Decider {
    /// Starts packed, as if for long.
    pub(crate) fn new() -> Self {
        Decider {
            packed: true,
            busy: 0,
            calm: 0,
            calm_needed: CALM_INTERVALS,
            packed_for: STABLE_FOR,
        }
    }

    /// Whether connections are to be packed after an interval in which the busiest worker was
    /// busy `busiest` of the time, all together `total` (1.0: one CPU's worth), and the
    /// machine's CPUs were idle `idle` CPUs' worth; `interval` is how long it was.
    pub(crate) fn observe(
        &mut self,
        busiest: f64,
        total: f64,
        idle: f64,
        interval: Duration,
    ) -> bool {
        if self.packed {
            self.packed_for = self.packed_for.saturating_add(interval);
            if self.packed_for >= STABLE_FOR {
                self.calm_needed = CALM_INTERVALS;
            }
            if busiest > SPREAD_ABOVE && idle >= SPARE_CPU {
                self.busy += 1;
            } else {
                self.busy = 0;
            }
            if self.busy >= BUSY_INTERVALS {
                if self.packed_for < STABLE_FOR {
                    self.calm_needed = (self.calm_needed * 2).min(MAX_CALM_INTERVALS);
                }
                (self.packed, self.busy, self.calm) = (false, 0, 0);
            }
        } else if total < PACK_BELOW {
            self.calm += 1;
            if self.calm >= self.calm_needed {
                (self.packed, self.packed_for) = (true, Duration::ZERO);
            }
        } else {
            self.calm = 0;
        }
        self.packed
    }

    /// Whether the next reading can wait [`QUIET_INTERVAL`]: packed, and the workers nearly
    /// idle.
    pub(crate) fn quiet(&self, total: f64) -> bool {
        self.packed && self.busy == 0 && total < QUIET_BELOW
    }
}

/// Steers a `SO_REUSEPORT` group's new connections: all to its first socket (`pack`: a
/// program returning index 0), or by the kernel's hash as without any program (the program is
/// detached; before Linux 5.3, which cannot detach, replaced by one returning an index past
/// the group's end, which the kernel answers with its hash). `socket` is any socket of the
/// group; the program is the group's.
#[cfg(target_os = "linux")]
pub(crate) fn steer(socket: &std::net::TcpListener, pack: bool) -> std::io::Result<()> {
    if pack {
        return attach(socket, 0);
    }
    let unused: libc::c_int = 0;
    match set_option(socket, libc::SO_DETACH_REUSEPORT_BPF, &unused) {
        Ok(()) => Ok(()),
        // Nothing attached.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(_) => attach(socket, u32::MAX),
    }
}

/// Attaches to `socket`'s group a program choosing the socket at `index` (past the end: the
/// kernel's hash).
#[cfg(target_os = "linux")]
fn attach(socket: &std::net::TcpListener, index: u32) -> std::io::Result<()> {
    // BPF_RET | BPF_K: return the constant k.
    const RET_K: u16 = 0x06;
    let mut program = [libc::sock_filter { code: RET_K, jt: 0, jf: 0, k: index }];
    // `program` outlives the call, which copies it.
    let fprog = libc::sock_fprog { len: 1, filter: program.as_mut_ptr() };
    set_option(socket, libc::SO_ATTACH_REUSEPORT_CBPF, &fprog)
}

/// `setsockopt(SOL_SOCKET, option)` with `value` as the option's value.
#[cfg(target_os = "linux")]
fn set_option<T>(
    socket: &std::net::TcpListener,
    option: libc::c_int,
    value: &T,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `value` is `size_of::<T>()` valid bytes for the call's duration (the kernel
    // copies them, and any memory they point to, during the call).
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            std::ptr::from_ref(value).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// How every listener is steered now; stopped for good once a successor process takes the
/// sockets over ([`crate::Handle::listening_sockets`]).
#[derive(Debug, Default)]
pub(crate) struct Steering {
    state: std::sync::Mutex<SteeringState>,
}

#[derive(Debug, Default)]
struct SteeringState {
    packed: bool,
    stopped: bool,
}

impl Steering {
    fn state(&self) -> std::sync::MutexGuard<'_, SteeringState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether new connections are packed now.
    pub(crate) fn packed(&self) -> bool {
        self.state().packed
    }

    /// Steers a new listener as the others are.
    pub(crate) fn join(&self, listener: &ListenerRuntime) {
        let state = self.state();
        steer_each([listener], state.packed, true);
    }

    /// Steers every listener (`pack` or spread); `false`, steering nothing, once stopped. A
    /// listener that cannot be steered is said once per change and does not stop the others.
    pub(crate) fn set(&self, listeners: &[Arc<ListenerRuntime>], pack: bool) -> bool {
        let mut state = self.state();
        if state.stopped {
            return false;
        }
        steer_each(listeners.iter().map(|l| &**l), pack, state.packed != pack);
        state.packed = pack;
        true
    }

    /// Spreads every listener and steers nothing more: a successor process takes the
    /// sockets over and steers them as its settings say.
    pub(crate) fn stop(&self, listeners: &[Arc<ListenerRuntime>]) {
        let mut state = self.state();
        if state.packed {
            tracing::info!("placement: spreading new connections for the hand-over");
        }
        steer_each(listeners.iter().map(|l| &**l), false, false);
        (state.stopped, state.packed) = (true, false);
    }
}

/// Steers each of `listeners`, saying (where `say`) which could not be.
fn steer_each<'a>(listeners: impl IntoIterator<Item = &'a ListenerRuntime>, pack: bool, say: bool) {
    for listener in listeners {
        if let Err(e) = listener.steer(pack) {
            if say {
                tracing::warn!(listener = %listener.name, error = %e, pack, "cannot steer new connections on this listener");
            }
        }
    }
}

/// The time all the machine's CPUs have been idle since boot, from the first line of
/// `/proc/stat` (its idle and iowait fields); `None` where it cannot be read.
#[cfg(target_os = "linux")]
fn machine_idle() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    // The kernel counts in USER_HZ ticks, 100 per second on every Linux platform of today.
    // SAFETY: no argument; `sysconf` only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    idle_of(&stat, if hz > 0 { hz as u64 } else { 100 })
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
/// Parses [`machine_idle`]'s answer out of `/proc/stat`'s text, counted in ticks of `1/hz` s.
fn idle_of(stat: &str, hz: u64) -> Option<Duration> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let mut fields = line.split_ascii_whitespace().skip(3);
    let idle: u64 = fields.next()?.parse().ok()?;
    let iowait: u64 = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
    let ticks = idle.saturating_add(iowait);
    Some(Duration::from_secs(ticks / hz) + Duration::from_nanos((ticks % hz) * 1_000_000_000 / hz))
}

/// The CPU-time clock of the calling thread, readable from any thread of the process.
#[cfg(target_os = "linux")]
fn this_thread_clock() -> Option<libc::clockid_t> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `pthread_self` is always valid, and `clock` is a valid place for the answer.
    let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
    (rc == 0).then_some(clock)
}

/// The CPU time (user and system) a thread's clock has counted; `None` once the thread ended.
#[cfg(target_os = "linux")]
fn cpu_time(clock: libc::clockid_t) -> Option<Duration> {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid place for the answer.
    let rc = unsafe { libc::clock_gettime(clock, &mut now) };
    (rc == 0).then(|| Duration::new(now.tv_sec as u64, now.tv_nsec as u32))
}

/// Packs new connections while one worker can carry them, spreads them otherwise (see the
/// module's docs), until the future is dropped, a worker ends or `steering` is stopped (a
/// hand-over). `workers` are the worker runtimes (each single-threaded), `listeners` the
/// current listeners. Where it cannot run (another system, a worker runtime with several
/// threads) it says so, and connections stay spread; with one worker there is nothing to do.
pub(crate) async fn monitor(
    workers: Vec<tokio::runtime::Handle>,
    listeners: impl Fn() -> Vec<Arc<ListenerRuntime>>,
    steering: &Steering,
    counters: &ProxyCounters,
) {
    #[cfg(target_os = "linux")]
    if let Some(monitor) = Monitor::start(workers, &listeners, steering).await {
        monitor.run(&listeners, steering, counters).await;
    }
    #[cfg(not(target_os = "linux"))]
    if workers.len() > 1 {
        drop((listeners, steering, counters));
        tracing::info!("placement: packing needs Linux; new connections are spread");
    }
}

/// The monitor's state: the workers' CPU clocks and what it read last.
#[cfg(target_os = "linux")]
struct Monitor {
    clocks: Vec<libc::clockid_t>,
    busy: Vec<Duration>,
    idle: Option<Duration>,
    at: tokio::time::Instant,
}

#[cfg(target_os = "linux")]
impl Monitor {
    /// Finds the workers' CPU clocks and packs the listeners; `None` (after saying why, where
    /// that is news) where it cannot run.
    async fn start(
        workers: Vec<tokio::runtime::Handle>,
        listeners: &impl Fn() -> Vec<Arc<ListenerRuntime>>,
        steering: &Steering,
    ) -> Option<Monitor> {
        use tokio::runtime::RuntimeFlavor::CurrentThread;
        if workers.len() < 2 {
            return None;
        }
        if workers.iter().any(|w| w.runtime_flavor() != CurrentThread) {
            tracing::info!("placement: packing needs single-threaded worker runtimes; new connections are spread");
            return None;
        }
        let mut clocks = Vec::with_capacity(workers.len());
        for worker in &workers {
            clocks.push(worker.spawn(async { this_thread_clock() }).await.ok()??);
        }
        let busy = Self::busy_times(&clocks)?;
        if !steering.set(&listeners(), true) {
            return None;
        }
        Some(Monitor { clocks, busy, idle: machine_idle(), at: tokio::time::Instant::now() })
    }

    /// Every worker's CPU time; `None` once one ended.
    fn busy_times(clocks: &[libc::clockid_t]) -> Option<Vec<Duration>> {
        clocks.iter().map(|&c| cpu_time(c)).collect()
    }

    /// Reads the clocks every interval and steers the listeners as [`Decider`] says, until a
    /// worker ends (shutting down): then new connections are left to the kernel's hash.
    async fn run(
        mut self,
        listeners: &impl Fn() -> Vec<Arc<ListenerRuntime>>,
        steering: &Steering,
        counters: &ProxyCounters,
    ) {
        let mut decider = Decider::new();
        let mut next = INTERVAL;
        loop {
            tokio::time::sleep_until(self.at + next).await;
            let Some((busiest, total, idle)) = self.read() else { break };
            let was = decider.packed;
            let pack = decider.observe(busiest, total, idle, next);
            next = if decider.quiet(total) { QUIET_INTERVAL } else { INTERVAL };
            if pack != was {
                // Steered before it is counted and said: a hand-over may have stopped it.
                if !steering.set(&listeners(), pack) {
                    return;
                }
                let counter =
                    if pack { &counters.placement_packs } else { &counters.placement_spreads };
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Numbers, rounded: JSON logs carry them as numbers.
                let percent = |share: f64| (share * 100.0).round() as u64;
                if pack {
                    tracing::info!(
                        load_percent = percent(total),
                        "placement: packing new connections onto one worker again"
                    );
                } else {
                    tracing::info!(
                        busiest_percent = percent(busiest),
                        idle_cpus = (idle * 10.0).round() / 10.0,
                        workers = self.clocks.len(),
                        "placement: spreading new connections over the workers, one was busy"
                    );
                }
            }
        }
        steering.set(&listeners(), false);
    }

    /// Since the last reading: the busiest worker's busy share, all workers' together (in
    /// CPUs), and the machine's idle CPUs (plenty where /proc/stat cannot be read, so that a
    /// busy worker spreads). `None` once a worker ended.
    fn read(&mut self) -> Option<(f64, f64, f64)> {
        let now = tokio::time::Instant::now();
        let busy = Self::busy_times(&self.clocks)?;
        let idle = machine_idle();
        let wall = now.duration_since(self.at).as_secs_f64().max(1e-3);
        let shares: Vec<f64> = busy
            .iter()
            .zip(&self.busy)
            .map(|(a, b)| a.saturating_sub(*b).as_secs_f64() / wall)
            .collect();
        let idle_cpus = match (self.idle, idle) {
            (Some(before), Some(after)) => after.saturating_sub(before).as_secs_f64() / wall,
            _ => f64::INFINITY,
        };
        (self.busy, self.idle, self.at) = (busy, idle, now);
        let busiest = shares.iter().copied().fold(0.0, f64::max);
        Some((busiest, shares.iter().sum(), idle_cpus))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_parses_and_prints_its_two_names() {
        for p in [Placement::Spread, Placement::Pack] {
            assert_eq!(p.to_string().parse::<Placement>(), Ok(p));
        }
        assert_eq!(" PACK ".parse::<Placement>(), Ok(Placement::Pack));
        let err = "even".parse::<Placement>().unwrap_err();
        assert!(err.contains("expected pack or spread"), "{err}");
    }

    #[test]
    fn a_busy_worker_spreads_where_cpus_are_idle_and_a_calm_second_packs_again() {
        let mut d = Decider::new();
        // Packed while the busiest worker stays at or under the threshold.
        assert!(d.observe(0.2, 0.2, 1.5, INTERVAL));
        assert!(d.observe(SPREAD_ABOVE, SPREAD_ABOVE, 1.0, INTERVAL));
        // Busy, but the machine has no CPU to spare: spreading would only add wake-ups.
        for _ in 0..10 {
            assert!(d.observe(0.97, 0.97, SPARE_CPU - 0.1, INTERVAL));
        }
        // One busy interval alone (the last of a burst) does not spread; two in a row do.
        assert!(d.observe(0.9, 0.95, SPARE_CPU, INTERVAL));
        assert!(d.observe(0.3, 0.3, 1.0, INTERVAL));
        assert!(d.observe(0.9, 0.95, SPARE_CPU, INTERVAL));
        assert!(!d.observe(0.9, 0.95, SPARE_CPU, INTERVAL));
        // Load that still needs more than half a CPU keeps it spread, however long, and
        // whatever the idle time.
        for idle in [0.0, 0.4, 2.0].repeat(7) {
            assert!(!d.observe(0.4, 0.8, idle, INTERVAL));
        }
        // Calm intervals pack again only when CALM_INTERVALS come in a row.
        for _ in 0..CALM_INTERVALS - 1 {
            assert!(!d.observe(0.2, 0.3, 1.0, INTERVAL));
        }
        assert!(!d.observe(0.3, 0.6, 1.0, INTERVAL), "a busier interval starts the count again");
        for _ in 0..CALM_INTERVALS - 1 {
            assert!(!d.observe(0.2, 0.3, 1.0, INTERVAL));
        }
        assert!(d.observe(0.2, 0.3, 1.0, INTERVAL));
    }

    /// Spreads `d` (two busy intervals) and returns the calm intervals it took to pack again.
    fn cycle(d: &mut Decider) -> u32 {
        assert!(d.observe(0.9, 0.9, 1.0, INTERVAL));
        assert!(!d.observe(0.9, 0.9, 1.0, INTERVAL));
        (1..).find(|_| d.observe(0.1, 0.1, 1.0, INTERVAL)).unwrap()
    }

    #[test]
    fn load_that_comes_and_goes_waits_longer_each_time_before_packing_again() {
        let mut d = Decider::new();
        // The first spread since start (or since long packed) needs the usual calm second.
        assert_eq!(cycle(&mut d), CALM_INTERVALS);
        // Each spread soon after packing doubles it, up to 16 s.
        assert_eq!(cycle(&mut d), 2 * CALM_INTERVALS);
        assert_eq!(cycle(&mut d), 4 * CALM_INTERVALS);
        for _ in 0..10 {
            cycle(&mut d);
        }
        assert_eq!(cycle(&mut d), MAX_CALM_INTERVALS);
        // A minute packed (here in quiet readings, a second apart): back to one second.
        for _ in 0..STABLE_FOR.as_secs() {
            assert!(d.observe(0.05, 0.05, 1.0, QUIET_INTERVAL));
        }
        assert_eq!(cycle(&mut d), CALM_INTERVALS);
    }

    #[test]
    fn only_a_packed_nearly_idle_balancer_reads_less_often() {
        let mut d = Decider::new();
        assert!(d.quiet(0.0) && d.quiet(QUIET_BELOW - 0.01));
        assert!(!d.quiet(QUIET_BELOW), "busy enough to watch closely");
        d.observe(0.9, 0.9, 1.0, INTERVAL);
        assert!(!d.quiet(0.05), "one busy interval seen: the next comes soon");
        d.observe(0.9, 0.9, 1.0, INTERVAL);
        assert!(!d.quiet(0.0), "spread: watched for the calm that packs again");
    }

    #[test]
    fn idle_time_is_read_from_the_first_line_of_proc_stat() {
        let stat = "cpu  10132153 290696 3084719 46828483 16683 0 25195 0 0 0\n\
                    cpu0 1393280 32966 572056 13343292 6130 0 17875 0 0 0\n";
        // 46828483 + 16683 ticks of 1/100 s.
        assert_eq!(idle_of(stat, 100), Some(Duration::from_millis(468_451_660)));
        assert_eq!(
            idle_of("cpu  1 2 3 400\n", 100),
            Some(Duration::from_secs(4)),
            "no iowait field"
        );
        for bad in ["", "cpu0 1 2 3 4 5", "cpu  1 2 3", "cpu  1 2 3 x 5", "intr 1 2 3 4"] {
            assert_eq!(idle_of(bad, 100), None, "{bad:?}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_machine_reports_its_idle_time() {
        assert!(machine_idle().is_some());
    }

    /// Connects `n` clients to `addr` and returns how many each of `sockets` has queued.
    #[cfg(target_os = "linux")]
    fn queued_on(sockets: &[std::net::TcpListener], n: usize) -> Vec<usize> {
        let addr = sockets[0].local_addr().unwrap();
        let clients: Vec<_> = (0..n).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        let mut counts = vec![0; sockets.len()];
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // The listeners do not block: poll them until every client was accepted.
        while counts.iter().sum::<usize>() < n && std::time::Instant::now() < deadline {
            for (count, socket) in counts.iter_mut().zip(sockets) {
                *count += std::iter::from_fn(|| socket.accept().ok()).count();
            }
        }
        drop(clients);
        counts
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_packed_group_queues_every_connection_on_its_first_socket_and_a_spread_one_on_all() {
        let sockets = crate::bind_shared("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        steer(&sockets[1], true).unwrap();
        assert_eq!(queued_on(&sockets, 40), vec![40, 0], "packed from any socket of the group");
        steer(&sockets[0], false).unwrap();
        let spread = queued_on(&sockets, 200);
        assert_eq!(spread.iter().sum::<usize>(), 200);
        // By the kernel's hash of 200 client ports: all on one socket has odds of 2^-199.
        assert!(spread.iter().all(|&n| n > 0), "{spread:?}");
    }

    /// A single-threaded runtime on its own thread, as the `lb` binary's workers are, until
    /// the sender is dropped.
    #[cfg(target_os = "linux")]
    fn worker(
    ) -> (tokio::runtime::Handle, tokio::sync::oneshot::Sender<()>, std::thread::JoinHandle<()>)
    {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || drop(runtime.block_on(stopped)));
        (handle, stop, thread)
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_monitor_packs_listeners_while_its_workers_run_and_spreads_them_once_one_ended() {
        let sockets = crate::bind_shared("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        // No accept loop runs: connections stay queued on the sockets, for `queued_on`.
        let listener = listener_keeping(&sockets);
        let listeners = || vec![Arc::clone(&listener)];
        let (one, two) = (worker(), worker());
        let control = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let counters = ProxyCounters::default();
        let steering = Steering::default();

        control.block_on(async {
            // Not with one worker, nor with a runtime of several threads.
            assert!(Monitor::start(vec![one.0.clone()], &listeners, &steering).await.is_none());
            let many =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
            let mixed = vec![one.0.clone(), many.handle().clone()];
            assert!(Monitor::start(mixed, &listeners, &steering).await.is_none());
            many.shutdown_background();

            let monitor =
                Monitor::start(vec![one.0.clone(), two.0.clone()], &listeners, &steering).await;
            let monitor = monitor.expect("runs with two single-threaded workers");
            assert_eq!(queued_on(&sockets, 40), vec![40, 0], "packed from the start");
            // A worker ends (the balancer shuts down): within an interval, spread again.
            drop(two.1);
            two.2.join().unwrap();
            let ran = monitor.run(&listeners, &steering, &counters);
            tokio::time::timeout(Duration::from_secs(30), ran).await.unwrap();
        });
        let spread = queued_on(&sockets, 200);
        assert!(spread.iter().all(|&n| n > 0), "{spread:?}");
        drop(one.1);
        one.2.join().unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_program_choosing_past_the_end_spreads_as_before_linux_5_3_where_none_can_be_detached() {
        let sockets = crate::bind_shared("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        attach(&sockets[0], 0).unwrap();
        assert_eq!(queued_on(&sockets, 40), vec![40, 0]);
        attach(&sockets[0], u32::MAX).unwrap();
        let spread = queued_on(&sockets, 200);
        assert!(spread.iter().all(|&n| n > 0), "{spread:?}");
    }

    /// A listener keeping `sockets` (as its accept loops' second descriptors), accepting on
    /// none of them.
    #[cfg(target_os = "linux")]
    fn listener_keeping(sockets: &[std::net::TcpListener]) -> Arc<ListenerRuntime> {
        use crate::listener::{ListenerConfig, Routes};
        let config = ListenerConfig::to_pool("test", "none");
        let listener = Arc::new(ListenerRuntime::new(None, Routes::nowhere(config)));
        listener.keep_sockets(sockets.iter().map(|s| s.try_clone().unwrap()).collect());
        listener
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_hand_over_spreads_every_listener_and_ends_steering() {
        let (a, b) = (
            crate::bind_shared("127.0.0.1:0".parse().unwrap(), 2).unwrap(),
            crate::bind_shared("127.0.0.1:0".parse().unwrap(), 2).unwrap(),
        );
        let steering = Steering::default();
        let first = listener_keeping(&a);
        steering.join(&first);
        assert!(steering.set(&[Arc::clone(&first)], true));
        assert_eq!(queued_on(&a, 30), vec![30, 0]);
        // Added while packed: packed too.
        let second = listener_keeping(&b);
        steering.join(&second);
        assert_eq!(queued_on(&b, 30), vec![30, 0]);

        assert!(steering.packed());
        steering.stop(&[Arc::clone(&first), Arc::clone(&second)]);
        assert!(!steering.packed());
        assert!(!steering.set(&[Arc::clone(&first), Arc::clone(&second)], true), "stopped");
        for sockets in [&a, &b] {
            let spread = queued_on(sockets, 200);
            assert!(spread.iter().all(|&n| n > 0), "{spread:?}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sockets_shared_without_reuseport_have_nothing_to_steer() {
        // systemd without ReusePort= passes one socket, which the workers share.
        let one = crate::sockets::bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let listener = listener_keeping(&[one.try_clone().unwrap(), one]);
        listener.steer(true).unwrap();
        listener.steer(false).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_clock_counts_that_threads_work() {
        let worker = std::thread::spawn(|| {
            let clock = this_thread_clock().unwrap();
            let start = std::time::Instant::now();
            // Busy until its own clock has counted 20 ms, or 10 s have passed.
            while cpu_time(clock).unwrap() < Duration::from_millis(20)
                && start.elapsed() < Duration::from_secs(10)
            {
                std::hint::spin_loop();
            }
            (clock, cpu_time(clock).unwrap())
        });
        let (clock, counted) = worker.join().unwrap();
        assert!(counted >= Duration::from_millis(20), "{counted:?}");
        // Read from another thread once it ended: the clock goes with it (a moment after the
        // join returns: the kernel clears the thread's id before it removes the thread).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while cpu_time(clock).is_some() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(cpu_time(clock), None);
        let own = this_thread_clock().unwrap();
        assert!(cpu_time(own).is_some());
    }
}
