//! `reload` (at the prompt or through the command grammar) and SIGHUP: re-read the `--config`
//! file and bring the running balancer in line with it.
//!
//! The file (under the flags, as at start-up) is the whole truth about the backend list, their
//! weights and admin states, and the algorithm: a reload adds, removes and changes backends until
//! the pool matches it, which also undoes changes made at the prompt since. Everything is checked
//! first (syntax, keys, values, name resolution, duplicates) and only then applied, so a bad
//! file changes nothing. Open connections are never touched: a removed backend's connections
//! finish on their own ([`Pool::remove`]). Settings the running balancer cannot change (the
//! listening address, timeouts, health checking, limits, logging) are reported as needing a
//! restart rather than silently ignored.
//!
//! What changes in the pool is [`crate::plan`]'s.

use std::net::SocketAddr;
use std::path::PathBuf;

use lb_core::{HealthConfig, Pool};

use crate::config::{self, Given};
use crate::plan::{needs_restart, resolve, wanted, Plan};
use crate::settings::Settings;

/// Everything a reload needs, kept from start-up.
#[derive(Debug)]
pub(crate) struct Reloader {
    /// The `--config` file.
    pub(crate) path: PathBuf,
    /// The command line as parsed (flags and defaults), before any file.
    pub(crate) cli: Settings,
    /// Which flags the user typed: they still beat the file.
    pub(crate) given: Given,
    /// The settings the balancer started with, to tell which changes need a restart.
    pub(crate) running: Settings,
    /// The addresses the `--demo` backends given with port 0 got, in order: the n-th port-0
    /// backend in a reloaded file is the n-th of these (the demo backends are not restarted).
    pub(crate) demo_ports: Vec<SocketAddr>,
    /// The running pool.
    pub(crate) pool: Pool,
    /// Two reloads at once (SIGHUP during `reload`) would plan from the same state and then
    /// both apply; one at a time, the second finds nothing left to do.
    pub(crate) one_at_a_time: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// Re-reads the file and applies the difference; the answer summarises what changed, or
    /// says why nothing did.
    pub(crate) async fn reload(&self) -> Result<String, String> {
        let _one = self.one_at_a_time.lock().await;
        let file = config::load(&self.path)?;
        if file.backends.is_none() && !self.given.has("backends") {
            // An empty or truncated file (a half-written save) would otherwise swap every
            // backend for the built-in 127.0.0.1:8001-8003.
            return Err(format!(
                "{} lists no backends ([[backend]] tables); the built-in defaults apply only at \
                 start-up, never on reload",
                self.path.display()
            ));
        }
        let next = self.cli.merge(&self.given, &file);
        let mut addrs = resolve(&next.backends).await?;
        let mut demo = self.demo_ports.iter();
        for (spec, addr) in next.backends.iter().zip(&mut addrs) {
            if spec.target.port == 0 {
                *addr = *demo.next().ok_or_else(|| {
                    format!(
                        "backend {}: port 0 is only allowed with --demo, for as many demo \
                         backends as were started",
                        spec.target
                    )
                })?;
            }
        }
        let wanted = wanted(&next.backends, &addrs)?;
        // Nothing has been changed up to here; from here on nothing can fail but a race with a
        // command at the prompt.
        let plan = Plan::new(&self.pool.stats(), &wanted, next.algorithm);
        let failed = plan.apply(&self.pool);
        // Pool settings that apply to the next connection or check, so they need no restart.
        let mut live = Vec::new();
        let running = self.pool.config();
        if (running.health.rise, running.health.fall) != (next.rise, next.fall) {
            let health = HealthConfig { rise: next.rise, fall: next.fall, ..running.health };
            self.pool.set_health_config(health).map_err(|e| e.to_string())?;
            live.push(format!(
                "rise/fall {}/{}->{}/{}",
                running.health.rise, running.health.fall, next.rise, next.fall
            ));
        }
        let limit = next.max_connections_per_backend.0;
        if running.max_connections_per_backend != limit {
            self.pool.set_max_connections_per_backend(limit);
            let show = |l: Option<u64>| l.map_or("unlimited".to_owned(), |n| n.to_string());
            live.push(format!(
                "max-connections-per-backend {}->{}",
                show(running.max_connections_per_backend),
                show(limit)
            ));
        }
        let changes = match (plan.is_empty(), live.is_empty()) {
            (true, false) => live.join(", "),
            (false, false) => format!("{plan}, {}", live.join(", ")),
            _ => plan.to_string(),
        };
        let mut answer = format!("reloaded {}: {changes}", self.path.display());
        if self.given.has("backends") {
            answer.push_str("; backends from the --backend flags, not the file");
        }
        let restart = needs_restart(&self.running, &next);
        if !restart.is_empty() {
            answer.push_str(&format!("; needs a restart: {}", restart.join(", ")));
        }
        if !failed.is_empty() {
            answer.push_str(&format!("; not applied (changed meanwhile): {}", failed.join(", ")));
        }
        Ok(answer)
    }
}
