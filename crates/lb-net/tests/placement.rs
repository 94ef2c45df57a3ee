//! `Placement::Pack` end to end: a supervised balancer with two single-threaded workers, as
//! the `lb` binary runs it, serves every new connection on one of them.
#![cfg(target_os = "linux")]

#[macro_use]
mod support;

use std::time::Duration;

use lb_net::{
    bind_shared, Balancer, HealthCheckConfig, ListenerConfig, Placement, PoolSettings, ProxyConfig,
    TcpConnector,
};
use support::*;

/// A worker: a single-threaded runtime on its own thread until the balancer has shut down.
fn worker(handle: lb_net::Handle) -> (tokio::runtime::Handle, std::thread::JoinHandle<()>) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let rt = runtime.handle().clone();
    (rt, std::thread::spawn(move || runtime.block_on(handle.drained())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packing_balancer_serves_every_new_connection_on_one_worker() {
    let (backend, task) = tcp_named_backend("b1").await;
    let proxy = ProxyConfig { placement: Placement::Pack, ..ProxyConfig::default() };
    let balancer = Balancer::empty(TcpConnector, proxy);
    let handle = balancer.handle();
    let health = HealthCheckConfig { enabled: false, ..HealthCheckConfig::default() };
    handle
        .add_pool("web", one_backend_pool(backend), PoolSettings { health, ..Default::default() })
        .unwrap();
    let workers = [worker(handle.clone()), worker(handle.clone())];
    balancer.set_workers(workers.iter().map(|(rt, _)| rt.clone()).collect());
    let sockets = bind_shared("127.0.0.1:0".parse().unwrap(), 2).unwrap();
    let addr = sockets[0].local_addr().unwrap();
    handle.add_listener(ListenerConfig::to_pool("front", "web"), sockets).unwrap();
    let supervised = tokio::spawn(balancer.supervise(std::future::pending()));

    // Each worker runs one accept loop; each connection held open is one more task on the
    // worker serving it. The monitor packs within its first steps: until it has, some
    // connections may land on the other worker, so connect in rounds until one round of 20
    // lands whole on one worker.
    let tasks = |i: usize| workers[i].0.metrics().num_alive_tasks();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let before = [tasks(0), tasks(1)];
        let mut round = Vec::new();
        for _ in 0..20 {
            round.push(tcp_greeting(addr).await.unwrap().0);
        }
        let after = [tasks(0), tasks(1)];
        let grew = [after[0].saturating_sub(before[0]), after[1].saturating_sub(before[1])];
        if grew.contains(&20) && grew.contains(&0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never packed: {grew:?}");
        drop(round);
        eventually(Duration::from_secs(10), "the round's connections ended", || async {
            tasks(0) <= before[0] && tasks(1) <= before[1]
        })
        .await;
    }
    let stats = handle.stats();
    assert_eq!((stats.proxy.placement_spreads, stats.proxy.placement_packs), (0, 0));
    assert!(stats.placement_packed);
    stop(handle, supervised).await;
    for (_, thread) in workers {
        thread.join().unwrap();
    }
    task.abort();
}
