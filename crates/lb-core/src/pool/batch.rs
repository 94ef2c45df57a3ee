//! Writes of many backends at once, published as one snapshot.
//!
//! Every write publishes a new snapshot, whose cost grows with the pool. One by one, a pool
//! started with 10,000 backends would build 10,000 snapshots of up to 10,000 members (quadratic:
//! tens of seconds), and the first round of health checks as many again. These do the same
//! writes as their one-backend forms ([`Pool::add_backend`], [`Pool::remove`],
//! [`Pool::observe`], which call them) and publish once; a reader sees the pool before the
//! batch or after it, never part of it.

use std::net::SocketAddr;
use std::time::Instant;

use foldhash::{HashMap, HashSet};

use super::writer::AddOptions;
use super::Pool;
use crate::backend::{validate_weight, Backend, BackendId, DEFAULT_WEIGHT};
use crate::error::{Error, Result};
use crate::health::Transition;

impl Pool {
    /// Adds backends as [`add_backend`](Self::add_backend) does each, in order, and publishes
    /// one snapshot for all of them. Returns, for each, its new id or why it was not added
    /// (its address is already in the pool or earlier in `backends`, or its weight is out of
    /// range); the others are added all the same.
    pub fn add_backends(
        &self,
        backends: impl IntoIterator<Item = (SocketAddr, AddOptions)>,
        now: Option<Instant>,
    ) -> Vec<Result<BackendId>> {
        let mut w = self.writer();
        let mut present: HashSet<SocketAddr> = w.members.iter().map(|m| m.addr()).collect();
        let results: Vec<Result<BackendId>> = backends
            .into_iter()
            .map(|(addr, options)| {
                let weight = validate_weight(u64::from(options.weight.unwrap_or(DEFAULT_WEIGHT)))?;
                if !present.insert(addr) {
                    return Err(Error::DuplicateBackend(addr));
                }
                Ok(self.push_member(&mut w, addr, weight, options, now))
            })
            .collect();
        if results.iter().any(Result::is_ok) {
            self.publish(&mut w);
        }
        results
    }

    /// Removes backends as [`remove`](Self::remove) does each, in one pass over the pool, and
    /// publishes one snapshot for all of them: removing thousands from a large pool one by one
    /// would rebuild the snapshot thousands of times. Returns, for each address in order, the
    /// backend removed, or why not (not in the pool, or earlier in `addrs`).
    pub fn remove_backends(
        &self,
        addrs: impl IntoIterator<Item = SocketAddr>,
    ) -> Vec<Result<Backend>> {
        let addrs: Vec<SocketAddr> = addrs.into_iter().collect();
        let mut gone: HashMap<SocketAddr, Option<Backend>> =
            addrs.iter().map(|&a| (a, None)).collect();
        let mut w = self.writer();
        let members = std::mem::take(&mut w.members);
        let before = members.len();
        let mut kept = Vec::with_capacity(before);
        for m in members {
            match gone.get_mut(&m.addr()) {
                Some(backend) => {
                    let member = m.snapshot();
                    *backend = Some(member.backend());
                    w.retired.push(member);
                }
                None => kept.push(m),
            }
        }
        w.members = kept;
        if w.members.len() < before {
            self.publish(&mut w);
        }
        drop(w);
        addrs
            .into_iter()
            .map(|a| gone.get_mut(&a).and_then(Option::take).ok_or(Error::UnknownBackend(a)))
            .collect()
    }

    /// Feeds health results as [`observe`](Self::observe) does each, in order, and publishes
    /// one snapshot if any of them needs it. Returns the transitions they caused, in order.
    /// A result for a backend no longer in the pool is ignored.
    pub fn observe_all<'a>(
        &self,
        results: impl IntoIterator<Item = (BackendId, std::result::Result<(), &'a str>)>,
        now: Instant,
    ) -> Vec<Transition> {
        let mut w = self.writer();
        let mut publish = false;
        let mut transitions = Vec::new();
        for (id, result) in results {
            let (transition, changed) = w.observe(id, result, now);
            transitions.extend(transition);
            publish |= changed;
        }
        if publish {
            self.publish(&mut w);
        }
        transitions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AdminState, Health, HealthConfig, PoolConfig};

    fn addr(i: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 80))
    }

    #[test]
    fn a_batch_adds_what_one_by_one_would_and_refuses_the_same() {
        let one_by_one = Pool::default();
        let batch = Pool::default();
        let options = |w: u32| AddOptions { weight: Some(w), ..AddOptions::default() };
        one_by_one.add(addr(1), None).unwrap();
        batch.add(addr(1), None).unwrap();
        let drain = AddOptions { admin: AdminState::Drain, backup: true, ..options(3) };
        let wanted =
            [(addr(2), options(2)), (addr(1), options(1)), (addr(3), drain), (addr(2), options(5))];
        let singles: Vec<_> =
            wanted.iter().map(|&(a, o)| one_by_one.add_backend(a, o, None)).collect();
        let batched = batch.add_backends(wanted, None);
        assert_eq!(batched, singles);
        assert!(matches!(batched[1], Err(Error::DuplicateBackend(a)) if a == addr(1)));
        assert!(matches!(batched[3], Err(Error::DuplicateBackend(a)) if a == addr(2)));
        let bad = batch.add_backends([(addr(4), options(0)), (addr(5), options(1))], None);
        assert!(matches!(bad[0], Err(Error::WeightOutOfRange(0))), "{bad:?}");
        assert!(bad[1].is_ok(), "the others are added all the same");
        let shown = |p: &Pool| {
            p.stats().backends.iter().map(|b| (b.addr, b.weight, b.admin, b.backup)).collect()
        };
        let mut expected: Vec<_> = shown(&one_by_one);
        expected.push((addr(5), 1, AdminState::Ready, false));
        assert_eq!(shown(&batch), expected);
    }

    #[test]
    fn a_batch_removes_what_one_by_one_would_in_one_publish() {
        let pool = Pool::default();
        for i in 1..=6 {
            pool.add(addr(i), None).unwrap();
        }
        let lease = pool.pick(None, &[]).unwrap();
        let open = lease.addr();
        let before = pool.inner.generation.load(std::sync::atomic::Ordering::SeqCst);
        let results = pool.remove_backends([addr(2), addr(9), open, addr(2), addr(5)]);
        let after = pool.inner.generation.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(after, before + 1, "one snapshot for the whole batch");
        assert_eq!(results[0].as_ref().unwrap().addr, addr(2));
        assert!(matches!(results[1], Err(Error::UnknownBackend(a)) if a == addr(9)));
        assert_eq!(results[2].as_ref().unwrap().addr, open);
        assert!(
            matches!(results[3], Err(Error::UnknownBackend(a)) if a == addr(2)),
            "listed twice"
        );
        assert_eq!(results[4].as_ref().unwrap().addr, addr(5));
        let stats = pool.stats();
        let listed: Vec<_> = stats.backends.iter().filter(|b| !b.removed).map(|b| b.addr).collect();
        let expected: Vec<_> =
            (1..=6).map(addr).filter(|a| ![addr(2), addr(5), open].contains(a)).collect();
        assert_eq!(listed, expected, "the others keep their order");
        // The removed backend with a connection open stays in the stats until it closes.
        assert!(stats.backends.iter().any(|b| b.addr == open && b.removed && b.active == 1));
        for _ in 0..20 {
            assert_ne!(pool.pick(None, &[]).unwrap().addr(), open, "never picked again");
        }
        drop(lease);
        assert!(pool.stats().backends.iter().all(|b| !b.removed));
        assert!(pool.remove_backends([]).is_empty());
    }

    #[test]
    fn thousands_of_backends_in_one_batch_are_all_there_in_order() {
        let pool = Pool::default();
        let all: Vec<_> = (0..5000).map(|i| (addr(i), AddOptions::default())).collect();
        let ids: Vec<BackendId> =
            pool.add_backends(all.clone(), None).into_iter().map(Result::unwrap).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let listed: Vec<SocketAddr> = pool.backends().iter().map(|b| b.addr).collect();
        assert_eq!(listed, all.iter().map(|&(a, _)| a).collect::<Vec<_>>());
        assert_eq!(pool.available(), 5000);
    }

    #[test]
    fn batched_results_make_the_transitions_single_ones_would() {
        let config = PoolConfig {
            health: HealthConfig { rise: 1, fall: 2, ..HealthConfig::default() },
            ..PoolConfig::default()
        };
        let (single, batch) = (Pool::new(config).unwrap(), Pool::new(config).unwrap());
        let ids: Vec<BackendId> = (0..4).map(|i| single.add(addr(i), None).unwrap()).collect();
        for i in 0..4 {
            batch.add(addr(i), None).unwrap();
        }
        let now = Instant::now();
        // Two rounds in which 0 and 2 fail (down after the second) and 1 and 3 pass; a result
        // for an unknown id is ignored.
        let round = |i: usize| if i.is_multiple_of(2) { Err("refused") } else { Ok(()) };
        let mut expected = Vec::new();
        let mut got = Vec::new();
        for _ in 0..2 {
            let results: Vec<_> = ids.iter().enumerate().map(|(i, &id)| (id, round(i))).collect();
            expected.extend(results.iter().filter_map(|&(id, r)| single.observe(id, r, now)));
            let unknown = (BackendId(999), Ok(()));
            got.extend(batch.observe_all(results.into_iter().chain([unknown]), now));
        }
        assert_eq!(got, expected);
        assert_eq!(
            got.iter().map(|t| (t.backend.addr, t.to)).collect::<Vec<_>>(),
            [(addr(0), Health::Down), (addr(2), Health::Down)]
        );
        let health = |p: &Pool| p.stats().backends.iter().map(|b| (b.health, b.checked)).collect();
        let expected: Vec<_> = health(&single);
        assert_eq!(health(&batch), expected);
        assert_eq!(batch.available(), 2);
    }
}
