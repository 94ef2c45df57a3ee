//! Power of two random choices: draw two candidates at random and take the one with fewer
//! active connections per unit of weight.
//!
//! Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing" (2001): comparing
//! just two random choices brings the maximum load down exponentially compared with one random
//! choice, at a constant cost per pick, which is why large fleets (and tower's `p2c`) use it
//! instead of a full least-connections scan.
//!
//! The two candidates are drawn by weight (the same alias table as `random`), not uniformly:
//! with uniform draws a backend is in the pair with probability about 2/N, which caps its
//! share of connections there whatever its weight (weights 5, 1, 1 could never get 5/7).

use super::random::{WeightedRandom, DRAWS};
use super::{least_loaded_from, less_loaded, PickCtx, Select};
use crate::slot::Candidate;

#[derive(Debug)]
pub(crate) struct P2c {
    draw: WeightedRandom,
}

impl Select for P2c {
    fn build(candidates: &[Candidate]) -> Self {
        P2c { draw: WeightedRandom::build(candidates) }
    }

    #[inline(always)] // see `Selector::pick`
    fn pick(&self, ctx: &mut PickCtx<'_>, skip: impl Fn(usize) -> bool) -> Option<usize> {
        let candidates = ctx.candidates;
        let n = candidates.len();
        let rng = ctx.rng();
        for _ in 0..DRAWS {
            let a = self.draw.draw(rng);
            let mut b = self.draw.draw(rng);
            // A heavy backend may be drawn twice; one more draw usually gives a real pair, and
            // if not, the heavy backend is the right answer anyway.
            if b == a && n > 1 {
                b = self.draw.draw(rng);
            }
            match (skip(a), skip(b)) {
                (false, false) => {
                    return Some(if less_loaded(&candidates[b], &candidates[a]) { b } else { a });
                }
                (false, true) => return Some(a),
                (true, false) => return Some(b),
                (true, true) => {}
            }
        }
        // Most candidates are skipped: fall back to the exact answer among those left.
        least_loaded_from(candidates, rng.usize(..n), skip)
    }
}
