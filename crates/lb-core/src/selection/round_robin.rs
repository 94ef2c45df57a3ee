//! Smooth weighted round robin, precomputed as one cycle and walked by an atomic cursor.
//!
//! The sequence is nginx's smooth weighted round robin: at each step every backend's
//! `current` grows by its weight, the largest `current` is chosen (the first on a tie) and
//! loses the total weight. Weights 5, 1, 1 give `a a b a c a a`, spreading the heavy backend's
//! turns instead of sending it five in a row. Because the sequence is periodic with period
//! `sum(weights) / gcd(weights)`, it is computed once per snapshot and a pick is a single
//! `fetch_add` and an index: no lock, no per-backend state to update.
//!
//! Building the exact nginx cycle costs `backends * cycle` steps. For very large, uneven
//! weight sets (more than [`EXACT_BUILD_LIMIT`] steps, e.g. 1000 backends with weights spread
//! over 1..=1000) the cycle is instead built with a heap in `cycle * log(backends)`: each
//! backend's `k`-th turn is placed at virtual time `(k + 1/2) / weight` (Webster's method),
//! which is just as smooth and gives each backend exactly its weight's share of the cycle, but
//! orders ties differently from nginx.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::{first_allowed_from, PickCtx, Select};
use crate::slot::Candidate;

/// Random turns a retry draws before it walks the cycle (which it does when nearly every turn
/// is excluded or full).
const RETRY_DRAWS: usize = 8;

/// Above this many `backends * cycle` steps the heap builder is used (see the module docs).
pub(crate) const EXACT_BUILD_LIMIT: u64 = 1 << 22;

#[derive(Debug)]
pub(crate) struct RoundRobin {
    /// One full cycle of candidate indices.
    cycle: Box<[u32]>,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// One cycle of the smooth weighted round-robin sequence for these weights.
pub(crate) fn cycle(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().fold(0, |g, &w| gcd(g, u64::from(w))).max(1);
    let reduced: Vec<u64> = weights.iter().map(|&w| u64::from(w) / g).collect();
    let total: u64 = reduced.iter().sum();
    if total == 0 {
        return Vec::new();
    }
    if total.saturating_mul(reduced.len() as u64) <= EXACT_BUILD_LIMIT {
        nginx_cycle(&reduced, total)
    } else {
        webster_cycle(&reduced, total)
    }
}

fn nginx_cycle(weights: &[u64], total: u64) -> Vec<u32> {
    let total = total as i64;
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

fn webster_cycle(weights: &[u64], total: u64) -> Vec<u32> {
    // The k-th turn (k from 0) of backend i is due at (2k + 1) / (2 w_i). Comparing
    // (2k_a + 1) * w_b with (2k_b + 1) * w_a keeps it exact in integers.
    #[derive(PartialEq, Eq)]
    struct Turn {
        numerator: u64,
        weight: u64,
        index: u32,
    }
    impl Ord for Turn {
        fn cmp(&self, other: &Self) -> std::cmp::Ordering {
            (self.numerator * other.weight)
                .cmp(&(other.numerator * self.weight))
                .then(self.index.cmp(&other.index))
        }
    }
    impl PartialOrd for Turn {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }
    let mut heap: BinaryHeap<Reverse<Turn>> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| Reverse(Turn { numerator: 1, weight: w, index: i as u32 }))
        .collect();
    let mut out = Vec::with_capacity(total as usize);
    while out.len() < total as usize {
        let Some(Reverse(mut turn)) = heap.pop() else { break };
        out.push(turn.index);
        turn.numerator += 2;
        heap.push(Reverse(turn));
    }
    out
}

impl RoundRobin {
    /// A retry's pick: turns drawn at random, so that the retries of a failing backend's
    /// clients spread over the others by weight (walking on from one random turn would give
    /// the failing backend's successor in the cycle its share as well as its own); then, when
    /// nearly every turn is excluded or full, the walk of an ordinary pick. Kept apart from
    /// [`Select::pick`] so that a first pick pays nothing for it.
    pub(crate) fn pick_retry(
        &self,
        ctx: &mut PickCtx<'_>,
        skip: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let len = self.cycle.len();
        if len == 0 {
            return None;
        }
        for _ in 0..RETRY_DRAWS {
            let i = self.cycle[ctx.rng().usize(..len)] as usize;
            if !skip(i) {
                return Some(i);
            }
        }
        self.pick(ctx, skip)
    }

    /// The cycle of candidate indices a pick walks.
    pub(crate) fn cycle(&self) -> &[u32] {
        &self.cycle
    }
}

impl Select for RoundRobin {
    fn build(candidates: &[Candidate]) -> Self {
        let weights: Vec<u32> = candidates.iter().map(|c| c.weight).collect();
        RoundRobin { cycle: cycle(&weights).into_boxed_slice() }
    }

    #[inline]
    fn pick(&self, ctx: &mut PickCtx<'_>, skip: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.cycle.len();
        if len == 0 {
            return None;
        }
        // A plain `%` here: with the cursor's small quotient the division is as fast as `FastMod`
        // (measured), unlike Maglev's full 64-bit hashes.
        let start = (ctx.next_cursor() % len as u64) as usize;
        // The common case: the next turn is usable. Otherwise walk on through the cycle, which
        // keeps the weights' proportions among the remaining candidates.
        first_allowed_from(&self.cycle, start, skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letters(weights: &[u32]) -> String {
        cycle(weights).iter().map(|&i| (b'a' + i as u8) as char).collect()
    }

    #[test]
    fn nginx_interleaving() {
        assert_eq!(letters(&[5, 1, 1]), "aabacaa");
        assert_eq!(letters(&[1, 1, 1]), "abc");
        assert_eq!(letters(&[2, 1]), "aba");
        assert_eq!(letters(&[3, 3]), "ab", "weights are reduced by their gcd");
        assert_eq!(letters(&[4, 2, 1]), "abacaba");
    }

    #[test]
    fn webster_cycle_counts_are_exact_and_smooth() {
        let weights = [5u64, 1, 1];
        let c = webster_cycle(&weights, 7);
        assert_eq!(c, vec![0, 0, 0, 1, 2, 0, 0]);
        let weights: Vec<u64> = (1..=50).collect();
        let total = weights.iter().sum();
        let c = webster_cycle(&weights, total);
        for (i, &w) in weights.iter().enumerate() {
            assert_eq!(c.iter().filter(|&&x| x as usize == i).count() as u64, w);
        }
    }

    #[test]
    fn large_uneven_weights_use_the_heap_builder_and_stay_exact() {
        let weights: Vec<u32> = (0..1000).map(|i| 1 + (i * 7919) % 1000).collect();
        let c = cycle(&weights);
        let g = weights.iter().fold(0, |g, &w| gcd(g, u64::from(w)));
        let total: u64 = weights.iter().map(|&w| u64::from(w) / g).sum();
        assert!(total * 1000 > EXACT_BUILD_LIMIT);
        assert_eq!(c.len() as u64, total);
        let mut counts = vec![0u64; weights.len()];
        for &i in &c {
            counts[i as usize] += 1;
        }
        for (i, &w) in weights.iter().enumerate() {
            assert_eq!(counts[i], u64::from(w) / g);
        }
    }
}
