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

use lb_core::HealthConfig;
use lb_net::{ListenerConfig, Routing, DEFAULT_LISTENER, DEFAULT_POOL};

use crate::config::{self, Given};
use crate::plan::{needs_restart, resolve, wanted, Plan, Wanted};
use crate::services::{about, check_overlaps, routing_text, ListenSpec, PoolSpec, Services};
use crate::settings::{Key, Scope, Settings};
use crate::show::Show;

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
    /// The pools and listeners as last applied (at start-up, then by each reload), whose
    /// settings the answer compares the file's with: only a reload changes them (the prompt
    /// changes backends and algorithms, which a plan compares with what runs). Locked for the
    /// whole reload: two at once (SIGHUP during `reload`) would plan from the same state and
    /// both apply; one at a time, the second finds nothing left to do.
    pub(crate) applied: tokio::sync::Mutex<Services>,
}

/// What a reload does to one listener.
enum ListenerChange {
    /// A listener new in the file, on sockets bound in the check.
    Add(ListenerConfig, Vec<TcpListener>),
    /// A listener whose address changed: it goes, and one on the new sockets takes its place;
    /// and what else changed (empty for nothing).
    Move {
        config: ListenerConfig,
        sockets: Vec<TcpListener>,
        from: Option<SocketAddr>,
        what: String,
    },
    /// New routes or options at the same address, and what changed.
    Set { new: ListenerConfig, what: String },
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

/// Reads the file and checks it into the services it describes under the flags: everything a
/// reload needs from the file, with no part of the running balancer touched.
fn read(
    path: &std::path::Path,
    cli: &Settings,
    given: &Given,
) -> Result<(config::File, Settings, Services), String> {
    let file = config::load(path)?;
    let no_list = file.settings.backends.is_none() && !given.has("backends");
    let no_dns = file.settings.discover.is_none() && !given.has("discover");
    if file.pools.is_empty() && no_list && no_dns {
        // An empty or truncated file (a half-written save) would otherwise swap every backend
        // for the built-in 127.0.0.1:8001-8003.
        return Err(format!(
            "{} lists no backends ([[backend]] tables, or discover); the built-in defaults \
             apply only at start-up, never on reload",
            path.display()
        ));
    }
    let next = cli.merge(given, &file.settings);
    let services = Services::new(&next, given, Some(&file))?;
    Ok((file, next, services))
}

impl Reloader {
    /// Re-reads the file and applies the difference; the answer summarises what changed, or
    /// says why nothing did.
    pub(crate) async fn reload(&self) -> Result<String, String> {
        let mut applied = self.applied.lock().await;
        // Reading and checking the file is most of a reload's CPU at thousands of backends
        // (about half of 33 ms at 10,000): on a thread of its own, so the control thread's
        // health checks, commands and admin requests go on meanwhile.
        let (path, cli, given) = (self.path.clone(), self.cli.clone(), self.given.clone());
        let (file, next, services) = tokio::task::spawn_blocking(move || read(&path, &cli, &given))
            .await
            .map_err(|e| format!("reading {} stopped unexpectedly: {e}", self.path.display()))??;
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
        let listeners = self.bind_listeners(&services, &applied).await?;
        // Nothing has been changed up to here; from here on nothing can fail but a race with a
        // command at the prompt.
        let mut report = Report::default();
        // The shorthand's one pool, before and after: answered as before pools existed.
        let one_pool = running_pools == [DEFAULT_POOL]
            && services.pools.len() == 1
            && services.pool(DEFAULT_POOL).is_some();
        for ((spec, wanted), new) in services.pools.iter().zip(&wanted).zip(new_pools) {
            let Some(pool) = new else {
                let before = applied.pools.iter().find(|p| p.name == spec.name);
                let changes = self.update_pool(spec, before, wanted, &mut report).await;
                let changes = changes.join(", ");
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
                let mut done = format!("pool {} added ({n} backend{s}", spec.name);
                if let Some(discovery) = spec.discovery_config() {
                    let source = discovery.describe();
                    match self.handle.set_discovery(&spec.name, Some(discovery)).await {
                        Ok(first) => {
                            let first = first.unwrap_or_default();
                            done.push_str(&format!(", discover {source}: {first}"));
                        }
                        Err(e) => report.failed.push(format!("pool {}: {e}", spec.name)),
                    }
                }
                report.done.push(done + ")");
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
        let pools = services.pools.iter().flat_map(crate::services::PoolSpec::warnings);
        for warning in file.warnings().into_iter().chain(pools) {
            answer.push_str(&format!("; warning: {warning}"));
        }
        *applied = services;
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
    /// `applied` has the listeners' settings as last applied, for what changed.
    async fn bind_listeners(
        &self,
        services: &Services,
        applied: &Services,
    ) -> Result<Vec<ListenerChange>, String> {
        let running = self.handle.listeners();
        let mut addrs = Vec::with_capacity(services.listeners.len());
        for spec in &services.listeners {
            addrs.push(spec.resolve().await?);
        }
        check_overlaps(&services.listeners, &addrs)?;
        let mut changes = Vec::new();
        for (spec, addr) in services.listeners.iter().zip(addrs) {
            let current = running.iter().find(|(c, _)| c.name == spec.config.name);
            if let Some((config, Some(bound))) = current {
                // Port 0 asks for any free port: the one it has is as good.
                if bound.ip() == addr.ip() && (addr.port() == 0 || addr.port() == bound.port()) {
                    if *config != spec.config {
                        let before =
                            applied.listeners.iter().find(|l| l.config.name == config.name);
                        changes.push(ListenerChange::Set {
                            new: spec.config.clone(),
                            what: listener_changes(config, before, spec),
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
                Some((old, from)) => {
                    let before = applied.listeners.iter().find(|l| l.config.name == old.name);
                    let what = listener_changes(old, before, spec);
                    ListenerChange::Move { config, sockets, from: *from, what }
                }
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
            ListenerChange::Move { config, sockets, from, what } => {
                let (name, to) = (config.name.clone(), local(&sockets));
                // The new sockets are already listening: clients queue there meanwhile.
                let moved = handle
                    .remove_listener(&name)
                    .and_then(|()| handle.add_listener(config, sockets));
                if report.check(|| format!("listener {name}"), moved) {
                    let from = from.map_or("?".into(), |a| a.to_string());
                    let also = if what.is_empty() { String::new() } else { format!(", {what}") };
                    report.done.push(format!("listener {name} moved from {from} to {to}{also}"));
                }
            }
            ListenerChange::Set { new, what } => {
                let name = new.name.clone();
                if report.check(|| format!("listener {name}"), handle.set_listener(new)) {
                    // The shorthand's listener reads as a one-listener lb's always has.
                    report.done.push(about("listener", &name, DEFAULT_LISTENER, what));
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
    /// per-backend limit and [`lb_net::PoolSettings`]. Returns what changed: the plan, and each
    /// setting whose value differs from `before` (the pool as last applied).
    async fn update_pool(
        &self,
        spec: &PoolSpec,
        before: Option<&PoolSpec>,
        wanted: &[Wanted],
        report: &mut Report,
    ) -> Vec<String> {
        let Some(pool) = self.handle.pool_named(&spec.name) else {
            report.failed.push(format!("pool {}: removed meanwhile", spec.name));
            return Vec::new();
        };
        let next = &spec.settings;
        // Discovery first: a new source takes over the members the old one found (they go
        // once its first answer is in, or stay if it fails); with none any more, they are no
        // longer DNS's, and the plan removes those the file does not list.
        let mut discovered = Vec::new();
        let discovery = spec.discovery_config();
        if self.handle.discovery_config(&spec.name) != discovery {
            let source = discovery.as_ref().map(|d| d.describe());
            match self.handle.set_discovery(&spec.name, discovery).await {
                Ok(Some(first)) => discovered.push(match source {
                    Some(source) => format!("discover {source}: {first}"),
                    None => "discover stopped".into(),
                }),
                Ok(None) => {}
                Err(e) => report.failed.push(spec.about(e)),
            }
        }
        let dns = self.handle.discovered(&spec.name);
        let plan = Plan::new(&pool.stats(), wanted, next.algorithm, &dns);
        report.failed.extend(plan.apply(&pool).into_iter().map(|f| spec.about(f)));
        let mut changes = if plan.is_empty() { Vec::new() } else { vec![plan.to_string()] };
        changes.append(&mut discovered);
        // Settings that apply to the next connection or check, so they need no restart.
        let running = pool.config();
        if (running.health.rise, running.health.fall) != (next.rise, next.fall) {
            let health = HealthConfig { rise: next.rise, fall: next.fall, ..running.health };
            if let Err(e) = pool.set_health_config(health) {
                report.failed.push(spec.about(format!("rise/fall: {e}")));
            }
        }
        let limit = next.max_connections_per_backend.0;
        if running.max_connections_per_backend != limit {
            pool.set_max_connections_per_backend(limit);
        }
        // Checked by their parsers, so lb-core refuses none of these; a failure is reported
        // all the same rather than dropped.
        if running.panic_threshold != next.panic_threshold {
            let set = pool.set_panic_threshold(next.panic_threshold);
            report.check(|| spec.about("panic-threshold"), set.map_err(lb_net::Error::from));
        }
        if running.slow_start != next.slow_start.0 {
            let set = pool.set_slow_start(next.slow_start.0);
            report.check(|| spec.about("slow-start"), set.map_err(lb_net::Error::from));
        }
        if running.hash_balance_factor != next.hash_balance_factor {
            let set = pool.set_hash_balance_factor(next.hash_balance_factor);
            report.check(|| spec.about("hash-balance-factor"), set.map_err(lb_net::Error::from));
        }
        // Ramps to advance from now, and backups or panic taking over to log.
        self.handle.pool_changed(&spec.name);
        let settings = spec.pool_settings();
        if self.handle.pool_settings(&spec.name).is_some_and(|old| old != settings) {
            let set = self.handle.set_pool_settings(&spec.name, settings);
            report.check(|| spec.about("settings"), set);
        }
        if let Some(before) = before {
            changes.extend(pool_changes(&before.settings, next));
        }
        changes
    }
}

/// The pool-scoped settings that differ, each as `key old->new` in the table's order; but the
/// backends and the algorithm, which the [`Plan`] says (against what runs: the prompt may have
/// changed them), and `rise` and `fall` as one `rise/fall` pair, as lb-core sets them.
fn pool_changes(before: &Settings, next: &Settings) -> Vec<String> {
    let mut changes: Vec<String> = Vec::new();
    for change in before.changes(next, Scope::Pool) {
        let text = match change.key {
            // `discover` is said with what its first lookup did (update_pool).
            Key::backends | Key::algorithm | Key::discover => continue,
            Key::rise | Key::fall => {
                format!("rise/fall {}/{}->{}/{}", before.rise, before.fall, next.rise, next.fall)
            }
            _ => change.to_string(),
        };
        if !changes.contains(&text) {
            changes.push(text);
        }
    }
    changes
}

/// What differs between a running listener (`old`, and `before`, its settings as last
/// applied) and the file's (`next`): where connections go, its inspection, and each
/// listener-scoped setting (`deny none->10.0.0.0/8`).
fn listener_changes(
    old: &ListenerConfig,
    before: Option<&ListenSpec>,
    next: &ListenSpec,
) -> String {
    let new = &next.config;
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
        let (a, b) = (old.inspect_timeout.show(), new.inspect_timeout.show());
        what.push(format!("inspect-timeout {a}->{b}"));
    }
    if let Some(before) = before {
        let changes = before.settings.changes(&next.settings, Scope::Listener);
        what.extend(changes.iter().map(ToString::to_string));
    }
    what.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    fn settings(flags: &[&str]) -> Settings {
        let matches = crate::args::Args::command().try_get_matches_from(flags).unwrap();
        crate::args::Args::from_arg_matches(&matches).unwrap().settings
    }

    #[test]
    fn changed_pool_settings_are_named_by_their_keys() {
        let old = settings(&["lb"]);
        let new = settings(&[
            "lb",
            "--retries",
            "0",
            "--idle-timeout",
            "off",
            "--health-check",
            "off",
            "--connect-timeout",
            "1500ms",
        ]);
        assert_eq!(
            pool_changes(&old, &new),
            [
                "health-check tcp->off",
                "connect-timeout 2s->1s500ms",
                "idle-timeout 5m->off",
                "retries 2->0"
            ]
        );
        // Every one, by its key; rise and fall as the pair lb-core sets; the backends and the
        // algorithm are the plan's to say.
        let new = settings(&[
            "lb",
            "--send-proxy",
            "v2",
            "--server-timeout",
            "1m30s",
            "--retry-on-empty",
            "--fall",
            "5",
            "--algorithm",
            "p2c",
            "--backend",
            "127.0.0.1:9",
            "--deny",
            "10.0.0.0/8",
        ]);
        assert_eq!(
            pool_changes(&old, &new),
            [
                "rise/fall 2/3->2/5",
                "server-timeout 1m->1m30s",
                "retry-on-empty false->true",
                "send-proxy off->v2"
            ]
        );
    }

    #[test]
    fn listener_changes_say_what_changed() {
        let spec = |pool: &str, flags: &[&str]| {
            let config = ListenerConfig::to_pool("in", pool);
            let address = lb_net::Target { host: "127.0.0.1".into(), port: 0 };
            ListenSpec::new(address, config, settings(flags), None)
        };
        let old = spec("web", &["lb"]);
        let mut new = spec("api", &["lb"]);
        assert_eq!(listener_changes(&old.config, Some(&old), &new), "pool web->api");
        new.config.accept_proxy = true;
        new.config.inspect_timeout = std::time::Duration::from_secs(2);
        assert_eq!(
            listener_changes(&old.config, Some(&old), &new),
            "pool web->api, accept-proxy false->true, inspect-timeout 5s->2s"
        );
        let flags = [
            "lb",
            "--allow",
            "10.0.0.0/8,192.0.2.7",
            "--deny",
            "10.9.0.0/16",
            "--max-connections-per-client",
            "20",
            "--max-connection-rate-per-client",
            "5",
            "--port",
            "9000",
        ];
        let limited = spec("web", &flags);
        assert_eq!(
            listener_changes(&old.config, Some(&old), &limited),
            "allow none->10.0.0.0/8,192.0.2.7/32, deny none->10.9.0.0/16, \
             max-connections-per-client unlimited->20, max-connection-rate-per-client \
             unlimited->5"
        );
        assert_eq!(limited.config.admission.max_connections_per_client, Some(20));
        assert_eq!(limited.config.admission.deny[0].to_string(), "10.9.0.0/16");
        let reno = spec("web", &["lb", "--congestion-control", "reno"]);
        assert_eq!(reno.config.congestion_control, lb_net::CongestionControl::Named("reno".into()));
        assert_eq!(
            listener_changes(&old.config, Some(&old), &reno),
            "congestion-control auto->reno"
        );
    }
}
