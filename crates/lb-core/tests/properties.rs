//! Property tests of the pool and its algorithms against a naive model.

// The model checks each error case in turn before inserting; an entry would obscure that.
#![allow(clippy::map_entry)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use lb_core::selection::{hash_client, MaglevTable};
use lb_core::{
    AdminState, Algorithm, Error, Health, HealthConfig, Lease, Pool, PoolConfig, PoolStats, Totals,
};
use proptest::prelude::*;

const ADDRS: u8 = 8;

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 8000))
}

fn client(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32.wrapping_add(i.wrapping_mul(2_654_435_761))))
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop::sample::select(Algorithm::ALL.to_vec())
}

fn admin() -> impl Strategy<Value = AdminState> {
    prop::sample::select(vec![AdminState::Ready, AdminState::Drain, AdminState::Maint])
}

#[derive(Debug, Clone)]
enum Op {
    Add(u8, u32),
    Remove(u8),
    Weight(u8, u32),
    Admin(u8, AdminState),
    Check(u8, bool),
    Passive(usize),
    Pick(u32, Vec<u8>),
    Release(usize),
    /// Traffic on a held lease: connected, bytes in and out, and maybe a retry.
    Traffic(usize, u16, bool),
    Algorithm(Algorithm),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..ADDRS, 0u32..=1001).prop_map(|(a, w)| Op::Add(a, w)),
        1 => (0..ADDRS).prop_map(Op::Remove),
        1 => (0..ADDRS, 0u32..=1001).prop_map(|(a, w)| Op::Weight(a, w)),
        1 => (0..ADDRS, admin()).prop_map(|(a, s)| Op::Admin(a, s)),
        2 => (0..ADDRS, any::<bool>()).prop_map(|(a, ok)| Op::Check(a, ok)),
        1 => any::<usize>().prop_map(Op::Passive),
        6 => (any::<u32>(), prop::collection::vec(0..ADDRS, 0..3)).prop_map(|(c, x)| Op::Pick(c, x)),
        3 => any::<usize>().prop_map(Op::Release),
        3 => (any::<usize>(), any::<u16>(), any::<bool>()).prop_map(|(k, n, r)| Op::Traffic(k, n, r)),
        1 => algorithm().prop_map(Op::Algorithm),
    ]
}

/// The naive model: what each address should be.
#[derive(Debug, Clone)]
struct Model {
    weight: u32,
    admin: AdminState,
    up: bool,
    streak: u32,
}

impl Model {
    fn observe(&mut self, ok: bool, cfg: HealthConfig) {
        if ok == self.up {
            self.streak = 0;
            return;
        }
        self.streak += 1;
        let threshold = if ok { cfg.rise } else { cfg.fall };
        if self.streak >= threshold {
            self.up = ok;
            self.streak = 0;
        }
    }
}

fn run_ops(config: PoolConfig, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let pool = Pool::new(config).unwrap();
    let cfg = config.health;
    let limit = config.max_connections_per_backend.unwrap_or(u64::MAX);
    let now = Instant::now();
    let mut model: HashMap<SocketAddr, Model> = HashMap::new();
    let mut held: Vec<Lease> = Vec::new();
    // What the cumulative totals must be: everything recorded, on any backend, ever.
    let mut expected = Totals::default();
    let mut previous = pool.stats().totals;
    for op in ops {
        match op {
            Op::Add(a, w) => {
                let got = pool.add(addr(a), Some(w));
                if !(1..=1000).contains(&w) {
                    prop_assert_eq!(got, Err(Error::WeightOutOfRange(w.into())));
                } else if model.contains_key(&addr(a)) {
                    prop_assert_eq!(got, Err(Error::DuplicateBackend(addr(a))));
                } else {
                    prop_assert!(got.is_ok());
                    let up = cfg.initial == Health::Up;
                    model.insert(
                        addr(a),
                        Model { weight: w, admin: AdminState::Ready, up, streak: 0 },
                    );
                }
            }
            Op::Remove(a) => {
                let got = pool.remove(addr(a));
                prop_assert_eq!(got.is_ok(), model.remove(&addr(a)).is_some());
            }
            Op::Weight(a, w) => {
                let got = pool.set_weight(addr(a), w);
                match model.get_mut(&addr(a)) {
                    Some(m) if (1..=1000).contains(&w) => {
                        prop_assert!(got.is_ok());
                        m.weight = w;
                    }
                    _ => prop_assert!(got.is_err()),
                }
            }
            Op::Admin(a, s) => {
                let got = pool.set_admin_state(addr(a), s);
                match model.get_mut(&addr(a)) {
                    Some(m) => {
                        prop_assert!(got.is_ok());
                        m.admin = s;
                    }
                    None => prop_assert_eq!(got, Err(Error::UnknownBackend(addr(a)))),
                }
            }
            Op::Check(a, ok) => {
                if let Some(b) = pool.get(addr(a)) {
                    let m = model.get_mut(&addr(a)).unwrap();
                    let was = m.up;
                    m.observe(ok, cfg);
                    let t = pool.observe(b.id, if ok { Ok(()) } else { Err("refused") }, now);
                    prop_assert_eq!(t.is_some(), was != m.up);
                }
            }
            Op::Passive(k) => {
                if !held.is_empty() {
                    let lease = &held[k % held.len()];
                    let was_member = pool.get(lease.addr()).map(|b| b.id) == Some(lease.id());
                    let t = lease.record_connect_failure("refused", now);
                    expected.connect_failures += 1;
                    if was_member {
                        let m = model.get_mut(&lease.addr()).unwrap();
                        let was = m.up;
                        m.observe(false, cfg);
                        prop_assert_eq!(t.is_some(), was != m.up);
                    } else {
                        prop_assert!(t.is_none(), "a removed backend's failure changes nothing");
                    }
                }
            }
            Op::Pick(c, exclude) => {
                let exclude_ids: Vec<_> =
                    exclude.iter().filter_map(|&a| pool.get(addr(a))).map(|b| b.id).collect();
                // Open leases on the backend now at `a` (not on an earlier one at that address).
                let active = |a: SocketAddr| {
                    let id = pool.get(a).map(|b| b.id);
                    held.iter().filter(|l| Some(l.id()) == id).count() as u64
                };
                let possible = model.iter().any(|(a, m)| {
                    m.up && m.admin == AdminState::Ready
                        && !exclude.iter().any(|&x| addr(x) == *a)
                        && active(*a) < limit
                });
                match pool.pick(Some(client(c)), &exclude_ids) {
                    Ok(lease) => {
                        let m = model.get(&lease.addr());
                        prop_assert!(m.is_some(), "picked removed backend {}", lease.addr());
                        let m = m.unwrap();
                        prop_assert!(m.up, "picked a down backend");
                        prop_assert_eq!(m.admin, AdminState::Ready, "picked a draining backend");
                        prop_assert!(
                            !exclude_ids.contains(&lease.id()),
                            "picked an excluded backend"
                        );
                        prop_assert!(active(lease.addr()) < limit, "picked a backend at its limit");
                        expected.picks += 1;
                        held.push(lease);
                    }
                    Err(e) => {
                        prop_assert_eq!(e, Error::NoBackendAvailable);
                        prop_assert!(!possible, "no backend picked although one was available");
                        expected.no_backend += 1;
                    }
                }
            }
            Op::Release(k) => {
                if !held.is_empty() {
                    drop(held.swap_remove(k % held.len()));
                }
            }
            Op::Traffic(k, n, retried) => {
                if !held.is_empty() {
                    let lease = &held[k % held.len()];
                    lease.record_connected();
                    lease.record_bytes_in(n.into());
                    lease.record_bytes_out(u64::from(n) * 3);
                    expected.connections += 1;
                    expected.bytes_in += u64::from(n);
                    expected.bytes_out += u64::from(n) * 3;
                    if retried {
                        lease.record_retried();
                        expected.retries += 1;
                    }
                }
            }
            Op::Algorithm(a) => pool.set_algorithm(a),
        }
        // Every active count equals the leases held on it: none lost, none underflowed.
        let stats = pool.stats();
        for b in &stats.backends {
            let expected = held.iter().filter(|l| l.id() == b.id).count() as u64;
            prop_assert_eq!(b.active, expected, "active count of {}", b.addr);
            prop_assert!(b.active <= limit);
        }
        prop_assert_eq!(stats.totals.active, held.len() as u64);
        prop_assert_eq!(stats.backends.iter().filter(|b| !b.removed).count(), model.len());
        check_totals(&stats, &expected, &previous)?;
        previous = stats.totals;
    }
    drop(held);
    let stats = pool.stats();
    prop_assert_eq!(stats.totals.active, 0);
    prop_assert!(stats.backends.iter().all(|b| b.active == 0 && !b.removed));
    check_totals(&stats, &expected, &previous)?;
    // A pick (refreshing this thread's cached snapshot) and a change let the pool drop every
    // removed backend's record; the totals stay.
    match pool.pick(None, &[]) {
        Ok(_) => expected.picks += 1,
        Err(_) => expected.no_backend += 1,
    }
    pool.set_max_connections_per_backend(config.max_connections_per_backend);
    let after = pool.stats();
    check_totals(&after, &expected, &stats.totals)?;
    Ok(())
}

/// The cumulative totals: exactly what was recorded, never below the previous reading, and
/// the listed backends' sums plus the retired ones'.
fn check_totals(
    stats: &PoolStats,
    expected: &Totals,
    previous: &Totals,
) -> Result<(), TestCaseError> {
    let t = &stats.totals;
    let cumulative = |t: &Totals| {
        [
            t.picks,
            t.connections,
            t.connect_failures,
            t.retries,
            t.bytes_in,
            t.bytes_out,
            t.no_backend,
        ]
    };
    prop_assert_eq!(cumulative(t), cumulative(expected), "totals are everything recorded");
    for (now, before) in cumulative(t).into_iter().zip(cumulative(previous)) {
        prop_assert!(now >= before, "a total went backwards: {:?} after {:?}", t, previous);
    }
    let r = &stats.retired;
    let sum = |f: fn(&lb_core::BackendStats) -> u64| stats.backends.iter().map(f).sum::<u64>();
    prop_assert_eq!(t.picks, sum(|b| b.picks) + r.picks);
    prop_assert_eq!(t.connections, sum(|b| b.connections) + r.connections);
    prop_assert_eq!(t.connect_failures, sum(|b| b.connect_failures) + r.connect_failures);
    prop_assert_eq!(t.retries, sum(|b| b.retries) + r.retries);
    prop_assert_eq!(t.bytes_in, sum(|b| b.bytes_in) + r.bytes_in);
    prop_assert_eq!(t.bytes_out, sum(|b| b.bytes_out) + r.bytes_out);
    Ok(())
}

fn config() -> impl Strategy<Value = PoolConfig> {
    (algorithm(), 1u32..4, 1u32..4, any::<bool>(), prop::option::of(1u64..4)).prop_map(
        |(algorithm, rise, fall, up, limit)| PoolConfig {
            algorithm,
            health: HealthConfig {
                rise,
                fall,
                initial: if up { Health::Up } else { Health::Down },
            },
            max_connections_per_backend: limit,
            ..PoolConfig::default()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn picks_respect_membership_health_admin_and_limits(
        config in config(),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        run_ops(config, ops)?;
    }
}

/// The nginx algorithm as written in its source, with per-backend mutable state: the reference
/// the lock-free precomputed cycle must reproduce.
fn nginx_reference(weights: &[u32], picks: usize) -> Vec<usize> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    (0..picks)
        .map(|_| {
            let mut best = None;
            for (i, &w) in weights.iter().enumerate() {
                current[i] += i64::from(w);
                if best.is_none_or(|b: usize| current[i] > current[b]) {
                    best = Some(i);
                }
            }
            let b = best.unwrap();
            current[b] -= total;
            b
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn round_robin_matches_nginx_and_honours_weights_over_a_cycle(
        weights in prop::collection::vec(1u32..=20, 1..12),
    ) {
        let pool = Pool::default();
        for (i, &w) in weights.iter().enumerate() {
            pool.add(addr(i as u8), Some(w)).unwrap();
        }
        let total: u32 = weights.iter().sum();
        let got: Vec<usize> = (0..total)
            .map(|_| (pool.pick(None, &[]).unwrap().id().get() - 1) as usize)
            .collect();
        // Two full cycles of the reference: the pool's cycle is reduced by the weights' gcd,
        // which repeats the same sequence.
        prop_assert_eq!(&got, &nginx_reference(&weights, total as usize));
        for (i, &w) in weights.iter().enumerate() {
            prop_assert_eq!(got.iter().filter(|&&b| b == i).count() as u32, w);
        }
    }

    #[test]
    fn weighted_algorithms_follow_weights(
        weights in prop::collection::vec(1u32..=5, 2..6),
        algorithm in prop::sample::select(vec![Algorithm::Random, Algorithm::P2c, Algorithm::LeastConnections]),
        seed in any::<u64>(),
    ) {
        // Random draws independently; p2c and least connections hold every lease open, so they
        // fill backends in proportion to weight.
        let pool = Pool::new(PoolConfig { algorithm, ..PoolConfig::default() }).unwrap();
        for (i, &w) in weights.iter().enumerate() {
            pool.add(addr(i as u8), Some(w)).unwrap();
        }
        let total: u32 = weights.iter().sum();
        let rounds = 400u32;
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut held = Vec::new();
        let mut counts = vec![0u32; weights.len()];
        for _ in 0..rounds * total {
            let lease = pool.pick_with_rng(None, &[], &mut rng).unwrap();
            counts[(lease.id().get() - 1) as usize] += 1;
            if algorithm != Algorithm::Random {
                held.push(lease);
            }
        }
        for (i, &w) in weights.iter().enumerate() {
            let expected = f64::from(rounds * w);
            let got = f64::from(counts[i]);
            // Random: 6 standard deviations. Least connections: within one connection. p2c
            // compares only two backends per pick, so it may lag by a few.
            let tolerance = match algorithm {
                Algorithm::Random => 6.0 * expected.sqrt() + 1.0,
                Algorithm::P2c => 0.02 * expected + 3.0,
                _ => 1.0,
            };
            prop_assert!((got - expected).abs() <= tolerance, "{algorithm}: backend {i} weight {w}: {got} vs {expected} ({counts:?})");
        }
    }

    #[test]
    fn least_connections_ties_rotate(n in 2usize..8) {
        let pool = Pool::new(PoolConfig { algorithm: Algorithm::LeastConnections, ..PoolConfig::default() }).unwrap();
        for i in 0..n {
            pool.add(addr(i as u8), None).unwrap();
        }
        // Idle pool, all tied: each pick released at once must still visit every backend.
        let mut seen: Vec<_> = (0..n).map(|_| pool.pick(None, &[]).map(|l| l.addr()).unwrap()).collect();
        seen.sort();
        seen.dedup();
        prop_assert_eq!(seen.len(), n);
    }
}

fn backends(n: usize, weights: &[u32]) -> Vec<(SocketAddr, u32)> {
    (0..n)
        .map(|i| {
            let a =
                SocketAddr::from(([10, 1, (i / 250) as u8, (i % 250) as u8 + 1], 9000 + i as u16));
            (a, weights[i % weights.len()])
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn maglev_spreads_within_two_percent_of_weight(
        n in 1usize..=100,
        weights in prop::collection::vec(1u32..=5, 1..8),
    ) {
        let bs = backends(n, &weights);
        let table = MaglevTable::build(&bs);
        let total: u64 = bs.iter().map(|b| u64::from(b.1)).sum();
        let counts = table.slot_counts(n);
        for (i, &c) in counts.iter().enumerate() {
            let share = c as f64 / table.len() as f64;
            let ideal = f64::from(bs[i].1) / total as f64;
            prop_assert!((share - ideal).abs() <= 0.02 * ideal, "backend {i}: {share} vs {ideal}");
        }
        // Equal keys map equally, also in a table built again from the same backends.
        let again = MaglevTable::build(&bs);
        for k in 0..1000u32 {
            let h = hash_client(client(k));
            prop_assert_eq!(table.lookup(h), table.lookup(h));
            prop_assert_eq!(table.lookup(h), again.lookup(h));
        }
    }

    #[test]
    fn maglev_removal_moves_few_keys(
        n in 5usize..=100,
        victim in any::<prop::sample::Index>(),
    ) {
        let bs = backends(n, &[1]);
        let removed = victim.index(n);
        let mut rest = bs.clone();
        rest.remove(removed);
        let before = MaglevTable::build(&bs);
        let after = MaglevTable::build(&rest);
        let mut moved = 0u64;
        for slot in 0..before.len() as u64 {
            let b = bs[before.lookup(slot).unwrap()].0;
            let a = rest[after.lookup(slot).unwrap()].0;
            if a != b {
                moved += 1;
            }
        }
        let fraction = moved as f64 / before.len() as f64;
        prop_assert!(fraction <= 2.5 / n as f64, "{n} backends: {fraction} moved, bound {}", 2.5 / n as f64);
        prop_assert!(fraction >= 1.0 / n as f64 * 0.9, "at least the removed backend's keys move");
    }

    #[test]
    fn independent_pools_agree_on_ip_hash(
        n in 1usize..=40,
        weights in prop::collection::vec(1u32..=4, 1..4),
        order_seed in any::<u64>(),
        drained in prop::collection::vec(any::<bool>(), 40),
    ) {
        let bs = backends(n, &weights);
        let mut shuffled = bs.clone();
        fastrand::Rng::with_seed(order_seed).shuffle(&mut shuffled);
        let make = |list: &[(SocketAddr, u32)]| {
            let pool = Pool::new(PoolConfig { algorithm: Algorithm::IpHash, ..PoolConfig::default() }).unwrap();
            for &(a, w) in list {
                pool.add(a, Some(w)).unwrap();
            }
            for (i, &(a, _)) in bs.iter().enumerate() {
                if drained[i] && i > 0 {
                    pool.set_admin_state(a, AdminState::Drain).unwrap();
                }
            }
            pool
        };
        let (p1, p2) = (make(&bs), make(&shuffled));
        for k in 0..2000u32 {
            let c = Some(client(k));
            let a = p1.pick(c, &[]).unwrap().addr();
            prop_assert_eq!(a, p2.pick(c, &[]).unwrap().addr());
            // Sticky: the same client again gets the same backend.
            prop_assert_eq!(a, p1.pick(c, &[]).unwrap().addr());
        }
    }
}

#[test]
fn empty_and_all_down_pools_answer_no_backend() {
    for algorithm in Algorithm::ALL {
        let pool = Pool::new(PoolConfig { algorithm, ..PoolConfig::default() }).unwrap();
        assert_eq!(pool.pick(None, &[]).unwrap_err(), Error::NoBackendAvailable);
        pool.add(addr(1), None).unwrap();
        pool.add(addr(2), None).unwrap();
        pool.set_health(addr(1), Health::Down, Instant::now()).unwrap();
        pool.set_admin_state(addr(2), AdminState::Maint).unwrap();
        assert_eq!(pool.pick(Some(client(1)), &[]).unwrap_err(), Error::NoBackendAvailable);
        assert_eq!(pool.stats().totals.no_backend, 2);
    }
}

#[test]
fn removed_backend_finishes_its_accounting() {
    let pool = Pool::default();
    pool.add(addr(1), None).unwrap();
    let lease = pool.pick(None, &[]).unwrap();
    lease.record_connected();
    pool.remove(addr(1)).unwrap();
    assert_eq!(pool.pick(None, &[]).unwrap_err(), Error::NoBackendAvailable);
    let stats = pool.stats();
    assert_eq!(stats.backends.len(), 1, "still shown while a connection is open");
    assert!(stats.backends[0].removed);
    assert_eq!(stats.backends[0].state(), "removed");
    lease.record_bytes_out(10);
    assert!(lease.record_connect_failure("late", Instant::now()).is_none());
    let totals = pool.stats().totals;
    drop(lease);
    let stats = pool.stats();
    assert!(stats.backends.is_empty(), "gone once its last connection ends");
    assert_eq!(stats.totals.active, 0);
    assert_eq!(Totals { active: 1, ..stats.totals }, totals, "but still in the totals");
    assert_eq!((stats.retired.backends, stats.retired.bytes_out), (1, 10));
    // Adding it again gives a new id, with fresh counters; the totals carry on.
    let id = pool.add(addr(1), None).unwrap();
    let stats = pool.stats();
    assert_eq!(stats.backends[0].id, id);
    assert_eq!(stats.backends[0].bytes_out, 0);
    assert_eq!((stats.totals.connections, stats.totals.bytes_out), (1, 10));
}

/// The black-box report: 10 connections over two backends, one removed and added again while
/// its connections are open; once they end, the totals still count all 10.
#[test]
fn totals_survive_remove_and_add_with_open_connections() {
    let pool = Pool::default();
    pool.add(addr(1), None).unwrap();
    pool.add(addr(2), None).unwrap();
    let leases: Vec<Lease> = (0..10).map(|_| pool.pick(None, &[]).unwrap()).collect();
    for lease in &leases {
        lease.record_connected();
        lease.record_bytes_in(100);
    }
    pool.remove(addr(1)).unwrap();
    pool.add(addr(1), None).unwrap();
    let stats = pool.stats();
    assert_eq!(stats.backends.len(), 3, "the old backend is listed, removed, beside the new one");
    assert_eq!(stats.per_address().len(), 2);
    let merged = stats.per_address().into_iter().find(|b| b.addr == addr(1)).unwrap();
    assert_eq!(
        (merged.addr, merged.removed, merged.active, merged.connections),
        (addr(1), false, 5, 5)
    );
    let before = stats.totals;
    drop(leases);
    // Writes after the last connection ended, and picks that refresh this thread's snapshot,
    // let the pool drop the old record.
    for _ in 0..3 {
        drop(pool.pick(None, &[]).unwrap());
        pool.set_weight(addr(2), 2).unwrap();
        pool.set_weight(addr(2), 1).unwrap();
    }
    let stats = pool.stats();
    assert_eq!(stats.backends.len(), 2);
    assert_eq!(stats.per_address().len(), 2);
    assert_eq!((stats.totals.connections, stats.totals.bytes_in), (10, 1000));
    assert_eq!(stats.totals.picks, before.picks + 3);
    assert_eq!((stats.retired.backends, stats.retired.connections), (1, 5));
}

#[test]
fn passive_failures_take_a_backend_down_and_checks_bring_it_back() {
    let pool = Pool::default();
    let now = Instant::now();
    let a = addr(1);
    let id = pool.add(a, None).unwrap();
    pool.add(addr(2), None).unwrap();
    let mut transitions = Vec::new();
    for _ in 0..3 {
        let lease = pool.pick(None, &[pool.get(addr(2)).unwrap().id]).unwrap();
        transitions.extend(lease.record_connect_failure("connection refused", now));
    }
    assert_eq!(transitions.len(), 1);
    let t = &transitions[0];
    assert_eq!((t.from, t.to, t.backend.addr), (Health::Up, Health::Down, a));
    assert_eq!(
        t.to_string(),
        "backend 10.0.0.1:8000 is down (was up): 3 consecutive failures, last: connection refused"
    );
    assert!((0..10).all(|_| pool.pick(None, &[]).unwrap().addr() == addr(2)));
    assert!(pool.observe(id, Ok(()), now).is_none());
    let back = pool.observe(id, Ok(()), now).unwrap();
    assert_eq!(
        back.to_string(),
        "backend 10.0.0.1:8000 is up (was down): 2 consecutive successful checks"
    );
    assert_eq!(pool.stats().backend(a).unwrap().connect_failures, 3);
    assert_eq!(pool.stats().backend(a).unwrap().last_change, Some(now));
}

#[test]
fn stats_show_whether_a_backend_has_had_a_health_result() {
    let pool = Pool::default();
    let now = Instant::now();
    let id = pool.add(addr(1), None).unwrap();
    pool.add(addr(2), None).unwrap();
    let b = |i| pool.stats().backend(addr(i)).unwrap().clone();
    assert!(b(1).awaiting_first_check() && b(2).awaiting_first_check());
    // A passed check changes no state but is a result: the stats see it at once.
    assert!(pool.observe(id, Ok(()), now).is_none());
    assert!(b(1).checked && !b(1).awaiting_first_check());
    // So is an operator's decision, even one that keeps the state.
    assert!(pool.set_health(addr(2), Health::Up, now).unwrap().is_none());
    assert!(b(2).checked);
    // A drained backend is not "up on trust": it takes no new connections.
    pool.add_with_state(addr(3), None, AdminState::Drain).unwrap();
    assert!(!b(3).checked && !b(3).awaiting_first_check());
}

#[test]
fn switching_algorithm_keeps_counts() {
    let pool = Pool::default();
    pool.add(addr(1), Some(3)).unwrap();
    pool.add(addr(2), None).unwrap();
    let held: Vec<_> = (0..4).map(|_| pool.pick(None, &[]).unwrap()).collect();
    for a in Algorithm::ALL {
        pool.set_algorithm(a);
        assert_eq!(pool.algorithm(), a);
        assert_eq!(pool.stats().totals.active, 4);
        assert_eq!(pool.stats().backend(addr(1)).unwrap().active, 3);
    }
    drop(held);
    assert_eq!(pool.stats().totals.active, 0);
    assert_eq!(pool.stats().backend(addr(1)).unwrap().peak_active, 3);
}

#[test]
fn errors_read_well() {
    let pool = Pool::default();
    pool.add(addr(1), None).unwrap();
    assert_eq!(
        pool.add(addr(1), None).unwrap_err().to_string(),
        "backend 10.0.0.1:8000 is already in the pool"
    );
    assert_eq!(
        pool.remove(addr(9)).unwrap_err().to_string(),
        "no backend 10.0.0.9:8000 in the pool"
    );
    assert_eq!(
        pool.set_weight(addr(1), 0).unwrap_err().to_string(),
        "weight 0 is out of range: a weight is a whole number from 1 to 1000"
    );
    assert_eq!(
        "paused".parse::<AdminState>().unwrap_err().to_string(),
        "unknown admin state \"paused\": expected one of ready, drain, maint"
    );
}
