//! A fixed number of picks (each lease dropped at once) from the pick bench's pool, for
//! instruction counts that load on the machine does not change:
//! `valgrind --tool=callgrind target/release/examples/pick_loop ALGORITHM BACKENDS PICKS`.
//! The difference between two runs with different `PICKS`, divided by the difference in
//! picks, is the cost of one pick and drop without the pool's construction.

use lb_benches::{client, pool, POOLS};
use std::hint::black_box;

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "round_robin".into());
    let n: usize = args.next().map_or(3, |s| s.parse().expect("a backend count"));
    let picks: u64 = args.next().map_or(100_000, |s| s.parse().expect("a pick count"));
    let &(_, algorithm, factor) =
        POOLS.iter().find(|(pool, ..)| *pool == name).expect("a pool of lb_benches::POOLS");
    let pool = pool(algorithm, factor, n);
    for i in 0..picks {
        black_box(pool.pick(client(i), &[]).ok());
    }
}
