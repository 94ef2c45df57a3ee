//! Command-line flags: [`Args`], and the value parsers of the settings (declared in
//! [`crate::settings`]), which read a setting's value alike from a flag and from a file.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::error::{ContextKind, ContextValue};
use clap::Parser;
use lb_core::{AdminState, Algorithm};
use lb_net::admin::AllowedHost;
use lb_net::BackendOptions;
use lb_net::{CheckKind, DnsQuery, Target};
use std::net::SocketAddr;

use crate::settings::Settings;

/// A `--backend` value: `HOST:PORT[,weight=N][,drain|maint][,backup]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BackendSpec {
    pub(crate) target: Target,
    pub(crate) weight: Option<u32>,
    pub(crate) state: AdminState,
    /// Takes new connections only while no primary of its pool is available.
    pub(crate) backup: bool,
}

/// Parses a `--backend` value. The options after the address are those of the `add` command,
/// read by the same code ([`BackendOptions::parse`]), so both accept the same words and reject
/// a weight or state given twice alike.
pub(crate) fn parse_backend(s: &str) -> Result<BackendSpec, String> {
    let mut parts = s.split(',');
    let target = parse_backend_address(parts.next().unwrap_or_default())?;
    let options = BackendOptions::parse(parts.map(str::trim)).map_err(|e| e.to_string())?;
    Ok(BackendSpec {
        target,
        weight: options.weight,
        state: options.state.unwrap_or_default(),
        backup: options.backup,
    })
}

/// The address part of a backend: `HOST:PORT` or `[V6]:PORT`.
pub(crate) fn parse_backend_address(s: &str) -> Result<Target, String> {
    let s = s.trim();
    // Port 0 is accepted here for --demo (a free port for each demo backend); without --demo
    // it is rejected once flags are combined.
    if s.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>() == Ok(0)) {
        if let Ok(a) = s.parse::<std::net::SocketAddr>() {
            return Ok(Target { host: a.ip().to_string(), port: 0 });
        }
    }
    Target::parse_one(s).map_err(|e| e.to_string())
}

/// A backend weight, 1 to 1000.
pub(crate) fn parse_weight(s: &str) -> Result<u32, String> {
    let w: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("invalid weight {s:?}: expected a whole number from 1 to 1000"))?;
    lb_core::validate_weight(w).map_err(|e| e.to_string())
}

/// An initial admin state: `ready`, `drain` or `maint`.
pub(crate) fn parse_admin_state(s: &str) -> Result<AdminState, String> {
    s.trim().parse().map_err(|e: lb_core::Error| e.to_string())
}

/// `--host`: a host name or IP address to listen on. An IPv6 literal may be bracketed as in
/// backend addresses (`[::1]`) or bare (`::1`); either way the brackets are dropped here, so
/// the rest of `lb` sees one form.
pub(crate) fn parse_host(s: &str) -> Result<String, String> {
    let expected = "expected a host name or IP address, e.g. localhost, 0.0.0.0, :: or [::1]";
    if let Some(inner) = s.strip_prefix('[') {
        return match inner.strip_suffix(']') {
            Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => Ok(v6.to_owned()),
            _ => Err(format!(
                "invalid host {s:?}: brackets hold an IPv6 address alone, e.g. [::1] (the port is --port)"
            )),
        };
    }
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("invalid host {s:?}: {expected}"));
    }
    // `127.0.0.1:80` or `localhost:8080`: a port written into the host (a bare IPv6 address
    // has colons of its own, and is taken as it is).
    if let Some((host, port)) = s.rsplit_once(':') {
        if !host.contains(':') && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "invalid host {s:?}: the host alone, e.g. {host} (the port is --port, or `port` \
                 in a file)"
            ));
        }
    }
    Ok(s.to_owned())
}

/// A `[[listen]]` table's `address`: `HOST:PORT`, the host as `--host` takes it (an IPv6
/// address in brackets) and the port as `--port` does (0 picks a free one).
pub(crate) fn parse_listen_address(s: &str) -> Result<Target, String> {
    let bad = |why: &str| format!("invalid listen address {s:?}: {why}");
    let Some((host, port)) = s.trim().rsplit_once(':') else {
        return Err(bad("expected HOST:PORT, e.g. 0.0.0.0:443 or [::1]:8443"));
    };
    if host.contains(':') && !host.starts_with('[') {
        return Err(bad("write an IPv6 address in brackets, e.g. [::1]:8443"));
    }
    Ok(Target { host: parse_host(host)?, port: parse_listen_port(port)? })
}

/// Longest listener name (it labels the listener's metrics, as a pool's name does).
const MAX_LISTENER_NAME: usize = 128;

/// A listener's name: letters, digits and `. _ - : [ ]`, as its default, the address as
/// written (`0.0.0.0:443`, `[::1]:8443`), is.
pub(crate) fn parse_listener_name(s: &str) -> Result<String, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-:[]".contains(c);
    if s.is_empty() || s.len() > MAX_LISTENER_NAME || !s.chars().all(allowed) {
        return Err(format!(
            "invalid listener name {s:?}: a listener name is 1 to {MAX_LISTENER_NAME} letters, \
             digits and . _ - : [ ]"
        ));
    }
    Ok(s.to_owned())
}

/// A pool's name ([`lb_net::validate_pool_name`]).
pub(crate) fn parse_pool_name(s: &str) -> Result<String, String> {
    lb_net::validate_pool_name(s).map(|()| s.to_owned()).map_err(|e| e.to_string())
}

/// A server name an SNI route matches: `api.example.com` or `*.example.org`.
pub(crate) fn parse_server_name(s: &str) -> Result<lb_net::ServerName, String> {
    s.parse().map_err(|e: lb_net::Error| e.to_string())
}

/// `--admin-token`: what `Authorization: Bearer TOKEN` must carry on `POST /command`. An HTTP
/// header carries visible ASCII, and the endpoint trims what it receives, so a token that is
/// empty or holds a space, a control character or a non-ASCII character could never match:
/// every command would be refused. Such a token is rejected here instead. The message never
/// shows the token itself, only the offending character.
pub(crate) fn parse_admin_token(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("the admin token is empty: give a non-empty token, or no token at all".into());
    }
    if let Some((i, c)) = s.chars().enumerate().find(|(_, c)| !c.is_ascii_graphic()) {
        let what = match c {
            ' ' => "a space",
            c if c.is_control() => "a control character",
            c if c.is_whitespace() => "a space",
            _ => "a non-ASCII character",
        };
        return Err(format!(
            "the admin token contains {what} ({:?}, character {}): use visible ASCII characters only, e.g. letters, digits and - . _ ~ + /",
            c,
            i + 1
        ));
    }
    Ok(s.to_owned())
}

/// `--admin-allowed-hosts`: host names the admin endpoint answers to besides IP addresses and
/// `localhost`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HostList(pub(crate) Vec<AllowedHost>);

/// A comma-separated list of names (`lb1.internal,*.corp.example`); empty for none.
pub(crate) fn parse_allowed_hosts(s: &str) -> Result<HostList, String> {
    s.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| name.parse::<AllowedHost>().map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()
        .map(HostList)
}

/// Durations are read by lb-net's parser, the one the command grammar uses (`drain ... deadline=60s`).
pub(crate) use lb_net::parse_duration;

/// A duration that must be more than zero (an interval or timeout of zero would spin or never
/// succeed).
pub(crate) fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?} is zero: this duration must be positive"));
    }
    Ok(d)
}

/// `--send-proxy`: the PROXY protocol version sent to backends; `None` for off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SendProxy(pub(crate) Option<lb_net::inspect::proxy_header::Version>);

/// `v1`, `v2` or `off`.
pub(crate) fn parse_send_proxy(s: &str) -> Result<SendProxy, String> {
    use lb_net::inspect::proxy_header::Version;
    match s.trim().to_ascii_lowercase().as_str() {
        "v1" | "1" => Ok(SendProxy(Some(Version::V1))),
        "v2" | "2" => Ok(SendProxy(Some(Version::V2))),
        "off" | "none" | "no" => Ok(SendProxy(None)),
        _ => Err(format!("invalid PROXY protocol version {s:?}: expected v1, v2 or off")),
    }
}

/// `--log-format`: how each log line is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// One readable line: time, level, target, message and fields.
    #[default]
    Text,
    /// One JSON object per line, the fields at the top level.
    Json,
}

/// `text` or `json`.
pub(crate) fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("invalid log format {s:?}: expected text or json")),
    }
}

/// `--io`: which engine relays connected clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum IoChoice {
    /// io_uring where the kernel allows it, else epoll.
    #[default]
    Auto,
    /// epoll readiness (tokio's reactor), everywhere.
    Epoll,
    /// io_uring, or a clear error at start where the kernel does not allow it.
    Uring,
}

/// `auto`, `epoll` or `uring`.
pub(crate) fn parse_io(s: &str) -> Result<IoChoice, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(IoChoice::Auto),
        "epoll" => Ok(IoChoice::Epoll),
        "uring" | "io_uring" | "io-uring" => Ok(IoChoice::Uring),
        _ => Err(format!("invalid I/O engine {s:?}: expected auto, epoll or uring")),
    }
}

/// `auto`, `system` or an algorithm this kernel has ([`CongestionControl`](lb_net::CongestionControl)).
pub(crate) fn parse_congestion_control(s: &str) -> Result<lb_net::CongestionControl, String> {
    let congestion: lb_net::CongestionControl = s.parse()?;
    congestion.check()?;
    Ok(congestion)
}

/// `pack` or `spread` ([`Placement`](lb_net::Placement)).
pub(crate) fn parse_placement(s: &str) -> Result<lb_net::Placement, String> {
    s.parse()
}

/// A duration that can be turned off; `None` for off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OptionalDuration(pub(crate) Option<Duration>);

/// A duration, or `off` / `0` for none.
pub(crate) fn parse_optional_duration(s: &str) -> Result<OptionalDuration, String> {
    if s.eq_ignore_ascii_case("off") || s.eq_ignore_ascii_case("none") {
        return Ok(OptionalDuration(None));
    }
    let d = parse_duration(s)?;
    Ok(OptionalDuration((!d.is_zero()).then_some(d)))
}

/// An algorithm name (see [`Algorithm::ALL`]).
pub(crate) fn parse_algorithm(s: &str) -> Result<Algorithm, String> {
    s.parse().map_err(|e: lb_core::Error| e.to_string())
}

/// A `--health-check` value; `None` for `off`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthCheck(pub(crate) Option<CheckKind>);

/// `tcp`, `http:/path`, or `off`.
pub(crate) fn parse_health_check(s: &str) -> Result<HealthCheck, String> {
    if s.eq_ignore_ascii_case("off") || s.eq_ignore_ascii_case("none") {
        return Ok(HealthCheck(None));
    }
    s.parse().map(|k| HealthCheck(Some(k))).map_err(|e: lb_net::Error| e.to_string())
}

/// A connection limit; `None` for unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limit<T = u64>(pub(crate) Option<T>);

/// A connection limit: a whole number, or `0` / `unlimited` for none.
pub(crate) fn parse_limit(s: &str) -> Result<Limit, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("unlimited") || s.eq_ignore_ascii_case("none") {
        return Ok(Limit(None));
    }
    match s.parse::<u64>() {
        Ok(0) => Ok(Limit(None)),
        Ok(n) => Ok(Limit(Some(n))),
        Err(_) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("invalid limit {s:?}: too large (0 or \"unlimited\" for none)"))
        }
        Err(_) => Err(format!(
            "invalid limit {s:?}: expected a whole number (0 or \"unlimited\" for none)"
        )),
    }
}

/// `--max-connections-per-client` and `--max-connection-rate-per-client`: as [`parse_limit`],
/// up to 4294967295 (lb-net counts per client in 32 bits).
pub(crate) fn parse_client_limit(s: &str) -> Result<Limit<u32>, String> {
    let Limit(limit) = parse_limit(s)?;
    let too_large = |_| {
        format!(
            "invalid limit {:?}: too large, at most {} (0 or \"unlimited\" for none)",
            s.trim(),
            u32::MAX
        )
    };
    limit.map(u32::try_from).transpose().map(Limit).map_err(too_large)
}

/// One `--allow` or `--deny` range: `10.0.0.0/8`, `2001:db8::/32` or one address.
pub(crate) fn parse_address_range(s: &str) -> Result<lb_net::AddressRange, String> {
    s.parse().map_err(|e: lb_net::Error| e.to_string())
}

/// A port to listen on, 0 to 65535 (0 picks a free one).
pub(crate) fn parse_listen_port(s: &str) -> Result<u16, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("invalid port {s:?}: expected a whole number from 0 to 65535"))
}

/// `--rise` and `--fall`: 1 to 1000 consecutive results (0 would never change state).
pub(crate) fn parse_threshold(s: &str) -> Result<u32, String> {
    parse_in_range(s, 1, 1000)
}

/// `--panic-threshold`: a percentage, 0 (off) to 100.
pub(crate) fn parse_panic_threshold(s: &str) -> Result<u8, String> {
    let n = parse_in_range(s.trim().trim_end_matches('%'), 0, 100).map_err(|_| {
        format!("invalid percentage {s:?}: expected a whole number from 0 (off) to 100")
    })?;
    Ok(u8::try_from(n).unwrap_or(100))
}

/// `--hash-balance-factor`: 0 (off) or a percentage from 100 to 10000.
pub(crate) fn parse_hash_balance_factor(s: &str) -> Result<u32, String> {
    let max = lb_core::MAX_HASH_BALANCE_FACTOR;
    match s.trim().parse::<u32>() {
        Ok(n) if n == 0 || (100..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "invalid hash balance factor {s:?}: expected 0 (off) or a whole number from 100 to {max}"
        )),
    }
}

/// `--retries`: 0 to 100 further backends.
pub(crate) fn parse_retries(s: &str) -> Result<u32, String> {
    parse_in_range(s, 0, 100)
}

fn parse_in_range(s: &str, low: u32, high: u32) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(n) if (low..=high).contains(&n) => Ok(n),
        _ => Err(format!("invalid number {s:?}: expected a whole number from {low} to {high}")),
    }
}

/// Checks a `--log-level` value: a level, or comma-separated `target=level` directives.
pub(crate) fn parse_log_level(s: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    for directive in s.split(',') {
        let level = directive.rsplit_once('=').map_or(directive, |(target, level)| {
            if target.is_empty() {
                ""
            } else {
                level
            }
        });
        if !LEVELS.contains(&level.trim().to_ascii_lowercase().as_str()) {
            return Err(format!(
                "invalid log level {directive:?}: expected one of off, error, warn, info, debug, trace, or target=level (e.g. info,lb::access=off)"
            ));
        }
    }
    Ok(s.to_owned())
}

/// A flag's value parser made of a function that reads the value's text. The same function reads
/// the value of the flag's key in a `--config` file ([`crate::config::SettingValue`]), so both
/// accept the same values and say the same things about bad ones. `adjust` is what is done to
/// clap's message about a bad value: [`one_line`] or [`secret`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct FromText<P> {
    pub(crate) parse: P,
    adjust: fn(clap::Error) -> clap::Error,
    /// The values shell completion offers (the parser still decides what it takes).
    offered: fn() -> Vec<&'static str>,
}

impl<P> FromText<P> {
    /// Offers `values` to shell completion (`lb --algorithm <TAB>`).
    pub(crate) fn offering(self, values: fn() -> Vec<&'static str>) -> Self {
        FromText { offered: values, ..self }
    }
}

/// A value parser whose errors stay on one line: clap's message quotes the value as typed, so a
/// value holding a newline or a carriage return (`--health-check $'http:/a\r\nX'`) would split
/// or garble it. The value is shown with such characters escaped instead ([`one_line_error`]).
pub(crate) fn one_line<P>(parse: P) -> FromText<P> {
    FromText { parse, adjust: one_line_error, offered: Vec::new }
}

/// A value parser for a secret: its errors say what is wrong with the value without quoting it,
/// as a rejected token would otherwise land on stderr (and in the journal, under systemd).
pub(crate) fn secret<P>(parse: P) -> FromText<P> {
    FromText { parse, adjust: hide_value, offered: Vec::new }
}

impl<P: TypedValueParser> TypedValueParser for FromText<P> {
    type Value = P::Value;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Self::Value, clap::Error> {
        self.parse.parse_ref(cmd, arg, value).map_err(self.adjust)
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        let values = (self.offered)();
        (!values.is_empty())
            .then(|| Box::new(values.into_iter().map(clap::builder::PossibleValue::new)) as Box<_>)
    }
}

/// The error with the offending value replaced by "(not shown)".
fn hide_value(mut error: clap::Error) -> clap::Error {
    if error.get(ContextKind::InvalidValue).is_some() {
        error.insert(ContextKind::InvalidValue, ContextValue::String("(not shown)".into()));
    }
    error
}

/// Any text (`--log-file`).
/// `--log-file`: a path, which cannot be empty (the file is opened at start, where an empty
/// name would only fail as "No such file or directory").
pub(crate) fn parse_log_file(s: &str) -> Result<String, String> {
    match s.trim().is_empty() {
        true => {
            Err("invalid log file \"\": expected a path, e.g. load_balancer.log or /var/log/lb.log"
                .to_owned())
        }
        false => Ok(s.to_owned()),
    }
}

/// Escapes control characters (`\n`, `\r`, ...) in the values a clap error quotes (the
/// offending value, argument or suggestion), so the rendered message keeps to its lines. The
/// value parsers here apply it through [`one_line`]; errors clap raises itself (an unknown
/// argument such as `--bogus$'\n\n'x`) need it applied where they are rendered, in `main`.
pub(crate) fn one_line_error(mut error: clap::Error) -> clap::Error {
    let escaped: Vec<(ContextKind, ContextValue)> = error
        .context()
        .filter_map(|(kind, value)| {
            let value = match value {
                ContextValue::String(s) if s.chars().any(char::is_control) => {
                    ContextValue::String(escape_controls(s))
                }
                ContextValue::Strings(list)
                    if list.iter().any(|s| s.chars().any(char::is_control)) =>
                {
                    ContextValue::Strings(list.iter().map(|s| escape_controls(s)).collect())
                }
                _ => return None,
            };
            Some((kind, value))
        })
        .collect();
    for (kind, value) in escaped {
        error.insert(kind, value);
    }
    error
}

/// `s` with each control character written as its Rust escape (`\n`, `\r`, `\u{1b}`).
pub(crate) fn escape_controls(s: &str) -> String {
    escape_controls_but(s, &[])
}

/// `s` with each control character but those in `keep` written as its Rust escape.
pub(crate) fn escape_controls_but(s: &str, keep: &[char]) -> String {
    s.chars()
        .map(|c| match c.is_control() && !keep.contains(&c) {
            true => c.escape_debug().to_string(),
            false => c.to_string(),
        })
        .collect()
}

const AFTER_HELP: &str = "\
Examples:
  lb --demo                                    three built-in backends; then: curl localhost:8080
  lb --port 9000 --backend 10.0.0.5:80 --backend 10.0.0.6:80,weight=2
  lb --algorithm least_connections --health-check http:/healthz -q < /dev/null

  lb --config lb.toml                          settings from a file (example: docs/lb.example.toml)

While it runs, type `help` for commands (stats, add, remove, drain, enable, maint, weight,
algorithm, health, what-if, explain, reload, upgrade, quit). `reload` or SIGHUP re-reads the --config file and applies what changed;
SIGHUP also reopens the log file (for log rotation). `upgrade` or SIGUSR2 hands the listening
sockets to a new process of the binary at the same path (docs/operations.md). SIGINT or SIGTERM
shut it down gracefully, like `quit`.";

/// A TCP (layer 4) load balancer.
///
/// Spreads TCP connections over backends with round robin, least connections, random, ip_hash
/// (Maglev) or p2c, checks their health, retries around dead ones, and can be changed while it
/// runs from its command prompt.
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(name = "lb", version, after_help = AFTER_HELP, max_term_width = 100, args_conflicts_with_subcommands = true, allow_negative_numbers = true)]
pub(crate) struct Args {
    /// Settings from a TOML file, one key per flag (e.g. health-interval = "2s", `[[backend]]`
    /// tables), and `[[pool]]` / `[[listen]]` tables for several services; flags given here
    /// override its top-level keys. `reload` or SIGHUP re-read it.
    #[arg(long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,

    // Every other flag: the settings, in their table.
    #[command(flatten)]
    pub(crate) settings: Settings,

    /// `lb ctl ...`: send a command to a running lb instead of starting one.
    #[command(subcommand)]
    pub(crate) command: Option<Sub>,
}

/// Subcommands.
#[derive(Debug, Clone, PartialEq, clap::Subcommand)]
pub(crate) enum Sub {
    /// Send one command to a running lb's admin endpoint and print the answer, e.g.
    /// `lb ctl stats` or `lb ctl drain 127.0.0.1:8002`.
    Ctl(CtlArgs),
    /// Print a completion script for SHELL, e.g. `lb completions bash >
    /// /etc/bash_completion.d/lb` (README, "Shell completions and the man page").
    Completions {
        /// bash, zsh, fish, powershell or elvish.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `lb man > /usr/local/share/man/man1/lb.1`.
    Man,
}

/// `lb ctl` arguments.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub(crate) struct CtlArgs {
    /// The admin endpoint: PORT, :PORT (127.0.0.1) or HOST:PORT [default: the `admin` of
    /// --config, else 127.0.0.1:9090].
    #[arg(long, value_name = "ADDR", value_parser = one_line(parse_admin))]
    pub(crate) admin: Option<Target>,

    /// Bearer token for the admin endpoint [default: the `admin-token` of --config].
    #[arg(long, value_name = "TOKEN", env = "LB_ADMIN_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,

    /// Read the admin address and token from this lb configuration file.
    #[arg(long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,

    /// With `drain`: follow the drain to its end, printing the connections still open; exit 0
    /// once the backend is empty or its deadline closed what was left, 1 if it was cancelled.
    /// May also come after the command (`lb ctl drain 10.0.0.5:80 deadline=60s --wait`).
    #[arg(long)]
    pub(crate) wait: bool,

    /// The command, in the prompt's grammar (`help` lists them).
    #[arg(required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
    pub(crate) words: Vec<String>,
}

/// One worker per CPU the process may use.
pub(crate) fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `--workers`: 1 to 1024.
pub(crate) fn parse_workers(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n @ 1..=1024) => Ok(n),
        _ => Err(format!("invalid worker count {s:?}: expected a whole number from 1 to 1024")),
    }
}

/// `--admin`: `PORT` and `:PORT` mean 127.0.0.1, so the endpoint is on loopback unless a host
/// is given on purpose.
pub(crate) fn parse_admin(s: &str) -> Result<Target, String> {
    crate::ctl::parse_admin_addr(s)
}

/// `--discover`: `dns:HOST:PORT` or `srv:NAME` (lb-net's one parser of the two forms).
pub(crate) fn parse_discover(s: &str) -> Result<DnsQuery, String> {
    s.trim().parse::<DnsQuery>().map_err(|e| e.to_string())
}

/// `--resolver`: the DNS server discovery asks, `IP` (port 53) or `IP:PORT` (`[v6]:PORT`).
pub(crate) fn parse_resolver(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    match s.parse::<SocketAddr>() {
        Ok(addr) if addr.port() != 0 => Ok(addr),
        _ => Err(format!(
            "invalid resolver {s:?}: expected the DNS server's IP address, with a port if not \
             53: 127.0.0.1:8600, 10.0.0.2 or [::1]:53"
        )),
    }
}

#[cfg(test)]
mod tests;
