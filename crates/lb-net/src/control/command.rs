//! The command grammar: one parser for the REPL, the admin endpoint, `lb ctl` and `lb
//! --backend`'s options.

use std::fmt;
use std::str::FromStr;

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
    /// Stop sending new connections to a backend; open ones continue.
    Drain(BackendRef),
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
  drain <backend>                    no new connections; open ones continue
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
            "drain" => Command::Drain(BackendRef::take(&mut rest, "drain")?),
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
                        | Command::Drain(_)
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
            Command::Drain(b) => write!(f, "drain {b}"),
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
mod tests {
    use super::*;

    fn t(host: &str, port: u16) -> Target {
        Target { host: host.into(), port }
    }

    /// A backend named without its pool.
    fn b(host: &str, port: u16) -> BackendRef {
        BackendRef { pool: None, target: t(host, port) }
    }

    fn add(target: Target, weight: Option<u32>, state: Option<AdminState>) -> Command {
        Command::Add { pool: None, target, weight, state, backup: false }
    }

    #[test]
    fn parses_the_seed_forms_and_the_new_ones() {
        assert_eq!(
            Command::parse("add 127.0.0.1 8004").unwrap(),
            add(t("127.0.0.1", 8004), None, None)
        );
        assert_eq!(
            Command::parse("add 127.0.0.1:8004 weight=3").unwrap(),
            add(t("127.0.0.1", 8004), Some(3), None)
        );
        assert_eq!(
            Command::parse("  ADD [::1]:9000 w=2 drain ").unwrap(),
            add(t("::1", 9000), Some(2), Some(AdminState::Drain))
        );
        assert_eq!(Command::parse("add ::1 9000").unwrap(), add(t("::1", 9000), None, None));
        assert_eq!(
            Command::parse("remove localhost 8001").unwrap(),
            Command::Remove(b("localhost", 8001))
        );
        assert_eq!(
            Command::parse("remove localhost:8001").unwrap(),
            Command::Remove(b("localhost", 8001))
        );
        assert_eq!(
            Command::parse("weight 10.0.0.1:80 7").unwrap(),
            Command::Weight(b("10.0.0.1", 80), 7)
        );
        assert_eq!(
            Command::parse("weight 10.0.0.1 80 7").unwrap(),
            Command::Weight(b("10.0.0.1", 80), 7)
        );
        assert_eq!(
            Command::parse("algorithm").unwrap(),
            Command::Algorithm { pool: None, algorithm: None }
        );
        assert_eq!(
            Command::parse("algorithm least_connections").unwrap(),
            Command::Algorithm { pool: None, algorithm: Some(Algorithm::LeastConnections) }
        );
        for (line, cmd) in [
            ("stats", Command::Stats(None)),
            ("health", Command::Health(None)),
            ("help", Command::Help),
            ("reload", Command::Reload),
            ("upgrade", Command::Upgrade),
            ("quit", Command::Quit),
            ("exit", Command::Quit),
        ] {
            assert_eq!(Command::parse(line).unwrap(), cmd);
        }
    }

    #[test]
    fn pools_are_named_before_a_slash_or_as_the_first_word_of_add() {
        let in_pool = |pool: &str, host: &str, port| BackendRef {
            pool: Some(pool.into()),
            target: t(host, port),
        };
        assert_eq!(
            Command::parse("drain web/10.0.0.5:443").unwrap(),
            Command::Drain(in_pool("web", "10.0.0.5", 443))
        );
        assert_eq!(
            Command::parse("weight web/localhost 8001 3").unwrap(),
            Command::Weight(in_pool("web", "localhost", 8001), 3)
        );
        assert_eq!(
            Command::parse("remove db/[::1]:5432").unwrap(),
            Command::Remove(in_pool("db", "::1", 5432))
        );
        let added = |pool: &str, host: &str, port, weight| Command::Add {
            pool: Some(pool.into()),
            target: t(host, port),
            weight,
            state: None,
            backup: false,
        };
        assert_eq!(
            Command::parse("add db 10.0.0.9:5432").unwrap(),
            added("db", "10.0.0.9", 5432, None)
        );
        assert_eq!(
            Command::parse("add db/10.0.0.9:5432 w=2").unwrap(),
            added("db", "10.0.0.9", 5432, Some(2))
        );
        assert_eq!(
            Command::parse("add db localhost 5432").unwrap(),
            added("db", "localhost", 5432, None)
        );
        // The seed's `add HOST PORT` is still a host and a port, not a pool.
        assert_eq!(
            Command::parse("add localhost 8004").unwrap(),
            add(t("localhost", 8004), None, None)
        );
        assert_eq!(
            Command::parse("algorithm web p2c").unwrap(),
            Command::Algorithm { pool: Some("web".into()), algorithm: Some(Algorithm::P2c) }
        );
        assert_eq!(
            Command::parse("algorithm web").unwrap(),
            Command::Algorithm { pool: Some("web".into()), algorithm: None }
        );
        assert_eq!(
            Command::parse("algorithm random").unwrap(),
            Command::Algorithm { pool: None, algorithm: Some(Algorithm::Random) }
        );
        assert_eq!(Command::parse("stats web").unwrap(), Command::Stats(Some("web".into())));
        assert_eq!(Command::parse("health db").unwrap(), Command::Health(Some("db".into())));
        let err = |line: &str| Command::parse(line).unwrap_err().to_string();
        assert!(err("drain 9web/10.0.0.5:443").contains("invalid pool name \"9web\""));
        assert!(err("drain web/").contains("missing backend after \"web\"/"));
        assert!(err("stats web db").contains("unexpected \"db\""));
        assert!(err("stats 10.0.0.1").contains("invalid pool name"));
        assert!(err("algorithm web fastest").contains("unknown algorithm \"fastest\""));
    }

    #[test]
    fn pool_names_cannot_pass_for_addresses_or_algorithms() {
        for good in ["web", "db-1", "api.v2", "A_b"] {
            assert!(validate_pool_name(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("", "1 to 64"),
            ("1web", "starts with a letter"),
            ("web/x", "letters, digits"),
            ("we b", "letters, digits"),
            ("p2c", "algorithm"),
            ("Round-Robin", "algorithm"),
        ] {
            let e = validate_pool_name(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert!(validate_pool_name(&"a".repeat(65)).is_err());
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
            "algorithm web p2c",
            "algorithm web",
            "stats",
            "stats web",
            "health db",
            "add web/10.0.0.9:5432 weight=2",
            "add 10.0.0.9:80 maint backup",
            "drain web/10.0.0.5:443",
            "what-if remove 10.0.0.1:80",
            "what-if add web/10.0.0.9:80 weight=2",
            "what-if algorithm web ip_hash",
            "explain 192.0.2.7",
            "explain web 2001:db8::7",
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
        assert!(err("algorithm web fastest").contains("expected one of round_robin"));
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
            add(t("127.0.0.1", 4), Some(2), Some(AdminState::Maint))
        );
    }

    #[test]
    fn what_if_and_explain_say_what_is_wrong_in_one_line() {
        let err = |line: &str| Command::parse(line).unwrap_err().to_string();
        assert_eq!(
            err("what-if"),
            "what-if: missing the command, e.g. `what-if remove 10.0.0.5:80`"
        );
        assert_eq!(
            err("what-if stats"),
            "what-if: `stats` changes no backend choice: ask about add, remove, weight, drain, maint, enable or algorithm NAME"
        );
        assert!(err("what-if frobnicate").starts_with("what-if: unknown command \"frobnicate\""));
        assert_eq!(
            err("explain 10.0.0.300"),
            "explain: invalid client address \"10.0.0.300\": expected an IP address such as 192.0.2.7 or 2001:db8::7"
        );
        assert_eq!(err("explain"), "explain: missing the client address, e.g. `explain 192.0.2.7`");
        assert!(!Command::parse("what-if remove 10.0.0.1:80").unwrap().changes_state());
        assert!(!Command::parse("explain 192.0.2.7").unwrap().changes_state());
    }

    #[test]
    fn backend_options_are_read_by_one_parser() {
        let parse = |words: &[&str]| BackendOptions::parse(words.iter().copied());
        assert_eq!(parse(&[]).unwrap(), BackendOptions::default());
        assert_eq!(
            parse(&["weight=3", "drain"]).unwrap(),
            BackendOptions { weight: Some(3), state: Some(AdminState::Drain), backup: false }
        );
        assert!(parse(&["BACKUP", "weight=2"]).unwrap().backup);
        let twice = parse(&["backup", "backup"]).unwrap_err().to_string();
        assert!(twice.contains("backup given twice"), "{twice}");
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

    #[test]
    fn errors_never_carry_control_characters() {
        for line in ["drain \u{1b}[2J\u{1b}[31mRED", "add h\u{7}st", "weight a:1 \u{7f}"] {
            let e = Command::parse(line).unwrap_err().to_string();
            assert!(!e.contains(char::is_control), "{e:?}");
        }
        let e = Command::parse("drain \u{1b}[2J").unwrap_err().to_string();
        assert!(e.contains("\\u{1b}[2J 8001`"), "{e}");
    }
}
