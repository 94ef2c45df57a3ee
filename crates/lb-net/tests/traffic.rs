//! Traffic management wired into the balancer: backups taking over and handing back over real
//! sockets, slow-start ramps driven by the balancer's own task, `what-if` and `explain`
//! through the command grammar.

mod support;

use std::time::Duration;

use lb_core::{Algorithm, Pool, PoolConfig};
use lb_net::{Balancer, HealthCheckConfig, MemoryConnector, ProxyConfig, TcpConnector};
use support::*;

const LIMIT: Duration = Duration::from_secs(10);

fn fast_checks() -> HealthCheckConfig {
    HealthCheckConfig {
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
        ..HealthCheckConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_serve_while_every_primary_is_down_and_hand_back_when_one_returns() {
    let (p1, p1_task) = tcp_named_backend("p1").await;
    let (p2, p2_task) = tcp_named_backend("p2").await;
    let (b, _b_task) = tcp_named_backend("b").await;
    let config = PoolConfig {
        health: lb_core::HealthConfig { rise: 1, fall: 1, ..Default::default() },
        ..PoolConfig::default()
    };
    let pool = Pool::new(config).unwrap();
    pool.add(p1, None).unwrap();
    pool.add(p2, None).unwrap();
    let backup = lb_core::AddOptions { backup: true, ..Default::default() };
    pool.add_backend(b, backup, None).unwrap();
    let balancer = Balancer::new(pool, TcpConnector, ProxyConfig::default(), fast_checks());
    let handle = balancer.handle();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lb = listener.local_addr().unwrap();
    let task = tokio::spawn(balancer.run(listener, std::future::pending()));

    // Primaries only.
    for _ in 0..6 {
        let (_s, name) = tcp_greeting(lb).await.unwrap();
        assert_ne!(name, "b");
    }
    assert!(!handle.stats().pool().backup_active);

    // Every primary killed: once the checks (or traffic) take them down, the backup takes
    // every new connection. No client fails meanwhile: a refused connect is retried on
    // another backend.
    let p1_held = kill_backend(p1, p1_task).await;
    let _p2_held = kill_backend(p2, p2_task).await;
    eventually(LIMIT, "the backup active", || async { handle.stats().pool().backup_active }).await;
    for _ in 0..6 {
        let (_s, name) = tcp_greeting(lb).await.unwrap();
        assert_eq!(name, "b");
    }
    let json = handle.stats();
    assert!(json.pool().backends.iter().find(|s| s.addr == b).unwrap().backup);
    // `health` marks the backup, and only it.
    let health = handle.execute("health").await.unwrap().to_string();
    let marked: Vec<&str> = health.lines().filter(|l| l.ends_with("(backup)")).collect();
    assert_eq!(marked.len(), 1, "{health}");
    assert!(marked[0].starts_with(&b.to_string()), "{health}");

    // One primary back: new connections leave the backup.
    let _p1_again = revive_named_backend(p1_held, "p1");
    eventually(LIMIT, "the primary back", || async { !handle.stats().pool().backup_active }).await;
    for _ in 0..6 {
        let (_s, name) = tcp_greeting(lb).await.unwrap();
        assert_eq!(name, "p1");
    }
    let _ = p2;
    stop(handle, task).await;
}

/// Shares of `picks` picks (held, as open connections are) per backend address.
fn spread(pool: &Pool, picks: usize) -> Vec<usize> {
    let backends = pool.backends();
    let mut held = Vec::new();
    let mut counts = vec![0; backends.len()];
    for _ in 0..picks {
        let lease = pool.pick(None, &[]).unwrap();
        let at = backends.iter().position(|b| b.addr == lease.addr()).unwrap();
        counts[at] += 1;
        held.push(lease);
    }
    counts
}

#[tokio::test(start_paused = true)]
async fn an_enabled_backend_ramps_up_over_the_slow_start_window() {
    let config = PoolConfig {
        algorithm: Algorithm::RoundRobin,
        slow_start: Some(Duration::from_secs(10)),
        ..PoolConfig::default()
    };
    let pool = Pool::new(config).unwrap();
    pool.add(mem_addr(1), None).unwrap();
    pool.add(mem_addr(2), None).unwrap();
    let checks_off = HealthCheckConfig { enabled: false, ..HealthCheckConfig::default() };
    let balancer =
        Balancer::new(pool.clone(), MemoryConnector::new(), ProxyConfig::default(), checks_off);
    let handle = balancer.handle();
    let task = tokio::spawn(balancer.supervise(std::future::pending()));

    // Present from the start: full weight at once, an even split.
    assert_eq!(spread(&pool, 100), [50, 50]);
    handle.execute(&format!("maint {}", mem_addr(2))).await.unwrap();
    handle.execute(&format!("enable {}", mem_addr(2))).await.unwrap();
    let ramp = |pool: &Pool| pool.stats().backends[1].ramp_percent;
    assert_eq!(ramp(&pool), Some(10));
    let early = spread(&pool, 110);
    assert_eq!(early, [100, 10], "at 10% of its weight");

    // The balancer's own task steps the ramp as time passes: half the window, half the
    // weight (a tenth per tenth of the window).
    tokio::time::sleep(Duration::from_millis(5_050)).await;
    assert_eq!(ramp(&pool), Some(50));
    let middle = spread(&pool, 150);
    assert_eq!(middle, [100, 50], "at 50%");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(ramp(&pool), None);
    assert_eq!(spread(&pool, 100), [50, 50], "full weight once the window has passed");
    handle.shutdown();
    task.await.unwrap();
}

/// A balancer over in-memory backends `b1..=bn` at `mem_addr(i)`, no checks.
fn memory_balancer(algorithm: Algorithm, n: u8) -> (Balancer<MemoryConnector>, MemoryConnector) {
    let pool = Pool::new(PoolConfig { algorithm, ..PoolConfig::default() }).unwrap();
    let connector = MemoryConnector::new();
    for i in 1..=n {
        pool.add(mem_addr(i), None).unwrap();
        named_memory_backend(&connector, mem_addr(i), &format!("b{i}"));
    }
    let checks_off = HealthCheckConfig { enabled: false, ..HealthCheckConfig::default() };
    let balancer = Balancer::new(pool, connector.clone(), ProxyConfig::default(), checks_off);
    (balancer, connector)
}

fn client_ip(i: u32) -> std::net::IpAddr {
    std::net::IpAddr::from([198, 18, (i >> 8) as u8, i as u8])
}

async fn explain(handle: &lb_net::Handle, ip: std::net::IpAddr) -> lb_net::ExplainReply {
    match handle.execute(&format!("explain {ip}")).await.unwrap() {
        lb_net::Reply::Explain(e) => *e,
        other => panic!("not an explain answer: {other}"),
    }
}

#[tokio::test]
async fn what_if_remove_moves_the_clients_an_actual_remove_then_moves() {
    let (balancer, _connector) = memory_balancer(Algorithm::IpHash, 5);
    let handle = balancer.handle();
    const CLIENTS: u32 = 4000;
    let mut before = Vec::new();
    for i in 0..CLIENTS {
        before.push(explain(&handle, client_ip(i)).await.explain.chosen_addr().unwrap());
    }
    let gone = mem_addr(3);
    let answer = handle.execute(&format!("what-if remove {gone}")).await.unwrap();
    let text = answer.to_string();
    let lb_net::Reply::WhatIf(w) = answer else { panic!("{text}") };
    assert!(text.contains("ip_hash clients that would change backend: "), "{text}");
    assert!(text.contains(&format!("of {} keys, exact)", w.what_if.key_space)), "{text}");
    // Nothing changed: the pool is as it was.
    assert_eq!(handle.pool().backends().len(), 5);

    handle.execute(&format!("remove {gone}")).await.unwrap();
    let mut moved = 0;
    for (i, was) in before.iter().enumerate() {
        let now = explain(&handle, client_ip(i as u32)).await.explain.chosen_addr().unwrap();
        // Every client of the removed backend moves.
        assert!(*was != gone || now != gone, "client {i} still on the removed backend");
        moved += u32::from(now != *was);
    }
    let sampled = f64::from(moved) / f64::from(CLIENTS);
    let exact = w.what_if.moved_share();
    assert!((sampled - exact).abs() < 0.03, "sampled {sampled}, what-if said {exact}\n{text}");
}

#[tokio::test]
async fn explain_names_the_next_real_pick() {
    for algorithm in [Algorithm::IpHash, Algorithm::RoundRobin, Algorithm::LeastConnections] {
        let (balancer, _connector) = memory_balancer(algorithm, 3);
        let handle = balancer.handle();
        let mut held = Vec::new();
        for i in 0..12 {
            let ip = client_ip(i % 4);
            let said = explain(&handle, ip).await;
            let chosen = said.explain.chosen_addr().unwrap();
            let expected = format!("b{}", chosen.ip().to_string().rsplit('.').next().unwrap());
            // A second explain changes nothing: the same answer.
            assert_eq!(explain(&handle, ip).await.explain.chosen_addr(), Some(chosen));
            let (mut stream, theirs) = memory_client();
            balancer.serve_connection(theirs, Some(std::net::SocketAddr::new(ip, 40_000)));
            let name = read_line(&mut stream).await.unwrap();
            assert_eq!(name, expected, "{algorithm}, connection {i}:\n{said}");
            // Held open, so least_connections sees the load.
            held.push(stream);
        }
        let text = explain(&handle, client_ip(0)).await.to_string();
        assert!(text.contains(&format!("algorithm {algorithm}")), "{text}");
    }
}
