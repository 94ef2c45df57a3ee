//! Every setting of `lb`, declared once: its flag and file key, value parser, default, help text,
//! what it configures and whether a reload applies it.
//!
//! The table at the end of this module is the only list of the settings. The `settings!` macro
//! expands it into:
//! - [`Settings`], the flags: clap reads each entry's `#[arg]` and its doc comment (the help
//!   text), with the entry's parser as the value parser;
//! - [`FileConfig`], what a `--config` file sets, and [`FileConfig::read`], which hands a key's
//!   value to the same parser (see [`crate::config`] for the rest of the file's reading);
//! - [`Settings::merge`] (a typed flag, else the file, else the default),
//!   [`Settings::changed`] (what a reload compares) and [`Settings::changes`] (what its answer
//!   says changed, each value written back by its type's [`Show`]);
//! - [`SETTINGS`] and [`KEYS`], for code and tests that walk every setting.
//!
//! An entry reads:
//!
//! ```text
//! /// Time between health checks of each backend.          <- the help text
//! #[arg(long = "health-interval", default_value = "2s")]   <- the flag; its long name is the key
//! #[setting(Pool, Live)]                                   <- scope, and how a reload treats it
//! health_interval: Duration = one_line(parse_positive_duration);   <- field, type, parser
//! ```
//!
//! The parser is a [`SettingValue`]: it gives the flag's clap value parser and reads the key's
//! value from a file. [`one_line`] or [`secret`] around a text parser for most, [`Switch`] for
//! on/off flags (the file wants `true` or `false`), [`Backends`] for `--backend` (`[[backend]]`
//! tables in the file), [`Ranges`] for `--allow` and `--deny` (a list in the file). Adding a setting is one entry here, plus its docs (the
//! README's flag table and docs/lb.example.toml, which a test holds to this table).

use std::time::Duration;

use std::fmt;

use lb_core::Algorithm;
use lb_net::{AddressRange, CongestionControl, DnsQuery, Placement, Target};
use serde::de::MapAccess;
use std::net::SocketAddr;

use crate::args::{
    default_workers, one_line, parse_admin, parse_admin_token, parse_algorithm,
    parse_allowed_hosts, parse_client_limit, parse_congestion_control, parse_discover,
    parse_duration, parse_hash_balance_factor, parse_health_check, parse_host, parse_io,
    parse_limit, parse_listen_port, parse_log_file, parse_log_format, parse_log_level,
    parse_optional_duration, parse_panic_threshold, parse_placement, parse_positive_duration,
    parse_resolver, parse_retries, parse_send_proxy, parse_threshold, parse_workers, secret,
    BackendSpec, HealthCheck, HostList, IoChoice, Limit, LogFormat, OptionalDuration, SendProxy,
};
use crate::config::{Backends, BadValue, Given, Ranges, SettingValue, Switch};
use crate::show::Show;

/// What a setting configures, which says where a configuration file may set it: a `[[pool]]`
/// table takes the `Pool` keys (the top-level ones are every pool's defaults), a `[[listen]]`
/// table the `Listener` keys (the top-level ones are every listener's defaults), the top level
/// alone the `Shorthand` keys (the one-listener shorthand's address) and the `Process` ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The backends and how they are chosen, checked and connected to: one pool's.
    Pool,
    /// Who may connect to a listener, and how much: one listener's.
    Listener,
    /// The address of the shorthand's one listener (a `[[listen]]` table has `address`).
    Shorthand,
    /// The process as a whole: logging, threads, the global limit, the admin endpoint, shutdown.
    Process,
}

/// What `reload` does with a changed setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reload {
    /// Applied to the running pools and listeners (by [`crate::reload`]).
    Live,
    /// Fixed at start-up: a reload that finds it changed says "needs a restart".
    Restart,
}

/// What the table says about a setting besides its flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Setting {
    /// The file key, which is the flag's long name.
    pub(crate) key: &'static str,
    /// What it configures.
    pub(crate) scope: Scope,
    /// Whether a reload applies it.
    pub(crate) reload: Reload,
}

/// A live setting whose value differs between two [`Settings`]: `key old->new`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) key: Key,
    pub(crate) old: String,
    pub(crate) new: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}->{}", self.key.key(), self.old, self.new)
    }
}

/// `$body` for a setting a reload applies, nothing for one it leaves to a restart: only live
/// settings are ever shown by value (a restart-only one, such as the admin token, is named
/// alone).
macro_rules! if_live {
    (Live, $($body:tt)*) => { $($body)* };
    (Restart, $($body:tt)*) => {};
}

/// Expands the table of settings (see the module documentation for the form of an entry).
macro_rules! settings {
    ($(
        $(#[doc = $doc:tt])*
        #[arg(long = $key:tt $(, $($arg:tt)+)?)]
        #[setting($scope:ident, $reload:ident)]
        $field:ident: $ty:ty = $parser:expr;
    )*) => {
        /// Every flag but `--config`: the settings a configuration file can set as well.
        #[derive(Debug, Clone, PartialEq, clap::Args)]
        #[group(skip)]
        pub(crate) struct Settings {
            $(
                $(#[doc = $doc])*
                #[arg(long = $key, value_parser = SettingValue::flag(&$parser) $(, $($arg)+)?)]
                pub(crate) $field: $ty,
            )*
        }

        /// What a configuration file sets, each value checked by its flag's parser; `None` for
        /// a key it leaves out (the flag or its default then applies).
        #[derive(Debug, Clone, Default, PartialEq)]
        pub(crate) struct FileConfig {
            $(pub(crate) $field: Option<$ty>,)*
        }

        /// A setting, named as in [`Settings`] and [`FileConfig`]; ordered as in the table.
        #[expect(non_camel_case_types, reason = "each variant is named after its field")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
        pub(crate) enum Key {
            $($field,)*
        }

        /// Every setting, in the table's order.
        pub(crate) const SETTINGS: &[Setting] =
            &[$(Setting { key: $key, scope: Scope::$scope, reload: Reload::$reload },)*];

        /// Every file key, in the table's order (the message about an unknown key lists them).
        pub(crate) const KEYS: &[&str] = &[$($key,)*];

        impl Key {
            /// The setting a file key names.
            pub(crate) fn from_key(key: &str) -> Option<Key> {
                match key {
                    $($key => Some(Key::$field),)*
                    _ => None,
                }
            }

            /// What the table says about this setting.
            pub(crate) fn setting(self) -> &'static Setting {
                &SETTINGS[self as usize]
            }

            /// The file key.
            pub(crate) fn key(self) -> &'static str {
                self.setting().key
            }

            /// Checks a value written where TOML could not read one, with this setting's
            /// parser ([`SettingValue::check_written`]).
            pub(crate) fn check_written(self, text: &str) -> Option<Result<(), String>> {
                match self {
                    $(Key::$field => SettingValue::check_written(&$parser, text),)*
                }
            }
        }

        impl Settings {
            /// The settings in force: a flag the user typed, else the file's value, else the
            /// flag's default (`self` holds the flags and defaults).
            pub(crate) fn merge(&self, given: &Given, file: &FileConfig) -> Settings {
                let mut merged = self.clone();
                $(
                    match &file.$field {
                        Some(value) if !given.has(stringify!($field)) => {
                            merged.$field = value.clone()
                        }
                        _ => {}
                    }
                )*
                merged
            }

            /// The settings whose value differs in `other`, in the table's order.
            pub(crate) fn changed(&self, other: &Settings) -> Vec<&'static Setting> {
                let mut changed = Vec::new();
                $(
                    if self.$field != other.$field {
                        changed.push(Key::$field.setting());
                    }
                )*
                changed
            }

            /// The live settings of `scope` whose value differs in `next`, in the table's
            /// order, each with both values as the file writes them.
            pub(crate) fn changes(&self, next: &Settings, scope: Scope) -> Vec<Change> {
                let mut changes = Vec::new();
                $(
                    if_live!($reload,
                        if Key::$field.setting().scope == scope && self.$field != next.$field {
                            changes.push(Change {
                                key: Key::$field,
                                old: self.$field.show(),
                                new: next.$field.show(),
                            });
                        }
                    );
                )*
                changes
            }
        }

        impl FileConfig {
            /// Reads the value of `key` from `map` through the setting's parser; messages name
            /// it after `table` (`pool.` in a `[[pool]]` table, empty at the top level). The
            /// outer error is the TOML's (a value of a shape no setting takes); the inner one is
            /// a value its parser turns down, kept so the whole file is read before one is
            /// reported.
            pub(crate) fn read<'de, A: MapAccess<'de>>(
                &mut self,
                key: Key,
                table: &str,
                map: &mut A,
            ) -> Result<Result<(), BadValue>, A::Error> {
                let name = format!("{table}{}", key.key());
                Ok(match key {
                    $(
                        // `into`: a setting with no default (`admin`) is an `Option` of what
                        // its parser gives.
                        Key::$field => SettingValue::read(&$parser, &name, map.next_value()?)
                            .map(|value| self.$field = Some(value.into())),
                    )*
                })
            }

            /// The keys this file sets, in the table's order.
            #[cfg(test)]
            pub(crate) fn keys(&self) -> Vec<&'static str> {
                let mut keys = Vec::new();
                $(
                    if self.$field.is_some() {
                        keys.push($key);
                    }
                )*
                keys
            }
        }
    };
}

settings! {
    /// Address to listen on: a host name or IP (0.0.0.0 or :: for every interface).
    #[arg(long = "host", default_value = "localhost", value_name = "HOST")]
    #[setting(Shorthand, Live)]
    host: String = one_line(parse_host);

    /// Port to listen on (0 picks a free one, printed at start-up).
    #[arg(long = "port", default_value_t = 8080)]
    #[setting(Shorthand, Live)]
    port: u16 = one_line(parse_listen_port);

    /// Only clients in these address ranges may connect, e.g. 10.0.0.0/8,192.0.2.7 (repeatable
    /// or comma separated; typed here, on every listener) [default: every client].
    #[arg(long = "allow", value_name = "RANGE", value_delimiter = ',')]
    #[setting(Listener, Live)]
    allow: Vec<AddressRange> = Ranges;

    /// Clients in these address ranges may not connect, even if --allow lists them
    /// (repeatable or comma separated; typed here, added to every listener's) [default: none].
    #[arg(long = "deny", value_name = "RANGE", value_delimiter = ',')]
    #[setting(Listener, Live)]
    deny: Vec<AddressRange> = Ranges;

    /// Most connections one client address may have open at once; more are closed at once (0
    /// for unlimited).
    #[arg(long = "max-connections-per-client", default_value = "unlimited", value_name = "N")]
    #[setting(Listener, Live)]
    max_connections_per_client: Limit<u32> = one_line(parse_client_limit);

    /// Most new connections per second from one client address (over a sliding second); more
    /// are closed at once (0 for unlimited).
    #[arg(long = "max-connection-rate-per-client", default_value = "unlimited", value_name = "N")]
    #[setting(Listener, Live)]
    max_connection_rate_per_client: Limit<u32> = one_line(parse_client_limit);

    /// TCP congestion control of client connections: auto (the system's, except cubic on a
    /// loopback listener when the system's paces, as bbr does), system, or an algorithm the
    /// kernel has (cubic, reno, bbr, ...).
    #[arg(long = "congestion-control", default_value = "auto", value_name = "NAME")]
    #[setting(Listener, Live)]
    congestion_control: CongestionControl = one_line(parse_congestion_control);

    /// Balancing algorithm: round_robin, least_connections, random, ip_hash or p2c.
    #[arg(long = "algorithm", default_value = "round_robin", value_name = "NAME")]
    #[setting(Pool, Live)]
    algorithm: Algorithm =
        one_line(parse_algorithm).offering(|| Algorithm::ALL.map(Algorithm::as_str).to_vec());

    /// A backend, repeatable: HOST:PORT with optional ,weight=N (1-1000), ,drain or ,maint, and
    /// ,backup (new connections only while no other backend of the pool is available).
    #[arg(
        long = "backend",
        value_name = "HOST:PORT[,weight=N][,drain|maint][,backup]",
        default_values = ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"]
    )]
    #[setting(Pool, Live)]
    backends: Vec<BackendSpec> = Backends;

    /// Time between health checks of each backend.
    #[arg(long = "health-interval", default_value = "2s", value_name = "DURATION")]
    #[setting(Pool, Live)]
    health_interval: Duration = one_line(parse_positive_duration);

    /// Longest wait for one health check.
    #[arg(long = "health-timeout", default_value = "1s", value_name = "DURATION")]
    #[setting(Pool, Live)]
    health_timeout: Duration = one_line(parse_positive_duration);

    /// Consecutive successful checks that bring a down backend up.
    #[arg(long = "rise", default_value_t = 2)]
    #[setting(Pool, Live)]
    rise: u32 = one_line(parse_threshold);

    /// Consecutive failures (checks or connects) that take a backend down.
    #[arg(long = "fall", default_value_t = 3)]
    #[setting(Pool, Live)]
    fall: u32 = one_line(parse_threshold);

    /// How to check backends: tcp (connect); http:/path, or http://HOST/path to send Host: HOST,
    /// passing on any 2xx or 3xx unless ,status=200|204|300-399 says which, and with ,body=TEXT
    /// only if the body contains TEXT; or off (then failed connects are retried elsewhere but
    /// take no backend down: nothing would bring it back up).
    #[arg(long = "health-check", default_value = "tcp", value_name = "KIND")]
    #[setting(Pool, Live)]
    health_check: HealthCheck = one_line(parse_health_check);

    /// Fail-open: when fewer than this percentage of the pool's ready primaries is up (and no
    /// backup is), spread new connections over all of them regardless of health rather than
    /// crush the few left (0 for off).
    #[arg(long = "panic-threshold", default_value = "0", value_name = "PERCENT")]
    #[setting(Pool, Live)]
    panic_threshold: u8 = one_line(parse_panic_threshold);

    /// Ramp the weight of a backend that comes up, is added or is enabled from 10% to full
    /// over this long, so a cold backend is not flattened by its full share at once (off or 0
    /// for none).
    #[arg(long = "slow-start", default_value = "off", value_name = "DURATION")]
    #[setting(Pool, Live)]
    slow_start: OptionalDuration = one_line(parse_optional_duration);

    /// Bounded-load ip_hash: a client goes to its own backend unless that one holds more than
    /// this percentage of the average load per weight, then to its next choice under the bound
    /// (0 for off, else 100 to 10000; 125 is a common choice).
    #[arg(long = "hash-balance-factor", default_value = "0", value_name = "PERCENT")]
    #[setting(Pool, Live)]
    hash_balance_factor: u32 = one_line(parse_hash_balance_factor);

    /// Longest wait for a backend to accept a connection before trying another.
    #[arg(long = "connect-timeout", default_value = "2s", value_name = "DURATION")]
    #[setting(Pool, Live)]
    connect_timeout: Duration = one_line(parse_positive_duration);

    /// Close connections with no traffic either way for this long (off or 0 to never).
    #[arg(long = "idle-timeout", default_value = "5m", value_name = "DURATION")]
    #[setting(Pool, Live)]
    idle_timeout: OptionalDuration = one_line(parse_optional_duration);

    /// Most client connections open at once; more are closed at once (0 for unlimited).
    #[arg(long = "max-connections", default_value = "unlimited", value_name = "N")]
    #[setting(Process, Restart)]
    max_connections: Limit = one_line(parse_limit);

    /// Most connections open to one backend; a full backend is skipped (0 for unlimited).
    #[arg(long = "max-connections-per-backend", default_value = "unlimited", value_name = "N")]
    #[setting(Pool, Live)]
    max_connections_per_backend: Limit = one_line(parse_limit);

    /// Further backends to try when connecting to one fails (each backend at most once).
    #[arg(long = "retries", default_value_t = 2)]
    #[setting(Pool, Live)]
    retries: u32 = one_line(parse_retries);

    /// After a client half-closes, close the connection once the backend has sent nothing for
    /// this long (off or 0 to never).
    #[arg(long = "client-fin-timeout", default_value = "30s", value_name = "DURATION")]
    #[setting(Pool, Live)]
    client_fin_timeout: OptionalDuration = one_line(parse_optional_duration);

    /// After a backend half-closes, close the connection once the client has sent nothing for
    /// this long (off or 0 to never).
    #[arg(long = "server-fin-timeout", default_value = "30s", value_name = "DURATION")]
    #[setting(Pool, Live)]
    server_fin_timeout: OptionalDuration = one_line(parse_optional_duration);

    /// Close a connection whose backend has not sent a single byte once nothing has moved for
    /// this long: a backend that accepted and hung (off or 0 to never).
    #[arg(long = "server-timeout", default_value = "60s", value_name = "DURATION")]
    #[setting(Pool, Live)]
    server_timeout: OptionalDuration = one_line(parse_optional_duration);

    /// When a backend closes or resets before sending a byte, replay the client's bytes so far
    /// (up to 8 KiB) on another backend, invisibly to the client. Only for protocols whose
    /// first request is safe to send twice.
    #[arg(long = "retry-on-empty")]
    #[setting(Pool, Live)]
    retry_on_empty: bool = Switch;

    /// Count a backend that closes or resets before sending a byte, while its client waits, as
    /// a failure (passive health, like a refused connect). Off by default: a client can
    /// provoke such a close and so take healthy backends out of rotation.
    #[arg(long = "observe-empty")]
    #[setting(Pool, Live)]
    observe_empty: bool = Switch;

    /// Start each backend connection with a PROXY protocol header carrying the client's
    /// address: v1 (text), v2 (binary) or off.
    #[arg(long = "send-proxy", default_value = "off", value_name = "VERSION")]
    #[setting(Pool, Live)]
    send_proxy: SendProxy = one_line(parse_send_proxy).offering(|| vec!["v1", "v2", "off"]);

    /// Start each health check with a PROXY header too (v2 LOCAL, or v1 UNKNOWN with
    /// --send-proxy v1), for backends that refuse connections without one.
    #[arg(long = "check-send-proxy")]
    #[setting(Pool, Live)]
    check_send_proxy: bool = Switch;

    /// Also take backends from DNS, re-resolved at the records' TTL: dns:HOST:PORT (every
    /// A/AAAA address of HOST, on PORT) or srv:NAME (SRV records: host, port and weight each;
    /// the lowest priority value only) [default: none].
    #[arg(long = "discover", value_name = "dns:HOST:PORT|srv:NAME")]
    #[setting(Pool, Live)]
    discover: Option<DnsQuery> = one_line(parse_discover);

    /// The DNS server --discover asks, IP or IP:PORT (Consul: 127.0.0.1:8600) [default: the
    /// system's, from /etc/resolv.conf].
    #[arg(long = "resolver", value_name = "IP[:PORT]")]
    #[setting(Pool, Live)]
    resolver: Option<SocketAddr> = one_line(parse_resolver);

    /// Shortest time between two DNS lookups of --discover: a shorter TTL (Consul's is 0)
    /// counts as this.
    #[arg(long = "dns-min-refresh", default_value = "1s", value_name = "DURATION")]
    #[setting(Pool, Live)]
    dns_min_refresh: Duration = one_line(parse_positive_duration);

    /// Longest time between two DNS lookups of --discover: a longer TTL counts as this, and
    /// failing lookups are retried at least this often.
    #[arg(long = "dns-max-refresh", default_value = "30s", value_name = "DURATION")]
    #[setting(Pool, Live)]
    dns_max_refresh: Duration = one_line(parse_positive_duration);

    /// On shutdown, how long open connections may finish before they are closed (0s: closed at
    /// once).
    #[arg(long = "shutdown-grace", default_value = "10s", value_name = "DURATION")]
    #[setting(Process, Restart)]
    shutdown_grace: Duration = one_line(parse_duration);

    /// File to log to (appended).
    #[arg(long = "log-file", default_value = "load_balancer.log", value_name = "PATH")]
    #[setting(Process, Restart)]
    log_file: String = one_line(parse_log_file);

    /// Log level: off, error, warn, info, debug, trace; or directives such as
    /// info,lb::access=off (no per-connection lines).
    #[arg(long = "log-level", default_value = "info", value_name = "LEVEL")]
    #[setting(Process, Restart)]
    log_level: String = one_line(parse_log_level);

    /// Log line format: text, or json (one JSON object per line, access lines included, for
    /// Loki, Elastic or Vector).
    #[arg(long = "log-format", default_value = "text", value_name = "FORMAT")]
    #[setting(Process, Restart)]
    log_format: LogFormat = one_line(parse_log_format).offering(|| vec!["text", "json"]);

    /// No banner and no prompt (commands on stdin are still read); a port picked by --port 0
    /// or --admin 0 is still printed.
    #[arg(long = "quiet", short)]
    #[setting(Process, Restart)]
    quiet: bool = Switch;

    /// Also start a small built-in HTTP backend on each --backend address on this machine (by
    /// default 127.0.0.1:8001-8003), each answering with its own name: `lb --demo`, then
    /// `curl localhost:8080`.
    #[arg(long = "demo")]
    #[setting(Process, Restart)]
    demo: bool = Switch;

    /// Worker threads, each with its own event loop and its own listening socket on the same
    /// port (SO_REUSEPORT; --placement says which takes new connections) [default: one per CPU].
    // Listed last in --help, after the admin flags, as it always has been (clap orders the
    // other flags as declared; only --help and --version come later).
    #[arg(
        long = "workers",
        value_name = "N",
        default_value_t = default_workers(),
        hide_default_value = true,
        display_order = 900
    )]
    #[setting(Process, Restart)]
    workers: usize = one_line(parse_workers);

    /// I/O engine relaying connected clients: auto (io_uring where the kernel allows it, else
    /// epoll), uring (an error where it does not), or epoll.
    #[arg(long = "io", default_value = "auto", value_name = "ENGINE", display_order = 901)]
    #[setting(Process, Restart)]
    io: IoChoice = one_line(parse_io).offering(|| vec!["auto", "epoll", "uring"]);

    /// Which worker new connections go to: pack (to one worker until it is busy over 85% of the
    /// time while a CPU is idle, then spread until the load fits on one again: fewer wake-ups,
    /// less CPU per request), or spread (the kernel spreads them evenly, whatever the load;
    /// better for many long-lived connections opened at once).
    #[arg(long = "placement", default_value = "pack", value_name = "HOW", display_order = 902)]
    #[setting(Process, Restart)]
    placement: Placement = one_line(parse_placement).offering(|| vec!["pack", "spread"]);

    /// Serve the admin endpoint (the dashboard at /, GET /metrics, GET /stats, POST /command)
    /// on ADDR; PORT or :PORT listen on 127.0.0.1 only [default: off].
    #[arg(long = "admin", value_name = "ADDR")]
    #[setting(Process, Restart)]
    admin: Option<Target> = one_line(parse_admin);

    /// Require `Authorization: Bearer TOKEN` for admin commands (POST /command); reads
    /// (/metrics, /stats) stay open.
    #[arg(long = "admin-token", value_name = "TOKEN", hide_env_values = true)]
    #[setting(Process, Restart)]
    admin_token: Option<String> = secret(parse_admin_token);

    /// Host names the admin endpoint answers to besides IP addresses and localhost, comma
    /// separated (lb1.internal, *.corp.example, or * for any); requests naming another Host
    /// are refused, which keeps web pages out through DNS rebinding.
    #[arg(long = "admin-allowed-hosts", value_name = "NAMES", default_value = "", hide_default_value = true)]
    #[setting(Process, Restart)]
    admin_allowed_hosts: HostList = one_line(parse_allowed_hosts);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_flags_long_names() {
        use clap::CommandFactory;
        let command = crate::args::Args::command();
        let longs: Vec<&str> = command
            .get_arguments()
            .filter(|arg| arg.get_id() != "config")
            .filter_map(|arg| arg.get_long())
            .collect();
        let mut keys = KEYS.to_vec();
        let mut longs_sorted = longs.clone();
        keys.sort_unstable();
        longs_sorted.sort_unstable();
        assert_eq!(keys, longs_sorted);
        assert_eq!(SETTINGS.iter().map(|s| s.key).collect::<Vec<_>>(), KEYS);
        for (i, setting) in SETTINGS.iter().enumerate() {
            assert_eq!(Key::from_key(setting.key).map(|k| k as usize), Some(i));
        }
    }

    #[test]
    fn a_reload_applies_pools_and_listeners_and_only_the_process_needs_a_restart() {
        for setting in SETTINGS {
            let live = setting.scope != Scope::Process;
            assert_eq!(setting.reload == Reload::Live, live, "{}", setting.key);
        }
        // lb-net's limits: the per-connection timeouts are a pool's, the global limit the
        // process's.
        for (key, scope) in [
            ("idle-timeout", Scope::Pool),
            ("connect-timeout", Scope::Pool),
            ("max-connections-per-backend", Scope::Pool),
            ("max-connections", Scope::Process),
        ] {
            assert_eq!(Key::from_key(key).unwrap().setting().scope, scope, "{key}");
        }
    }
}
