//! The io_uring relay engine over real sockets on 127.0.0.1: that it runs where asked (and the
//! kernel allows it), hands bulk transfers to epoll's splice without losing a byte, holds a
//! slow reader's bytes without starving other connections, and lets go of a connection
//! whose task is aborted. What both engines must do alike is tested on each of them where it
//! is tested for epoll (`each_engine!` in tcp.rs, ends.rs, faults.rs).
#![cfg(target_os = "linux")]

#[macro_use]
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use lb_net::{HealthCheckConfig, IoEngine, ProxyConfig};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const LIMIT: Duration = Duration::from_secs(20);

fn uring() -> ProxyConfig {
    IoEngine::uring_available().expect(
        "io_uring is not available on this machine (kernel too old, or forbidden by a seccomp \
         policy); the engine's tests need it",
    );
    ProxyConfig { io: IoEngine::Uring, ..ProxyConfig::default() }
}

fn no_checks() -> HealthCheckConfig {
    HealthCheckConfig { interval: Duration::from_secs(3600), ..HealthCheckConfig::default() }
}

/// A backend answering each `N\n` it reads with N bytes of a pattern that depends on N.
async fn sized_backend() -> (SocketAddr, JoinHandle<()>) {
    tcp_backend(|mut s| async move {
        let (r, mut w) = s.split();
        let mut r = tokio::io::BufReader::new(r);
        let mut line = String::new();
        loop {
            line.clear();
            match tokio::io::AsyncBufReadExt::read_line(&mut r, &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let n: usize = line.trim().parse().unwrap();
            if w.write_all(&random_bytes(n, n as u64)).await.is_err() {
                break;
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_of_every_size_on_one_connection_are_exact_and_bulk_moves_to_splice() {
    let (backend, backend_task) = sized_backend().await;
    let (lb, handle, task) = start(one_backend_pool(backend), uring(), no_checks()).await;
    let mut stream = TcpStream::connect(lb).await.unwrap();
    // Around the engine's buffer (16 KiB) and its backpressure mark (64 KiB), then bulk.
    let sizes = [1, 100, 4096, 16383, 16384, 16385, 40_000, 65_535, 65_536, 70_000, 1 << 20, 7];
    for n in sizes {
        stream.write_all(format!("{n}\n").as_bytes()).await.unwrap();
        let mut got = vec![0; n];
        tokio::time::timeout(LIMIT, stream.read_exact(&mut got)).await.unwrap().unwrap();
        assert!(got == random_bytes(n, n as u64), "answer of {n} bytes differs");
    }
    drop(stream);
    eventually(LIMIT, "the connection closed", || async { handle.stats().proxy.open == 0 }).await;
    let stats = handle.stats().proxy;
    assert_eq!(stats.uring_relays, 1, "relayed on the ring");
    assert_eq!(stats.uring_bulk_handoffs, 1, "the 1 MiB answer went on with splice");
    let all = handle.stats();
    let backend_stats = &all.pool().backends[0];
    let asked: usize = sizes.iter().map(|n| format!("{n}\n").len()).sum();
    assert_eq!(backend_stats.bytes_in, asked as u64);
    assert_eq!(backend_stats.bytes_out, sizes.iter().sum::<usize>() as u64);
    stop(handle, task).await;
    backend_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stalls_gets_every_byte_later_and_others_are_served_meanwhile() {
    // Small writes, so the stream stays on the ring (no receive fills a buffer): the engine
    // must pause the backend's receive rather than queue without end.
    let (backend, backend_task) = tcp_backend(|mut s| async move {
        let mut hello = [0; 6];
        if s.read_exact(&mut hello).await.is_err() {
            return;
        }
        if &hello == b"stream" {
            for i in 0..4_000u32 {
                let chunk = random_bytes(1000, u64::from(i));
                if s.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            let _ = s.shutdown().await;
        } else {
            let _ = s.write_all(b"pong!!").await;
        }
    })
    .await;
    let (lb, handle, task) = start(one_backend_pool(backend), uring(), no_checks()).await;
    let mut stalled = TcpStream::connect(lb).await.unwrap();
    stalled.write_all(b"stream").await.unwrap();
    // While it reads nothing, other clients go through the same ring.
    for _ in 0..20 {
        let mut other = TcpStream::connect(lb).await.unwrap();
        other.write_all(b"ping!!").await.unwrap();
        let mut answer = [0; 6];
        tokio::time::timeout(LIMIT, other.read_exact(&mut answer)).await.unwrap().unwrap();
        assert_eq!(&answer, b"pong!!");
    }
    let mut got = Vec::new();
    tokio::time::timeout(LIMIT, stalled.read_to_end(&mut got)).await.unwrap().unwrap();
    let expected: Vec<u8> = (0..4_000u32).flat_map(|i| random_bytes(1000, u64::from(i))).collect();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "the stalled stream's bytes differ");
    // Its end passed on, the relay waits for the client's: close it rather than wait out the
    // shutdown's grace period.
    drop(stalled);
    stop(handle, task).await;
    backend_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_without_grace_cuts_relays_on_the_ring_and_logs_what_they_moved() {
    let (backend, backend_task) = tcp_named_backend("b").await;
    let proxy = ProxyConfig { shutdown_grace: Duration::ZERO, ..uring() };
    // As `start`, with the worker thread's access lines captured.
    let balancer =
        lb_net::Balancer::new(one_backend_pool(backend), lb_net::TcpConnector, proxy, no_checks());
    let handle = balancer.handle();
    let log = Capture::default();
    let (lb, worker, task) = start_on_worker(balancer, Some(log.clone()));
    let mut clients = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(lb).await.unwrap();
        assert_eq!(read_line(&mut stream).await.unwrap(), "b");
        stream.write_all(b"hi\n").await.unwrap();
        assert_eq!(read_line(&mut stream).await.unwrap(), "hi");
        clients.push(stream);
    }
    assert_eq!(handle.stats().proxy.uring_relays, 50);
    // Every relay is aborted in the middle (its task dropped): each client sees its
    // connection end, the balancer finishes, and the worker thread (its ring) ends.
    tokio::time::timeout(LIMIT, stop(handle, task)).await.unwrap();
    for mut stream in clients {
        let mut rest = Vec::new();
        let end = tokio::time::timeout(LIMIT, stream.read_to_end(&mut rest)).await.unwrap();
        assert!(end.is_err() || rest.is_empty(), "nothing more came: {end:?} {rest:?}");
    }
    tokio::task::spawn_blocking(move || worker.join().unwrap()).await.unwrap();
    // Each access line counts what its connection moved before it was cut: 3 bytes in,
    // "b\n" and "hi\n" out.
    let lines = log.lines();
    assert_eq!(lines.len(), 50, "{lines:?}");
    for line in &lines {
        let fields: Vec<&str> = line.split(' ').collect();
        let n = fields.len();
        assert_eq!(&fields[n - 4..n - 1], ["3", "5", "shutdown"], "{line}");
    }
    backend_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_a_thread_cannot_keep_a_ring_relays_use_epoll() {
    // Not started through `start`: the balancer serves on this multi-threaded runtime, whose
    // tasks move between threads, so a per-thread ring cannot serve them.
    let (backend, backend_task) = tcp_named_backend("b").await;
    let balancer = lb_net::Balancer::new(
        one_backend_pool(backend),
        lb_net::TcpConnector,
        uring(),
        no_checks(),
    );
    let handle = balancer.handle();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lb = listener.local_addr().unwrap();
    let task = tokio::spawn(balancer.run(listener, std::future::pending()));
    for _ in 0..5 {
        let mut stream = TcpStream::connect(lb).await.unwrap();
        assert_eq!(read_line(&mut stream).await.unwrap(), "b");
        stream.write_all(b"echo\n").await.unwrap();
        assert_eq!(read_line(&mut stream).await.unwrap(), "echo");
    }
    assert_eq!(handle.stats().proxy.uring_relays, 0);
    stop(handle, task).await;
    backend_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_connect_that_gets_no_answer_times_out_on_the_ring() {
    // A backend whose accept queue is full (backlog 0, one connection never accepted): the
    // kernel drops further SYNs, so a connect to it hangs.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    socket.listen(0).unwrap();
    let hanging = socket.local_addr().unwrap().as_socket().unwrap();
    let _filler = std::net::TcpStream::connect(hanging).unwrap();
    let (answering, backend_task) = tcp_named_backend("b").await;

    let proxy = ProxyConfig { connect_timeout: Duration::from_millis(100), retries: 1, ..uring() };
    let pool = lb_core::Pool::default();
    pool.add(hanging, None).unwrap();
    pool.add(answering, None).unwrap();
    // No health checks: every failure counted is a client's connect.
    let health = HealthCheckConfig { enabled: false, ..HealthCheckConfig::default() };
    let balancer = lb_net::Balancer::new(pool, lb_net::TcpConnector, proxy, health);
    let handle = balancer.handle();
    let (lb, worker, task) = start_on_worker(balancer, None);
    // The hanging backend's connects time out (on the ring: the engine runs from the accept
    // loop's start), and the retry reaches the other.
    for _ in 0..4 {
        let mut stream = TcpStream::connect(lb).await.unwrap();
        let greeting = tokio::time::timeout(LIMIT, read_line(&mut stream)).await.unwrap();
        assert_eq!(greeting.unwrap(), "b");
    }
    let stats = handle.stats();
    assert_eq!(stats.proxy.uring_relays, 4);
    let b = stats.pool().backend(hanging).unwrap();
    assert!(b.connect_failures >= 1, "{b:?}");
    assert_eq!(stats.proxy.retries, b.connect_failures, "each failure retried elsewhere");
    assert_eq!(stats.proxy.connect_failed, 0, "no client failed");
    stop(handle, task).await;
    tokio::task::spawn_blocking(move || worker.join().unwrap()).await.unwrap();
    backend_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_resets_during_a_bulk_answer_is_logged_as_a_reset() {
    // Each answer is bulk (handed from the ring to splice) and cut by a reset: the backend
    // closes with SO_LINGER 0, its kernel dropping what it had not sent. Whether the reset
    // arrives before or after the hand-over, the connection ends as `backend-reset`, never as
    // a normal close (the ring's receive takes the socket's one error report), and the client
    // is reset too: a cut answer must not look complete.
    let (backend, backend_task) = tcp_backend(|mut s| async move {
        let mut request = [0u8; 50];
        if s.read_exact(&mut request).await.is_err() {
            return;
        }
        let _ = s.write_all(&random_bytes(300_000, 3)).await;
        socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
    })
    .await;
    let balancer = lb_net::Balancer::new(
        one_backend_pool(backend),
        lb_net::TcpConnector,
        uring(),
        no_checks(),
    );
    let handle = balancer.handle();
    let log = Capture::default();
    let (lb, worker, task) = start_on_worker(balancer, Some(log.clone()));
    const CLIENTS: usize = 20;
    for _ in 0..CLIENTS {
        let mut stream = TcpStream::connect(lb).await.unwrap();
        stream.write_all(&[b'x'; 50]).await.unwrap();
        let mut got = Vec::new();
        // Some of the answer or all of it, then a reset.
        let read = tokio::time::timeout(LIMIT, stream.read_to_end(&mut got)).await.unwrap();
        assert!(got.len() <= 300_000);
        let error = read.expect_err("the backend's reset is passed on");
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
    }
    eventually(LIMIT, "every connection closed", || async { handle.stats().proxy.open == 0 }).await;
    stop(handle, task).await;
    tokio::task::spawn_blocking(move || worker.join().unwrap()).await.unwrap();
    let lines = log.lines();
    assert_eq!(lines.len(), CLIENTS, "{lines:?}");
    for line in &lines {
        assert!(line.contains(" backend-reset "), "{line}");
    }
    backend_task.abort();
}
