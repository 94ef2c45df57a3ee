//! Weighted random, by Walker's alias method: O(1) per pick whatever the number of backends.
//!
//! The table is built with exact integer arithmetic (Vose's construction), so each candidate's
//! probability is exactly `weight / total`, with no floating-point rounding.

use fastrand::Rng;

use super::{PickCtx, Select};
use crate::slot::Candidate;

/// Random draws a pick tries (single draws here, pairs in `p2c`) before falling back to an
/// exact scan of the candidates not skipped. With few candidates skipped the first draw almost
/// always does; with most skipped, draws keep missing and the scan bounds the cost.
pub(super) const DRAWS: usize = 4;

#[derive(Debug)]
pub(crate) struct WeightedRandom {
    buckets: Box<[Bucket]>,
    /// Sum of the weights: each bucket holds `total` units of probability mass.
    total: u64,
}

/// One bucket of the alias table, both halves together so that a draw reads one cache line:
/// with a thousand backends the draws of a busy pool land all over the table.
#[derive(Debug, Clone, Copy)]
#[repr(align(16))]
struct Bucket {
    /// Keep the bucket's own candidate when a draw in `0..total` is below this.
    threshold: u64,
    /// The candidate taken otherwise.
    alias: u32,
}

impl WeightedRandom {
    /// One candidate's index, drawn with probability `weight / total`.
    #[inline]
    pub(crate) fn draw(&self, rng: &mut Rng) -> usize {
        let index = rng.usize(..self.buckets.len());
        let bucket = self.buckets[index];
        if rng.u64(..self.total) < bucket.threshold {
            index
        } else {
            bucket.alias as usize
        }
    }
}

impl Select for WeightedRandom {
    fn build(candidates: &[Candidate]) -> Self {
        let n = candidates.len() as u64;
        let total: u64 = candidates.iter().map(|c| u64::from(c.weight)).sum();
        // Each candidate's mass, scaled so that every bucket holds exactly `total`.
        let mut mass: Vec<u64> = candidates.iter().map(|c| u64::from(c.weight) * n).collect();
        let mut threshold = vec![total; candidates.len()];
        let mut alias: Vec<u32> = (0..candidates.len() as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..candidates.len()).partition(|&i| mass[i] < total);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            threshold[s] = mass[s];
            alias[s] = l as u32;
            mass[l] -= total - mass[s];
            if mass[l] < total {
                large.pop();
                small.push(l);
            }
        }
        // Whatever is left holds exactly `total` (integer arithmetic leaves no rounding).
        let buckets =
            threshold.into_iter().zip(alias).map(|(threshold, alias)| Bucket { threshold, alias });
        WeightedRandom { buckets: buckets.collect(), total: total.max(1) }
    }

    #[inline(always)] // see `Selector::pick`
    fn pick(&self, ctx: &mut PickCtx<'_>, skip: impl Fn(usize) -> bool) -> Option<usize> {
        let candidates = ctx.candidates;
        let rng = ctx.rng();
        for _ in 0..DRAWS {
            let i = self.draw(rng);
            if !skip(i) {
                return Some(i);
            }
        }
        // Many candidates are skipped: draw exactly among the rest.
        let allowed = |i: &usize| !skip(*i);
        let total: u64 =
            (0..candidates.len()).filter(allowed).map(|i| u64::from(candidates[i].weight)).sum();
        if total == 0 {
            return None;
        }
        let mut point = rng.u64(..total);
        (0..candidates.len()).filter(allowed).find(|&i| {
            let w = u64::from(candidates[i].weight);
            if point < w {
                true
            } else {
                point -= w;
                false
            }
        })
    }
}
