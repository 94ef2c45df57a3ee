//! The answers of `what-if` and `explain`: lb-core's [`WhatIf`] and [`Explain`], with the pool
//! they are about, written as the REPL, the admin endpoint and `lb ctl` print them.

use std::fmt;
use std::net::IpAddr;

use lb_core::{Explain, Inputs, Load, PassReason, Serving, WhatIf};

use super::stats::format_duration;

/// What a change would do to a pool (`what-if <command>`).
#[derive(Debug, Clone, PartialEq)]
pub struct WhatIfReply {
    /// The pool asked about.
    pub pool: String,
    /// The change, as a command.
    pub command: String,
    /// lb-core's answer.
    pub what_if: WhatIf,
}

/// Which backend a client's next connection would get, and why (`explain <client-ip>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplainReply {
    /// The pool asked about.
    pub pool: String,
    /// The client's address.
    pub client: IpAddr,
    /// lb-core's answer.
    pub explain: Explain,
}

/// A share (0 to 1) as a percentage with two decimals.
fn percent(share: f64) -> String {
    format!("{:.2}%", share * 100.0)
}

fn serving(s: Serving) -> &'static str {
    match s {
        Serving::Primaries => "primaries",
        Serving::Backups => "backups (no primary is available)",
        Serving::Panic => "every ready primary regardless of health (panic)",
        Serving::Nobody => "nobody (no backend can take a connection)",
    }
}

impl fmt::Display for WhatIfReply {
    /// The moved share with its exact fraction, then a row per backend: table share and share
    /// of new connections, before -> after.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = &self.what_if;
        writeln!(f, "what-if {} (pool {}): nothing changed", self.command, self.pool)?;
        if w.algorithm_before != w.algorithm_after {
            writeln!(f, "algorithm {} -> {}", w.algorithm_before, w.algorithm_after)?;
        }
        if w.serving_before != w.serving_after {
            writeln!(
                f,
                "new connections go to {} -> {}",
                serving(w.serving_before),
                serving(w.serving_after)
            )?;
        }
        if w.key_space == 0 {
            writeln!(
                f,
                "ip_hash clients that would change backend: none (no backend before or after)"
            )?;
        } else {
            writeln!(
                f,
                "ip_hash clients that would change backend: {} ({} of {} keys, exact)",
                percent(w.moved_share()),
                w.moved_keys,
                w.key_space
            )?;
        }
        let width = w.backends.iter().map(|b| b.addr.to_string().len()).max().unwrap_or(0).max(7);
        write!(f, "{:<width$}  {:>19}  {:>19}", "BACKEND", "IP_HASH_KEYS", "NEW_CONNECTIONS")?;
        for b in &w.backends {
            let table = format!("{} -> {}", percent(b.table_before), percent(b.table_after));
            let share = format!("{} -> {}", percent(b.share_before), percent(b.share_after));
            write!(f, "\n{:<width$}  {table:>19}  {share:>19}", b.addr.to_string())?;
        }
        Ok(())
    }
}

fn loads(f: &mut fmt::Formatter<'_>, loads: &[Load]) -> fmt::Result {
    for l in loads {
        writeln!(f, "  {}  {} active, weight {}", l.backend.addr, l.active, l.weight)?;
    }
    Ok(())
}

impl fmt::Display for PassWhy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            PassReason::Down { since, reason } => {
                f.write_str("down")?;
                if let Some(since) = since {
                    let ago = std::time::Instant::now().saturating_duration_since(*since);
                    write!(f, " for {}", format_duration(ago))?;
                }
                match reason {
                    Some(reason) => write!(f, ": {reason}"),
                    None => Ok(()),
                }
            }
            PassReason::Draining => f.write_str("draining"),
            PassReason::Maint => f.write_str("in maintenance"),
            PassReason::Standby => f.write_str("a backup, idle while primaries serve"),
            PassReason::NotServing => f.write_str("a primary, while the backups serve"),
            PassReason::AtLimit { active, limit } => {
                write!(f, "at its connection limit ({active} of {limit})")
            }
            PassReason::OverBound { active, bound } => {
                write!(f, "over the bounded-load bound ({active} active, bound {bound})")
            }
        }
    }
}

/// A [`PassReason`] in words.
struct PassWhy<'a>(&'a PassReason);

/// A [`PassReason`] in words, as `explain` writes it.
pub(crate) fn pass_reason_text(reason: &PassReason) -> String {
    PassWhy(reason).to_string()
}

impl fmt::Display for ExplainReply {
    /// The chosen backend, the algorithm's inputs, every backend passed over with its reason,
    /// the slow-start weights, and whether backups or panic took over.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.explain;
        match &e.chosen {
            Some(b) => writeln!(
                f,
                "explain {} (pool {}): next connection -> {}",
                self.client, self.pool, b.addr
            )?,
            None => writeln!(
                f,
                "explain {} (pool {}): no backend would take it",
                self.client, self.pool
            )?,
        }
        writeln!(f, "algorithm {}; new connections go to {}", e.algorithm, serving(e.serving))?;
        match &e.inputs {
            Inputs::Nothing => writeln!(f, "nothing to pick from")?,
            Inputs::RoundRobin { cursor, cycle_len, position } => writeln!(
                f,
                "round robin: cursor {cursor}, entry {position} of a weighted cycle of {cycle_len}"
            )?,
            Inputs::LeastConnections { start, loads: l } => {
                writeln!(f, "least connections per weight, ties to the first from entry {start}:")?;
                loads(f, l)?;
            }
            Inputs::Random => writeln!(
                f,
                "random: a weighted draw; this answer is one sample, the real pick draws again"
            )?,
            Inputs::P2c { loads: l } => {
                writeln!(
                    f,
                    "p2c: two weighted draws, the less loaded per weight wins; this answer is one sample, the real pick draws again:"
                )?;
                loads(f, l)?;
            }
            Inputs::IpHash { hash, slot, table_len, preference, bounded } => {
                let order: Vec<String> = preference.iter().map(|b| b.addr.to_string()).collect();
                writeln!(
                    f,
                    "ip_hash: hash {hash:#018x}, Maglev slot {slot} of {table_len}; preference {}",
                    order.join(", ")
                )?;
                if let Some(b) = bounded {
                    write!(
                        f,
                        "bounded load {}%: {} active over weight {}",
                        b.factor, b.total_active, b.total_weight
                    )?;
                    if let Some((first, active, bound)) = &b.first_choice {
                        write!(f, "; first choice {} has {active} (bound {bound})", first.addr)?;
                    }
                    writeln!(
                        f,
                        "{}",
                        if b.cut { ": cut, the client goes further" } else { ": within" }
                    )?;
                }
            }
        }
        for (b, pct) in &e.ramping {
            writeln!(f, "slow start: {} at {pct}% of weight {}", b.addr, b.weight)?;
        }
        if e.passed_over.is_empty() {
            f.write_str("passed over: none")
        } else {
            f.write_str("passed over:")?;
            for p in &e.passed_over {
                write!(f, "\n  {}  {}", p.backend.addr, PassWhy(&p.reason))?;
            }
            Ok(())
        }
    }
}
