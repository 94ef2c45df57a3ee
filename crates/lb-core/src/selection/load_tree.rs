//! The least-connections index: a tournament tree over the candidates' loads, so that a pick
//! finds the least loaded candidate in `O(log n)` instead of scanning them all.
//!
//! # Keys
//!
//! A candidate's load is `(active + 1) / weight`, the ratio the scan compares by
//! cross-multiplication (`least_loaded_from`). The tree stores it as one integer,
//! `floor((active + 1) × 2^s / weight)`, with `2^s ≥ max_weight²`: two distinct ratios differ
//! by at least `1 / (w1 × w2) ≥ 2^-s`, so their scaled floors differ too, in the same order,
//! and equal ratios give equal keys. Comparing keys is therefore exactly comparing the ratios.
//! A candidate at its connection limit gets the key `INF`, so the tree never offers it. Keys
//! saturate just below `INF` at `2^(61 - s)` connections (2^33, over eight billion, with the
//! largest weights): beyond that the order is no longer exact.
//!
//! # Nodes
//!
//! Each node is one `AtomicU64`: the smallest key below it in the high 61 bits and, in the low
//! 3 bits, which of its 8 children holds it, the first one on a tie. A node's value is the
//! minimum of its children's `(key, child)` pairs, one integer comparison each; following the
//! child bits from any node leads to the first leaf with that node's smallest key. Groups of
//! 8 siblings are one cache line. At 10,000 candidates there are five levels above the leaves.
//!
//! # Updates without a lock
//!
//! Whoever changes a candidate's active count (a pick, a lease's drop, the writer installing a
//! new tree) then refreshes the path from its leaf up: at each level it recomputes the node
//! from its children, and if that differs from the node, stores it, recomputes again, and goes
//! on to the parent; it stops at the first node that needs no change. Every load and store is
//! sequentially consistent. The re-check after each store is what makes this correct with
//! many writers: an update that read its children, then was delayed, may overwrite a newer
//! value with an older one, but it re-reads the children right after and repairs it before
//! moving on. Hence:
//!
//! - **one thread**: after each pick and each release, every node is exact, and a pick
//!   returns exactly what the scan would;
//! - **quiescent**: once no update is in flight, every node is exact again (for each node, the
//!   last update of one of its children reads all of them afterwards);
//! - **racing**: a pick reads leaves that lag their counters by the updates of those
//!   backends still in flight, and inner nodes that an in-flight update may hold at an older
//!   value for the moment between its store and its repair. It may then choose a backend that
//!   is not the least loaded by the connections those racing updates are moving, as the scan
//!   does when picks race (two scans that read the same counters choose the same backend).

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;

use arc_swap::{ArcSwapOption, Guard};

use crate::counters::Counters;

/// Children per node: 8 `u64`s fill one cache line.
const FANOUT: usize = 8;
/// Bits of a node holding its best child.
const CHILD_BITS: u32 = FANOUT.trailing_zeros();
const CHILD_MASK: u64 = FANOUT as u64 - 1;
/// The key of a candidate that cannot be picked (at its limit), and of padding leaves.
const INF: u64 = u64::MAX >> CHILD_BITS;
/// Bits available for keys.
const KEY_BITS: u32 = u64::BITS - CHILD_BITS;

/// Trees are told apart by a process-wide number, so a slot can tell whether the tree it was
/// last placed in is still the one its pool uses (see `Slot::track`).
static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// Eight sibling nodes, one cache line.
#[derive(Debug)]
#[repr(align(64))]
struct Group([AtomicU64; FANOUT]);

impl Group {
    fn filled(value: u64) -> Group {
        Group(std::array::from_fn(|_| AtomicU64::new(value)))
    }

    /// The parent's value: the smallest `(key, child)`, so the first child on a tie.
    #[inline(always)]
    fn combine(&self) -> u64 {
        let mut best = u64::MAX;
        for (c, node) in self.0.iter().enumerate() {
            best = best.min((node.load(SeqCst) & !CHILD_MASK) | c as u64);
        }
        best
    }
}

/// A tournament tree over one snapshot's candidates (see the module docs).
#[derive(Debug)]
pub(crate) struct LoadTree {
    id: u32,
    /// `levels[0]` holds the leaves, candidate `i` at position `i`, padded with `INF`;
    /// node `p` of `levels[l + 1]` is the minimum of group `p` of `levels[l]`. The last level
    /// holds the root alone.
    levels: Box<[Box<[Group]>]>,
    weights: Box<[u32]>,
    /// `s` of the module docs.
    shift: u32,
    /// The largest `active + 1` whose key is exact.
    max_load: u64,
    /// The per-backend connection limit (`u64::MAX` for none).
    limit: u64,
}

impl LoadTree {
    /// The tree of candidates with these weights and active counts (read once, here).
    pub(crate) fn new(weights: Vec<u32>, active: impl Iterator<Item = u64>, limit: u64) -> Self {
        let n = weights.len();
        let max_weight = weights.iter().copied().max().unwrap_or(1).max(1);
        // 2^shift >= max_weight^2; weights are at most 10,000 (1,000 scaled by slow start), so
        // this is at most 28, and the cap only keeps absurd weights from overflowing.
        let shift = (2 * (u32::BITS - (max_weight - 1).leading_zeros())).min(KEY_BITS - 8);
        let max_load = (1u64 << (KEY_BITS - shift)) - 2;
        let mut tree = LoadTree {
            id: NEXT_ID.fetch_add(1, Relaxed),
            levels: Box::new([]),
            weights: weights.into_boxed_slice(),
            shift,
            max_load,
            limit,
        };
        let mut leaves: Vec<u64> = active.enumerate().map(|(i, a)| tree.leaf(i, a)).collect();
        leaves.resize(n.max(1), INF << CHILD_BITS);
        let mut levels = Vec::new();
        let mut values = leaves;
        loop {
            let groups: Vec<Group> = values
                .chunks(FANOUT)
                .map(|chunk| {
                    let group = Group::filled(INF << CHILD_BITS);
                    for (node, &v) in group.0.iter().zip(chunk) {
                        node.store(v, Relaxed);
                    }
                    group
                })
                .collect();
            levels.push(groups.into_boxed_slice());
            if values.len() == 1 {
                break;
            }
            values = levels[levels.len() - 1].iter().map(Group::combine).collect();
        }
        tree.levels = levels.into_boxed_slice();
        tree
    }

    /// This tree's number, for `Slot::track`.
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// Number of candidates.
    pub(crate) fn len(&self) -> usize {
        self.weights.len()
    }

    #[inline(always)]
    fn node(&self, level: usize, p: usize) -> &AtomicU64 {
        &self.levels[level][p / FANOUT].0[p % FANOUT]
    }

    /// The leaf value of candidate `i` with `active` connections.
    #[inline(always)]
    fn leaf(&self, i: usize, active: u64) -> u64 {
        if active >= self.limit {
            return INF << CHILD_BITS;
        }
        let load = (active + 1).min(self.max_load);
        ((load << self.shift) / u64::from(self.weights[i])) << CHILD_BITS
    }

    /// Brings candidate `i`'s leaf and the path above it up to date with `counters` (candidate
    /// `i`'s), after they changed; see the module docs for why this is safe to run from many
    /// threads at once.
    #[inline]
    pub(crate) fn refresh(&self, i: usize, counters: &Counters) {
        if i >= self.len() {
            return;
        }
        let leaf = self.node(0, i);
        let mut wrote = false;
        loop {
            let value = self.leaf(i, counters.active_seq_cst());
            if leaf.load(SeqCst) == value {
                break;
            }
            leaf.store(value, SeqCst);
            wrote = true;
        }
        let mut p = i;
        for level in 1..self.levels.len() {
            if !wrote {
                return;
            }
            let group = &self.levels[level - 1][p / FANOUT];
            p /= FANOUT;
            let node = self.node(level, p);
            wrote = false;
            loop {
                let value = group.combine();
                if node.load(SeqCst) == value {
                    break;
                }
                node.store(value, SeqCst);
                wrote = true;
            }
        }
    }

    /// The first leaf under node `p` of `level` with that node's smallest key.
    #[inline(always)]
    fn descend(&self, mut level: usize, mut p: usize) -> usize {
        while level > 0 {
            let child = (self.node(level, p).load(SeqCst) & CHILD_MASK) as usize;
            p = p * FANOUT + child;
            level -= 1;
        }
        p
    }

    /// The first leaf at or after `start` whose key is `key`: the leaves left of `start`'s
    /// group, then the siblings to the right at each level up, descending into the first
    /// match.
    #[inline(always)]
    fn first_at_or_after(&self, start: usize, key: u64) -> Option<usize> {
        let top = self.levels.len() - 1;
        // `q`: the node of `level` whose subtree holds `start`.
        let mut q = start;
        for level in 0..top {
            let group = &self.levels[level][q / FANOUT];
            let first = q / FANOUT * FANOUT;
            // At the leaves `start` itself counts; above, its ancestor's subtree is done.
            let from = q % FANOUT + usize::from(level > 0);
            for c in from..FANOUT {
                if group.0[c].load(SeqCst) >> CHILD_BITS == key {
                    return Some(self.descend(level, first + c));
                }
            }
            q /= FANOUT;
        }
        None
    }

    /// The candidate the scan from `start` would choose among those `skip` allows: the
    /// smallest key, the first at or after `start` (wrapping) on a tie.
    #[inline]
    pub(crate) fn pick(&self, start: usize, skip: impl Fn(usize) -> bool) -> Option<usize> {
        let top = self.levels.len() - 1;
        let key = self.node(top, 0).load(SeqCst) >> CHILD_BITS;
        if key == INF {
            return None;
        }
        // The usual case: the first leaf with the smallest key from `start` on (or from the
        // beginning) is allowed, and then it is the answer.
        let i = self.first_at_or_after(start, key).unwrap_or_else(|| self.descend(top, 0));
        if i < self.len() && !skip(i) {
            return Some(i);
        }
        self.pick_skipping(start, &skip)
    }

    /// [`pick`](Self::pick) when its first answer is skipped (excluded, or at the limit by a
    /// count the tree has not seen yet): the best allowed leaf in `[start, n)`, else in
    /// `[0, start)`, searching down only where a subtree's own best is skipped.
    #[cold]
    fn pick_skipping(&self, start: usize, skip: &dyn Fn(usize) -> bool) -> Option<usize> {
        let top = self.levels.len() - 1;
        let after = self.best_in(top, 0, start, self.len(), skip);
        let before = self.best_in(top, 0, 0, start, skip);
        match (after, before) {
            (Some((ka, a)), Some((kb, b))) => Some(if kb < ka { b } else { a }),
            (a, b) => a.or(b).map(|(_, i)| i),
        }
    }

    /// The best allowed leaf in `[lo, hi)` under node `p` of `level`, with its key.
    fn best_in(
        &self,
        level: usize,
        p: usize,
        lo: usize,
        hi: usize,
        skip: &dyn Fn(usize) -> bool,
    ) -> Option<(u64, usize)> {
        let span = FANOUT.pow(level as u32);
        let (first, end) = (p * span, (p + 1) * span);
        if end <= lo || first >= hi || self.node(level, p).load(SeqCst) >> CHILD_BITS == INF {
            return None;
        }
        if lo <= first && end <= hi {
            let i = self.descend(level, p);
            if i < self.len() && !skip(i) {
                return Some((self.node(0, i).load(SeqCst) >> CHILD_BITS, i));
            }
        }
        if level == 0 {
            return None;
        }
        let mut best: Option<(u64, usize)> = None;
        for c in 0..FANOUT {
            if let Some((k, i)) = self.best_in(level - 1, p * FANOUT + c, lo, hi, skip) {
                if best.is_none_or(|(bk, _)| k < bk) {
                    best = Some((k, i));
                }
            }
        }
        best
    }

    /// Whether every node is what its children (and each leaf what its counters) make it:
    /// true whenever no update is in flight.
    #[cfg(test)]
    pub(crate) fn is_exact(&self, counters: &[&Counters]) -> bool {
        let leaves_ok = counters
            .iter()
            .enumerate()
            .all(|(i, c)| self.node(0, i).load(SeqCst) == self.leaf(i, c.active_seq_cst()));
        let nodes_ok = (1..self.levels.len()).all(|level| {
            self.levels[level - 1]
                .iter()
                .enumerate()
                .all(|(p, group)| self.node(level, p).load(SeqCst) == group.combine())
        });
        leaves_ok && nodes_ok
    }
}

/// A pool's current least-connections tree, shared by the pool and its backends' slots, so
/// that a lease's drop finds the tree to update; empty while the pool uses no tree.
#[derive(Debug, Default)]
pub(crate) struct CurrentTree(ArcSwapOption<LoadTree>);

impl CurrentTree {
    /// The current tree, if any.
    #[inline]
    pub(crate) fn load(&self) -> Guard<Option<Arc<LoadTree>>> {
        self.0.load()
    }

    /// Makes `tree` current (or none). The writer then places the slots (`Slot::place`, with
    /// `Release`: a slot seen in the new tree means the new tree is seen here), issues a
    /// sequentially consistent fence and refreshes every leaf: a count that changed after the
    /// tree was built is then either seen by that refresh or refreshed by its changer, who
    /// reads the slot's new place (the counts change and the places are read sequentially
    /// consistently).
    pub(crate) fn install(&self, tree: Option<Arc<LoadTree>>) {
        self.0.store(tree);
    }
}

impl LoadTree {
    /// The tag of leaf `i` (see `Slot::track`).
    pub(crate) fn tag(&self, i: usize) -> u64 {
        (u64::from(self.id) << 32) | (i as u64 + 1)
    }
}
