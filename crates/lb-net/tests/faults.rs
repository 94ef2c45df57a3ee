//! Backends that accept and then say nothing, over real sockets on 127.0.0.1: passive health
//! for resets and closes before the first byte, replay on another backend (`retry_on_empty`),
//! and the half-close and first-byte timeouts.

#[macro_use]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lb_core::{Health, Pool};
use lb_net::{HealthCheckConfig, ProxyConfig};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// A backend that accepts and at once resets every connection (linger 0, then close).
async fn resetting_backend() -> (SocketAddr, JoinHandle<()>) {
    tcp_backend(|s| async move {
        socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
        drop(s);
    })
    .await
}

/// A backend that accepts, reads everything until the client's end, and never writes.
async fn silent_backend() -> (SocketAddr, JoinHandle<()>) {
    tcp_backend(|mut s| async move {
        let _ = s.read_to_end(&mut Vec::new()).await;
        // Hold the connection open after the client's end, saying nothing.
        std::future::pending::<()>().await;
        drop(s);
    })
    .await
}

/// A backend that reads until the client's end and then closes without a word (a log sink).
async fn sink_backend() -> (SocketAddr, JoinHandle<()>) {
    tcp_backend(|mut s| async move {
        let _ = s.read_to_end(&mut Vec::new()).await;
    })
    .await
}

/// Checks configured (so failures from traffic count) but too far apart to matter here.
fn passive_only() -> HealthCheckConfig {
    HealthCheckConfig { interval: Duration::from_secs(3600), ..HealthCheckConfig::default() }
}

/// Sends `request`, half-closes, and reads the whole answer (empty if closed or reset: a
/// backend's reset passed on can come even before the connect is seen to complete, or before
/// the write or the half-close, which then fail).
async fn ask(lb: SocketAddr, request: &[u8]) -> Vec<u8> {
    let Ok(mut s) = TcpStream::connect(lb).await else { return Vec::new() };
    if s.write_all(request).await.is_err() || s.shutdown().await.is_err() {
        return Vec::new();
    }
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer).await;
    answer
}

each_engine! {
async fn a_backend_that_resets_before_a_byte_is_taken_down_within_fall_connections(io) {
    let (bad, t1) = resetting_backend().await;
    let (good, t2) = tcp_named_backend("good").await;
    let pool = Pool::default();
    pool.add(bad, None).unwrap();
    pool.add(good, None).unwrap();
    let proxy = ProxyConfig { io, observe_empty: true, ..ProxyConfig::default() };
    let (lb, handle, task) = start(pool, proxy, passive_only()).await;
    // The checker's first round runs at start (and a TCP check of a backend that accepts
    // passes, which would restart the count): let it finish first.
    eventually(Duration::from_secs(10), "the first checks", || async {
        handle.health().iter().all(|(_, status)| status.is_some())
    })
    .await;
    // That check connects and is then reset: it may pass or, if the reset wins, fail (a
    // failure towards `fall` too).
    let check_failed = handle.health()[0].1.as_ref().unwrap().result.is_err();
    let expected_failures = if check_failed { 2 } else { 3 };
    // Round robin sends every other client to the bad backend until `fall` (3) of them have
    // been reset; each counts like a failed connect.
    for _ in 0..10 {
        let _ = ask(lb, b"ping").await;
        if handle.stats().pool().backend(bad).unwrap().health == Health::Down {
            break;
        }
    }
    let stats = handle.stats();
    let b = stats.pool().backend(bad).unwrap();
    assert_eq!((b.health, b.connect_failures), (Health::Down, expected_failures), "{b:?}");
    // `health` agrees with `stats`, and says why.
    let health = handle.execute("health").await.unwrap().to_string();
    let line = health.lines().find(|l| l.starts_with(&bad.to_string())).unwrap();
    // (The reset can also win the race with the connect itself, or hit the check.)
    let down = line.contains("  DOWN    ") || line.contains("  FAILED  ");
    assert!(down && line.contains("reset"), "{health}");
    // From now on every client gets an answer.
    for _ in 0..4 {
        assert!(ask(lb, b"ping").await.starts_with(b"good\n"));
    }
    stop(handle, task).await;
    t1.abort();
    t2.abort();
}
}

each_engine! {
async fn a_backend_reset_before_a_byte_reaches_the_client_as_a_reset(io) {
    // Reads the request, then resets without answering.
    let (bad, t1) = tcp_backend(|mut s| async move {
        let _ = s.read(&mut [0u8; 64]).await;
        socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
        drop(s);
    })
    .await;
    let pool = Pool::default();
    pool.add(bad, None).unwrap();
    let proxy = ProxyConfig { io, ..ProxyConfig::default() };
    let (lb, handle, task) = start(pool, proxy, passive_only()).await;
    for _ in 0..3 {
        let mut s = TcpStream::connect(lb).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut answer = Vec::new();
        let e = s.read_to_end(&mut answer).await.expect_err("a reset, not an empty answer");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
        assert!(answer.is_empty());
    }
    stop(handle, task).await;
    t1.abort();
}
}

each_engine! {
async fn with_retry_on_empty_no_client_sees_an_empty_reply(io) {
    let (bad, t1) = resetting_backend().await;
    let (good, t2) = tcp_named_backend("good").await;
    let pool = Pool::default();
    pool.add(bad, None).unwrap();
    pool.add(good, None).unwrap();
    let proxy = ProxyConfig { io, retry_on_empty: true, ..ProxyConfig::default() };
    // No health checks at all: the bad backend stays in rotation, and every client sent to it
    // must be replayed on the good one.
    let no_checks = HealthCheckConfig { enabled: false, ..HealthCheckConfig::default() };
    let (lb, handle, task) = start(pool, proxy, no_checks).await;
    for i in 0..20 {
        let request = format!("request {i}");
        let answer = ask(lb, request.as_bytes()).await;
        assert_eq!(answer, format!("good\n{request}").into_bytes(), "client {i}");
    }
    eventually(Duration::from_secs(5), "connections accounted", || async {
        handle.stats().proxy.open == 0
    })
    .await;
    let stats = handle.stats();
    let b = stats.pool().backend(bad).unwrap();
    // Round robin offers the bad backend first to every client (each takes two picks), and
    // each is replayed once on the good one.
    assert!(b.retries >= 1, "{b:?}");
    assert_eq!(stats.proxy.retries, b.retries, "every empty answer was replayed");
    // Every request reached the good backend once: "request 0".."request 19".
    assert_eq!(stats.pool().backend(good).unwrap().bytes_in, 10 * 9 + 10 * 10);
    stop(handle, task).await;
    t1.abort();
    t2.abort();
}
}

each_engine! {
async fn a_backend_that_never_answers_a_half_closed_client_is_cut_at_client_fin(io) {
    let (backend, t) = silent_backend().await;
    let proxy = ProxyConfig {
        io,
        client_fin_timeout: Some(Duration::from_millis(300)),
        server_timeout: None,
        ..ProxyConfig::default()
    };
    let (lb, handle, task) = start(one_backend_pool(backend), proxy, passive_only()).await;
    let started = Instant::now();
    let answer = ask(lb, b"request").await;
    let waited = started.elapsed();
    assert!(answer.is_empty());
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(30), "{waited:?}");
    // Not the backend's fault as far as health goes: it took the bytes.
    assert_eq!(handle.stats().pool().backend(backend).unwrap().connect_failures, 0);
    stop(handle, task).await;
    t.abort();
}
}

each_engine! {
async fn a_backend_that_accepted_and_hung_is_cut_at_server_timeout(io) {
    let (backend, t) = silent_backend().await;
    let proxy =
        ProxyConfig { io, server_timeout: Some(Duration::from_millis(300)), ..Default::default() };
    let (lb, handle, task) = start(one_backend_pool(backend), proxy, passive_only()).await;
    let mut s = TcpStream::connect(lb).await.unwrap();
    s.write_all(b"request").await.unwrap();
    let started = Instant::now();
    // The client keeps its side open, waiting for an answer that never comes.
    let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut [0u8; 16])).await.unwrap();
    assert_eq!(n.unwrap_or(0), 0);
    assert!(started.elapsed() < Duration::from_secs(20));
    stop(handle, task).await;
    t.abort();
}
}

each_engine! {
async fn a_sink_that_closes_after_the_client_without_a_word_is_no_failure(io) {
    let (backend, t) = sink_backend().await;
    let proxy = ProxyConfig { io, ..Default::default() };
    let (lb, handle, task) = start(one_backend_pool(backend), proxy, passive_only()).await;
    for _ in 0..5 {
        assert!(ask(lb, b"log line\n").await.is_empty());
    }
    eventually(Duration::from_secs(5), "connections accounted", || async {
        handle.stats().proxy.open == 0
    })
    .await;
    let stats = handle.stats();
    let b = stats.pool().backend(backend).unwrap();
    assert_eq!((b.connect_failures, b.health, b.bytes_in), (0, Health::Up, 45));
    stop(handle, task).await;
    t.abort();
}
}

each_engine! {
async fn clients_cannot_take_a_backend_down_by_making_it_hang_up(io) {
    // A backend that hangs up without a word on whatever it reads, as a TLS server does on
    // garbage: by default such ends do not count against it.
    let (backend, t) = tcp_backend(|mut s| async move {
        let _ = s.read(&mut [0u8; 64]).await;
    })
    .await;
    let proxy = ProxyConfig { io, ..Default::default() };
    let (lb, handle, task) = start(one_backend_pool(backend), proxy, passive_only()).await;
    for _ in 0..10 {
        let mut s = TcpStream::connect(lb).await.unwrap();
        s.write_all(b"garbage").await.unwrap();
        let _ = s.read(&mut [0u8; 16]).await;
    }
    let stats = handle.stats();
    let b = stats.pool().backend(backend).unwrap();
    assert_eq!((b.health, b.connect_failures), (Health::Up, 0), "{b:?}");
    stop(handle, task).await;
    t.abort();
}
}

each_engine! {
/// A reset on one side is passed on to the other: a client whose answer a backend cut short
/// with a reset is reset too (not given an end of stream that would make the part it got look
/// complete), and a backend whose client reset learns it the same way.
async fn a_reset_on_one_side_resets_the_other(io) {
    let checks = HealthCheckConfig { enabled: false, ..HealthCheckConfig::default() };
    let limit = Duration::from_secs(20);
    // Half an answer, then a reset (SO_LINGER 0 drops what was not yet sent).
    let (cutting, t1) = tcp_backend(|mut s| async move {
        let mut request = [0u8; 4];
        if s.read_exact(&mut request).await.is_ok() {
            let _ = s.write_all(&[b'a'; 20_000]).await;
            socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
        }
    })
    .await;
    let proxy = ProxyConfig { io, ..ProxyConfig::default() };
    let (lb, handle, task) = start(one_backend_pool(cutting), proxy, checks.clone()).await;
    let mut client = TcpStream::connect(lb).await.unwrap();
    client.write_all(b"ask!").await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(limit, client.read_to_end(&mut got)).await.unwrap();
    assert!(got.len() <= 20_000);
    let error = read.expect_err("the client is reset");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
    stop(handle, task).await;
    t1.abort();

    // The other way: the backend reads until the client's reset reaches it.
    let (seen, mut outcome) = tokio::sync::mpsc::unbounded_channel();
    let (reading, t2) = tcp_backend(move |mut s| {
        let seen = seen.clone();
        async move {
            let _ = s.write_all(b"hi\n").await;
            let ended = s.read_to_end(&mut Vec::new()).await.map_err(|e| e.kind());
            let _ = seen.send(ended);
        }
    })
    .await;
    let proxy = ProxyConfig { io, ..ProxyConfig::default() };
    let (lb, handle, task) = start(one_backend_pool(reading), proxy, checks).await;
    let (client, _) = tcp_greeting(lb).await.unwrap();
    socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO)).unwrap();
    drop(client);
    let ended = tokio::time::timeout(limit, outcome.recv()).await.unwrap().unwrap();
    assert_eq!(ended, Err(std::io::ErrorKind::ConnectionReset));
    stop(handle, task).await;
    t2.abort();
}
}
