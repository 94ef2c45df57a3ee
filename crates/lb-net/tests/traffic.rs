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
    p1_task.abort();
    p2_task.abort();
    eventually(LIMIT, "the backup active", || async { handle.stats().pool().backup_active }).await;
    for _ in 0..6 {
        let (_s, name) = tcp_greeting(lb).await.unwrap();
        assert_eq!(name, "b");
    }
    let json = handle.stats();
    assert!(json.pool().backends.iter().find(|s| s.addr == b).unwrap().backup);

    // One primary back: new connections leave the backup.
    let _p1_again = tcp_named_backend_at(p1, "p1").await;
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
