//! Helpers shared by the lb-net integration tests.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use lb_net::{MemoryConnector, MemoryListener};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
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

/// A TCP backend on 127.0.0.1 (port 0) that greets with `name\n` and echoes. Abort the handle
/// to kill it (the listener closes; open connections are dropped).
pub async fn tcp_named_backend(name: &str) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, serve_tcp(listener, name.to_owned()))
}

/// Like [`tcp_named_backend`] on a given address (to bring a killed backend back).
pub async fn tcp_named_backend_at(addr: SocketAddr, name: &str) -> JoinHandle<()> {
    let listener = TcpListener::bind(addr).await.unwrap();
    serve_tcp(listener, name.to_owned())
}

fn serve_tcp(listener: TcpListener, name: String) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            conns.spawn(greet_and_echo(stream, name.clone()));
            while conns.try_join_next().is_some() {}
        }
    })
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
