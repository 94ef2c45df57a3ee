//! The `[[pool]]` and `[[listen]]` tables of a configuration file, and the rules that say which
//! pools and listeners a file describes.
//!
//! ```toml
//! [[pool]]
//! name = "web"
//! algorithm = "least_connections"
//! backend = [{ address = "10.0.0.5:443" }, { address = "10.0.0.6:443", weight = 2 }]
//!
//! [[listen]]
//! address = "0.0.0.0:443"
//! routes = [{ sni = ["api.example.com"], pool = "api" }]
//! default-pool = "web"
//! ```
//!
//! A `[[pool]]` table takes a `name` and any pool-scoped setting of the table in
//! [`crate::settings`], by the same key and through the same parser as at the top level, where
//! those keys are the defaults of every pool. A `[[listen]]` table takes an `address`, a `name`,
//! where its connections go (`pool`, or `routes` by TLS server name with a `default-pool`),
//! `accept-proxy`, `inspect-timeout` and any listener-scoped setting (who may connect), the
//! top-level ones being every listener's defaults. [`File::check`] holds the rules across tables: names
//! unique, routes to pools that exist, and what does not go together.

use std::sync::LazyLock;

use lb_net::{
    ListenerConfig, Routing, ServerName, SniRoute, Target, DEFAULT_INSPECT_TIMEOUT, DEFAULT_POOL,
};
use serde::{de::Deserializer, de::MapAccess, Deserialize};
use toml::Spanned;

use crate::args::{
    parse_listen_address, parse_listener_name, parse_pool_name, parse_positive_duration,
    parse_server_name,
};
use crate::config::{
    read_key, read_optional, read_text, unknown_key, At, BadValue, File, ListForm, Scalar,
    SettingValue, SettingsReader, Strings, Switch, Table, Tables,
};
use crate::settings::{FileConfig, Key, Scope, SETTINGS};

/// One `[[pool]]` table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PoolTable {
    /// Its name, a valid pool name.
    pub(crate) name: At<String>,
    /// The settings it sets, pool-scoped ones only; the others are the top level's.
    pub(crate) settings: FileConfig,
}

/// A key of a `[[pool]]` table.
enum PoolKey {
    Name,
    Setting(Key),
}

/// The keys a `[[pool]]` table takes: `name` and every pool-scoped setting.
static POOL_KEYS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let settings = SETTINGS.iter().filter(|s| s.scope == Scope::Pool).map(|s| s.key);
    std::iter::once("name").chain(settings).collect()
});

impl<'de> Deserialize<'de> for PoolKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PoolKey, D::Error> {
        read_key(d, |key| match (key, Key::from_key(key)) {
            ("name", _) => Ok(PoolKey::Name),
            (_, Some(k)) if k.setting().scope == Scope::Pool => Ok(PoolKey::Setting(k)),
            (_, Some(k)) => Err(out_of_place("pool", k)),
            (_, None) => Err(unknown_key("pool: ", key, &POOL_KEYS)),
        })
    }
}

/// The message about a setting written in a `table` (`pool` or `listen`) that does not take it.
fn out_of_place(table: &str, key: Key) -> String {
    let name = key.key();
    let what = if table == "pool" { "pool" } else { "listener" };
    match key.setting().scope {
        Scope::Pool => format!(
            "{table}: `{name}` is a pool's key: set it in a [[pool]] table, or at the top level \
             (before any table) for every pool"
        ),
        Scope::Listener => format!(
            "{table}: `{name}` is a listener's key: set it in a [[listen]] table, or at the top \
             level (before any table) for every listener"
        ),
        Scope::Shorthand => format!(
            "{table}: `{name}` is a top-level key, for the one listener of a file without \
             [[listen]] tables; a [[listen]] table takes address = \"HOST:PORT\""
        ),
        Scope::Process => format!(
            "{table}: `{name}` is a top-level key, not a {what}'s: it sets the whole process; \
             write it before the first table"
        ),
    }
}

impl Table for PoolTable {
    const KEY: &'static str = "pool";
    const FORM: &'static str =
        "expected [[pool]] tables with name = \"NAME\" and the pool's settings";
    const HEADER: &'static str = "[[pool]]";

    fn read<'de, A: MapAccess<'de>>(mut map: A) -> Result<Result<Self, BadValue>, A::Error> {
        let mut name = None;
        let mut settings = SettingsReader::default();
        while let Some(key) = map.next_key::<PoolKey>()? {
            match key {
                PoolKey::Name => name = Some(map.next_value::<Spanned<Scalar>>()?),
                PoolKey::Setting(key) => settings.read(key, "pool.", &mut map)?,
            }
        }
        Ok((|| {
            let name = name.ok_or_else(|| {
                BadValue::of_table(
                    "pool",
                    "missing key `name`: each [[pool]] table needs name = \"NAME\"".into(),
                )
            })?;
            let name = At {
                value: read_text("pool.name", &name, parse_pool_name)?,
                at: name.span().start,
            };
            let settings = settings.finish()?;
            match &settings.backends {
                // Its members come from DNS.
                None if settings.discover.is_some() => Ok(PoolTable { name, settings }),
                None => Err(BadValue::of_table(
                    "pool",
                    format!(
                        "pool {:?} has no backends: give it backend = [{{ address = \"HOST:PORT\" \
                         }}] or [[pool.backend]] tables, or discover = \"dns:HOST:PORT\"",
                        name.value
                    ),
                )),
                Some(list) if list.is_empty() => Err(BadValue::of_table(
                    "pool.backend",
                    format!("the list is empty: give pool {:?} at least one backend", name.value),
                )),
                Some(_) => Ok(PoolTable { name, settings }),
            }
        })())
    }
}

/// One `[[listen]]` table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ListenTable {
    /// Where it listens, as written (port 0: a free port).
    pub(crate) address: At<Target>,
    /// Its name (by default the address as written), where its connections go and how they
    /// are inspected, as lb-net takes them.
    pub(crate) config: ListenerConfig,
    /// Where its name is written (its address, for the default name).
    pub(crate) name_at: usize,
    /// Whether the name is written (else it is the address as written).
    pub(crate) named: bool,
    /// Each pool it names: the key it is named under, and the name with where it is.
    pub(crate) pools: Vec<(&'static str, At<String>)>,
    /// The listener-scoped settings it sets; the others are the top level's.
    pub(crate) settings: FileConfig,
    /// Where `inspect-timeout` is written, if it is.
    pub(crate) inspect_timeout_at: Option<usize>,
}

/// A key of a `[[listen]]` table.
#[derive(Debug, Clone, Copy)]
enum ListenKey {
    Address,
    Name,
    Pool,
    Routes,
    DefaultPool,
    AcceptProxy,
    InspectTimeout,
    Setting(Key),
}

/// The keys a `[[listen]]` table takes besides the listener-scoped settings.
const LISTEN_KEYS: [(&str, ListenKey); 7] = [
    ("address", ListenKey::Address),
    ("name", ListenKey::Name),
    ("pool", ListenKey::Pool),
    ("routes", ListenKey::Routes),
    ("default-pool", ListenKey::DefaultPool),
    ("accept-proxy", ListenKey::AcceptProxy),
    ("inspect-timeout", ListenKey::InspectTimeout),
];

/// Every key a `[[listen]]` table takes, for the message about an unknown one.
static ALL_LISTEN_KEYS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let settings = SETTINGS.iter().filter(|s| s.scope == Scope::Listener).map(|s| s.key);
    LISTEN_KEYS.iter().map(|(k, _)| *k).chain(settings).collect()
});

impl<'de> Deserialize<'de> for ListenKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ListenKey, D::Error> {
        read_key(d, |key| match (known(&LISTEN_KEYS, key), Key::from_key(key)) {
            (Some(own), _) => Ok(own),
            (None, Some(k)) if k.setting().scope == Scope::Listener => Ok(ListenKey::Setting(k)),
            (None, Some(k)) => Err(out_of_place("listen", k)),
            (None, None) => Err(unknown_key("listen: ", key, &ALL_LISTEN_KEYS)),
        })
    }
}

/// The key called `key` among `keys`.
fn known<K: Copy>(keys: &[(&str, K)], key: &str) -> Option<K> {
    keys.iter().find(|(name, _)| *name == key).map(|&(_, known)| known)
}

/// A `[[listen]]` table as written, before its values are checked.
#[derive(Default)]
struct RawListen {
    address: Option<Spanned<Scalar>>,
    name: Option<Spanned<Scalar>>,
    pool: Option<Spanned<Scalar>>,
    /// Where the key is, and the routes.
    routes: Option<(usize, Tables<Route>)>,
    default_pool: Option<Spanned<Scalar>>,
    accept_proxy: Option<Spanned<Scalar>>,
    inspect_timeout: Option<Spanned<Scalar>>,
    settings: SettingsReader,
}

impl Table for ListenTable {
    const KEY: &'static str = "listen";
    const FORM: &'static str =
        "expected [[listen]] tables with address = \"HOST:PORT\" and pool = \"NAME\" or routes";
    const HEADER: &'static str = "[[listen]]";

    fn read<'de, A: MapAccess<'de>>(mut map: A) -> Result<Result<Self, BadValue>, A::Error> {
        let mut raw = RawListen::default();
        while let Some(key) = map.next_key::<Spanned<ListenKey>>()? {
            let at = key.span().start;
            let slot = match key.into_inner() {
                ListenKey::Routes => {
                    raw.routes = Some((at, map.next_value()?));
                    continue;
                }
                ListenKey::Setting(key) => {
                    raw.settings.read(key, "listen.", &mut map)?;
                    continue;
                }
                ListenKey::Address => &mut raw.address,
                ListenKey::Name => &mut raw.name,
                ListenKey::Pool => &mut raw.pool,
                ListenKey::DefaultPool => &mut raw.default_pool,
                ListenKey::AcceptProxy => &mut raw.accept_proxy,
                ListenKey::InspectTimeout => &mut raw.inspect_timeout,
            };
            *slot = Some(map.next_value()?);
        }
        Ok(raw.check())
    }
}

/// A pool name read from `key`, with where it is.
fn pool_name(
    key: &'static str,
    raw: &Spanned<Scalar>,
) -> Result<(&'static str, At<String>), BadValue> {
    Ok((key, At { value: read_text(key, raw, parse_pool_name)?, at: raw.span().start }))
}

impl RawListen {
    /// Each value through its parser, and the rules within one table.
    fn check(self) -> Result<ListenTable, BadValue> {
        let Some(raw_address) = self.address else {
            return Err(BadValue::of_table(
                "listen",
                "missing key `address`: each [[listen]] table needs address = \"HOST:PORT\"".into(),
            ));
        };
        let value = read_text("listen.address", &raw_address, parse_listen_address)?;
        let address = At { value, at: raw_address.span().start };
        let (name, name_at) = match &self.name {
            Some(raw) => (read_text("listen.name", raw, parse_listener_name)?, raw.span().start),
            // The address as written: it read as text above.
            None => {
                (raw_address.get_ref().text().unwrap_or_default().trim().to_owned(), address.at)
            }
        };
        let mut pools = Vec::new();
        let routing = match (self.pool, self.routes) {
            (Some(_), Some((at, _))) => {
                return Err(BadValue::at(
                    at,
                    "listen.routes",
                    "give pool = \"NAME\" or routes, not both (routes choose a pool by TLS \
                     server name, and default-pool takes the rest)"
                        .into(),
                ))
            }
            (None, None) => {
                return Err(BadValue::of_table(
                    "listen",
                    "neither pool nor routes: give pool = \"NAME\" (every connection to that \
                     pool) or routes = [{ sni = [\"NAME\"], pool = \"POOL\" }]"
                        .into(),
                ))
            }
            (Some(pool), None) => {
                if let Some(default) = &self.default_pool {
                    return Err(BadValue::at(
                        default.span().start,
                        "listen.default-pool",
                        "default-pool goes with routes; with pool = \"NAME\" every connection \
                         goes to that pool"
                            .into(),
                    ));
                }
                let (key, pool) = pool_name("listen.pool", &pool)?;
                pools.push((key, pool.clone()));
                Routing::Pool(pool.value)
            }
            (None, Some((at, routes))) => {
                let routes = routes.checked()?;
                if routes.is_empty() {
                    return Err(BadValue::at(
                        at,
                        "listen.routes",
                        "the list is empty: give at least one route, or pool = \"NAME\"".into(),
                    ));
                }
                let default_pool = match &self.default_pool {
                    Some(raw) => Some(pool_name("listen.default-pool", raw)?),
                    None => None,
                };
                let mut sni = Vec::with_capacity(routes.len());
                for At { value: route, .. } in routes {
                    pools.push(("listen.routes.pool", route.pool.clone()));
                    sni.push(SniRoute { names: route.names, pool: route.pool.value });
                }
                let default_pool = default_pool.map(|(key, pool)| {
                    pools.push((key, pool.clone()));
                    pool.value
                });
                Routing::Sni { routes: sni, default_pool }
            }
        };
        let accept_proxy = match self.accept_proxy {
            Some(raw) => Switch.read("listen.accept-proxy", raw)?,
            None => false,
        };
        let inspect_timeout_at = self.inspect_timeout.as_ref().map(|t| t.span().start);
        let inspect_timeout =
            read_optional("listen.inspect-timeout", self.inspect_timeout, parse_positive_duration)?
                .unwrap_or(DEFAULT_INSPECT_TIMEOUT);
        let settings = self.settings.finish()?;
        // Who may connect (`admission`) is set once the top level's defaults are known
        // ([`crate::services`]).
        let config = ListenerConfig {
            name,
            routing,
            accept_proxy,
            inspect_timeout,
            ..ListenerConfig::to_pool("", "")
        };
        let named = self.name.is_some();
        Ok(ListenTable { address, config, name_at, named, pools, settings, inspect_timeout_at })
    }
}

impl ListenTable {
    /// Unnamed listeners on one port-0 address (each gets a free port of its own) would all
    /// be named after it: the second is called `ADDRESS-2`, the third `ADDRESS-3`, and so on,
    /// the same on every reload of the same file.
    pub(crate) fn name_alike_port_0(listeners: &mut [At<ListenTable>]) {
        for i in 0..listeners.len() {
            let (earlier, rest) = listeners.split_at_mut(i);
            let this = &mut rest[0].value;
            if this.named || this.address.value.port != 0 {
                continue;
            }
            let alike = earlier
                .iter()
                .filter(|l| !l.value.named && l.value.address.value == this.address.value)
                .count();
            if alike > 0 {
                this.config.name = format!("{}-{}", this.config.name, alike + 1);
            }
        }
    }
}

/// One of a listener's `routes`: server names, and the pool they lead to.
#[derive(Debug)]
pub(crate) struct Route {
    names: Vec<ServerName>,
    pool: At<String>,
}

/// A key of a route.
#[derive(Debug, Clone, Copy)]
enum RouteKey {
    Sni,
    Pool,
}

const ROUTE_KEYS: [(&str, RouteKey); 2] = [("sni", RouteKey::Sni), ("pool", RouteKey::Pool)];

impl<'de> Deserialize<'de> for RouteKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RouteKey, D::Error> {
        read_key(d, |key| {
            known(&ROUTE_KEYS, key)
                .ok_or_else(|| unknown_key("routes: ", key, &ROUTE_KEYS.map(|(k, _)| k)))
        })
    }
}

impl Table for Route {
    const KEY: &'static str = "routes";
    const FORM: &'static str =
        "expected a list of routes such as routes = [{ sni = [\"api.example.com\"], pool = \"api\" }]";
    const HEADER: &'static str = "[[listen.routes]]";

    fn read<'de, A: MapAccess<'de>>(mut map: A) -> Result<Result<Self, BadValue>, A::Error> {
        let (mut sni, mut pool) = (None, None);
        while let Some(key) = map.next_key::<RouteKey>()? {
            match key {
                RouteKey::Sni => sni = Some(map.next_value::<Spanned<Strings<ServerNames>>>()?),
                RouteKey::Pool => pool = Some(map.next_value::<Spanned<Scalar>>()?),
            }
        }
        let missing = |key: &str| {
            BadValue::of_table(
                "listen.routes",
                format!(
                    "missing key `{key}`: each route needs sni = [\"NAME\", ...] and pool = \
                     \"POOL\""
                ),
            )
        };
        Ok((|| {
            let sni = sni.ok_or_else(|| missing("sni"))?;
            let pool = pool.ok_or_else(|| missing("pool"))?;
            let span = sni.span();
            let written = Strings::items(sni);
            if written.is_empty() {
                return Err(BadValue::at(
                    span.start,
                    "listen.routes.sni",
                    "the list is empty: give at least one server name".into(),
                ));
            }
            let names = written
                .iter()
                .map(|name| read_text("listen.routes.sni", name, parse_server_name))
                .collect::<Result<_, _>>()?;
            Ok(Route { names, pool: pool_name("listen.routes.pool", &pool)?.1 })
        })())
    }
}

/// A route's `sni`: a list of server names, or one alone.
struct ServerNames;

impl ListForm for ServerNames {
    const FORM: &'static str = "sni: expected a list of server names such as [\"api.example.com\"]";
}

impl File {
    /// The names of the pools: the `[[pool]]` tables', else the shorthand's one.
    pub(crate) fn pool_names(&self) -> Vec<&str> {
        if self.pools.is_empty() {
            return vec![DEFAULT_POOL];
        }
        self.pools.iter().map(|p| p.value.name.value.as_str()).collect()
    }

    /// The pool the shorthand listener (`host` and `port`, when there are no `[[listen]]`
    /// tables) sends its connections to: the one named `default` if there is one, else the
    /// only one; `None` when neither.
    pub(crate) fn shorthand_pool(&self) -> Option<&str> {
        match self.pool_names().as_slice() {
            names if names.contains(&DEFAULT_POOL) => Some(DEFAULT_POOL),
            [only] => Some(only),
            _ => None,
        }
    }

    /// What the file says that does nothing, one line each naming the file, the line and the
    /// key: lb starts (or reloads) with it, and says so.
    pub(crate) fn warnings(&self) -> Vec<String> {
        let place = &self.place;
        let listeners = self.listeners.iter().map(|l| &l.value);
        let idle = listeners
            .filter(|l| !l.config.accept_proxy && matches!(l.config.routing, Routing::Pool(_)));
        idle.filter_map(|l| l.inspect_timeout_at)
            .map(|at| {
                format!(
                    "{}: listen.inspect-timeout: applies only to a listener with routes or \
                     accept-proxy = true (it bounds the wait for the TLS ClientHello or the \
                     PROXY header); this one reads neither, so it has no effect",
                    place.at(at)
                )
            })
            .collect()
    }

    /// The rules across tables, each broken one a line naming the file, the line and the key.
    pub(crate) fn check(&self) -> Result<(), String> {
        let place = &self.place;
        let top_level = |key: Key, why: &str| match self.key_offset(key) {
            Some(at) => Err(format!("{}: {}: {why}", place.at(at), key.key())),
            None => Ok(()),
        };
        if self.settings.backends.as_ref().is_some_and(Vec::is_empty) {
            // Written out but empty: a balancer with nothing to send traffic to, and on reload
            // the removal of every backend. Leave the key out for the built-in defaults.
            top_level(
                Key::backends,
                "the list is empty: give at least one [[backend]] table with address = \
                 \"HOST:PORT\" (or leave it out for the defaults at start-up)",
            )?;
        }
        if !self.pools.is_empty() {
            top_level(
                Key::backends,
                "a top-level backend list does not go with [[pool]] tables: give each pool its \
                 own backends in its table",
            )?;
            top_level(
                Key::discover,
                "a top-level discover does not go with [[pool]] tables: give each pool that \
                 takes backends from DNS its own discover in its table",
            )?;
        }
        if !self.listeners.is_empty() {
            for key in [Key::host, Key::port] {
                top_level(
                    key,
                    "host and port are the one listener of a file without [[listen]] tables; \
                     with them, each table's address says where to listen",
                )?;
            }
        }
        for (i, At { value: pool, .. }) in self.pools.iter().enumerate() {
            let name = &pool.name;
            if let Some(first) = self.pools[..i].iter().find(|p| p.value.name.value == name.value) {
                return Err(format!(
                    "{}: pool.name: two pools named {:?} (the first on line {})",
                    place.at(name.at),
                    name.value,
                    place.line(first.value.name.at)
                ));
            }
        }
        let pools = self.pool_names();
        for (i, At { value: listen, .. }) in self.listeners.iter().enumerate() {
            let earlier = &self.listeners[..i];
            let address = &listen.address;
            let same_address = |l: &&At<ListenTable>| {
                address.value.port != 0 && l.value.address.value == address.value
            };
            if let Some(first) = earlier.iter().find(same_address) {
                return Err(format!(
                    "{}: listen.address: {} is also where listener {} listens (line {})",
                    place.at(address.at),
                    address.value,
                    first.value.config.name,
                    place.line(first.value.address.at)
                ));
            }
            let name = &listen.config.name;
            if let Some(first) = earlier.iter().find(|l| l.value.config.name == *name) {
                return Err(format!(
                    "{}: listen.name: two listeners named {name:?} (the first on line {})",
                    place.at(listen.name_at),
                    place.line(first.value.name_at)
                ));
            }
            for (key, pool) in &listen.pools {
                if !pools.contains(&pool.value.as_str()) {
                    return Err(format!(
                        "{}: {key}: no pool named {:?} (pools: {})",
                        place.at(pool.at),
                        pool.value,
                        pools.join(", ")
                    ));
                }
            }
        }
        if self.listeners.is_empty() && self.shorthand_pool().is_none() {
            return Err(format!(
                "{}: pool: {} pools ({}) and no [[listen]] tables: add [[listen]] tables that \
                 say where each pool is served (or name one pool \"default\": host and port \
                 serve it)",
                place.at(self.pools[0].at),
                pools.len(),
                pools.join(", ")
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
