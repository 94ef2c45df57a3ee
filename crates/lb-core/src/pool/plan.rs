//! Which members a snapshot's selector picks from, and with what weights: the backup,
//! fail-open (panic) and slow-start decisions, made once per published snapshot.
//!
//! The rules, in order:
//!
//! 1. *Primaries*: the members that are not backups, health up and admin `ready`. While there
//!    is one, and the pool is not in panic, only these are picked; backups stay idle (HAProxy's
//!    and nginx's `backup`).
//! 2. *Backups*: when no primary is available, the available backups (health up, `ready`) take
//!    every new connection, balanced among themselves by the pool's algorithm (HAProxy's
//!    `allbackups`, nginx's behaviour). This comes before panic: a backup known to be up is a
//!    better bet than a primary known to be down.
//! 3. *Panic* (Envoy's panic threshold, `panic_threshold` percent, 0 = off): when fewer than
//!    that share of the `ready` primaries is up, picks spread over every `ready` primary,
//!    whatever its health, rather than crushing the few left. Panic ignores health only: a
//!    primary in `drain` or `maint` was taken out by an operator and stays out, and is not
//!    counted in the share either (draining half the fleet for a deploy is not an outage).
//! 4. Otherwise nothing can be picked.
//!
//! Slow start then sets the weights: see [`crate::slow_start`].

use std::net::SocketAddr;

use crate::backend::AdminState;
use crate::health::Health;
use crate::slow_start::{Ramp, STEPS};

/// Which backends a pool is sending new connections to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Serving {
    /// Its primaries (the usual case): at least one is available and the pool is not in panic.
    #[default]
    Primaries,
    /// Its backups: no primary is available, and at least one backup is.
    Backups,
    /// Every `ready` primary regardless of health (fail-open): fewer than the panic threshold's
    /// share of them is up, and no backup took over.
    Panic,
    /// Nobody: no backend can take a connection.
    Nobody,
}

impl Serving {
    /// `primaries`, `backups`, `panic` or `nobody`.
    pub fn as_str(self) -> &'static str {
        match self {
            Serving::Primaries => "primaries",
            Serving::Backups => "backups",
            Serving::Panic => "panic",
            Serving::Nobody => "nobody",
        }
    }
}

impl std::fmt::Display for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What the plan needs to know about one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Standing {
    pub(crate) addr: SocketAddr,
    pub(crate) weight: u32,
    pub(crate) backup: bool,
    pub(crate) admin: AdminState,
    pub(crate) health: Health,
    pub(crate) ramp: Option<Ramp>,
}

impl Standing {
    /// Health up and admin `ready`: can take a connection in the usual case.
    pub(crate) fn available(&self) -> bool {
        self.health == Health::Up && self.admin == AdminState::Ready
    }
}

/// The members to pick from (indices into the slice given to [`plan`]) with their selector
/// weights, and which kind of backend they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) serving: Serving,
    pub(crate) picks: Vec<(usize, u32)>,
}

/// The plan for these members; see the module docs. `panic_threshold` is a percentage
/// (0 = off).
pub(crate) fn plan(members: &[Standing], panic_threshold: u8) -> Plan {
    let ready_primary = |m: &Standing| !m.backup && m.admin == AdminState::Ready;
    let ready = members.iter().filter(|m| ready_primary(m)).count() as u64;
    let up = members.iter().filter(|m| ready_primary(m) && m.health == Health::Up).count() as u64;
    let panic = panic_threshold > 0 && ready > 0 && up * 100 < u64::from(panic_threshold) * ready;
    let backups = members.iter().any(|m| m.backup && m.available());
    let serving = if up > 0 && !panic {
        Serving::Primaries
    } else if up == 0 && backups {
        Serving::Backups
    } else if panic {
        Serving::Panic
    } else {
        Serving::Nobody
    };
    let chosen = |m: &Standing| match serving {
        Serving::Primaries => !m.backup && m.available(),
        Serving::Backups => m.backup && m.available(),
        Serving::Panic => ready_primary(m),
        Serving::Nobody => false,
    };
    let picked = || members.iter().enumerate().filter(|(_, m)| chosen(m));
    // Weights are scaled only while something ramps, so a pool without slow start builds
    // exactly the tables it always did.
    let ramping = picked().any(|(_, m)| m.ramp.is_some());
    let picks = picked()
        .map(|(i, m)| {
            let weight = match (ramping, m.ramp) {
                (false, _) => m.weight,
                (true, None) => m.weight * STEPS,
                (true, Some(ramp)) => ramp.scaled_weight(m.weight),
            };
            (i, weight)
        })
        .collect();
    Plan { serving, picks }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn member(i: u8, backup: bool, health: Health, admin: AdminState) -> Standing {
        let addr = SocketAddr::from(([10, 0, 0, i], 80));
        Standing { addr, weight: 2, backup, admin, health, ramp: None }
    }

    const UP: Health = Health::Up;
    const DOWN: Health = Health::Down;
    const READY: AdminState = AdminState::Ready;

    fn indices(plan: &Plan) -> Vec<usize> {
        plan.picks.iter().map(|&(i, _)| i).collect()
    }

    #[test]
    fn backups_serve_only_while_no_primary_is_available() {
        let mut members = vec![
            member(1, false, UP, READY),
            member(2, false, DOWN, READY),
            member(3, true, UP, READY),
            member(4, true, DOWN, READY),
        ];
        let p = plan(&members, 0);
        assert_eq!((p.serving, indices(&p)), (Serving::Primaries, vec![0]));
        members[0].health = DOWN;
        let p = plan(&members, 0);
        assert_eq!((p.serving, indices(&p)), (Serving::Backups, vec![2]));
        members[0].health = UP;
        members[0].admin = AdminState::Drain;
        assert_eq!(
            plan(&members, 0).serving,
            Serving::Backups,
            "a draining primary is not available"
        );
        members[2].health = DOWN;
        let p = plan(&members, 0);
        assert_eq!((p.serving, indices(&p)), (Serving::Nobody, vec![]));
    }

    #[test]
    fn panic_spreads_over_ready_primaries_below_the_threshold() {
        // 1 of 4 ready primaries up (25%); a fifth primary is in maintenance.
        let mut members = vec![
            member(1, false, UP, READY),
            member(2, false, DOWN, READY),
            member(3, false, DOWN, READY),
            member(4, false, DOWN, READY),
            member(5, false, UP, AdminState::Maint),
        ];
        assert_eq!(indices(&plan(&members, 0)), vec![0], "off");
        assert_eq!(indices(&plan(&members, 25)), vec![0], "25% is not fewer than 25%");
        let p = plan(&members, 26);
        assert_eq!((p.serving, indices(&p)), (Serving::Panic, vec![0, 1, 2, 3]), "maint stays out");
        // With every primary down, an available backup comes before panic.
        members[0].health = DOWN;
        members.push(member(6, true, UP, READY));
        let p = plan(&members, 50);
        assert_eq!((p.serving, indices(&p)), (Serving::Backups, vec![5]));
        members[5].health = DOWN;
        assert_eq!(plan(&members, 50).serving, Serving::Panic);
        assert_eq!(plan(&members, 0).serving, Serving::Nobody);
        assert_eq!(plan(&members, 100).serving, Serving::Panic);
    }

    #[test]
    fn ramping_scales_weights_only_while_something_ramps() {
        let mut members = vec![member(1, false, UP, READY), member(2, false, UP, READY)];
        assert_eq!(plan(&members, 0).picks, vec![(0, 2), (1, 2)]);
        members[1].ramp = Some(Ramp { since: Instant::now(), step: 3 });
        assert_eq!(plan(&members, 0).picks, vec![(0, 20), (1, 6)], "30% of 2 against 2");
        // A ramping backend that is not picked from leaves the weights alone.
        members[1].admin = AdminState::Drain;
        assert_eq!(plan(&members, 0).picks, vec![(0, 2)]);
    }

    fn standing() -> impl proptest::strategy::Strategy<Value = Standing> {
        use proptest::prelude::*;
        let admin = prop::sample::select(vec![READY, AdminState::Drain, AdminState::Maint]);
        (any::<bool>(), any::<bool>(), admin, 1u32..5).prop_map(|(backup, up, admin, weight)| {
            let health = if up { UP } else { DOWN };
            Standing { weight, ..member(1, backup, health, admin) }
        })
    }

    proptest::proptest! {
        /// The plan against the rules written out one by one.
        #[test]
        fn the_plan_follows_the_rules(
            members in proptest::collection::vec(standing(), 0..12),
            threshold in proptest::prop_oneof![proptest::strategy::Just(0u8), 0u8..=100],
        ) {
            let p = plan(&members, threshold);
            let primary_ok = |m: &Standing| !m.backup && m.available();
            let backup_ok = |m: &Standing| m.backup && m.available();
            let ready = members.iter().filter(|m| !m.backup && m.admin == READY).count() as f64;
            let up = members.iter().filter(|m| primary_ok(m)).count() as f64;
            let below = threshold > 0 && ready > 0.0 && up / ready < f64::from(threshold) / 100.0;
            let expected: Vec<usize> = members
                .iter()
                .enumerate()
                .filter(|(_, m)| match p.serving {
                    Serving::Primaries => primary_ok(m),
                    Serving::Backups => backup_ok(m),
                    Serving::Panic => !m.backup && m.admin == READY,
                    Serving::Nobody => false,
                })
                .map(|(i, _)| i)
                .collect();
            proptest::prop_assert_eq!(indices(&p), expected.clone());
            let serving = p.serving;
            match serving {
                Serving::Primaries => proptest::prop_assert!(up > 0.0 && !below),
                Serving::Backups => {
                    proptest::prop_assert!(up == 0.0 && !expected.is_empty());
                }
                Serving::Panic => {
                    proptest::prop_assert!(below && !members.iter().any(|m| up == 0.0 && backup_ok(m)));
                }
                Serving::Nobody => {
                    proptest::prop_assert!(up == 0.0 && !below && !members.iter().any(backup_ok));
                }
            }
            // Whatever the mode, an operator's drain or maint is never overridden, and no
            // ramp means the weights are the configured ones.
            for &(i, weight) in &p.picks {
                proptest::prop_assert_eq!(members[i].admin, READY);
                proptest::prop_assert_eq!(weight, members[i].weight);
            }
        }
    }
}
