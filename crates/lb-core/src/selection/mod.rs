//! Selection algorithms: immutable selectors built from the eligible backends.
//!
//! A selector is built (`build`) whenever membership, weights, health or admin state change and
//! is published inside the pool's snapshot; picking only reads it plus a few atomics. Every
//! algorithm gets the same inputs through `PickCtx`, and a `skip` predicate that rejects
//! candidates excluded by the caller (retries) or at their connection limit. When `skip`
//! rejects everything, a selector returns `None`; it never panics and never loops unboundedly.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use fastrand::Rng;

use crate::error::{Error, Result};
use crate::slot::Candidate;

pub(crate) mod ip_hash;
pub(crate) mod least_connections;
mod load_tree;
pub(crate) mod p2c;
pub(crate) mod random;
pub(crate) mod round_robin;

pub use ip_hash::{hash_client, load_bound, table_size, MaglevTable};
pub(crate) use load_tree::{CurrentTree, LoadTree};

/// A balancing algorithm, by the name used on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// Smooth weighted round robin (nginx's interleaving).
    #[default]
    RoundRobin,
    /// Fewest active connections per unit of weight; ties rotate.
    LeastConnections,
    /// Weighted random: each pick draws a backend with probability `weight / total`.
    Random,
    /// Maglev consistent hashing of the client IP.
    IpHash,
    /// Power of two random choices: the less loaded (per weight) of two random backends.
    P2c,
}

impl Algorithm {
    /// Every algorithm, in the order they are documented.
    pub const ALL: [Algorithm; 5] = [
        Algorithm::RoundRobin,
        Algorithm::LeastConnections,
        Algorithm::Random,
        Algorithm::IpHash,
        Algorithm::P2c,
    ];

    /// The name used on the command line: `round_robin`, `least_connections`, `random`,
    /// `ip_hash`, `p2c`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::LeastConnections => "least_connections",
            Algorithm::Random => "random",
            Algorithm::IpHash => "ip_hash",
            Algorithm::P2c => "p2c",
        }
    }

    /// All names, comma separated, for error and help messages.
    pub fn names() -> String {
        Self::ALL.map(Algorithm::as_str).join(", ")
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = Error;

    /// Parses a name; `-` and `_` are interchangeable and case is ignored, so `least-connections`
    /// and `LEAST_CONNECTIONS` are accepted too.
    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == wanted)
            .ok_or_else(|| Error::UnknownAlgorithm { name: s.to_owned() })
    }
}

/// Everything a pick may use besides the selector itself.
pub(crate) struct PickCtx<'a> {
    /// The eligible backends the selector was built for, in the same order (never empty when
    /// a selector sees it).
    pub(crate) candidates: &'a [Candidate],
    /// The client's address, for `ip_hash`.
    pub(crate) client: Option<IpAddr>,
    /// Randomness, injected so tests can seed it.
    pub(crate) rng: Randomness<'a>,
    /// A counter that lives as long as the pool (not the snapshot), so round robin continues
    /// its cycle and least-connections rotates its ties across rebuilds.
    pub(crate) cursor: &'a AtomicU64,
}

/// Where a pick's random numbers come from.
pub(crate) enum Randomness<'a> {
    /// The caller's generator, for reproducible runs.
    Given(&'a mut Rng),
    /// A generator seeded from the thread-local one when first needed: round robin, least
    /// connections and ip_hash with a client address draw nothing, so they skip the seeding.
    Lazy(Option<Rng>),
}

impl PickCtx<'_> {
    #[inline]
    pub(crate) fn next_cursor(&self) -> u64 {
        self.cursor.fetch_add(1, Relaxed)
    }

    #[inline]
    pub(crate) fn rng(&mut self) -> &mut Rng {
        match &mut self.rng {
            Randomness::Given(rng) => rng,
            Randomness::Lazy(rng) => rng.get_or_insert_with(|| Rng::with_seed(fastrand::u64(..))),
        }
    }
}

/// A selector: an immutable value built from the candidates, answering picks.
pub(crate) trait Select: Sized {
    /// Builds the selector for these candidates (never empty).
    fn build(candidates: &[Candidate]) -> Self;

    /// Picks the index of a candidate for which `skip` is false, or `None` if there is none.
    fn pick(&self, ctx: &mut PickCtx<'_>, skip: impl Fn(usize) -> bool) -> Option<usize>;
}

/// The selector of the current algorithm. An enum rather than a trait object, so the pick is a
/// direct, inlinable call.
#[derive(Debug)]
pub(crate) enum Selector {
    RoundRobin(round_robin::RoundRobin),
    LeastConnections(least_connections::LeastConnections),
    Random(random::WeightedRandom),
    IpHash(ip_hash::IpHash),
    P2c(p2c::P2c),
}

impl Selector {
    /// The selector of `algorithm` for `candidates`; `hash_balance_factor` is `ip_hash`'s
    /// bounded-load factor (0 = off), `limit` the per-backend connection limit (`u64::MAX`
    /// for none), which least connections' tree ranks by.
    pub(crate) fn build(
        algorithm: Algorithm,
        candidates: &[Candidate],
        hash_balance_factor: u32,
        limit: u64,
    ) -> Self {
        match algorithm {
            Algorithm::RoundRobin => Selector::RoundRobin(Select::build(candidates)),
            Algorithm::LeastConnections => Selector::LeastConnections(
                least_connections::LeastConnections::new(candidates, limit),
            ),
            Algorithm::Random => Selector::Random(Select::build(candidates)),
            Algorithm::IpHash => {
                Selector::IpHash(ip_hash::IpHash::new(candidates, hash_balance_factor))
            }
            Algorithm::P2c => Selector::P2c(Select::build(candidates)),
        }
    }

    /// Least connections' tree, which picks and releases keep up to date, if this selector
    /// has one.
    #[inline(always)]
    pub(crate) fn tree(&self) -> Option<&std::sync::Arc<LoadTree>> {
        match self {
            Selector::LeastConnections(s) => s.tree(),
            _ => None,
        }
    }

    /// A retry's pick (the connection's earlier backends excluded). A retry takes no turn of
    /// the pool's cursor (its `ctx.cursor` is its own, at a random turn): were it to, a backend
    /// whose connects fail would come round one connection sooner each time, and with two
    /// backends be every client's first try. Round robin's draws turns at random
    /// ([`round_robin::RoundRobin::pick_retry`]), so the retries of a failing backend's
    /// clients spread over the others in proportion to their weights; the others pick as
    /// always.
    pub(crate) fn pick_retry(
        &self,
        ctx: &mut PickCtx<'_>,
        skip: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        match self {
            Selector::RoundRobin(s) if !ctx.candidates.is_empty() => s.pick_retry(ctx, skip),
            _ => self.pick(ctx, skip),
        }
    }

    // Always, like the random and p2c picks below it: each out-of-line call on this path cost
    // 5 to 40 instructions of a 150 to 350 instruction pick (counted with callgrind), more than
    // the code it would save.
    #[inline(always)]
    pub(crate) fn pick(
        &self,
        ctx: &mut PickCtx<'_>,
        skip: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        if ctx.candidates.is_empty() {
            return None;
        }
        match self {
            Selector::RoundRobin(s) => s.pick(ctx, skip),
            Selector::LeastConnections(s) => s.pick(ctx, skip),
            Selector::Random(s) => s.pick(ctx, skip),
            Selector::IpHash(s) => s.pick(ctx, skip),
            Selector::P2c(s) => s.pick(ctx, skip),
        }
    }
}

/// `x % d` for a divisor fixed when a selector is built, by multiplications instead of a
/// division (Lemire, Kaser and Kurz, "Faster Remainder by Direct Computation", 2019). Maglev
/// reduces a full 64-bit hash on every pick, where a hardware division is at its slowest.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FastMod {
    d: u64,
    /// `ceil(2^128 / d)`; 0 for `d == 1`, which makes every remainder 0 as it should be.
    m: u128,
}

impl FastMod {
    pub(crate) fn new(d: u64) -> Self {
        let d = d.max(1);
        FastMod { d, m: (u128::MAX / u128::from(d)).wrapping_add(1) }
    }

    #[inline]
    pub(crate) fn rem(self, x: u64) -> u64 {
        // The fractional part of x / d, as a 128-bit fixed-point number, times d: the high 64
        // bits of the 192-bit product are the remainder.
        let fraction = self.m.wrapping_mul(u128::from(x));
        let d = u128::from(self.d);
        let low = (u128::from(fraction as u64) * d) >> 64;
        (((fraction >> 64) * d + low) >> 64) as u64
    }
}

/// The first index in `table` for which `skip` is false, walking from `start` to the end and
/// then from the beginning: round robin's cycle and Maglev's table both hand out the next entry
/// this way, so a skipped candidate's turn goes on to the one the table names next.
// Plain loops and `inline(always)`: with three callers, an iterator chain here compiles to an
// out-of-line `try_fold`, a call on every round-robin pick.
#[inline(always)]
pub(crate) fn first_allowed_from<T: Copy + Into<u32>>(
    table: &[T],
    start: usize,
    skip: impl Fn(usize) -> bool,
) -> Option<usize> {
    let (before, after) = table.split_at(start);
    for part in [after, before] {
        for &i in part {
            let i = i.into() as usize;
            if !skip(i) {
                return Some(i);
            }
        }
    }
    None
}

/// The candidate with the fewest active connections per unit of weight among those `skip`
/// allows, scanning from `start` so that ties go to whoever comes first after `start`.
/// Shared by least-connections (its whole algorithm) and p2c (its fallback).
#[inline]
pub(crate) fn least_loaded_from(
    candidates: &[Candidate],
    start: usize,
    skip: impl Fn(usize) -> bool,
) -> Option<usize> {
    let n = candidates.len();
    let start = start.min(n);
    // Two plain ranges rather than `(start + step) % n`, which put a division in every step.
    // The best so far is kept as plain values rather than an `Option`: a weight of 0 stands for
    // "none yet", since `load * 0 < 1 * weight` holds for every real weight (at least 1).
    let (mut best, mut best_load, mut best_weight) = (usize::MAX, 1u64, 0u64);
    for range in [start..n, 0..start] {
        for i in range {
            if skip(i) {
                continue;
            }
            let c = &candidates[i];
            // As in `less_loaded`, the connection about to be placed is counted.
            let load = c.active() + 1;
            let weight = u64::from(c.weight);
            // load/weight < best_load/best_weight, without division; equal keeps the first.
            if load * best_weight < best_load * weight {
                (best, best_load, best_weight) = (i, load, weight);
            }
        }
    }
    (best != usize::MAX).then_some(best)
}

/// Is `(a_active + 1) / a_weight` strictly below `(b_active + 1) / b_weight`? The `+ 1` counts
/// the connection about to be placed, so an idle heavy backend beats an idle light one.
#[inline]
pub(crate) fn less_loaded(a: &Candidate, b: &Candidate) -> bool {
    (a.active() + 1) * u64::from(b.weight) < (b.active() + 1) * u64::from(a.weight)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(a.as_str().parse::<Algorithm>().unwrap(), a);
            assert_eq!(a.to_string(), a.as_str());
        }
        assert_eq!("Least-Connections".parse::<Algorithm>().unwrap(), Algorithm::LeastConnections);
    }

    #[test]
    fn fast_mod_matches_the_remainder_operator() {
        let mut rng = Rng::with_seed(7);
        let divisors =
            [1, 2, 3, 7, 1000, 65_537, 131_071, 1_048_573, 1 << 32, u64::MAX - 1, u64::MAX];
        let random: Vec<u64> = (0..2000).map(|i| rng.u64(1..(1 << (i % 64)).max(2))).collect();
        for d in divisors.into_iter().chain(random) {
            let f = FastMod::new(d);
            let edges = [0, 1, d - 1, d, d.saturating_add(1), 1 << 32, u64::MAX - 1, u64::MAX];
            for x in edges.into_iter().chain((0..200).map(|_| rng.u64(..))) {
                assert_eq!(f.rem(x), x % d, "{x} % {d}");
            }
        }
    }

    #[test]
    fn least_loaded_from_matches_a_single_pass_in_scan_order() {
        let mut rng = Rng::with_seed(11);
        for _ in 0..2000 {
            let n = rng.usize(0..40);
            let candidates: Vec<Candidate> = (0..n)
                .map(|i| Candidate::for_test(i as u16, rng.u32(1..5), rng.u64(0..6)))
                .collect();
            let skipped: Vec<bool> = (0..n).map(|_| rng.u8(..) < 64).collect();
            let start = rng.usize(0..=n);
            // The reference: one pass from `start`, wrapping, strictly less replaces.
            let mut expected: Option<usize> = None;
            for i in (start.min(n)..n).chain(0..start.min(n)) {
                if skipped[i] {
                    continue;
                }
                if expected.is_none_or(|b| less_loaded(&candidates[i], &candidates[b])) {
                    expected = Some(i);
                }
            }
            let got = least_loaded_from(&candidates, start, |i| skipped[i]);
            assert_eq!(got, expected, "n {n} start {start}");
        }
    }

    #[test]
    fn unknown_name_lists_the_valid_ones() {
        let err = "fastest".parse::<Algorithm>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown algorithm \"fastest\": expected one of round_robin, least_connections, \
             random, ip_hash, p2c"
        );
    }
}
