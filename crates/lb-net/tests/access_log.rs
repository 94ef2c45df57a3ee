//! The access log: one line per client connection, for every way a connection can end.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use lb_core::Pool;
use lb_net::{Balancer, Behavior, HealthCheckConfig, MemoryConnector, ProxyConfig, TcpConnector};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn no_checks() -> HealthCheckConfig {
    HealthCheckConfig { enabled: false, ..HealthCheckConfig::default() }
}

fn peer() -> SocketAddr {
    "192.0.2.7:40001".parse().unwrap()
}

fn memory_balancer(
    backends: &[u8],
    config: ProxyConfig,
) -> (Balancer<MemoryConnector>, MemoryConnector) {
    let pool = Pool::default();
    let connector = MemoryConnector::new();
    for &i in backends {
        pool.add(mem_addr(i), None).unwrap();
        named_memory_backend(&connector, mem_addr(i), &format!("b{i}"));
    }
    (Balancer::new(pool, connector.clone(), config, no_checks()), connector)
}

/// Fields: client [accept time] backend Tc/Tt bytes_in bytes_out termination retries
fn check(fields: &[String], backend: &str, bytes: (&str, &str), end: &str, retries: &str) {
    assert_eq!(fields.len(), 8, "{fields:?}");
    assert_eq!(fields[0], "192.0.2.7:40001");
    assert!(fields[1].starts_with("[20") && fields[1].ends_with("Z]"), "{fields:?}");
    assert_eq!(fields[2], backend, "{fields:?}");
    let (tc, tt) = fields[3].split_once('/').unwrap();
    assert!(tc.parse::<i64>().unwrap() >= -1 && tt.parse::<u64>().is_ok(), "{fields:?}");
    assert_eq!((fields[4].as_str(), fields[5].as_str()), bytes, "{fields:?}");
    assert_eq!(fields[6], end, "{fields:?}");
    assert_eq!(fields[7], retries, "{fields:?}");
}

#[tokio::test]
async fn normal_close() {
    let log = Capture::default();
    let _g = log.install();
    let (balancer, _c) = memory_balancer(&[1], ProxyConfig::default());
    let (mut client, theirs) = memory_client();
    balancer.serve_connection(theirs, Some(peer()));
    read_line(&mut client).await.unwrap();
    client.write_all(b"ping").await.unwrap();
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    let fields = log.fields(1).await;
    check(&fields, "10.99.0.1:7000", ("4", "7"), "normal", "0");
}

#[tokio::test]
async fn no_backend_and_backend_refused_and_connect_timeout() {
    let log = Capture::default();
    let _g = log.install();
    let (empty, _c) = memory_balancer(&[], ProxyConfig::default());
    let (mut client, theirs) = memory_client();
    empty.serve_connection(theirs, Some(peer()));
    let _ = client.read(&mut [0u8; 1]).await;
    check(&log.fields(1).await, "-", ("0", "0"), "no-backend", "0");

    let (refusing, connector) = memory_balancer(&[1, 2], ProxyConfig::default());
    connector.set_behavior(mem_addr(1), Behavior::Refuse);
    connector.set_behavior(mem_addr(2), Behavior::Refuse);
    let (mut client, theirs) = memory_client();
    refusing.serve_connection(theirs, Some(peer()));
    let _ = client.read(&mut [0u8; 1]).await;
    let fields = log.fields(2).await;
    assert!(fields[3].starts_with("-1/"), "no connection made: {fields:?}");
    assert_eq!((fields[6].as_str(), fields[7].as_str()), ("backend-refused", "1"));

    let config =
        ProxyConfig { connect_timeout: Duration::from_millis(20), ..ProxyConfig::default() };
    let (hanging, connector) = memory_balancer(&[1], config);
    connector.set_behavior(mem_addr(1), Behavior::Hang);
    let (mut client, theirs) = memory_client();
    hanging.serve_connection(theirs, Some(peer()));
    let _ = client.read(&mut [0u8; 1]).await;
    check(&log.fields(3).await, "10.99.0.1:7000", ("0", "0"), "connect-timeout", "0");
}

#[tokio::test]
async fn backend_reset_and_limit() {
    let log = Capture::default();
    let _g = log.install();
    let config = ProxyConfig { max_connections: Some(1), ..ProxyConfig::default() };
    let (balancer, connector) = memory_balancer(&[1], config);
    // Greeting (3 bytes) and the echo of "more" (4) get through, then the backend resets.
    connector.set_behavior(mem_addr(1), Behavior::ResetAfter(7));
    let (mut client, theirs) = memory_client();
    balancer.serve_connection(theirs, Some(peer()));
    read_line(&mut client).await.unwrap();
    // While it is open, a second client is over the limit of 1.
    let (mut second, theirs) = memory_client();
    balancer.serve_connection(theirs, Some(peer()));
    let _ = second.read(&mut [0u8; 1]).await;
    check(&log.fields(1).await, "-", ("0", "0"), "limit", "0");
    client.write_all(b"more").await.unwrap();
    let _ = client.read_to_end(&mut Vec::new()).await;
    check(&log.fields(2).await, "10.99.0.1:7000", ("4", "7"), "backend-reset", "0");
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_and_shutdown() {
    let log = Capture::default();
    let _g = log.install();
    let config = ProxyConfig {
        idle_timeout: Some(Duration::from_secs(5)),
        shutdown_grace: Duration::from_secs(1),
        ..ProxyConfig::default()
    };
    let (balancer, _c) = memory_balancer(&[1], config);
    let (mut idle, theirs) = memory_client();
    balancer.serve_connection(theirs, Some(peer()));
    read_line(&mut idle).await.unwrap();
    let _ = idle.read_to_end(&mut Vec::new()).await;
    check(&log.fields(1).await, "10.99.0.1:7000", ("0", "3"), "idle-timeout", "0");

    let (mut held, theirs) = memory_client();
    balancer.serve_connection(theirs, Some(peer()));
    read_line(&mut held).await.unwrap();
    let handle = balancer.handle();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let run = tokio::spawn(balancer.run(listener, std::future::pending()));
    handle.shutdown();
    assert_eq!(run.await.unwrap().cut, 1);
    check(&log.fields(2).await, "10.99.0.1:7000", ("0", "3"), "shutdown", "0");
}

#[tokio::test]
async fn client_reset_over_tcp() {
    let log = Capture::default();
    let _g = log.install();
    let (backend, backend_task) = tcp_named_backend("a").await;
    let (lb, handle, run) =
        start(one_backend_pool(backend), ProxyConfig::default(), no_checks()).await;
    let (stream, _) = tcp_greeting(lb).await.unwrap();
    // Close with a reset (linger 0) instead of a FIN.
    socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)).unwrap();
    drop(stream);
    let fields = log.fields(1).await;
    assert_eq!(fields[2], backend.to_string());
    assert_eq!(fields[6], "client-reset", "{fields:?}");
    stop(handle, run).await;
    backend_task.abort();
}

#[tokio::test]
async fn lines_name_the_pool_the_claimed_client_and_the_server_name() {
    use lb_net::inspect::proxy_header::{self, Version};
    use lb_net::{bind_shared, ListenerConfig, PoolSettings, Routing};
    let log = Capture::default();
    let _g = log.install();
    let (backend, task) = tcp_named_backend("b1").await;
    let balancer = Balancer::empty(TcpConnector, ProxyConfig::default());
    let handle = balancer.handle();
    let pool = Pool::default();
    pool.add(backend, None).unwrap();
    handle
        .add_pool("web", pool, PoolSettings { health: no_checks(), ..Default::default() })
        .unwrap();
    // An upstream proxy's client: the line shows the address the PROXY header claims.
    let sockets = bind_shared("127.0.0.1:0".parse().unwrap(), 1).unwrap();
    let behind_proxy = sockets[0].local_addr().unwrap();
    let config = ListenerConfig { accept_proxy: true, ..ListenerConfig::to_pool("nlb", "web") };
    handle.add_listener(config, sockets).unwrap();
    let mut s = tokio::net::TcpStream::connect(behind_proxy).await.unwrap();
    let header = proxy_header::encode(Version::V2, peer(), "203.0.113.1:443".parse().unwrap());
    s.write_all(&header).await.unwrap();
    s.write_all(b"hi").await.unwrap();
    assert_eq!(read_line(&mut s).await.unwrap(), "b1");
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    let fields = log.fields(1).await;
    check(&fields, &format!("web/{backend}"), ("2", "5"), "normal", "0");
    // SNI routing: the server name ends the line.
    let sockets = bind_shared("127.0.0.1:0".parse().unwrap(), 1).unwrap();
    let by_name = sockets[0].local_addr().unwrap();
    let routing = Routing::Sni { routes: Vec::new(), default_pool: Some("web".into()) };
    handle
        .add_listener(ListenerConfig { routing, ..ListenerConfig::to_pool("tls", "web") }, sockets)
        .unwrap();
    let mut s = tokio::net::TcpStream::connect(by_name).await.unwrap();
    let hello = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/client_hello/openssl-3.0-tls13.bin"
    ))
    .unwrap();
    s.write_all(&hello).await.unwrap();
    assert_eq!(read_line(&mut s).await.unwrap(), "b1");
    drop(s);
    let line = log.fields(2).await;
    assert_eq!(line.last().unwrap(), "sni=example.com", "{line:?}");
    assert_eq!(line[2], format!("web/{backend}"));
    task.abort();
}
