//! What `stats` answers: the pool's and the proxy's counters at one moment, and the table the
//! REPL and `lb ctl` print.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use lb_core::{BackendId, BackendStats, PoolStats, RetiredTotals, Totals, Transition};

use crate::events::Event;
use crate::health_check::CheckStatus;

pub use crate::counters::ProxyStats;

/// One pool's stats, with its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPoolStats {
    /// The pool's name.
    pub name: String,
    /// Its algorithm, backends and totals.
    pub stats: PoolStats,
    /// Whether the pool has been removed (it is shown while connections to it are open).
    pub removed: bool,
    /// Whether the pool's backends are health-checked: if so, a backend with no result yet is
    /// shown as `init` rather than `up`.
    pub checks_enabled: bool,
    /// The last health check of each listed backend that has had one (what the `health`
    /// command shows), read with the stats; empty for a removed pool.
    pub checks: HashMap<BackendId, CheckStatus>,
    /// The last change of health of each listed backend that has had one, with its reason.
    pub changes: HashMap<BackendId, Transition>,
    /// Its DNS discovery, if its members (some of them) come from DNS.
    pub discovery: Option<crate::discovery::DiscoveryStats>,
    /// Its backends' drains: those running, and the last few finished (oldest first).
    pub drains: Vec<super::DrainStatus>,
}

impl NamedPoolStats {
    /// The state to show for one of this pool's backends: lb-core's
    /// [`state`](BackendStats::state), except `init` for a backend still waiting for its
    /// first health result in a pool whose backends are checked (it takes traffic meanwhile).
    pub fn shown_state(&self, b: &BackendStats) -> &'static str {
        if self.checks_enabled && b.awaiting_first_check() {
            "init"
        } else {
            b.state()
        }
    }

    /// How many of the available backends have not had a health result yet (0 when the
    /// pool's backends are not checked).
    pub fn awaiting_first_check(&self) -> usize {
        if !self.checks_enabled {
            return 0;
        }
        self.stats.backends.iter().filter(|b| b.awaiting_first_check()).count()
    }

    /// `N of M backends available`, with how many of those have not been checked yet.
    fn available(&self) -> String {
        let t = &self.stats.totals;
        match self.awaiting_first_check() {
            0 => format!("{} of {} backends available", t.available, t.backends),
            n => format!(
                "{} of {} backends available ({n} not checked yet)",
                t.available, t.backends
            ),
        }
    }
}

/// One listener's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerStats {
    /// The listener's name.
    pub name: String,
    /// The address it listens on, when known.
    pub address: Option<SocketAddr>,
    /// Connections it accepted.
    pub accepted: u64,
    /// Closed because no SNI route matched and there was no default pool.
    pub no_route: u64,
    /// Closed for want of a usable TLS ClientHello where SNI routing needed one.
    pub bad_hello: u64,
    /// Closed for a missing or bad PROXY header.
    pub bad_proxy: u64,
    /// Refused by `allow`/`deny`.
    pub denied: u64,
    /// Refused at a per-client limit.
    pub rate_limited: u64,
    /// Let through without per-client counting (their slot of the fixed table was full).
    pub untracked: u64,
    /// The TCP congestion control its sockets give the connections they accept, as the
    /// kernel names it (what `auto` or `system` came to); `None` where the system does not
    /// say, or once it stopped accepting.
    pub congestion_control: Option<String>,
}

/// The numbers of a one-line status: what [`Stats::totals`] and `Stats::proxy.open` say of
/// the backends and the connections, from [`Handle::summary`](crate::Handle::summary), which
/// reads no backend's counters and so costs next to nothing however many backends there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Backends in every pool.
    pub backends: usize,
    /// Of those, how many can take a new connection now.
    pub available: usize,
    /// Client connections open.
    pub open: u64,
}

/// Everything `stats` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Every pool, in the order added; then removed pools with connections still open.
    pub pools: Vec<NamedPoolStats>,
    /// What removed pools whose connections have all ended did, summed, so the balancer's
    /// totals never go backwards.
    pub retired_pools: RetiredTotals,
    /// Every listener, in the order added.
    pub listeners: Vec<ListenerStats>,
    /// The proxy's own counters.
    pub proxy: ProxyStats,
    /// Time since the balancer started.
    pub uptime: Duration,
    /// The most recent health transitions and commands, oldest first (at most
    /// [`EVENTS_KEPT`](crate::EVENTS_KEPT)).
    pub events: Vec<Event>,
    /// Whether new connections go to one worker thread now ([`Placement::Pack`] while one
    /// worker carries the load); `false` while they are spread, and with one worker.
    ///
    /// [`Placement::Pack`]: crate::Placement::Pack
    pub placement_packed: bool,
}

impl Stats {
    /// Sums over every pool the balancer has had: the ones listed (removed ones included)
    /// and the retired ones.
    pub fn totals(&self) -> Totals {
        let mut all = Totals::default();
        for p in &self.pools {
            let mut t = p.stats.totals;
            if p.removed {
                // Its counts, not its backends: they are no longer the balancer's.
                (t.backends, t.available) = (0, 0);
            }
            all.add_pool(&t);
        }
        all.add_retired(&self.retired_pools);
        all
    }

    /// The first pool's stats: a one-pool balancer's only pool.
    ///
    /// # Panics
    /// If the balancer has no pool at all (only possible for a balancer built empty and never
    /// given one); use [`pools`](Self::pools) or [`pool_named`](Self::pool_named) there.
    pub fn pool(&self) -> &PoolStats {
        &self.pools.first().expect("Stats::pool: the balancer has no pool").stats
    }

    /// The stats of the pool called `name`.
    pub fn pool_named(&self, name: &str) -> Option<&PoolStats> {
        self.pools.iter().find(|p| p.name == name).map(|p| &p.stats)
    }
}

pub(crate) fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

impl fmt::Display for Stats {
    /// With one pool, the header line names its algorithm and the table follows; with several,
    /// a line per pool heads each pool's table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.proxy;
        let uptime = format_duration(self.uptime);
        match self.pools.as_slice() {
            [one] => {
                writeln!(f, "algorithm {}, up {uptime}, {}", one.stats.algorithm, one.available())?;
            }
            pools => writeln!(f, "up {uptime}, {} pools", pools.len())?,
        }
        writeln!(
            f,
            "clients: {} open, {} accepted, {} rejected at limit, {} with no backend, {} failed to connect, {} retries",
            p.open, p.accepted, p.rejected_at_limit, p.no_backend, p.connect_failed, p.retries
        )?;
        if p.resource_errors > 0 || p.accept_errors > 0 {
            writeln!(
                f,
                "balancer out of resources: {} accept errors, {} clients closed for want of a descriptor or port",
                p.accept_errors, p.resource_errors
            )?;
        }
        if p.no_route > 0
            || p.bad_hello > 0
            || p.bad_proxy > 0
            || p.denied > 0
            || p.rate_limited > 0
        {
            writeln!(
                f,
                "refused: {} with no route, {} without a usable TLS hello, {} with a bad PROXY header, {} denied, {} rate-limited",
                p.no_route, p.bad_hello, p.bad_proxy, p.denied, p.rate_limited
            )?;
        }
        let several = self.pools.len() > 1;
        for (i, pool) in self.pools.iter().enumerate() {
            if several {
                writeln!(f, "{}{}", if i > 0 { "\n" } else { "" }, Heading(pool))?;
            }
            table(f, pool)?;
            if i + 1 < self.pools.len() {
                writeln!(f)?;
            }
        }
        let r = &self.retired_pools;
        if r.backends > 0 {
            write!(
                f,
                "\nremoved pools, connections ended: {} backends, {} connections, {} bytes in, {} bytes out",
                r.backends, r.connections, r.bytes_in, r.bytes_out
            )?;
        }
        Ok(())
    }
}

/// A pool's heading line: `pool web: algorithm p2c, 2 of 3 backends available`.
struct Heading<'a>(&'a NamedPoolStats);

impl fmt::Display for Heading<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pool = self.0;
        let t = &pool.stats.totals;
        if pool.removed {
            return write!(f, "pool {} (removed): {} connections still open", pool.name, t.active);
        }
        write!(f, "pool {}: algorithm {}, {}", pool.name, pool.stats.algorithm, pool.available())
    }
}

impl fmt::Display for NamedPoolStats {
    /// `stats POOL`: the pool's heading and its table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", Heading(self))?;
        table(f, self)
    }
}

/// A pool's discovery line: `discovery srv:_http._tcp.web via 127.0.0.1:8600: 3 backends,
/// last lookup 2s ago, next in 28s, 0 errors` (and the last error while lookups fail).
struct Discovery<'a>(&'a crate::discovery::DiscoveryStats);

impl fmt::Display for Discovery<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let n = d.members.len();
        write!(f, "discovery {}: {n} backend{}", d.source, if n == 1 { "" } else { "s" })?;
        match d.last_refresh {
            Some(ago) => write!(f, ", last lookup {} ago", format_duration(ago))?,
            None => write!(f, ", no lookup yet")?,
        }
        match d.next_refresh {
            // Due: the lookup is under way (one that gets no answer gives up after three times
            // the timeout of one try).
            Some(next) if next.is_zero() => write!(f, ", looking up now")?,
            Some(next) => write!(f, ", next in {}", format_duration(next))?,
            None => {}
        }
        let e = d.counts.errors;
        write!(f, ", {e} error{}", if e == 1 { "" } else { "s" })?;
        if let Some(error) = &d.last_error {
            write!(f, " (failing: {error}; keeping the last known backends)")?;
        }
        Ok(())
    }
}

/// The lines under a pool's rows that the columns cannot hold: who serves when it is not the
/// primaries, and the weight of each backend a slow-start ramp holds back.
fn notes(f: &mut fmt::Formatter<'_>, pool: &PoolStats) -> fmt::Result {
    if pool.backup_active {
        writeln!(f, "(backups carry new connections: no primary is available)")?;
    }
    if pool.panic {
        writeln!(
            f,
            "(panic: too few primaries are up; new connections spread over every ready primary regardless of health)"
        )?;
    }
    for b in pool.backends.iter().filter(|b| !b.removed) {
        if let Some(percent) = b.ramp_percent {
            writeln!(
                f,
                "(slow start: {} at {percent}% of weight {}, effective weight {})",
                b.addr,
                b.weight,
                b.effective_weight()
            )?;
        }
    }
    Ok(())
}

/// One pool's table: a row per backend, a RETIRED row when removed backends are no longer
/// listed, and the TOTAL row (no line break after it).
fn table(f: &mut fmt::Formatter<'_>, named: &NamedPoolStats) -> fmt::Result {
    let pool = &named.stats;
    let t = &pool.totals;
    let width = pool.backends.iter().map(|b| b.addr.to_string().len()).max().unwrap_or(0).max(7);
    // One word each, so the columns stay whitespace-separated: `up/backup`.
    let states: Vec<String> = pool
        .backends
        .iter()
        .map(|b| match b.backup {
            true => format!("{}/backup", named.shown_state(b)),
            false => named.shown_state(b).to_owned(),
        })
        .collect();
    let sw = states.iter().map(String::len).max().unwrap_or(0).max(7);
    if let Some(d) = &named.discovery {
        writeln!(f, "{}", Discovery(d))?;
    }
    writeln!(
        f,
        "{:<width$}  {:<sw$}  {:>6}  {:>6}  {:>6}  {:>8}  {:>8}  {:>7}  {:>12}  {:>12}",
        "BACKEND",
        "STATE",
        "WEIGHT",
        "ACTIVE",
        "PEAK",
        "TOTAL",
        "FAILURES",
        "RETRIES",
        "BYTES_IN",
        "BYTES_OUT"
    )?;
    for (b, state) in pool.backends.iter().zip(states) {
        writeln!(
            f,
            "{:<width$}  {:<sw$}  {:>6}  {:>6}  {:>6}  {:>8}  {:>8}  {:>7}  {:>12}  {:>12}",
            b.addr.to_string(),
            state,
            b.weight,
            b.active,
            b.peak_active,
            b.connections,
            b.connect_failures,
            b.retries,
            b.bytes_in,
            b.bytes_out
        )?;
    }
    if pool.backends.is_empty() {
        writeln!(f, "(no backends: add one with `add <host> <port>`)")?;
    }
    notes(f, pool)?;
    for drain in named.drains.iter().filter(|d| d.outcome.is_none()) {
        writeln!(f, "{}", drain.note())?;
    }
    // Removed backends whose connections have all ended are no longer listed, but what they
    // did stays in TOTAL, so TOTAL never goes backwards; this row makes the column sums add up.
    let r = &pool.retired;
    if r.backends > 0 {
        writeln!(
            f,
            "{:<width$}  {:<sw$}  {:>6}  {:>6}  {:>6}  {:>8}  {:>8}  {:>7}  {:>12}  {:>12}",
            "RETIRED",
            "",
            "",
            "",
            "",
            r.connections,
            r.connect_failures,
            r.retries,
            r.bytes_in,
            r.bytes_out
        )?;
    }
    write!(
        f,
        "{:<width$}  {:<sw$}  {:>6}  {:>6}  {:>6}  {:>8}  {:>8}  {:>7}  {:>12}  {:>12}",
        "TOTAL",
        "",
        "",
        t.active,
        "",
        t.connections,
        t.connect_failures,
        t.retries,
        t.bytes_in,
        t.bytes_out
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_discovery_line_says_when_its_next_lookup_is_or_that_one_is_under_way() {
        let mut d = crate::discovery::DiscoveryStats {
            source: "host:web.test:80".into(),
            members: vec!["127.0.0.1:80".parse().unwrap()],
            last_refresh: Some(Duration::from_secs(5)),
            last_error: None,
            next_refresh: Some(Duration::from_secs(25)),
            counts: Default::default(),
        };
        let line = Discovery(&d).to_string();
        assert!(line.contains("1 backend, last lookup 5s ago, next in 25s, 0 errors"), "{line}");
        d.next_refresh = Some(Duration::ZERO);
        let line = Discovery(&d).to_string();
        assert!(line.contains("last lookup 5s ago, looking up now, 0 errors"), "{line}");
    }

    #[test]
    fn columns_stay_aligned_with_backups() {
        let pool = lb_core::Pool::default();
        pool.add("10.0.0.1:80".parse().unwrap(), None).unwrap();
        let backup = lb_core::AddOptions { backup: true, ..Default::default() };
        pool.add_backend("10.0.0.2:80".parse().unwrap(), backup, None).unwrap();
        pool.set_admin_state("10.0.0.2:80".parse().unwrap(), lb_core::AdminState::Maint).unwrap();
        let named = NamedPoolStats {
            name: "default".into(),
            stats: pool.stats(),
            removed: false,
            checks_enabled: false,
            checks: HashMap::new(),
            changes: HashMap::new(),
            discovery: None,
            drains: Vec::new(),
        };
        let text = named.to_string();
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert!(lines[2].contains("maint/backup"), "{text}");
        // Every row's WEIGHT value ends where the heading's WEIGHT does.
        let end = lines[0].find("WEIGHT").unwrap() + "WEIGHT".len();
        for row in &lines[1..3] {
            assert_eq!(row.as_bytes()[end - 1], b'1', "{text}");
            assert_eq!(row.as_bytes()[end], b' ', "{text}");
        }
    }
}
