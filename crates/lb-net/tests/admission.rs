//! Who may connect, over real sockets: allow/deny ranges and per-client limits, with clients
//! bound to many source addresses of 127.0.0.0/8.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use lb_core::Pool;
use lb_net::{
    bind_shared, Admission, Balancer, Handle, ListenerConfig, PoolSettings, ProxyConfig,
    TcpConnector,
};
use support::*;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// A balancer with one named backend, behind a listener with `admission`.
async fn guarded(
    admission: Admission,
) -> (SocketAddr, Handle, JoinHandle<()>, JoinHandle<lb_net::ShutdownReport>) {
    let (backend, backend_task) = tcp_named_backend("b").await;
    let balancer = Balancer::empty(TcpConnector, ProxyConfig::default());
    let handle = balancer.handle();
    let pool = Pool::default();
    pool.add(backend, None).unwrap();
    handle.add_pool("p", pool, PoolSettings::default()).unwrap();
    let sockets = bind_shared("127.0.0.1:0".parse().unwrap(), 1).unwrap();
    let lb = sockets[0].local_addr().unwrap();
    let config = ListenerConfig { admission, ..ListenerConfig::to_pool("in", "p") };
    handle.add_listener(config, sockets).unwrap();
    let task = tokio::spawn(balancer.supervise(std::future::pending()));
    (lb, handle, backend_task, task)
}

/// Connects to `lb` from `source` (an address of 127.0.0.0/8).
async fn connect_from(source: &str, lb: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(lb).await.unwrap()
}

/// Whether the balancer served the connection (the backend greeted) or closed it at once.
async fn served(mut s: TcpStream) -> bool {
    let mut first = [0u8; 2];
    matches!(tokio::time::timeout(Duration::from_secs(10), s.read(&mut first)).await, Ok(Ok(n)) if n > 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_range_is_refused_and_counted_while_others_are_served() {
    let admission = Admission {
        allow: vec!["127.0.0.0/8".parse().unwrap()],
        deny: vec!["127.0.9.0/24".parse().unwrap()],
        ..Default::default()
    };
    let (lb, handle, backend, task) = guarded(admission).await;
    assert!(!served(connect_from("127.0.9.7", lb).await).await);
    assert!(served(connect_from("127.0.8.7", lb).await).await);
    let stats = handle.stats();
    let listener = &stats.listeners[0];
    assert_eq!((listener.denied, stats.proxy.denied), (1, 1));
    assert_eq!(stats.pool().totals.connections, 1, "the denied client reached no backend");
    handle.shutdown();
    task.await.unwrap();
    backend.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_client_limits_refuse_one_address_and_not_the_others() {
    let admission = Admission {
        max_connections_per_client: Some(2),
        max_connection_rate_per_client: Some(20),
        ..Default::default()
    };
    let (lb, handle, backend, task) = guarded(admission).await;
    // Two held from one address; a third from it is refused, one from elsewhere is not.
    let (mut a, mut b) = (connect_from("127.0.5.5", lb).await, connect_from("127.0.5.5", lb).await);
    assert_eq!(read_line(&mut a).await.unwrap(), "b");
    assert_eq!(read_line(&mut b).await.unwrap(), "b");
    assert!(!served(connect_from("127.0.5.5", lb).await).await);
    assert!(served(connect_from("127.0.5.6", lb).await).await);
    drop((a, b));
    // A burst from one address beyond 20 a second: the rest of the burst is refused.
    let mut refused = 0;
    for _ in 0..40 {
        if !served(connect_from("127.0.6.6", lb).await).await {
            refused += 1;
        }
    }
    assert!(refused >= 15, "{refused} of 40 refused");
    eventually(Duration::from_secs(5), "refusals counted", || async {
        handle.stats().proxy.rate_limited == refused + 1
    })
    .await;
    handle.shutdown();
    task.await.unwrap();
    backend.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_client_addresses_are_each_limited_in_fixed_memory() {
    let admission = Admission { max_connections_per_client: Some(1), ..Default::default() };
    let (lb, handle, backend, task) = guarded(admission).await;
    // 3,000 addresses, each with one connection held while the next ones connect: every one
    // is served (its own limit), and none goes untracked.
    let mut held = Vec::new();
    for i in 0..3000u32 {
        let source = format!("127.100.{}.{}", i / 250, i % 250 + 1);
        let mut s = connect_from(&source, lb).await;
        assert_eq!(read_line(&mut s).await.unwrap(), "b", "{source}");
        held.push(s);
        if held.len() == 500 {
            held.clear();
        }
    }
    let stats = handle.stats();
    assert_eq!((stats.proxy.rate_limited, stats.listeners[0].untracked), (0, 0));
    drop(held);
    handle.shutdown();
    task.await.unwrap();
    backend.abort();
}
