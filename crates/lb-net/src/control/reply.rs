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
    /// Last check per backend, in pool order; `None` for a backend not checked yet.
    Health(Vec<(SocketAddr, Option<CheckStatus>)>),
    /// The command list.
    Help,
    /// Shutdown has begun.
    ShuttingDown,
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Done(text) => f.write_str(text),
            Reply::Stats(stats) => write!(f, "{stats}"),
            Reply::Health(rows) => {
                if rows.is_empty() {
                    return f.write_str("(no backends)");
                }
                let now = Instant::now();
                let mut out = String::new();
                for (addr, status) in rows {
                    match status {
                        None => writeln!(out, "{addr}  not checked yet")?,
                        Some(s) => {
                            let ago = now.saturating_duration_since(s.at);
                            let took = s.duration.as_secs_f64() * 1000.0;
                            match &s.result {
                                Ok(()) => writeln!(
                                    out,
                                    "{addr}  ok      {took:.1} ms, {} ago",
                                    format_duration(ago)
                                )?,
                                Err(e) => writeln!(
                                    out,
                                    "{addr}  FAILED  {e} ({took:.1} ms, {} ago)",
                                    format_duration(ago)
                                )?,
                            }
                        }
                    }
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
