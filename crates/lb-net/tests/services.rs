//! Several pools and listeners in one balancer, over real sockets on 127.0.0.1: routing,
//! commands naming `POOL/HOST:PORT`, per-pool stats and metrics, and live changes.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use lb_core::Pool;
use lb_net::admin::StatsJson;
use lb_net::{
    bind_shared, Balancer, Handle, ListenerConfig, PoolSettings, ProxyConfig, Summary, TcpConnector,
};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

/// A pool of named TCP backends.
async fn pool_of(names: &[&'static str]) -> (Pool, Vec<(SocketAddr, JoinHandle<()>)>) {
    let pool = Pool::default();
    let mut backends = Vec::new();
    for name in names {
        let (addr, task) = tcp_named_backend(name).await;
        pool.add(addr, None).unwrap();
        backends.push((addr, task));
    }
    (pool, backends)
}

/// Binds one socket on 127.0.0.1:0 and adds a listener named `name` routing to `pool`.
fn listen(handle: &Handle, name: &str, pool: &str) -> SocketAddr {
    let sockets = bind_shared("127.0.0.1:0".parse().unwrap(), 1).unwrap();
    let addr = sockets[0].local_addr().unwrap();
    handle.add_listener(ListenerConfig::to_pool(name, pool), sockets).unwrap();
    addr
}

/// An empty balancer with pools `web` (two backends) and `db` (one), a listener for each, and
/// its supervisor running.
async fn two_services() -> (
    Handle,
    SocketAddr,
    SocketAddr,
    Vec<(SocketAddr, JoinHandle<()>)>,
    JoinHandle<lb_net::ShutdownReport>,
) {
    let balancer = Balancer::empty(TcpConnector, ProxyConfig::default());
    let handle = balancer.handle();
    let (web, mut backends) = pool_of(&["web-1", "web-2"]).await;
    let (db, more) = pool_of(&["db-1"]).await;
    backends.extend(more);
    handle.add_pool("web", web, PoolSettings::default()).unwrap();
    handle.add_pool("db", db, PoolSettings::default()).unwrap();
    let web_addr = listen(&handle, "web-in", "web");
    let db_addr = listen(&handle, "db-in", "db");
    let task = tokio::spawn(balancer.supervise(std::future::pending()));
    (handle, web_addr, db_addr, backends, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_listeners_reach_their_own_pools_with_separate_stats() {
    let (handle, web, db, backends, task) = two_services().await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(tcp_greeting(web).await.unwrap().1);
    }
    seen.sort();
    assert_eq!(seen, ["web-1", "web-1", "web-2", "web-2"]);
    assert_eq!(tcp_greeting(db).await.unwrap().1, "db-1");
    eventually(Duration::from_secs(5), "connections accounted", || async {
        handle.stats().proxy.open == 0
    })
    .await;
    let stats = handle.stats();
    assert_eq!(stats.pool_named("web").unwrap().totals.connections, 4);
    assert_eq!(stats.pool_named("db").unwrap().totals.connections, 1);
    let accepted: Vec<(String, u64)> =
        stats.listeners.iter().map(|l| (l.name.clone(), l.accepted)).collect();
    assert_eq!(accepted, [("web-in".to_owned(), 4), ("db-in".to_owned(), 1)]);
    // The table: a heading per pool.
    let text = handle.execute("stats").await.unwrap().to_string();
    assert!(text.starts_with("up "), "{text}");
    assert!(text.contains("pool web: algorithm round_robin, 2 of 2 backends available"), "{text}");
    assert!(text.contains("pool db: algorithm round_robin, 1 of 1 backends available"), "{text}");
    let only_db = handle.execute("stats db").await.unwrap().to_string();
    assert!(
        only_db.starts_with("pool db: algorithm round_robin") && !only_db.contains("web"),
        "{only_db}"
    );
    // JSON: each pool, and every backend with its pool.
    let json = StatsJson::from(&stats);
    assert_eq!(json.pools.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["web", "db"]);
    assert_eq!(json.backends.iter().filter(|b| b.pool == "web").count(), 2);
    assert_eq!(json.totals.counters["total"], 5);
    handle.shutdown();
    task.await.unwrap();
    backends.into_iter().for_each(|(_, t)| t.abort());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_name_a_backend_by_its_pool() {
    let (handle, web, _db, backends, task) = two_services().await;
    let (w1, w2, d1) = (backends[0].0, backends[1].0, backends[2].0);
    let reply = handle.execute(&format!("drain web/{w1}")).await.unwrap().to_string();
    assert_eq!(reply, format!("draining web/{w1}: no new connections, open ones continue"));
    for _ in 0..3 {
        assert_eq!(tcp_greeting(web).await.unwrap().1, "web-2");
    }
    // Without a pool, a backend only one pool has is found there.
    handle.execute(&format!("enable {w1}")).await.unwrap();
    // A backend in the wrong pool, or a pool that does not exist, is an error naming it.
    let e = handle.execute(&format!("drain db/{w2}")).await.unwrap_err().to_string();
    assert!(e.contains(&w2.to_string()), "{e}");
    let e = handle.execute(&format!("drain cache/{w2}")).await.unwrap_err().to_string();
    assert_eq!(e, "no pool named \"cache\" (pools: web, db)");
    // With several pools, adding needs the pool.
    let e = handle.execute(&format!("add {d1}")).await.unwrap_err().to_string();
    assert_eq!(e, "add: name the pool, one of web, db");
    let reply = handle.execute(&format!("add db {w1} weight=2")).await.unwrap().to_string();
    assert_eq!(reply, format!("added db/{w1} (weight 2, ready)"));
    // Now two pools have w1: naming it alone is ambiguous, and the answer says how to write it.
    let e = handle.execute(&format!("drain {w1}")).await.unwrap_err().to_string();
    assert_eq!(e, format!("{w1} is in pools web and db: name one, e.g. `drain web/{w1}`"));
    let reply = handle.execute("algorithm db least_connections").await.unwrap().to_string();
    assert_eq!(reply, "db: algorithm least_connections");
    let reply = handle.execute("algorithm").await.unwrap().to_string();
    assert!(reply.starts_with("algorithms: web round_robin, db least_connections"), "{reply}");
    let e = handle.execute("algorithm p2c").await.unwrap_err().to_string();
    assert_eq!(e, "algorithm: name the pool, one of web, db");
    let e = handle.execute("algorithm fastest").await.unwrap_err().to_string();
    assert!(
        e.starts_with("no algorithm or pool named \"fastest\": algorithms are round_robin"),
        "{e}"
    );
    let health = handle.execute("health").await.unwrap().to_string();
    assert!(health.contains("pool web:\n") && health.contains("pool db:\n"), "{health}");
    handle.shutdown();
    task.await.unwrap();
    backends.into_iter().for_each(|(_, t)| t.abort());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_and_listeners_come_and_go_while_connections_finish() {
    let (handle, web, db, backends, task) = two_services().await;
    // A long-lived connection through the db listener.
    let (mut held, name) = tcp_greeting(db).await.unwrap();
    assert_eq!(name, "db-1");
    // A new pool and a listener for it, added live.
    let (cache, more) = pool_of(&["cache-1"]).await;
    handle.add_pool("cache", cache, PoolSettings::default()).unwrap();
    let cache_addr = listen(&handle, "cache-in", "cache");
    assert_eq!(tcp_greeting(cache_addr).await.unwrap().1, "cache-1");
    // A pool a listener routes to cannot go; the listener first.
    let e = handle.remove_pool("db").unwrap_err().to_string();
    assert_eq!(e, "pool \"db\" is used by listener db-in");
    let before = StatsJson::from(&handle.stats()).totals;
    handle.remove_listener("db-in").unwrap();
    handle.remove_pool("db").unwrap();
    // While its connection is open, the removed pool is still shown, marked so.
    let stats = handle.stats();
    let removed = stats.pools.iter().find(|p| p.name == "db").unwrap();
    assert!(removed.removed && removed.stats.totals.active == 1, "{removed:?}");
    // The status line's summary says what the totals say: the removed pool's backends no
    // longer counted, its connection still open.
    eventually(Duration::from_secs(5), "only the held connection open", || async {
        handle.stats().proxy.open == 1
    })
    .await;
    let (stats, summary) = (handle.stats(), handle.summary());
    let totals = stats.totals();
    let expected = Summary { backends: 3, available: 3, open: 1 };
    assert_eq!(summary, expected);
    assert_eq!((totals.backends, totals.available, stats.proxy.open), (3, 3, 1));
    assert!(handle
        .execute("stats")
        .await
        .unwrap()
        .to_string()
        .contains("pool db (removed): 1 connections still open"));
    // The removed listener accepts no more...
    eventually(Duration::from_secs(5), "the db listener closed", || async {
        tokio::net::TcpStream::connect(db).await.is_err()
    })
    .await;
    // ... but the connection it accepted carries on to its end.
    held.write_all(b"still here\n").await.unwrap();
    assert_eq!(read_line(&mut held).await.unwrap(), "still here");
    drop(held);
    assert!(tcp_greeting(web).await.unwrap().1.starts_with("web-"));
    // Once it has ended, the pool is gone from the list, and the totals kept what it did.
    eventually(Duration::from_secs(5), "the removed pool retired", || async {
        handle.stats().pools.iter().all(|p| p.name != "db")
    })
    .await;
    let after = StatsJson::from(&handle.stats());
    assert!(after.totals.counters["total"] > before.counters["total"], "{after:?}");
    assert_eq!(after.retired_pools.backends, 1);
    assert!(after.totals.counters["bytes_in"] >= before.counters["bytes_in"]);
    assert_eq!(handle.pool_names(), ["web", "cache"]);
    let names: Vec<String> = handle.listeners().into_iter().map(|(c, _)| c.name).collect();
    assert_eq!(names, ["web-in", "cache-in"]);
    // A listener to an unknown pool, or a second one by the same name, is refused.
    let sockets = bind_shared("127.0.0.1:0".parse().unwrap(), 1).unwrap();
    let e = handle.add_listener(ListenerConfig::to_pool("x", "nope"), sockets).unwrap_err();
    assert_eq!(e.to_string(), "listener x: no pool named \"nope\"");
    let sockets = bind_shared("127.0.0.1:0".parse().unwrap(), 1).unwrap();
    let e = handle.add_listener(ListenerConfig::to_pool("web-in", "web"), sockets).unwrap_err();
    assert_eq!(e.to_string(), "a listener named \"web-in\" exists");
    handle.shutdown();
    task.await.unwrap();
    backends.into_iter().chain(more).for_each(|(_, t)| t.abort());
}

/// A listener's congestion control is set on its sockets when it is added and changed on them
/// live, and one the kernel lacks is refused with nothing changed.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listeners_congestion_control_is_set_and_changed_on_its_sockets() {
    use lb_net::CongestionControl;
    let system = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control").unwrap();
    let system = system.trim().to_owned();
    let (handle, _web, _db, backends, task) = two_services().await;
    let sockets = bind_shared("127.0.0.1:0".parse().unwrap(), 2).unwrap();
    let ours: Vec<_> = sockets.iter().map(|s| s.try_clone().unwrap()).collect();
    let reno = CongestionControl::Named("reno".into());
    let config =
        ListenerConfig { congestion_control: reno, ..ListenerConfig::to_pool("cc", "web") };
    handle.add_listener(config.clone(), sockets).unwrap();
    assert!(ours.iter().all(|s| CongestionControl::of(s).as_deref() == Some("reno")));
    let shown = |handle: &Handle| {
        let stats = handle.stats();
        let listener = stats.listeners.iter().find(|l| l.name == "cc").unwrap();
        let json = serde_json::to_value(StatsJson::from(&stats)).unwrap();
        let listed = json["listeners"].as_array().unwrap().iter().find(|l| l["name"] == "cc");
        assert_eq!(
            listed.unwrap()["congestion_control"].as_str(),
            listener.congestion_control.as_deref()
        );
        listener.congestion_control.clone()
    };
    assert_eq!(shown(&handle).as_deref(), Some("reno"), "what /stats says");

    let mut changed = config.clone();
    changed.congestion_control = CongestionControl::System;
    handle.set_listener(changed.clone()).unwrap();
    assert!(
        ours.iter().all(|s| CongestionControl::of(s).as_ref() == Some(&system)),
        "now the system's {system}"
    );
    assert_eq!(shown(&handle), Some(system.clone()));

    let mut bad = changed.clone();
    bad.congestion_control = CongestionControl::Named("no-such-cc".into());
    let e = handle.set_listener(bad).unwrap_err().to_string();
    assert!(e.starts_with("listener cc: congestion control no-such-cc: "), "{e}");
    assert!(ours.iter().all(|s| CongestionControl::of(s).as_ref() == Some(&system)), "unchanged");
    let kept = handle.listeners().into_iter().find(|(c, _)| c.name == "cc").unwrap().0;
    assert_eq!(kept, changed, "the refused change left the listener's settings as they were");

    // Refused at once when adding, too: no listener half made.
    let sockets = bind_shared("127.0.0.1:0".parse().unwrap(), 1).unwrap();
    let config = ListenerConfig {
        congestion_control: CongestionControl::Named("no-such-cc".into()),
        ..ListenerConfig::to_pool("cc2", "web")
    };
    assert!(handle.add_listener(config, sockets).is_err());
    assert!(handle.listeners().iter().all(|(c, _)| c.name != "cc2"));
    handle.shutdown();
    task.await.unwrap();
    backends.into_iter().for_each(|(_, t)| t.abort());
}
