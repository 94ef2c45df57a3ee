//! Replays the same synthetic workload through every algorithm and prints the comparison table
//! (see `lb_core::sim`), the skewed-client workload through ip_hash with and without bounded
//! load, then Maglev's disruption on removal for N from 5 to 100.
//! `cargo bench -p lb-benches --bench simulation`.

use lb_core::selection::MaglevTable;
use lb_core::sim::{
    format_load_table, format_table, simulate_all, simulate_bounded_load, Workload,
};
use std::net::SocketAddr;

fn main() {
    // `cargo bench` passes filters and flags such as `--bench`; this harness has nothing to filter.
    let workload = Workload::default();
    println!(
        "Simulation: {} connections at {}/s, mean work {} s (Pareto, shape 1.5), {} clients, backend speeds {:?}\n",
        workload.connections,
        workload.arrival_rate,
        workload.mean_work,
        workload.clients,
        workload.backends.iter().map(|b| b.speed).collect::<Vec<_>>()
    );
    println!("{}", format_table(&simulate_all(&workload)));

    let skewed = Workload::skewed();
    println!(
        "Bounded load: skewed clients (Zipf exponent {}), {} equal backends, ip_hash with \
         hash_balance_factor off and on\n",
        skewed.client_skew,
        skewed.backends.len()
    );
    println!("{}", format_load_table(&simulate_bounded_load(&[0, 150, 125, 110])));

    println!("Maglev: fraction of keys that move when one of N equal backends is removed\n");
    println!("| N | moved | ideal 1/N | bound 2.5/N |\n|---|---|---|---|");
    for n in [5usize, 10, 20, 50, 100] {
        let backends: Vec<(SocketAddr, u32)> =
            (0..n).map(|i| (SocketAddr::from(([10, 1, 0, i as u8 + 1], 9000)), 1)).collect();
        let before = MaglevTable::build(&backends);
        // Average over removing each backend in turn.
        let mut moved = 0f64;
        for victim in 0..n {
            let mut rest = backends.clone();
            rest.remove(victim);
            let after = MaglevTable::build(&rest);
            let changed = (0..before.len() as u64)
                .filter(|&s| {
                    backends[before.lookup(s).unwrap()].0 != rest[after.lookup(s).unwrap()].0
                })
                .count();
            moved += changed as f64 / before.len() as f64;
        }
        moved /= n as f64;
        println!(
            "| {n} | {:.2}% | {:.2}% | {:.2}% |",
            moved * 100.0,
            100.0 / n as f64,
            250.0 / n as f64
        );
    }
}
