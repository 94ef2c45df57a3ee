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

/// `println!` that never panics: a closed stdout (`lb ... | head -1`, a terminal gone) must not
/// bring the balancer down, so a line that cannot be written is dropped.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that never panics, for the same reason as [`out!`].
macro_rules! err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod args;
mod config;
mod ctl;
mod demo;
mod generate;
mod lifecycle;
mod limits;
mod logging;
mod plan;
mod reload;
mod repl;
mod services;
mod settings;
mod show;
mod signals;
mod tables;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches};
use lb_net::{AccessLogFormat, Balancer, IoEngine, ProxyConfig, TcpConnector};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use args::{Args, IoChoice, LogFormat};
use config::Given;
use services::{backends_text, routing_text, PoolSpec, Services};
use settings::Settings;
use signals::{reload_on_hangup, shutdown_signal};

/// Why `lb` stopped before serving: bad input (exit status 2) or the environment (1).
enum Failure {
    Usage(String),
    Runtime(String),
}

fn main() -> ExitCode {
    install_panic_hook();
    // Matches first, then the typed struct: the matches tell a flag the user typed from a
    // default, which decides whether the config file may override it.
    let parsed = Args::command()
        .try_get_matches()
        .and_then(|matches| Ok((Args::from_arg_matches(&matches)?, Given::from_matches(&matches))));
    let (cli, given) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line: clap's first paragraph names the flag and the problem (for missing
            // arguments, the first line ends in a colon and the names follow, one per line).
            // The help that explains it: `lb ctl`'s for a mistake after `ctl` (which comes
            // first: flags of lb's own do not go with it).
            let ctl = std::env::args_os().nth(1).is_some_and(|first| first == "ctl");
            let help = if ctl { "lb ctl --help" } else { "lb --help" };
            let text = args::one_line_error(e).render().to_string();
            let first: Vec<&str> =
                text.lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
            let first = if first.is_empty() { "invalid arguments".into() } else { first.join(" ") };
            err!("lb: {} (see {help})", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    match &cli.command {
        Some(args::Sub::Ctl(ctl)) => return ctl::main(ctl),
        Some(args::Sub::Completions { shell }) => return generate::completions(*shell),
        Some(args::Sub::Man) => return generate::man_page(),
        None => {}
    }
    // Taken first, before anything is opened: descriptors left open for this process by
    // the one that started it (an upgrading lb, or systemd).
    let readiness = match lb_net::lifecycle::Readiness::take_from_env() {
        Ok(readiness) => readiness,
        Err(msg) => {
            err!("lb: {msg}");
            return ExitCode::from(1);
        }
    };
    let result = run(cli, given, readiness.clone());
    // An upgrading predecessor keeps serving, and says why.
    if let Err(Failure::Usage(msg) | Failure::Runtime(msg)) = &result {
        readiness.failed(msg);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            err!("lb: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(msg)) => {
            err!("lb: {msg}");
            ExitCode::from(1)
        }
    }
}

/// A bug must not greet a user with a stack trace: a panic prints one line to stderr and is
/// logged (with a backtrace when `RUST_BACKTRACE` asks for one). A panic in a connection or
/// command task ends only that task; the balancer keeps serving.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let place = info.location().map(|l| format!(" at {}:{}", l.file(), l.line()));
        let place = place.unwrap_or_default();
        let message = panic_text(info.payload());
        let thread = std::thread::current().name().unwrap_or("unnamed").to_owned();
        err!("lb: internal error in thread {thread}{place}: {message} (a bug: please report it)");
        // Inside the logging code itself this event is dropped (tracing does not re-enter a
        // subscriber), so the hook cannot deadlock on the writer.
        let backtrace = std::backtrace::Backtrace::capture();
        tracing::error!(thread, "internal error{place}: {message}\n{backtrace}");
    }));
}

/// The text a panic was raised with.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    match payload.downcast_ref::<&str>() {
        Some(s) => s,
        None => payload.downcast_ref::<String>().map_or("(no message)", String::as_str),
    }
}

/// The command line as parsed, kept for reloads: typed flags still beat the file then.
struct CommandLine {
    cli: Args,
    given: Given,
}

fn run(cli: Args, given: Given, readiness: lb_net::lifecycle::Readiness) -> Result<(), Failure> {
    let exec = lifecycle::Exec::current();
    let passed = lb_net::lifecycle::PassedSockets::take_from_env().map_err(Failure::Runtime)?;
    let life = lifecycle::Lifecycle {
        passed,
        readiness,
        notifier: lb_net::lifecycle::Notifier::from_env(),
        exec,
    };
    // A bad file is bad input, like a bad flag: exit status 2 before anything is opened.
    let file = cli.config.as_deref().map(config::load).transpose().map_err(Failure::Usage)?;
    let mut args = match &file {
        Some(file) => cli.settings.merge(&given, &file.settings),
        None => cli.settings.clone(),
    };
    // Started by an upgrade: no terminal to prompt on (stdin is /dev/null), and the
    // predecessor's output is not to be repeated. (Reloads compare with the quiet the
    // flags and file say, which they cannot change.)
    let configured = args.clone();
    args.quiet |= life.readiness.is_upgrade();
    let services = Services::new(&args, &given, file.as_ref()).map_err(Failure::Usage)?;
    // What the flags and file say that does nothing: said once on the terminal and once in
    // the log.
    let mut warnings = file.as_ref().map(config::File::warnings).unwrap_or_default();
    warnings.extend(services.pools.iter().flat_map(services::PoolSpec::warnings));
    warnings.iter().for_each(|w| err!("lb: warning: {w}"));
    for spec in &services.pools {
        if let Some(b) = spec.settings.backends.iter().find(|b| b.target.port == 0 && !args.demo) {
            return Err(Failure::Usage(spec.about(format!(
                "backend {}: port 0 is only allowed with --demo (a free port for a demo backend)",
                b.target
            ))));
        }
    }
    let log_guard = logging::init(&args.log_file, &args.log_level, args.log_format)
        .map_err(Failure::Runtime)?;
    let log_reopener = log_guard.reopener();
    warnings.iter().for_each(|w| tracing::warn!("{w}"));
    let io = io_engine(args.io)?;
    let proxy = ProxyConfig {
        max_connections: args.max_connections.0,
        shutdown_grace: args.shutdown_grace,
        access_log: match args.log_format {
            LogFormat::Text => AccessLogFormat::Line,
            LogFormat::Json => AccessLogFormat::Fields,
        },
        io,
        placement: args.placement,
        ..ProxyConfig::default()
    };
    let balancer = Balancer::empty(TcpConnector, proxy);
    let workers = start_workers(&balancer, args.workers)?;
    // The control runtime: health checks, the admin endpoint, commands, signals. The data path
    // runs on the worker threads, so one thread is plenty here.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("lb-control")
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(format!("cannot start the runtime: {e}")))?;
    let command_line = CommandLine { cli, given };
    let result = runtime.block_on(async {
        let serving = Serving { args, configured, life };
        tokio::spawn(serve(serving, services, balancer, command_line, log_reopener))
            .await
            .unwrap_or_else(|e| Err(Failure::Runtime(format!("lb stopped unexpectedly: {e}"))))
    });
    match &result {
        // The workers return once shutdown is complete: joining is then immediate.
        Ok(()) => workers.into_iter().for_each(|w| drop(w.join())),
        // Logged here, while the log writer is still alive to flush it.
        Err(Failure::Runtime(msg) | Failure::Usage(msg)) => tracing::error!("{msg}"),
    }
    // `log_guard` drops after `runtime` (declared later, dropped first): it writes what is pending.
    result
}

/// The engine `--io` asks for: `auto` takes io_uring where the kernel allows it (and says why
/// not in the log otherwise); `uring` where it does not is an error at start.
fn io_engine(choice: IoChoice) -> Result<IoEngine, Failure> {
    let uring = || {
        IoEngine::uring_available().map(|()| {
            tracing::info!("relaying with io_uring");
            IoEngine::Uring
        })
    };
    match choice {
        IoChoice::Epoll => Ok(IoEngine::Epoll),
        IoChoice::Uring => uring().map_err(|e| {
            Failure::Runtime(format!(
                "--io uring: io_uring is not available here ({e}); use --io epoll or auto"
            ))
        }),
        IoChoice::Auto => Ok(uring().unwrap_or_else(|e| {
            tracing::info!(error = %e, "io_uring is not available here; relaying with epoll");
            IoEngine::Epoll
        })),
    }
}

/// Starts one thread per worker, each with its own single-threaded runtime that lives until
/// shutdown is complete. The listeners' accept loops are spread over them
/// ([`Balancer::set_workers`]) and each serves the connections it accepts, so connections
/// never move between threads: no cross-thread wake-ups on the data path. (Built outside any
/// runtime, where a runtime may be dropped.)
fn start_workers(
    balancer: &Balancer,
    count: usize,
) -> Result<Vec<std::thread::JoinHandle<()>>, Failure> {
    let handle = balancer.handle();
    let (mut threads, mut runtimes) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for i in 0..count {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::Runtime(format!("cannot start a worker runtime: {e}")))?;
        runtimes.push(runtime.handle().clone());
        let handle = handle.clone();
        let thread = std::thread::Builder::new()
            .name(format!("lb-worker-{i}"))
            .spawn(move || runtime.block_on(handle.drained()))
            .map_err(|e| Failure::Runtime(format!("cannot start worker thread: {e}")))?;
        threads.push(thread);
    }
    balancer.set_workers(runtimes);
    Ok(threads)
}

/// Resolves and binds the admin endpoint's listener, or takes the one passed for it.
async fn bind_admin(
    host: &str,
    port: u16,
    life: &mut lifecycle::Lifecycle,
) -> Result<std::net::TcpListener, Failure> {
    let target = lb_net::Target { host: host.to_owned(), port };
    let addrs = target
        .resolve()
        .await
        .map_err(|e| Failure::Runtime(format!("cannot listen on {host}: {e}")))?;
    let addr = addrs.iter().find(|a| a.is_ipv4()).copied().unwrap_or(addrs[0]);
    if let Some(passed) = life.admin_socket(addr) {
        return Ok(passed);
    }
    let fail = |e: std::io::Error| Failure::Runtime(format!("cannot listen on {addr}: {e}"));
    lb_net::bind(addr, false).map_err(fail)
}

/// What `serve` runs with: the settings in force, those the flags and file give (the same
/// but for `quiet` in a process started by an upgrade), and the process's lifecycle.
struct Serving {
    args: Settings,
    configured: Settings,
    life: lifecycle::Lifecycle,
}

async fn serve(
    serving: Serving,
    services: Services,
    balancer: Balancer,
    command_line: CommandLine,
    log_reopener: logging::LogReopener,
) -> Result<(), Failure> {
    let Serving { args, configured, mut life } = serving;
    // Every backend is resolved and every address bound before anything is served.
    let mut resolved = Vec::with_capacity(services.pools.len());
    for spec in &services.pools {
        let addrs = plan::resolve(&spec.settings.backends).await;
        resolved.push(addrs.map_err(|e| Failure::Runtime(spec.about(e)))?);
    }
    let demo_ports =
        if args.demo { demo::start_for(&services, &mut resolved).await? } else { Vec::new() };
    let mut wanted = Vec::with_capacity(resolved.len());
    for (spec, addrs) in services.pools.iter().zip(&resolved) {
        let checked = plan::wanted(&spec.settings.backends, addrs);
        wanted.push(checked.map_err(|e| Failure::Usage(spec.about(e)))?);
    }
    let mut addrs = Vec::with_capacity(services.listeners.len());
    for spec in &services.listeners {
        addrs.push(spec.resolve().await.map_err(Failure::Runtime)?);
    }
    services::check_overlaps(&services.listeners, &addrs).map_err(Failure::Usage)?;
    let mut sockets = Vec::with_capacity(services.listeners.len());
    for (spec, &addr) in services.listeners.iter().zip(&addrs) {
        sockets.push(life.listener_sockets(spec, addr, args.workers).map_err(Failure::Runtime)?);
    }
    let bound = sockets
        .iter()
        .map(|s| s[0].local_addr())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    let config = command_line.cli.config.clone();
    let config_file = config.as_ref().map(|p| p.display().to_string());
    let shown = Shown { args: &args, services: &services, wanted: &wanted, bound: &bound };
    shown.log_start(config_file.as_deref());
    if let Some(files) = limits::raise_open_files_limit() {
        let room = files.connections();
        let message = format!("open files limit allows about {room} connections at once");
        match files.raised_from() {
            Some(before) => {
                tracing::info!(open_files = files.now, raised_from = before, "{message}")
            }
            None => tracing::info!(open_files = files.now, "{message}"),
        }
        if args.max_connections.0.is_some_and(|max| max > room) {
            tracing::warn!(
                open_files = files.now,
                "--max-connections is above what the open files limit allows (about {room}); beyond that, accepting pauses until connections end (raise `ulimit -n` or systemd's LimitNOFILE=)"
            );
        }
    }
    let handle = balancer.handle();
    for (spec, wanted) in services.pools.iter().zip(&wanted) {
        let pool = spec.build(wanted).map_err(Failure::Usage)?;
        let added = handle.add_pool(&spec.name, pool, spec.pool_settings());
        added.map_err(|e| Failure::Usage(spec.about(e)))?;
    }
    // Backends from DNS: the first lookup is applied before anything listens, so the first
    // clients find them (a failed one is logged and retried: the pool starts with its listed
    // backends, if any). The pools' first lookups run together: start-up waits for the
    // slowest (6 s at most), not for their sum.
    let mut lookups = tokio::task::JoinSet::new();
    for (i, spec) in services.pools.iter().enumerate() {
        let Some(discovery) = spec.discovery_config() else { continue };
        let (handle, name) = (handle.clone(), spec.name.clone());
        lookups.spawn(async move {
            let source = discovery.describe();
            (i, source, handle.set_discovery(&name, Some(discovery)).await)
        });
    }
    let mut firsts = lookups.join_all().await;
    firsts.sort_by_key(|(i, ..)| *i);
    for (i, source, first) in firsts {
        let spec = &services.pools[i];
        let first = first.map_err(|e| Failure::Runtime(spec.about(e)))?.unwrap_or_default();
        tracing::info!(pool = %spec.name, source = %source, "discover: {first}");
        if !args.quiet {
            out!("{}", spec.about(format!("discover {source}: {first}")));
        }
    }
    if let Some(path) = config {
        let reloader = Arc::new(reload::Reloader {
            path,
            cli: command_line.cli.settings,
            given: command_line.given,
            running: configured,
            demo_ports,
            handle: handle.clone(),
            applied: tokio::sync::Mutex::new(services.clone()),
        });
        let reload: lb_net::Reloader = Arc::new(move || {
            let reloader = reloader.clone();
            Box::pin(async move { reloader.reload().await.map_err(lb_net::Error::Reload) })
        });
        let notifier = life.notifier.clone();
        handle.set_reloader(lifecycle::notify_around_reload(reload, notifier, handle.clone()));
    }
    let upgrader = Arc::new(lifecycle::Upgrader::new(
        life.exec.clone(),
        handle.clone(),
        life.notifier.clone(),
    ));
    {
        let upgrader = upgrader.clone();
        handle.set_upgrader(Arc::new(move || {
            let upgrader = upgrader.clone();
            Box::pin(async move { upgrader.upgrade().await })
        }));
    }
    // Installed early too: SIGUSR2's default action would end the process.
    match signal(SignalKind::user_defined2()) {
        Ok(usr2) => {
            tokio::spawn(lifecycle::upgrade_on_usr2(usr2, handle.clone(), args.quiet));
        }
        Err(e) => tracing::error!(error = %e, "cannot install the SIGUSR2 handler; use `upgrade`"),
    }
    // Installed before the banner, so a SIGHUP sent once lb is visibly up never meets the
    // default action (ending the process).
    match signal(SignalKind::hangup()) {
        Ok(hangup) => {
            let has_config = config_file.is_some();
            let hup =
                reload_on_hangup(hangup, handle.clone(), args.quiet, has_config, log_reopener);
            tokio::spawn(hup);
        }
        Err(e) => tracing::error!(error = %e, "cannot install the SIGHUP handler; use `reload`"),
    }
    // SIGINT and SIGTERM handled from here on (the handlers are installed now, and a signal
    // that arrives before `supervise` waits for it is kept), so one sent as soon as lb is
    // visibly up, or ready for systemd, never ends it abruptly.
    let signals = shutdown_signal(handle.clone());
    // Everything that can fail comes before accepting: a process started by an upgrade that
    // fails must not have taken connections it would then cut.
    let admin_failure = |msg: String| Failure::Runtime(format!("admin endpoint: {msg}"));
    let admin_socket = match &args.admin {
        Some(admin) => {
            let bound = bind_admin(&admin.host, admin.port, &mut life).await;
            let listener = bound
                .map_err(|(Failure::Runtime(msg) | Failure::Usage(msg))| admin_failure(msg))?;
            match listener.try_clone() {
                Ok(kept) => *upgrader.admin.lock().unwrap_or_else(|p| p.into_inner()) = Some(kept),
                Err(e) => tracing::warn!(error = %e, "cannot keep the admin socket for an upgrade"),
            }
            Some(TcpListener::from_std(listener).map_err(|e| admin_failure(e.to_string()))?)
        }
        None => None,
    };
    // Accepting before the banner and the prompt: a command that follows them (`reload`)
    // finds every listener in place.
    if services.shorthand {
        tracing::info!(address = %bound[0], workers = args.workers, "listening");
    }
    for (spec, sockets) in services.listeners.iter().zip(sockets) {
        let added = handle.add_listener(spec.config.clone(), sockets);
        added.map_err(|e| Failure::Runtime(spec.about(e)))?;
    }
    // After an upgrade the predecessor said it all: the addresses are the same.
    let upgrading = life.readiness.is_upgrade();
    if !upgrading {
        shown.banner(config_file.as_deref());
    }
    if let (Some(admin), Some(listener)) = (&args.admin, admin_socket) {
        let config = lb_net::admin::AdminConfig {
            token: args.admin_token.clone(),
            allowed_hosts: args.admin_allowed_hosts.0.clone(),
        };
        let stop = {
            let handle = handle.clone();
            let handed_over = upgrader.handed_over();
            // Up until shutdown is complete, so the drain can be watched and scraped; or
            // until a successor took over, which then answers alone.
            async move {
                tokio::select! {
                    () = handle.drained() => {}
                    () = handed_over => {}
                }
            }
        };
        if let Ok(addr) = listener.local_addr() {
            // Commands change and stop the balancer: from another host, only with a token.
            if !addr.ip().is_loopback() && args.admin_token.is_none() {
                let warning = format!(
                    "the admin endpoint listens on {addr}, beyond this host, and takes commands \
                     without a token: anyone who can reach it can drain, remove or stop \
                     backends; set --admin-token (or listen on 127.0.0.1)"
                );
                tracing::warn!(target: "lb::admin", "{warning}");
                if !upgrading {
                    err!("lb: warning: {warning}");
                }
            }
            if !upgrading && (!args.quiet || admin.port == 0) {
                out!("admin endpoint on http://{addr} (dashboard at /, /metrics, /stats, POST /command)");
            }
        }
        tokio::spawn(lb_net::admin::run(listener, handle.clone(), config, stop));
    }
    repl::spawn(handle.clone(), tokio::runtime::Handle::current(), args.quiet)
        .map_err(|e| Failure::Runtime(format!("cannot start the command prompt: {e}")))?;
    life.ready(&handle);
    tokio::spawn(lifecycle::notify_systemd(handle.clone(), life.notifier.clone()));
    let report = balancer.supervise(signals).await;
    if !args.quiet {
        match report.cut_early {
            true => out!(
                "stopped ({} connections closed at once, before the end of the grace period)",
                report.cut
            ),
            false => {
                out!("stopped ({} connections closed at the end of the grace period)", report.cut)
            }
        }
    }
    Ok(())
}

/// What `lb` says it serves, on the terminal and in the log, when it starts.
struct Shown<'a> {
    args: &'a Settings,
    services: &'a Services,
    wanted: &'a [Vec<plan::Wanted>],
    bound: &'a [SocketAddr],
}

impl Shown<'_> {
    /// The one-listener, one-pool `lb` of old, said as it always was.
    fn one_pool(&self) -> Option<(&PoolSpec, &[plan::Wanted])> {
        match (self.services.shorthand, self.services.pools.as_slice()) {
            (true, [pool]) => Some((pool, &self.wanted[0])),
            _ => None,
        }
    }

    /// Each pool (`web (round_robin): 10.0.0.5:443, ...`) and each listener
    /// (`https on 0.0.0.0:443: pool web`).
    fn pools_and_listeners(&self) -> (Vec<String>, Vec<String>) {
        let pools = self.services.pools.iter().zip(self.wanted).map(|(p, w)| p.describe(w));
        let listeners = self.services.listeners.iter().zip(self.bound).map(|(l, addr)| {
            format!("listening on {addr} (listener {}): {}", l.config.name, routing_text(&l.config))
        });
        (pools.collect(), listeners.collect())
    }

    fn log_start(&self, config_file: Option<&str>) {
        let config = config_file.unwrap_or("none");
        let version = env!("CARGO_PKG_VERSION");
        if let Some((pool, wanted)) = self.one_pool() {
            let health = pool.pool_settings().health;
            let check = if health.enabled { health.kind.to_string() } else { "off".to_owned() };
            tracing::info!(
                address = %self.bound[0],
                algorithm = %pool.settings.algorithm,
                backends = %backends_text(pool, wanted),
                health_check = %check,
                config,
                "lb {version} starting"
            );
            return;
        }
        let (pools, listeners) = self.pools_and_listeners();
        let (pools, listeners) = (pools.join("; "), listeners.join("; "));
        tracing::info!(pools, listeners, config, "lb {version} starting");
    }

    /// The banner; quiet, only the address of each listener given port 0 (nobody could know
    /// it otherwise).
    fn banner(&self, config_file: Option<&str>) {
        let Shown { args, services, .. } = self;
        if args.quiet {
            for (spec, addr) in services.listeners.iter().zip(self.bound) {
                match (spec.address.port, services.shorthand) {
                    (0, true) => out!("listening on {addr}"),
                    (0, false) => out!("listening on {addr} (listener {})", spec.config.name),
                    _ => {}
                }
            }
            return;
        }
        let version = env!("CARGO_PKG_VERSION");
        if let Some((pool, wanted)) = self.one_pool() {
            let (algorithm, backends) = (pool.settings.algorithm, backends_text(pool, wanted));
            out!("lb {version} listening on {} ({algorithm}), backends: {backends}", self.bound[0]);
        } else {
            let (pools, listeners) = self.pools_and_listeners();
            out!("lb {version}: {} pools, {} listeners", pools.len(), listeners.len());
            pools.iter().for_each(|p| out!("  pool {p}"));
            listeners.iter().for_each(|l| out!("  {l}"));
        }
        match config_file {
            Some(path) => out!(
                "settings from {path}; logging to {}; type `help` for commands, `quit` to stop",
                args.log_file
            ),
            None => {
                out!("logging to {}; type `help` for commands, `quit` to stop", args.log_file)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::panic_text;

    #[test]
    fn panic_text_reads_both_payload_kinds() {
        let literal = std::panic::catch_unwind(|| panic!("static text")).unwrap_err();
        assert_eq!(panic_text(literal.as_ref()), "static text");
        let formatted = std::panic::catch_unwind(|| panic!("n = {}", 3)).unwrap_err();
        assert_eq!(panic_text(formatted.as_ref()), "n = 3");
        let other = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(panic_text(other.as_ref()), "(no message)");
    }
}
