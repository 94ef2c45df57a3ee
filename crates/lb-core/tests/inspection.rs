//! Tests of what-if (against brute force over the Maglev tables and against the change
//! itself) and explain (against the next real pick).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use lb_core::selection::{hash_client, MaglevTable};
use lb_core::{
    AddOptions, AdminState, Algorithm, Change, Health, Inputs, Lease, PassReason, Pool, PoolConfig,
    Reason, Serving,
};
use proptest::prelude::*;

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 8000))
}

fn client(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32.wrapping_add(i.wrapping_mul(2_654_435_761))))
}

/// The Maglev table of the backends a pool picks from now (primaries up and ready, no backups
/// in these tests), built independently from its stats.
fn table_of(pool: &Pool) -> (Vec<(SocketAddr, u32)>, MaglevTable) {
    let stats = pool.stats();
    let backends: Vec<(SocketAddr, u32)> = stats
        .backends
        .iter()
        .filter(|b| !b.removed && b.health == Health::Up && b.admin == AdminState::Ready)
        .map(|b| (b.addr, b.weight))
        .collect();
    let table = MaglevTable::build(&backends);
    (backends, table)
}

fn owner(t: &(Vec<(SocketAddr, u32)>, MaglevTable), slot: u64) -> Option<SocketAddr> {
    t.1.lookup(slot).map(|i| t.0[i].0)
}

#[derive(Debug, Clone)]
enum Op {
    Add(u8, u32),
    Remove(u8),
    Weight(u8, u32),
    Admin(u8, AdminState),
    Algorithm(Algorithm),
}

fn op() -> impl Strategy<Value = Op> {
    let admin = prop::sample::select(vec![AdminState::Ready, AdminState::Drain, AdminState::Maint]);
    prop_oneof![
        (1u8..=12, 1u32..=5).prop_map(|(a, w)| Op::Add(a, w)),
        (1u8..=12).prop_map(Op::Remove),
        (1u8..=12, 1u32..=5).prop_map(|(a, w)| Op::Weight(a, w)),
        (1u8..=12, admin).prop_map(|(a, s)| Op::Admin(a, s)),
        prop::sample::select(Algorithm::ALL.to_vec()).prop_map(Op::Algorithm),
    ]
}

fn change_of(op: &Op) -> Change {
    match *op {
        Op::Add(a, w) => {
            Change::Add(addr(a), AddOptions { weight: Some(w), ..AddOptions::default() })
        }
        Op::Remove(a) => Change::Remove(addr(a)),
        Op::Weight(a, w) => Change::Weight(addr(a), w),
        Op::Admin(a, s) => Change::Admin(addr(a), s),
        Op::Algorithm(alg) => Change::Algorithm(alg),
    }
}

fn apply(pool: &Pool, op: &Op) -> lb_core::Result<()> {
    match *op {
        Op::Add(a, w) => pool.add(addr(a), Some(w)).map(drop),
        Op::Remove(a) => pool.remove(addr(a)).map(drop),
        Op::Weight(a, w) => pool.set_weight(addr(a), w),
        Op::Admin(a, s) => pool.set_admin_state(addr(a), s),
        Op::Algorithm(alg) => {
            pool.set_algorithm(alg);
            Ok(())
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn what_if_moved_share_is_what_the_change_then_moves_slot_by_slot(
        setup in prop::collection::vec(op(), 0..14),
        down in prop::collection::vec(any::<bool>(), 12),
        change in op(),
    ) {
        let now = Instant::now();
        let pool = Pool::default();
        for op in &setup {
            let _ = apply(&pool, op);
        }
        for (i, &d) in down.iter().enumerate() {
            if d && i % 3 == 0 {
                let _ = pool.set_health(addr(i as u8 + 1), Health::Down, now);
            }
        }
        let before = table_of(&pool);
        let stats = pool.stats();
        let answer = pool.what_if(&change_of(&change));
        prop_assert_eq!(pool.stats(), stats, "what-if changes nothing");
        let applied = apply(&pool, &change);
        prop_assert_eq!(answer.is_ok(), applied.is_ok(), "what-if fails exactly as the change");
        let Ok(answer) = answer else { return Ok(()) };
        let after = table_of(&pool);
        // Brute force, slot by slot (both tables have 65,537 slots, or none).
        let len = before.1.len().max(after.1.len()) as u64;
        let moved = (0..len).filter(|&s| owner(&before, s) != owner(&after, s)).count() as u64;
        prop_assert_eq!(answer.moved_keys, moved);
        prop_assert_eq!(answer.key_space, if before.0.is_empty() && after.0.is_empty() { 0 } else { len });
        // Table shares, exactly from slot counts.
        for side in [(&before, true), (&after, false)] {
            let ((backends, table), is_before) = side;
            let counts = table.slot_counts(backends.len());
            for (i, &(a, _)) in backends.iter().enumerate() {
                let share = counts[i] as f64 / table.len() as f64;
                let row = answer.backends.iter().find(|r| r.addr == a).unwrap();
                prop_assert_eq!(if is_before { row.table_before } else { row.table_after }, share);
            }
        }
        let gains: f64 = answer.backends.iter().map(|r| r.table_gain()).sum();
        if !before.0.is_empty() && !after.0.is_empty() {
            prop_assert!(gains.abs() < 1e-9, "gains and losses balance: {gains}");
            let total: f64 = answer.backends.iter().map(|r| r.share_after).sum();
            prop_assert!((total - 1.0).abs() < 1e-9);
        }
    }

    #[test]
    fn explain_names_the_next_pick(
        algorithm in prop::sample::select(vec![Algorithm::RoundRobin, Algorithm::LeastConnections, Algorithm::IpHash]),
        factor in prop::sample::select(vec![0u32, 100, 125, 200]),
        weights in prop::collection::vec(1u32..=4, 1..6),
        limit in prop::option::of(1u64..6),
        drained in any::<prop::sample::Index>(),
        steps in prop::collection::vec((0u32..8, any::<bool>()), 1..80),
    ) {
        let pool = Pool::new(PoolConfig {
            algorithm,
            hash_balance_factor: factor,
            max_connections_per_backend: limit,
            ..PoolConfig::default()
        }).unwrap();
        for (i, &w) in weights.iter().enumerate() {
            pool.add(addr(i as u8 + 1), Some(w)).unwrap();
        }
        if weights.len() > 1 {
            pool.set_admin_state(addr(drained.index(weights.len()) as u8 + 1), AdminState::Drain).unwrap();
        }
        let mut held: Vec<Lease> = Vec::new();
        for (c, release) in steps {
            if release && !held.is_empty() {
                drop(held.remove(0));
            }
            let c = Some(client(c));
            let picks_before = pool.stats().totals.picks;
            let explained = pool.explain(c);
            prop_assert_eq!(pool.explain(c).chosen, explained.chosen, "explaining changes nothing");
            prop_assert_eq!(pool.stats().totals.picks, picks_before);
            match pool.pick(c, &[]) {
                Ok(lease) => {
                    prop_assert_eq!(explained.chosen_addr(), Some(lease.addr()));
                    held.push(lease);
                }
                Err(_) => prop_assert_eq!(explained.chosen, None),
            }
        }
    }
}

#[test]
fn what_if_across_a_table_size_step_counts_pairs_of_slots() {
    // 655 backends fill a 65,537-slot table, 656 a 131,071-slot one.
    let pool = Pool::default();
    let a = |i: usize| SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 9000));
    for i in 0..655 {
        pool.add(a(i), None).unwrap();
    }
    let answer = pool.what_if(&Change::Add(a(655), AddOptions::default())).unwrap();
    assert_eq!(answer.key_space, 65_537 * 131_071);
    // Check against a sample of keys through the two tables.
    let before: Vec<(SocketAddr, u32)> = (0..655).map(|i| (a(i), 1)).collect();
    let mut after = before.clone();
    after.push((a(655), 1));
    let (t1, t2) = (MaglevTable::build(&before), MaglevTable::build(&after));
    let mut rng = fastrand::Rng::with_seed(3);
    let n = 200_000;
    let moved = (0..n)
        .filter(|_| {
            let h = rng.u64(..);
            before[t1.lookup(h).unwrap()].0 != after[t2.lookup(h).unwrap()].0
        })
        .count();
    let sampled = moved as f64 / n as f64;
    assert!(
        (answer.moved_share() - sampled).abs() < 0.005,
        "{} vs {sampled}",
        answer.moved_share()
    );
}

#[test]
fn what_if_remove_reports_shares_and_leaves_the_pool_alone() {
    let pool =
        Pool::new(PoolConfig { algorithm: Algorithm::IpHash, ..PoolConfig::default() }).unwrap();
    for i in 1..=4 {
        pool.add(addr(i), Some(if i == 1 { 2 } else { 1 })).unwrap();
    }
    let stats = pool.stats();
    let answer = pool.what_if(&Change::Remove(addr(1))).unwrap();
    assert_eq!(pool.stats(), stats);
    assert_eq!(answer.serving_before, Serving::Primaries);
    // Its 40% of the keys move, and little else.
    assert!((0.40..0.43).contains(&answer.moved_share()), "{}", answer.moved_share());
    let row = |a| answer.backends.iter().find(|r| r.addr == a).unwrap();
    assert!((row(addr(1)).share_before - 0.4).abs() < 0.01);
    assert_eq!(row(addr(1)).share_after, 0.0);
    assert!((row(addr(2)).share_after - 1.0 / 3.0).abs() < 0.01);
    // Under round robin the shares are the weights'.
    let answer = pool.what_if(&Change::Algorithm(Algorithm::RoundRobin)).unwrap();
    assert_eq!(answer.moved_keys, 0, "the same backends, the same table");
    assert_eq!(answer.backends[0].share_after, 0.4);
    assert_eq!(
        pool.what_if(&Change::Remove(addr(9))).unwrap_err(),
        lb_core::Error::UnknownBackend(addr(9))
    );
}

#[test]
fn explain_gives_every_reason() {
    let now = Instant::now();
    let pool = Pool::new(PoolConfig {
        algorithm: Algorithm::IpHash,
        max_connections_per_backend: Some(1),
        ..PoolConfig::default()
    })
    .unwrap();
    for i in 1..=5 {
        pool.add(addr(i), None).unwrap();
    }
    pool.add_backend(addr(6), AddOptions { backup: true, ..AddOptions::default() }, None).unwrap();
    pool.set_admin_state(addr(2), AdminState::Drain).unwrap();
    pool.set_admin_state(addr(3), AdminState::Maint).unwrap();
    let id4 = pool.get(addr(4)).unwrap().id;
    for _ in 0..3 {
        pool.observe(id4, Err("connection refused"), now);
    }
    // Find a client whose first choice is backend 1, and fill backend 1.
    let c =
        (0..).map(client).find(|&c| pool.explain(Some(c)).chosen_addr() == Some(addr(1))).unwrap();
    let held = pool.pick(Some(c), &[]).unwrap();
    let e = pool.explain(Some(c));
    assert_eq!(e.serving, Serving::Primaries);
    assert_eq!(e.chosen_addr(), Some(addr(5)));
    let reason = |a| e.passed_over.iter().find(|p| p.backend.addr == a).map(|p| p.reason.clone());
    assert_eq!(reason(addr(1)), Some(PassReason::AtLimit { active: 1, limit: 1 }));
    assert_eq!(reason(addr(2)), Some(PassReason::Draining));
    assert_eq!(reason(addr(3)), Some(PassReason::Maint));
    assert_eq!(
        reason(addr(4)),
        Some(PassReason::Down {
            since: Some(now),
            reason: Some(Reason::ChecksFailed {
                consecutive: 3,
                detail: "connection refused".into()
            }),
        })
    );
    assert_eq!(reason(addr(6)), Some(PassReason::Standby));
    assert_eq!(reason(addr(5)), None);
    match &e.inputs {
        Inputs::IpHash { hash, slot, table_len, preference, bounded } => {
            assert_eq!(*hash, hash_client(c));
            assert_eq!(*table_len, 65_537);
            assert_eq!(*slot, hash % 65_537);
            assert_eq!(
                preference.iter().map(|b| b.addr).collect::<Vec<_>>(),
                vec![addr(1), addr(5)]
            );
            assert_eq!(*bounded, None);
        }
        other => panic!("{other:?}"),
    }
    drop(held);
}

#[test]
fn explain_shows_the_bounded_load_cut_and_backups_taking_over() {
    let pool = Pool::new(PoolConfig {
        algorithm: Algorithm::IpHash,
        hash_balance_factor: 100,
        ..PoolConfig::default()
    })
    .unwrap();
    pool.add(addr(1), None).unwrap();
    pool.add(addr(2), None).unwrap();
    let c = Some(client(1));
    let first = pool.pick(c, &[]).unwrap();
    let e = pool.explain(c);
    let Inputs::IpHash { bounded: Some(b), .. } = &e.inputs else { panic!("{e:?}") };
    // 1 open, the next makes 2: a bound of ceil(2 / 2) = 1 each, which the first choice holds.
    assert_eq!((b.total_active, b.total_weight, b.cut), (1, 2, true));
    assert_eq!(b.first_choice.map(|f| (f.0.addr, f.1, f.2)), Some((first.addr(), 1, 1)));
    assert_ne!(e.chosen_addr(), Some(first.addr()));
    assert!(e.passed_over.iter().any(|p| p.backend.addr == first.addr()
        && p.reason == PassReason::OverBound { active: 1, bound: 1 }));

    // Both primaries in maintenance: a backup takes over, and explain says so.
    pool.add_backend(addr(3), AddOptions { backup: true, ..AddOptions::default() }, None).unwrap();
    pool.set_admin_state(addr(1), AdminState::Maint).unwrap();
    pool.set_admin_state(addr(2), AdminState::Maint).unwrap();
    let e = pool.explain(c);
    assert_eq!((e.serving, e.chosen_addr()), (Serving::Backups, Some(addr(3))));
}

#[test]
fn explain_of_round_robin_and_least_connections_shows_their_inputs() {
    let pool = Pool::default();
    pool.add(addr(1), Some(2)).unwrap();
    pool.add(addr(2), None).unwrap();
    drop(pool.pick(None, &[]).unwrap());
    let e = pool.explain(None);
    assert_eq!(e.inputs, Inputs::RoundRobin { cursor: 1, cycle_len: 3, position: 1 });
    assert_eq!(e.chosen_addr(), Some(addr(2)));
    pool.set_algorithm(Algorithm::LeastConnections);
    let _held = pool.pick(None, &[]).unwrap();
    let e = pool.explain(None);
    let Inputs::LeastConnections { loads, .. } = &e.inputs else { panic!("{e:?}") };
    let active: u64 = loads.iter().map(|l| l.active).sum();
    let weight: u32 = loads.iter().map(|l| l.weight).sum();
    assert_eq!((active, weight), (1, 3));
    pool.set_algorithm(Algorithm::Random);
    assert_eq!(pool.explain(None).inputs, Inputs::Random);
}
