//! Pool members from DNS: `dns:HOST:PORT` (every A and AAAA address of a name, on one port) or
//! `srv:NAME` (SRV records: a host, port and weight each), as Consul and Kubernetes headless
//! services publish endpoints.
//!
//! A [`DnsSource`] answers one lookup ([`DnsSource::lookup`]) through hickory's resolver, asking
//! a given server or the system's (`/etc/resolv.conf`). A pool given a [`DiscoveryConfig`]
//! through [`Handle::set_discovery`](crate::Handle::set_discovery) runs one task that looks
//! the name up again when the answer's TTL runs out, clamped to
//! [`min_refresh`](DiscoveryConfig::min_refresh)..[`max_refresh`](DiscoveryConfig::max_refresh),
//! and brings the pool to the answer with the same operations as the `add`, `weight` and
//! `remove` commands: an address new in the answer is added, one gone from it is removed (its
//! open connections finish), one whose SRV weight changed gets the new weight.
//!
//! The task owns the members it added and touches no other: a backend listed in the
//! configuration or added at the prompt stays whatever DNS says, and a reload's plan leaves the
//! discovered members alone ([`Handle::discovered`](crate::Handle::discovered)). A lookup that
//! fails, times out or answers with no address changes nothing: the pool keeps its last known
//! members (DNS trouble must never empty a pool), the error is logged (target `lb::discovery`)
//! and counted (`lb_dns_errors_total`), and the lookup is tried again sooner than a TTL would
//! say, backing off from `min_refresh` to `max_refresh`.
//!
//! SRV priority: only the records of the lowest priority value (the primaries) become
//! members. A record's weight (0-65535) is the backend's weight clamped to 1-1000 (weight 0,
//! "rarely", becomes 1: lb has no weight that means "only when nothing else is left").

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, Record};
use hickory_resolver::{Resolver, TokioResolver};
use lb_core::{AdminState, Pool, MAX_WEIGHT};
use tokio::sync::oneshot;
use tokio::time::Instant;

#[cfg(any(test, feature = "test-util"))]
mod test_server;
#[cfg(any(test, feature = "test-util"))]
pub use test_server::{DnsBehavior, SrvRecord, TestDnsServer};

mod query;
pub use query::DnsQuery;

use crate::counters::DiscoveryCounters;
pub use crate::counters::DiscoveryCounts;
use crate::error::Error;

/// Target of the log lines about discovery (members added and removed, failed lookups).
const LOG_TARGET: &str = "lb::discovery";

/// Shortest wait between two lookups, by default: a record with TTL 0 (Consul's default for
/// services) would otherwise be asked for continuously.
pub const DEFAULT_DNS_MIN_REFRESH: Duration = Duration::from_secs(1);

/// Longest wait between two lookups, by default: even a name with a TTL of an hour is asked
/// again within 30 s, so new backends join soon (lookups are cheap, a missing backend is not).
pub const DEFAULT_DNS_MAX_REFRESH: Duration = Duration::from_secs(30);

/// Longest wait for one DNS answer, by default (two tries are made).
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(2);

/// How a pool's members are discovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// What to look up.
    pub query: DnsQuery,
    /// The DNS server to ask (Consul's DNS interface is 127.0.0.1:8600); `None` asks the
    /// system's name servers, with its search domains (`/etc/resolv.conf`) and `/etc/hosts`.
    pub resolver: Option<SocketAddr>,
    /// Shortest wait before the next lookup (a TTL below this counts as this): default
    /// [`DEFAULT_DNS_MIN_REFRESH`].
    pub min_refresh: Duration,
    /// Longest wait before the next lookup (a TTL above this counts as this), and the longest
    /// pause between retries of a failing lookup: default [`DEFAULT_DNS_MAX_REFRESH`].
    pub max_refresh: Duration,
    /// Longest wait for the server's answer to one query, tried twice: default
    /// [`DEFAULT_DNS_TIMEOUT`].
    pub timeout: Duration,
}

impl DiscoveryConfig {
    /// Looks `query` up through the system's resolver, with the default refresh bounds.
    pub fn new(query: DnsQuery) -> Self {
        DiscoveryConfig {
            query,
            resolver: None,
            min_refresh: DEFAULT_DNS_MIN_REFRESH,
            max_refresh: DEFAULT_DNS_MAX_REFRESH,
            timeout: DEFAULT_DNS_TIMEOUT,
        }
    }

    /// `dns:app.internal:8080 via 127.0.0.1:8600`, or the query alone for the system's resolver.
    pub fn describe(&self) -> String {
        match self.resolver {
            Some(server) => format!("{} via {server}", self.query),
            None => self.query.to_string(),
        }
    }
}

/// One backend of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Its address and port.
    pub addr: SocketAddr,
    /// Its weight, 1-1000 (1 for `dns:`, the SRV weight clamped for `srv:`).
    pub weight: u32,
}

/// A successful lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The backends, in address order, each address once.
    pub members: Vec<Member>,
    /// The smallest TTL of the records the answer was made of: how long it holds.
    pub ttl: Duration,
}

/// Looks up one [`DnsQuery`] through hickory's resolver.
#[derive(Clone)]
pub struct DnsSource {
    query: DnsQuery,
    resolver: TokioResolver,
    timeout: Duration,
}

impl fmt::Debug for DnsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsSource").field("query", &self.query).finish_non_exhaustive()
    }
}

/// What a failed lookup of `name` for `what` records (`address`, `SRV`) says in the log and in
/// `stats`: in words for the answers a server gives (hickory's own text for "no records" is a
/// debug dump of the query), else hickory's.
fn lookup_error(e: &hickory_resolver::net::NetError, name: &str, what: &str) -> String {
    let name = name.trim_end_matches('.');
    if e.is_nx_domain() {
        format!("no such name: {name} (NXDOMAIN)")
    } else if e.is_no_records_found() {
        format!("no {what} records for {name}")
    } else {
        e.to_string()
    }
}

impl DnsSource {
    /// A source for `config`'s query and resolver. Fails when the system's resolver
    /// configuration cannot be read (only when `config.resolver` is `None`).
    pub fn new(config: &DiscoveryConfig) -> Result<DnsSource, Error> {
        let mut builder = match config.resolver {
            Some(server) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = server.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = server.port();
                let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
                name_server.connections = vec![udp, tcp];
                let resolver = ResolverConfig::from_name_servers(vec![name_server]);
                Resolver::builder_with_config(resolver, TokioRuntimeProvider::default())
            }
            None => TokioResolver::builder_tokio().map_err(|e| {
                Error::InvalidSetting(format!(
                    "discover {}: cannot read the system's DNS configuration: {e}",
                    config.query
                ))
            })?,
        };
        let options = builder.options_mut();
        options.timeout = config.timeout;
        options.attempts = 2;
        // Every lookup must reach the server: the task itself waits for the TTL, and a cached
        // answer would hide a change for as long.
        options.cache_size = 0;
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        if config.resolver.is_some() {
            // Asked of that server alone, as written: no /etc/hosts, no search domains.
            options.use_hosts_file = ResolveHosts::Never;
            options.ndots = 0;
        }
        let resolver = builder.build().map_err(|e| {
            Error::InvalidSetting(format!(
                "discover {}: cannot set up the resolver: {e}",
                config.query
            ))
        })?;
        Ok(DnsSource { query: config.query.clone(), resolver, timeout: config.timeout })
    }

    /// What this source looks up.
    pub fn query(&self) -> &DnsQuery {
        &self.query
    }

    /// Looks the name up once. An answer without any address is an error (`no address`), as
    /// is a failed lookup or one that takes longer than three times the timeout of one try (two
    /// tries, and the lookups of SRV targets' addresses).
    pub async fn lookup(&self) -> Result<Answer, String> {
        // hickory bounds each try; this bounds the whole, SRV targets' own lookups included.
        let bound = self.timeout * 3;
        match tokio::time::timeout(bound, self.lookup_unbounded()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {bound:?}")),
        }
    }

    async fn lookup_unbounded(&self) -> Result<Answer, String> {
        let mut members: BTreeMap<SocketAddr, u32> = BTreeMap::new();
        let mut ttl = u32::MAX;
        match &self.query {
            DnsQuery::Host { name, port } => {
                let found = self
                    .resolver
                    .lookup_ip(name.as_str())
                    .await
                    .map_err(|e| lookup_error(&e, name, "address"))?;
                for record in found.as_lookup().answers() {
                    if let Some(ip) = address(record) {
                        ttl = ttl.min(record.ttl);
                        members.insert(SocketAddr::new(ip, *port), 1);
                    }
                }
            }
            DnsQuery::Srv { name } => {
                let found = self
                    .resolver
                    .srv_lookup(name.as_str())
                    .await
                    .map_err(|e| lookup_error(&e, name, "SRV"))?;
                let records: Vec<_> = found
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        // A target of "." says the service is not available there.
                        RData::SRV(srv) if !srv.target.is_root() => Some((r.ttl, srv.clone())),
                        _ => None,
                    })
                    .collect();
                let primary = records.iter().map(|(_, srv)| srv.priority).min();
                for (record_ttl, srv) in records.iter().filter(|(_, s)| Some(s.priority) == primary)
                {
                    ttl = ttl.min(*record_ttl);
                    let weight = u32::from(srv.weight).clamp(1, MAX_WEIGHT);
                    // The server usually sends the targets' addresses along (Consul does);
                    // otherwise they are looked up.
                    let mut ips: Vec<(IpAddr, u32)> = found
                        .additionals()
                        .iter()
                        .filter(|r| r.name == srv.target)
                        .filter_map(|r| address(r).map(|ip| (ip, r.ttl)))
                        .collect();
                    if ips.is_empty() {
                        let target = srv.target.clone();
                        let more = self.resolver.lookup_ip(target).await.map_err(|e| {
                            let target = srv.target.to_string();
                            format!("SRV target: {}", lookup_error(&e, &target, "address"))
                        })?;
                        ips = more
                            .as_lookup()
                            .answers()
                            .iter()
                            .filter_map(|r| address(r).map(|ip| (ip, r.ttl)))
                            .collect();
                    }
                    for (ip, address_ttl) in ips {
                        ttl = ttl.min(address_ttl);
                        let entry = members.entry(SocketAddr::new(ip, srv.port)).or_insert(weight);
                        // Listed twice (two names for one host): counted once, the larger weight.
                        *entry = (*entry).max(weight);
                    }
                }
            }
        }
        if members.is_empty() {
            return Err("no address in the answer".into());
        }
        let members = members.into_iter().map(|(addr, weight)| Member { addr, weight }).collect();
        Ok(Answer { members, ttl: Duration::from_secs(u64::from(ttl)) })
    }
}

/// The address an A or AAAA record holds.
fn address(record: &Record) -> Option<IpAddr> {
    match &record.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
        _ => None,
    }
}

/// One pool's discovery: what it runs, what it owns, what it has done. Lives as long as the
/// pool; the task that refreshes it comes and goes with the configuration.
#[derive(Debug, Default)]
pub(crate) struct DiscoveryState {
    pub(crate) counters: DiscoveryCounters,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// What runs, if anything.
    config: Option<DiscoveryConfig>,
    /// The running task.
    task: Option<tokio::task::AbortHandle>,
    /// The members the task added, with the weight DNS gave each last. A reload leaves them
    /// alone; the task removes them when DNS stops listing them.
    owned: BTreeMap<SocketAddr, u32>,
    /// When the last lookup ended, and how.
    last: Option<(Instant, Result<(), String>)>,
    /// When the next lookup is due.
    next: Option<Instant>,
    /// Lookups failed in a row.
    failures: u32,
}

/// A pool's discovery at one moment, for `stats` and `GET /stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryStats {
    /// What is looked up, and where (`srv:_http._tcp.web via 127.0.0.1:8600`).
    pub source: String,
    /// The members discovery added, in address order.
    pub members: Vec<SocketAddr>,
    /// Time since the last lookup ended, if one has.
    pub last_refresh: Option<Duration>,
    /// Why the last lookup failed, if it did (the members are then the last known ones).
    pub last_error: Option<String>,
    /// Time until the next lookup.
    pub next_refresh: Option<Duration>,
    /// The counters: lookups, errors, members added, removed and reweighted.
    pub counts: DiscoveryCounts,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DiscoveryState {
    /// What runs now.
    pub(crate) fn config(&self) -> Option<DiscoveryConfig> {
        lock(&self.inner).config.clone()
    }

    /// The members discovery owns.
    pub(crate) fn owned(&self) -> Vec<SocketAddr> {
        lock(&self.inner).owned.keys().copied().collect()
    }

    /// Stops the task, if one runs. With `release`, its members become ordinary ones and
    /// nothing is discovered any more.
    pub(crate) fn stop(&self, release: bool) {
        let mut inner = lock(&self.inner);
        if let Some(task) = inner.task.take() {
            task.abort();
        }
        if release {
            inner.config = None;
            inner.owned.clear();
            inner.next = None;
        }
    }

    /// The stats, if discovery is configured.
    pub(crate) fn stats(&self) -> Option<DiscoveryStats> {
        let inner = lock(&self.inner);
        let config = inner.config.as_ref()?;
        let now = Instant::now();
        Some(DiscoveryStats {
            source: config.describe(),
            members: inner.owned.keys().copied().collect(),
            last_refresh: inner.last.as_ref().map(|(at, _)| now.saturating_duration_since(*at)),
            last_error: inner.last.as_ref().and_then(|(_, r)| r.clone().err()),
            next_refresh: inner.next.map(|at| at.saturating_duration_since(now)),
            counts: self.counters.snapshot(),
        })
    }
}

/// Starts discovery for `pool` (named `name`) as `config` says, on the current runtime, in
/// place of what ran; resolves once the first lookup has been applied, with what it did.
/// `stop` ends the task (shutdown).
pub(crate) async fn start(
    name: Arc<str>,
    pool: Pool,
    state: Arc<DiscoveryState>,
    config: DiscoveryConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<String, Error> {
    let source = DnsSource::new(&config)?;
    let (first_tx, first_rx) = oneshot::channel();
    {
        let mut inner = lock(&state.inner);
        if let Some(task) = inner.task.take() {
            task.abort();
        }
        inner.config = Some(config.clone());
        inner.failures = 0;
        let task =
            tokio::spawn(run(name, pool, Arc::clone(&state), config, source, first_tx, stop));
        inner.task = Some(task.abort_handle());
    }
    Ok(first_rx.await.unwrap_or_else(|_| "stopped before its first lookup".into()))
}

/// The task: look up, apply, wait, until `stop`.
async fn run(
    name: Arc<str>,
    pool: Pool,
    state: Arc<DiscoveryState>,
    config: DiscoveryConfig,
    source: DnsSource,
    first: oneshot::Sender<String>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut first = Some(first);
    loop {
        let answer = tokio::select! {
            () = &mut stop => return,
            answer = source.lookup() => answer,
        };
        let (summary, wait) = apply(&name, &pool, &state, &config, answer);
        if let Some(first) = first.take() {
            let _ = first.send(summary);
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Brings the pool to one lookup's outcome; returns what it did, in words, and the wait
/// before the next lookup.
fn apply(
    name: &str,
    pool: &Pool,
    state: &DiscoveryState,
    config: &DiscoveryConfig,
    outcome: Result<Answer, String>,
) -> (String, Duration) {
    let source = config.describe();
    let mut inner = lock(&state.inner);
    let now = Instant::now();
    let counters = &state.counters;
    let answer = match outcome {
        Ok(answer) => answer,
        Err(why) => {
            inner.failures = inner.failures.saturating_add(1);
            counters.bump(|c| &c.errors);
            let kept = inner.owned.len();
            // The first failure of a run of them, or a new reason, is worth a warning; the
            // rest would fill the log at every retry.
            let repeated = matches!(&inner.last, Some((_, Err(old))) if *old == why);
            if repeated {
                tracing::debug!(target: LOG_TARGET, pool = name, source = %source, error = %why, kept, "DNS lookup failed again; keeping the last known members");
            } else {
                tracing::warn!(target: LOG_TARGET, pool = name, source = %source, error = %why, kept, "DNS lookup failed; keeping the last known members");
            }
            // Back off from min_refresh, doubling, up to max_refresh.
            let doublings = (inner.failures - 1).min(16);
            let wait = config
                .min_refresh
                .saturating_mul(1 << doublings)
                .min(config.max_refresh.max(config.min_refresh));
            inner.last = Some((now, Err(why.clone())));
            inner.next = Some(now + wait);
            return (format!("lookup failed ({why}); will retry"), wait);
        }
    };
    if matches!(&inner.last, Some((_, Err(_)))) {
        tracing::info!(target: LOG_TARGET, pool = name, source = %source, backends = answer.members.len(), "DNS lookup answers again");
    }
    inner.failures = 0;
    counters.bump(|c| &c.refreshes);
    let mut done = Vec::new();
    let mut added = 0;
    // Additions first, removals last: the pool never passes through a smaller set than at
    // either end, and a non-empty answer never leaves it empty.
    for member in &answer.members {
        let addr = member.addr;
        let present = pool.get(addr).is_some();
        match inner.owned.get(&addr).copied() {
            Some(_) if !present => {
                // Removed at the prompt while DNS still lists it: DNS says it is a member.
                if add(name, pool, member, &source) {
                    inner.owned.insert(addr, member.weight);
                    counters.bump(|c| &c.added);
                    added += 1;
                }
            }
            Some(old) if old != member.weight => {
                // Only a change of the DNS weight is applied, so a weight set by hand stays
                // until DNS says otherwise.
                match crate::control::set_backend_weight(pool, addr, member.weight) {
                    Ok(()) => {
                        tracing::info!(target: LOG_TARGET, pool = name, backend = %addr, from = old, to = member.weight, source = %source, "backend weight changed by DNS");
                        counters.bump(|c| &c.reweighted);
                        done.push(format!("weight {addr} {old}->{}", member.weight));
                    }
                    Err(e) => {
                        tracing::warn!(target: LOG_TARGET, pool = name, backend = %addr, error = %e, "cannot change the weight DNS gives")
                    }
                }
                inner.owned.insert(addr, member.weight);
            }
            Some(_) => {}
            // A member of the configuration (or added at the prompt): not discovery's.
            None if present => {}
            None => {
                if add(name, pool, member, &source) {
                    inner.owned.insert(addr, member.weight);
                    counters.bump(|c| &c.added);
                    added += 1;
                }
            }
        }
    }
    let gone: Vec<SocketAddr> = inner
        .owned
        .keys()
        .copied()
        .filter(|a| !answer.members.iter().any(|m| m.addr == *a))
        .collect();
    for addr in &gone {
        inner.owned.remove(addr);
        match crate::control::remove_backend(pool, *addr) {
            Ok(()) => {
                tracing::info!(target: LOG_TARGET, pool = name, backend = %addr, source = %source, "backend removed: DNS no longer lists it (its open connections finish)");
                counters.bump(|c| &c.removed);
            }
            // Removed at the prompt meanwhile: nothing left to do.
            Err(e) => {
                tracing::debug!(target: LOG_TARGET, pool = name, backend = %addr, error = %e, "backend DNS no longer lists was already gone")
            }
        }
    }
    let wait = answer.ttl.clamp(config.min_refresh, config.max_refresh.max(config.min_refresh));
    inner.last = Some((now, Ok(())));
    inner.next = Some(now + wait);
    let mut summary = if added > 0 { vec![format!("{added} added")] } else { Vec::new() };
    if !gone.is_empty() {
        summary.push(format!("{} removed", gone.len()));
    }
    summary.append(&mut done);
    let members = answer.members.len();
    let s = if members == 1 { "" } else { "s" };
    let changes =
        if summary.is_empty() { String::new() } else { format!(" ({})", summary.join(", ")) };
    (format!("{members} backend{s} in DNS{changes}"), wait)
}

/// Adds a member DNS lists through the command path; whether it was added.
fn add(name: &str, pool: &Pool, member: &Member, source: &str) -> bool {
    match crate::control::add_backend(pool, member.addr, Some(member.weight), AdminState::Ready) {
        Ok(()) => {
            tracing::info!(target: LOG_TARGET, pool = name, backend = %member.addr, weight = member.weight, source, "backend added: DNS lists it");
            true
        }
        Err(e) => {
            tracing::warn!(target: LOG_TARGET, pool = name, backend = %member.addr, error = %e, "cannot add a backend DNS lists");
            false
        }
    }
}

#[cfg(test)]
mod tests;
