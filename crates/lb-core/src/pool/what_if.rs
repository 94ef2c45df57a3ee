//! `what-if`: what a change to the pool would do, computed on a copy of its current state,
//! never touching the pool itself.
//!
//! Weights, admin states, backup flags and health are taken as they are now; slow-start ramps
//! are taken as finished (the answer is where the change settles, not its first seconds), and
//! bounded load is left out (it depends on the load of the moment, not on the change).

use std::collections::HashMap;
use std::net::SocketAddr;

use super::plan::{plan, Plan, Serving, Standing};
use super::writer::AddOptions;
use super::Pool;
use crate::backend::{validate_weight, AdminState, DEFAULT_WEIGHT};
use crate::error::{Error, Result};
use crate::selection::{Algorithm, MaglevTable};

/// A change to ask [`Pool::what_if`] about: the pool operations that change which backends are
/// picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Add a backend (in the pool's configured initial health state).
    Add(SocketAddr, AddOptions),
    /// Remove a backend.
    Remove(SocketAddr),
    /// Set a backend's weight.
    Weight(SocketAddr, u32),
    /// Set a backend's admin state: `drain`, `maint`, or `ready` (enable).
    Admin(SocketAddr, AdminState),
    /// Make a backend a backup (`true`) or a primary.
    Backup(SocketAddr, bool),
    /// Switch the algorithm.
    Algorithm(Algorithm),
}

/// What a [`Change`] would do, from [`Pool::what_if`]. Plain fields, for a front end to render
/// as text or JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct WhatIf {
    /// The algorithm before the change.
    pub algorithm_before: Algorithm,
    /// The algorithm after it.
    pub algorithm_after: Algorithm,
    /// Which backends new connections go to before (primaries, backups, panic, nobody).
    pub serving_before: Serving,
    /// And after.
    pub serving_after: Serving,
    /// `ip_hash` keys (client hashes) that would change backend, out of
    /// [`key_space`](Self::key_space): exact, from the two Maglev tables. With tables of the
    /// same size this is the count of slots whose backend differs; with different sizes (the
    /// backend count crossing a size step) a key's slot pair is uniform over the pairs of
    /// slots, so this counts pairs. Computed whatever the algorithm, since it is the
    /// question to ask before switching to `ip_hash` too.
    pub moved_keys: u64,
    /// The keys `moved_keys` is out of: the table size, or the product of the two sizes.
    /// 0 when there is no backend either before or after.
    pub key_space: u64,
    /// Every backend before or after (the pool's order, then an added one), with its shares.
    pub backends: Vec<ShareChange>,
}

impl WhatIf {
    /// The share of `ip_hash` clients that would change backend, 0 to 1.
    pub fn moved_share(&self) -> f64 {
        if self.key_space == 0 {
            0.0
        } else {
            self.moved_keys as f64 / self.key_space as f64
        }
    }
}

/// One backend's shares before and after a change.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareChange {
    /// The backend's address.
    pub addr: SocketAddr,
    /// Its share of the `ip_hash` key space (Maglev table slots) before, 0 to 1.
    pub table_before: f64,
    /// And after.
    pub table_after: f64,
    /// Its share of new connections before: its table share under `ip_hash`, else its weight's
    /// share among the backends picked from (what `round_robin` and `random` give exactly, and
    /// what `least_connections` and `p2c` give to backends of equal speed).
    pub share_before: f64,
    /// And after, under the algorithm after.
    pub share_after: f64,
}

impl ShareChange {
    /// Key space gained (positive) or lost (negative), as a share of the whole.
    pub fn table_gain(&self) -> f64 {
        self.table_after - self.table_before
    }
}

impl Pool {
    /// What `change` would do to the pool as it is now; see [`WhatIf`]. Computed on a copy:
    /// the pool is not changed.
    ///
    /// Fails as the change itself would: an unknown backend, an address already in the pool,
    /// a weight out of range.
    pub fn what_if(&self, change: &Change) -> Result<WhatIf> {
        let snap = self.inner.snapshot.load();
        let settled = |m: &super::snapshot::Member| Standing { ramp: None, ..m.standing() };
        let before: Vec<Standing> = snap.members.iter().map(settled).collect();
        let mut after = before.clone();
        let mut algorithm = snap.algorithm;
        let find = |list: &[Standing], addr: SocketAddr| {
            list.iter().position(|m| m.addr == addr).ok_or(Error::UnknownBackend(addr))
        };
        match *change {
            Change::Add(addr, options) => {
                let weight = validate_weight(u64::from(options.weight.unwrap_or(DEFAULT_WEIGHT)))?;
                if find(&after, addr).is_ok() {
                    return Err(Error::DuplicateBackend(addr));
                }
                after.push(Standing {
                    addr,
                    weight,
                    backup: options.backup,
                    admin: options.admin,
                    health: snap.config.health.initial,
                    ramp: None,
                });
            }
            Change::Remove(addr) => {
                after.remove(find(&after, addr)?);
            }
            Change::Weight(addr, weight) => {
                let weight = validate_weight(u64::from(weight))?;
                let at = find(&after, addr)?;
                after[at].weight = weight;
            }
            Change::Admin(addr, admin) => {
                let at = find(&after, addr)?;
                after[at].admin = admin;
            }
            Change::Backup(addr, backup) => {
                let at = find(&after, addr)?;
                after[at].backup = backup;
            }
            Change::Algorithm(a) => algorithm = a,
        }
        let threshold = snap.config.panic_threshold;
        Ok(compare((snap.algorithm, &before), (algorithm, &after), threshold))
    }
}

/// One side of the comparison: its plan, its table, and each address's slots and shares.
struct Side {
    plan: Plan,
    table: MaglevTable,
    /// The planned backends' addresses, in table index order.
    addrs: Vec<SocketAddr>,
    slots: HashMap<SocketAddr, u64>,
    shares: HashMap<SocketAddr, f64>,
}

impl Side {
    fn new(algorithm: Algorithm, members: &[Standing], panic_threshold: u8) -> Side {
        let plan = plan(members, panic_threshold);
        let backends: Vec<(SocketAddr, u32)> =
            plan.picks.iter().map(|&(i, w)| (members[i].addr, w)).collect();
        let table = MaglevTable::build(&backends);
        let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.0).collect();
        let counts = table.slot_counts(backends.len());
        let slots: HashMap<SocketAddr, u64> = addrs.iter().copied().zip(counts).collect();
        let total_weight: u64 = backends.iter().map(|b| u64::from(b.1)).sum();
        let shares = backends
            .iter()
            .map(|&(addr, weight)| {
                let share = if algorithm == Algorithm::IpHash {
                    slots[&addr] as f64 / table.len() as f64
                } else {
                    f64::from(weight) / total_weight as f64
                };
                (addr, share)
            })
            .collect();
        Side { plan, table, addrs, slots, shares }
    }

    fn table_share(&self, addr: SocketAddr) -> f64 {
        self.slots.get(&addr).map_or(0.0, |&s| s as f64 / self.table.len() as f64)
    }

    /// The backend of slot `slot`.
    fn owner(&self, slot: u64) -> SocketAddr {
        self.addrs[self.table.lookup(slot).expect("a non-empty table")]
    }
}

/// The comparison of two states of a pool (each an algorithm and its members).
fn compare(
    before: (Algorithm, &[Standing]),
    after: (Algorithm, &[Standing]),
    panic_threshold: u8,
) -> WhatIf {
    let b = Side::new(before.0, before.1, panic_threshold);
    let a = Side::new(after.0, after.1, panic_threshold);
    let (m1, m2) = (b.table.len() as u64, a.table.len() as u64);
    let (moved_keys, key_space) = match (m1, m2) {
        (0, 0) => (0, 0),
        // Every key gains or loses its backend.
        (0, m) | (m, 0) => (m, m),
        (m1, m2) if m1 == m2 => ((0..m1).filter(|&s| b.owner(s) != a.owner(s)).count() as u64, m1),
        (m1, m2) => {
            // Distinct primes: by the Chinese remainder theorem a key's (slot before, slot
            // after) is uniform over all m1 × m2 pairs, and it stays put exactly when both
            // slots have the same owner.
            let stay: u64 =
                b.slots.iter().map(|(addr, &n)| n * a.slots.get(addr).unwrap_or(&0)).sum();
            (m1 * m2 - stay, m1 * m2)
        }
    };
    let mut addrs: Vec<SocketAddr> = before.1.iter().map(|m| m.addr).collect();
    addrs.extend(after.1.iter().map(|m| m.addr).filter(|x| !before.1.iter().any(|m| m.addr == *x)));
    let backends = addrs
        .into_iter()
        .map(|addr| ShareChange {
            addr,
            table_before: b.table_share(addr),
            table_after: a.table_share(addr),
            share_before: b.shares.get(&addr).copied().unwrap_or(0.0),
            share_after: a.shares.get(&addr).copied().unwrap_or(0.0),
        })
        .collect();
    WhatIf {
        algorithm_before: before.0,
        algorithm_after: after.0,
        serving_before: b.plan.serving,
        serving_after: a.plan.serving,
        moved_keys,
        key_space,
        backends,
    }
}
