//! How connections end, over real sockets on 127.0.0.1: the relay learns of an end of stream
//! from the socket's readiness where it can (no read that returns 0), and a backend
//! connection's outcome from its first readiness event (no `getsockopt`). Neither may lose a
//! byte or an end of stream.

#[macro_use]
mod support;

use std::time::Duration;

use lb_net::{HealthCheckConfig, ProxyConfig};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn no_checks() -> HealthCheckConfig {
    HealthCheckConfig { enabled: false, ..HealthCheckConfig::default() }
}

each_engine! {
async fn an_answer_and_its_close_arriving_together_reach_the_client_whole(io) {
    // Answer and close at once, as an HTTP server with `Connection: close` does: the FIN often
    // arrives before the balancer reads the answer, which is then known to be the last read.
    let (backend, backend_task) = tcp_backend(|mut s| async move {
        let mut request = [0u8; 64];
        let n = s.read(&mut request).await.unwrap();
        let mut answer = b"answer to ".to_vec();
        answer.extend_from_slice(&request[..n]);
        s.write_all(&answer).await.unwrap();
    })
    .await;
    let proxy = ProxyConfig { io, ..Default::default() };
    let (lb, handle, task) = start(one_backend_pool(backend), proxy, no_checks()).await;
    for i in 0..200 {
        let mut client = TcpStream::connect(lb).await.unwrap();
        let request = format!("request {i}");
        client.write_all(request.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), format!("answer to {request}"));
    }
    stop(handle, task).await;
    backend_task.abort();
}
}

each_engine! {
async fn a_client_that_closes_first_still_gets_the_backends_bytes(io) {
    // The request and the client's FIN come together; the backend answers only once it has
    // seen the end of the request, so the balancer must pass that end on and keep the other
    // direction open.
    let (backend, backend_task) = tcp_backend(|s| async move {
        let (mut r, mut w) = s.into_split();
        let mut request = Vec::new();
        r.read_to_end(&mut request).await.unwrap();
        let answer = random_bytes(300_000, request.len() as u64);
        w.write_all(&answer).await.unwrap();
        w.shutdown().await.unwrap();
    })
    .await;
    let proxy = ProxyConfig { io, ..Default::default() };
    let (lb, handle, task) = start(one_backend_pool(backend), proxy, no_checks()).await;
    for len in [1usize, 100, 5_000] {
        let mut client = TcpStream::connect(lb).await.unwrap();
        client.write_all(&vec![b'x'; len]).await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert!(
            got == random_bytes(300_000, len as u64),
            "whole answer after a {len}-byte request"
        );
    }
    stop(handle, task).await;
    backend_task.abort();
}
}

each_engine! {
async fn bytes_after_a_short_read_are_not_taken_for_the_end(io) {
    // The first part is read (a short read) before the second part and the FIN exist: the
    // second part must still be relayed.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let (first_seen, wait_first) = tokio::sync::oneshot::channel::<()>();
    let backend_task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(b"first part;").await.unwrap();
        wait_first.await.unwrap();
        s.write_all(b"second part").await.unwrap();
    });
    let proxy = ProxyConfig { io, ..Default::default() };
    let (lb, handle, task) = start(one_backend_pool(backend), proxy, no_checks()).await;
    let mut client = TcpStream::connect(lb).await.unwrap();
    let mut first = [0u8; 11];
    client.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"first part;");
    first_seen.send(()).unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"second part");
    backend_task.await.unwrap();
    stop(handle, task).await;
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_backend_connection_is_still_a_failed_connect() {
    // A port nobody listens on: the connect's failure is read from its readiness event.
    let held = HeldPort::refusing();
    let closed = held.addr();
    let (good, good_task) = tcp_backend(|mut s| async move {
        s.write_all(b"served").await.unwrap();
    })
    .await;
    let pool = one_backend_pool(closed);
    pool.add(good, None).unwrap();
    let (lb, handle, task) = start(pool, ProxyConfig::default(), no_checks()).await;
    for _ in 0..4 {
        let mut client = TcpStream::connect(lb).await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"served", "the refused backend is retried around");
    }
    eventually(Duration::from_secs(10), "refusals counted", || async {
        handle.stats().proxy.retries >= 1
    })
    .await;
    stop(handle, task).await;
    good_task.abort();
}
