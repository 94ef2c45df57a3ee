//! What an idle connection costs the balancer in memory, bounded by tests: mostly its task,
//! whose future is as large as its largest stage. Held 5,000 times by
//! `benches/compare/run.sh -m`; see docs/performance.md.

use std::sync::Arc;

use lb_core::Pool;
use tokio::net::{TcpListener, TcpStream};

use crate::proxy::Endpoints;
use crate::{Balancer, HealthCheckConfig, ProxyConfig, TcpConnector};

/// The most a plain TCP connection's task may weigh, in bytes (it measures 912 on x86-64 in a
/// debug build; a release build measured the same or a little less). A stage that needs more
/// (the inspect stage's buffer, the connect's timers) is boxed for the moment it runs; round 2
/// had 11 KB here.
const MAX_TASK: usize = 1024;

#[tokio::test]
async fn a_connection_task_stays_small() {
    let pool = Pool::default();
    pool.add("127.0.0.1:1".parse().unwrap(), None).unwrap();
    let balancer =
        Balancer::new(pool, TcpConnector, ProxyConfig::default(), HealthCheckConfig::default());
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(socket.local_addr().unwrap()).await.unwrap();
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
