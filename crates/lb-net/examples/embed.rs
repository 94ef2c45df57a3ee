//! A load balancer inside your own tokio program: two backends, a balancer in front of them, a
//! few client connections, the stats, and a graceful shutdown.
//!
//! ```sh
//! cargo run -p lb-net --example embed
//! ```

use lb_core::{Algorithm, Pool, PoolConfig};
use lb_net::{Balancer, HealthCheckConfig, ProxyConfig, TcpConnector};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The pool: two backends, the second with twice the weight.
    let pool = Pool::new(PoolConfig { algorithm: Algorithm::RoundRobin, ..Default::default() })?;
    for (name, weight) in [("alpha", 1), ("beta", 2)] {
        pool.add(backend(name).await?, Some(weight))?;
    }

    // The balancer on a free port; `handle` controls it while it runs.
    let balancer =
        Balancer::new(pool, TcpConnector, ProxyConfig::default(), HealthCheckConfig::default());
    let handle = balancer.handle();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let running = tokio::spawn(balancer.run(listener, std::future::pending()));

    for _ in 0..6 {
        let mut client = TcpStream::connect(address).await?;
        let mut answer = String::new();
        client.read_to_string(&mut answer).await?;
        println!("answered by {answer}");
    }
    // A client sees the end of its answer a moment before the balancer has closed the backend
    // side; wait for that, so the table below shows every connection finished.
    while handle.stats().proxy.open > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    // The same commands the `lb` prompt takes.
    println!("{}", handle.execute("stats").await?);

    handle.shutdown();
    let report = running.await?;
    println!("shut down, {} connections cut", report.cut);
    Ok(())
}

/// A backend on a free port that answers every connection with its name.
async fn backend(name: &'static str) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.write_all(name.as_bytes()).await;
        }
    });
    Ok(address)
}
