//! The command grammar: one parser for the REPL, the admin endpoint, `lb ctl` and `lb
//! --backend`'s options.

use std::fmt;
use std::str::FromStr;

use lb_core::{AdminState, Algorithm};

use super::Target;
use crate::error::Error;

/// One control command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Add a backend.
    Add {
        /// The backend's address, resolved when the command runs.
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

#[cfg(test)]
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
