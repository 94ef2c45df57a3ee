//! What the TOML reader says about a file it cannot read, in the file's words: the file, the
//! line and the key (`lb.toml line 3: port: invalid port "80a": expected a whole number from 0
//! to 65535`), never serde's field names or TOML's grammar where the setting can say better.

use super::{Place, RawBackend};
use crate::config::Table;
use crate::settings::Key;

/// The TOML reader's message, in the file's words, with the file and line.
pub(super) fn toml_message(place: &Place, text: &str, e: &toml::de::Error) -> String {
    // serde says "field"; in a file people write keys.
    let mut message = e
        .message()
        .trim_end()
        .replace("unknown field", "unknown key")
        .replace("missing field", "missing key");
    let Some(span) = e.span() else { return format!("{}: {message}", place.name) };
    if message == "duplicate key" || message.contains("found a single [") {
        // `[[pool]]` read as a second `pool`, or `pool` as one table: both follow from a
        // `[[pool.backend]]` written first.
        if let Some(orphan) = orphan_sub_table(place, text) {
            return orphan;
        }
    }
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
                if let Some(why) = unreadable_value(text, span.start, &key, &message) {
                    message = why;
                }
                message = format!("{key}: {message}");
            }
        }
    }
    format!("{}: {message}", place.at(span.start))
}

/// A setting's value TOML could not read (`port = 80a`, `health-interval = 2s`): what the
/// setting's parser says about the text as written, which names the value expected, rather
/// than TOML's grammar; if the parser takes it, only the quotes are missing. `None` for a
/// value that starts as a string, list or table does (TOML's message is about its form).
fn unreadable_value(text: &str, offset: usize, path: &str, toml: &str) -> Option<String> {
    let name = path.rsplit('.').next()?;
    let (_, line) = line_at(text, offset);
    let (_, value) = line.split_once('=')?;
    let value = value.split(" #").next().unwrap_or_default().trim();
    if value.starts_with(['"', '\'', '[', '{']) {
        return None;
    }
    match Key::from_key(name)?.check_written(value)? {
        Err(why) => Some(why),
        Ok(()) => Some(format!("{toml}: write {name} = {value:?}")),
    }
}

/// The first `[[pool.backend]]` (or `[[listen.routes]]`) header written before any `[[pool]]`
/// (`[[listen]]`) header: TOML then takes `pool` for one table, and says so, or that a later
/// `[[pool]]` is a duplicate key. The message says where the table belongs instead.
fn orphan_sub_table(place: &Place, text: &str) -> Option<String> {
    let mut opened = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let at = offset;
        offset += line.len();
        let header: String =
            line.chars().take_while(|&c| c != '#').filter(|c| !c.is_whitespace()).collect();
        let Some(name) = header.strip_prefix('[').map(|h| h.trim_matches(['[', ']'])) else {
            continue;
        };
        match name.split_once('.') {
            None => opened.push(name.to_owned()),
            Some((parent, _))
                if ["pool", "listen"].contains(&parent) && !opened.contains(&parent.to_owned()) =>
            {
                return Some(format!(
                    "{}: {name}: a [[{name}]] table belongs after its [[{parent}]] header: write \
                     [[{parent}]] first, then its [[{name}]] tables",
                    place.at(at)
                ));
            }
            Some(_) => {}
        }
    }
    None
}

/// The keys our own messages about a table or a list start with (`backend: expected ...`).
const OWN_PREFIXES: [&str; 5] = ["backend", "pool", "listen", "routes", "sni"];

/// The key assigned on the line holding `offset` (`port` for `port = 1e400`), as a message
/// names it: `backend.weight` inside a `[[backend]]` table; with `headers`, also the table a
/// header line opens (`pool.backend` for `[[pool.backend]]`). `None` when the line does neither.
fn path_at(text: &str, offset: usize, headers: bool) -> Option<String> {
    let (start, line) = line_at(text, offset);
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

/// The line holding `offset`, and where it starts.
fn line_at(text: &str, offset: usize) -> (usize, &str) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    (start, text[start..].lines().next().unwrap_or_default())
}
