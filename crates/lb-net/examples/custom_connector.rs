//! A [`Connector`] of your own: backends reached over Unix-domain sockets instead of TCP.
//!
//! The pool still names each backend by a socket address (it is the backend's identity in
//! stats, commands and `ip_hash`); the connector decides what connecting to it means. Here
//! `127.0.0.1:PORT` means the socket file `PORT.sock` in a directory. The same seam serves TLS
//! to backends, a SOCKS hop, or the in-memory connector the tests use (`test-util` feature).
//!
//! ```sh
//! cargo run -p lb-net --example custom_connector
//! ```

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use lb_core::Pool;
use lb_net::{Balancer, Connector, HealthCheckConfig, ProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// Connects to `DIR/PORT.sock` for the backend `127.0.0.1:PORT`.
#[derive(Debug)]
struct UnixConnector {
    dir: PathBuf,
}

impl UnixConnector {
    fn path(&self, addr: SocketAddr) -> PathBuf {
        self.dir.join(format!("{}.sock", addr.port()))
    }
}

impl Connector for UnixConnector {
    // lb-net implements its `ByteStream` for tokio's streams; a stream type of your own needs
    // `impl ByteStream for MyStream {}`.
    type Stream = UnixStream;

    async fn connect(&self, addr: SocketAddr) -> io::Result<UnixStream> {
        UnixStream::connect(self.path(addr)).await
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("lb-custom-connector-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let connector = UnixConnector { dir: dir.clone() };

    let pool = Pool::default();
    for port in [8001, 8002] {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = UnixListener::bind(connector.path(addr))?;
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.write_all(format!("unix backend {port}").as_bytes()).await;
            }
        });
        pool.add(addr, None)?;
    }

    // Health checks go through the connector too: a backend whose socket file is gone is down.
    let balancer =
        Balancer::new(pool, connector, ProxyConfig::default(), HealthCheckConfig::default());
    let handle = balancer.handle();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let running = tokio::spawn(balancer.run(listener, std::future::pending()));

    for _ in 0..4 {
        let mut answer = String::new();
        TcpStream::connect(address).await?.read_to_string(&mut answer).await?;
        println!("TCP client answered by {answer}");
    }
    println!("{}", handle.execute("stats").await?);
    handle.shutdown();
    running.await?;
    std::fs::remove_dir_all(dir)?;
    Ok(())
}
