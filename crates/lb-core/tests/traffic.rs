//! Tests of the traffic-management decisions: backups, panic (fail-open), slow start and
//! bounded-load hashing; what-if and explain are in `inspection.rs`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use lb_core::selection::{hash_client, load_bound, MaglevTable};
use lb_core::{AddOptions, AdminState, Algorithm, Error, Health, Lease, Pool, PoolConfig};
use proptest::prelude::*;

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 8000))
}

fn client(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32.wrapping_add(i.wrapping_mul(2_654_435_761))))
}

fn pool(config: PoolConfig) -> Pool {
    Pool::new(config).unwrap()
}

fn config(algorithm: Algorithm) -> PoolConfig {
    PoolConfig { algorithm, ..PoolConfig::default() }
}

fn backup() -> AddOptions {
    AddOptions { backup: true, ..AddOptions::default() }
}

/// How many of `n` picks (leases dropped at once) went to each address.
fn spread(pool: &Pool, n: u32) -> HashMap<SocketAddr, u32> {
    let mut counts = HashMap::new();
    for k in 0..n {
        *counts.entry(pool.pick(Some(client(k)), &[]).unwrap().addr()).or_default() += 1;
    }
    counts
}

#[test]
fn backups_take_over_only_while_no_primary_is_available() {
    let now = Instant::now();
    for algorithm in Algorithm::ALL {
        let pool = pool(config(algorithm));
        pool.add(addr(1), None).unwrap();
        pool.add(addr(2), Some(3)).unwrap();
        pool.add_backend(addr(3), backup(), None).unwrap();
        pool.add_backend(addr(4), backup(), None).unwrap();
        let stats = pool.stats();
        assert!(!stats.backup_active);
        assert!(stats.backend(addr(3)).unwrap().backup);
        assert!(!stats.backend(addr(1)).unwrap().backup);
        let counts = spread(&pool, 400);
        assert!(!counts.contains_key(&addr(3)) && !counts.contains_key(&addr(4)), "{algorithm}");

        // Every primary out: one down, one draining.
        pool.set_health(addr(1), Health::Down, now).unwrap();
        assert!(!pool.stats().backup_active, "a primary is still up");
        pool.set_admin_state(addr(2), AdminState::Drain).unwrap();
        assert!(pool.stats().backup_active);
        let counts = spread(&pool, 400);
        assert_eq!(counts.keys().count(), 2, "{algorithm}: both backups share: {counts:?}");
        assert!(counts.contains_key(&addr(3)) && counts.contains_key(&addr(4)));

        // A primary back: new connections leave the backups at once.
        pool.set_health(addr(1), Health::Up, now).unwrap();
        assert!(!pool.stats().backup_active);
        assert_eq!(spread(&pool, 50).keys().collect::<Vec<_>>(), vec![&addr(1)]);

        // A backup turned primary is picked like one.
        pool.set_backup(addr(3), false).unwrap();
        assert_eq!(spread(&pool, 400).len(), 2, "{algorithm}");
    }
}

/// A backend whose connects fail (still up: before `fall` takes it down, or with health checks
/// off) is a new connection's first try only in its turn, once per round of the cycle: the
/// retries of its clients take no turn. They spread over the others, in proportion to weight.
#[test]
fn a_failing_backend_is_tried_first_only_in_its_turn() {
    // Least connections among idle backends rotates over those with the fewest connections
    // per weight, the heaviest: equal weights there, so that every backend takes turns.
    for (algorithm, heavier) in [(Algorithm::RoundRobin, 2), (Algorithm::LeastConnections, 1)] {
        for n in [2u8, 3, 5] {
            let pool = pool(config(algorithm));
            for i in 1..=n {
                pool.add(addr(i), Some(if i == n { heavier } else { 1 })).unwrap();
            }
            let failing = addr(1);
            let total_weight = u32::from(n) - 1 + heavier;
            let connections = 60 * total_weight;
            let (mut first_tries, mut retried_to) = (0, HashMap::<SocketAddr, u32>::new());
            // Seeded: a retry draws its turns at random.
            let mut rng = fastrand::Rng::with_seed(7);
            for k in 0..connections {
                let first = pool.pick(Some(client(k)), &[]).unwrap();
                if first.addr() != failing {
                    continue;
                }
                first_tries += 1;
                let id = first.id();
                drop(first);
                let retry = pool.pick_with_rng(Some(client(k)), &[id], &mut rng).unwrap();
                assert_ne!(retry.addr(), failing, "{algorithm}");
                *retried_to.entry(retry.addr()).or_default() += 1;
            }
            // Its weight's share of first tries, 1 of `total_weight`, not one in every n - 1.
            assert_eq!(first_tries, connections / total_weight, "{algorithm} with {n} backends");
            if n > 2 {
                assert_eq!(retried_to.len(), usize::from(n) - 1, "{algorithm}: {retried_to:?}");
            }
            // Round robin spreads them by weight: the heavier backend (weight 2) gets about
            // twice what each other does, not the failing backend's successor.
            if algorithm == Algorithm::RoundRobin && n > 2 {
                let light = retried_to[&addr(2)];
                let heavy = retried_to[&addr(n)];
                assert!(heavy > light, "{retried_to:?}");
            }
        }
    }
}

#[test]
fn with_every_backend_out_there_is_no_backend_and_no_backup_flag() {
    let pool = pool(PoolConfig::default());
    pool.add(addr(1), None).unwrap();
    pool.add_backend(addr(2), backup(), None).unwrap();
    pool.set_admin_state(addr(1), AdminState::Maint).unwrap();
    pool.set_admin_state(addr(2), AdminState::Maint).unwrap();
    let stats = pool.stats();
    assert!(!stats.backup_active && !stats.panic);
    assert_eq!(pool.pick(None, &[]).unwrap_err(), Error::NoBackendAvailable);
}

#[test]
fn panic_spreads_over_every_ready_primary_below_the_threshold() {
    let now = Instant::now();
    let pool = pool(PoolConfig { panic_threshold: 50, ..PoolConfig::default() });
    for i in 1..=4 {
        pool.add(addr(i), None).unwrap();
    }
    pool.add(addr(5), None).unwrap();
    pool.set_admin_state(addr(5), AdminState::Maint).unwrap();
    pool.set_health(addr(1), Health::Down, now).unwrap();
    pool.set_health(addr(2), Health::Down, now).unwrap();
    // 2 of 4 ready primaries up: 50% is not below 50%.
    assert!(!pool.stats().panic);
    assert_eq!(spread(&pool, 40).len(), 2);
    pool.set_health(addr(3), Health::Down, now).unwrap();
    let stats = pool.stats();
    assert!(stats.panic && !stats.backup_active);
    assert_eq!(stats.totals.available, 4);
    let counts = spread(&pool, 400);
    // Round robin: exactly even over the four ready primaries, down or not; maint stays out.
    assert_eq!(counts.len(), 4, "{counts:?}");
    assert!(counts.values().all(|&c| c == 100), "{counts:?}");
    // Off again: only the one that is up.
    pool.set_panic_threshold(0).unwrap();
    assert!(!pool.stats().panic);
    assert_eq!(spread(&pool, 10).keys().collect::<Vec<_>>(), vec![&addr(4)]);
    assert_eq!(pool.set_panic_threshold(101), Err(Error::PanicThresholdOutOfRange(101)));
}

#[test]
fn an_available_backup_comes_before_panic() {
    let now = Instant::now();
    let pool = pool(PoolConfig { panic_threshold: 100, ..PoolConfig::default() });
    pool.add(addr(1), None).unwrap();
    pool.add(addr(2), None).unwrap();
    pool.add_backend(addr(3), backup(), None).unwrap();
    pool.set_health(addr(1), Health::Down, now).unwrap();
    assert!(pool.stats().panic, "half the primaries down, with a threshold of 100%");
    pool.set_health(addr(2), Health::Down, now).unwrap();
    let stats = pool.stats();
    assert!(stats.backup_active && !stats.panic);
    assert_eq!(spread(&pool, 10).keys().collect::<Vec<_>>(), vec![&addr(3)]);
    pool.set_health(addr(3), Health::Down, now).unwrap();
    assert!(pool.stats().panic);
    assert_eq!(spread(&pool, 10).len(), 2);
}

#[test]
fn slow_start_ramps_a_new_backend_in_tenths_over_the_window() {
    let t0 = Instant::now();
    let window = Duration::from_secs(10);
    let pool = pool(PoolConfig { slow_start: Some(window), ..PoolConfig::default() });
    // Start-up backends (no time given) get their full weight at once.
    pool.add(addr(1), None).unwrap();
    pool.add_backend(addr(2), AddOptions::default(), None).unwrap();
    assert_eq!(pool.tick(t0), None, "nothing ramps");
    pool.add_backend(addr(3), AddOptions { weight: Some(2), ..AddOptions::default() }, Some(t0))
        .unwrap();
    let b3 = pool.stats().backend(addr(3)).unwrap().clone();
    assert_eq!(b3.ramp_percent, Some(10));
    assert!((b3.effective_weight() - 0.2).abs() < 1e-9);
    assert_eq!(pool.stats().backend(addr(1)).unwrap().ramp_percent, None);
    // Round robin over weights 10, 10, 2 (10% of 2, scaled by ten): 2 of 22.
    let counts = spread(&pool, 2200);
    assert_eq!(counts[&addr(3)], 200, "{counts:?}");
    assert_eq!(pool.tick(t0 + Duration::from_millis(500)), Some(t0 + Duration::from_secs(1)));
    assert_eq!(pool.stats().backend(addr(3)).unwrap().ramp_percent, Some(10));
    let next = pool.tick(t0 + Duration::from_secs(5)).unwrap();
    assert_eq!(next, t0 + Duration::from_secs(6));
    assert_eq!(pool.stats().backend(addr(3)).unwrap().ramp_percent, Some(50));
    // 50% of 2 = 1 against 1 and 1: a third.
    assert_eq!(spread(&pool, 3000)[&addr(3)], 1000);
    assert_eq!(pool.tick(t0 + window), None, "the ramp is over");
    let b3 = pool.stats().backend(addr(3)).unwrap().clone();
    assert_eq!((b3.ramp_percent, b3.effective_weight()), (None, 2.0));
    assert_eq!(spread(&pool, 400)[&addr(3)], 200);
}

#[test]
fn slow_start_begins_when_a_backend_comes_up_or_is_enabled_with_a_time() {
    let t0 = Instant::now();
    let pool =
        pool(PoolConfig { slow_start: Some(Duration::from_secs(30)), ..PoolConfig::default() });
    pool.add(addr(1), None).unwrap();
    pool.add(addr(2), None).unwrap();
    let ramp = |pool: &Pool| pool.stats().backend(addr(2)).unwrap().ramp_percent;
    pool.set_health(addr(2), Health::Down, t0).unwrap();
    assert_eq!(ramp(&pool), None);
    pool.set_health(addr(2), Health::Up, t0).unwrap();
    assert_eq!(ramp(&pool), Some(10), "came up");
    pool.set_admin_state_at(addr(2), AdminState::Drain, t0).unwrap();
    assert_eq!(ramp(&pool), None, "a backend out of rotation does not ramp");
    pool.set_admin_state_at(addr(2), AdminState::Ready, t0).unwrap();
    assert_eq!(ramp(&pool), Some(10), "enabled after drain");
    pool.set_admin_state(addr(2), AdminState::Maint).unwrap();
    pool.set_admin_state(addr(2), AdminState::Ready).unwrap();
    assert_eq!(ramp(&pool), None, "enabled without a time: full weight");
    // Passive failures and checks carry the time too.
    for _ in 0..3 {
        pool.observe(pool.get(addr(2)).unwrap().id, Err("refused"), t0);
    }
    for _ in 0..2 {
        pool.observe(pool.get(addr(2)).unwrap().id, Ok(()), t0);
    }
    assert_eq!(ramp(&pool), Some(10), "checks brought it back");
    pool.set_slow_start(None).unwrap();
    assert_eq!(ramp(&pool), None, "turning slow start off ends every ramp");
    assert_eq!(pool.tick(t0), None);
    assert_eq!(pool.set_slow_start(Some(Duration::ZERO)), Err(Error::ZeroSlowStart));
}

#[test]
fn slow_start_grows_an_ip_hash_backends_share_of_clients() {
    let t0 = Instant::now();
    let window = Duration::from_secs(10);
    let pool = pool(PoolConfig { slow_start: Some(window), ..config(Algorithm::IpHash) });
    for i in 1..=3 {
        pool.add(addr(i), None).unwrap();
    }
    pool.add_backend(addr(4), AddOptions::default(), Some(t0)).unwrap();
    let share =
        |pool: &Pool| spread(pool, 20_000).get(&addr(4)).copied().unwrap_or(0) as f64 / 20_000.0;
    let mut last = share(&pool);
    // 1 of 31 at the first step.
    assert!((last - 1.0 / 31.0).abs() < 0.01, "{last}");
    for s in [3, 6, 9, 10] {
        pool.tick(t0 + Duration::from_secs(s));
        let now = share(&pool);
        assert!(now > last, "{s} s: {now} after {last}");
        last = now;
    }
    assert!((last - 0.25).abs() < 0.01, "{last}");
}

#[test]
fn invalid_settings_are_refused() {
    let bad = |config: PoolConfig| Pool::new(config).unwrap_err();
    assert_eq!(
        bad(PoolConfig { panic_threshold: 150, ..PoolConfig::default() }),
        Error::PanicThresholdOutOfRange(150)
    );
    assert_eq!(
        bad(PoolConfig { hash_balance_factor: 99, ..PoolConfig::default() }),
        Error::HashBalanceFactorOutOfRange(99)
    );
    assert_eq!(
        bad(PoolConfig { hash_balance_factor: 10_001, ..PoolConfig::default() }),
        Error::HashBalanceFactorOutOfRange(10_001)
    );
    assert!(Pool::new(PoolConfig { hash_balance_factor: 100, ..PoolConfig::default() }).is_ok());
    let message = Error::HashBalanceFactorOutOfRange(50).to_string();
    assert!(message.contains("e.g. 125"), "{message}");
}

fn bounded_pool(factor: u32, weights: &[u32]) -> Pool {
    let pool = pool(PoolConfig { hash_balance_factor: factor, ..config(Algorithm::IpHash) });
    for (i, &w) in weights.iter().enumerate() {
        pool.add(addr(i as u8 + 1), Some(w)).unwrap();
    }
    pool
}

#[test]
fn bounded_load_sends_a_hot_client_elsewhere_once_its_backend_is_full() {
    let pool = bounded_pool(125, &[1, 1, 1, 1]);
    let hot = Some(client(7));
    let mut held: Vec<Lease> = Vec::new();
    for _ in 0..40 {
        held.push(pool.pick(hot, &[]).unwrap());
    }
    let stats = pool.stats();
    let max = stats.backends.iter().map(|b| b.active).max().unwrap();
    // ceil(1.25 × 40 / 4) = 13 at most, where plain Maglev would put all 40 on one.
    assert!(max <= 13, "{:?}", stats.backends.iter().map(|b| b.active).collect::<Vec<_>>());
    assert!(stats.backends.iter().all(|b| b.active > 0), "the hot client spilled over to all");
    // Its first choice keeps it as long as that is under the bound.
    held.clear();
    let first = pool.pick(hot, &[]).unwrap().addr();
    assert_eq!(pool.pick(hot, &[]).unwrap().addr(), first);
}

/// Deterministic choice of which leases to release: an index into `held`, or none.
fn release_plan() -> impl Strategy<Value = Vec<Option<prop::sample::Index>>> {
    prop::collection::vec(prop::option::weighted(0.3, any::<prop::sample::Index>()), 50..300)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn bounded_load_never_exceeds_the_bound_and_never_moves_a_client_under_it(
        factor in 100u32..=300,
        weights in prop::collection::vec(1u32..=4, 1..7),
        clients in 1u32..20,
        steps in release_plan(),
        seed in any::<u64>(),
    ) {
        let pool = bounded_pool(factor, &weights);
        let backends: Vec<(SocketAddr, u32)> =
            weights.iter().enumerate().map(|(i, &w)| (addr(i as u8 + 1), w)).collect();
        let table = MaglevTable::build(&backends);
        let total_weight: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut held: Vec<Lease> = Vec::new();
        for release in steps {
            if let Some(i) = release {
                if !held.is_empty() {
                    drop(held.swap_remove(i.index(held.len())));
                }
            }
            let c = client(rng.u32(..clients));
            let stats = pool.stats();
            let active = |a: SocketAddr| stats.backend(a).unwrap().active;
            let total = stats.totals.active;
            let first = backends[table.lookup(hash_client(c)).unwrap()];
            let lease = pool.pick(Some(c), &[]).unwrap();
            let (chosen, weight) = backends.iter().copied().find(|b| b.0 == lease.addr()).unwrap();
            // One at a time: after the pick, the chosen backend holds at most its bound.
            let after = active(chosen) + 1;
            prop_assert!(after <= load_bound(factor, total, total_weight, weight),
                "{chosen} holds {after}, bound {}", load_bound(factor, total, total_weight, weight));
            if active(first.0) < load_bound(factor, total, total_weight, first.1) {
                prop_assert_eq!(chosen, first.0, "a client under the bound stays");
            }
            held.push(lease);
        }
    }

    #[test]
    fn bounded_load_off_picks_exactly_plain_maglev(
        weights in prop::collection::vec(1u32..=4, 1..7),
        clients in prop::collection::vec(any::<u32>(), 1..200),
    ) {
        let pool = bounded_pool(0, &weights);
        let backends: Vec<(SocketAddr, u32)> =
            weights.iter().enumerate().map(|(i, &w)| (addr(i as u8 + 1), w)).collect();
        let table = MaglevTable::build(&backends);
        let mut held = Vec::new();
        for c in clients {
            let lease = pool.pick(Some(client(c)), &[]).unwrap();
            prop_assert_eq!(lease.addr(), backends[table.lookup(hash_client(client(c))).unwrap()].0);
            held.push(lease); // loads pile up, and change nothing
        }
    }

    #[test]
    fn a_ramp_only_grows_and_ends_with_its_window(
        window_ms in 1u64..100_000,
        ticks in prop::collection::vec(0u64..120_000, 1..30),
    ) {
        let t0 = Instant::now();
        let window = Duration::from_millis(window_ms);
        let pool = pool(PoolConfig { slow_start: Some(window), ..PoolConfig::default() });
        pool.add(addr(1), None).unwrap();
        pool.add_backend(addr(2), AddOptions::default(), Some(t0)).unwrap();
        let mut ticks = ticks;
        ticks.sort_unstable();
        let mut last = 10u8;
        for t in ticks {
            let now = t0 + Duration::from_millis(t);
            let next = pool.tick(now);
            let percent = pool.stats().backend(addr(2)).unwrap().ramp_percent;
            if t >= window_ms {
                prop_assert_eq!((percent, next), (None, None));
                last = 100;
            } else {
                let p = percent.unwrap();
                let expected = ((u128::from(t) * 10 / u128::from(window_ms)) as u8).max(1) * 10;
                prop_assert_eq!(p, expected);
                prop_assert!(p >= last);
                prop_assert!(next.unwrap() > now);
                last = p;
            }
        }
    }
}
