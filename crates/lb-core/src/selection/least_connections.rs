//! Least connections: the candidate with the fewest active connections per unit of weight.
//!
//! Each pick scans all candidates' active counters (one relaxed atomic load each). The scan
//! starts at a rotating offset so that ties (an idle pool, equal loads) go to each backend in
//! turn instead of always to the first one.

use super::{least_loaded_from, PickCtx, Select};
use crate::slot::Candidate;

#[derive(Debug)]
pub(crate) struct LeastConnections;

impl Select for LeastConnections {
    fn build(_candidates: &[Candidate]) -> Self {
        LeastConnections
    }

    #[inline]
    fn pick(&self, ctx: &mut PickCtx<'_>, skip: impl Fn(usize) -> bool) -> Option<usize> {
        let start = (ctx.next_cursor() % ctx.candidates.len() as u64) as usize;
        least_loaded_from(ctx.candidates, start, skip)
    }
}
