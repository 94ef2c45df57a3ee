//! `--demo`: three tiny HTTP backends, so a newcomer sees balancing with one command.
//!
//! One demo backend is started for each configured backend on this machine (by default the
//! seed's 127.0.0.1:8001-8003). Each answers every request with its own name. They speak just enough HTTP/1.1 for curl,
//! browsers and wrk (keep-alive included); they are a demonstration, not a web server.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::services::Services;
use crate::Failure;

/// Whether a backend address is one a demo backend may take: on this machine.
pub(crate) fn is_local(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Binds a demo backend on each of `addrs` (all or nothing; a port of 0 picks a free one),
/// then serves them in the background. Returns the bound addresses, in order.
pub(crate) async fn start(addrs: &[SocketAddr]) -> Result<Vec<SocketAddr>, String> {
    let mut listeners = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot start demo backend {} on {addr}: {e}", i + 1))?;
        let bound = listener.local_addr().map_err(|e| e.to_string())?;
        listeners.push((i + 1, bound, listener));
    }
    let bound = listeners.iter().map(|(_, a, _)| *a).collect();
    for (n, addr, listener) in listeners {
        tokio::spawn(serve(n, addr, listener));
    }
    Ok(bound)
}

async fn serve(n: usize, addr: SocketAddr, listener: TcpListener) {
    let name = format!("demo backend {n} ({addr})");
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(answer(stream, name.clone()));
            }
            Err(e) => {
                tracing::warn!(backend = n, error = %e, "demo backend: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Answers requests on one connection until the client closes or asks to close.
async fn answer(mut stream: TcpStream, name: String) {
    let _ = stream.set_nodelay(true);
    let body = format!("Hello from {name}\n");
    let mut buf = Vec::with_capacity(1024);
    loop {
        // Read up to the end of the request head; bodies are not expected (GET).
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 16 * 1024 {
                let _ = stream.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
                return;
            }
            let mut chunk = [0u8; 2048];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let close = head.contains("connection: close")
            || (head.contains("http/1.0") && !head.contains("connection: keep-alive"));
        buf.drain(..head_end);
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if stream.write_all(response.as_bytes()).await.is_err() || close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// Starts a demo backend on every backend address on this machine, in every pool (port 0: a
/// free port, put in place in `resolved`). Returns the addresses the port-0 ones got, in
/// order, for reloads.
pub(crate) async fn start_for(
    services: &Services,
    resolved: &mut [Vec<SocketAddr>],
) -> Result<Vec<SocketAddr>, Failure> {
    let local: Vec<SocketAddr> = resolved.iter().flatten().copied().filter(is_local).collect();
    if local.is_empty() {
        return Err(Failure::Usage(
            "--demo starts backends on this machine, but no --backend is on 127.0.0.1 or ::1"
                .into(),
        ));
    }
    let bound = start(&local).await.map_err(Failure::Runtime)?;
    tracing::info!(backends = ?bound, "demo backends started");
    for (addr, bound) in resolved.iter_mut().flatten().filter(|a| is_local(a)).zip(bound) {
        *addr = bound;
    }
    let port_0 = services.pools.iter().zip(resolved.iter()).flat_map(|(spec, addrs)| {
        spec.settings.backends.iter().zip(addrs).filter(|(b, _)| b.target.port == 0)
    });
    Ok(port_0.map(|(_, addr)| *addr).collect())
}
