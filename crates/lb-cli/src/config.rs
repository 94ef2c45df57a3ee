//! The `--config` file: every flag of `lb` as a TOML key, laid under the command line.
//!
//! ```toml
//! port = 9000
//! algorithm = "least_connections"
//! health-interval = "500ms"
//!
//! [[backend]]
//! address = "10.0.0.5:80"
//! weight = 2
//! state = "drain"
//! ```
//!
//! A key is a flag's long name without the leading dashes (`--health-interval` is
//! `health-interval`); the repeatable `--backend` becomes a list of `[[backend]]` tables. A value
//! may be written the TOML way (`port = 9000`, `quiet = true`) or as the flag's text
//! (`port = "9000"`); either way it goes through the flag's own parser in [`crate::args`], so the
//! file and the command line accept exactly the same values and say the same things about bad
//! ones. A flag the user typed beats the file, and the file beats a flag's default
//! ([`merge`]). The whole file is checked before anything uses it: an unknown key, a bad value or
//! a syntax error is one line naming the file, the line and the key.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory};
use lb_core::Algorithm;
use lb_net::Target;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use crate::args::{self, Args, BackendSpec, HealthCheck, HostList, Limit, OptionalDuration};

/// What a configuration file sets, parsed and checked; `None` for a key it leaves out (the flag
/// or its default then applies). Field names are those of [`Args`], so [`merge`] can pair them.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FileConfig {
    pub(crate) host: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) algorithm: Option<Algorithm>,
    pub(crate) backends: Option<Vec<BackendSpec>>,
    pub(crate) health_interval: Option<Duration>,
    pub(crate) health_timeout: Option<Duration>,
    pub(crate) rise: Option<u32>,
    pub(crate) fall: Option<u32>,
    pub(crate) health_check: Option<HealthCheck>,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) idle_timeout: Option<OptionalDuration>,
    pub(crate) max_connections: Option<Limit>,
    pub(crate) max_connections_per_backend: Option<Limit>,
    pub(crate) retries: Option<u32>,
    pub(crate) shutdown_grace: Option<Duration>,
    pub(crate) log_file: Option<String>,
    pub(crate) log_level: Option<String>,
    pub(crate) quiet: Option<bool>,
    pub(crate) demo: Option<bool>,
    pub(crate) workers: Option<usize>,
    pub(crate) admin: Option<Target>,
    pub(crate) admin_token: Option<String>,
    pub(crate) admin_allowed_hosts: Option<HostList>,
}

/// Reads and checks a configuration file. The error is one line: the file, the line (when there
/// is one) and what is wrong.
pub(crate) fn load(path: &Path) -> Result<FileConfig, String> {
    // A blocking read even when called from the runtime: the file is small and read only at
    // start-up and on an operator's reload, never on the connection path.
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    parse(&path.display().to_string(), &text)
}

/// Parses the text of a configuration file; `name` is how errors refer to it.
pub(crate) fn parse(name: &str, text: &str) -> Result<FileConfig, String> {
    let at = |offset: usize| format!("{name} line {}", line_of(text, offset));
    let raw: Raw = toml::from_str(text).map_err(|e| {
        // serde says "field"; in a file people write keys.
        let mut message = e
            .message()
            .trim_end()
            .replace("unknown field", "unknown key")
            .replace("missing field", "missing key");
        let Some(span) = e.span() else { return format!("{name}: {message}") };
        if message == "duplicate key" {
            // The span is the key itself; name it, as for an unknown one.
            if let Some(key) = text.get(span.clone()) {
                message = format!("duplicate key `{}`", key.trim());
            }
        } else if message == "missing key `address`" {
            // Only a [[backend]] table has a required key.
            message = "backend: missing key `address`: each [[backend]] table needs address = \"HOST:PORT\"".into();
        } else if !message.starts_with("unknown key") && !message.starts_with("backend: ") {
            // A syntax error in a value (`port = 1e400`, `algorithm = `): name the key written
            // on that line, as a bad value's message does.
            if let Some(key) = key_at(text, span.start) {
                message = format!("{key}: {message}");
            }
        }
        format!("{}: {message}", at(span.start))
    })?;
    // Runs one value through its flag's parser; a failure names the file, line and key.
    fn one<T>(
        at: &impl Fn(usize) -> String,
        key: &str,
        raw: &Spanned<Scalar>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, String> {
        let line = at(raw.span().start);
        let text = raw.get_ref().text().map_err(|e| format!("{line}: {key}: {e}"))?;
        parse(&text).map_err(|e| format!("{line}: {key}: {e}"))
    }
    fn value<T>(
        at: &impl Fn(usize) -> String,
        key: &str,
        raw: Option<Spanned<Scalar>>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        raw.map(|raw| one(at, key, &raw, parse)).transpose()
    }
    let flag = |raw: Option<Spanned<Scalar>>, key: &str| -> Result<Option<bool>, String> {
        let Some(raw) = raw else { return Ok(None) };
        match raw.get_ref() {
            Scalar::Bool(b) => Ok(Some(*b)),
            other => Err(format!(
                "{}: {key}: expected true or false, found {}",
                at(raw.span().start),
                other.kind()
            )),
        }
    };
    let backends = match raw.backend {
        None => None,
        // Written out but empty: a balancer with nothing to send traffic to, and on reload the
        // removal of every backend. Leave the key out for the built-in defaults.
        Some(list) if list.is_empty() => {
            return Err("backend: the list is empty: give at least one [[backend]] table with \
                        address = \"HOST:PORT\" (or leave it out for the defaults at start-up)"
                .into())
        }
        Some(list) => {
            let mut specs = Vec::with_capacity(list.len());
            for entry in list {
                let target =
                    one(&at, "backend.address", &entry.address, args::parse_backend_address)?;
                let weight = value(&at, "backend.weight", entry.weight, args::parse_weight)?;
                let state = value(&at, "backend.state", entry.state, args::parse_admin_state)?;
                specs.push(BackendSpec { target, weight, state: state.unwrap_or_default() });
            }
            Some(specs)
        }
    };
    Ok(FileConfig {
        host: value(&at, "host", raw.host, args::parse_host)?,
        port: value(&at, "port", raw.port, args::parse_listen_port)?,
        algorithm: value(&at, "algorithm", raw.algorithm, args::parse_algorithm)?,
        backends,
        health_interval: value(
            &at,
            "health-interval",
            raw.health_interval,
            args::parse_positive_duration,
        )?,
        health_timeout: value(
            &at,
            "health-timeout",
            raw.health_timeout,
            args::parse_positive_duration,
        )?,
        rise: value(&at, "rise", raw.rise, args::parse_threshold)?,
        fall: value(&at, "fall", raw.fall, args::parse_threshold)?,
        health_check: value(&at, "health-check", raw.health_check, args::parse_health_check)?,
        connect_timeout: value(
            &at,
            "connect-timeout",
            raw.connect_timeout,
            args::parse_positive_duration,
        )?,
        idle_timeout: value(&at, "idle-timeout", raw.idle_timeout, args::parse_optional_duration)?,
        max_connections: value(&at, "max-connections", raw.max_connections, args::parse_limit)?,
        max_connections_per_backend: value(
            &at,
            "max-connections-per-backend",
            raw.max_connections_per_backend,
            args::parse_limit,
        )?,
        retries: value(&at, "retries", raw.retries, args::parse_retries)?,
        shutdown_grace: value(&at, "shutdown-grace", raw.shutdown_grace, args::parse_duration)?,
        log_file: value(&at, "log-file", raw.log_file, |s| Ok(s.to_owned()))?,
        log_level: value(&at, "log-level", raw.log_level, args::parse_log_level)?,
        quiet: flag(raw.quiet, "quiet")?,
        demo: flag(raw.demo, "demo")?,
        workers: value(&at, "workers", raw.workers, args::parse_workers)?,
        admin: value(&at, "admin", raw.admin, args::parse_admin)?,
        admin_token: value(&at, "admin-token", raw.admin_token, args::parse_admin_token)?,
        admin_allowed_hosts: value(
            &at,
            "admin-allowed-hosts",
            raw.admin_allowed_hosts,
            args::parse_allowed_hosts,
        )?,
    })
}

/// The key assigned on the line holding `offset` (`port` for `port = 1e400`), as a message
/// names it: `backend.weight` inside a `[[backend]]` table. `None` when the line assigns none.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or_default();
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return None;
    }
    // The table the line is in: the last header above it.
    let table = text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']' || c == ' '));
    Some(match table {
        Some(table) if !table.is_empty() => format!("{table}.{key}"),
        _ => key.to_owned(),
    })
}

/// How a backend is written, for messages about a malformed one.
const BACKEND_FORM: &str =
    "expected [[backend]] tables with address = \"HOST:PORT\" (and optionally weight and state)";

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The file as serde reads it. Values stay [`Scalar`]s here, so that the flags' parsers judge
/// them afterwards and a wrong value is reported with its key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Raw {
    host: Option<Spanned<Scalar>>,
    port: Option<Spanned<Scalar>>,
    algorithm: Option<Spanned<Scalar>>,
    #[serde(default, deserialize_with = "backend_list")]
    backend: Option<Vec<RawBackend>>,
    health_interval: Option<Spanned<Scalar>>,
    health_timeout: Option<Spanned<Scalar>>,
    rise: Option<Spanned<Scalar>>,
    fall: Option<Spanned<Scalar>>,
    health_check: Option<Spanned<Scalar>>,
    connect_timeout: Option<Spanned<Scalar>>,
    idle_timeout: Option<Spanned<Scalar>>,
    max_connections: Option<Spanned<Scalar>>,
    max_connections_per_backend: Option<Spanned<Scalar>>,
    retries: Option<Spanned<Scalar>>,
    shutdown_grace: Option<Spanned<Scalar>>,
    log_file: Option<Spanned<Scalar>>,
    log_level: Option<Spanned<Scalar>>,
    quiet: Option<Spanned<Scalar>>,
    demo: Option<Spanned<Scalar>>,
    workers: Option<Spanned<Scalar>>,
    admin: Option<Spanned<Scalar>>,
    admin_token: Option<Spanned<Scalar>>,
    admin_allowed_hosts: Option<Spanned<Scalar>>,
}

/// One `[[backend]]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    address: Spanned<Scalar>,
    weight: Option<Spanned<Scalar>>,
    state: Option<Spanned<Scalar>>,
}

/// Visitor methods that turn down every value but the one the visitor is for, with a message in
/// the file's words (`backend: expected ..., found a string "x"`) rather than serde's, which
/// would name Rust types.
macro_rules! refuse_other_values {
    ($expected:expr) => {
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Err(E::custom(format!("{}, found {v}", $expected)))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Err(E::custom(format!("{}, found the number {v}", $expected)))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Err(E::custom(format!("{}, found the number {v}", $expected)))
        }
        fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
            Err(E::custom(format!("{}, found the number {v}", $expected)))
        }
        fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
            Err(E::custom(format!("{}, found the number {v}", $expected)))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Err(E::custom(format!("{}, found the number {v:?}", $expected)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Err(E::custom(format!("{}, found the string {v:?}", $expected)))
        }
    };
}

/// `backend` must be a list of tables; a custom visitor so that a plain string, a single
/// `[backend]` table or a list of strings (easy mistakes) is reported with the key's name and
/// the expected form.
fn backend_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<RawBackend>>, D::Error> {
    struct List;
    impl<'de> Visitor<'de> for List {
        type Value = Vec<RawBackend>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "backend: {BACKEND_FORM}")
        }
        refuse_other_values!(format_args!("backend: {BACKEND_FORM}"));
        fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(de::Error::custom(format!(
                "backend: {BACKEND_FORM}, found a single [backend] table (write [[backend]])"
            )))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(BackendEntry(entry)) = seq.next_element()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    d.deserialize_any(List).map(Some)
}

/// One element of the `backend` list: a table, read as a [`RawBackend`]; anything else (a
/// string, a number, an array) is turned down in the file's words.
struct BackendEntry(RawBackend);

impl<'de> Deserialize<'de> for BackendEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<BackendEntry, D::Error> {
        struct Entry;
        impl<'de> Visitor<'de> for Entry {
            type Value = RawBackend;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "backend: {BACKEND_FORM}")
            }
            refuse_other_values!(format_args!("backend: {BACKEND_FORM}"));
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<RawBackend, A::Error> {
                Err(de::Error::custom(format!("backend: {BACKEND_FORM}, found an array")))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawBackend, A::Error> {
                RawBackend::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_any(Entry).map(BackendEntry)
    }
}

/// A value as written, before its flag's parser sees it. Any TOML value is accepted here, so
/// that a value of the wrong kind is reported by [`Scalar::text`] together with its key.
#[derive(Debug)]
enum Scalar {
    /// A string, or a number kept as its text (`8080`, `1.5`).
    Text(String),
    Bool(bool),
    /// An array, a table or a date: never a valid setting. The name is for the error.
    Other(&'static str),
}

impl Scalar {
    /// The text a flag's parser reads: the command line's form of this value.
    fn text(&self) -> Result<String, String> {
        match self {
            Scalar::Text(s) => Ok(s.clone()),
            Scalar::Bool(b) => Ok(b.to_string()),
            Scalar::Other(kind) => Err(format!("expected a string or a number, found {kind}")),
        }
    }

    fn kind(&self) -> String {
        match self {
            Scalar::Text(s) => format!("{s:?}"),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Other(kind) => (*kind).to_owned(),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, a number or true/false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_string()))
            }
            // Integers beyond 64 bits (`port = 99999999999999999999999`): kept as text too, so
            // the flag's parser says the number is out of its range, naming the key.
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_string()))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                // Debug keeps the point (`2.0`), so a float never passes for a whole number.
                Ok(Scalar::Text(format!("{v:?}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
                // toml hands dates over as a map with one private key.
                let mut kind = "a table";
                if let Some(key) = map.next_key::<String>()? {
                    if key.starts_with("$__toml_private") {
                        kind = "a date";
                    }
                    map.next_value::<IgnoredAny>()?;
                }
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other(kind))
            }
        }
        d.deserialize_any(V)
    }
}

/// The flags the user typed, by clap id (the [`Args`] field name), as opposed to defaults.
#[derive(Debug, Clone, Default)]
pub(crate) struct Given(BTreeSet<String>);

impl Given {
    /// Reads which flags came from the command line.
    pub(crate) fn from_matches(matches: &ArgMatches) -> Given {
        Given(
            Args::command()
                .get_arguments()
                .map(|arg| arg.get_id().as_str())
                .filter(|id| matches.value_source(id) == Some(ValueSource::CommandLine))
                .map(str::to_owned)
                .collect(),
        )
    }

    /// Whether the flag with this id (an [`Args`] field name) was typed.
    pub(crate) fn has(&self, id: &str) -> bool {
        self.0.contains(id)
    }
}

/// The settings in force: a flag the user typed, else the file's value, else the flag's default.
pub(crate) fn merge(cli: &Args, given: &Given, file: &FileConfig) -> Args {
    let mut args = cli.clone();
    macro_rules! file_under_flags {
        ($($field:ident),* ; optional: $($opt:ident),* $(,)?) => {
            // Destructured so that a key added to the file without a line here does not compile.
            let FileConfig { $($field,)* $($opt,)* } = file;
            $(
                if !given.has(stringify!($field)) {
                    if let Some(value) = $field {
                        args.$field = value.clone();
                    }
                }
            )*
            // Flags that are off unless given: the file can turn them on.
            $(
                if !given.has(stringify!($opt)) && $opt.is_some() {
                    args.$opt = $opt.clone();
                }
            )*
        };
    }
    file_under_flags!(
        host,
        port,
        algorithm,
        backends,
        health_interval,
        health_timeout,
        rise,
        fall,
        health_check,
        connect_timeout,
        idle_timeout,
        max_connections,
        max_connections_per_backend,
        retries,
        shutdown_grace,
        log_file,
        log_level,
        quiet,
        demo,
        workers,
        admin_allowed_hosts;
        optional: admin,
        admin_token,
    );
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::FromArgMatches;
    use lb_core::AdminState;
    use lb_net::CheckKind;

    /// Parses flags as `main` does and lays `file` under them.
    fn effective(flags: &[&str], file: &str) -> Args {
        let matches = Args::command().try_get_matches_from(flags).unwrap();
        let cli = Args::from_arg_matches(&matches).unwrap();
        let file = parse("lb.toml", file).unwrap();
        merge(&cli, &Given::from_matches(&matches), &file)
    }

    fn err(text: &str) -> String {
        parse("lb.toml", text).unwrap_err()
    }

    #[test]
    fn every_key_parses_to_the_flags_types() {
        let file = parse(
            "lb.toml",
            r#"
host = "0.0.0.0"
port = 9000
algorithm = "least_connections"
health-interval = "500ms"
health-timeout = "1m30s"
rise = 4
fall = "5"
health-check = "http:/healthz"
connect-timeout = "3s"
idle-timeout = "off"
max-connections = 100
max-connections-per-backend = "unlimited"
retries = 0
shutdown-grace = "0"
log-file = "lb.log"
log-level = "info,lb::access=off"
quiet = true
demo = false

[[backend]]
address = "127.0.0.1:8001"
weight = 2
state = "drain"

[[backend]]
address = "[::1]:8002"
"#,
        )
        .unwrap();
        assert_eq!(file.host.as_deref(), Some("0.0.0.0"));
        assert_eq!(file.port, Some(9000));
        assert_eq!(file.algorithm, Some(Algorithm::LeastConnections));
        assert_eq!(file.health_interval, Some(Duration::from_millis(500)));
        assert_eq!(file.health_timeout, Some(Duration::from_secs(90)));
        assert_eq!((file.rise, file.fall, file.retries), (Some(4), Some(5), Some(0)));
        assert_eq!(
            file.health_check,
            Some(HealthCheck(Some(CheckKind::Http(lb_net::HttpCheck::get("/healthz")))))
        );
        assert_eq!(file.idle_timeout, Some(OptionalDuration(None)));
        assert_eq!(file.max_connections, Some(Limit(Some(100))));
        assert_eq!(file.max_connections_per_backend, Some(Limit(None)));
        assert_eq!(file.shutdown_grace, Some(Duration::ZERO));
        assert_eq!(file.log_level.as_deref(), Some("info,lb::access=off"));
        assert_eq!((file.quiet, file.demo), (Some(true), Some(false)));
        let backends = file.backends.unwrap();
        assert_eq!(backends.len(), 2);
        assert_eq!(
            (backends[0].target.to_string(), backends[0].weight, backends[0].state),
            ("127.0.0.1:8001".into(), Some(2), AdminState::Drain)
        );
        assert_eq!(
            (backends[1].target.to_string(), backends[1].weight, backends[1].state),
            ("[::1]:8002".into(), None, AdminState::Ready)
        );
    }

    #[test]
    fn an_empty_file_sets_nothing() {
        assert_eq!(parse("lb.toml", "# nothing\n").unwrap(), FileConfig::default());
        let args = effective(&["lb"], "");
        assert_eq!((args.port, args.backends.len()), (8080, 3));
    }

    #[test]
    fn a_flag_beats_the_file_and_the_file_beats_a_default() {
        let file = r#"
port = 9000
algorithm = "p2c"
health-interval = "5s"
quiet = true
[[backend]]
address = "127.0.0.1:9001"
weight = 3
"#;
        let args = effective(&["lb", "--port", "7000", "--health-interval", "2s"], file);
        // Typed flags win, even one equal to its default (--health-interval 2s).
        assert_eq!(args.port, 7000);
        assert_eq!(args.health_interval, Duration::from_secs(2));
        // The file beats defaults.
        assert_eq!(args.algorithm, Algorithm::P2c);
        assert!(args.quiet);
        assert_eq!(args.backends.len(), 1);
        assert_eq!(args.backends[0].weight, Some(3));
        // Neither: the default.
        assert_eq!(args.retries, 2);

        // --backend flags replace the file's whole list.
        let args = effective(&["lb", "--backend", "127.0.0.1:7001"], file);
        assert_eq!(args.backends.len(), 1);
        assert_eq!(args.backends[0].target.to_string(), "127.0.0.1:7001");
    }

    #[test]
    fn the_file_and_the_flags_accept_the_same_values() {
        // The same text through a flag and through the file: both accept or both reject.
        for (flag, key, value) in [
            ("--health-interval", "health-interval", "1m30s"),
            ("--health-interval", "health-interval", "0s"),
            ("--health-interval", "health-interval", "5"),
            ("--idle-timeout", "idle-timeout", "off"),
            ("--max-connections", "max-connections", "unlimited"),
            ("--max-connections", "max-connections", "-3"),
            ("--rise", "rise", "0"),
            ("--retries", "retries", "101"),
            ("--port", "port", "70000"),
            ("--algorithm", "algorithm", "least-connections"),
            ("--algorithm", "algorithm", "fastest"),
            ("--health-check", "health-check", "udp"),
            ("--log-level", "log-level", "verbose"),
        ] {
            let by_flag = Args::command().try_get_matches_from(["lb", flag, value]).is_ok();
            let by_file = parse("lb.toml", &format!("{key} = {value:?}")).is_ok();
            assert_eq!(by_flag, by_file, "{key} = {value:?}");
        }
        assert!(parse("lb.toml", "[[backend]]\naddress = \"127.0.0.1:0\"").is_ok(), "for --demo");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = err("port = 9000\nhots = \"x\"\n");
        assert!(
            e.starts_with("lb.toml line 2: unknown key `hots`, expected one of `host`,"),
            "{e}"
        );
        let e = err("[[backend]]\naddress = \"127.0.0.1:8001\"\nwieght = 2\n");
        assert!(e.starts_with("lb.toml line 3: unknown key `wieght`"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn bad_values_name_the_key_and_the_problem() {
        assert_eq!(
            err("port = 9000\nhealth-interval = \"5\"\n"),
            "lb.toml line 2: health-interval: invalid duration \"5\": expected a number with a unit, e.g. 500ms, 2s, 5m or 1h"
        );
        assert_eq!(
            err("health-interval = 5"),
            "lb.toml line 1: health-interval: invalid duration \"5\": expected a number with a unit, e.g. 500ms, 2s, 5m or 1h"
        );
        assert_eq!(
            err("connect-timeout = \"0s\""),
            "lb.toml line 1: connect-timeout: \"0s\" is zero: this duration must be positive"
        );
        assert!(err("algorithm = \"fastest\"").starts_with(
            "lb.toml line 1: algorithm: unknown algorithm \"fastest\": expected one of round_robin,"
        ));
        assert!(err("rise = 0").contains("line 1: rise: invalid number \"0\""));
        assert!(err("port = 1.5").contains("port: invalid port \"1.5\""));
        assert!(err("port = [80]").contains("port: expected a string or a number, found an array"));
        assert!(
            err("host = { a = 1 }").contains("host: expected a string or a number, found a table")
        );
        assert!(err("quiet = \"yes\"").contains("quiet: expected true or false, found \"yes\""));
        assert!(err("log-file = 1979-05-27")
            .contains("log-file: expected a string or a number, found a date"));
        let e = err("\n[[backend]]\naddress = \"127.0.0.1:8001\"\nweight = 5000\n");
        assert!(
            e.starts_with("lb.toml line 4: backend.weight: weight 5000 is out of range"),
            "{e}"
        );
        let e = err("[[backend]]\naddress = \"127.0.0.1\"\n");
        assert!(
            e.starts_with("lb.toml line 2: backend.address: missing port in \"127.0.0.1\""),
            "{e}"
        );
        let e = err("[[backend]]\naddress = \"127.0.0.1:80\"\nstate = \"asleep\"\n");
        assert!(e.contains("line 3: backend.state: unknown admin state \"asleep\""), "{e}");
        let e = err("[[backend]]\nweight = 2\n");
        assert_eq!(
            e,
            "lb.toml line 1: backend: missing key `address`: each [[backend]] table needs address = \"HOST:PORT\""
        );
        let e = err("backend = \"127.0.0.1:8001\"\n");
        assert_eq!(
            e,
            "lb.toml line 1: backend: expected [[backend]] tables with address = \"HOST:PORT\" (and optionally weight and state), found the string \"127.0.0.1:8001\""
        );
        let e = err("[backend]\naddress = \"127.0.0.1:8001\"\n");
        assert!(e.contains("backend: expected [[backend]] tables with address = \"HOST:PORT\""));
        assert!(e.ends_with("found a single [backend] table (write [[backend]])"), "{e}");
    }

    #[test]
    fn no_message_names_a_rust_type() {
        // Each is one line naming the line and the key, in the file's words.
        for (text, expected) in [
            (
                "port = 99999999999999999999999",
                "lb.toml line 1: port: invalid port \"99999999999999999999999\": expected a whole number from 0 to 65535",
            ),
            (
                "\nretries = -99999999999999999999999",
                "lb.toml line 2: retries: invalid number \"-99999999999999999999999\": expected a whole number from 0 to 100",
            ),
            (
                "backend = [\"127.0.0.1:1\"]",
                "lb.toml line 1: backend: expected [[backend]] tables with address = \"HOST:PORT\" (and optionally weight and state), found the string \"127.0.0.1:1\"",
            ),
            (
                "backend = [\n  {address = \"127.0.0.1:1\"},\n  7,\n]",
                "lb.toml line 3: backend: expected [[backend]] tables with address = \"HOST:PORT\" (and optionally weight and state), found the number 7",
            ),
            (
                "backend = [[\"127.0.0.1:1\"]]",
                "lb.toml line 1: backend: expected [[backend]] tables with address = \"HOST:PORT\" (and optionally weight and state), found an array",
            ),
            (
                "backend = true",
                "lb.toml line 1: backend: expected [[backend]] tables with address = \"HOST:PORT\" (and optionally weight and state), found true",
            ),
            (
                "[[backend]]\naddress = \"127.0.0.1:1\"\nweight = 99999999999999999999999",
                "lb.toml line 3: backend.weight: invalid weight \"99999999999999999999999\": expected a whole number from 1 to 1000",
            ),
            ("port = 1e400", "lb.toml line 1: port: floating-point number overflowed"),
            (
                "[[backend]]\naddress = \"127.0.0.1:1\"\nweight = 1e400",
                "lb.toml line 3: backend.weight: floating-point number overflowed",
            ),
        ] {
            let e = err(text);
            assert_eq!(e, expected, "{text:?}");
        }
        // Syntax errors in a value name the key, whatever the parser's wording.
        assert!(err("port = 9000\nalgorithm = \n").starts_with("lb.toml line 2: algorithm: "));
        assert!(err("port = 08080").starts_with("lb.toml line 1: port: "));
        for text in ["port = 99999999999999999999999", "backend = [1]", "backend = [[1]]"] {
            let e = err(text);
            for leak in ["i128", "u128", "struct", "RawBackend", "Scalar", "invalid type", "map"] {
                assert!(!e.contains(leak), "{text:?}: {e}");
            }
        }
    }

    #[test]
    fn the_host_and_admin_token_are_checked_as_their_flags() {
        assert_eq!(parse("lb.toml", "host = \"[::1]\"").unwrap().host.as_deref(), Some("::1"));
        assert_eq!(parse("lb.toml", "host = \"::1\"").unwrap().host.as_deref(), Some("::1"));
        assert!(err("host = \"[::1\"").starts_with("lb.toml line 1: host: invalid host \"[::1\""));
        assert_eq!(
            err("\nadmin-token = \"\""),
            "lb.toml line 2: admin-token: the admin token is empty: give a non-empty token, or no token at all"
        );
        for token in ["\"a b\"", "\"a\\nb\"", "\" t\"", "\"\\u0007\""] {
            let e = err(&format!("admin-token = {token}"));
            assert!(e.starts_with("lb.toml line 1: admin-token: the admin token contains "), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn syntax_errors_name_the_file_and_line() {
        let e = err("port = 9000\nalgorithm = \n");
        assert!(e.starts_with("lb.toml line 2: "), "{e}");
        let e = err("port = 9000\n\n[[backend]\n");
        assert!(e.starts_with("lb.toml line 3: "), "{e}");
        assert_eq!(err("port = 1\nport = 2\n"), "lb.toml line 2: duplicate key `port`");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn the_admin_endpoint_can_be_set_in_the_file_and_a_flag_wins() {
        let args = effective(&["lb"], "admin = \"9090\"\nadmin-token = \"t\"\n");
        assert_eq!(args.admin.unwrap().to_string(), "127.0.0.1:9090");
        assert_eq!(args.admin_token.as_deref(), Some("t"));
        let args = effective(&["lb", "--admin", "0.0.0.0:7000"], "admin = \"9090\"\n");
        assert_eq!(args.admin.unwrap().to_string(), "0.0.0.0:7000");
        assert!(effective(&["lb"], "").admin.is_none(), "off by default");
        let e = parse("lb.toml", "admin = \"nine\"\n").unwrap_err();
        assert!(e.starts_with("lb.toml line 1: admin: invalid admin address"), "{e}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = load(Path::new("/nonexistent-dir/lb.toml")).unwrap_err();
        assert!(e.starts_with("cannot read config file /nonexistent-dir/lb.toml: "), "{e}");
    }

    #[test]
    fn the_example_file_parses_and_states_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/lb.example.toml");
        let file = load(Path::new(path)).unwrap();
        // Every key is in the example...
        let FileConfig {
            host,
            port,
            algorithm,
            backends,
            health_interval,
            health_timeout,
            rise,
            fall,
            health_check,
            connect_timeout,
            idle_timeout,
            max_connections,
            max_connections_per_backend,
            retries,
            shutdown_grace,
            log_file,
            log_level,
            quiet,
            demo,
            workers,
            admin,
            admin_token,
            admin_allowed_hosts,
        } = file.clone();
        // ... except the admin endpoint, off by default: shown commented out.
        let text = std::fs::read_to_string(path).unwrap();
        // (and the worker count, whose default depends on the machine).
        assert!(admin.is_none() && admin_token.is_none() && workers.is_none());
        for key in ["admin", "admin-token", "workers"] {
            assert!(text.contains(&format!("\n# {key} = ")), "{key} is shown: {text}");
        }
        assert!(
            host.is_some()
                && port.is_some()
                && algorithm.is_some()
                && backends.is_some()
                && health_interval.is_some()
                && health_timeout.is_some()
                && rise.is_some()
                && fall.is_some()
                && health_check.is_some()
                && connect_timeout.is_some()
                && idle_timeout.is_some()
                && max_connections.is_some()
                && max_connections_per_backend.is_some()
                && retries.is_some()
                && shutdown_grace.is_some()
                && log_file.is_some()
                && log_level.is_some()
                && quiet.is_some()
                && demo.is_some()
                && admin_allowed_hosts.is_some(),
            "{file:?}"
        );
        // ... with its default value, so running on the example changes nothing. (The example
        // spells out weight 1 where the default leaves it unset.)
        let defaults = Args::command().try_get_matches_from(["lb"]).unwrap();
        let defaults = Args::from_arg_matches(&defaults).unwrap();
        let mut with_file = merge(&defaults, &Given::default(), &file);
        for b in &mut with_file.backends {
            b.weight = b.weight.filter(|&w| w != lb_core::DEFAULT_WEIGHT);
        }
        assert_eq!(with_file, defaults);
    }
}
