//! Least connections: the candidate with the fewest active connections per unit of weight,
//! counting the connection about to be placed; ties go to the first candidate at or after a
//! rotating start, so an idle pool hands each backend its turn.
//!
//! Small pools scan every candidate's counters (`least_loaded_from`), which is cheapest there.
//! From [`TREE_FROM`] candidates on, the selector keeps a [`LoadTree`] over their loads, which
//! picks and lease drops update, and a pick walks it in `O(log n)`; it answers exactly what
//! the scan would (a property test replays random pools, weights, limits, exclusions, picks
//! and releases through both).

use std::sync::Arc;

use super::load_tree::LoadTree;
use super::{least_loaded_from, PickCtx, Select};
use crate::slot::Candidate;

/// Candidates from which the tree pays for its upkeep (one more path refresh per pick and per
/// release) against the scan; measured in docs/performance.md.
pub(crate) const TREE_FROM: usize = 32;

#[derive(Debug)]
pub(crate) enum LeastConnections {
    /// Scan the candidates on each pick.
    Scan,
    /// Walk the tree; the pool points the candidates' slots at it so releases update it.
    Tree(Arc<LoadTree>),
}

impl LeastConnections {
    /// The selector for `candidates` with a per-backend connection `limit` (`u64::MAX` for
    /// none), which the tree needs to rank a full backend last.
    pub(crate) fn new(candidates: &[Candidate], limit: u64) -> Self {
        if candidates.len() < TREE_FROM {
            return LeastConnections::Scan;
        }
        LeastConnections::Tree(Arc::new(tree_of(candidates, limit)))
    }

    /// The tree, if this selector keeps one.
    pub(crate) fn tree(&self) -> Option<&Arc<LoadTree>> {
        match self {
            LeastConnections::Scan => None,
            LeastConnections::Tree(tree) => Some(tree),
        }
    }
}

/// The tree over `candidates`, whatever their number.
pub(crate) fn tree_of(candidates: &[Candidate], limit: u64) -> LoadTree {
    let weights = candidates.iter().map(|c| c.weight).collect();
    LoadTree::new(weights, candidates.iter().map(Candidate::active), limit)
}

impl Select for LeastConnections {
    fn build(candidates: &[Candidate]) -> Self {
        LeastConnections::new(candidates, u64::MAX)
    }

    #[inline]
    fn pick(&self, ctx: &mut PickCtx<'_>, skip: impl Fn(usize) -> bool) -> Option<usize> {
        let start = (ctx.next_cursor() % ctx.candidates.len() as u64) as usize;
        match self {
            LeastConnections::Scan => least_loaded_from(ctx.candidates, start, skip),
            LeastConnections::Tree(tree) => tree.pick(start, skip),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::backend::BackendId;

    /// One step of a replay: a pick from `start` with some candidates excluded, or the release
    /// of the `k`-th lease held (modulo the number held).
    #[derive(Debug, Clone)]
    enum Step {
        Pick { start: usize, exclude: Vec<usize> },
        Release(usize),
    }

    fn step(n: usize) -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0..n, prop::collection::vec(0..n, 0..3))
                .prop_map(|(start, exclude)| Step::Pick { start, exclude }),
            2 => any::<usize>().prop_map(Step::Release),
        ]
    }

    /// A pool's weights (a few distinct ones, or any up to 10,000 as slow start makes them),
    /// starting loads, an optional limit, and a replay.
    fn case() -> impl Strategy<Value = (Vec<u32>, Vec<u64>, Option<u64>, Vec<Step>)> {
        (1usize..200).prop_flat_map(|n| {
            let weight = prop_oneof![1u32..5, 1u32..=10_000, Just(1u32)];
            (
                prop::collection::vec(weight, n),
                prop::collection::vec(0u64..4, n),
                prop::option::of(1u64..6),
                prop::collection::vec(step(n), 1..300),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// The tree against the scan it replaces: same answer at every pick, through picks
        /// (counted on the chosen backend, as `Snapshot::pick` does) and releases, with
        /// exclusions and connection limits, and an exact tree after every step.
        #[test]
        fn the_tree_picks_exactly_what_the_scan_picks((weights, loads, limit, steps) in case()) {
            let candidates: Vec<Candidate> = weights
                .iter()
                .zip(&loads)
                .enumerate()
                .map(|(i, (&w, &a))| Candidate::for_test(i as u16, w, a))
                .collect();
            let limit = limit.unwrap_or(u64::MAX);
            let tree = tree_of(&candidates, limit);
            let counters: Vec<_> = candidates.iter().map(|c| &c.slot.counters).collect();
            let mut held: Vec<usize> = Vec::new();
            for step in steps {
                match step {
                    Step::Pick { start, exclude } => {
                        let excluded: Vec<BackendId> =
                            exclude.iter().map(|&i| candidates[i].slot.backend.id).collect();
                        let skip = |i: usize| {
                            let c = &candidates[i];
                            excluded.contains(&c.slot.backend.id) || c.active() >= limit
                        };
                        let expected = least_loaded_from(&candidates, start, skip);
                        prop_assert_eq!(tree.pick(start, skip), expected, "start {}", start);
                        if let Some(i) = expected {
                            prop_assert!(candidates[i].slot.counters.try_acquire(limit));
                            tree.refresh(i, &candidates[i].slot.counters);
                            held.push(i);
                        }
                    }
                    Step::Release(k) if !held.is_empty() => {
                        let i = held.swap_remove(k % held.len());
                        candidates[i].slot.counters.release();
                        tree.refresh(i, &candidates[i].slot.counters);
                    }
                    Step::Release(_) => {}
                }
                prop_assert!(tree.is_exact(&counters));
            }
        }
    }

    #[test]
    fn ties_rotate_through_the_tree_as_through_the_scan() {
        // 100 idle equal backends: each start gets its own backend, in order.
        let candidates: Vec<Candidate> = (0..100).map(|i| Candidate::for_test(i, 1, 0)).collect();
        let tree = tree_of(&candidates, u64::MAX);
        for start in 0..100 {
            assert_eq!(tree.pick(start, |_| false), Some(start));
        }
        // Heavier backends win an idle pool: `(0 + 1) / 3` beats `(0 + 1) / 1`.
        let weighted: Vec<Candidate> =
            (0..100).map(|i| Candidate::for_test(i, if i % 10 == 9 { 3 } else { 1 }, 0)).collect();
        let tree = tree_of(&weighted, u64::MAX);
        assert_eq!(tree.pick(0, |_| false), Some(9));
        assert_eq!(tree.pick(10, |_| false), Some(19));
        assert_eq!(tree.pick(95, |_| false), Some(99));
        assert_eq!(tree.pick(99, |_| false), Some(99));
    }

    #[test]
    fn concurrent_picks_and_releases_leave_an_exact_tree() {
        const THREADS: usize = 3;
        const ROUNDS: usize = 20_000;
        let candidates: Vec<Candidate> =
            (0..300).map(|i| Candidate::for_test(i, 1 + u32::from(i % 4), 0)).collect();
        let tree = tree_of(&candidates, 3);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (tree, candidates) = (&tree, &candidates);
                s.spawn(move || {
                    let mut held = Vec::new();
                    for r in 0..ROUNDS {
                        let start = (r * 7 + t * 101) % candidates.len();
                        let skip = |i: usize| candidates[i].active() >= 3;
                        if let Some(i) = tree.pick(start, skip) {
                            if candidates[i].slot.counters.try_acquire(3) {
                                tree.refresh(i, &candidates[i].slot.counters);
                                held.push(i);
                            }
                        }
                        if r % 3 == 0 {
                            for i in held.drain(..) {
                                candidates[i].slot.counters.release();
                                tree.refresh(i, &candidates[i].slot.counters);
                            }
                        }
                    }
                    for i in held {
                        candidates[i].slot.counters.release();
                        tree.refresh(i, &candidates[i].slot.counters);
                    }
                });
            }
        });
        let counters: Vec<_> = candidates.iter().map(|c| &c.slot.counters).collect();
        assert!(tree.is_exact(&counters));
        assert!(candidates.iter().all(|c| c.active() == 0));
    }
}
