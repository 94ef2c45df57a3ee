//! `reload` (at the prompt or through the command grammar) and SIGHUP: re-read the `--config`
//! file and bring the running balancer in line with it.
//!
//! The file (under the flags, as at start-up) is the whole truth about the pools and the
//! listeners. Everything is checked first: the file (syntax, keys, values, the rules across
//! tables), every backend of every pool resolved ([`crate::plan`]), every new listener address
//! bound. Only then is anything changed, so a bad file or an address that cannot be bound
//! changes nothing. Then, in an order that never leaves a listener without its pool:
//!
//! 1. pools new in the file are added; the others are brought to the file ([`Plan`]: backends,
//!    weights, admin states, algorithm), with their thresholds, per-backend limit and
//!    [`lb_net::PoolSettings`] (timeouts, retries, health checks);
//! 2. new listeners start on their sockets; a listener whose address changed is replaced by
//!    one on the new sockets; one whose routes or options changed gets them; listeners no
//!    longer in the file stop accepting (their open connections finish);
//! 3. pools no longer in the file go, their connections finishing on their own.
//!
//! Process-wide settings (logging, workers, the global limit, the admin endpoint, ...) are
//! reported as needing a restart rather than silently ignored.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use lb_core::HealthConfig;
use lb_net::{ListenerConfig, PoolSettings, Routing, DEFAULT_POOL};

use crate::config::{self, Given};
use crate::plan::{needs_restart, resolve, wanted, Plan, Wanted};
use crate::services::{routing_text, PoolSpec, Services};
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
    /// The addresses the `--demo` backends given with port 0 got, in order over every pool:
    /// the n-th port-0 backend in a reloaded file is the n-th of these (the demo backends are
    /// not restarted).
    pub(crate) demo_ports: Vec<SocketAddr>,
    /// The running balancer.
    pub(crate) handle: lb_net::Handle,
    /// Two reloads at once (SIGHUP during `reload`) would plan from the same state and then
    /// both apply; one at a time, the second finds nothing left to do.
    pub(crate) one_at_a_time: tokio::sync::Mutex<()>,
}

/// What a reload does to one listener.
enum ListenerChange {
    /// A listener new in the file, on sockets bound in the check.
    Add(ListenerConfig, Vec<TcpListener>),
    /// A listener whose address changed: it goes, and one on the new sockets takes its place.
    Move { config: ListenerConfig, sockets: Vec<TcpListener>, from: Option<SocketAddr> },
    /// New routes or options at the same address.
    Set { old: ListenerConfig, new: ListenerConfig },
    /// A listener no longer in the file.
    Remove(String),
}

/// What a reload did, for the answer.
#[derive(Default)]
struct Report {
    /// What changed, pool by pool and listener by listener.
    done: Vec<String>,
    /// What was checked but could not be applied: a command at the prompt changed the same
    /// thing in between.
    failed: Vec<String>,
}

impl Report {
    fn check(&mut self, what: impl FnOnce() -> String, result: Result<(), lb_net::Error>) -> bool {
        match result {
            Ok(()) => true,
            Err(e) => {
                self.failed.push(format!("{}: {e}", what()));
                false
            }
        }
    }
}

impl Reloader {
    /// Re-reads the file and applies the difference; the answer summarises what changed, or
    /// says why nothing did.
    pub(crate) async fn reload(&self) -> Result<String, String> {
        let _one = self.one_at_a_time.lock().await;
        let file = config::load(&self.path)?;
        if file.pools.is_empty() && file.settings.backends.is_none() && !self.given.has("backends")
        {
            // An empty or truncated file (a half-written save) would otherwise swap every
            // backend for the built-in 127.0.0.1:8001-8003.
            return Err(format!(
                "{} lists no backends ([[backend]] tables); the built-in defaults apply only at \
                 start-up, never on reload",
                self.path.display()
            ));
        }
        let next = self.cli.merge(&self.given, &file.settings);
        let services = Services::new(&next, &self.given, Some(&file))?;
        let wanted = self.resolve(&services).await?;
        let running_pools = self.handle.pool_names();
        // Pools new in the file are built now, so that nothing below can fail on one.
        let new_pools = services
            .pools
            .iter()
            .zip(&wanted)
            .map(|(spec, wanted)| {
                (!running_pools.contains(&spec.name)).then(|| spec.build(wanted)).transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let listeners = self.bind_listeners(&services).await?;
        // Nothing has been changed up to here; from here on nothing can fail but a race with a
        // command at the prompt.
        let mut report = Report::default();
        // The shorthand's one pool, before and after: answered as before pools existed.
        let one_pool = running_pools == [DEFAULT_POOL]
            && services.pools.len() == 1
            && services.pool(DEFAULT_POOL).is_some();
        for ((spec, wanted), new) in services.pools.iter().zip(&wanted).zip(new_pools) {
            let Some(pool) = new else {
                let changes = self.update_pool(spec, wanted, &mut report).join(", ");
                match changes.as_str() {
                    "" => {}
                    _ if one_pool => report.done.push(changes),
                    _ => report.done.push(format!("pool {}: {changes}", spec.name)),
                }
                continue;
            };
            let added = self.handle.add_pool(&spec.name, pool, spec.pool_settings());
            if report.check(|| format!("pool {}", spec.name), added) {
                let n = wanted.len();
                let s = if n == 1 { "" } else { "s" };
                report.done.push(format!("pool {} added ({n} backend{s})", spec.name));
            }
        }
        for change in listeners {
            self.apply(change, &mut report);
        }
        for name in running_pools.iter().filter(|name| services.pool(name).is_none()) {
            if report.check(|| format!("pool {name}"), self.handle.remove_pool(name)) {
                report.done.push(format!("pool {name} removed"));
            }
        }
        let changes =
            if report.done.is_empty() { "no changes".into() } else { report.done.join("; ") };
        let mut answer = format!("reloaded {}: {changes}", self.path.display());
        if self.given.has("backends") {
            answer.push_str("; backends from the --backend flags, not the file");
        }
        let restart = needs_restart(&self.running, &next);
        if !restart.is_empty() {
            answer.push_str(&format!("; needs a restart: {}", restart.join(", ")));
        }
        if !report.failed.is_empty() {
            let failed = report.failed.join(", ");
            answer.push_str(&format!("; not applied (changed meanwhile): {failed}"));
        }
        Ok(answer)
    }

    /// Resolves every pool's backends (all or nothing), port-0 ones standing for the demo
    /// backends started for them, and checks each pool's list for duplicates.
    async fn resolve(&self, services: &Services) -> Result<Vec<Vec<Wanted>>, String> {
        let mut demo = self.demo_ports.iter();
        let mut all = Vec::with_capacity(services.pools.len());
        for spec in &services.pools {
            let backends = &spec.settings.backends;
            let mut addrs = resolve(backends).await.map_err(|e| spec.about(e))?;
            for (backend, addr) in backends.iter().zip(&mut addrs) {
                if backend.target.port == 0 {
                    *addr = *demo.next().ok_or_else(|| {
                        spec.about(format!(
                            "backend {}: port 0 is only allowed with --demo, for as many demo \
                             backends as were started",
                            backend.target
                        ))
                    })?;
                }
            }
            all.push(wanted(backends, &addrs).map_err(|e| spec.about(e))?);
        }
        Ok(all)
    }

    /// What to do with each listener; a listener at a new address gets its sockets bound
    /// here, so that an address that cannot be bound is found before anything changes.
    async fn bind_listeners(&self, services: &Services) -> Result<Vec<ListenerChange>, String> {
        let running = self.handle.listeners();
        let mut changes = Vec::new();
        for spec in &services.listeners {
            let addr = spec.resolve().await?;
            let current = running.iter().find(|(c, _)| c.name == spec.config.name);
            if let Some((config, Some(bound))) = current {
                // Port 0 asks for any free port: the one it has is as good.
                if bound.ip() == addr.ip() && (addr.port() == 0 || addr.port() == bound.port()) {
                    if *config != spec.config {
                        changes.push(ListenerChange::Set {
                            old: config.clone(),
                            new: spec.config.clone(),
                        });
                    }
                    continue;
                }
            }
            let taken = running.iter().find(|(c, bound)| {
                c.name != spec.config.name && addr.port() != 0 && *bound == Some(addr)
            });
            if let Some((other, _)) = taken {
                return Err(spec.about(format!(
                    "cannot listen on {addr}: listener {} listens there (one reload cannot hand \
                     an address from one listener to another: remove that one first)",
                    other.name
                )));
            }
            let sockets = spec.bind(addr, self.running.workers)?;
            let config = spec.config.clone();
            changes.push(match current {
                None => ListenerChange::Add(config, sockets),
                Some((_, from)) => ListenerChange::Move { config, sockets, from: *from },
            });
        }
        for (config, _) in &running {
            if !services.listeners.iter().any(|s| s.config.name == config.name) {
                changes.push(ListenerChange::Remove(config.name.clone()));
            }
        }
        Ok(changes)
    }

    /// Applies one listener's change.
    fn apply(&self, change: ListenerChange, report: &mut Report) {
        let handle = &self.handle;
        let local = |sockets: &[TcpListener]| {
            sockets.first().and_then(|s| s.local_addr().ok()).map_or("?".into(), |a| a.to_string())
        };
        match change {
            ListenerChange::Add(config, sockets) => {
                let (name, at) = (config.name.clone(), local(&sockets));
                if report.check(|| format!("listener {name}"), handle.add_listener(config, sockets))
                {
                    report.done.push(format!("listener {name} added on {at}"));
                }
            }
            ListenerChange::Move { config, sockets, from } => {
                let (name, to) = (config.name.clone(), local(&sockets));
                // The new sockets are already listening: clients queue there meanwhile.
                let moved = handle
                    .remove_listener(&name)
                    .and_then(|()| handle.add_listener(config, sockets));
                if report.check(|| format!("listener {name}"), moved) {
                    let from = from.map_or("?".into(), |a| a.to_string());
                    report.done.push(format!("listener {name} moved from {from} to {to}"));
                }
            }
            ListenerChange::Set { old, new } => {
                let what = listener_changes(&old, &new);
                let name = new.name.clone();
                if report.check(|| format!("listener {name}"), handle.set_listener(new)) {
                    report.done.push(format!("listener {name}: {what}"));
                }
            }
            ListenerChange::Remove(name) => {
                if report.check(|| format!("listener {name}"), handle.remove_listener(&name)) {
                    report.done.push(format!("listener {name} removed"));
                }
            }
        }
    }

    /// Brings a running pool to the file: its backends and algorithm ([`Plan`]), thresholds,
    /// per-backend limit and [`PoolSettings`]. Returns what changed.
    fn update_pool(&self, spec: &PoolSpec, wanted: &[Wanted], report: &mut Report) -> Vec<String> {
        let Some(pool) = self.handle.pool_named(&spec.name) else {
            report.failed.push(format!("pool {}: removed meanwhile", spec.name));
            return Vec::new();
        };
        let next = &spec.settings;
        let plan = Plan::new(&pool.stats(), wanted, next.algorithm);
        report.failed.extend(plan.apply(&pool).into_iter().map(|f| spec.about(f)));
        let mut changes = if plan.is_empty() { Vec::new() } else { vec![plan.to_string()] };
        // Settings that apply to the next connection or check, so they need no restart.
        let running = pool.config();
        if (running.health.rise, running.health.fall) != (next.rise, next.fall) {
            let health = HealthConfig { rise: next.rise, fall: next.fall, ..running.health };
            match pool.set_health_config(health) {
                Ok(()) => changes.push(format!(
                    "rise/fall {}/{}->{}/{}",
                    running.health.rise, running.health.fall, next.rise, next.fall
                )),
                Err(e) => report.failed.push(spec.about(format!("rise/fall: {e}"))),
            }
        }
        let limit = next.max_connections_per_backend.0;
        if running.max_connections_per_backend != limit {
            pool.set_max_connections_per_backend(limit);
            let show = |l: Option<u64>| l.map_or("unlimited".to_owned(), |n| n.to_string());
            changes.push(format!(
                "max-connections-per-backend {}->{}",
                show(running.max_connections_per_backend),
                show(limit)
            ));
        }
        let settings = spec.pool_settings();
        if let Some(old) = self.handle.pool_settings(&spec.name).filter(|old| *old != settings) {
            let what = settings_changes(&old, &settings);
            let set = self.handle.set_pool_settings(&spec.name, settings);
            if report.check(|| spec.about("settings"), set) {
                changes.extend(what);
            }
        }
        changes
    }
}

/// What differs between two pool settings, each as `key old->new` (the file's keys).
fn settings_changes(old: &PoolSettings, new: &PoolSettings) -> Vec<String> {
    let check = |s: &PoolSettings| match (s.health.enabled, &s.health.kind) {
        (false, _) => "off".to_owned(),
        (true, kind) => kind.to_string(),
    };
    let idle = |s: &PoolSettings| s.idle_timeout.map_or("off".into(), show_duration);
    let pairs = [
        ("health-interval", show_duration(old.health.interval), show_duration(new.health.interval)),
        ("health-timeout", show_duration(old.health.timeout), show_duration(new.health.timeout)),
        ("health-check", check(old), check(new)),
        ("connect-timeout", show_duration(old.connect_timeout), show_duration(new.connect_timeout)),
        ("idle-timeout", idle(old), idle(new)),
        ("retries", old.retries.to_string(), new.retries.to_string()),
    ];
    let mut changes: Vec<String> = pairs
        .into_iter()
        .filter(|(_, old, new)| old != new)
        .map(|(key, old, new)| format!("{key} {old}->{new}"))
        .collect();
    if changes.is_empty() {
        // A setting lb-net has and the file does not (yet) name.
        changes.push("pool settings".into());
    }
    changes
}

/// What differs between two settings of a listener.
fn listener_changes(old: &ListenerConfig, new: &ListenerConfig) -> String {
    let mut what = Vec::new();
    match (&old.routing, &new.routing) {
        (a, b) if a == b => {}
        (Routing::Pool(a), Routing::Pool(b)) => what.push(format!("pool {a}->{b}")),
        _ => what.push(format!("routes now {}", routing_text(new))),
    }
    if old.accept_proxy != new.accept_proxy {
        what.push(format!("accept-proxy {}->{}", old.accept_proxy, new.accept_proxy));
    }
    if old.inspect_timeout != new.inspect_timeout {
        let (a, b) = (show_duration(old.inspect_timeout), show_duration(new.inspect_timeout));
        what.push(format!("inspect-timeout {a}->{b}"));
    }
    if what.is_empty() {
        what.push("settings changed".into());
    }
    what.join(", ")
}

/// A duration as the file writes it: `500ms`, `2s`, `5m`, `1m30s`, `1h`.
fn show_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let parts = [
        (secs / 3600, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
        (u64::from(d.subsec_millis()), "ms"),
    ];
    let text: String =
        parts.iter().filter(|(n, _)| *n > 0).map(|(n, unit)| format!("{n}{unit}")).collect();
    if text.is_empty() {
        "0s".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_back_as_written() {
        for text in ["500ms", "2s", "5m", "1m30s", "1h", "2h5m", "1s250ms", "0s"] {
            let d = crate::args::parse_duration(text).unwrap();
            assert_eq!(show_duration(d), text);
        }
    }

    #[test]
    fn changed_pool_settings_are_named_by_their_keys() {
        let old = PoolSettings::default();
        let mut new = old.clone();
        new.retries = 0;
        new.idle_timeout = None;
        new.health.enabled = false;
        new.connect_timeout = Duration::from_millis(1500);
        assert_eq!(
            settings_changes(&old, &new),
            [
                "health-check tcp->off",
                "connect-timeout 2s->1s500ms",
                "idle-timeout 5m->off",
                "retries 2->0"
            ]
        );
    }

    #[test]
    fn listener_changes_say_what_changed() {
        let old = ListenerConfig::to_pool("in", "web");
        let mut new = ListenerConfig::to_pool("in", "api");
        assert_eq!(listener_changes(&old, &new), "pool web->api");
        new.accept_proxy = true;
        new.inspect_timeout = Duration::from_secs(2);
        assert_eq!(
            listener_changes(&old, &new),
            "pool web->api, accept-proxy false->true, inspect-timeout 5s->2s"
        );
    }
}
