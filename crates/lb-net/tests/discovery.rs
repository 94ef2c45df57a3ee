//! Pool members from DNS, against a DNS server on loopback whose answers each test changes
//! (`TestDnsServer`): A and SRV answers followed within the refresh bound, SRV weights and
//! priorities, failures (SERVFAIL, an empty answer, no answer, NXDOMAIN) keeping the members
//! and counted, health checks on discovered backends, listed members left alone, and metrics.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lb_core::{Health, Pool};
use lb_net::admin::{self, AdminConfig, StatsJson};
use lb_net::{
    bind_shared, Balancer, DiscoveryConfig, DnsBehavior, DnsQuery, Handle, HealthCheckConfig,
    ListenerConfig, PoolSettings, ProxyConfig, SrvRecord, TcpConnector, TestDnsServer,
};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Every wait in these tests: far above the refresh bound, so only a broken follow fails.
const LIMIT: Duration = Duration::from_secs(10);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Discovery of `query` through `dns`, refreshing every 50-200 ms, giving up on a query after
/// 200 ms.
fn config(query: &str, dns: &TestDnsServer) -> DiscoveryConfig {
    DiscoveryConfig {
        resolver: Some(dns.addr()),
        min_refresh: Duration::from_millis(50),
        max_refresh: Duration::from_millis(200),
        timeout: Duration::from_millis(200),
        ..DiscoveryConfig::new(query.parse::<DnsQuery>().unwrap())
    }
}

/// Pool settings without health checks (these tests are about membership).
fn unchecked() -> PoolSettings {
    let health = HealthCheckConfig { enabled: false, ..HealthCheckConfig::default() };
    PoolSettings { health, ..PoolSettings::default() }
}

/// An empty balancer with the pool `web` (holding `listed`), its supervisor running.
fn balancer(listed: &[SocketAddr], settings: PoolSettings) -> (Balancer, Handle) {
    let pool = Pool::default();
    for addr in listed {
        pool.add(*addr, None).unwrap();
    }
    let balancer = Balancer::empty(TcpConnector, ProxyConfig::default());
    let handle = balancer.handle();
    handle.add_pool("web", pool, settings).unwrap();
    (balancer, handle)
}

/// The pool's members (not removed), in address order, with their weights.
fn members(handle: &Handle) -> Vec<(SocketAddr, u32)> {
    let stats = handle.pool_named("web").unwrap().stats();
    let mut list: Vec<_> =
        stats.backends.iter().filter(|b| !b.removed).map(|b| (b.addr, b.weight)).collect();
    list.sort();
    list
}

fn addrs(handle: &Handle) -> Vec<SocketAddr> {
    members(handle).into_iter().map(|(a, _)| a).collect()
}

fn counts(handle: &Handle) -> lb_net::DiscoveryCounts {
    let stats = handle.stats();
    stats.pools.iter().find(|p| p.name == "web").unwrap().discovery.as_ref().unwrap().counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_are_followed_beside_listed_members() {
    let dns = TestDnsServer::start().await.unwrap();
    dns.set_addresses("app.test", &[ip("127.0.0.1"), ip("127.0.0.2")], 1);
    let listed = sa("127.0.0.9:9");
    let (_balancer, handle) = balancer(&[listed], unchecked());
    let first = handle.set_discovery("web", Some(config("dns:app.test:8080", &dns))).await;
    // The first lookup is applied before set_discovery returns.
    assert_eq!(first.unwrap().as_deref(), Some("2 backends in DNS (2 added)"));
    assert_eq!(addrs(&handle), [sa("127.0.0.1:8080"), sa("127.0.0.2:8080"), listed]);
    assert_eq!(handle.discovered("web"), [sa("127.0.0.1:8080"), sa("127.0.0.2:8080")]);
    // The same configuration again is no change.
    let again = handle.set_discovery("web", Some(config("dns:app.test:8080", &dns))).await;
    assert_eq!(again.unwrap(), None);

    dns.set_addresses("app.test", &[ip("127.0.0.2"), ip("127.0.0.3")], 1);
    eventually(LIMIT, "the pool follows the new A records", || async {
        addrs(&handle) == [sa("127.0.0.2:8080"), sa("127.0.0.3:8080"), listed]
    })
    .await;
    let c = counts(&handle);
    assert_eq!((c.added, c.removed, c.errors), (3, 1, 0));
    assert!(c.refreshes >= 2, "{c:?}");
    let stats = handle.stats();
    let d = stats.pools[0].discovery.as_ref().unwrap();
    assert_eq!(d.source, format!("dns:app.test:8080 via {}", dns.addr()));
    assert_eq!(d.members, [sa("127.0.0.2:8080"), sa("127.0.0.3:8080")]);
    assert!(d.last_error.is_none());
    let text = stats.to_string();
    assert!(text.contains("discovery dns:app.test:8080 via"), "{text}");
    assert!(text.contains(": 2 backends, last lookup"), "{text}");

    // Stopping discovery leaves its members as ordinary ones.
    let stopped = handle.set_discovery("web", None).await.unwrap();
    assert_eq!(stopped.as_deref(), Some("discovery stopped"));
    assert!(handle.discovered("web").is_empty());
    dns.set_addresses("app.test", &[ip("127.0.0.4")], 1);
    let queries = dns.queries();
    tokio::time::sleep(Duration::from_millis(300)).await; // nothing to wait for: no lookup may come
    assert_eq!(dns.queries(), queries, "no lookup after discovery stopped");
    assert_eq!(addrs(&handle).len(), 3);
    assert!(handle.stats().pools[0].discovery.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_give_ports_weights_and_primaries() {
    let dns = TestDnsServer::start().await.unwrap();
    dns.set_addresses("a.test", &[ip("127.0.0.1")], 1);
    dns.set_addresses("b.test", &[ip("127.0.0.2")], 1);
    let srv = |priority, weight, port, target: &str| SrvRecord {
        priority,
        weight,
        port,
        target: target.into(),
    };
    dns.set_srv(
        "_http._tcp.web.test",
        &[
            srv(10, 5, 8001, "a.test"),
            srv(10, 0, 8002, "b.test"),
            // A higher priority value: a backup, not a primary.
            srv(20, 1, 8003, "a.test"),
        ],
        1,
    );
    let (_balancer, handle) = balancer(&[], unchecked());
    let first = handle.set_discovery("web", Some(config("srv:_http._tcp.web.test", &dns))).await;
    assert_eq!(first.unwrap().as_deref(), Some("2 backends in DNS (2 added)"));
    // Weight 0 counts as 1.
    assert_eq!(members(&handle), [(sa("127.0.0.1:8001"), 5), (sa("127.0.0.2:8002"), 1)]);

    // A new weight (clamped to 1000), a moved port, a target whose address changed.
    dns.set_addresses("b.test", &[ip("127.0.0.3")], 1);
    dns.set_srv(
        "_http._tcp.web.test",
        &[srv(10, 7000, 8001, "a.test"), srv(10, 2, 8004, "b.test")],
        1,
    );
    eventually(LIMIT, "the pool follows the new SRV records", || async {
        members(&handle) == [(sa("127.0.0.1:8001"), 1000), (sa("127.0.0.3:8004"), 2)]
    })
    .await;
    let c = counts(&handle);
    assert_eq!((c.added, c.removed, c.reweighted), (3, 1, 1));

    // Targets the server does not send along are looked up.
    dns.set_srv("_http._tcp.web.test", &[srv(1, 3, 9000, "c.test")], 1);
    dns.set_addresses("c.test", &[ip("127.0.0.5")], 1);
    eventually(LIMIT, "the pool follows a target looked up on its own", || async {
        members(&handle) == [(sa("127.0.0.5:9000"), 3)]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_keep_the_members_and_are_counted() {
    let dns = TestDnsServer::start().await.unwrap();
    dns.set_addresses("app.test", &[ip("127.0.0.1"), ip("127.0.0.2")], 0);
    let (_balancer, handle) = balancer(&[], unchecked());
    handle.set_discovery("web", Some(config("dns:app.test:80", &dns))).await.unwrap();
    let known = [sa("127.0.0.1:80"), sa("127.0.0.2:80")];
    assert_eq!(addrs(&handle), known);
    let mut errors = 0;
    for (behavior, what) in [
        (DnsBehavior::ServerFailure, "SERVFAIL"),
        (DnsBehavior::Empty, "an empty answer"),
        (DnsBehavior::Silent, "no answer"),
    ] {
        dns.set_behavior(behavior);
        eventually(LIMIT, &format!("{what} counted as an error"), || async {
            counts(&handle).errors > errors
        })
        .await;
        errors = counts(&handle).errors;
        assert_eq!(addrs(&handle), known, "{what} keeps the members");
        let stats = handle.stats();
        let d = stats.pools[0].discovery.as_ref().unwrap();
        let error = d.last_error.as_deref().unwrap();
        assert!(!error.contains("Query {"), "{what}: said in words, not a debug dump: {error}");
        assert_eq!(d.members, known);
        assert!(stats.to_string().contains("keeping the last known backends"));
    }
    // A name that no longer exists (NXDOMAIN) keeps them too.
    dns.set_behavior(DnsBehavior::Answer);
    dns.set_addresses("app.test", &[], 0);
    eventually(LIMIT, "NXDOMAIN counted as an error", || async { counts(&handle).errors > errors })
        .await;
    assert_eq!(addrs(&handle), known);
    assert_eq!(counts(&handle).removed, 0);
    let stats = handle.stats();
    let error = stats.pools[0].discovery.as_ref().unwrap().last_error.clone().unwrap();
    assert!(error.contains("app.test"), "{error}");
    assert!(!error.contains("Query {"), "{error}");
    // And the next good answer is followed again.
    dns.set_addresses("app.test", &[ip("127.0.0.3")], 0);
    eventually(LIMIT, "the pool follows DNS again", || async {
        addrs(&handle) == [sa("127.0.0.3:80")]
    })
    .await;
    assert!(handle.stats().pools[0].discovery.as_ref().unwrap().last_error.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_backends_are_health_checked_and_serve() {
    let (live, _task) = tcp_named_backend("live").await;
    // A port nothing listens on.
    let held = HeldPort::refusing();
    let dead = held.addr();
    let dns = TestDnsServer::start().await.unwrap();
    dns.set_addresses("h.test", &[ip("127.0.0.1")], 1);
    let srv = |port| SrvRecord { priority: 1, weight: 1, port, target: "h.test".into() };
    dns.set_srv("_tcp.web.test", &[srv(live.port()), srv(dead.port())], 1);
    let health = HealthCheckConfig {
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
        ..HealthCheckConfig::default()
    };
    let mut settings = PoolSettings { health, ..PoolSettings::default() };
    settings.connect_timeout = Duration::from_secs(1);
    let (balancer, handle) = balancer(&[], settings);
    let sockets = bind_shared(sa("127.0.0.1:0"), 1).unwrap();
    let addr = sockets[0].local_addr().unwrap();
    handle.add_listener(ListenerConfig::to_pool("in", "web"), sockets).unwrap();
    let supervisor = tokio::spawn(balancer.supervise(std::future::pending()));
    handle.set_discovery("web", Some(config("srv:_tcp.web.test", &dns))).await.unwrap();
    let health_of = |addr: SocketAddr| {
        let stats = handle.pool_named("web").unwrap().stats();
        stats.backends.iter().find(|b| b.addr == addr).map(|b| b.health)
    };
    eventually(LIMIT, "the dead discovered backend checked down", || async {
        health_of(dead) == Some(Health::Down) && health_of(live) == Some(Health::Up)
    })
    .await;
    // Every client reaches the live one.
    for _ in 0..4 {
        let (_stream, name) = tcp_greeting(addr).await.unwrap();
        assert_eq!(name, "live");
    }
    handle.shutdown();
    supervisor.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_json_show_discovery() {
    let dns = TestDnsServer::start().await.unwrap();
    dns.set_addresses("app.test", &[ip("127.0.0.1")], 1);
    let (_balancer, handle) = balancer(&[], unchecked());
    handle.set_discovery("web", Some(config("dns:app.test:80", &dns))).await.unwrap();
    dns.set_behavior(DnsBehavior::ServerFailure);
    eventually(LIMIT, "an error", || async { counts(&handle).errors > 0 }).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = listener.local_addr().unwrap();
    let config = AdminConfig { token: None, allowed_hosts: Vec::new() };
    tokio::spawn(admin::run(listener, handle.clone(), config, std::future::pending()));
    let metrics = get(admin_addr, "/metrics").await;
    let errors = counts(&handle).errors;
    let line = metrics.lines().find(|l| l.starts_with("lb_dns_errors_total{pool=\"web\"}"));
    let value: u64 = line.unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    assert!(value >= 1 && value <= errors, "{value} vs {errors}");
    assert!(metrics.contains("lb_dns_backends{pool=\"web\"} 1"), "{metrics}");
    assert!(metrics.contains("lb_dns_backends_added_total{pool=\"web\"} 1"), "{metrics}");
    let json: StatsJson = serde_json::from_str(&get(admin_addr, "/stats").await).unwrap();
    let d = json.pools[0].discovery.as_ref().unwrap();
    assert_eq!(d.members, ["127.0.0.1:80"]);
    assert_eq!((d.counts.added, d.counts.refreshes), (1, 1));
    assert!(d.counts.errors >= 1 && d.last_error.is_some());
    assert!(d.last_refresh_seconds_ago.is_some());
}

/// GET `path` from the admin endpoint; the body.
async fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    raw.split_once("\r\n\r\n").unwrap().1.to_owned()
}
