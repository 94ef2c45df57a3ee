//! Who may connect, checked before any backend is touched: a listener's `allow` and `deny`
//! address ranges (nginx's `allow`/`deny`, HAProxy's ACLs on `src`), and limits per client
//! address on connections open at once and new connections per second (nginx's `limit_conn`,
//! HAProxy's stick tables with `conn_cur` and `conn_rate`).
//!
//! The per-client table has a fixed size, allocated when a limit is first set: a flood of
//! connections from ever new addresses cannot make it grow. It is set-associative (each
//! address hashes, with a per-process random key, to one set of [`WAYS`] entries): a new
//! address takes the entry in its set that has no connection open and was seen longest ago. If
//! every entry of its set has connections open, the address is not tracked and its connection
//! is let through (and counted as untracked): with 16,384 sets of 4 and at most as many open
//! connections as the process has descriptors, that takes a flood aimed at one set, which
//! the random key makes impossible to aim.

use std::fmt;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;

/// A range of client addresses: `10.0.0.0/8`, `2001:db8::/32`, or one address (`192.0.2.7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressRange(ipnet::IpNet);

impl AddressRange {
    /// Whether `ip` is in the range. An IPv4-mapped IPv6 address counts as the IPv4 one (a
    /// dual-stack listener sees IPv4 clients so), and an IPv6 range that covers the mapped
    /// addresses (`::/0`) covers the IPv4 ones.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.0, ip) {
            (ipnet::IpNet::V6(net), IpAddr::V4(v4)) => net.contains(&v4.to_ipv6_mapped()),
            _ => self.0.contains(&ip),
        }
    }
}

impl FromStr for AddressRange {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        let net = match s.parse::<ipnet::IpNet>() {
            Ok(net) => net,
            Err(_) => match s.parse::<IpAddr>() {
                Ok(ip) => ipnet::IpNet::from(ip),
                Err(_) => {
                    return Err(Error::InvalidSetting(format!(
                        "invalid address range {:?}: expected an address or CIDR range, such \
                         as 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32",
                        s.escape_debug().to_string()
                    )))
                }
            },
        };
        // `10.0.0.1/8` is most likely `10.0.0.1/32` with a typo, which read as `10.0.0.0/8`
        // would let in a whole /8: refuse it, saying both.
        if net.trunc() != net {
            return Err(Error::InvalidSetting(format!(
                "invalid address range {:?}: host bits are set; write {} for the range or {} \
                 for the one address",
                s.escape_debug().to_string(),
                net.trunc(),
                ipnet::IpNet::from(net.addr()),
            )));
        }
        // An IPv4-mapped range (`::ffff:10.0.0.0/104`) is the IPv4 range, as clients are.
        if let ipnet::IpNet::V6(v6) = net {
            if let (Some(v4), true) = (v6.addr().to_ipv4_mapped(), v6.prefix_len() >= 96) {
                let v4 = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).expect("prefix <= 32");
                return Ok(AddressRange(v4.into()));
            }
        }
        Ok(AddressRange(net))
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Who may connect to a listener, and how much.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// If not empty, only clients in one of these ranges may connect.
    pub allow: Vec<AddressRange>,
    /// Clients in one of these ranges may not connect (also when `allow` lists them).
    pub deny: Vec<AddressRange>,
    /// Most connections one client address may have open at once.
    pub max_connections_per_client: Option<u32>,
    /// Most new connections per second from one client address (averaged over a sliding
    /// second).
    pub max_connection_rate_per_client: Option<u32>,
}

impl Admission {
    /// Whether any rule is set (none: the check is skipped entirely).
    pub(crate) fn is_open(&self) -> bool {
        self.allow.is_empty()
            && self.deny.is_empty()
            && self.max_connections_per_client.is_none()
            && self.max_connection_rate_per_client.is_none()
    }

    /// Whether `ip` is let in by `allow` and `deny`.
    pub(crate) fn allows(&self, ip: IpAddr) -> bool {
        (self.allow.is_empty() || self.allow.iter().any(|r| r.contains(ip)))
            && !self.deny.iter().any(|r| r.contains(ip))
    }

    fn limits(&self) -> bool {
        self.max_connections_per_client.is_some() || self.max_connection_rate_per_client.is_some()
    }
}

/// Why a client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// By `allow` or `deny`.
    Denied,
    /// Over its limit of connections open at once, or of new connections per second.
    RateLimited,
}

/// Sets of the per-client table.
const SETS: usize = 16 * 1024;
/// Entries per set.
pub(crate) const WAYS: usize = 4;
/// Locks over the sets, so that clients contend only within one slice of the table.
const SHARDS: usize = 64;

/// One client address's counts.
#[derive(Debug, Clone, Copy)]
struct Entry {
    ip: Option<IpAddr>,
    open: u32,
    /// The start of the second `this_second` counts in; `previous` is the second before.
    second: Instant,
    this_second: u32,
    previous: u32,
    last_seen: Instant,
}

impl Entry {
    fn empty(now: Instant) -> Self {
        Entry { ip: None, open: 0, second: now, this_second: 0, previous: 0, last_seen: now }
    }

    /// New connections per second, estimated over the last sliding second.
    fn rate(&mut self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.second);
        if elapsed >= Duration::from_secs(2) {
            (self.second, self.this_second, self.previous) = (now, 0, 0);
        } else if elapsed >= Duration::from_secs(1) {
            self.previous = self.this_second;
            self.this_second = 0;
            self.second += Duration::from_secs(1);
        }
        let into = now.saturating_duration_since(self.second).as_secs_f64().min(1.0);
        f64::from(self.previous) * (1.0 - into) + f64::from(self.this_second)
    }
}

/// The per-client counts of one listener (allocated when a limit is first set).
pub(crate) struct ClientTable {
    shards: Vec<Mutex<Vec<Entry>>>,
    key: std::collections::hash_map::RandomState,
    /// Connections let through untracked because their set was full of open connections.
    pub(crate) untracked: AtomicU64,
}

impl fmt::Debug for ClientTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTable").field("entries", &(SETS * WAYS)).finish_non_exhaustive()
    }
}

impl ClientTable {
    fn new() -> Self {
        let now = Instant::now();
        let per_shard = SETS / SHARDS * WAYS;
        ClientTable {
            shards: (0..SHARDS).map(|_| Mutex::new(vec![Entry::empty(now); per_shard])).collect(),
            key: std::collections::hash_map::RandomState::new(),
            untracked: AtomicU64::new(0),
        }
    }

    /// How many entries the table holds: fixed.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }

    /// The shard and the set's first index within it for `ip`.
    fn locate(&self, ip: IpAddr) -> (usize, usize) {
        let set = (self.key.hash_one(ip) as usize) % SETS;
        (set % SHARDS, (set / SHARDS) * WAYS)
    }

    /// Counts a new connection from `ip` if its limits allow it. `Ok(Some(..))` is a place
    /// held until dropped; `Ok(None)` an untracked client (its set full).
    fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        rules: &Admission,
    ) -> Result<Option<ClientPlace>, Refused> {
        let now = Instant::now();
        let (shard, first) = self.locate(ip);
        let mut entries = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        let set = &mut entries[first..first + WAYS];
        let at = match set.iter().position(|e| e.ip == Some(ip)) {
            Some(at) => at,
            None => {
                // The free entry seen longest ago; an entry with connections open stays.
                let Some(at) =
                    (0..WAYS).filter(|&i| set[i].open == 0).min_by_key(|&i| set[i].last_seen)
                else {
                    self.untracked.fetch_add(1, Relaxed);
                    return Ok(None);
                };
                set[at] = Entry { ip: Some(ip), ..Entry::empty(now) };
                at
            }
        };
        let entry = &mut set[at];
        entry.last_seen = now;
        if rules.max_connections_per_client.is_some_and(|max| entry.open >= max) {
            return Err(Refused::RateLimited);
        }
        let rate = entry.rate(now);
        if rules.max_connection_rate_per_client.is_some_and(|max| rate >= f64::from(max)) {
            return Err(Refused::RateLimited);
        }
        entry.this_second += 1;
        entry.open += 1;
        Ok(Some(ClientPlace { table: Arc::clone(self), ip, shard, first }))
    }

    fn release(&self, ip: IpAddr, shard: usize, first: usize) {
        let mut entries = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = entries[first..first + WAYS].iter_mut().find(|e| e.ip == Some(ip)) {
            e.open = e.open.saturating_sub(1);
        }
    }
}

/// A connection counted against its client's limits; dropping it ends the count.
#[derive(Debug)]
pub(crate) struct ClientPlace {
    table: Arc<ClientTable>,
    ip: IpAddr,
    shard: usize,
    first: usize,
}

impl Drop for ClientPlace {
    fn drop(&mut self) {
        self.table.release(self.ip, self.shard, self.first);
    }
}

/// A listener's admission state: its per-client table, made when a limit is first set.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    table: OnceLock<Arc<ClientTable>>,
}

impl Gate {
    /// Checks `ip` against `rules`: `Ok` with the place it holds (if limits are set and it is
    /// tracked), or why it is refused.
    pub(crate) fn admit(
        &self,
        ip: IpAddr,
        rules: &Admission,
    ) -> Result<Option<ClientPlace>, Refused> {
        let ip = ip.to_canonical();
        if !rules.allows(ip) {
            return Err(Refused::Denied);
        }
        if !rules.limits() {
            return Ok(None);
        }
        self.table.get_or_init(|| Arc::new(ClientTable::new())).admit(ip, rules)
    }

    /// Connections let through untracked (their set of the table full of open connections).
    pub(crate) fn untracked(&self) -> u64 {
        self.table.get().map_or(0, |t| t.untracked.load(Relaxed))
    }

    #[cfg(test)]
    pub(crate) fn table(&self) -> Option<&Arc<ClientTable>> {
        self.table.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(s: &str) -> AddressRange {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_parse_and_contain() {
        assert_eq!(range("192.0.2.7").to_string(), "192.0.2.7/32");
        // Host bits set: most likely a typo for one address, which must not open a whole /8.
        let e = "10.1.2.3/8".parse::<AddressRange>().unwrap_err().to_string();
        assert!(e.contains("host bits are set; write 10.0.0.0/8") && e.contains("10.1.2.3/32"));
        // IPv4-mapped ranges are the IPv4 ones, for IPv4 clients and mapped ones alike.
        for mapped in ["::ffff:127.0.0.5", "::ffff:127.0.0.0/120"] {
            let r = range(mapped);
            assert!(r.to_string().starts_with("127.0.0."), "{r}");
            assert!(r.contains("127.0.0.5".parse().unwrap()), "{mapped}");
            assert!(r.contains("::ffff:127.0.0.5".parse().unwrap()), "{mapped}");
            assert!(!r.contains("127.0.1.5".parse().unwrap()), "{mapped}");
        }
        // An IPv6 range over the mapped addresses covers IPv4 clients.
        assert!(range("::/0").contains("192.0.2.1".parse().unwrap()));
        assert!(!range("2001:db8::/32").contains("192.0.2.1".parse().unwrap()));
        assert!(range("10.0.0.0/8").contains("10.200.0.1".parse().unwrap()));
        assert!(range("10.0.0.0/8").contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!range("10.0.0.0/8").contains("11.0.0.1".parse().unwrap()));
        assert!(range("2001:db8::/32").contains("2001:db8::7".parse().unwrap()));
        for bad in ["", "10.0.0.0/33", "example.com", "10.0.0/8"] {
            assert!(
                bad.parse::<AddressRange>()
                    .unwrap_err()
                    .to_string()
                    .contains("invalid address range"),
                "{bad}"
            );
        }
    }

    #[test]
    fn allow_and_deny() {
        let rules = Admission {
            allow: vec![range("10.0.0.0/8")],
            deny: vec![range("10.9.0.0/16")],
            ..Default::default()
        };
        let gate = Gate::default();
        assert!(gate.admit("10.1.0.1".parse().unwrap(), &rules).is_ok());
        assert_eq!(gate.admit("10.9.0.1".parse().unwrap(), &rules).unwrap_err(), Refused::Denied);
        assert_eq!(gate.admit("11.0.0.1".parse().unwrap(), &rules).unwrap_err(), Refused::Denied);
        assert!(gate.table().is_none(), "no table without a limit");
    }

    #[tokio::test(start_paused = true)]
    async fn limits_per_client_open_and_per_second() {
        let gate = Gate::default();
        let open = Admission { max_connections_per_client: Some(2), ..Default::default() };
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = gate.admit(ip, &open).unwrap();
        let b = gate.admit(ip, &open).unwrap();
        assert_eq!(gate.admit(ip, &open).unwrap_err(), Refused::RateLimited);
        assert!(gate.admit("192.0.2.2".parse().unwrap(), &open).is_ok(), "others unaffected");
        drop(a);
        assert!(gate.admit(ip, &open).is_ok(), "a place freed");
        drop(b);
        let rate = Admission { max_connection_rate_per_client: Some(3), ..Default::default() };
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        for _ in 0..3 {
            drop(gate.admit(ip, &rate).unwrap());
        }
        assert_eq!(gate.admit(ip, &rate).unwrap_err(), Refused::RateLimited);
        tokio::time::advance(Duration::from_millis(1500)).await;
        // Half of the last second's 3 still count: 1.5 < 3.
        assert!(gate.admit(ip, &rate).is_ok());
        tokio::time::advance(Duration::from_secs(3)).await;
        for _ in 0..3 {
            drop(gate.admit(ip, &rate).unwrap());
        }
    }

    #[test]
    fn the_table_stays_the_same_size_under_a_flood_of_addresses() {
        let gate = Gate::default();
        let rules = Admission { max_connections_per_client: Some(5), ..Default::default() };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let _guard = runtime.enter();
        let mut held = Vec::new();
        for i in 0..200_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let place = gate.admit(ip, &rules).unwrap();
            if i % 10 == 0 {
                held.push(place);
            }
        }
        let table = gate.table().unwrap();
        assert_eq!(table.capacity(), SETS * WAYS);
        // 20,000 held places fill some sets' four ways; those clients go untracked, not refused.
        assert!(gate.untracked() < 200_000);
        drop(held);
    }
}
