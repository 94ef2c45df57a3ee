//! The pool on its own, without networking: `cargo run -p lb-core --example pick`.
//!
//! Adds three weighted backends, sends clients to them, drains one, records failed connects,
//! and prints the stats, with one column per counter of the counter table.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use lb_core::{AdminState, Algorithm, BackendStats, Pool, PoolConfig};

/// Client `i`'s address, in 198.18.0.0/15 (the range set aside for benchmarks).
fn client(i: u32) -> Option<IpAddr> {
    Some(IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i)))
}

/// Opens and closes `n` connections, one per client, and says where they went.
fn connect_clients(pool: &Pool, n: u32) -> Result<(), lb_core::Error> {
    let mut per_backend: Vec<(SocketAddr, u32)> = Vec::new();
    for i in 0..n {
        let lease = pool.pick(client(i), &[])?;
        lease.record_connected();
        lease.record_bytes_in(100);
        lease.record_bytes_out(1_000);
        match per_backend.iter_mut().find(|(addr, _)| *addr == lease.addr()) {
            Some((_, count)) => *count += 1,
            None => per_backend.push((lease.addr(), 1)),
        }
        // Dropping the lease ends the connection's accounting.
    }
    for (addr, count) in per_backend {
        let weight = pool.get(addr).map_or(0, |b| b.weight);
        println!("  {addr} (weight {weight}): {count} connections");
    }
    Ok(())
}

fn main() -> Result<(), lb_core::Error> {
    let pool = Pool::new(PoolConfig { algorithm: Algorithm::RoundRobin, ..Default::default() })?;
    let [a, b, c]: [SocketAddr; 3] = [1, 2, 3].map(|i| SocketAddr::from(([10, 0, 0, i], 80)));
    pool.add(a, Some(3))?;
    pool.add(b, Some(2))?;
    pool.add(c, None)?; // weight 1

    println!("600 clients, weights 3:2:1");
    connect_clients(&pool, 600)?;

    println!("{a} drains: no new connections, so 300 clients split 2:1");
    pool.set_admin_state(a, AdminState::Drain)?;
    connect_clients(&pool, 300)?;

    // 10.0.0.2 stops answering. Each failed connect counts against its health and is retried
    // on another backend; the third failure in a row (the default `fall`) takes it down.
    println!("{b} refuses connections");
    for i in 0..10 {
        let lease = pool.pick(client(i), &[])?;
        if lease.addr() != b {
            lease.record_connected();
            continue;
        }
        let transition = lease.record_connect_failure("connection refused", Instant::now());
        if let Some(transition) = transition {
            println!("  {transition}");
        }
        lease.record_retried();
        pool.pick(client(i), &[lease.id()])?.record_connected();
    }

    let stats = pool.stats();
    print!("\n{:<12} {:>6} {:>6}", "backend", "state", "weight");
    for counter in BackendStats::COUNTERS {
        print!(" {:>9}", counter.json);
    }
    for backend in &stats.backends {
        print!("\n{:<12} {:>6} {:>6}", backend.addr, backend.state(), backend.weight);
        for (_, value) in backend.counters() {
            print!(" {value:>9}");
        }
    }
    let t = &stats.totals;
    println!("\n{} backends, {} available, {} connections", t.backends, t.available, t.connections);
    Ok(())
}
