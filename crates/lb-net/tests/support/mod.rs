//! Helpers shared by the lb-net integration tests.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use lb_core::Pool;
use lb_net::{
    Balancer, Handle, HealthCheckConfig, IoEngine, MemoryConnector, MemoryListener, ProxyConfig,
    ShutdownReport, TcpConnector,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::task::JoinHandle;

/// An address for in-memory backend `i` (never connected to for real).
pub fn mem_addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 99, 0, i], 7000))
}

/// Serves an in-memory backend: on each connection it writes `name\n`, then echoes until end
/// of stream, then closes. The task ends when the connector is dropped.
pub fn named_memory_backend(
    connector: &MemoryConnector,
    addr: SocketAddr,
    name: &str,
) -> JoinHandle<()> {
    let listener = connector.listen(addr);
    serve_memory(listener, name.to_owned())
}

fn serve_memory(mut listener: MemoryListener, name: String) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(stream) = listener.accept().await {
            let name = name.clone();
            tokio::spawn(greet_and_echo(stream, name));
        }
    })
}

async fn greet_and_echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    name: String,
) {
    if stream.write_all(format!("{name}\n").as_bytes()).await.is_err() {
        return;
    }
    let (mut r, mut w) = tokio::io::split(stream);
    let _ = tokio::io::copy(&mut r, &mut w).await;
    let _ = w.shutdown().await;
}

/// Reads one `\n`-terminated line (the backend's greeting).
pub async fn read_line<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<String> {
    let mut line = Vec::new();
    loop {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if byte[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(byte[0]);
    }
}

/// A client end and the end to hand to `Balancer::serve_connection`.
pub fn memory_client() -> (DuplexStream, DuplexStream) {
    tokio::io::duplex(64 * 1024)
}

/// A TCP backend on 127.0.0.1 (port 0) that hands each connection to `serve`, in a task of its
/// own. Abort the handle to kill it (the listener closes; open connections are dropped).
pub async fn tcp_backend<F, Fut>(serve: F) -> (SocketAddr, JoinHandle<()>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tcp_backend_at("127.0.0.1:0", serve).await
}

/// Like [`tcp_backend`] on a given address (an IPv6 one).
pub async fn tcp_backend_at<F, Fut>(
    addr: impl ToSocketAddrs,
    serve: F,
) -> (SocketAddr, JoinHandle<()>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let addr = tokio::net::lookup_host(addr).await.unwrap().next().unwrap();
    // Deep, as the balancer's own (see `deep_listener`): the backends take bursts too.
    let listener = TcpListener::from_std(lb_net::bind(addr, false).unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, serve_on(listener, serve))
}

/// Serves each connection `listener` accepts with `serve`, on one task.
fn serve_on<F, Fut>(listener: TcpListener, serve: F) -> JoinHandle<()>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        // The connections are the task's own, so aborting it drops them too.
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            conns.spawn(serve(stream));
            while conns.try_join_next().is_some() {}
        }
    })
}

/// A killed backend's port, still bound but not listening: connecting to it is refused, as
/// to a dead backend, and no other test running meanwhile can bind it (an address freed for
/// the time a test waits for its balancer to notice the death was taken by another test's
/// listener, which then got this test's connections).
pub struct HeldPort(tokio::net::TcpSocket);

impl HeldPort {
    /// A port on 127.0.0.1 where nothing listens, held for as long as this lives: an address
    /// a balancer's connects are refused at, which no other test can take meanwhile.
    pub fn refusing() -> HeldPort {
        HeldPort::at(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// `addr` bound, not listening.
    fn at(addr: SocketAddr) -> HeldPort {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .unwrap();
        // Past the TIME_WAIT of a killed backend's connections on the same port.
        socket.set_reuseaddr(true).unwrap();
        socket.bind(addr).unwrap();
        HeldPort(socket)
    }

    /// The held address.
    pub fn addr(&self) -> SocketAddr {
        self.0.local_addr().unwrap()
    }
}

/// Kills the backend `task` serving on `addr` (it and its connections end), holding its port.
pub async fn kill_backend(addr: SocketAddr, task: JoinHandle<()>) -> HeldPort {
    task.abort();
    let _ = task.await;
    HeldPort::at(addr)
}

/// Brings a backend killed by [`kill_backend`] back on its port, greeting with `name\n` and
/// echoing, as [`tcp_named_backend`].
pub fn revive_named_backend(held: HeldPort, name: &str) -> JoinHandle<()> {
    let name = name.to_owned();
    serve_on(held.0.listen(1024).unwrap(), move |stream| greet_and_echo(stream, name.clone()))
}

/// A TCP backend on 127.0.0.1 (port 0) that greets with `name\n` and echoes (see
/// [`tcp_backend`]).
pub async fn tcp_named_backend(name: &str) -> (SocketAddr, JoinHandle<()>) {
    let name = name.to_owned();
    tcp_backend(move |stream| greet_and_echo(stream, name.clone())).await
}

/// A pool of the one backend at `addr`.
pub fn one_backend_pool(addr: SocketAddr) -> Pool {
    let pool = Pool::default();
    pool.add(addr, None).unwrap();
    pool
}

/// Defines a test once per I/O engine, in a module named after it: `epoll`, and `uring` on
/// Linux, each running the body with `$io` bound to that engine. For what both engines must do
/// alike; the body passes `io` on in its `ProxyConfig` (and [`start`] runs a uring balancer on
/// a worker thread, as the `lb` binary does).
#[macro_export]
macro_rules! each_engine {
    ($(#[doc = $doc:literal])* async fn $name:ident($io:ident) $body:block) => {
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn epoll() {
                let $io = lb_net::IoEngine::Epoll;
                $body
            }

            #[cfg(target_os = "linux")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn uring() {
                let $io = lb_net::IoEngine::Uring;
                $body
            }
        }
    };
}

/// Starts a balancer on 127.0.0.1:0 over `pool`, connecting over TCP; returns its address,
/// handle and task. With `proxy.io` io_uring, it accepts and serves connections on a thread of
/// its own with a single-threaded runtime, as the `lb` binary's workers do (the engine's ring
/// is per thread); the thread ends once the balancer has shut down.
pub async fn start(
    pool: Pool,
    proxy: ProxyConfig,
    health: HealthCheckConfig,
) -> (SocketAddr, Handle, JoinHandle<ShutdownReport>) {
    let io = proxy.io;
    let balancer = Balancer::new(pool, TcpConnector, proxy, health);
    let handle = balancer.handle();
    if io == IoEngine::Uring {
        let (addr, _worker, task) = start_on_worker(balancer, None);
        return (addr, handle, task);
    }
    let listener = TcpListener::from_std(deep_listener()).unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(balancer.run(listener, std::future::pending()));
    (addr, handle, task)
}

/// Runs `balancer` as [`start`] does for io_uring: accepting and serving on 127.0.0.1:0 on a
/// thread of its own with a single-threaded runtime, whose access lines go to `log` if given.
/// Returns the address, the thread (it ends once the balancer has shut down and its
/// connections have ended) and the balancer's task.
pub fn start_on_worker(
    balancer: Balancer<TcpConnector>,
    log: Option<Capture>,
) -> (SocketAddr, std::thread::JoinHandle<()>, JoinHandle<ShutdownReport>) {
    let listener = deep_listener();
    let addr = listener.local_addr().unwrap();
    let acceptor = balancer.acceptor();
    let worker = std::thread::spawn(move || {
        let _log = log.as_ref().map(Capture::install);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            acceptor.accept(TcpListener::from_std(listener).unwrap()).await;
        });
    });
    let task = tokio::spawn(balancer.supervise(std::future::pending()));
    (addr, worker, task)
}

/// A listener on 127.0.0.1:0 bound as the `lb` binary binds (backlog 4096, non-blocking).
///
/// With std's backlog of 128 (tokio's 1024), a burst of 1,000 connects overflows the queue
/// and puts the listener in SYN-flood mode, answering with SYN cookies; a client's handshake
/// ACK and its first data, arriving together, can then each create a socket from the cookie,
/// and the balancer accepts a second, silent connection for one client (a kernel race). That
/// was the rare failure of a_thousand_concurrent_connections_all_complete: 1,003 accepted for
/// 1,000 clients, 3 silent ones open.
pub fn deep_listener() -> std::net::TcpListener {
    lb_net::bind_shared("127.0.0.1:0".parse().unwrap(), 1).unwrap().remove(0)
}

/// Shuts a balancer [`start`]ed down and waits for it to finish.
pub async fn stop(handle: Handle, task: JoinHandle<ShutdownReport>) {
    handle.shutdown();
    task.await.unwrap();
}

/// Connects to the balancer and returns the greeting line of the backend reached.
pub async fn tcp_greeting(addr: SocketAddr) -> std::io::Result<(TcpStream, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let name = read_line(&mut stream).await?;
    Ok((stream, name))
}

/// Polls `check` until it returns true, failing the test after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Random bytes, reproducible per seed.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// Captures `lb::access` lines (message only) for the current thread.
#[derive(Clone, Default)]
pub struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let this = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("lb::access=info")
            .with_writer(move || this.clone())
            .with_ansi(false)
            .without_time()
            .with_level(false)
            .with_target(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(|l| l.trim().to_owned())
            .collect()
    }

    /// Waits for the `n`-th line (1-based) and returns the fields of the last line.
    pub async fn fields(&self, n: usize) -> Vec<String> {
        eventually(Duration::from_secs(10), "access log line", || async {
            self.lines().len() >= n
        })
        .await;
        let lines = self.lines();
        lines[n - 1].split(' ').map(str::to_owned).collect()
    }
}
