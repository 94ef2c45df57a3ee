//! Drains watched to their end: `drain <backend> [deadline=...] [remove]` closes what is still
//! open when the deadline passes (access log `drained`), removes the backend if asked, and is
//! cancelled by `enable`. On in-memory backends with the clock paused, so deadlines are exact
//! and the tests take no time.

mod support;

use std::time::Duration;

use lb_core::Pool;
use lb_net::{
    Balancer, DrainOutcome, DrainStatus, Handle, HealthCheckConfig, MemoryConnector, ProxyConfig,
};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const LIMIT: Duration = Duration::from_secs(600);

/// The termination word of each access line captured so far.
fn terminations(log: &Capture) -> Vec<String> {
    log.lines().iter().filter_map(|l| l.split_whitespace().nth(6).map(str::to_owned)).collect()
}

struct Setup {
    balancer: Balancer<MemoryConnector>,
    _connector: MemoryConnector,
}

fn two_backends() -> Setup {
    let pool = Pool::default();
    let connector = MemoryConnector::new();
    for i in [1, 2] {
        pool.add(mem_addr(i), None).unwrap();
        named_memory_backend(&connector, mem_addr(i), &format!("b{i}"));
    }
    let health = HealthCheckConfig { enabled: false, ..HealthCheckConfig::default() };
    Setup {
        balancer: Balancer::new(pool, connector.clone(), ProxyConfig::default(), health),
        _connector: connector,
    }
}

/// Opens `n` clients and returns them with the backend each reached.
async fn clients(balancer: &Balancer<MemoryConnector>, n: usize) -> Vec<(DuplexStream, String)> {
    let mut all = Vec::new();
    for i in 0..n {
        let (mut client, theirs) = memory_client();
        balancer
            .serve_connection(theirs, Some(format!("192.0.2.7:{}", 40000 + i).parse().unwrap()));
        let name = read_line(&mut client).await.unwrap();
        all.push((client, name));
    }
    all
}

/// Whether the client's connection still relays: an echo comes back.
async fn echoes(client: &mut DuplexStream) -> bool {
    if client.write_all(b"ping\n").await.is_err() {
        return false;
    }
    matches!(read_line(client).await.as_deref(), Ok("ping"))
}

/// Whether the balancer closed the client's connection.
async fn closed(client: &mut DuplexStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(client.read(&mut byte).await, Ok(0) | Err(_))
}

fn drain_of(handle: &Handle) -> DrainStatus {
    let stats = handle.stats();
    let drains = &stats.pools[0].drains;
    assert_eq!(drains.len(), 1, "{drains:?}");
    drains[0].clone()
}

#[tokio::test(start_paused = true)]
async fn the_deadline_closes_only_what_is_still_open_then_the_backend_is_removed() {
    let log = Capture::default();
    let _g = log.install();
    let Setup { balancer, _connector } = two_backends();
    let handle = balancer.handle();
    let mut open = clients(&balancer, 4).await;
    let on_b1 = open.iter().filter(|(_, n)| n == "b1").count();
    assert_eq!(on_b1, 2, "round robin over two backends");

    let reply = handle.execute("drain 10.99.0.1:7000 deadline=60s remove").await.unwrap();
    assert_eq!(
        reply.to_string(),
        "draining 10.99.0.1:7000: no new connections, open ones continue for up to 1m00s, then are closed; removed once empty"
    );
    // No new connection goes there.
    for (_, name) in clients(&balancer, 3).await {
        assert_eq!(name, "b2");
    }
    // One of b1's clients ends on its own before the deadline: a normal end.
    let at = open.iter().position(|(_, n)| n == "b1").unwrap();
    let (mut leaving, _) = open.remove(at);
    leaving.shutdown().await.unwrap();
    assert!(closed(&mut leaving).await);
    eventually(LIMIT, "b1 down to one open", || async { drain_of(&handle).open == 1 }).await;
    let text = handle.stats().to_string();
    let note = text.lines().find(|l| l.starts_with("(drain: ")).unwrap_or_else(|| panic!("{text}"));
    assert!(note.starts_with("(drain: 10.99.0.1:7000 has 1 connection open, closed in "), "{note}");
    assert!(note.ends_with(", then removed)"), "{note}");
    assert!(drain_of(&handle).remaining.unwrap() <= Duration::from_secs(60));

    // The deadline passes: the one still open on b1 is closed, b2's are untouched.
    tokio::time::sleep(Duration::from_secs(61)).await;
    let (b1, mut b2): (Vec<_>, Vec<_>) = open.into_iter().partition(|(_, n)| n == "b1");
    for (mut client, _) in b1 {
        assert!(closed(&mut client).await);
    }
    for (client, _) in &mut b2 {
        assert!(echoes(client).await);
    }
    eventually(LIMIT, "the drain's end", || async { drain_of(&handle).outcome.is_some() }).await;
    let drain = drain_of(&handle);
    assert_eq!(drain.outcome, Some(DrainOutcome::Cut(1)));
    assert!(drain.removed);
    assert!(handle.pool().get(mem_addr(1)).is_none(), "removed after the deadline");
    assert_eq!(handle.stats().proxy.drained, 1);
    eventually(LIMIT, "the access line", || async {
        terminations(&log).iter().filter(|t| *t == "drained").count() == 1
    })
    .await;
    // The client that left before the deadline, and the three new ones (to b2), ended
    // normally.
    assert_eq!(terminations(&log).iter().filter(|t| *t == "normal").count(), 4);
    // The end of the drain is among the recent events.
    let events = handle.stats().events;
    assert!(events
        .iter()
        .any(|e| e.text.contains("deadline passed: closed 1 connection; removed")));
}

#[tokio::test(start_paused = true)]
async fn enable_cancels_the_countdown_and_a_new_drain_replaces_it() {
    let log = Capture::default();
    let _g = log.install();
    let Setup { balancer, _connector } = two_backends();
    let handle = balancer.handle();
    let mut open = clients(&balancer, 2).await;
    handle.execute("drain 10.99.0.1:7000 deadline=10s remove").await.unwrap();
    let reply = handle.execute("enable 10.99.0.1:7000").await.unwrap().to_string();
    assert_eq!(reply, "10.99.0.1:7000 ready; its drain's countdown is cancelled");
    assert_eq!(drain_of(&handle).outcome, Some(DrainOutcome::Cancelled("enable")));
    let events = handle.stats().events;
    assert!(events.iter().any(|e| e.text == "drain of 10.99.0.1:7000: cancelled by enable"));

    // Long past the deadline: nothing was closed, nothing removed.
    tokio::time::sleep(Duration::from_secs(30)).await;
    for (client, _) in &mut open {
        assert!(echoes(client).await);
    }
    assert!(handle.pool().get(mem_addr(1)).is_some());
    assert!(!terminations(&log).iter().any(|t| t == "drained"));

    // A drain of a backend being drained replaces the first.
    handle.execute("drain 10.99.0.1:7000 deadline=10s").await.unwrap();
    handle.execute("drain 10.99.0.1:7000").await.unwrap();
    let drains = handle.stats().pools[0].drains.clone();
    let outcomes: Vec<_> = drains.iter().map(|d| d.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Some(DrainOutcome::Cancelled("enable")),
            Some(DrainOutcome::Cancelled("a new drain")),
            None
        ]
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    for (client, _) in &mut open {
        assert!(echoes(client).await, "the drain without a deadline closes nothing");
    }
}

#[tokio::test(start_paused = true)]
async fn a_drain_that_empties_removes_the_backend_at_once() {
    let Setup { balancer, _connector } = two_backends();
    let handle = balancer.handle();
    let open = clients(&balancer, 2).await;
    handle.execute("drain 10.99.0.1:7000 remove").await.unwrap();
    assert!(drain_of(&handle).outcome.is_none());
    assert!(drain_of(&handle).remaining.is_none(), "no deadline");
    for (mut client, name) in open {
        if name == "b1" {
            client.shutdown().await.unwrap();
            assert!(closed(&mut client).await);
        }
    }
    eventually(LIMIT, "the drain's end", || async { drain_of(&handle).outcome.is_some() }).await;
    let drain = drain_of(&handle);
    assert_eq!((drain.outcome, drain.removed), (Some(DrainOutcome::Emptied), true));
    assert!(handle.pool().get(mem_addr(1)).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_deadline_beyond_any_clock_is_shown_and_cancelled_without_overflow() {
    let Setup { balancer, _connector } = two_backends();
    let handle = balancer.handle();
    let _open = clients(&balancer, 2).await;
    let reply = handle.execute("drain 10.99.0.1:7000 deadline=18446744073709551615h").await;
    assert!(reply.is_ok(), "{reply:?}");
    let text = handle.stats().to_string();
    assert!(text.contains("(drain: 10.99.0.1:7000 has 1 connection open, closed in "), "{text}");
    // (Less than the idle timeout, which would end the connection and so the drain.)
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(drain_of(&handle).outcome.is_none());
    handle.execute("maint 10.99.0.1:7000").await.unwrap();
    assert_eq!(drain_of(&handle).outcome, Some(DrainOutcome::Cancelled("maint")));
}

#[tokio::test(start_paused = true)]
async fn a_state_changed_other_than_by_command_cancels_the_countdown() {
    let log = Capture::default();
    let _g = log.install();
    let Setup { balancer, _connector } = two_backends();
    let handle = balancer.handle();
    let mut open = clients(&balancer, 2).await;
    handle.execute("drain 10.99.0.1:7000 deadline=5s remove").await.unwrap();
    // As a reload or an embedding program does it: on the pool, not through a command.
    handle.pool().set_admin_state(mem_addr(1), lb_core::AdminState::Ready).unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        drain_of(&handle).outcome,
        Some(DrainOutcome::Cancelled("a change of state to ready"))
    );
    for (client, _) in &mut open {
        assert!(echoes(client).await);
    }
    assert!(handle.pool().get(mem_addr(1)).is_some(), "not removed");
    assert!(!terminations(&log).iter().any(|t| t == "drained"));
}
