//! Listeners (HAProxy's frontends, Envoy's listeners): an address, and how each connection
//! accepted there finds its pool, directly or by the TLS server name the client asks for.
//!
//! A listener's routes are resolved to the pools themselves when the listener is added and
//! again whenever pools or routes change, and published as one immutable value: a connection
//! loads it once (no lock, no lookup by name) and keeps the pool it chose even if a reload
//! changes the routes meanwhile.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::admission::{Admission, Gate};
use crate::congestion::CongestionControl;
use crate::error::Error;
use crate::pools::{PoolRuntime, Pools};

/// How long a listener waits for what it inspects (a PROXY header, a TLS ClientHello) before
/// closing the connection. 5 s, as HAProxy's usual `tcp-request inspect-delay`: real clients
/// send both in their first packet, and a client that sends nothing cannot hold the connection
/// longer than this.
pub const DEFAULT_INSPECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A listener's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// The name in metrics and logs (by default its address).
    pub name: String,
    /// Where each connection goes.
    pub routing: Routing,
    /// Whether every client starts with a PROXY protocol header (v1 or v2) from an upstream
    /// balancer; its address then stands for the client's everywhere.
    pub accept_proxy: bool,
    /// Longest wait for a PROXY header or a ClientHello ([`DEFAULT_INSPECT_TIMEOUT`]).
    pub inspect_timeout: Duration,
    /// Who may connect, and how much per client address (none by default). With
    /// `accept_proxy`, the rules apply to the address the PROXY header gives.
    pub admission: Admission,
    /// The TCP congestion control its client connections use (set on its listening sockets,
    /// which pass it on to each connection they accept).
    pub congestion_control: CongestionControl,
}

impl ListenerConfig {
    /// A listener sending every connection to `pool`.
    pub fn to_pool(name: impl Into<String>, pool: impl Into<String>) -> Self {
        ListenerConfig {
            name: name.into(),
            routing: Routing::Pool(pool.into()),
            accept_proxy: false,
            inspect_timeout: DEFAULT_INSPECT_TIMEOUT,
            admission: Admission::default(),
            congestion_control: CongestionControl::default(),
        }
    }

    /// The pools the routes name, each once, in order.
    pub fn pools(&self) -> Vec<&str> {
        let all: Vec<&str> = match &self.routing {
            Routing::Pool(pool) => vec![pool.as_str()],
            Routing::Sni { routes, default_pool } => {
                routes.iter().map(|r| r.pool.as_str()).chain(default_pool.as_deref()).collect()
            }
        };
        let mut names: Vec<&str> = Vec::with_capacity(all.len());
        for name in all {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }
}

/// Where a listener sends its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routing {
    /// Every connection to this pool.
    Pool(String),
    /// By the server name of the client's TLS ClientHello (SNI), read without decrypting and
    /// forwarded untouched: the first route with a matching name wins; a client with no
    /// name, no matching route, or no TLS at all goes to `default_pool`, or is closed if
    /// there is none.
    Sni {
        /// The routes, in order.
        routes: Vec<SniRoute>,
        /// Where the others go.
        default_pool: Option<String>,
    },
}

/// Names and the pool they lead to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniRoute {
    /// The names: exact (`api.example.com`) or one-label wildcards (`*.example.org`).
    pub names: Vec<ServerName>,
    /// The pool.
    pub pool: String,
}

/// A server name to match: exact, or `*.` followed by a domain, matching any name with exactly
/// one more label (`*.example.org` matches `a.example.org`, not `example.org` nor
/// `a.b.example.org`). Case-insensitive; stored lower-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerName {
    /// Lower-case, without the `*.` of a wildcard.
    domain: String,
    wildcard: bool,
}

impl ServerName {
    /// Whether `name` (already lower-case, as the ClientHello parser gives it) matches.
    pub fn matches(&self, name: &str) -> bool {
        if !self.wildcard {
            return name == self.domain;
        }
        match name.split_once('.') {
            Some((label, rest)) => !label.is_empty() && rest == self.domain,
            None => false,
        }
    }

    /// Whether this is a `*.` pattern (an exact name beats any wildcard).
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }
}

impl std::str::FromStr for ServerName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| {
            Error::InvalidSetting(format!(
                "invalid server name {:?}: {why}; expected a DNS name such as api.example.com or \
                 *.example.org",
                s.escape_debug().to_string()
            ))
        };
        let lower = s.trim().to_ascii_lowercase();
        let (wildcard, domain) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        // A trailing dot is the same name (clients' are dropped before matching too).
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        if domain.is_empty() {
            return Err(bad("the name is empty"));
        }
        if domain.parse::<std::net::IpAddr>().is_ok() {
            return Err(bad(
                "an IP address is never a server name (TLS clients send host names only), so                  this route could never match",
            ));
        }
        if domain.contains('*') {
            return Err(bad("a wildcard is `*.` at the start only"));
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if domain.len() > 253 || !domain.split('.').all(label_ok) {
            return Err(bad("a name is letters, digits, '-' and '_' in dot-separated labels"));
        }
        Ok(ServerName { domain: domain.to_owned(), wildcard })
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.domain)
    }
}

/// A listener's routes with their pools, as one connection reads them.
#[derive(Debug)]
pub(crate) struct Routes {
    pub(crate) config: ListenerConfig,
    /// For [`Routing::Pool`], that pool; for SNI routing, the default pool if any.
    pub(crate) default: Option<Arc<PoolRuntime>>,
    /// Exact names first, then wildcards, each with its pool, in route order.
    pub(crate) by_name: Vec<(ServerName, Arc<PoolRuntime>)>,
}

impl Routes {
    /// Resolves `config`'s pool names against `pools`; an unknown name is an error.
    pub(crate) fn resolve(config: ListenerConfig, pools: &Pools) -> Result<Routes, Error> {
        let find = |name: &str| {
            pools.get(name).ok_or_else(|| {
                Error::InvalidSetting(format!("listener {}: no pool named {name:?}", config.name))
            })
        };
        let (default, by_name) = match &config.routing {
            Routing::Pool(pool) => (Some(find(pool)?), Vec::new()),
            Routing::Sni { routes, default_pool } => {
                let mut exact = Vec::new();
                let mut wild = Vec::new();
                for route in routes {
                    let pool = find(&route.pool)?;
                    for name in &route.names {
                        let list = if name.is_wildcard() { &mut wild } else { &mut exact };
                        list.push((name.clone(), Arc::clone(&pool)));
                    }
                }
                exact.append(&mut wild);
                (default_pool.as_deref().map(find).transpose()?, exact)
            }
        };
        Ok(Routes { config, default, by_name })
    }

    /// Routes leading nowhere: every connection is closed as `no-route`.
    pub(crate) fn nowhere(config: ListenerConfig) -> Routes {
        Routes { config, default: None, by_name: Vec::new() }
    }

    /// Whether connections must be inspected for a server name before a pool is chosen.
    pub(crate) fn by_server_name(&self) -> bool {
        matches!(self.config.routing, Routing::Sni { .. })
    }

    /// The pool for a client that asked for `name` (`None`: no name), if any.
    pub(crate) fn for_name(&self, name: Option<&str>) -> Option<&Arc<PoolRuntime>> {
        name.and_then(|n| self.by_name.iter().find(|(p, _)| p.matches(n)).map(|(_, pool)| pool))
            .or(self.default.as_ref())
    }
}

/// Counters of one listener, shown per listener in the metrics.
#[derive(Debug, Default)]
pub(crate) struct ListenerCounters {
    pub(crate) accepted: AtomicU64,
    /// Closed because SNI routing found no pool for the client.
    pub(crate) no_route: AtomicU64,
    /// Closed because the client's first bytes were not a usable TLS ClientHello where SNI
    /// routing needed one.
    pub(crate) bad_hello: AtomicU64,
    /// Closed because a PROXY header was missing, malformed, oversized or late.
    pub(crate) bad_proxy: AtomicU64,
    /// Refused by `allow`/`deny`.
    pub(crate) denied: AtomicU64,
    /// Refused at a per-client limit.
    pub(crate) rate_limited: AtomicU64,
}

/// A listener in a running balancer.
#[derive(Debug)]
pub(crate) struct ListenerRuntime {
    pub(crate) name: Arc<str>,
    /// The address it listens on (for a listener handed a socket: that socket's address).
    pub(crate) address: Option<SocketAddr>,
    pub(crate) routes: ArcSwap<Routes>,
    pub(crate) counters: ListenerCounters,
    /// Its clients' counts, for per-client limits.
    pub(crate) gate: Gate,
    /// Turned on to stop accepting (listener removed); open connections finish on their own.
    stop: watch::Sender<bool>,
    /// Second descriptors of its listening sockets while it accepts, for handing them to a
    /// successor process on an upgrade ([`Handle::listening_sockets`]). Dropped as soon as it
    /// stops accepting, so that a removed listener's port, or every port at shutdown, closes
    /// then rather than when the process exits.
    ///
    /// [`Handle::listening_sockets`]: crate::Handle::listening_sockets
    sockets: Mutex<Vec<std::net::TcpListener>>,
}

impl ListenerRuntime {
    pub(crate) fn new(address: Option<SocketAddr>, routes: Routes) -> Self {
        ListenerRuntime {
            name: routes.config.name.as_str().into(),
            address,
            routes: ArcSwap::from_pointee(routes),
            counters: ListenerCounters::default(),
            gate: Gate::default(),
            stop: watch::channel(false).0,
            sockets: Mutex::new(Vec::new()),
        }
    }

    /// Stops its accept loops.
    pub(crate) fn stop(&self) {
        self.stop.send_replace(true);
        self.release_sockets();
    }

    /// Keeps `sockets` (second descriptors of the ones its accept loops use) for a hand-over.
    pub(crate) fn keep_sockets(&self, sockets: Vec<std::net::TcpListener>) {
        *self.sockets.lock().unwrap_or_else(|p| p.into_inner()) = sockets;
    }

    /// Gives its listening sockets `congestion` (nothing to do once it stopped accepting).
    pub(crate) fn set_congestion(&self, congestion: &CongestionControl) -> std::io::Result<()> {
        let kept = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter().try_for_each(|socket| congestion.apply(socket))
    }

    /// The congestion control its sockets have ([`CongestionControl::of`]).
    pub(crate) fn congestion(&self) -> Option<String> {
        let kept = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        kept.first().and_then(CongestionControl::of)
    }

    /// New descriptors of its listening sockets (empty once it stopped accepting).
    pub(crate) fn clone_sockets(&self) -> std::io::Result<Vec<std::net::TcpListener>> {
        let kept = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter().map(std::net::TcpListener::try_clone).collect()
    }

    /// Steers its new connections to one socket (`pack`) or by the kernel's hash
    /// ([`crate::placement`]); nothing to do with fewer than two sockets, or once it stopped
    /// accepting.
    pub(crate) fn steer(&self, pack: bool) -> std::io::Result<()> {
        let kept = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        match kept.first() {
            // Sockets shared without SO_REUSEPORT (passed by systemd without ReusePort=) are
            // one socket: nothing to steer.
            #[cfg(target_os = "linux")]
            Some(socket)
                if kept.len() > 1
                    && socket2::SockRef::from(socket).reuse_port().unwrap_or(false) =>
            {
                crate::placement::steer(socket, pack)
            }
            _ => {
                let _ = pack;
                Ok(())
            }
        }
    }

    /// Drops the descriptors kept for a hand-over (it no longer accepts).
    pub(crate) fn release_sockets(&self) {
        drop(std::mem::take(&mut *self.sockets.lock().unwrap_or_else(|p| p.into_inner())));
    }

    /// Resolves once [`stop`](Self::stop) was called.
    pub(crate) async fn stopped(&self) {
        let _ = self.stop.subscribe().wait_for(|&stop| stop).await;
    }

    /// Counts a connection closed for `why` (a `Relaxed` add: a statistic).
    pub(crate) fn count(&self, counter: impl Fn(&ListenerCounters) -> &AtomicU64) {
        counter(&self.counters).fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_match_exactly_or_one_label_below_a_wildcard() {
        let exact: ServerName = "API.Example.com".parse().unwrap();
        assert!(exact.matches("api.example.com"));
        assert!(!exact.matches("www.api.example.com"));
        let wild: ServerName = "*.example.org".parse().unwrap();
        assert!(wild.matches("a.example.org"));
        assert!(!wild.matches("example.org"));
        assert!(!wild.matches("a.b.example.org"));
        assert!(!wild.matches(".example.org"));
        assert_eq!(wild.to_string(), "*.example.org");
        let dotted: ServerName = "api.example.com.".parse().unwrap();
        assert!(dotted.matches("api.example.com"));
        assert!("foo_bar.example.com".parse::<ServerName>().is_ok());
        for (bad, why) in [
            ("", "empty"),
            ("*.", "empty"),
            ("a.*.b", "at the start only"),
            ("**.b", "at the start only"),
            ("a..b", "labels"),
            ("-a.b", "labels"),
            ("a b", "labels"),
            ("10.0.0.1", "never a server name"),
        ] {
            let e = bad.parse::<ServerName>().unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
