//! The proxy over real sockets on 127.0.0.1 (port 0 everywhere).

#[macro_use]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lb_core::{Health, HealthConfig, Pool, PoolConfig};
use lb_net::{CheckStatus, HealthCheckConfig, ProxyConfig};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// A backend that echoes everything until end of stream, then closes.
async fn echo_backend() -> (SocketAddr, JoinHandle<()>) {
    tcp_backend(|mut s| async move {
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await
}

each_engine! {
async fn client_half_close_still_gets_the_whole_response(io) {
    let (backend, backend_task) = echo_backend().await;
    let proxy = ProxyConfig { io, ..Default::default() };
    let (lb, handle, task) =
        start(one_backend_pool(backend), proxy, HealthCheckConfig::default()).await;
    let data = random_bytes(6 << 20, 1);
    let stream = TcpStream::connect(lb).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap(); // half-close: no more from the client
        w
    });
    let mut got = Vec::with_capacity(data.len());
    r.read_to_end(&mut got).await.unwrap();
    let _w = writer.await.unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "byte-exact echo through the proxy");
    eventually(Duration::from_secs(10), "accounting done", || async {
        handle.stats().pool().totals.active == 0
    })
    .await;
    let stats = handle.stats();
    assert_eq!((stats.pool().totals.bytes_in, stats.pool().totals.bytes_out), (6 << 20, 6 << 20));
    stop(handle, task).await;
    backend_task.abort();
}
}

each_engine! {
async fn backend_half_close_still_gets_the_whole_request(io) {
    // The backend sends its whole response and closes its sending side first, then reads the
    // client's upload to the end and reports what it got.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let response = random_bytes(5 << 20, 2);
    let upload = random_bytes(7 << 20, 3);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let to_send = response.clone();
    let backend_task = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let (mut r, mut w) = s.into_split();
        w.write_all(&to_send).await.unwrap();
        w.shutdown().await.unwrap();
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        let _ = tx.send(got);
    });
    let (lb, handle, task) = start(
        one_backend_pool(backend),
        ProxyConfig { io, ..ProxyConfig::default() },
        HealthCheckConfig { enabled: false, ..Default::default() },
    )
    .await;
    let stream = TcpStream::connect(lb).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.unwrap(); // the backend's FIN reaches us first
    assert!(got == response, "whole response, then end of stream");
    w.write_all(&upload).await.unwrap(); // the other direction is still open
    w.shutdown().await.unwrap();
    let received = rx.await.unwrap();
    assert!(received == upload, "the backend got the whole upload after its own half-close");
    backend_task.await.unwrap();
    stop(handle, task).await;
}
}

each_engine! {
/// Many request-response exchanges on two connections taking turns, each drained before the
/// next: every answer is exactly the request's bytes (nothing of an earlier exchange, of
/// either connection, left in a reused vector), at sizes from a byte to just under a receive
/// buffer (a full one would hand the connection to the epoll engine).
async fn exchange_after_exchange_on_two_connections_is_byte_exact(io) {
    let (backend, backend_task) = echo_backend().await;
    let proxy = ProxyConfig { io, ..Default::default() };
    let (lb, handle, task) =
        start(one_backend_pool(backend), proxy, HealthCheckConfig::default()).await;
    let mut clients = [TcpStream::connect(lb).await.unwrap(), TcpStream::connect(lb).await.unwrap()];
    let mut total = 0u64;
    for round in 0..300u64 {
        let len = match round % 6 {
            0 => 1,
            1 => 17,
            2 => 300,
            3 => 4096,
            4 => 16 * 1024 - 1,
            _ => 1 + (round as usize * 7919) % 3000,
        };
        let client = &mut clients[round as usize % 2];
        let request = random_bytes(len, round);
        client.write_all(&request).await.unwrap();
        let mut answer = vec![0; len];
        let read = client.read_exact(&mut answer);
        tokio::time::timeout(Duration::from_secs(10), read).await.expect("an answer").unwrap();
        assert!(answer == request, "round {round}: the answer is the request, {len} bytes");
        total += len as u64;
    }
    drop(clients);
    eventually(Duration::from_secs(10), "accounting done", || async {
        handle.stats().pool().totals.active == 0
    })
    .await;
    let stats = handle.stats();
    assert_eq!((stats.pool().totals.bytes_in, stats.pool().totals.bytes_out), (total, total));
    if io == lb_net::IoEngine::Uring {
        assert_eq!(stats.proxy.uring_relays, 2, "both relayed on the ring");
    }
    stop(handle, task).await;
    backend_task.abort();
}
}

each_engine! {
async fn a_thousand_concurrent_connections_all_complete(io) {
    let mut backends = Vec::new();
    let pool = Pool::default();
    for _ in 0..3 {
        let (addr, task) = echo_backend().await;
        pool.add(addr, None).unwrap();
        backends.push(task);
    }
    let (lb, handle, task) =
        start(pool, ProxyConfig { io, ..Default::default() }, HealthCheckConfig::default()).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(1000));
    let clients: Vec<_> = (0..1000u32)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                let exchange = async {
                    let mut s = TcpStream::connect(lb).await?;
                    let msg = format!("hello from client {i}");
                    s.write_all(msg.as_bytes()).await?;
                    let mut buf = vec![0u8; msg.len()];
                    s.read_exact(&mut buf).await?;
                    assert_eq!(buf, msg.as_bytes());
                    Ok::<_, std::io::Error>(s)
                };
                let result = exchange.await;
                // Every connection is held open until all 1000 are up at once (a failed one
                // still reaches the barrier, so the others are not left waiting).
                barrier.wait().await;
                let mut s = result.map_err(|e| format!("client {i}: {e}"))?;
                s.shutdown().await.map_err(|e| format!("client {i} shutdown: {e}"))?;
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).await.map_err(|e| format!("client {i} close: {e}"))?;
                Ok::<_, String>(())
            })
        })
        .collect();
    let mut failures = Vec::new();
    for c in clients {
        if let Err(e) = c.await.unwrap() {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{} clients failed, first: {}", failures.len(), failures[0]);
    // Every client has seen its connection end, which the proxy does only once the relay has
    // finished, so this is immediate; the deadline only bounds a bug. On failure, say where the
    // count stuck.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stats = handle.stats();
        if stats.pool().totals.active == 0 && stats.proxy.open == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "connections not accounted: {stats}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = handle.stats();
    assert_eq!(stats.pool().totals.connections, 1000);
    assert!(
        stats.pool().backends.iter().all(|b| b.peak_active >= 300),
        "{:?}",
        stats.pool().backends
    );
    stop(handle, task).await;
    backends.iter().for_each(JoinHandle::abort);
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_is_retried_around_marked_down_and_back_up() {
    let pool = Pool::new(PoolConfig {
        health: HealthConfig { rise: 2, fall: 3, ..Default::default() },
        ..Default::default()
    })
    .unwrap();
    let mut backends = Vec::new();
    for name in ["a", "b", "c"] {
        let (addr, task) = tcp_named_backend(name).await;
        pool.add(addr, None).unwrap();
        backends.push((addr, task));
    }
    let health = HealthCheckConfig {
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let (lb, handle, task) = start(pool, ProxyConfig::default(), health).await;

    // Steady traffic throughout, every connection checked. A connection already handed to the
    // backend when it dies is lost with it (as with any balancer); every one started after the
    // kill must succeed.
    let stop_traffic = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killed_at: Arc<std::sync::Mutex<Option<tokio::time::Instant>>> = Arc::default();
    let traffic = {
        let (stop_traffic, killed_at) = (Arc::clone(&stop_traffic), Arc::clone(&killed_at));
        tokio::spawn(async move {
            let (mut ok, mut failed_after_kill, mut failed_in_flight) = (0u64, Vec::new(), 0u64);
            while !stop_traffic.load(std::sync::atomic::Ordering::Relaxed) {
                let started = tokio::time::Instant::now();
                match tcp_greeting(lb).await {
                    Ok((mut s, _name)) => {
                        let _ = s.shutdown().await;
                        ok += 1;
                    }
                    Err(e) => match *killed_at.lock().unwrap() {
                        Some(k) if started > k => failed_after_kill.push(e.to_string()),
                        _ => failed_in_flight += 1,
                    },
                }
            }
            (ok, failed_after_kill, failed_in_flight)
        })
    };
    let (dead_addr, dead_task) = backends.remove(1);
    eventually(Duration::from_secs(10), "traffic flowing", || async {
        handle.stats().pool().totals.connections > 20
    })
    .await;
    let held = kill_backend(dead_addr, dead_task).await;
    *killed_at.lock().unwrap() = Some(tokio::time::Instant::now());
    eventually(Duration::from_secs(10), "killed backend marked down", || async {
        handle.stats().pool().backend(dead_addr).unwrap().health == Health::Down
    })
    .await;
    let revived = revive_named_backend(held, "b");
    eventually(Duration::from_secs(10), "revived backend marked up", || async {
        handle.stats().pool().backend(dead_addr).unwrap().health == Health::Up
    })
    .await;
    let before = handle.stats().pool().backend(dead_addr).unwrap().connections;
    eventually(Duration::from_secs(10), "revived backend serving again", || async {
        handle.stats().pool().backend(dead_addr).unwrap().connections > before
    })
    .await;
    stop_traffic.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed, in_flight) = traffic.await.unwrap();
    assert!(failed.is_empty(), "clients failed after the kill ({ok} succeeded): {failed:?}");
    assert!(in_flight <= 1, "only a connection in flight at the kill may fail, got {in_flight}");
    assert!(handle.health().iter().all(|(_, s)| s.as_ref().is_some_and(|s| s.result.is_ok())));
    stop(handle, task).await;
    revived.abort();
    backends.iter().for_each(|(_, t)| t.abort());
}

/// A tiny HTTP backend answering each request with what `answer` makes of its head.
async fn http_backend(answer: fn(&str) -> String) -> (SocketAddr, JoinHandle<()>) {
    tcp_backend(move |mut s| async move {
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap_or(0);
        let request = String::from_utf8_lossy(&buf[..n]).into_owned();
        let _ = s.write_all(answer(&request).as_bytes()).await;
    })
    .await
}

/// The last checks of two HTTP backends, taken once the bad one was marked down.
struct HttpChecks {
    good: SocketAddr,
    bad: SocketAddr,
    rows: Vec<(SocketAddr, Option<CheckStatus>)>,
}

impl HttpChecks {
    /// Checks two HTTP backends as `kind` says, every 30 ms: one answering as `good` does, one as
    /// `bad` does. Once the bad one is marked down, the good one must still be up.
    async fn run(kind: &str, good: fn(&str) -> String, bad: fn(&str) -> String) -> HttpChecks {
        let (good, t1) = http_backend(good).await;
        let (bad, t2) = http_backend(bad).await;
        let pool = Pool::default();
        pool.add(good, None).unwrap();
        pool.add(bad, None).unwrap();
        let health = HealthCheckConfig {
            interval: Duration::from_millis(30),
            kind: kind.parse().unwrap(),
            ..Default::default()
        };
        let (_lb, handle, task) = start(pool, ProxyConfig::default(), health).await;
        eventually(Duration::from_secs(10), "the bad backend down", || async {
            handle.stats().pool().backend(bad).unwrap().health == Health::Down
        })
        .await;
        let rows = handle.health();
        assert_eq!(handle.stats().pool().backend(good).unwrap().health, Health::Up);
        stop(handle, task).await;
        t1.abort();
        t2.abort();
        HttpChecks { good, bad, rows }
    }

    /// The result of the last check of the backend at `addr`.
    fn result(&self, addr: SocketAddr) -> Result<(), String> {
        self.rows.iter().find(|(a, _)| *a == addr).unwrap().1.clone().unwrap().result
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_health_check_judges_the_status_line() {
    // Two tiny HTTP backends: one healthy (200), one failing (503).
    let checks = HttpChecks::run(
        "http:/healthz",
        |_| "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".into(),
        |_| "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".into(),
    )
    .await;
    // The reason names what was asked.
    let bad = checks.bad;
    assert_eq!(
        checks.result(bad).unwrap_err(),
        format!("GET /healthz (Host: {bad}): HTTP status 503, expected 200-399")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_health_check_sends_the_urls_host_and_expects_the_body_text() {
    // A virtual host: only `Host: api.internal` gets the health page, and only one of the two
    // backends says it is ready.
    fn ready(request: &str) -> String {
        match request.to_ascii_lowercase().contains("\r\nhost: api.internal\r\n") {
            true => "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nstatus ok".into(),
            false => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into(),
        }
    }
    fn warming(request: &str) -> String {
        match request.to_ascii_lowercase().contains("\r\nhost: api.internal\r\n") {
            true => "HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\nstatus warming".into(),
            false => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into(),
        }
    }
    let kind = "http://api.internal/healthz,status=200,body=status ok";
    let checks = HttpChecks::run(kind, ready, warming).await;
    assert_eq!(checks.result(checks.good), Ok(()), "the Host header reached the virtual host");
    let why = checks.result(checks.bad).unwrap_err();
    assert!(
        why.starts_with("GET /healthz (Host: api.internal): HTTP status 200, but the body does not contain \"status ok\""),
        "{why}"
    );
}

each_engine! {
async fn idle_timeout_closes_a_silent_tcp_connection(io) {
    let (backend, backend_task) = echo_backend().await;
    let config =
        ProxyConfig { io, idle_timeout: Some(Duration::from_millis(200)), ..Default::default() };
    let (lb, handle, task) =
        start(one_backend_pool(backend), config, HealthCheckConfig::default()).await;
    let mut s = TcpStream::connect(lb).await.unwrap();
    s.write_all(b"hi").await.unwrap();
    let mut buf = [0u8; 2];
    s.read_exact(&mut buf).await.unwrap();
    // Then silence: the proxy closes the connection (end of stream, no error).
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("closed by the idle timeout")
        .unwrap();
    assert_eq!(n, 0);
    stop(handle, task).await;
    backend_task.abort();
}
}

/// Runs `child` in a copy of this test binary whose file descriptor limit is `limit`.
fn run_in_child_with_fd_limit(child: &str, limit: u32) {
    let exe = std::env::current_exe().unwrap();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n {limit} && exec \"$0\" --exact {child} --ignored --nocapture --test-threads=1"
        ))
        .arg(exe)
        .env("LB_NET_CHILD", "1")
        .status()
        .expect("sh runs");
    assert!(status.success(), "child test {child} failed: {status}");
}

#[test]
fn accept_loop_survives_running_out_of_file_descriptors() {
    run_in_child_with_fd_limit("emfile_child", 64);
}

/// The child half of the test above, which runs it in a process with few descriptors.
#[test]
#[ignore = "run by accept_loop_survives_running_out_of_file_descriptors, under a low descriptor limit"]
fn emfile_child() {
    if std::env::var_os("LB_NET_CHILD").is_none() {
        eprintln!("emfile_child: run it through accept_loop_survives_running_out_of_file_descriptors, which sets the descriptor limit");
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (backend, backend_task) = echo_backend().await;
        let (lb, handle, task) = start(
            one_backend_pool(backend),
            ProxyConfig::default(),
            HealthCheckConfig { enabled: false, ..Default::default() },
        )
        .await;
        // Client sockets are created first; then every descriptor left is taken, so that when
        // they connect the kernel completes the handshakes but the proxy's accept fails with
        // EMFILE. (Opening clients until connect fails would race the proxy for the last
        // descriptors: the clients may lose first and the proxy never see an error.)
        const CLIENTS: usize = 8;
        let sockets: Vec<_> = (0..CLIENTS).map(|_| TcpSocket::new_v4().unwrap()).collect();
        let fillers = take_every_free_descriptor();
        let mut clients = Vec::new();
        for socket in sockets {
            clients.push(socket.connect(lb).await.expect("the kernel completes the handshake"));
        }
        eventually(Duration::from_secs(10), "accept errors seen", || async {
            handle.stats().proxy.accept_errors > 0
        })
        .await;
        assert_eq!(handle.stats().proxy.accepted, 0, "nothing can be accepted yet");
        // Free the descriptors: the loop must still be accepting, and the clients that waited
        // in the backlog meanwhile are served, none lost.
        drop(fillers);
        for (i, client) in clients.iter_mut().enumerate() {
            let msg = format!("ping {i}");
            client.write_all(msg.as_bytes()).await.unwrap();
            let mut buf = vec![0u8; msg.len()];
            tokio::time::timeout(Duration::from_secs(20), client.read_exact(&mut buf))
                .await
                .expect("a waiting client is served once descriptors are free")
                .unwrap();
            assert_eq!(buf, msg.as_bytes());
        }
        let mut s = TcpStream::connect(lb).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        drop((s, clients));
        stop(handle, task).await;
        backend_task.abort();
    });
}

/// Opens /dev/null until this process has no descriptor left; dropping the files frees them.
fn take_every_free_descriptor() -> Vec<std::fs::File> {
    let mut files = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => files.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(24), "expected EMFILE, got {e}");
                return files;
            }
        }
    }
}

#[test]
fn backend_connect_without_descriptors_blames_no_backend() {
    run_in_child_with_fd_limit("emfile_backend_child", 64);
}

/// The child half of the test above, which runs it in a process with few descriptors.
#[test]
#[ignore = "run by backend_connect_without_descriptors_blames_no_backend, under a low descriptor limit"]
fn emfile_backend_child() {
    if std::env::var_os("LB_NET_CHILD").is_none() {
        eprintln!("emfile_backend_child: run it through backend_connect_without_descriptors_blames_no_backend, which sets the descriptor limit");
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (backend, backend_task) = echo_backend().await;
        let config =
            ProxyConfig { connect_timeout: Duration::from_millis(300), ..Default::default() };
        let health = HealthCheckConfig { enabled: false, ..Default::default() };
        let (lb, handle, task) = start(one_backend_pool(backend), config, health).await;
        // One descriptor left, for the proxy's accept: its connect to the backend then fails
        // with EMFILE for the whole connect timeout. That is the balancer's shortage, not the
        // backend's fault: the client is closed as `resource`, the backend keeps a clean record.
        let client = TcpSocket::new_v4().unwrap();
        let mut fillers = take_every_free_descriptor();
        fillers.pop();
        let mut client = client.connect(lb).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf))
            .await
            .expect("the client is closed once the connect timeout has passed")
            .unwrap_or(0);
        assert_eq!(n, 0);
        let stats = handle.stats();
        assert_eq!((stats.proxy.accepted, stats.proxy.resource_errors), (1, 1), "{stats:?}");
        assert_eq!((stats.proxy.connect_failed, stats.proxy.retries), (0, 0), "{stats:?}");
        let b = stats.pool().backend(backend).unwrap();
        assert_eq!((b.connect_failures, b.health), (0, Health::Up), "{b:?}");
        // Descriptors back: the same backend serves at once.
        drop((fillers, client));
        let mut s = TcpStream::connect(lb).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        drop(s);
        stop(handle, task).await;
        backend_task.abort();
    });
}

each_engine! {
async fn bulk_transfer_to_a_slow_reader_is_byte_exact(io) {
    // 16 MiB from the backend, read by the client a little at a time, so the relay (splicing on
    // Linux) spends most of the transfer with a full socket on the client side.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let data = random_bytes(16 << 20, 7);
    let to_send = data.clone();
    let backend_task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(&to_send).await.unwrap();
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
    });
    let health = HealthCheckConfig { enabled: false, ..Default::default() };
    let proxy = ProxyConfig { io, ..ProxyConfig::default() };
    let (lb, handle, task) = start(one_backend_pool(backend), proxy, health).await;
    let mut s = TcpStream::connect(lb).await.unwrap();
    let mut got = Vec::with_capacity(data.len());
    let mut buf = [0u8; 1024];
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.len() % (1 << 20) < 1024 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(got.len(), data.len());
    assert!(got == data, "byte-exact");
    s.shutdown().await.unwrap();
    backend_task.await.unwrap();
    eventually(Duration::from_secs(10), "accounted", || async {
        handle.stats().pool().totals.active == 0
    })
    .await;
    assert_eq!(handle.stats().pool().totals.bytes_out, 16 << 20);
    stop(handle, task).await;
}
}

#[test]
fn bind_shared_refuses_a_port_another_reuseport_listener_holds() {
    // Another process's listener with SO_REUSEPORT (another lb, HAProxy) on a port: joining it
    // would silently split its traffic, so binding must fail as for any port in use.
    let other = lb_net::bind("127.0.0.1:0".parse().unwrap(), true).unwrap();
    let taken = other.local_addr().unwrap();
    let err = lb_net::bind_shared(taken, 2).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    // Port 0: one free port, shared by every listener of the group.
    let group = lb_net::bind_shared("127.0.0.1:0".parse().unwrap(), 3).unwrap();
    let port = group[0].local_addr().unwrap().port();
    assert!(group.iter().all(|l| l.local_addr().unwrap().port() == port));
    // Once the port is free again, a fixed port binds.
    drop(other);
    let group = lb_net::bind_shared(taken, 2).unwrap();
    assert_eq!(group.len(), 2);
}
