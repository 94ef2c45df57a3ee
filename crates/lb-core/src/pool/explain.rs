//! `explain`: which backend the next connection from a client would get, and why, without
//! changing anything (no counter, no cursor, no random state of the pool).
//!
//! It runs the same code as a pick against the current snapshot: the selector with a copy of
//! the pool's cursor, the same skip rule (connection limits), `ip_hash`'s same walk and
//! bounded-load cut. So for `round_robin`, `least_connections` and `ip_hash` it names exactly
//! the backend the next pick would choose, provided no other pick or change comes in between.
//! For `random` and `p2c` the answer is one draw with a private generator: the real pick draws
//! again.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use fastrand::Rng;

use super::plan::Serving;
use super::Pool;
use crate::backend::{AdminState, Backend};
use crate::health::{Health, Reason};
use crate::selection::{load_bound, Algorithm, PickCtx, Randomness, Selector};

/// The answer of [`Pool::explain`]: the backend the next connection from a client would get,
/// and why. Plain fields, for a front end to render as text or JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explain {
    /// The algorithm in use.
    pub algorithm: Algorithm,
    /// Which backends the pool is sending new connections to: its primaries, its backups (no
    /// primary is available), all ready primaries in panic (fail-open), or nobody.
    pub serving: Serving,
    /// The backend the next connection would get, or `None` if there is none.
    pub chosen: Option<Backend>,
    /// What the algorithm looked at.
    pub inputs: Inputs,
    /// Every backend that was not an option or was passed over, with the reason, in the
    /// pool's order.
    pub passed_over: Vec<PassedOver>,
    /// The backends picked from whose weight a slow-start ramp reduces now, with the share of
    /// their weight they have (percent).
    pub ramping: Vec<(Backend, u8)>,
}

/// What an algorithm looked at for one pick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inputs {
    /// No backend to pick from.
    Nothing,
    /// `round_robin`: the cursor the pick would take and where that lands in the cycle.
    RoundRobin {
        /// The pool's cursor now: the next pick takes this value and adds one.
        cursor: u64,
        /// Entries in one weighted cycle.
        cycle_len: usize,
        /// `cursor % cycle_len`: the entry the pick starts at.
        position: usize,
    },
    /// `least_connections`: the loads compared, and where the scan starts (ties go to the
    /// first after it).
    LeastConnections {
        /// Index into `loads` the scan starts at (the cursor, rotating ties).
        start: usize,
        /// Every backend picked from, with its active connections and selector weight.
        loads: Vec<Load>,
    },
    /// `random`: one weighted draw; `chosen` is one sample of it.
    Random,
    /// `p2c`: two weighted draws, the less loaded per weight wins; `chosen` is one sample.
    P2c {
        /// The loads the draws are compared by.
        loads: Vec<Load>,
    },
    /// `ip_hash`: the client's slot in the Maglev table and its preference order.
    IpHash {
        /// The client's hash (random when there is no client address).
        hash: u64,
        /// `hash % table_len`: the client's slot.
        slot: u64,
        /// Slots in the table (a prime).
        table_len: u64,
        /// The backends in the order this client prefers them: the owners of the slots from
        /// its own onwards. A pick takes the first it can use.
        preference: Vec<Backend>,
        /// The bounded-load check, when the pool has a `hash_balance_factor`.
        bounded: Option<BoundedLoad>,
    },
}

/// A backend's load as a load-based algorithm compares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// The backend.
    pub backend: Backend,
    /// Its active connections.
    pub active: u64,
    /// Its weight as the selector uses it (scaled by ten while a slow-start ramp runs).
    pub weight: u32,
}

/// `ip_hash`'s bounded-load check for one pick (see [`load_bound`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundedLoad {
    /// The factor, in percent.
    pub factor: u32,
    /// Active connections over the backends picked from.
    pub total_active: u64,
    /// Their selector weights, summed.
    pub total_weight: u64,
    /// The client's first choice among the backends it could use, with its load and bound.
    pub first_choice: Option<(Backend, u64, u64)>,
    /// Whether the bound sent the client past its first choice.
    pub cut: bool,
}

/// A backend not chosen, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassedOver {
    /// The backend.
    pub backend: Backend,
    /// Why it was not chosen.
    pub reason: PassReason,
}

/// Why a backend was not an option, or was passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassReason {
    /// Health down.
    Down {
        /// Since when (as reported by whoever reported it), if known.
        since: Option<Instant>,
        /// What took it down (the failures, or an operator), if known.
        reason: Option<Reason>,
    },
    /// Admin state `drain`.
    Draining,
    /// Admin state `maint`.
    Maint,
    /// A backup, idle while the pool is not serving from its backups.
    Standby,
    /// A primary while the backups serve (only in ways the other reasons do not cover).
    NotServing,
    /// At the pool's per-backend connection limit.
    AtLimit {
        /// Its active connections.
        active: u64,
        /// The limit.
        limit: u64,
    },
    /// `ip_hash` with bounded load: ahead of the chosen backend in the client's preference
    /// order, but at its bound.
    OverBound {
        /// Its active connections.
        active: u64,
        /// Its bound ([`load_bound`]).
        bound: u64,
    },
}

impl Pool {
    /// Which backend the next connection from `client` would get right now, and why; see the
    /// [`Explain`] fields. Changes nothing: no counter, no cursor.
    ///
    /// For `round_robin`, `least_connections` and `ip_hash` the answer is the next pick's (if
    /// nothing else picks or changes the pool in between); for `random` and `p2c` it is one
    /// sample of the draw.
    pub fn explain(&self, client: Option<IpAddr>) -> Explain {
        let snap = self.inner.snapshot.load();
        let candidates = &snap.candidates[..];
        let backend = |i: usize| {
            let member = &snap.members[snap.candidate_members[i]];
            member.backend()
        };
        let skip = snap.skip(&[]);
        let cursor_now = self.inner.cursor.0.load(Relaxed);
        // A copy: the selector advances it as the real pick would advance the pool's.
        let cursor = AtomicU64::new(cursor_now);
        let mut rng = Rng::with_seed(fastrand::u64(..));
        let loads = || {
            candidates
                .iter()
                .enumerate()
                .map(|(i, c)| Load { backend: backend(i), active: c.active(), weight: c.weight })
                .collect::<Vec<_>>()
        };
        let mut over_bound: Vec<(usize, u64, u64)> = Vec::new();
        let (chosen, inputs) = if candidates.is_empty() {
            (None, Inputs::Nothing)
        } else if let Selector::IpHash(s) = &snap.selector {
            let hash = client.map_or_else(|| rng.u64(..), crate::selection::hash_client);
            let chosen = s.pick_hash(candidates, hash, skip);
            let table = s.table();
            let preference = table.preference(hash, candidates.len());
            let bounded = (s.balance_factor() > 0).then(|| {
                let total_active: u64 = candidates.iter().map(|c| c.active()).sum();
                let bound = |i: usize| {
                    load_bound(
                        s.balance_factor(),
                        total_active,
                        s.total_weight(),
                        candidates[i].weight,
                    )
                };
                let first = preference.iter().copied().find(|&i| !skip(i));
                for &i in preference.iter().take_while(|&&i| Some(i) != chosen) {
                    let active = candidates[i].active();
                    if !skip(i) && active >= bound(i) {
                        over_bound.push((i, active, bound(i)));
                    }
                }
                BoundedLoad {
                    factor: s.balance_factor(),
                    total_active,
                    total_weight: s.total_weight(),
                    first_choice: first.map(|i| (backend(i), candidates[i].active(), bound(i))),
                    cut: first.is_some() && first != chosen,
                }
            });
            let inputs = Inputs::IpHash {
                hash,
                slot: table.slot_of(hash).unwrap_or(0),
                table_len: table.len() as u64,
                preference: preference.into_iter().map(backend).collect(),
                bounded,
            };
            (chosen, inputs)
        } else {
            let mut ctx =
                PickCtx { candidates, client, rng: Randomness::Given(&mut rng), cursor: &cursor };
            let chosen = snap.selector.pick(&mut ctx, skip);
            let n = candidates.len();
            let inputs = match &snap.selector {
                Selector::RoundRobin(s) => {
                    let cycle_len = s.cycle().len();
                    let position = (cursor_now % cycle_len.max(1) as u64) as usize;
                    Inputs::RoundRobin { cursor: cursor_now, cycle_len, position }
                }
                Selector::LeastConnections(_) => Inputs::LeastConnections {
                    start: (cursor_now % n as u64) as usize,
                    loads: loads(),
                },
                Selector::Random(_) => Inputs::Random,
                Selector::P2c(_) => Inputs::P2c { loads: loads() },
                Selector::IpHash(_) => unreachable!("handled above"),
            };
            (chosen, inputs)
        };

        let mut passed_over = Vec::new();
        for (at, member) in snap.members.iter().enumerate() {
            let candidate = snap.candidate_members.iter().position(|&m| m == at);
            let reason = match candidate {
                Some(i) if Some(i) == chosen => continue,
                Some(i) => {
                    let active = candidates[i].active();
                    if snap.limit != u64::MAX && active >= snap.limit {
                        PassReason::AtLimit { active, limit: snap.limit }
                    } else if let Some(&(_, active, bound)) =
                        over_bound.iter().find(|&&(j, _, _)| j == i)
                    {
                        PassReason::OverBound { active, bound }
                    } else {
                        // An option, just not this pick's: the inputs say why.
                        continue;
                    }
                }
                None if member.admin == AdminState::Drain => PassReason::Draining,
                None if member.admin == AdminState::Maint => PassReason::Maint,
                None if member.health == Health::Down => PassReason::Down {
                    since: member.last_change,
                    reason: member.down_reason.as_deref().cloned(),
                },
                None if member.backup => PassReason::Standby,
                None => PassReason::NotServing,
            };
            passed_over.push(PassedOver { backend: member.backend(), reason });
        }
        let ramping = snap
            .candidate_members
            .iter()
            .filter_map(|&m| {
                let member = &snap.members[m];
                member.ramp.map(|r| (member.backend(), r.percent()))
            })
            .collect();
        Explain {
            algorithm: snap.algorithm,
            serving: snap.serving,
            chosen: chosen.map(backend),
            inputs,
            passed_over,
            ramping,
        }
    }
}

impl Explain {
    /// The chosen backend's address, if any.
    pub fn chosen_addr(&self) -> Option<SocketAddr> {
        self.chosen.map(|b| b.addr)
    }
}
