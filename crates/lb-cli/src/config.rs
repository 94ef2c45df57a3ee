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

mod messages;
mod raw;

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::sync::LazyLock;

use clap::builder::TypedValueParser;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory};
use foldhash::HashMap;
use lb_net::AddressRange;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

pub(crate) use raw::{read_key, unknown_key, At, ListForm, Scalar, Strings, Table, Tables};

use crate::args::{self, one_line, Args, BackendSpec, FromText};
#[cfg(doc)]
use crate::settings::Settings;
use crate::settings::{FileConfig, Key, KEYS};
use crate::tables::{ListenTable, PoolTable};

/// Reads and checks a configuration file. The error is one line: the file, the line (when there
/// is one) and what is wrong.
pub(crate) fn load(path: &Path) -> Result<File, String> {
    use std::io::Read;
    let cannot = |why: String| format!("cannot read config file {}: {why}", path.display());
    // Only a regular file (a symbolic link to one included), checked before opening: a FIFO's
    // open would wait for a writer, and a device such as /dev/zero never ends.
    let meta = std::fs::metadata(path).map_err(|e| cannot(e.to_string()))?;
    if !meta.is_file() {
        let what = if meta.is_dir() { "a directory" } else { "not a regular file" };
        return Err(cannot(what.into()));
    }
    let too_big = || cannot(format!("larger than {} MiB", MAX_FILE_BYTES >> 20));
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_big());
    }
    // Read through a limit all the same: the file may grow after the look.
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| cannot(e.to_string()))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(too_big());
    }
    parse(&path.display().to_string(), &text)
}

/// The largest configuration file read: 64 MiB, about 1.4 million backends' tables, so a file
/// that grows without end is refused instead of filling memory.
const MAX_FILE_BYTES: u64 = 64 << 20;

/// Parses the text of a configuration file; `name` is how errors refer to it.
pub(crate) fn parse(name: &str, text: &str) -> Result<File, String> {
    // A message may quote what the file says (a key, a value): kept to one line whatever that is.
    read(name, text).map_err(|e| args::escape_controls(&e))
}

fn read(name: &str, text: &str) -> Result<File, String> {
    let place = Place::new(name, text);
    let TopLevel(file) =
        toml::from_str(text).map_err(|e| messages::toml_message(&place, text, &e))?;
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
    /// Checks a value written where TOML could not read one (`port = 80a`, unquoted text):
    /// the parser's message if it is not a good value either, `Ok` if it is (then only the
    /// quotes are missing). `None` for a setting not written as one value.
    fn check_written(&self, _text: &str) -> Option<Result<(), String>> {
        None
    }
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

    fn check_written(&self, text: &str) -> Option<Result<(), String>> {
        Some((self.parse)(text).map(drop))
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
            Scalar::Text(t) if matches!(t.as_str(), "true" | "false") => Err(BadValue::at(
                raw.span().start,
                key,
                format!(
                    "expected true or false, found the string \"{t}\": write {t} without quotes"
                ),
            )),
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
        // Each target's entry, so that a list of thousands is checked for repeats in one pass.
        let mut seen: HashMap<lb_net::Target, usize> = HashMap::default();
        for At { value: entry, .. } in raw.checked()? {
            let part = |name: &str| format!("{key}.{name}");
            let target = read_text(&part("address"), &entry.address, args::parse_backend_address)?;
            let weight = read_optional(&part("weight"), entry.weight, args::parse_weight)?;
            let state = read_optional(&part("state"), entry.state, args::parse_admin_state)?;
            let backup = entry.backup.map(|raw| Switch.read(&part("backup"), raw)).transpose()?;
            // Written twice alike (port 0 excepted: a free port for each demo backend); two
            // names for one address are found once both are resolved ([`crate::plan::wanted`]).
            let twice = (target.port != 0).then(|| seen.get(&target)).flatten();
            if let Some(&first) = twice {
                let (first, second) = (first + 1, specs.len() + 1);
                return Err(BadValue::at(
                    entry.address.span().start,
                    key,
                    format!("{target} is listed twice (entries {first} and {second})"),
                ));
            }
            let (state, backup) = (state.unwrap_or_default(), backup.unwrap_or_default());
            seen.insert(target.clone(), specs.len());
            specs.push(BackendSpec { target, weight, state, backup });
        }
        Ok(specs)
    }
}

/// `--allow` and `--deny`: each flag value one range (clap splits at commas); in the file, a
/// list of them (`["10.0.0.0/8", "192.0.2.7"]`), or one string as the flag takes it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ranges;

impl ListForm for Ranges {
    const FORM: &'static str =
        "expected a list of address ranges such as [\"10.0.0.0/8\", \"192.0.2.7\"]";
}

impl SettingValue for Ranges {
    type Flag = FromText<fn(&str) -> Result<AddressRange, String>>;
    type Raw = Spanned<Strings<Ranges>>;
    type Value = Vec<AddressRange>;

    fn flag(&self) -> Self::Flag {
        one_line(args::parse_address_range)
    }

    fn read(
        &self,
        key: &str,
        raw: Spanned<Strings<Ranges>>,
    ) -> Result<Vec<AddressRange>, BadValue> {
        let ranges = |text: &str| -> Result<Vec<AddressRange>, String> {
            text.split(',').map(args::parse_address_range).collect()
        };
        let mut all = Vec::new();
        for item in Strings::items(raw) {
            all.extend(read_text(key, &item, ranges)?);
        }
        Ok(all)
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
                    ListenTable::name_alike_port_0(&mut file.listeners);
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

/// One `[[backend]]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    address: Spanned<Scalar>,
    weight: Option<Spanned<Scalar>>,
    state: Option<Spanned<Scalar>>,
    backup: Option<Spanned<Scalar>>,
}

impl Table for RawBackend {
    const KEY: &'static str = "backend";
    const FORM: &'static str =
        "expected [[backend]] tables with address = \"HOST:PORT\" (and optionally weight, state and backup)";
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
mod tests;
