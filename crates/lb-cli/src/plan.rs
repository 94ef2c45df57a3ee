//! What a reload changes in one pool: the backends the file wants, resolved ([`resolve`],
//! [`wanted`]), and the [`Plan`] that brings the running pool to them; and which changed
//! settings only a restart applies ([`needs_restart`]).
//!
//! The file (under the flags, as at start-up) is the whole truth about a pool's backend list
//! (but for the members DNS discovery manages, which a plan leaves to it),
//! their weights and admin states, and the algorithm: a plan adds, removes and changes backends
//! until the pool matches it, which also undoes changes made at the prompt since. Open
//! connections are never touched: a removed backend's connections finish on their own
//! ([`Pool::remove`]).

use std::fmt;
use std::net::SocketAddr;

use foldhash::{HashMap, HashMapExt, HashSet};
use lb_core::{AddOptions, AdminState, Algorithm, BackendStats, Pool, PoolStats, DEFAULT_WEIGHT};

use crate::args::BackendSpec;
use crate::settings::{Reload, Settings};

/// A backend as the configuration wants it, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub(crate) addr: SocketAddr,
    pub(crate) weight: u32,
    pub(crate) state: AdminState,
    pub(crate) backup: bool,
}

impl Wanted {
    /// The address and how it joins a pool, as [`Pool::add_backends`] takes them.
    pub(crate) fn add_options(&self) -> (SocketAddr, AddOptions) {
        (
            self.addr,
            AddOptions { weight: Some(self.weight), admin: self.state, backup: self.backup },
        )
    }
}

/// Resolves every backend (all or nothing), preferring IPv4 as `localhost` may resolve to ::1
/// first while backends usually listen on IPv4. An IPv4-mapped address (`[::ffff:10.0.0.5]:80`)
/// is the IPv4 one, so that one backend is not listed twice under two spellings.
pub(crate) async fn resolve(specs: &[BackendSpec]) -> Result<Vec<SocketAddr>, String> {
    let mut resolved = Vec::with_capacity(specs.len());
    for spec in specs {
        let addrs =
            spec.target.resolve().await.map_err(|e| format!("backend {}: {e}", spec.target))?;
        let addr = addrs.iter().find(|a| a.is_ipv4()).copied().unwrap_or(addrs[0]);
        resolved.push(SocketAddr::new(addr.ip().to_canonical(), addr.port()));
    }
    Ok(resolved)
}

/// Pairs backends with their resolved addresses; two entries that reach the same address are
/// an error (say `localhost:8001` and `127.0.0.1:8001`), as the pool holds an address once.
pub(crate) fn wanted(specs: &[BackendSpec], addrs: &[SocketAddr]) -> Result<Vec<Wanted>, String> {
    let mut out: Vec<Wanted> = Vec::with_capacity(specs.len());
    // Each address's entry, so that a file of thousands of backends is checked in one pass.
    let mut seen: HashMap<SocketAddr, usize> = HashMap::with_capacity(specs.len());
    for (i, (spec, &addr)) in specs.iter().zip(addrs).enumerate() {
        if let Some(&first) = seen.get(&addr) {
            return Err(format!(
                "duplicate backend {addr}: both {} and {} (entries {} and {})",
                specs[first].target,
                spec.target,
                first + 1,
                i + 1
            ));
        }
        seen.insert(addr, i);
        let weight = spec.weight.unwrap_or(DEFAULT_WEIGHT);
        out.push(Wanted { addr, weight, state: spec.state, backup: spec.backup });
    }
    Ok(out)
}

/// The changes that bring a pool to the wanted backends and algorithm.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    add: Vec<Wanted>,
    remove: Vec<SocketAddr>,
    /// Address, old weight, new weight.
    weight: Vec<(SocketAddr, u32, u32)>,
    /// Address, old state, new state.
    state: Vec<(SocketAddr, AdminState, AdminState)>,
    /// Address, whether it becomes a backup (`false`: a primary).
    backup: Vec<(SocketAddr, bool)>,
    /// Old, new.
    algorithm: Option<(Algorithm, Algorithm)>,
}

impl Plan {
    /// Compares what runs (one consistent stats snapshot) with what is wanted. `discovered`
    /// are the members DNS discovery manages: not listed in the file, they are not removed.
    pub(crate) fn new(
        current: &PoolStats,
        wanted: &[Wanted],
        algorithm: Algorithm,
        discovered: &[SocketAddr],
    ) -> Plan {
        // By address, so that comparing thousands of backends takes one pass over each list
        // (a pool holds an address once, and so does `wanted`).
        let running: HashMap<SocketAddr, &BackendStats> =
            current.backends.iter().filter(|b| !b.removed).map(|b| (b.addr, b)).collect();
        let mut plan = Plan::default();
        for w in wanted {
            match running.get(&w.addr) {
                None => plan.add.push(*w),
                Some(b) => {
                    if b.weight != w.weight {
                        plan.weight.push((w.addr, b.weight, w.weight));
                    }
                    if b.admin != w.state {
                        plan.state.push((w.addr, b.admin, w.state));
                    }
                    if b.backup != w.backup {
                        plan.backup.push((w.addr, w.backup));
                    }
                }
            }
        }
        let kept: HashSet<SocketAddr> =
            wanted.iter().map(|w| w.addr).chain(discovered.iter().copied()).collect();
        // In the pool's order, as the summary lists them.
        plan.remove = current
            .backends
            .iter()
            .filter(|b| !b.removed && !kept.contains(&b.addr))
            .map(|b| b.addr)
            .collect();
        if current.algorithm != algorithm {
            plan.algorithm = Some((current.algorithm, algorithm));
        }
        plan
    }

    /// Whether there is nothing to do.
    pub(crate) fn is_empty(&self) -> bool {
        *self == Plan::default()
    }

    /// Applies the plan. Additions come first and removals last, so the pool never passes
    /// through a smaller set than at either end (replacing every backend never leaves it empty).
    /// Everything was checked beforehand; an error here means a command at the prompt changed
    /// the same backend in between, and is returned for the answer rather than undoing the rest.
    pub(crate) fn apply(&self, pool: &Pool) -> Vec<String> {
        let mut failed = Vec::new();
        let mut check = |what: String, result: lb_core::Result<()>| {
            if let Err(e) = result {
                failed.push(format!("{what}: {e}"));
            }
        };
        // One snapshot for every addition, however many.
        let added = pool.add_backends(self.add.iter().map(Wanted::add_options), None);
        for (w, result) in self.add.iter().zip(added) {
            check(format!("add {}", w.addr), result.map(drop));
        }
        for &(addr, _, new) in &self.weight {
            check(format!("weight {addr}"), pool.set_weight(addr, new));
        }
        for &(addr, _, new) in &self.state {
            check(format!("state {addr}"), pool.set_admin_state(addr, new));
        }
        for &(addr, backup) in &self.backup {
            check(format!("backup {addr}"), pool.set_backup(addr, backup));
        }
        if let Some((_, new)) = self.algorithm {
            pool.set_algorithm(new);
        }
        // One pass and one publish for all of them (thousands from a large pool).
        for (&addr, result) in
            self.remove.iter().zip(pool.remove_backends(self.remove.iter().copied()))
        {
            check(format!("remove {addr}"), result.map(drop));
        }
        failed
    }
}

/// The summary: `added A, removed B, weight C 1->3, state D ready->drain, algorithm x->y`.
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no changes");
        }
        let mut parts = Vec::new();
        for w in &self.add {
            let mut part = format!("added {}", w.addr);
            let mut options = Vec::new();
            if w.weight != DEFAULT_WEIGHT {
                options.push(format!("weight {}", w.weight));
            }
            if w.state != AdminState::Ready {
                options.push(w.state.to_string());
            }
            if w.backup {
                options.push("backup".into());
            }
            if !options.is_empty() {
                part += &format!(" ({})", options.join(", "));
            }
            parts.push(part);
        }
        parts.extend(self.remove.iter().map(|a| format!("removed {a}")));
        parts.extend(self.weight.iter().map(|(a, old, new)| format!("weight {a} {old}->{new}")));
        parts.extend(self.state.iter().map(|(a, old, new)| format!("state {a} {old}->{new}")));
        parts.extend(self.backup.iter().map(|(a, backup)| match backup {
            true => format!("backup {a} (now a backup)"),
            false => format!("backup {a} (now a primary)"),
        }));
        if let Some((old, new)) = self.algorithm {
            parts.push(format!("algorithm {old}->{new}"));
        }
        f.write_str(&parts.join(", "))
    }
}

/// The keys whose running value differs from `next`, among the settings only a restart
/// changes (marked [`Reload::Restart`] in the table of settings).
pub(crate) fn needs_restart(running: &Settings, next: &Settings) -> Vec<&'static str> {
    running
        .changed(next)
        .into_iter()
        .filter(|s| s.reload == Reload::Restart)
        .map(|s| s.key)
        .collect()
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Args;
    use clap::{CommandFactory, FromArgMatches};
    use lb_core::PoolConfig;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn want(port: u16, weight: u32, state: AdminState) -> Wanted {
        Wanted { addr: addr(port), weight, state, backup: false }
    }

    fn spec(s: &str) -> BackendSpec {
        crate::args::parse_backend(s).unwrap()
    }

    #[test]
    fn a_plan_adds_removes_and_changes_then_matches() {
        let pool = Pool::new(PoolConfig::default()).unwrap();
        pool.add(addr(8001), None).unwrap();
        pool.add(addr(8002), Some(2)).unwrap();
        pool.add(addr(8003), None).unwrap();
        let wanted = [
            want(8001, 3, AdminState::Ready),
            want(8002, 2, AdminState::Drain),
            want(8004, 1, AdminState::Ready),
            want(8005, 4, AdminState::Maint),
        ];
        let plan = Plan::new(&pool.stats(), &wanted, Algorithm::P2c, &[]);
        assert_eq!(
            plan.to_string(),
            "added 127.0.0.1:8004, added 127.0.0.1:8005 (weight 4, maint), \
             removed 127.0.0.1:8003, weight 127.0.0.1:8001 1->3, \
             state 127.0.0.1:8002 ready->drain, algorithm round_robin->p2c"
        );
        assert!(plan.apply(&pool).is_empty());
        let stats = pool.stats();
        let got: Vec<_> = stats
            .backends
            .iter()
            .filter(|b| !b.removed)
            .map(|b| (b.addr.port(), b.weight, b.admin))
            .collect();
        assert_eq!(
            got,
            [
                (8001, 3, AdminState::Ready),
                (8002, 2, AdminState::Drain),
                (8004, 1, AdminState::Ready),
                (8005, 4, AdminState::Maint)
            ]
        );
        assert_eq!(stats.algorithm, Algorithm::P2c);
        // Applied once, the same file is no change.
        let again = Plan::new(&pool.stats(), &wanted, Algorithm::P2c, &[]);
        assert!(again.is_empty());
        assert_eq!(again.to_string(), "no changes");
    }

    #[test]
    fn thousands_of_backends_get_exactly_the_diff() {
        let many = |i: u32| SocketAddr::from(([127, 1, (i / 250) as u8, (i % 250) as u8 + 1], 9));
        let mut wanted: Vec<Wanted> = (0..5000)
            .map(|i| Wanted { addr: many(i), weight: 1, state: AdminState::Ready, backup: false })
            .collect();
        let pool = Pool::new(PoolConfig::default()).unwrap();
        let added = pool.add_backends(wanted.iter().map(Wanted::add_options), None);
        assert!(added.iter().all(Result::is_ok));
        let ids =
            |pool: &Pool| -> Vec<_> { pool.backends().iter().map(|b| (b.addr, b.id)).collect() };
        let before = ids(&pool);
        assert!(Plan::new(&pool.stats(), &wanted, Algorithm::RoundRobin, &[]).is_empty());
        // One weight, one state, one backup flag, one removal and one addition, far apart in
        // the list.
        wanted[10].weight = 3;
        wanted[2500].state = AdminState::Drain;
        wanted[4000].backup = true;
        let gone = wanted.remove(4999);
        wanted.push(Wanted { addr: many(6000), ..wanted[0] });
        let plan = Plan::new(&pool.stats(), &wanted, Algorithm::RoundRobin, &[]);
        assert_eq!(
            plan.to_string(),
            format!(
                "added {}, removed {}, weight {} 1->3, state {} ready->drain, backup {} (now a \
                 backup)",
                many(6000),
                gone.addr,
                many(10),
                many(2500),
                many(4000)
            )
        );
        assert!(plan.apply(&pool).is_empty());
        let stats = pool.stats();
        let got: Vec<Wanted> = stats
            .backends
            .iter()
            .filter(|b| !b.removed)
            .map(|b| Wanted { addr: b.addr, weight: b.weight, state: b.admin, backup: b.backup })
            .collect();
        assert_eq!(got, wanted);
        // The others are the same backends as before (same ids: counters and connections
        // kept), not removed and added again.
        let after = ids(&pool);
        assert_eq!(after[..4999], before[..4999]);
        assert!(Plan::new(&pool.stats(), &wanted, Algorithm::RoundRobin, &[]).is_empty());
    }

    #[test]
    fn a_removed_backend_keeps_its_open_connection() {
        let pool = Pool::new(PoolConfig::default()).unwrap();
        pool.add(addr(8001), None).unwrap();
        let lease = pool.pick(None, &[]).unwrap();
        let plan = Plan::new(
            &pool.stats(),
            &[want(8002, 1, AdminState::Ready)],
            Algorithm::RoundRobin,
            &[],
        );
        assert!(plan.apply(&pool).is_empty());
        // Still counted (shown as removed) until the connection ends; then gone.
        let old = pool.stats().backends.into_iter().find(|b| b.addr == addr(8001)).unwrap();
        assert!(old.removed && old.active == 1);
        // A second plan does not try to remove it again.
        assert!(Plan::new(
            &pool.stats(),
            &[want(8002, 1, AdminState::Ready)],
            Algorithm::RoundRobin,
            &[]
        )
        .is_empty());
        drop(lease);
        assert!(pool.stats().backends.iter().all(|b| b.addr != addr(8001)));
    }

    #[test]
    fn a_race_with_the_prompt_is_reported_not_fatal() {
        let pool = Pool::new(PoolConfig::default()).unwrap();
        pool.add(addr(8001), None).unwrap();
        let plan = Plan::new(
            &pool.stats(),
            &[want(8002, 1, AdminState::Ready)],
            Algorithm::RoundRobin,
            &[],
        );
        pool.remove(addr(8001)).unwrap(); // someone at the prompt was quicker
        let failed = plan.apply(&pool);
        assert_eq!(failed, ["remove 127.0.0.1:8001: no backend 127.0.0.1:8001 in the pool"]);
        assert!(pool.get(addr(8002)).is_some());
    }

    #[test]
    fn duplicates_are_named() {
        let specs = [spec("127.0.0.1:8001"), spec("127.0.0.1:8002"), spec("localhost:8001")];
        let e = wanted(&specs, &[addr(8001), addr(8002), addr(8001)]).unwrap_err();
        assert_eq!(
            e,
            "duplicate backend 127.0.0.1:8001: both 127.0.0.1:8001 and localhost:8001 (entries 1 and 3)"
        );
        let ok = wanted(&specs[..2], &[addr(8001), addr(8002)]).unwrap();
        assert_eq!(ok[0], want(8001, 1, AdminState::Ready));
        // Far apart in a long list, and named by their entries.
        let mut specs: Vec<BackendSpec> =
            (0..3000).map(|i| spec(&format!("127.0.0.1:{}", 10_000 + i))).collect();
        let mut addrs: Vec<SocketAddr> = (0..3000).map(|i| addr(10_000 + i)).collect();
        specs.push(spec("localhost:10007"));
        addrs.push(addr(10_007));
        let e = wanted(&specs, &addrs).unwrap_err();
        assert_eq!(
            e,
            "duplicate backend 127.0.0.1:10007: both 127.0.0.1:10007 and localhost:10007 \
             (entries 8 and 3001)"
        );
    }

    #[test]
    fn restart_only_settings_are_listed() {
        let parse = |flags: &[&str]| {
            let matches = Args::command().try_get_matches_from(flags).unwrap();
            Args::from_arg_matches(&matches).unwrap().settings
        };
        let running = parse(&["lb"]);
        assert!(needs_restart(&running, &running).is_empty());
        // Backends and the algorithm are applied live, so they are not listed.
        let live = parse(&["lb", "--algorithm", "p2c", "--backend", "127.0.0.1:9"]);
        assert!(needs_restart(&running, &live).is_empty());
        // So are a pool's timeouts and the listener's address, now.
        let live = parse(&["lb", "--port", "9000", "--idle-timeout", "1m", "--retries", "0"]);
        assert!(needs_restart(&running, &live).is_empty());
        let next = parse(&["lb", "--max-connections", "9", "--port", "1", "--log-file", "x.log"]);
        assert_eq!(needs_restart(&running, &next), ["max-connections", "log-file"]);
    }
}
