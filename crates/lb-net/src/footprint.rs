//! What an idle connection costs the balancer in memory, bounded by tests: mostly its task,
//! whose future is as large as its largest stage. Held 5,000 times by
//! `benches/compare/run.sh -m`; see docs/performance.md.

use std::sync::Arc;

use lb_core::Pool;
use tokio::net::{TcpListener, TcpStream};

use crate::proxy::Endpoints;
use crate::{Balancer, HealthCheckConfig, ProxyConfig, TcpConnector};

/// The most a plain TCP connection's task may weigh, in bytes (it measures 504 on x86-64 in
/// debug and release builds, its two sockets [`TcpConn`](crate::TcpConn)s; 520 in a debug
/// build with tokio's `TcpStream`s). A stage that needs more (the inspect stage's buffer, the
/// connect's timers) is boxed for the moment it runs, and what only routing or one try needs
/// is scoped so as not to stay for the relay; round 2 had 11 KB here, and 640 bytes before
/// that scoping. At most 536 bytes, tokio's task cell (the future, its header and trailer, in
/// multiples of 128 bytes) takes 640 bytes per connection rather than 768.
const MAX_TASK: usize = 536;

#[tokio::test]
async fn a_connection_task_stays_small() {
    let pool = Pool::default();
    pool.add("127.0.0.1:1".parse().unwrap(), None).unwrap();
    let balancer =
        Balancer::new(pool, TcpConnector, ProxyConfig::default(), HealthCheckConfig::default());
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(socket.local_addr().unwrap()).await.unwrap();
    // As accepted: a connection not registered with the reactor.
    let client = crate::TcpConn::unregistered(client.into_std().unwrap());
    let task = Arc::clone(&balancer.shared).proxy_connection(
        client,
        Endpoints::default(),
        balancer.implicit_listener(),
        None,
        Arc::default(),
    );
    let size = std::mem::size_of_val(&task);
    assert!(size <= MAX_TASK, "a connection's task weighs {size} bytes, more than {MAX_TASK}");
}

/// The most one connection's entry in an io_uring engine's table may weigh: with its task, what
/// an idle connection relayed on the ring costs (its sockets are not registered with tokio's
/// reactor, see `TcpConn`). It measures 336 bytes on x86-64 (416 before): both directions'
/// vectors and counts, the relay's clock and limits (4 bytes each, see `relay::Limit`), with
/// the rarely set end boxed.
#[cfg(target_os = "linux")]
const MAX_RING_ENTRY: usize = 336;

#[cfg(target_os = "linux")]
#[test]
fn a_connection_entry_on_the_ring_stays_small() {
    let size = crate::uring::ENTRY_BYTES;
    assert!(size <= MAX_RING_ENTRY, "a ring entry weighs {size} bytes, more than {MAX_RING_ENTRY}");
}
