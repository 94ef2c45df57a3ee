//! The `--config` file: every flag of `lb` as a TOML key, laid under the command line, and
//! `[[pool]]` / `[[listen]]` tables for several services in one `lb`.
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
//! ([`Settings::merge`]). The whole file is checked before anything uses it: an unknown key, a bad
//! value or a syntax error is one line naming the file, the line and the key.
//!
//! The keys and their parsers come from the table in [`crate::settings`]; this module reads the
//! TOML: each value in its raw form ([`Scalar`], or a list of tables, [`Tables`]), handed to its
//! setting's parser through [`SettingValue`]. The `[[pool]]` and `[[listen]]` tables and the
//! rules about what goes together are [`crate::tables`].

mod raw;

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::sync::LazyLock;

use clap::builder::TypedValueParser;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory};
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

pub(crate) use raw::{read_key, refuse_other_values, unknown_key, At, Scalar, Table, Tables};

use crate::args::{self, one_line, Args, BackendSpec, FromText};
#[cfg(doc)]
use crate::settings::Settings;
use crate::settings::{FileConfig, Key, KEYS};
use crate::tables::{ListenTable, PoolTable};

/// Reads and checks a configuration file. The error is one line: the file, the line (when there
/// is one) and what is wrong.
pub(crate) fn load(path: &Path) -> Result<File, String> {
    // A blocking read even when called from the runtime: the file is small and read only at
    // start-up and on an operator's reload, never on the connection path.
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    parse(&path.display().to_string(), &text)
}

/// Parses the text of a configuration file; `name` is how errors refer to it.
pub(crate) fn parse(name: &str, text: &str) -> Result<File, String> {
    // A message may quote what the file says (a key, a value): kept to one line whatever that is.
    read(name, text).map_err(|e| args::escape_controls(&e))
}

fn read(name: &str, text: &str) -> Result<File, String> {
    let place = Place::new(name, text);
    let TopLevel(file) = toml::from_str(text).map_err(|e| toml_message(&place, text, &e))?;
    // A value its setting's parser turned down.
    let mut file =
        file.map_err(|bad| format!("{}: {}: {}", place.at(bad.at), bad.key, bad.message))?;
    file.place = place;
    file.check()?;
    Ok(file)
}

/// A configuration file, read and checked ([`crate::tables`] has the rules).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct File {
    /// The top-level keys: the flags' settings, and with `[[pool]]` tables every pool's
    /// defaults.
    pub(crate) settings: FileConfig,
    /// Where each top-level setting is written.
    pub(crate) keys: Vec<(Key, usize)>,
    /// The `[[pool]]` tables, in order.
    pub(crate) pools: Vec<At<PoolTable>>,
    /// The `[[listen]]` tables, in order.
    pub(crate) listeners: Vec<At<ListenTable>>,
    /// How messages name the file and its lines.
    pub(crate) place: Place,
}

impl File {
    /// Where the top-level setting `key` is written, if it is.
    pub(crate) fn key_offset(&self, key: Key) -> Option<usize> {
        self.keys.iter().find(|(k, _)| *k == key).map(|&(_, at)| at)
    }
}

/// How messages name a place in a file: `lb.toml line 12`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Place {
    name: String,
    /// The offset where each line starts.
    line_starts: Vec<usize>,
}

impl Place {
    fn new(name: &str, text: &str) -> Place {
        let starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1));
        Place { name: name.to_owned(), line_starts: starts.collect() }
    }

    /// `NAME line N` for the line holding `offset`.
    pub(crate) fn at(&self, offset: usize) -> String {
        format!("{} line {}", self.name, self.line(offset))
    }

    /// The 1-based number of the line holding `offset`.
    pub(crate) fn line(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= offset).max(1)
    }

    /// The file's name, as messages give it.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

/// The TOML reader's message, in the file's words, with the file and line.
fn toml_message(place: &Place, text: &str, e: &toml::de::Error) -> String {
    // serde says "field"; in a file people write keys.
    let mut message = e
        .message()
        .trim_end()
        .replace("unknown field", "unknown key")
        .replace("missing field", "missing key");
    let Some(span) = e.span() else { return format!("{}: {message}", place.name) };
    if message == "duplicate key" {
        // The span is the key itself; name it, as for an unknown one.
        if let Some(key) = text.get(span.clone()) {
            message = format!("duplicate key `{}`", key.trim());
        }
    } else if message == "missing key `address`" {
        // Of the tables, only [[backend]] is read by serde's derive, which says this.
        message = format!(
            "backend: missing key `address`: each {} table needs address = \"HOST:PORT\"",
            RawBackend::HEADER
        );
    }
    match message.split_once(": ") {
        // Our own messages start with the key of the table or list they are about; name it as
        // the file writes it there (`pool.backend` for a pool's backends, `listen.routes`).
        Some((key, rest)) if OWN_PREFIXES.contains(&key) => {
            if let Some(mut path) = path_at(text, span.start, true) {
                // One about a key in the table (unknown, out of place) is at that key, whose
                // line's path ends with it.
                let about_key = rest.starts_with("unknown key") || rest.starts_with('`');
                if let Some(k) = rest.split('`').nth(1).filter(|_| about_key) {
                    if let Some(table) = path.strip_suffix(&format!(".{k}")) {
                        path = table.to_owned();
                    }
                }
                if path.rsplit('.').next() == Some(key) {
                    message = format!("{path}: {rest}");
                }
            }
        }
        _ if message.starts_with("unknown key") || message.starts_with("duplicate key") => {}
        // A syntax error in a value (`port = 1e400`, `algorithm = `): name the key written on
        // that line, as a bad value's message does.
        _ => {
            if let Some(key) = path_at(text, span.start, false) {
                message = format!("{key}: {message}");
            }
        }
    }
    format!("{}: {message}", place.at(span.start))
}

/// The keys our own messages about a table or a list start with (`backend: expected ...`).
const OWN_PREFIXES: [&str; 5] = ["backend", "pool", "listen", "routes", "sni"];

/// A value its setting's parser turned down: where it is, the key it was read for and why.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BadValue {
    at: usize,
    key: String,
    message: String,
}

impl BadValue {
    /// A problem with a whole table (a key it lacks, keys that do not go together), reported
    /// at the table once the list it is in knows where that is.
    pub(crate) fn of_table(key: &str, message: String) -> BadValue {
        BadValue { at: THE_TABLE, key: key.to_owned(), message }
    }

    /// A problem with the value at `at`.
    pub(crate) fn at(at: usize, key: &str, message: String) -> BadValue {
        BadValue { at, key: key.to_owned(), message }
    }
}

/// [`BadValue::at`] for "the table the value is in", filled in by [`Tables`].
const THE_TABLE: usize = usize::MAX;

/// How a setting's value is given: on the command line (a clap value parser, [`Self::flag`])
/// and in a file (the form serde reads the TOML value in, and [`Self::read`]). An entry of the
/// settings table names one of these, so a flag and its key cannot be read by different
/// parsers.
pub(crate) trait SettingValue {
    /// The flag's value parser.
    type Flag: TypedValueParser;
    /// The value as serde reads it from the file, before the parser sees it.
    type Raw: DeserializeOwned;
    /// The setting's value.
    type Value;
    /// The flag's value parser.
    fn flag(&self) -> Self::Flag;
    /// Reads the value of `key` from the file.
    fn read(&self, key: &str, raw: Self::Raw) -> Result<Self::Value, BadValue>;
}

/// Most settings: the value's text (a string as written, a number or `true` as the command
/// line would spell it) read by the flag's text parser.
impl<P: TypedValueParser + Fn(&str) -> Result<T, String>, T> SettingValue for FromText<P> {
    type Flag = Self;
    type Raw = Spanned<Scalar>;
    type Value = T;

    fn flag(&self) -> Self {
        self.clone()
    }

    fn read(&self, key: &str, raw: Spanned<Scalar>) -> Result<T, BadValue> {
        read_text(key, &raw, &self.parse)
    }
}

/// An on/off flag (`--quiet`); in a file the key takes `true` or `false`, not their text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Switch;

impl SettingValue for Switch {
    type Flag = clap::builder::BoolValueParser;
    type Raw = Spanned<Scalar>;
    type Value = bool;

    fn flag(&self) -> Self::Flag {
        // clap's own for a flag that takes no value.
        clap::builder::BoolValueParser::new()
    }

    fn read(&self, key: &str, raw: Spanned<Scalar>) -> Result<bool, BadValue> {
        match raw.get_ref() {
            Scalar::Bool(b) => Ok(*b),
            other => Err(BadValue::at(
                raw.span().start,
                key,
                format!("expected true or false, found {}", other.kind()),
            )),
        }
    }
}

/// `--backend`: each flag's value read by [`args::parse_backend`]; in the file, a list of
/// `[[backend]]` tables, each part read by the parser the flag uses for it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backends;

impl SettingValue for Backends {
    type Flag = FromText<fn(&str) -> Result<BackendSpec, String>>;
    type Raw = Tables<RawBackend>;
    type Value = Vec<BackendSpec>;

    fn flag(&self) -> Self::Flag {
        one_line(args::parse_backend)
    }

    fn read(&self, key: &str, raw: Tables<RawBackend>) -> Result<Vec<BackendSpec>, BadValue> {
        let mut specs = Vec::new();
        for At { value: entry, .. } in raw.checked()? {
            let part = |name: &str| format!("{key}.{name}");
            let target = read_text(&part("address"), &entry.address, args::parse_backend_address)?;
            let weight = read_optional(&part("weight"), entry.weight, args::parse_weight)?;
            let state = read_optional(&part("state"), entry.state, args::parse_admin_state)?;
            specs.push(BackendSpec { target, weight, state: state.unwrap_or_default() });
        }
        Ok(specs)
    }
}

/// [`read_text`] for a key that may be left out.
pub(crate) fn read_optional<T>(
    key: &str,
    raw: Option<Spanned<Scalar>>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, BadValue> {
    raw.map(|raw| read_text(key, &raw, parse)).transpose()
}

/// Runs one value's text through a parser; a failure names the key and where the value is.
pub(crate) fn read_text<T>(
    key: &str,
    raw: &Spanned<Scalar>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<T, BadValue> {
    let bad = |message| BadValue::at(raw.span().start, key, message);
    parse(&raw.get_ref().text().map_err(bad)?).map_err(bad)
}

/// The file's top level: each key read by its setting's parser, and the `[[pool]]` and
/// `[[listen]]` tables. A value of a shape no setting takes (a TOML error) stops the reading; a
/// value a parser turns down is reported once the whole file has been read, so TOML errors come
/// first: a bad top-level value ([`SettingsReader`]), else the first in the tables, in order.
struct TopLevel(Result<File, BadValue>);

impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TopLevel, D::Error> {
        struct Top;
        impl<'de> Visitor<'de> for Top {
            type Value = TopLevel;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of settings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
                let mut file = File::default();
                let mut settings = SettingsReader::default();
                let (mut pools, mut listeners) = (Tables::default(), Tables::default());
                while let Some(key) = map.next_key::<Spanned<TopKey>>()? {
                    let at = key.span().start;
                    match key.into_inner() {
                        TopKey::Setting(key) => {
                            file.keys.push((key, at));
                            settings.read(key, "", &mut map)?;
                        }
                        TopKey::Pool => pools = map.next_value()?,
                        TopKey::Listen => listeners = map.next_value()?,
                    }
                }
                let checked = (|| {
                    file.settings = settings.finish()?;
                    file.pools = pools.checked()?;
                    file.listeners = listeners.checked()?;
                    Ok(file)
                })();
                Ok(TopLevel(checked))
            }
        }
        // Read as serde's derive reads a struct with `deny_unknown_fields`.
        d.deserialize_struct("settings", &TOP_KEYS, Top)
    }
}

/// Reads a table's settings key by key. A value its parser turns down is kept, for after the
/// whole file is read; of several, the one of the earliest setting in the table (the TOML
/// reader hands keys over sorted, so this is the same whatever order they are written in).
#[derive(Default)]
pub(crate) struct SettingsReader {
    settings: FileConfig,
    first_bad: Option<(Key, BadValue)>,
}

impl SettingsReader {
    /// Reads the value of `key`; `table` is how messages name the table (`pool.`).
    pub(crate) fn read<'de, A: MapAccess<'de>>(
        &mut self,
        key: Key,
        table: &str,
        map: &mut A,
    ) -> Result<(), A::Error> {
        if let Err(bad) = self.settings.read(key, table, map)? {
            if self.first_bad.as_ref().is_none_or(|(first, _)| key < *first) {
                self.first_bad = Some((key, bad));
            }
        }
        Ok(())
    }

    /// The settings read, or the first bad value.
    pub(crate) fn finish(self) -> Result<FileConfig, BadValue> {
        self.first_bad.map_or(Ok(self.settings), |(_, bad)| Err(bad))
    }
}

/// A top-level key: a setting, or a list of `[[pool]]` or `[[listen]]` tables.
enum TopKey {
    Setting(Key),
    Pool,
    Listen,
}

/// Every top-level key, for the message about an unknown one.
static TOP_KEYS: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| KEYS.iter().copied().chain(["pool", "listen"]).collect());

impl<'de> Deserialize<'de> for TopKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TopKey, D::Error> {
        read_key(d, |key| match key {
            "pool" => Ok(TopKey::Pool),
            "listen" => Ok(TopKey::Listen),
            _ => Key::from_key(key)
                .map(TopKey::Setting)
                .ok_or_else(|| unknown_key("", key, &TOP_KEYS)),
        })
    }
}

/// The key assigned on the line holding `offset` (`port` for `port = 1e400`), as a message
/// names it: `backend.weight` inside a `[[backend]]` table; with `headers`, also the table a
/// header line opens (`pool.backend` for `[[pool.backend]]`). `None` when the line does neither.
fn path_at(text: &str, offset: usize, headers: bool) -> Option<String> {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or_default();
    let is_key = |k: &str| {
        !k.is_empty()
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    if headers && line.trim_start().starts_with('[') {
        let table = line.trim().trim_start_matches('[').split(']').next()?.trim();
        return is_key(table).then(|| table.to_owned());
    }
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if !is_key(key) {
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

/// One `[[backend]]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    address: Spanned<Scalar>,
    weight: Option<Spanned<Scalar>>,
    state: Option<Spanned<Scalar>>,
}

impl Table for RawBackend {
    const KEY: &'static str = "backend";
    const FORM: &'static str =
        "expected [[backend]] tables with address = \"HOST:PORT\" (and optionally weight and state)";
    const HEADER: &'static str = "[[backend]]";

    fn read<'de, A: MapAccess<'de>>(map: A) -> Result<Result<Self, BadValue>, A::Error> {
        RawBackend::deserialize(de::value::MapAccessDeserializer::new(map)).map(Ok)
    }
}

/// The flags the user typed, by clap id (the field name in [`Args`] or [`Settings`]), as opposed
/// to defaults.
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

    /// Whether the flag with this id (a field name) was typed.
    pub(crate) fn has(&self, id: &str) -> bool {
        self.0.contains(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{HealthCheck, Limit, OptionalDuration};
    use crate::settings::{Settings, SETTINGS};
    use clap::FromArgMatches;
    use lb_core::{AdminState, Algorithm};
    use lb_net::CheckKind;
    use std::time::Duration;

    /// Parses flags as `main` does; returns their settings and which were typed.
    fn flags(flags: &[&str]) -> (Settings, Given) {
        let matches = Args::command().try_get_matches_from(flags).unwrap();
        (Args::from_arg_matches(&matches).unwrap().settings, Given::from_matches(&matches))
    }

    /// Parses flags as `main` does and lays `file` under them.
    fn effective(args: &[&str], file: &str) -> Settings {
        let (cli, given) = flags(args);
        cli.merge(&given, &parse("lb.toml", file).unwrap().settings)
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
        .unwrap()
        .settings;
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
        assert_eq!(parse("lb.toml", "# nothing\n").unwrap().settings, FileConfig::default());
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
    fn of_several_bad_values_the_first_setting_in_the_table_is_named() {
        assert!(err("port = 99999\nhost = \"a b\"\n").starts_with("lb.toml line 2: host: "));
        let e = err("retries = 101\n[[backend]]\naddress = \"127.0.0.1:1\"\nweight = 0\n");
        assert!(e.starts_with("lb.toml line 4: backend.weight: "), "{e}");
        // A key that is no setting at all comes before any bad value.
        assert!(err("port = 99999\nhots = 1\n").starts_with("lb.toml line 2: unknown key `hots`"));
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
        assert_eq!(
            parse("lb.toml", "host = \"[::1]\"").unwrap().settings.host.as_deref(),
            Some("::1")
        );
        assert_eq!(
            parse("lb.toml", "host = \"::1\"").unwrap().settings.host.as_deref(),
            Some("::1")
        );
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
    fn the_example_files_services_parse_uncommented() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/lb.example.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let marker = "a plain TCP port for web:\n";
        let block = &text[text.find(marker).expect("the services example") + marker.len()..];
        let toml: String = block
            .lines()
            .map(|l| l.strip_prefix("# ").or_else(|| l.strip_prefix('#')).unwrap_or(l))
            .map(|l| format!("{l}\n"))
            .collect();
        let file = parse("lb.example.toml", &toml).unwrap();
        assert_eq!(file.pool_names(), ["web", "api"]);
        let names: Vec<&str> =
            file.listeners.iter().map(|l| l.value.config.name.as_str()).collect();
        assert_eq!(names, ["https", "0.0.0.0:8443"]);
    }

    #[test]
    fn the_readme_services_example_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
        let text = std::fs::read_to_string(path).unwrap();
        let marker = "### Several services in one lb";
        let section = &text[text.find(marker).expect("the README section")..];
        let block = section.split("```toml\n").nth(1).unwrap().split("```").next().unwrap();
        let file = parse("README.md", block).unwrap();
        assert_eq!(file.pool_names(), ["web", "api", "db", "broker"]);
        let names: Vec<&str> =
            file.listeners.iter().map(|l| l.value.config.name.as_str()).collect();
        assert_eq!(names, ["https", "postgres", "amqp"]);
    }

    #[test]
    fn the_example_file_parses_and_states_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/lb.example.toml");
        let file = load(Path::new(path)).unwrap().settings;
        let text = std::fs::read_to_string(path).unwrap();
        // Every key is in the example...
        let set = file.keys();
        let command = Args::command();
        for setting in SETTINGS {
            if set.contains(&setting.key) {
                continue;
            }
            // ... except those --help shows no default for (the admin endpoint, off by default;
            // the worker count, which depends on the machine): shown commented out.
            let arg = command.get_arguments().find(|a| a.get_long() == Some(setting.key)).unwrap();
            let no_default = arg.get_default_values().is_empty() || arg.is_hide_default_value_set();
            assert!(no_default, "{} is not in the example: {file:?}", setting.key);
            assert!(text.contains(&format!("\n# {} = ", setting.key)), "{} is shown", setting.key);
        }
        // ... with its default value, so running on the example changes nothing. (The example
        // spells out weight 1 where the default leaves it unset.)
        let (defaults, given) = flags(&["lb"]);
        let mut with_file = defaults.merge(&given, &file);
        for b in &mut with_file.backends {
            b.weight = b.weight.filter(|&w| w != lb_core::DEFAULT_WEIGHT);
        }
        assert_eq!(with_file, defaults);
    }
}
