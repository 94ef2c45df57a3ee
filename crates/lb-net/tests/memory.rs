//! The proxy's logic with in-memory backends and clients: no sockets, and paused time wherever
//! time matters.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use lb_core::{AdminState, Algorithm, Health, Pool, PoolConfig};
use lb_net::{Balancer, Behavior, HealthCheckConfig, MemoryConnector, ProxyConfig};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn no_checks() -> HealthCheckConfig {
    HealthCheckConfig { enabled: false, ..HealthCheckConfig::default() }
}

fn setup(
    algorithm: Algorithm,
    backends: &[(u8, u32)],
) -> (Balancer<MemoryConnector>, MemoryConnector) {
    setup_with_health(algorithm, backends, no_checks())
}

/// Like `setup`, with a health-check configuration. These tests never run `supervise`, so no
/// check actually runs; what the configuration changes is whether connect failures from
/// traffic count against a backend's health (only when checks are enabled).
fn setup_with_health(
    algorithm: Algorithm,
    backends: &[(u8, u32)],
    health: HealthCheckConfig,
) -> (Balancer<MemoryConnector>, MemoryConnector) {
    let pool = Pool::new(PoolConfig { algorithm, ..PoolConfig::default() }).unwrap();
    let connector = MemoryConnector::new();
    for &(i, weight) in backends {
        pool.add(mem_addr(i), Some(weight)).unwrap();
        named_memory_backend(&connector, mem_addr(i), &format!("b{i}"));
    }
    let balancer = Balancer::new(pool, connector.clone(), ProxyConfig::default(), health);
    (balancer, connector)
}

/// A balancer over one in-memory backend `b1` at `mem_addr(1)`, with `config` and no checks.
fn one_backend(config: ProxyConfig) -> Balancer<MemoryConnector> {
    let pool = Pool::default();
    pool.add(mem_addr(1), None).unwrap();
    let connector = MemoryConnector::new();
    named_memory_backend(&connector, mem_addr(1), "b1");
    Balancer::new(pool, connector, config, no_checks())
}

fn client_addr(i: u32) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, (i % 250) as u8 + 1], 40_000 + (i % 1000) as u16))
}

/// Opens an in-memory client from `peer` and returns it with the greeting of its backend.
async fn connect(
    balancer: &Balancer<MemoryConnector>,
    peer: SocketAddr,
) -> (tokio::io::DuplexStream, String) {
    let (mut ours, theirs) = memory_client();
    balancer.serve_connection(theirs, Some(peer));
    let name = read_line(&mut ours).await.expect("a backend greeting");
    (ours, name)
}

#[tokio::test]
async fn round_robin_routes_in_the_smooth_weighted_order() {
    let (balancer, _c) = setup(Algorithm::RoundRobin, &[(1, 5), (2, 1), (3, 1)]);
    let mut seen = Vec::new();
    for i in 0..14 {
        let (_stream, name) = connect(&balancer, client_addr(i)).await;
        seen.push(name);
    }
    let expected: Vec<&str> = "b1 b1 b2 b1 b3 b1 b1 b1 b1 b2 b1 b3 b1 b1".split(' ').collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn ip_hash_routes_as_an_independent_pool_says() {
    let (balancer, _c) = setup(Algorithm::IpHash, &[(1, 1), (2, 2), (3, 1)]);
    let reference =
        Pool::new(PoolConfig { algorithm: Algorithm::IpHash, ..PoolConfig::default() }).unwrap();
    for (i, w) in [(3u8, 1), (1, 1), (2, 2)] {
        reference.add(mem_addr(i), Some(w)).unwrap();
    }
    for i in 0..60 {
        let peer = client_addr(i);
        let expected = reference.pick(Some(peer.ip()), &[]).unwrap().addr();
        let (_s, name) = connect(&balancer, peer).await;
        assert_eq!(format!("b{}", expected.ip().to_string().rsplit('.').next().unwrap()), name);
        let (_s, again) = connect(&balancer, peer).await;
        assert_eq!(again, name, "the same client sticks to its backend");
    }
}

#[tokio::test]
async fn least_connections_and_p2c_spread_open_connections_by_weight() {
    for algorithm in [Algorithm::LeastConnections, Algorithm::P2c] {
        let (balancer, _c) = setup(algorithm, &[(1, 2), (2, 1), (3, 1)]);
        let mut open = Vec::new();
        for i in 0..40 {
            open.push(connect(&balancer, client_addr(i)).await);
        }
        let stats = balancer.handle().stats();
        let active: Vec<u64> = stats.pool().backends.iter().map(|b| b.active).collect();
        assert_eq!(active.iter().sum::<u64>(), 40);
        // Least connections keeps loads within one connection per weight unit; p2c within a few.
        let slack = if algorithm == Algorithm::P2c { 4 } else { 1 };
        assert!(
            active[0].abs_diff(20) <= slack * 2
                && active[1].abs_diff(10) <= slack
                && active[2].abs_diff(10) <= slack,
            "{algorithm}: {active:?}"
        );
    }
}

#[tokio::test]
async fn random_reaches_every_backend() {
    let (balancer, _c) = setup(Algorithm::Random, &[(1, 1), (2, 1), (3, 1)]);
    let mut names = std::collections::BTreeSet::new();
    for i in 0..90 {
        names.insert(connect(&balancer, client_addr(i)).await.1);
    }
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["b1", "b2", "b3"]);
}

/// Round robin over b1 and b2 with b1 refusing every connect, and six clients through it, each
/// of which must reach b2.
async fn six_clients_with_b1_refusing(
    health: HealthCheckConfig,
) -> (Balancer<MemoryConnector>, MemoryConnector) {
    let (balancer, connector) = setup_with_health(Algorithm::RoundRobin, &[(1, 1), (2, 1)], health);
    connector.set_behavior(mem_addr(1), Behavior::Refuse);
    for i in 0..6 {
        let (_s, name) = connect(&balancer, client_addr(i)).await;
        assert_eq!(name, "b2", "every client reaches the live backend");
    }
    (balancer, connector)
}

#[tokio::test]
async fn refused_backend_is_retried_around_and_marked_down_by_passive_failures() {
    let (balancer, connector) = six_clients_with_b1_refusing(HealthCheckConfig::default()).await;
    let stats = balancer.handle().stats();
    let dead = stats.pool().backend(mem_addr(1)).unwrap();
    // Round robin offered the dead backend first to every other client until `fall` (3)
    // failures took it out of rotation.
    assert_eq!(dead.connect_failures, 3);
    assert_eq!(dead.health, Health::Down);
    assert_eq!(connector.attempts(mem_addr(1)), 3);
    assert_eq!(stats.proxy.retries, 3);
    assert_eq!(stats.pool().backend(mem_addr(2)).unwrap().connections, 6);
}

#[tokio::test(start_paused = true)]
async fn hung_backend_times_out_and_the_client_is_served_elsewhere() {
    let (balancer, connector) = setup(Algorithm::RoundRobin, &[(1, 1), (2, 1)]);
    connector.set_behavior(mem_addr(1), Behavior::Hang);
    let started = tokio::time::Instant::now();
    let (_s, name) = connect(&balancer, client_addr(1)).await;
    assert_eq!(name, "b2");
    // Exactly one connect timeout (2 s by default) was paid.
    assert_eq!(started.elapsed().as_secs(), 2);
    assert_eq!(balancer.handle().stats().pool().backend(mem_addr(1)).unwrap().connect_failures, 1);
}

#[tokio::test]
async fn no_backend_available_closes_the_client_at_once() {
    let (balancer, _c) = setup(Algorithm::RoundRobin, &[]);
    let (mut client, theirs) = memory_client();
    balancer.serve_connection(theirs, Some(client_addr(1)));
    let mut buf = [0u8; 16];
    assert_eq!(client.read(&mut buf).await.unwrap(), 0, "closed without a byte");
    assert_eq!(balancer.handle().stats().proxy.no_backend, 1);
}

#[tokio::test]
async fn all_backends_refusing_closes_the_client_after_bounded_retries() {
    let (balancer, connector) =
        setup(Algorithm::RoundRobin, &[(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)]);
    for i in 1..=5 {
        connector.set_behavior(mem_addr(i), Behavior::Refuse);
    }
    let (mut client, theirs) = memory_client();
    balancer.serve_connection(theirs, Some(client_addr(1)));
    let mut buf = [0u8; 16];
    assert_eq!(client.read(&mut buf).await.unwrap(), 0);
    let stats = balancer.handle().stats();
    assert_eq!(stats.proxy.connect_failed, 1);
    // One try plus the default two retries, each on a different backend.
    let attempts: u64 = (1..=5).map(|i| connector.attempts(mem_addr(i))).sum();
    assert_eq!(attempts, 3);
    assert!((1..=5).all(|i| connector.attempts(mem_addr(i)) <= 1));
}

#[tokio::test]
async fn backend_reset_mid_stream_ends_the_connection_and_counts_bytes() {
    let (balancer, connector) = setup(Algorithm::RoundRobin, &[(1, 1)]);
    // The greeting is 3 bytes ("b1\n"); the backend fails after 3 + 5 bytes.
    connector.set_behavior(mem_addr(1), Behavior::ResetAfter(8));
    let (mut client, name) = connect(&balancer, client_addr(1)).await;
    assert_eq!(name, "b1");
    client.write_all(b"hello world").await.unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"hello", "what came before the reset is delivered, then the connection ends");
    eventually(Duration::from_secs(5), "connection accounted", || async {
        balancer.handle().stats().pool().totals.active == 0
    })
    .await;
    assert_eq!(balancer.handle().stats().pool().totals.bytes_out, 8);
}

#[tokio::test]
async fn drain_stops_new_connections_and_keeps_open_ones() {
    let (balancer, _c) = setup(Algorithm::RoundRobin, &[(1, 1), (2, 1)]);
    let handle = balancer.handle();
    let (mut kept, name) = connect(&balancer, client_addr(1)).await;
    assert_eq!(name, "b1");
    handle.execute(&format!("drain {}", mem_addr(1))).await.unwrap();
    for i in 0..4 {
        assert_eq!(connect(&balancer, client_addr(i)).await.1, "b2");
    }
    // The drained backend's connection still works.
    kept.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    kept.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still here");
    let stats = handle.stats();
    let b1 = stats.pool().backend(mem_addr(1)).unwrap();
    assert_eq!((b1.admin, b1.active, b1.state()), (AdminState::Drain, 1, "drain"));
    handle.execute(&format!("enable {}", mem_addr(1))).await.unwrap();
    let names: Vec<String> = {
        let mut v = Vec::new();
        for i in 0..2 {
            v.push(connect(&balancer, client_addr(i)).await.1);
        }
        v
    };
    assert!(names.contains(&"b1".to_string()), "back in rotation: {names:?}");
}

#[tokio::test]
async fn remove_takes_a_backend_out_at_once_and_lets_its_connections_finish() {
    let (balancer, _c) = setup(Algorithm::RoundRobin, &[(1, 1), (2, 1)]);
    let handle = balancer.handle();
    let (mut kept, name) = connect(&balancer, client_addr(1)).await;
    assert_eq!(name, "b1");
    let reply = handle.execute(&format!("remove {}", mem_addr(1))).await.unwrap();
    assert!(reply.to_string().starts_with("removed 10.99.0.1:7000"));
    for i in 0..4 {
        assert_eq!(connect(&balancer, client_addr(i)).await.1, "b2");
    }
    let stats = handle.stats();
    let removed = stats.pool().backends.iter().find(|b| b.addr == mem_addr(1)).unwrap();
    assert_eq!((removed.state(), removed.active), ("removed", 1), "still listed while open");
    kept.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    kept.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    kept.shutdown().await.unwrap();
    let mut rest = Vec::new();
    kept.read_to_end(&mut rest).await.unwrap();
    eventually(Duration::from_secs(5), "removed backend gone from stats", || async {
        handle.stats().pool().backends.iter().all(|b| b.addr != mem_addr(1))
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_closes_a_silent_connection() {
    let config =
        ProxyConfig { idle_timeout: Some(Duration::from_secs(30)), ..ProxyConfig::default() };
    let balancer = one_backend(config);
    let (mut client, _) = connect(&balancer, client_addr(1)).await;
    let start = tokio::time::Instant::now();
    // Activity at 20 s pushes the deadline to 50 s.
    tokio::time::sleep(Duration::from_secs(20)).await;
    client.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    client.read_exact(&mut one).await.unwrap();
    let mut buf = Vec::new();
    client.read_to_end(&mut buf).await.unwrap();
    let closed_after = start.elapsed().as_secs();
    assert_eq!(closed_after, 50, "closed 30 s after the last byte");
    assert!(buf.is_empty());
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_connections_finish_then_cuts_the_rest() {
    let config = ProxyConfig { shutdown_grace: Duration::from_secs(10), ..ProxyConfig::default() };
    let balancer = one_backend(config);
    let handle = balancer.handle();
    let (mut finishing, _) = connect(&balancer, client_addr(1)).await;
    let (mut lingering, _) = connect(&balancer, client_addr(2)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let run = tokio::spawn(balancer.run(listener, std::future::pending()));
    let started = tokio::time::Instant::now();
    handle.execute("quit").await.unwrap();
    assert!(handle.is_shutting_down());
    // One client finishes its exchange during the grace period.
    tokio::time::sleep(Duration::from_secs(3)).await;
    finishing.write_all(b"bye").await.unwrap();
    finishing.shutdown().await.unwrap();
    let mut echoed = Vec::new();
    finishing.read_to_end(&mut echoed).await.unwrap();
    assert_eq!(echoed, b"bye");
    // The other is cut when the grace period ends.
    let report = run.await.unwrap();
    assert_eq!(report.cut, 1);
    assert_eq!(started.elapsed().as_secs(), 10);
    let mut rest = Vec::new();
    assert_eq!(lingering.read_to_end(&mut rest).await.unwrap(), 0);
    assert_eq!(handle.stats().pool().totals.active, 0, "leases released by the cut connection");
}

#[tokio::test(start_paused = true)]
async fn shutdown_now_cuts_at_once_even_during_a_graceful_shutdown() {
    let config = ProxyConfig { shutdown_grace: Duration::from_secs(60), ..ProxyConfig::default() };
    let balancer = one_backend(config);
    let handle = balancer.handle();
    let (mut lingering, _) = connect(&balancer, client_addr(1)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let run = tokio::spawn(balancer.run(listener, std::future::pending()));
    let started = tokio::time::Instant::now();
    handle.shutdown();
    tokio::time::sleep(Duration::from_secs(5)).await;
    // A second request (lb: a second signal) ends the grace period there and then.
    handle.shutdown_now();
    let report = run.await.unwrap();
    assert_eq!(report.cut, 1);
    assert_eq!(started.elapsed().as_secs(), 5, "cut at once, not after the 60 s grace");
    let mut rest = Vec::new();
    assert_eq!(lingering.read_to_end(&mut rest).await.unwrap(), 0);
    assert_eq!(handle.stats().pool().totals.active, 0);
}

#[tokio::test]
async fn per_backend_limit_skips_full_backends() {
    let pool =
        Pool::new(PoolConfig { max_connections_per_backend: Some(2), ..PoolConfig::default() })
            .unwrap();
    let connector = MemoryConnector::new();
    for i in 1..=2 {
        pool.add(mem_addr(i), None).unwrap();
        named_memory_backend(&connector, mem_addr(i), &format!("b{i}"));
    }
    let balancer = Balancer::new(pool, connector, ProxyConfig::default(), no_checks());
    let mut open = Vec::new();
    for i in 0..4 {
        open.push(connect(&balancer, client_addr(i)).await);
    }
    let b1 = open.iter().filter(|(_, n)| n == "b1").count();
    assert_eq!(b1, 2, "two on each backend");
    // Both backends are at their limit: the fifth client finds none and is closed.
    let (mut fifth, theirs) = memory_client();
    balancer.serve_connection(theirs, Some(client_addr(5)));
    assert_eq!(fifth.read(&mut [0u8; 4]).await.unwrap(), 0);
    assert_eq!(balancer.handle().stats().proxy.no_backend, 1);
    // One finishes: its place is free again.
    drop(open.pop());
    eventually(Duration::from_secs(5), "a place frees up", || async {
        balancer.handle().stats().pool().totals.active == 3
    })
    .await;
    connect(&balancer, client_addr(6)).await;
}

#[tokio::test]
async fn global_limit_closes_extra_connections_at_once() {
    let config = ProxyConfig { max_connections: Some(3), ..ProxyConfig::default() };
    let balancer = one_backend(config);
    let mut open = Vec::new();
    for i in 0..3 {
        open.push(connect(&balancer, client_addr(i)).await);
    }
    let (mut extra, theirs) = memory_client();
    balancer.serve_connection(theirs, Some(client_addr(9)));
    assert_eq!(extra.read(&mut [0u8; 4]).await.unwrap(), 0, "closed at once");
    let stats = balancer.handle().stats();
    assert_eq!((stats.proxy.rejected_at_limit, stats.proxy.open, stats.proxy.accepted), (1, 3, 4));
    drop(open.pop());
    eventually(Duration::from_secs(5), "a place frees up", || async {
        balancer.handle().stats().proxy.open == 2
    })
    .await;
    connect(&balancer, client_addr(10)).await;
}

/// Fails the first `failures` connects with EMFILE, as when the balancer itself is out of file
/// descriptors, then connects through the in-memory connector.
#[derive(Clone)]
struct OutOfDescriptors {
    inner: MemoryConnector,
    failures: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl OutOfDescriptors {
    fn new(inner: MemoryConnector, failures: u64) -> Self {
        OutOfDescriptors { inner, failures: std::sync::Arc::new(failures.into()) }
    }
}

impl lb_net::Connector for OutOfDescriptors {
    type Stream = <MemoryConnector as lb_net::Connector>::Stream;

    async fn connect(&self, addr: SocketAddr) -> std::io::Result<Self::Stream> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.failures.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)).is_ok() {
            // EMFILE: 24 on Linux, the BSDs and macOS alike.
            return Err(std::io::Error::from_raw_os_error(24));
        }
        self.inner.connect(addr).await
    }
}

#[cfg(unix)]
fn setup_out_of_descriptors(
    failures: u64,
    health: HealthCheckConfig,
) -> (Balancer<OutOfDescriptors>, MemoryConnector) {
    setup_out_of_descriptors_with(failures, health, ProxyConfig::default())
}

#[cfg(unix)]
fn setup_out_of_descriptors_with(
    failures: u64,
    health: HealthCheckConfig,
    config: ProxyConfig,
) -> (Balancer<OutOfDescriptors>, MemoryConnector) {
    let pool = Pool::default();
    let connector = MemoryConnector::new();
    for i in [1, 2] {
        pool.add(mem_addr(i), None).unwrap();
        named_memory_backend(&connector, mem_addr(i), &format!("b{i}"));
    }
    let exhausted = OutOfDescriptors::new(connector.clone(), failures);
    (Balancer::new(pool, exhausted, config, health), connector)
}

#[cfg(unix)]
#[tokio::test(start_paused = true)]
async fn a_brief_shortage_of_descriptors_is_waited_out_and_blames_no_backend() {
    let (balancer, connector) = setup_out_of_descriptors(3, no_checks());
    let (mut ours, theirs) = memory_client();
    balancer.serve_connection(theirs, Some(client_addr(1)));
    assert_eq!(read_line(&mut ours).await.unwrap(), "b1", "served by its first pick, late");
    let stats = balancer.handle().stats();
    let b1 = stats.pool().backend(mem_addr(1)).unwrap();
    assert_eq!((b1.connect_failures, b1.health), (0, Health::Up));
    assert_eq!((stats.proxy.retries, stats.proxy.resource_errors), (0, 0));
    assert_eq!(connector.attempts(mem_addr(2)), 0);
}

#[cfg(unix)]
#[tokio::test(start_paused = true)]
async fn a_lasting_shortage_closes_the_client_after_the_connect_timeout_and_blames_no_backend() {
    let (balancer, connector) = setup_out_of_descriptors(u64::MAX, no_checks());
    for i in 0..5 {
        let started = tokio::time::Instant::now();
        let (mut client, theirs) = memory_client();
        balancer.serve_connection(theirs, Some(client_addr(i)));
        let mut buf = [0u8; 16];
        assert_eq!(client.read(&mut buf).await.unwrap(), 0, "closed without a byte");
        let waited = started.elapsed();
        assert!(
            waited > Duration::from_millis(1500) && waited <= Duration::from_secs(2),
            "{waited:?}"
        );
    }
    let stats = balancer.handle().stats();
    assert_eq!(stats.proxy.resource_errors, 5);
    assert_eq!((stats.proxy.connect_failed, stats.proxy.retries), (0, 0));
    for i in [1, 2] {
        let b = stats.pool().backend(mem_addr(i)).unwrap();
        assert_eq!((b.connect_failures, b.health), (0, Health::Up), "b{i}");
        assert_eq!(b.active, 0);
    }
    // Another backend would have failed the same way: none was tried.
    assert_eq!(connector.attempts(mem_addr(1)) + connector.attempts(mem_addr(2)), 0);
}

#[cfg(unix)]
#[tokio::test(start_paused = true)]
async fn a_lasting_shortage_is_waited_out_for_five_seconds_at_most() {
    // A connect timeout of ten minutes: the client is still closed after 5 s, its descriptor
    // freed for others (its client may have gone long before).
    let config = ProxyConfig { connect_timeout: Duration::from_secs(600), ..Default::default() };
    let (balancer, _connector) = setup_out_of_descriptors_with(u64::MAX, no_checks(), config);
    let started = tokio::time::Instant::now();
    let (mut client, theirs) = memory_client();
    balancer.serve_connection(theirs, Some(client_addr(1)));
    let mut buf = [0u8; 16];
    assert_eq!(client.read(&mut buf).await.unwrap(), 0, "closed without a byte");
    let waited = started.elapsed();
    assert!(waited > Duration::from_secs(4) && waited <= Duration::from_secs(5), "{waited:?}");
    assert_eq!(balancer.handle().stats().proxy.resource_errors, 1);
}

#[cfg(unix)]
#[tokio::test(start_paused = true)]
async fn health_checks_that_cannot_run_for_want_of_descriptors_are_not_counted() {
    let health =
        HealthCheckConfig { interval: Duration::from_secs(1), ..HealthCheckConfig::default() };
    let (balancer, _connector) = setup_out_of_descriptors(u64::MAX, health);
    let handle = balancer.handle();
    let supervisor = tokio::spawn(balancer.supervise(std::future::pending()));
    // Ten rounds of checks, far more than `fall` (3).
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    for (addr, status) in handle.health() {
        let status = status.expect("checked");
        assert!(status.result.unwrap_err().starts_with("not run"), "{addr}");
        assert_eq!(handle.stats().pool().backend(addr).unwrap().health, Health::Up, "{addr}");
    }
    handle.shutdown();
    supervisor.await.unwrap();
}

#[tokio::test]
async fn timeouts_as_long_as_a_duration_can_be_do_not_overflow() {
    // Timeouts are plain Durations; a deadline computed from Duration::MAX must not panic.
    let config = ProxyConfig {
        connect_timeout: Duration::MAX,
        idle_timeout: Some(Duration::MAX),
        ..ProxyConfig::default()
    };
    let balancer = one_backend(config);
    let (mut client, name) = connect(&balancer, client_addr(1)).await;
    assert_eq!(name, "b1");
    client.write_all(b"ping").await.unwrap();
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"ping");
}

#[tokio::test]
async fn without_health_checks_connect_failures_take_no_backend_down() {
    // Nothing would bring such a backend back up: failures are counted and retried around,
    // and the backend gets its share again as soon as it answers.
    let (balancer, connector) = six_clients_with_b1_refusing(no_checks()).await;
    let stats = balancer.handle().stats();
    let dead = stats.pool().backend(mem_addr(1)).unwrap();
    assert_eq!(dead.health, Health::Up);
    assert!(dead.connect_failures >= 3, "{dead:?}");
    let health = balancer.handle().execute("health").await.unwrap().to_string();
    assert!(health.starts_with("health checks are off"), "{health}");
    assert_eq!(stats.proxy.retries, dead.connect_failures, "each failure retried on b2");
    connector.set_behavior(mem_addr(1), Behavior::Accept);
    let mut names = std::collections::BTreeSet::new();
    for i in 10..14 {
        names.insert(connect(&balancer, client_addr(i)).await.1);
    }
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["b1", "b2"]);
}

#[tokio::test]
async fn a_backend_without_a_health_result_is_shown_as_init_until_it_has_one() {
    let (balancer, connector) =
        setup_with_health(Algorithm::RoundRobin, &[(1, 1)], HealthCheckConfig::default());
    let handle = balancer.handle();
    let added = mem_addr(2);
    named_memory_backend(&connector, added, "b2");
    handle.execute(&format!("add {} {}", added.ip(), added.port())).await.unwrap();
    let text = handle.execute("stats").await.unwrap().to_string();
    assert!(text.contains("2 of 2 backends available (2 not checked yet)"), "{text}");
    let row = |text: &str, addr: SocketAddr| {
        text.lines().find(|l| l.starts_with(&addr.to_string())).unwrap().to_owned()
    };
    assert!(row(&text, added).contains(" init "), "{text}");
    // It takes traffic meanwhile, as an up backend does.
    let names: std::collections::BTreeSet<String> =
        futures_names(&balancer, 4).await.into_iter().collect();
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["b1", "b2"]);

    // A failure seen in traffic is a health result: b1 has had one and is up again in the
    // table (one failure is below `fall`), b2 still has none.
    connector.set_behavior(mem_addr(1), Behavior::Refuse);
    futures_names(&balancer, 2).await;
    let stats = handle.stats();
    let b1 = stats.pool().backend(mem_addr(1)).unwrap();
    assert!(b1.checked && b1.connect_failures > 0, "{b1:?}");
    let text = handle.execute("stats").await.unwrap().to_string();
    assert!(text.contains("(1 not checked yet)"), "{text}");
    assert!(row(&text, mem_addr(1)).contains(" up "), "{text}");
    let json = lb_net::admin::StatsJson::from(&handle.stats());
    let state = |addr: SocketAddr| {
        json.backends.iter().find(|b| b.backend == addr.to_string()).unwrap().state.clone()
    };
    assert_eq!((state(mem_addr(1)), state(added)), ("up".to_owned(), "init".to_owned()));

    // Without checks nothing would ever check it: plain `up`.
    let (unchecked, _) = setup(Algorithm::RoundRobin, &[(1, 1)]);
    let text = unchecked.handle().execute("stats").await.unwrap().to_string();
    assert!(text.contains("1 of 1 backends available\n"), "{text}");
    assert!(row(&text, mem_addr(1)).contains(" up "), "{text}");
}

/// The backends that `n` clients in a row reach (each client closed after its greeting).
async fn futures_names(balancer: &Balancer<MemoryConnector>, n: u32) -> Vec<String> {
    let mut names = Vec::new();
    for i in 0..n {
        names.push(connect(balancer, client_addr(100 + i)).await.1);
    }
    names
}
