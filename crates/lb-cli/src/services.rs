//! What a running `lb` is made of: its pools and listeners as the flags and the configuration
//! file describe them ([`Services::new`]), and each as lb-net takes it: a pool's
//! `lb_core::PoolConfig` and [`PoolSettings`], a listener's [`ListenerConfig`], its address
//! resolved and bound. Start-up and reload go through the same functions, so both read a file
//! the same way.
//!
//! The pools are the file's `[[pool]]` tables if there are any, else one pool named `default`
//! from the top-level keys and flags. The listeners are the `[[listen]]` tables if there are
//! any, else one listener named `default` on `host:port`, routing to the pool named `default`
//! or else to the only pool ([`File::shorthand_pool`]).

use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};

use lb_core::{HealthConfig, Pool, PoolConfig};
use lb_net::inspect::proxy_header::Version;
use lb_net::{
    Admission, DiscoveryConfig, HealthCheckConfig, ListenerConfig, PoolSettings, Routing, Target,
    DEFAULT_LISTENER, DEFAULT_POOL,
};

use crate::config::{File, Given};
use crate::plan::Wanted;
use crate::settings::Settings;
use crate::show::Show;
use crate::tables::{ListenTable, PoolTable};

/// The pools and listeners of a running `lb`.
#[derive(Debug, Clone)]
pub(crate) struct Services {
    /// In the file's order.
    pub(crate) pools: Vec<PoolSpec>,
    /// In the file's order.
    pub(crate) listeners: Vec<ListenSpec>,
    /// Whether the one listener is the shorthand's (`host` and `port`, no `[[listen]]`
    /// tables), which keeps the words of a one-listener `lb`.
    pub(crate) shorthand: bool,
}

/// A pool: its name and its settings (a `[[pool]]` table's keys over the top level's).
#[derive(Debug, Clone)]
pub(crate) struct PoolSpec {
    pub(crate) name: String,
    /// Only the pool-scoped settings are this pool's; the others are the top level's.
    pub(crate) settings: Settings,
}

/// A listener: where it listens, as written (port 0: a free port), and its lb-net settings.
#[derive(Debug, Clone)]
pub(crate) struct ListenSpec {
    pub(crate) address: Target,
    /// Its lb-net configuration, `admission` included (from `settings`).
    pub(crate) config: ListenerConfig,
    /// Only the listener-scoped settings are this listener's (a `[[listen]]` table's keys over
    /// the top level's); the others are the top level's.
    pub(crate) settings: Settings,
    /// Where its address is written (`lb.toml line 12`), for messages about it; `None` for the
    /// shorthand's (`--host`/`--port` or the top-level keys).
    pub(crate) written_at: Option<String>,
}

impl Services {
    /// The services that `settings` (the flags over the file's top level, merged) and `file`'s
    /// tables describe; `given` says which flags were typed, as some do not go with some
    /// tables. The file has been checked ([`File::check`]).
    pub(crate) fn new(
        settings: &Settings,
        given: &Given,
        file: Option<&File>,
    ) -> Result<Services, String> {
        let none = File::default();
        let file = file.unwrap_or(&none);
        if let (Some(first), true) = (file.pools.first(), given.has("backends")) {
            return Err(format!(
                "{}: pool: --backend does not go with [[pool]] tables: give each pool its \
                 backends in its table",
                file.place.at(first.at)
            ));
        }
        if let (Some(first), true) =
            (file.listeners.first(), given.has("host") || given.has("port"))
        {
            return Err(format!(
                "{}: listen: --host and --port do not go with [[listen]] tables: each table's \
                 address says where to listen",
                file.place.at(first.at)
            ));
        }
        if let (Some(first), true) = (file.pools.first(), given.has("discover")) {
            return Err(format!(
                "{}: pool: --discover does not go with [[pool]] tables: give each pool that \
                 takes backends from DNS its discover in its table",
                file.place.at(first.at)
            ));
        }
        let pools = if file.pools.is_empty() {
            let mut settings = settings.clone();
            // With DNS for backends, the built-in defaults (127.0.0.1:8001-8003) do not apply:
            // only backends given by flag or file join the discovered ones.
            if settings.discover.is_some()
                && !given.has("backends")
                && file.settings.backends.is_none()
            {
                settings.backends.clear();
            }
            vec![PoolSpec { name: DEFAULT_POOL.into(), settings }]
        } else {
            // A table's keys beat the top level's, typed flags included: those are defaults.
            let table = |t: &PoolTable| {
                let mut settings = settings.merge(&Given::default(), &t.settings);
                if t.settings.backends.is_none() {
                    // A table without a list takes its backends from DNS alone (the file
                    // checks it has discover), never the built-in defaults.
                    settings.backends.clear();
                }
                PoolSpec { name: t.name.value.clone(), settings }
            };
            file.pools.iter().map(|t| table(&t.value)).collect()
        };
        for pool in &pools {
            let s = &pool.settings;
            if s.dns_min_refresh > s.dns_max_refresh {
                return Err(pool.about(format!(
                    "dns-min-refresh {} is above dns-max-refresh {}",
                    s.dns_min_refresh.show(),
                    s.dns_max_refresh.show()
                )));
            }
        }
        let shorthand = file.listeners.is_empty();
        let listeners = if shorthand {
            let pool = file.shorthand_pool().ok_or_else(|| {
                format!("{}: several pools and no [[listen]] tables", file.place.name())
            })?;
            let address = Target { host: settings.host.clone(), port: settings.port };
            let config = ListenerConfig::to_pool(DEFAULT_LISTENER, pool);
            let own = typed_admission(settings.clone(), settings, given, None, file);
            vec![ListenSpec::new(address, config, own, None)]
        } else {
            // As for pools, a table's keys beat the top level's; but who may connect, typed on
            // the command line, is every listener's ([`typed_admission`]).
            let spec = |l: &ListenTable| {
                let own = settings.merge(&Given::default(), &l.settings);
                let own = typed_admission(own, settings, given, Some(l), file);
                let at = Some(file.place.at(l.address.at));
                ListenSpec::new(l.address.value.clone(), l.config.clone(), own, at)
            };
            file.listeners.iter().map(|l| spec(&l.value)).collect()
        };
        Ok(Services { pools, listeners, shorthand })
    }

    /// The index of the pool called `name`.
    pub(crate) fn pool(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.name == name)
    }
}

/// Who may connect to a listener when flags say it: a typed `--allow` or per-client limit
/// beats a `[[listen]]` table's own key (typed at the command line, it is meant for every
/// listener: an operator blocking an attacker in a hurry must not miss one), and a typed
/// `--deny` adds to the ranges the file denies there (the table's own, else the top level's)
/// rather than replacing them: a deny written anywhere keeps applying. `own` is the listener's
/// settings, `typed` the flags over the file's top level.
fn typed_admission(
    mut own: Settings,
    typed: &Settings,
    given: &Given,
    table: Option<&ListenTable>,
    file: &File,
) -> Settings {
    if given.has("allow") {
        own.allow = typed.allow.clone();
    }
    if given.has("max_connections_per_client") {
        own.max_connections_per_client = typed.max_connections_per_client;
    }
    if given.has("max_connection_rate_per_client") {
        own.max_connection_rate_per_client = typed.max_connection_rate_per_client;
    }
    if given.has("deny") {
        let written = table.and_then(|t| t.settings.deny.as_ref()).or(file.settings.deny.as_ref());
        own.deny = typed.deny.iter().chain(written.into_iter().flatten()).copied().collect();
    }
    own
}

impl PoolSpec {
    /// `message` about this pool: as it is for the `default` pool (a one-pool `lb`'s words),
    /// after `pool NAME: ` for the others.
    pub(crate) fn about(&self, message: impl Display) -> String {
        about("pool", &self.name, DEFAULT_POOL, message)
    }

    /// What this pool's settings say that does nothing, one line each: lb runs with it, and
    /// says so (at start-up and in a reload's answer).
    pub(crate) fn warnings(&self) -> Vec<String> {
        let s = &self.settings;
        let mut warnings = Vec::new();
        if s.hash_balance_factor != 0 && s.algorithm != lb_core::Algorithm::IpHash {
            warnings.push(self.about(format!(
                "hash-balance-factor applies only to ip_hash, and the algorithm is {}: it has \
                 no effect unless the algorithm is changed to ip_hash",
                s.algorithm
            )));
        }
        if s.resolver.is_some() && s.discover.is_none() {
            warnings.push(self.about(
                "resolver is the DNS server discover asks, and the pool has no discover: it has \
                 no effect",
            ));
        }
        warnings
    }

    /// The `lb_core` pool's configuration.
    pub(crate) fn pool_config(&self) -> PoolConfig {
        let s = &self.settings;
        PoolConfig {
            algorithm: s.algorithm,
            health: HealthConfig { rise: s.rise, fall: s.fall, ..HealthConfig::default() },
            max_connections_per_backend: s.max_connections_per_backend.0,
            panic_threshold: s.panic_threshold,
            slow_start: s.slow_start.0,
            hash_balance_factor: s.hash_balance_factor,
        }
    }

    /// How lb-net reaches and checks the pool's backends.
    pub(crate) fn pool_settings(&self) -> PoolSettings {
        let s = &self.settings;
        // The header a check starts with matches what the pool's connections carry.
        let check_header = s.check_send_proxy.then(|| s.send_proxy.0.unwrap_or(Version::V2));
        PoolSettings {
            connect_timeout: s.connect_timeout,
            idle_timeout: s.idle_timeout.0,
            client_fin_timeout: s.client_fin_timeout.0,
            server_fin_timeout: s.server_fin_timeout.0,
            server_timeout: s.server_timeout.0,
            retry_on_empty: s.retry_on_empty,
            observe_empty: s.observe_empty,
            retries: s.retries,
            health: HealthCheckConfig {
                interval: s.health_interval,
                timeout: s.health_timeout,
                enabled: s.health_check.0.is_some(),
                kind: s.health_check.0.clone().unwrap_or_default(),
                proxy_header: check_header,
            },
            send_proxy: s.send_proxy.0,
        }
    }

    /// The `lb_core` pool with its backends, not yet in a balancer.
    pub(crate) fn build(&self, wanted: &[Wanted]) -> Result<Pool, String> {
        let pool = Pool::new(self.pool_config()).map_err(|e| self.about(e))?;
        // In one batch, one snapshot for them all. No time: slow start never applies to the
        // backends a pool starts with.
        let added = pool.add_backends(wanted.iter().map(Wanted::add_options), None);
        for (w, result) in wanted.iter().zip(added) {
            result.map_err(|e| self.about(format!("backend {}: {e}", w.addr)))?;
        }
        Ok(pool)
    }

    /// How the pool's members follow DNS, if they do: `discover` with `resolver` and the
    /// refresh bounds.
    pub(crate) fn discovery_config(&self) -> Option<DiscoveryConfig> {
        let s = &self.settings;
        let query = s.discover.clone()?;
        Some(DiscoveryConfig {
            resolver: s.resolver,
            min_refresh: s.dns_min_refresh,
            max_refresh: s.dns_max_refresh,
            ..DiscoveryConfig::new(query)
        })
    }

    /// `name (algorithm): backends`, for the banner and the start-up log; `+ dns:...` after
    /// them for a pool that also takes backends from DNS.
    pub(crate) fn describe(&self, wanted: &[Wanted]) -> String {
        format!("{} ({}): {}", self.name, self.settings.algorithm, backends_text(self, wanted))
    }
}

/// Most backends named in the start-up banner and log line; the rest are counted.
const NAMED: usize = 16;

/// The backends' addresses, comma separated; past [`NAMED`], the first ones and how many more
/// (a pool of 10,000 would otherwise make a start-up line of 170 KB; `stats` lists them all).
pub(crate) fn addresses(wanted: &[Wanted]) -> String {
    let named = wanted.iter().take(NAMED).map(|w| w.addr.to_string()).collect::<Vec<_>>();
    match wanted.len().saturating_sub(NAMED) {
        0 => named.join(", "),
        more => format!("{}, and {more} more", named.join(", ")),
    }
}

/// The listed backends' addresses and, for a pool that also takes backends from DNS, where
/// from: `10.0.0.5:443 + srv:_https._tcp.web`, or `srv:_https._tcp.web` alone.
pub(crate) fn backends_text(spec: &PoolSpec, wanted: &[Wanted]) -> String {
    match (&spec.settings.discover, wanted.is_empty()) {
        (Some(query), true) => query.to_string(),
        (Some(query), false) => format!("{} + {query}", addresses(wanted)),
        (None, _) => addresses(wanted),
    }
}

impl ListenSpec {
    /// A listener on `address` configured by `config`, who may connect taken from `settings`.
    pub(crate) fn new(
        address: Target,
        mut config: ListenerConfig,
        settings: Settings,
        written_at: Option<String>,
    ) -> ListenSpec {
        // In order and once each, so that a reload that only reorders or repeats a range
        // changes nothing.
        let mut settings = settings;
        for ranges in [&mut settings.allow, &mut settings.deny] {
            ranges.sort_unstable_by_key(ToString::to_string);
            ranges.dedup();
        }
        config.admission = Admission {
            allow: settings.allow.clone(),
            deny: settings.deny.clone(),
            max_connections_per_client: settings.max_connections_per_client.0,
            max_connection_rate_per_client: settings.max_connection_rate_per_client.0,
        };
        config.congestion_control = settings.congestion_control.clone();
        ListenSpec { address, config, settings, written_at }
    }

    /// `message` about this listener: as it is for the shorthand's, after `listener NAME: ` for
    /// the others.
    pub(crate) fn about(&self, message: impl Display) -> String {
        about("listener", &self.config.name, DEFAULT_LISTENER, message)
    }

    /// Resolves the address, preferring IPv4 (`localhost` may resolve to ::1 first).
    pub(crate) async fn resolve(&self) -> Result<SocketAddr, String> {
        let addrs = self
            .address
            .resolve()
            .await
            .map_err(|e| self.about(format!("cannot listen on {}: {e}", self.address.host)))?;
        Ok(addrs.iter().find(|a| a.is_ipv4()).copied().unwrap_or(addrs[0]))
    }

    /// Binds one listening socket per worker on `addr` ([`lb_net::bind_shared`]).
    pub(crate) fn bind(
        &self,
        addr: SocketAddr,
        workers: usize,
    ) -> Result<Vec<std::net::TcpListener>, String> {
        lb_net::bind_shared(addr, workers)
            .map_err(|e| self.about(format!("cannot listen on {addr}: {e}")))
    }
}

/// Refuses listeners that would share an address: `addrs[i]` is `listeners[i]`'s, resolved.
/// Two on one port overlap when their addresses are equal or one is the unspecified address
/// of its family (`0.0.0.0` takes every IPv4 address; `::` every address, as it also takes
/// IPv4 on a dual-stack host). Both could be bound (each socket has SO_REUSEPORT), and the
/// kernel would then split clients between them at random. Port 0 never overlaps: each gets a
/// free port of its own.
pub(crate) fn check_overlaps(listeners: &[ListenSpec], addrs: &[SocketAddr]) -> Result<(), String> {
    let overlap = |a: &SocketAddr, b: &SocketAddr| {
        let covers = |wide: &SocketAddr, other: &SocketAddr| match wide.ip() {
            IpAddr::V4(ip) => ip.is_unspecified() && other.is_ipv4(),
            IpAddr::V6(ip) => ip.is_unspecified(),
        };
        a.port() != 0 && a.port() == b.port() && (a.ip() == b.ip() || covers(a, b) || covers(b, a))
    };
    // `[::ffff:127.0.0.1]:80` is 127.0.0.1:80.
    let addrs: Vec<SocketAddr> =
        addrs.iter().map(|a| SocketAddr::new(a.ip().to_canonical(), a.port())).collect();
    for (i, (later, addr)) in listeners.iter().zip(&addrs).enumerate() {
        let earlier = listeners[..i].iter().zip(&addrs).find(|(_, other)| overlap(addr, other));
        if let Some((first, first_addr)) = earlier {
            let place = later.written_at.as_deref().map_or(String::new(), |at| format!("{at}: "));
            return Err(format!(
                "{place}listen.address: {addr} overlaps listener {} on {first_addr}: two \
                 listeners cannot share an address (give each its own port)",
                first.config.name
            ));
        }
    }
    Ok(())
}

/// `message` as is about the `default` `what`, after `what NAME: ` about another.
pub(crate) fn about(what: &str, name: &str, default: &str, message: impl Display) -> String {
    if name == default {
        message.to_string()
    } else {
        format!("{what} {name}: {message}")
    }
}

/// Where a listener sends connections, in words: `pool web`, or its SNI routes
/// (`api.example.com, *.api.example.com -> api; others -> web`).
pub(crate) fn routing_text(config: &ListenerConfig) -> String {
    match &config.routing {
        Routing::Pool(pool) => format!("pool {pool}"),
        Routing::Sni { routes, default_pool } => {
            let mut parts: Vec<String> = routes
                .iter()
                .map(|r| {
                    let names: Vec<String> = r.names.iter().map(ToString::to_string).collect();
                    format!("{} -> {}", names.join(", "), r.pool)
                })
                .collect();
            parts.push(match default_pool {
                Some(pool) => format!("others -> {pool}"),
                None => "others closed".into(),
            });
            parts.join("; ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn services(text: &str, flags: &[&str]) -> Result<Services, String> {
        use clap::{CommandFactory, FromArgMatches};
        let matches = crate::args::Args::command().try_get_matches_from(flags).unwrap();
        let cli = crate::args::Args::from_arg_matches(&matches).unwrap().settings;
        let given = Given::from_matches(&matches);
        let file = parse("lb.toml", text)?;
        Services::new(&cli.merge(&given, &file.settings), &given, Some(&file))
    }

    #[test]
    fn long_backend_lists_are_counted_past_the_first_sixteen() {
        let wanted = |n: u16| -> Vec<Wanted> {
            (0..n)
                .map(|i| Wanted {
                    addr: SocketAddr::from(([10, 0, 0, 1], 8000 + i)),
                    weight: 1,
                    state: lb_core::AdminState::Ready,
                    backup: false,
                })
                .collect()
        };
        assert_eq!(addresses(&wanted(2)), "10.0.0.1:8000, 10.0.0.1:8001");
        assert_eq!(addresses(&wanted(16)).split(", ").count(), 16);
        let long = addresses(&wanted(10_000));
        assert!(long.starts_with("10.0.0.1:8000, "), "{long}");
        assert!(long.ends_with("10.0.0.1:8015, and 9984 more"), "{long}");
    }

    const TWO: &str = r#"
connect-timeout = "5s"
retries = 1

[[pool]]
name = "web"
algorithm = "p2c"
retries = 3
backend = [{ address = "127.0.0.1:8001" }]

[[pool]]
name = "db"
backend = [{ address = "127.0.0.1:8002" }]
"#;

    #[test]
    fn pools_inherit_the_top_level_keys_they_do_not_set() {
        let s = services(
            &format!("{TWO}\n[[listen]]\naddress = \"127.0.0.1:0\"\npool = \"db\"\n"),
            &["lb", "--retries", "2"],
        )
        .unwrap();
        let web = &s.pools[0].settings;
        let db = &s.pools[1].settings;
        // The table's own key beats a typed flag: top-level keys and flags are defaults.
        assert_eq!((web.retries, web.algorithm), (3, lb_core::Algorithm::P2c));
        assert_eq!((db.retries, db.algorithm), (2, lb_core::Algorithm::RoundRobin));
        assert_eq!(db.connect_timeout, std::time::Duration::from_secs(5));
        assert_eq!(s.pools[0].pool_settings().retries, 3);
        assert!(!s.shorthand);
        assert_eq!(s.listeners[0].config.name, "127.0.0.1:0");
        assert_eq!(routing_text(&s.listeners[0].config), "pool db");
    }

    #[test]
    fn the_shorthand_listener_routes_to_default_or_the_only_pool() {
        let one = services(
            "[[pool]]\nname = \"web\"\nbackend = [{ address = \"127.0.0.1:1\" }]\n",
            &["lb"],
        )
        .unwrap();
        assert_eq!(one.listeners[0].config, ListenerConfig::to_pool(DEFAULT_LISTENER, "web"));
        assert_eq!(one.listeners[0].address.to_string(), "localhost:8080");
        let with_default = TWO.replace("\"db\"", "\"default\"");
        let s = services(&with_default, &["lb"]).unwrap();
        assert_eq!(s.listeners[0].config, ListenerConfig::to_pool(DEFAULT_LISTENER, "default"));
        let e = services(TWO, &["lb"]).unwrap_err();
        assert!(
            e.starts_with("lb.toml line 5: pool: 2 pools (web, db) and no [[listen]] tables"),
            "{e}"
        );
        // No tables: today's one pool and one listener.
        let s = services("", &["lb", "--port", "9000"]).unwrap();
        assert_eq!((s.pools.len(), s.pools[0].name.as_str(), s.shorthand), (1, "default", true));
        assert_eq!(s.listeners[0].address.port, 9000);
    }

    #[test]
    fn pools_can_take_their_backends_from_dns() {
        // A table with discover needs no backend list; resolver and bounds come from the
        // table or, as defaults, the top level.
        let text = "resolver = \"127.0.0.1:8600\"\ndns-max-refresh = \"10s\"\n\n[[pool]]\n\
                    name = \"web\"\ndiscover = \"srv:_http._tcp.web.service.consul\"\n\
                    dns-min-refresh = \"2s\"\n";
        let s = services(text, &["lb"]).unwrap();
        let d = s.pools[0].discovery_config().unwrap();
        assert_eq!(d.describe(), "srv:_http._tcp.web.service.consul via 127.0.0.1:8600");
        assert_eq!((d.min_refresh.as_secs(), d.max_refresh.as_secs()), (2, 10));
        assert!(s.pools[0].settings.backends.is_empty());
        // The shorthand: --discover alone drops the built-in default backends; --backend
        // flags stay beside it.
        let s = services("", &["lb", "--discover", "dns:app.internal:8080"]).unwrap();
        assert!(s.pools[0].settings.backends.is_empty());
        assert_eq!(s.pools[0].discovery_config().unwrap().resolver, None);
        let flags = ["lb", "--discover", "dns:app.internal:8080", "--backend", "127.0.0.1:9"];
        assert_eq!(services("", &flags).unwrap().pools[0].settings.backends.len(), 1);
        assert_eq!(services("", &["lb"]).unwrap().pools[0].settings.backends.len(), 3);
        assert!(services("", &["lb"]).unwrap().pools[0].discovery_config().is_none());
        let e =
            services("", &["lb", "--discover", "srv:x", "--dns-min-refresh", "1m"]).unwrap_err();
        assert_eq!(e, "dns-min-refresh 1m is above dns-max-refresh 30s");
        let one = "[[pool]]\nname = \"web\"\nbackend = [{ address = \"127.0.0.1:1\" }]\n";
        let e = services(one, &["lb", "--discover", "srv:x"]).unwrap_err();
        assert!(e.starts_with("lb.toml line 1: pool: --discover does not go with [[pool]]"), "{e}");
    }

    #[test]
    fn flags_that_do_not_go_with_the_tables_are_named() {
        let listen = "[[listen]]\naddress = \"127.0.0.1:0\"\npool = \"default\"\n";
        let e = services(listen, &["lb", "--port", "0"]).unwrap_err();
        assert!(e.starts_with("lb.toml line 1: listen: --host and --port do not go"), "{e}");
        let two = format!("{TWO}{}", listen.replace("default", "db"));
        let e = services(&two, &["lb", "--backend", "127.0.0.1:9"]).unwrap_err();
        assert!(e.starts_with("lb.toml line 5: pool: --backend does not go"), "{e}");
        assert!(services(listen, &["lb", "--algorithm", "p2c"]).is_ok());
    }

    #[test]
    fn typed_admission_flags_reach_every_listener() {
        let text = format!(
            "deny = [\"127.0.0.9\"]\n{TWO}\n[[listen]]\naddress = \"127.0.0.1:0\"\npool = \"web\"\n\n\
             [[listen]]\naddress = \"127.0.0.2:0\"\npool = \"db\"\ndeny = [\"127.0.0.10\"]\n\
             allow = [\"127.0.0.0/24\"]\nmax-connections-per-client = 9\n"
        );
        let ranges =
            |r: &[lb_net::AddressRange]| r.iter().map(ToString::to_string).collect::<Vec<_>>();
        // Without flags: each table's own keys, else the top level's.
        let s = services(&text, &["lb"]).unwrap();
        let (one, two) = (&s.listeners[0].config.admission, &s.listeners[1].config.admission);
        assert_eq!(
            (ranges(&one.deny), ranges(&two.deny)),
            (vec!["127.0.0.9/32".to_owned()], vec!["127.0.0.10/32".to_owned()])
        );
        assert_eq!(two.max_connections_per_client, Some(9));
        // A typed --deny adds to what each listener denies; --allow and the limits beat the
        // tables.
        let flags = [
            "lb",
            "--deny",
            "127.0.0.5,127.0.0.5",
            "--allow",
            "127.0.0.0/16",
            "--max-connections-per-client",
            "3",
        ];
        let s = services(&text, &flags).unwrap();
        let (one, two) = (&s.listeners[0].config.admission, &s.listeners[1].config.admission);
        assert_eq!(ranges(&one.deny), ["127.0.0.5/32", "127.0.0.9/32"]);
        assert_eq!(ranges(&two.deny), ["127.0.0.10/32", "127.0.0.5/32"]);
        assert_eq!(ranges(&two.allow), ["127.0.0.0/16"]);
        assert_eq!(
            (one.max_connections_per_client, two.max_connections_per_client),
            (Some(3), Some(3))
        );
    }
}
