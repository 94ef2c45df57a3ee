//! `lb`: a TCP (layer 4) load balancer.
//!
//! This binary only wires things together: flags (clap), file logging (tracing), the command
//! prompt, signals and the `--demo` backends. The balancing is `lb-core`; the proxy, health
//! checks and the command grammar are `lb-net`.
//!
//! ```text
//! lb --demo                 # three built-in backends on 8001-8003, balancer on localhost:8080
//! curl localhost:8080       # repeated: answered by each backend in turn
//! ```

#![warn(missing_docs, missing_debug_implementations, unreachable_pub, rust_2018_idioms)]
#![forbid(unsafe_code)]

mod args;
mod demo;
mod logging;
mod repl;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use lb_core::{HealthConfig, Pool, PoolConfig};
use lb_net::{Balancer, HealthCheckConfig, ProxyConfig, TcpConnector};
use tokio::net::TcpListener;

use args::Args;

/// Why `lb` stopped before serving: bad input (exit status 2) or the environment (1).
enum Failure {
    Usage(String),
    Runtime(String),
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line: clap's first line names the flag and the problem.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("lb: {} (see lb --help)", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("lb: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(msg)) => {
            eprintln!("lb: {msg}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Args) -> Result<(), Failure> {
    let health = HealthConfig { rise: args.rise, fall: args.fall, ..HealthConfig::default() };
    let pool = Pool::new(PoolConfig {
        algorithm: args.algorithm,
        health,
        max_connections_per_backend: args.max_connections_per_backend.0,
    })
    .map_err(|e| Failure::Usage(e.to_string()))?;
    if let Some(spec) = args.backends.iter().find(|b| b.target.port == 0 && !args.demo) {
        return Err(Failure::Usage(format!(
            "backend {}: port 0 is only allowed with --demo (a free port for a demo backend)",
            spec.target
        )));
    }
    let _log_guard = logging::init(&args.log_file, &args.log_level).map_err(Failure::Runtime)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(format!("cannot start the runtime: {e}")))?;
    let result = runtime.block_on(serve(args, pool));
    if let Err(Failure::Runtime(msg) | Failure::Usage(msg)) = &result {
        // Logged here, while the log writer is still alive to flush it.
        tracing::error!("{msg}");
    }
    result
}

/// Resolves `host` (preferring IPv4, as `localhost` may resolve to ::1 first) and binds.
async fn bind(host: &str, port: u16) -> Result<TcpListener, Failure> {
    let target = lb_net::Target { host: host.to_owned(), port };
    let addrs = target
        .resolve()
        .await
        .map_err(|e| Failure::Runtime(format!("cannot listen on {host}: {e}")))?;
    let addr = addrs.iter().find(|a| a.is_ipv4()).copied().unwrap_or(addrs[0]);
    TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::Runtime(format!("cannot listen on {addr}: {e}")))
}

async fn serve(args: Args, pool: Pool) -> Result<(), Failure> {
    let listener = bind(&args.host, args.port).await?;
    let local = listener.local_addr().map_err(|e| Failure::Runtime(e.to_string()))?;
    let mut resolved: Vec<SocketAddr> = Vec::new();
    for spec in &args.backends {
        let addrs = spec
            .target
            .resolve()
            .await
            .map_err(|e| Failure::Runtime(format!("backend {}: {e}", spec.target)))?;
        resolved.push(addrs.iter().find(|a| a.is_ipv4()).copied().unwrap_or(addrs[0]));
    }
    if args.demo {
        // A demo backend on every local backend address; port 0 becomes the port it got.
        let local: Vec<SocketAddr> = resolved.iter().copied().filter(demo::is_local).collect();
        if local.is_empty() {
            return Err(Failure::Usage(
                "--demo starts backends on this machine, but no --backend is on 127.0.0.1 or ::1"
                    .into(),
            ));
        }
        let bound = demo::start(&local).await.map_err(Failure::Runtime)?;
        tracing::info!(backends = ?bound, "demo backends started");
        for (addr, bound) in resolved.iter_mut().filter(|a| demo::is_local(a)).zip(bound) {
            *addr = bound;
        }
    }
    let mut added: Vec<SocketAddr> = Vec::new();
    for (spec, addr) in args.backends.iter().zip(resolved) {
        pool.add_with_state(addr, spec.weight, spec.state)
            .map_err(|e| Failure::Usage(format!("backend {}: {e}", spec.target)))?;
        added.push(addr);
    }
    let proxy = ProxyConfig {
        connect_timeout: args.connect_timeout,
        idle_timeout: args.idle_timeout.0,
        max_connections: args.max_connections.0,
        retries: args.retries,
        shutdown_grace: args.shutdown_grace,
    };
    let health = HealthCheckConfig {
        interval: args.health_interval,
        timeout: args.health_timeout,
        enabled: args.health_check.0.is_some(),
        kind: args.health_check.0.clone().unwrap_or_default(),
    };
    let backends = added.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    tracing::info!(
        address = %local,
        algorithm = %args.algorithm,
        backends = %backends,
        health_check = %health.kind,
        "lb {} starting",
        env!("CARGO_PKG_VERSION")
    );
    let balancer = Balancer::new(pool, TcpConnector, proxy, health);
    let handle = balancer.handle();
    if !args.quiet {
        println!(
            "lb {} listening on {local} ({}), backends: {backends}",
            env!("CARGO_PKG_VERSION"),
            args.algorithm
        );
        println!("logging to {}; type `help` for commands, `quit` to stop", args.log_file);
    }
    repl::spawn(handle.clone(), tokio::runtime::Handle::current(), args.quiet)
        .map_err(|e| Failure::Runtime(format!("cannot start the command prompt: {e}")))?;
    let signals = shutdown_signal(handle.clone());
    let report = balancer.run(listener, signals).await;
    if !args.quiet {
        println!("stopped ({} connections closed at the end of the grace period)", report.cut);
    }
    Ok(())
}

/// Resolves on the first SIGINT or SIGTERM. A second one ends the process at once, for when the
/// grace period is too long to wait.
async fn shutdown_signal(handle: lb_net::Handle) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) =
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        tracing::error!("cannot install signal handlers; use `quit` to stop");
        return std::future::pending().await;
    };
    let name = tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
        () = handle.shutdown_requested() => return,
    };
    tracing::info!(signal = name, "shutting down gracefully (send it again to stop at once)");
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::warn!("second signal: stopping at once");
        eprintln!("lb: stopping at once");
        std::process::exit(1);
    });
}
