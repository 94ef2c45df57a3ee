//! The answer to a command, as the REPL, the admin endpoint and `lb ctl` print it.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;

use tokio::time::Instant;

use super::command::HELP;
use super::stats::{format_duration, Stats};
use crate::health_check::CheckStatus;

/// The answer to a command, printable as the REPL and admin endpoint show it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Reply {
    /// A change was made; the text says what.
    Done(String),
    /// The stats table.
    Stats(Box<Stats>),
    /// Last check per backend, pool by pool.
    Health(Vec<PoolHealth>),
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
    /// Each backend in pool order, with its last check (`None`: not checked yet).
    pub backends: Vec<(SocketAddr, Option<CheckStatus>)>,
}

/// One line of the `health` answer.
fn health_row(out: &mut String, addr: SocketAddr, status: Option<&CheckStatus>) -> fmt::Result {
    let Some(s) = status else { return writeln!(out, "{addr}  not checked yet") };
    let ago = format_duration(Instant::now().saturating_duration_since(s.at));
    let took = s.duration.as_secs_f64() * 1000.0;
    match &s.result {
        Ok(()) => writeln!(out, "{addr}  ok      {took:.1} ms, {ago} ago"),
        Err(e) => writeln!(out, "{addr}  FAILED  {e} ({took:.1} ms, {ago} ago)"),
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Done(text) => f.write_str(text),
            Reply::Stats(stats) => write!(f, "{stats}"),
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
                    for (addr, status) in &pool.backends {
                        write!(out, "{indent}")?;
                        health_row(&mut out, *addr, status.as_ref())?;
                    }
                }
                if pools.is_empty() {
                    out.push_str("(no backends)");
                }
                f.write_str(out.trim_end())
            }
            Reply::Help => f.write_str(HELP),
            Reply::ShuttingDown => {
                f.write_str("shutting down: no new connections; open ones may finish")
            }
        }
    }
}
