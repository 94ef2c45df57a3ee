//! The answer to a command, as the REPL, the admin endpoint and `lb ctl` print it.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;

use lb_core::{Health, Transition};
use tokio::time::Instant;

use super::command::HELP;
use super::stats::{format_duration, NamedPoolStats, Stats};
use crate::health_check::CheckStatus;

/// The answer to a command, printable as the REPL and admin endpoint show it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Reply {
    /// A change was made; the text says what.
    Done(String),
    /// The stats table.
    Stats(Box<Stats>),
    /// One pool's table (`stats POOL`).
    PoolStats(Box<NamedPoolStats>),
    /// Last check per backend, pool by pool.
    Health(Vec<PoolHealth>),
    /// What a change would do (`what-if`).
    WhatIf(Box<super::traffic::WhatIfReply>),
    /// Which backend a client would get, and why (`explain`).
    Explain(Box<super::traffic::ExplainReply>),
    /// The command list.
    Help,
    /// Shutdown has begun.
    ShuttingDown,
}

/// The last health check of each backend of one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolHealth {
    /// The pool's name.
    pub pool: String,
    /// Whether the pool's backends are checked at all.
    pub checks_enabled: bool,
    /// Each backend in pool order.
    pub backends: Vec<BackendHealth>,
}

/// One backend's health as the `health` command shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendHealth {
    /// The backend.
    pub addr: SocketAddr,
    /// Its health now: the same state `stats` shows.
    pub health: Health,
    /// Its last check (`None`: not checked yet).
    pub check: Option<CheckStatus>,
    /// Its last change of health and why (checks, or failures from traffic), if any.
    pub change: Option<Transition>,
    /// Whether it is a backup (new connections only while no primary is available).
    pub backup: bool,
}

/// One line of the `health` answer ([`health_line`]), ending `(backup)` for a backup.
fn health_row(out: &mut String, b: &BackendHealth) -> fmt::Result {
    health_line(out, b)?;
    if b.backup && out.ends_with('\n') {
        out.pop();
        out.push_str("  (backup)\n");
    }
    Ok(())
}

/// The last check; and when traffic has taken the backend down although its last check passed
/// (or it has none), that first, with the reason, so the line always agrees with the state
/// `stats` shows.
fn health_line(out: &mut String, b: &BackendHealth) -> fmt::Result {
    let ago = |at: std::time::Instant| {
        format_duration(std::time::Instant::now().saturating_duration_since(at))
    };
    let check_failed = b.check.as_ref().is_some_and(|c| c.result.is_err());
    if b.health == Health::Down && !check_failed {
        let (reason, since) = match &b.change {
            Some(t) => (t.reason.to_string(), format!(" ({} ago)", ago(t.at))),
            None => ("down".to_owned(), String::new()),
        };
        write!(out, "{}  DOWN    {reason}{since}; last check ", b.addr)?;
        return match &b.check {
            Some(c) => writeln!(
                out,
                "ok {:.1} ms, {} ago",
                c.duration.as_secs_f64() * 1000.0,
                format_duration(Instant::now().saturating_duration_since(c.at))
            ),
            None => writeln!(out, "not run yet"),
        };
    }
    let Some(s) = &b.check else { return writeln!(out, "{}  not checked yet", b.addr) };
    let ago = format_duration(Instant::now().saturating_duration_since(s.at));
    let took = s.duration.as_secs_f64() * 1000.0;
    match &s.result {
        Ok(()) => writeln!(out, "{}  ok      {took:.1} ms, {ago} ago", b.addr),
        Err(e) => writeln!(out, "{}  FAILED  {e} ({took:.1} ms, {ago} ago)", b.addr),
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Done(text) => f.write_str(text),
            Reply::Stats(stats) => write!(f, "{stats}"),
            Reply::PoolStats(pool) => write!(f, "{pool}"),
            Reply::Health(pools) => {
                let several = pools.len() > 1;
                let mut out = String::new();
                for pool in pools {
                    let indent = if several {
                        writeln!(out, "pool {}:", pool.pool)?;
                        "  "
                    } else {
                        ""
                    };
                    if !pool.checks_enabled {
                        writeln!(
                            out,
                            "{indent}health checks are off: backends are not checked (failed connects are retried elsewhere)"
                        )?;
                        continue;
                    }
                    if pool.backends.is_empty() {
                        writeln!(out, "{indent}(no backends)")?;
                    }
                    for backend in &pool.backends {
                        write!(out, "{indent}")?;
                        health_row(&mut out, backend)?;
                    }
                }
                if pools.is_empty() {
                    out.push_str("(no backends)");
                }
                f.write_str(out.trim_end())
            }
            Reply::WhatIf(w) => write!(f, "{w}"),
            Reply::Explain(e) => write!(f, "{e}"),
            Reply::Help => f.write_str(HELP),
            Reply::ShuttingDown => {
                f.write_str("shutting down: no new connections; open ones may finish")
            }
        }
    }
}
