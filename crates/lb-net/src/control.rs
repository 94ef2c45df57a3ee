//! The control surface: one command grammar, parsed in one place, and the [`Handle`] that
//! carries commands out.
//!
//! The REPL, the admin endpoint and embedding programs all go through [`Handle`]; text commands
//! go through [`Command::parse`] first, so every front end accepts exactly the same language
//! and answers with exactly the same words.
//!
//! ```text
//! add <host> <port> [weight=N] [ready|drain|maint]    add 127.0.0.1 8004
//! add <host:port> [weight=N] [ready|drain|maint]      add 127.0.0.1:8004 weight=3
//! remove <backend>     drain <backend>     enable <backend>     maint <backend>
//! weight <backend> <N>
//! algorithm [name]     stats     health     help     quit
//! ```
//!
//! A `<backend>` is `host:port`, `[v6]:port`, or `host port`.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_core::{AdminState, Algorithm, Pool, PoolStats};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::Error;
use crate::health_check::{CheckLog, CheckStatus};
use crate::proxy::ProxyCounters;
use crate::shutdown::Tracker;

/// A backend as named in a command: a host (name or IP) and a port, not yet resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Host name or IP address.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

fn parse_port(s: &str, whole: &str) -> Result<u16, Error> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(Error::BadCommand(format!(
            "invalid port {s:?} in {whole:?}: expected a number from 1 to 65535"
        ))),
        Ok(p) => Ok(p),
    }
}

fn check_host(host: &str, whole: &str) -> Result<(), Error> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && (host.parse::<IpAddr>().is_ok()
            || host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadCommand(format!("invalid host {host:?} in {whole:?}")))
    }
}

/// How to write the bare IPv6 address `v6` with a port: `::1:8001` most likely meant ::1 port
/// 8001, so `[::1]:8001`; otherwise the address in brackets with an example port.
fn bracketed_example(v6: &str) -> String {
    if let Some((host, port)) = v6.rsplit_once(':') {
        if host.parse::<std::net::Ipv6Addr>().is_ok() && port.parse::<u16>().is_ok_and(|p| p > 0) {
            return format!("[{host}]:{port}");
        }
    }
    format!("[{v6}]:8001")
}

impl Target {
    /// Parses `host:port` or `[v6]:port` from one word.
    pub fn parse_one(s: &str) -> Result<Target, Error> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            if addr.port() == 0 {
                return Err(Error::BadCommand(format!(
                    "invalid port \"0\" in {s:?}: expected a number from 1 to 65535"
                )));
            }
            return Ok(Target { host: addr.ip().to_string(), port: addr.port() });
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(|| {
            Error::BadCommand(format!(
                "missing port in {s:?}: expected host:port, e.g. 127.0.0.1:8001"
            ))
        })?;
        if host.starts_with('[') && host.contains('%') {
            return Err(Error::BadCommand(format!(
                "invalid address {s:?}: IPv6 zone IDs (%...) are not supported; use a global or \
                 loopback address"
            )));
        }
        if host.contains(':') {
            return Err(Error::BadCommand(format!(
                "invalid address {s:?}: write IPv6 addresses in brackets, e.g. [::1]:8001"
            )));
        }
        check_host(host, s)?;
        Ok(Target { host: host.to_owned(), port: parse_port(port, s)? })
    }

    /// Takes a target from the front of `words`: either `host:port` or `host port`.
    fn take(words: &mut &[&str], command: &str) -> Result<Target, Error> {
        let Some((&first, rest)) = words.split_first() else {
            return Err(Error::BadCommand(format!(
                "{command}: missing backend, e.g. `{command} 127.0.0.1:8001` or `{command} 127.0.0.1 8001`"
            )));
        };
        // A bare IP (IPv6 included) or a name without a port takes the next word as its port.
        let ip = first.parse::<IpAddr>().ok();
        if ip.is_some() || !first.contains(':') {
            let Some((&port, rest)) = rest.split_first() else {
                let example = match ip {
                    // `::1:8001` is one IPv6 address, not ::1 with a port: say how to write the
                    // port, which `add ::1:8001 8001` would not.
                    Some(IpAddr::V6(_)) => format!(
                        "write an IPv6 address in brackets before its port, e.g. `{command} {}`",
                        bracketed_example(first)
                    ),
                    _ => format!("e.g. `{command} {first} 8001`"),
                };
                return Err(Error::BadCommand(format!(
                    "{command}: missing port after {first:?}: {example}"
                )));
            };
            check_host(first, first)?;
            let whole = format!("{first} {port}");
            let port = parse_port(port, &whole).map_err(|e| match ip {
                Some(IpAddr::V6(_)) => Error::BadCommand(format!(
                    "{e} (an IPv6 address with its port is written in brackets, e.g. `{command} {}`)",
                    bracketed_example(first)
                )),
                _ => e,
            })?;
            let target = Target { host: first.to_owned(), port };
            *words = rest;
            return Ok(target);
        }
        let target = Target::parse_one(first)?;
        *words = rest;
        Ok(target)
    }

    /// Resolves to socket addresses: an IP directly, a name through the system resolver.
    pub async fn resolve(&self) -> Result<Vec<SocketAddr>, Error> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|source| Error::Resolve { host: self.host.clone(), source })?
            .collect();
        if addrs.is_empty() {
            return Err(Error::Resolve {
                host: self.host.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
            });
        }
        Ok(addrs)
    }
}

impl FromStr for Target {
    type Err = Error;
    fn from_str(s: &str) -> Result<Target, Error> {
        Target::parse_one(s)
    }
}

/// One control command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Add a backend.
    Add {
        /// Where.
        target: Target,
        /// Weight (default 1).
        weight: Option<u32>,
        /// Initial admin state (default ready).
        state: Option<AdminState>,
    },
    /// Remove a backend; its open connections finish on their own.
    Remove(Target),
    /// Stop sending new connections to a backend; open ones continue.
    Drain(Target),
    /// Put a backend back in rotation (admin state ready).
    Enable(Target),
    /// Put a backend in maintenance.
    Maint(Target),
    /// Change a backend's weight.
    Weight(Target, u32),
    /// Show (`None`) or switch the algorithm.
    Algorithm(Option<Algorithm>),
    /// Show the stats table.
    Stats,
    /// Show the last health check of each backend.
    Health,
    /// Show the command list.
    Help,
    /// Re-read the configuration file and apply the difference.
    Reload,
    /// Shut down gracefully.
    Quit,
}

/// Command names, for completion in the REPL.
pub const COMMAND_NAMES: [&str; 13] = [
    "add",
    "remove",
    "drain",
    "enable",
    "maint",
    "weight",
    "algorithm",
    "stats",
    "health",
    "help",
    "reload",
    "quit",
    "exit",
];

/// The command list, as `help` prints it.
pub const HELP: &str = "\
Commands:
  stats                              backends, connections and bytes, with totals
  health                             last health check of each backend
  add <host> <port> [weight=N] [drain|maint]
  add <host:port> [weight=N] [drain|maint]
                                     add a backend (weight 1 to 1000, default 1)
  remove <backend>                   take a backend out; its open connections finish
  drain <backend>                    no new connections; open ones continue
  maint <backend>                    maintenance: no new connections
  enable <backend>                   back in rotation after drain or maint
  weight <backend> <N>               change a backend's weight
  algorithm [name]                   show or switch: round_robin, least_connections, random, ip_hash, p2c
  reload                             re-read the --config file and apply the difference
  help                               this list
  quit                               shut down gracefully (also: exit)
A <backend> is host:port, [v6]:port, or host port.";

impl Command {
    /// Parses one line. Blank lines are an error ([`Error::BadCommand`] with "empty command")
    /// that callers usually ignore.
    pub fn parse(line: &str) -> Result<Command, Error> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((&name, mut rest)) = words.split_first() else {
            return Err(Error::BadCommand("empty command".into()));
        };
        let name_lc = name.to_ascii_lowercase();
        let cmd = match name_lc.as_str() {
            "add" => {
                let target = Target::take(&mut rest, "add")?;
                let BackendOptions { weight, state } =
                    BackendOptions::parse(rest.iter().copied()).map_err(|e| match e {
                        Error::BadCommand(msg) => Error::BadCommand(format!("add: {msg}")),
                        other => other,
                    })?;
                return Ok(Command::Add { target, weight, state });
            }
            "remove" | "rm" | "del" | "delete" => Command::Remove(Target::take(&mut rest, "remove")?),
            "drain" => Command::Drain(Target::take(&mut rest, "drain")?),
            "enable" | "ready" => Command::Enable(Target::take(&mut rest, "enable")?),
            "maint" | "disable" => Command::Maint(Target::take(&mut rest, "maint")?),
            "weight" => {
                let target = Target::take(&mut rest, "weight")?;
                let Some((&w, more)) = rest.split_first() else {
                    return Err(Error::BadCommand(format!(
                        "weight: missing the new weight, e.g. `weight {target} 3`"
                    )));
                };
                rest = more;
                Command::Weight(target, parse_weight(w.trim_start_matches("weight=").trim_start_matches("w="))?)
            }
            "algorithm" | "algo" => match rest.split_first() {
                None => Command::Algorithm(None),
                Some((&a, more)) => {
                    rest = more;
                    Command::Algorithm(Some(a.parse()?))
                }
            },
            "stats" | "status" => Command::Stats,
            "health" => Command::Health,
            "help" | "?" => Command::Help,
            "reload" => Command::Reload,
            "quit" | "exit" | "shutdown" => Command::Quit,
            _ => {
                return Err(Error::BadCommand(format!(
                    "unknown command {name:?}: expected one of add, remove, drain, enable, maint, weight, algorithm, stats, health, help, reload, quit"
                )))
            }
        };
        if let Some(extra) = rest.first() {
            return Err(Error::BadCommand(format!("{name_lc}: unexpected {extra:?} at the end")));
        }
        Ok(cmd)
    }
}

/// The options that may follow a backend's address, in `add` and in `lb --backend`
/// (`127.0.0.1:8004,weight=3,drain`): a weight and an initial admin state, each at most once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendOptions {
    /// `weight=N` (also `w=N`, or a bare `N`): 1 to 1000; `None` for the default.
    pub weight: Option<u32>,
    /// `ready`, `drain` or `maint` (also `state=...`); `None` for the default, ready.
    pub state: Option<AdminState>,
}

impl BackendOptions {
    /// Parses the option words after an address, any case. A weight or a state given twice
    /// (`weight=5 weight=6`, `drain maint`) is an error naming both, rather than the last one
    /// silently winning.
    pub fn parse<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<BackendOptions, Error> {
        let mut options = BackendOptions::default();
        // The words that set each option, for the message when one comes again.
        let (mut weight_word, mut state_word): (Option<&str>, Option<&str>) = (None, None);
        for word in words {
            let lower = word.to_ascii_lowercase();
            if let Some(w) = lower.strip_prefix("weight=").or_else(|| lower.strip_prefix("w=")) {
                let w = parse_weight(w)?;
                options.weight = Some(once(&mut weight_word, word, "weight", w)?);
            } else if let Some(s) = lower.strip_prefix("state=") {
                let s = s.parse::<AdminState>()?;
                options.state = Some(once(&mut state_word, word, "admin state", s)?);
            } else if let Ok(s) = lower.parse::<AdminState>() {
                options.state = Some(once(&mut state_word, word, "admin state", s)?);
            } else if !lower.is_empty() && lower.bytes().all(|b| b.is_ascii_digit()) {
                let w = parse_weight(&lower)?;
                options.weight = Some(once(&mut weight_word, word, "weight", w)?);
            } else {
                return Err(Error::BadCommand(format!(
                    "unexpected {word:?}: expected weight=N or one of ready, drain, maint"
                )));
            }
        }
        Ok(options)
    }
}

/// Records that `word` set the option `what`, or fails if an earlier word already did.
fn once<'a, T>(
    seen: &mut Option<&'a str>,
    word: &'a str,
    what: &str,
    value: T,
) -> Result<T, Error> {
    if let Some(first) = seen {
        return Err(Error::BadCommand(format!(
            "{what} given twice ({first:?} and {word:?}): give at most one"
        )));
    }
    *seen = Some(word);
    Ok(value)
}

fn parse_weight(s: &str) -> Result<u32, Error> {
    let w: u64 = s.trim().parse().map_err(|_| {
        Error::BadCommand(format!("invalid weight {s:?}: expected a whole number from 1 to 1000"))
    })?;
    Ok(lb_core::validate_weight(w)?)
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Add { target, weight, state } => {
                write!(f, "add {target}")?;
                if let Some(w) = weight {
                    write!(f, " weight={w}")?;
                }
                if let Some(s) = state {
                    write!(f, " {s}")?;
                }
                Ok(())
            }
            Command::Remove(t) => write!(f, "remove {t}"),
            Command::Drain(t) => write!(f, "drain {t}"),
            Command::Enable(t) => write!(f, "enable {t}"),
            Command::Maint(t) => write!(f, "maint {t}"),
            Command::Weight(t, w) => write!(f, "weight {t} {w}"),
            Command::Algorithm(None) => f.write_str("algorithm"),
            Command::Algorithm(Some(a)) => write!(f, "algorithm {a}"),
            Command::Stats => f.write_str("stats"),
            Command::Health => f.write_str("health"),
            Command::Help => f.write_str("help"),
            Command::Reload => f.write_str("reload"),
            Command::Quit => f.write_str("quit"),
        }
    }
}

impl FromStr for Command {
    type Err = Error;
    fn from_str(s: &str) -> Result<Command, Error> {
        Command::parse(s)
    }
}

/// Counters of the proxy as a whole at one moment; also the `clients` object of `GET /stats`,
/// with the same field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ProxyStats {
    /// Client connections open now.
    pub open: u64,
    /// Client connections accepted since start.
    pub accepted: u64,
    /// Closed at once because the global limit was reached.
    pub rejected_at_limit: u64,
    /// Closed because no backend was available.
    pub no_backend: u64,
    /// Closed because every backend tried failed to connect.
    pub connect_failed: u64,
    /// Connect attempts beyond each connection's first.
    pub retries: u64,
    /// Errors from accept itself.
    pub accept_errors: u64,
    /// Closed because the balancer was out of descriptors, ports or memory for a backend
    /// connection (not counted against any backend).
    #[serde(default)]
    pub resource_errors: u64,
}

/// Everything `stats` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// The pool: algorithm, per-backend counters, totals.
    pub pool: PoolStats,
    /// The proxy's own counters.
    pub proxy: ProxyStats,
    /// Time since the balancer started.
    pub uptime: Duration,
}

fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.proxy;
        let t = &self.pool.totals;
        writeln!(
            f,
            "algorithm {}, up {}, {} of {} backends available",
            self.pool.algorithm,
            format_duration(self.uptime),
            t.available,
            t.backends
        )?;
        writeln!(
            f,
            "clients: {} open, {} accepted, {} rejected at limit, {} with no backend, {} failed to connect, {} retries",
            p.open, p.accepted, p.rejected_at_limit, p.no_backend, p.connect_failed, p.retries
        )?;
        if p.resource_errors > 0 || p.accept_errors > 0 {
            writeln!(
                f,
                "balancer out of resources: {} accept errors, {} clients closed for want of a descriptor or port",
                p.accept_errors, p.resource_errors
            )?;
        }
        let width =
            self.pool.backends.iter().map(|b| b.addr.to_string().len()).max().unwrap_or(0).max(7);
        writeln!(
            f,
            "{:<width$}  {:<7}  {:>6}  {:>6}  {:>6}  {:>8}  {:>8}  {:>7}  {:>12}  {:>12}",
            "BACKEND",
            "STATE",
            "WEIGHT",
            "ACTIVE",
            "PEAK",
            "TOTAL",
            "FAILURES",
            "RETRIES",
            "BYTES_IN",
            "BYTES_OUT"
        )?;
        for b in &self.pool.backends {
            writeln!(
                f,
                "{:<width$}  {:<7}  {:>6}  {:>6}  {:>6}  {:>8}  {:>8}  {:>7}  {:>12}  {:>12}",
                b.addr.to_string(),
                b.state(),
                b.weight,
                b.active,
                b.peak_active,
                b.connections,
                b.connect_failures,
                b.retries,
                b.bytes_in,
                b.bytes_out
            )?;
        }
        if self.pool.backends.is_empty() {
            writeln!(f, "(no backends: add one with `add <host> <port>`)")?;
        }
        // Removed backends whose connections have all ended are no longer listed, but what they
        // did stays in TOTAL, so TOTAL never goes backwards; this row makes the column sums add up.
        let r = &self.pool.retired;
        if r.backends > 0 {
            writeln!(
                f,
                "{:<width$}  {:<7}  {:>6}  {:>6}  {:>6}  {:>8}  {:>8}  {:>7}  {:>12}  {:>12}",
                "RETIRED",
                "",
                "",
                "",
                "",
                r.connections,
                r.connect_failures,
                r.retries,
                r.bytes_in,
                r.bytes_out
            )?;
        }
        write!(
            f,
            "{:<width$}  {:<7}  {:>6}  {:>6}  {:>6}  {:>8}  {:>8}  {:>7}  {:>12}  {:>12}",
            "TOTAL",
            "",
            "",
            t.active,
            "",
            t.connections,
            t.connect_failures,
            t.retries,
            t.bytes_in,
            t.bytes_out
        )
    }
}

/// The answer to a command, printable as the REPL and admin endpoint show it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Reply {
    /// A change was made; the text says what.
    Done(String),
    /// The stats table.
    Stats(Box<Stats>),
    /// Last check per backend, in pool order; `None` for a backend not checked yet.
    Health(Vec<(SocketAddr, Option<CheckStatus>)>),
    /// The command list.
    Help,
    /// Shutdown has begun.
    ShuttingDown,
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Done(text) => f.write_str(text),
            Reply::Stats(stats) => write!(f, "{stats}"),
            Reply::Health(rows) => {
                if rows.is_empty() {
                    return f.write_str("(no backends)");
                }
                let now = Instant::now();
                let mut out = String::new();
                for (addr, status) in rows {
                    match status {
                        None => writeln!(out, "{addr}  not checked yet")?,
                        Some(s) => {
                            let ago = now.saturating_duration_since(s.at);
                            let took = s.duration.as_secs_f64() * 1000.0;
                            match &s.result {
                                Ok(()) => writeln!(
                                    out,
                                    "{addr}  ok      {took:.1} ms, {} ago",
                                    format_duration(ago)
                                )?,
                                Err(e) => writeln!(
                                    out,
                                    "{addr}  FAILED  {e} ({took:.1} ms, {} ago)",
                                    format_duration(ago)
                                )?,
                            }
                        }
                    }
                }
                f.write_str(out.trim_end())
            }
            Reply::Help => f.write_str(HELP),
            Reply::ShuttingDown => {
                f.write_str("shutting down: no new connections; open ones may finish")
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct HandleInner {
    pub(crate) pool: Pool,
    pub(crate) counters: Arc<ProxyCounters>,
    pub(crate) tracker: Arc<Tracker>,
    pub(crate) checks: CheckLog,
    /// Whether the health checker runs at all (for the `health` command's answer).
    pub(crate) checks_enabled: bool,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Set once shutdown is complete (connections finished or cut).
    pub(crate) drained: watch::Sender<bool>,
    /// Set by [`Handle::shutdown_now`]: the grace period ends at once.
    pub(crate) cut_now: watch::Sender<bool>,
    pub(crate) started: Instant,
    pub(crate) reloader: ReloadSlot,
}

/// What `reload` runs: re-reads the configuration and applies it, answering with a summary of
/// the changes or an error that says why nothing was changed.
pub type Reloader = Arc<dyn Fn() -> BoxFuture<Result<String, String>> + Send + Sync>;

/// The reload hook, if the binary set one.
#[derive(Default)]
pub(crate) struct ReloadSlot(Mutex<Option<Reloader>>);

impl fmt::Debug for ReloadSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = self.0.lock().map(|r| r.is_some()).unwrap_or(false);
        f.write_str(if set { "Some(<reloader>)" } else { "None" })
    }
}

/// A boxed, sendable future.
pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Controls a running balancer. Cheap to clone; every clone controls the same balancer.
#[derive(Debug, Clone)]
pub struct Handle {
    pub(crate) inner: Arc<HandleInner>,
}

impl Handle {
    pub(crate) fn new(
        pool: Pool,
        counters: Arc<ProxyCounters>,
        tracker: Arc<Tracker>,
        checks_enabled: bool,
    ) -> Handle {
        Handle {
            inner: Arc::new(HandleInner {
                pool,
                counters,
                tracker,
                checks_enabled,
                checks: Arc::new(Mutex::new(HashMap::new())),
                shutdown: watch::channel(false).0,
                drained: watch::channel(false).0,
                cut_now: watch::channel(false).0,
                started: Instant::now(),
                reloader: ReloadSlot::default(),
            }),
        }
    }

    /// Sets what the `reload` command does (the binary re-reads its configuration file).
    pub fn set_reloader(&self, reloader: Reloader) {
        *self.inner.reloader.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(reloader);
    }

    /// The pool, for anything the commands do not cover.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// Parses and runs one text command; see [`Command::parse`] for the grammar. A command that
    /// does not parse, or fails, changes nothing.
    pub async fn execute(&self, line: &str) -> Result<Reply, Error> {
        let command = Command::parse(line)?;
        self.run(command).await
    }

    /// Runs a command. Every command that changes something is logged (target `lb::control`).
    pub async fn run(&self, command: Command) -> Result<Reply, Error> {
        let result = self.apply(&command).await;
        let changes = !matches!(
            command,
            Command::Stats | Command::Health | Command::Help | Command::Algorithm(None)
        );
        match &result {
            Ok(reply) if changes => {
                tracing::info!(target: "lb::control", command = %command, "{reply}")
            }
            Ok(_) => tracing::debug!(target: "lb::control", command = %command, "ok"),
            Err(e) => {
                tracing::warn!(target: "lb::control", command = %command, error = %e, "command failed")
            }
        }
        result
    }

    async fn apply(&self, command: &Command) -> Result<Reply, Error> {
        let pool = &self.inner.pool;
        Ok(match command {
            Command::Add { target, weight, state } => {
                let addrs = target.resolve().await?;
                // Prefer IPv4 when a name resolves to both: backends usually listen on IPv4,
                // and `localhost` often resolves to ::1 first.
                let addr = addrs.iter().find(|a| a.is_ipv4()).copied().unwrap_or(addrs[0]);
                pool.add_with_state(addr, *weight, state.unwrap_or_default())?;
                let weight = weight.unwrap_or(lb_core::DEFAULT_WEIGHT);
                Reply::Done(format!(
                    "added {addr} (weight {weight}, {})",
                    state.unwrap_or_default()
                ))
            }
            Command::Remove(target) => {
                let addr = self.find(target).await?;
                pool.remove(addr)?;
                Reply::Done(format!("removed {addr}; its open connections will finish"))
            }
            Command::Drain(target) => {
                let addr = self.find(target).await?;
                pool.set_admin_state(addr, AdminState::Drain)?;
                Reply::Done(format!("draining {addr}: no new connections, open ones continue"))
            }
            Command::Maint(target) => {
                let addr = self.find(target).await?;
                pool.set_admin_state(addr, AdminState::Maint)?;
                Reply::Done(format!("{addr} in maintenance: no new connections"))
            }
            Command::Enable(target) => {
                let addr = self.find(target).await?;
                pool.set_admin_state(addr, AdminState::Ready)?;
                Reply::Done(format!("{addr} ready"))
            }
            Command::Weight(target, weight) => {
                let addr = self.find(target).await?;
                pool.set_weight(addr, *weight)?;
                Reply::Done(format!("{addr} weight {weight}"))
            }
            Command::Algorithm(None) => Reply::Done(format!(
                "algorithm {} (available: {})",
                pool.algorithm(),
                Algorithm::names()
            )),
            Command::Algorithm(Some(a)) => {
                pool.set_algorithm(*a);
                Reply::Done(format!("algorithm {a}"))
            }
            Command::Stats => Reply::Stats(Box::new(self.stats())),
            Command::Health if !self.inner.checks_enabled => Reply::Done(
                "health checks are off: backends are not checked (failed connects are retried \
                 elsewhere)"
                    .into(),
            ),
            Command::Health => Reply::Health(self.health()),
            Command::Help => Reply::Help,
            Command::Reload => {
                let reloader =
                    self.inner.reloader.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let Some(reload) = reloader else {
                    return Err(Error::Reload(
                        "no configuration file to reload (start lb with --config FILE)".into(),
                    ));
                };
                Reply::Done(reload().await.map_err(Error::Reload)?)
            }
            Command::Quit => {
                self.shutdown();
                Reply::ShuttingDown
            }
        })
    }

    /// The pool address a target names: its first resolved address that is in the pool.
    async fn find(&self, target: &Target) -> Result<SocketAddr, Error> {
        let addrs = target.resolve().await?;
        addrs
            .iter()
            .copied()
            .find(|a| self.inner.pool.get(*a).is_some())
            .ok_or(Error::Pool(lb_core::Error::UnknownBackend(addrs[0])))
    }

    /// Stats of the pool and the proxy.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        Stats {
            pool: self.inner.pool.stats(),
            proxy: ProxyStats {
                open: self.inner.tracker.open(),
                accepted: c.accepted.load(Relaxed),
                rejected_at_limit: c.rejected_at_limit.load(Relaxed),
                no_backend: c.no_backend.load(Relaxed),
                connect_failed: c.connect_failed.load(Relaxed),
                retries: c.retries.load(Relaxed),
                accept_errors: c.accept_errors.load(Relaxed),
                resource_errors: c.resource_errors.load(Relaxed),
            },
            uptime: self.inner.started.elapsed(),
        }
    }

    /// The last health check of each backend, in pool order.
    pub fn health(&self) -> Vec<(SocketAddr, Option<CheckStatus>)> {
        let log = self.inner.checks.lock().unwrap_or_else(|p| p.into_inner());
        self.inner.pool.backends().iter().map(|b| (b.addr, log.get(&b.id).cloned())).collect()
    }

    /// Begins graceful shutdown: the balancer stops accepting, lets open connections finish
    /// for the grace period, then closes the rest. Returns at once; [`Balancer::run`] returns
    /// when shutdown is complete.
    ///
    /// [`Balancer::run`]: crate::Balancer::run
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Shuts down without waiting: like [`shutdown`](Self::shutdown), but connections still
    /// open are closed at once instead of at the end of the grace period (also when a graceful
    /// shutdown is already under way). Each is logged and counted as cut by shutdown.
    pub fn shutdown_now(&self) {
        self.inner.cut_now.send_replace(true);
        self.shutdown();
    }

    /// Resolves once [`shutdown_now`](Self::shutdown_now) has been called.
    pub(crate) async fn cut_requested(&self) {
        let mut rx = self.inner.cut_now.subscribe();
        let _ = rx.wait_for(|&cut| cut).await;
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    /// Resolves once shutdown is complete: every connection has finished or been cut.
    pub async fn drained(&self) {
        let mut rx = self.inner.drained.subscribe();
        let _ = rx.wait_for(|&done| done).await;
    }

    /// Resolves once shutdown has begun.
    pub async fn shutdown_requested(&self) {
        let mut rx = self.inner.shutdown.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail while we hold it.
        let _ = rx.wait_for(|&down| down).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(host: &str, port: u16) -> Target {
        Target { host: host.into(), port }
    }

    #[test]
    fn parses_the_seed_forms_and_the_new_ones() {
        assert_eq!(
            Command::parse("add 127.0.0.1 8004").unwrap(),
            Command::Add { target: t("127.0.0.1", 8004), weight: None, state: None }
        );
        assert_eq!(
            Command::parse("add 127.0.0.1:8004 weight=3").unwrap(),
            Command::Add { target: t("127.0.0.1", 8004), weight: Some(3), state: None }
        );
        assert_eq!(
            Command::parse("  ADD [::1]:9000 w=2 drain ").unwrap(),
            Command::Add {
                target: t("::1", 9000),
                weight: Some(2),
                state: Some(AdminState::Drain)
            }
        );
        assert_eq!(
            Command::parse("add ::1 9000").unwrap(),
            Command::Add { target: t("::1", 9000), weight: None, state: None }
        );
        assert_eq!(
            Command::parse("remove localhost 8001").unwrap(),
            Command::Remove(t("localhost", 8001))
        );
        assert_eq!(
            Command::parse("remove localhost:8001").unwrap(),
            Command::Remove(t("localhost", 8001))
        );
        assert_eq!(
            Command::parse("weight 10.0.0.1:80 7").unwrap(),
            Command::Weight(t("10.0.0.1", 80), 7)
        );
        assert_eq!(
            Command::parse("weight 10.0.0.1 80 7").unwrap(),
            Command::Weight(t("10.0.0.1", 80), 7)
        );
        assert_eq!(Command::parse("algorithm").unwrap(), Command::Algorithm(None));
        assert_eq!(
            Command::parse("algorithm least_connections").unwrap(),
            Command::Algorithm(Some(Algorithm::LeastConnections))
        );
        for (line, cmd) in [
            ("stats", Command::Stats),
            ("health", Command::Health),
            ("help", Command::Help),
            ("reload", Command::Reload),
            ("quit", Command::Quit),
            ("exit", Command::Quit),
        ] {
            assert_eq!(Command::parse(line).unwrap(), cmd);
        }
    }

    #[test]
    fn display_round_trips() {
        for line in [
            "add 127.0.0.1:8004 weight=3 drain",
            "add [::1]:8004",
            "remove 10.0.0.1:80",
            "drain a.example:80",
            "enable 10.0.0.1:80",
            "maint 10.0.0.1:80",
            "weight 10.0.0.1:80 9",
            "algorithm p2c",
            "stats",
        ] {
            let cmd = Command::parse(line).unwrap();
            assert_eq!(cmd.to_string(), line);
            assert_eq!(Command::parse(&cmd.to_string()).unwrap(), cmd);
        }
    }

    #[test]
    fn bad_commands_say_what_is_wrong() {
        let err = |line: &str| Command::parse(line).unwrap_err().to_string();
        assert_eq!(err(""), "empty command");
        assert!(
            err("frobnicate").starts_with("unknown command \"frobnicate\": expected one of add,")
        );
        assert!(err("add").contains("add: missing backend"));
        assert!(err("add 127.0.0.1").contains("missing port after \"127.0.0.1\""));
        assert!(err("add 127.0.0.1 99999").contains("invalid port \"99999\""));
        assert!(err("add 127.0.0.1:0").contains("invalid port \"0\""));
        assert!(err("add 127.0.0.1:80 weight=0").contains("weight 0 is out of range"));
        assert!(err("add 127.0.0.1:80 weight=abc").contains("invalid weight \"abc\""));
        assert!(err("add 127.0.0.1:80 bogus").contains("unexpected \"bogus\""));
        assert!(err("add bad_host!:80").contains("invalid host"));
        assert!(err("remove 127.0.0.1:80 extra").contains("unexpected \"extra\""));
        assert!(err("weight 127.0.0.1:80").contains("missing the new weight"));
        assert!(err("algorithm fastest").contains("expected one of round_robin"));
        assert!(err("add ::1:80").contains("missing port after \"::1:80\""), "a bare IPv6 address");
        assert!(err("add fe80::1::2:80").contains("IPv6 addresses in brackets"));
        assert!(err("add [fe80::1%lo]:80").contains("zone IDs (%...) are not supported"));
    }

    #[test]
    fn a_repeated_or_conflicting_option_is_named() {
        let err = |line: &str| Command::parse(line).unwrap_err().to_string();
        assert_eq!(
            err("add 127.0.0.1:3 weight=5 weight=6"),
            "add: weight given twice (\"weight=5\" and \"weight=6\"): give at most one"
        );
        assert_eq!(
            err("add 127.0.0.1:4 drain maint"),
            "add: admin state given twice (\"drain\" and \"maint\"): give at most one"
        );
        assert!(err("add 127.0.0.1:4 w=2 7").contains("weight given twice (\"w=2\" and \"7\")"));
        assert!(err("add 127.0.0.1:4 drain state=drain").contains("admin state given twice"));
        assert!(err("add 127.0.0.1 4 ready READY").contains("admin state given twice"));
        // One of each is fine, in either order.
        assert_eq!(
            Command::parse("add 127.0.0.1:4 maint weight=2").unwrap(),
            Command::Add {
                target: t("127.0.0.1", 4),
                weight: Some(2),
                state: Some(AdminState::Maint)
            }
        );
    }

    #[test]
    fn backend_options_are_read_by_one_parser() {
        let parse = |words: &[&str]| BackendOptions::parse(words.iter().copied());
        assert_eq!(parse(&[]).unwrap(), BackendOptions::default());
        assert_eq!(
            parse(&["weight=3", "drain"]).unwrap(),
            BackendOptions { weight: Some(3), state: Some(AdminState::Drain) }
        );
        assert_eq!(parse(&["W=4"]).unwrap().weight, Some(4));
        assert_eq!(parse(&["state=maint"]).unwrap().state, Some(AdminState::Maint));
        assert!(parse(&[""]).unwrap_err().to_string().contains("unexpected \"\""));
        assert!(parse(&["weight=0"]).unwrap_err().to_string().contains("out of range"));
        assert!(parse(&["fast"]).unwrap_err().to_string().contains("unexpected \"fast\""));
    }

    #[test]
    fn an_unbracketed_ipv6_address_gets_a_bracketed_example() {
        let err = |line: &str| Command::parse(line).unwrap_err().to_string();
        assert_eq!(
            err("add ::1:8001"),
            "add: missing port after \"::1:8001\": write an IPv6 address in brackets before its port, e.g. `add [::1]:8001`"
        );
        assert!(err("drain ::1").contains("e.g. `drain [::1]:8001`"));
        assert!(err("add 2001:db8::1:80").contains("e.g. `add [2001:db8::1]:80`"));
        assert!(err("add ::1:8001 weight=2").contains("e.g. `add [::1]:8001`"));
        // IPv4 and names keep the `host port` example.
        assert!(err("add 127.0.0.1").contains("e.g. `add 127.0.0.1 8001`"));
        assert!(err("remove localhost").contains("e.g. `remove localhost 8001`"));
    }
}
