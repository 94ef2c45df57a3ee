//! The command grammar: one parser for the REPL, the admin endpoint, `lb ctl` and `lb
//! --backend`'s options.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use lb_core::{AdminState, Algorithm};

use super::target::{validate_pool_name, BackendRef, Target};
use crate::error::Error;

/// One control command. Commands about a backend name it as a [`BackendRef`], with or without
/// its pool; those about a pool take its name, optional while there is one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Add a backend.
    Add {
        /// The pool to add it to (`add web 10.0.0.5:443`, `add web/10.0.0.5:443`); `None`
        /// for the only pool.
        pool: Option<String>,
        /// The backend's address, resolved when the command runs.
        target: Target,
        /// Weight (default 1).
        weight: Option<u32>,
        /// Initial admin state (default ready).
        state: Option<AdminState>,
        /// Whether it is a backup: new connections only while no primary is available.
        backup: bool,
    },
    /// Remove a backend; its open connections finish on their own.
    Remove(BackendRef),
    /// Stop sending new connections to a backend; open ones continue, or with a deadline are
    /// closed when it passes (access log termination `drained`). With `remove`, the backend is
    /// removed once it is empty or the deadline has closed what was left.
    Drain {
        /// The backend.
        backend: BackendRef,
        /// How long open connections may run before they are closed; `None`: as long as they
        /// like.
        deadline: Option<Duration>,
        /// Remove the backend once it is empty (or emptied by the deadline).
        remove: bool,
    },
    /// Put a backend back in rotation (admin state ready).
    Enable(BackendRef),
    /// Put a backend in maintenance.
    Maint(BackendRef),
    /// Change a backend's weight.
    Weight(BackendRef, u32),
    /// Show (`algorithm: None`) or switch a pool's algorithm.
    Algorithm {
        /// The pool; `None` for every pool when showing, the only pool when switching.
        pool: Option<String>,
        /// The new algorithm, or `None` to show it.
        algorithm: Option<Algorithm>,
    },
    /// Show the stats table of one pool, or of every pool (`None`).
    Stats(Option<String>),
    /// Show the last health check of each backend of one pool, or of every pool.
    Health(Option<String>),
    /// What a change would do, computed on a copy of the pool: the share of `ip_hash`
    /// clients that would move and each backend's shares before and after. The change is one
    /// of `add`, `remove`, `weight`, `drain`, `maint`, `enable` and `algorithm POOL NAME`.
    WhatIf(Box<Command>),
    /// Which backend the next connection from a client address would get now, and why.
    Explain {
        /// The pool; `None` for the only pool.
        pool: Option<String>,
        /// The client's address.
        client: std::net::IpAddr,
    },
    /// Show the command list.
    Help,
    /// Re-read the configuration file and apply the difference.
    Reload,
    /// Start a new process of the same program, hand it the listening sockets, and once it
    /// is ready stop accepting and exit after the open connections end.
    Upgrade,
    /// Shut down gracefully.
    Quit,
}

/// Command names, for completion in the REPL.
pub const COMMAND_NAMES: [&str; 16] = [
    "add",
    "remove",
    "drain",
    "enable",
    "maint",
    "weight",
    "algorithm",
    "stats",
    "health",
    "what-if",
    "explain",
    "help",
    "reload",
    "upgrade",
    "quit",
    "exit",
];

/// The command list, as `help` prints it.
pub const HELP: &str = "\
Commands:
  stats [pool]                       backends, connections and bytes, with totals
  health [pool]                      last health check of each backend
  add [pool] <host> <port> [weight=N] [drain|maint] [backup]
  add [pool] <host:port> [weight=N] [drain|maint] [backup]
                                     add a backend (weight 1 to 1000, default 1; a backup
                                     serves only while no other backend is available)
  remove <backend>                   take a backend out; its open connections finish
  drain <backend> [deadline=60s] [remove]
                                     no new connections; open ones continue, or are closed
                                     when the deadline passes; remove: then remove it
  maint <backend>                    maintenance: no new connections
  enable <backend>                   back in rotation after drain or maint
  weight <backend> <N>               change a backend's weight
  algorithm [pool] [name]            show or switch: round_robin, least_connections, random, ip_hash, p2c
  what-if <command>                  what add, remove, weight, drain, maint, enable or algorithm
                                     would do: ip_hash clients moved, shares before -> after
  explain [pool] <client-ip>         which backend that client's next connection would get, and why
  reload                             re-read the --config file and apply the difference
  upgrade                            hand the sockets to a new process of the installed lb
                                     binary; this one exits once its connections end
  help                               this list
  quit                               shut down gracefully (also: exit)
A <backend> is host:port, [v6]:port, or host port, after pool/ when there are several pools
(web/10.0.0.5:443).";

impl Command {
    /// Parses one line. Blank lines are an error ([`Error::BadCommand`] with "empty command")
    /// that callers usually ignore. An error's text never holds a control character: one in
    /// the line is written escaped (`\u{1b}`), so a message cannot drive the terminal or the
    /// log it is printed to.
    pub fn parse(line: &str) -> Result<Command, Error> {
        Command::parse_line(line).map_err(|e| {
            let text = e.to_string();
            if text.contains(char::is_control) {
                let mut escaped = String::with_capacity(text.len());
                for c in text.chars() {
                    match c.is_control() {
                        true => escaped.extend(c.escape_debug()),
                        false => escaped.push(c),
                    }
                }
                Error::BadCommand(escaped)
            } else {
                e
            }
        })
    }

    fn parse_line(line: &str) -> Result<Command, Error> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((&name, mut rest)) = words.split_first() else {
            return Err(Error::BadCommand("empty command".into()));
        };
        let name_lc = name.to_ascii_lowercase();
        let cmd = match name_lc.as_str() {
            "add" => {
                let (pool, target) = take_added(&mut rest)?;
                let BackendOptions { weight, state, backup } =
                    BackendOptions::parse(rest.iter().copied()).map_err(|e| match e {
                        Error::BadCommand(msg) => Error::BadCommand(format!("add: {msg}")),
                        other => other,
                    })?;
                return Ok(Command::Add { pool, target, weight, state, backup });
            }
            "remove" | "rm" | "del" | "delete" => {
                Command::Remove(BackendRef::take(&mut rest, "remove")?)
            }
            "drain" => {
                if rest.first().is_some_and(|w| drain_option(w).is_some()) {
                    return Err(Error::BadCommand(
                        "drain: name the backend first, e.g. `drain 127.0.0.1:8001 deadline=60s remove`"
                            .into(),
                    ));
                }
                let backend = BackendRef::take(&mut rest, "drain")?;
                let (deadline, remove) = take_drain_options(&mut rest)?;
                Command::Drain { backend, deadline, remove }
            }
            "enable" | "ready" => Command::Enable(BackendRef::take(&mut rest, "enable")?),
            "maint" | "disable" => Command::Maint(BackendRef::take(&mut rest, "maint")?),
            "weight" => {
                let backend = BackendRef::take(&mut rest, "weight")?;
                let Some((&w, more)) = rest.split_first() else {
                    return Err(Error::BadCommand(format!(
                        "weight: missing the new weight, e.g. `weight {backend} 3`"
                    )));
                };
                rest = more;
                let w = w.trim_start_matches("weight=").trim_start_matches("w=");
                Command::Weight(backend, parse_weight(w)?)
            }
            "algorithm" | "algo" => {
                // `algorithm`, `algorithm NAME`, `algorithm POOL`, `algorithm POOL NAME`: pool
                // names are never algorithm names, so one word is told apart by its spelling.
                let mut pool = None;
                if let Some((&first, more)) = rest.split_first() {
                    if first.parse::<Algorithm>().is_err() && validate_pool_name(first).is_ok() {
                        pool = Some(first.to_owned());
                        rest = more;
                    }
                }
                let algorithm = match rest.split_first() {
                    None => None,
                    Some((&a, more)) => {
                        rest = more;
                        Some(a.parse()?)
                    }
                };
                Command::Algorithm { pool, algorithm }
            }
            "what-if" | "whatif" => {
                if rest.is_empty() {
                    return Err(Error::BadCommand(
                        "what-if: missing the command, e.g. `what-if remove 10.0.0.5:80`".into(),
                    ));
                }
                let inner = Command::parse_line(&rest.join(" "))
                    .map_err(|e| Error::BadCommand(format!("what-if: {}", bare(e))))?;
                let asks = matches!(
                    inner,
                    Command::Add { .. }
                        | Command::Remove(_)
                        | Command::Weight(..)
                        | Command::Drain { .. }
                        | Command::Maint(_)
                        | Command::Enable(_)
                        | Command::Algorithm { algorithm: Some(_), .. }
                );
                if !asks {
                    return Err(Error::BadCommand(format!(
                        "what-if: `{inner}` changes no backend choice: ask about add, remove, weight, drain, maint, enable or algorithm NAME"
                    )));
                }
                return Ok(Command::WhatIf(Box::new(inner)));
            }
            "explain" | "why" => {
                let (pool, ip) = match rest {
                    [ip] => (None, *ip),
                    [pool, ip] => {
                        validate_pool_name(pool)?;
                        (Some((*pool).to_owned()), *ip)
                    }
                    [] => {
                        return Err(Error::BadCommand(
                            "explain: missing the client address, e.g. `explain 192.0.2.7`".into(),
                        ))
                    }
                    [_, _, extra, ..] => {
                        return Err(Error::BadCommand(format!(
                            "explain: unexpected {extra:?} at the end"
                        )))
                    }
                };
                let client = ip.trim_start_matches('[').trim_end_matches(']').parse().map_err(|_| {
                    Error::BadCommand(format!(
                        "explain: invalid client address {ip:?}: expected an IP address such as 192.0.2.7 or 2001:db8::7"
                    ))
                })?;
                return Ok(Command::Explain { pool, client });
            }
            "stats" | "status" => Command::Stats(take_pool(&mut rest)?),
            "health" => Command::Health(take_pool(&mut rest)?),
            "help" | "?" => Command::Help,
            "reload" => Command::Reload,
            "upgrade" => Command::Upgrade,
            "quit" | "exit" | "shutdown" => Command::Quit,
            _ => {
                return Err(Error::BadCommand(format!(
                    "unknown command {name:?}: expected one of add, remove, drain, enable, maint, weight, algorithm, stats, health, what-if, explain, help, reload, upgrade, quit"
                )))
            }
        };
        if let Some(extra) = rest.first() {
            return Err(Error::BadCommand(format!("{name_lc}: unexpected {extra:?} at the end")));
        }
        Ok(cmd)
    }
}

impl Command {
    /// Whether running it changes anything (everything but the reads: `stats`, `health`,
    /// `help`, `algorithm` without a new one). Changes are logged, and need the admin token.
    pub fn changes_state(&self) -> bool {
        !matches!(
            self,
            Command::Stats(_)
                | Command::Health(_)
                | Command::WhatIf(_)
                | Command::Explain { .. }
                | Command::Help
                | Command::Algorithm { algorithm: None, .. }
        )
    }
}

/// An error's text without the `BadCommand` wrapping, for a message that adds a prefix.
fn bare(e: Error) -> String {
    match e {
        Error::BadCommand(msg) => msg,
        other => other.to_string(),
    }
}

/// The optional pool name of `stats` and `health`.
fn take_pool(words: &mut &[&str]) -> Result<Option<String>, Error> {
    let Some((&first, rest)) = words.split_first() else { return Ok(None) };
    validate_pool_name(first)?;
    *words = rest;
    Ok(Some(first.to_owned()))
}

/// The pool and address of `add`: `[POOL/]ADDRESS`, or `POOL ADDRESS` where the second word is
/// an address and not the port of the seed's `add HOST PORT`.
fn take_added(words: &mut &[&str]) -> Result<(Option<String>, Target), Error> {
    if let [first, second, ..] = **words {
        let is_port = second.bytes().all(|b| b.is_ascii_digit());
        let is_option = BackendOptions::parse([second]).is_ok();
        if !first.contains('/') && !is_port && !is_option && validate_pool_name(first).is_ok() {
            *words = &words[1..];
            let target = Target::take(words, "add")?;
            return Ok((Some(first.to_owned()), target));
        }
    }
    let BackendRef { pool, target } = BackendRef::take(words, "add")?;
    Ok((pool, target))
}

/// The options that may follow a backend's address, in `add` and in `lb --backend`
/// (`127.0.0.1:8004,weight=3,drain,backup`): a weight, an initial admin state and `backup`,
/// each at most once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendOptions {
    /// `weight=N` (also `w=N`, or a bare `N`): 1 to 1000; `None` for the default.
    pub weight: Option<u32>,
    /// `ready`, `drain` or `maint` (also `state=...`); `None` for the default, ready.
    pub state: Option<AdminState>,
    /// `backup`: the backend takes new connections only while no primary is available.
    pub backup: bool,
}

impl BackendOptions {
    /// Parses the option words after an address, any case. A weight or a state given twice
    /// (`weight=5 weight=6`, `drain maint`) is an error naming both, rather than the last one
    /// silently winning.
    pub fn parse<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<BackendOptions, Error> {
        let mut options = BackendOptions::default();
        // The words that set each option, for the message when one comes again.
        let (mut weight_word, mut state_word, mut backup_word): (
            Option<&str>,
            Option<&str>,
            Option<&str>,
        ) = (None, None, None);
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
            } else if lower == "backup" {
                options.backup = once(&mut backup_word, word, "backup", true)?;
            } else if !lower.is_empty() && lower.bytes().all(|b| b.is_ascii_digit()) {
                let w = parse_weight(&lower)?;
                options.weight = Some(once(&mut weight_word, word, "weight", w)?);
            } else {
                return Err(Error::BadCommand(format!(
                    "unexpected {word:?}: expected weight=N, backup or one of ready, drain, maint"
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

/// A word after `drain <backend>`, in any case: `deadline=VALUE` or `remove`.
enum DrainOption<'a> {
    Deadline(&'a str),
    Remove,
}

fn drain_option(word: &str) -> Option<DrainOption<'_>> {
    const DEADLINE: &str = "deadline=";
    match word.get(..DEADLINE.len()) {
        Some(prefix) if prefix.eq_ignore_ascii_case(DEADLINE) => {
            Some(DrainOption::Deadline(&word[DEADLINE.len()..]))
        }
        _ => word.eq_ignore_ascii_case("remove").then_some(DrainOption::Remove),
    }
}

/// The words after `drain <backend>`: `deadline=DURATION` and `remove`, each at most once, in
/// either order.
fn take_drain_options(rest: &mut &[&str]) -> Result<(Option<Duration>, bool), Error> {
    let (mut deadline, mut remove) = (None, false);
    while let Some((&word, more)) = rest.split_first() {
        if let Some(DrainOption::Deadline(value)) = drain_option(word) {
            if deadline.is_some() {
                return Err(Error::BadCommand("drain: deadline= given twice".into()));
            }
            let d = crate::time::parse_duration(value)
                .map_err(|e| Error::BadCommand(format!("drain: {e}")))?;
            if d.is_zero() {
                return Err(Error::BadCommand(
                    "drain: deadline=0 would close every connection at once: give a positive duration, or use `maint` and `remove`".into(),
                ));
            }
            deadline = Some(d);
        } else if drain_option(word).is_some() {
            if remove {
                return Err(Error::BadCommand("drain: remove given twice".into()));
            }
            remove = true;
        } else {
            return Err(Error::BadCommand(format!(
                "drain: unexpected {word:?}: expected deadline=DURATION (e.g. deadline=60s) or remove"
            )));
        }
        *rest = more;
    }
    Ok((deadline, remove))
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
            Command::Add { pool, target, weight, state, backup } => {
                write!(f, "add {}", BackendRef { pool: pool.clone(), target: target.clone() })?;
                if let Some(w) = weight {
                    write!(f, " weight={w}")?;
                }
                if let Some(s) = state {
                    write!(f, " {s}")?;
                }
                if *backup {
                    f.write_str(" backup")?;
                }
                Ok(())
            }
            Command::Remove(b) => write!(f, "remove {b}"),
            Command::Drain { backend, deadline, remove } => {
                write!(f, "drain {backend}")?;
                match deadline {
                    // Written so that it reads back the same.
                    Some(d) if d.subsec_millis() == 0 => write!(f, " deadline={}s", d.as_secs())?,
                    Some(d) => write!(f, " deadline={}ms", d.as_millis())?,
                    None => {}
                }
                if *remove {
                    f.write_str(" remove")?;
                }
                Ok(())
            }
            Command::Enable(b) => write!(f, "enable {b}"),
            Command::Maint(b) => write!(f, "maint {b}"),
            Command::Weight(b, w) => write!(f, "weight {b} {w}"),
            Command::Algorithm { pool, algorithm } => {
                f.write_str("algorithm")?;
                if let Some(pool) = pool {
                    write!(f, " {pool}")?;
                }
                if let Some(a) = algorithm {
                    write!(f, " {a}")?;
                }
                Ok(())
            }
            Command::Stats(pool) | Command::Health(pool) => {
                f.write_str(if matches!(self, Command::Stats(_)) { "stats" } else { "health" })?;
                match pool {
                    Some(pool) => write!(f, " {pool}"),
                    None => Ok(()),
                }
            }
            Command::WhatIf(inner) => write!(f, "what-if {inner}"),
            Command::Explain { pool: Some(pool), client } => write!(f, "explain {pool} {client}"),
            Command::Explain { pool: None, client } => write!(f, "explain {client}"),
            Command::Help => f.write_str("help"),
            Command::Reload => f.write_str("reload"),
            Command::Upgrade => f.write_str("upgrade"),
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

#[cfg(test)]
mod tests;
