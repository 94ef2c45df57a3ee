//! The access log: one line per client connection, written however the connection ends, in a
//! fixed format modelled on HAProxy's `tcplog` ([`AccessLine`]), with the [`Termination`] word
//! saying how it ended.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::counters::ProxyCounters;
use crate::relay::Traffic;
use crate::shutdown::{PoolKey, TaskCell};
use crate::time::{write_rfc3339, Rfc3339, TimestampPrecision};
use lb_core::Lease;

/// How a client connection ended, as written in the connection log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// Both sides closed normally.
    Normal,
    /// The client reset or broke the connection.
    ClientError,
    /// The backend reset or broke the connection after it was established.
    BackendError,
    /// Every backend tried refused or failed to connect.
    ConnectFailed,
    /// Every backend tried timed out connecting.
    ConnectTimeout,
    /// The balancer itself had no descriptor, local port or memory for a backend connection
    /// for the whole connect timeout. Not counted against any backend.
    Resource,
    /// No byte moved for the idle timeout.
    IdleTimeout,
    /// No backend was available (all down, draining, at their limit, or none configured).
    NoBackend,
    /// The global connection limit was reached.
    Limit,
    /// Closed by shutdown after the grace period.
    Shutdown,
    /// SNI routing found no pool for the client's server name (and there is no default).
    NoRoute,
    /// SNI routing needed a TLS ClientHello and the client's first bytes were not one (not
    /// TLS, malformed, too large, or not complete within the inspect timeout).
    BadHello,
    /// An `accept-proxy` listener got no valid PROXY protocol header in time.
    BadProxy,
    /// The backend closed before sending a single byte while the client waited for an answer
    /// (and no other backend could be given the client's bytes).
    BackendEmpty,
    /// The client half-closed, and the backend stayed silent for the client-fin timeout.
    ClientFinTimeout,
    /// The backend half-closed, and the client stayed silent for the server-fin timeout.
    ServerFinTimeout,
    /// The backend sent nothing at all, and nothing moved, for the server timeout.
    ServerTimeout,
    /// Refused by the listener's `allow`/`deny` ranges.
    Denied,
    /// Refused at a per-client limit.
    RateLimited,
    /// Closed when the deadline of its backend's drain (`drain <backend> deadline=...`)
    /// passed.
    Drained,
}

impl Termination {
    /// The word used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Termination::Normal => "normal",
            Termination::ClientError => "client-reset",
            Termination::BackendError => "backend-reset",
            Termination::ConnectFailed => "backend-refused",
            Termination::ConnectTimeout => "connect-timeout",
            Termination::Resource => "resource",
            Termination::IdleTimeout => "idle-timeout",
            Termination::NoBackend => "no-backend",
            Termination::Limit => "limit",
            Termination::Shutdown => "shutdown",
            Termination::NoRoute => "no-route",
            Termination::BadHello => "bad-hello",
            Termination::BadProxy => "bad-proxy",
            Termination::BackendEmpty => "backend-empty",
            Termination::ClientFinTimeout => "client-fin-timeout",
            Termination::ServerFinTimeout => "server-fin-timeout",
            Termination::ServerTimeout => "server-timeout",
            Termination::Denied => "denied",
            Termination::RateLimited => "rate-limited",
            Termination::Drained => "drained",
        }
    }
}

impl fmt::Display for Termination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the access log says about one client connection. Dropping it writes the line, so
/// every way a connection can end (including being cut by shutdown) is logged exactly once.
pub(crate) struct Session<'a> {
    pub(crate) client: Option<SocketAddr>,
    accepted: Instant,
    accepted_wall: SystemTime,
    pub(crate) backend: Option<SocketAddr>,
    /// The pool's name, unless it is the default pool.
    pub(crate) pool: Option<Arc<str>>,
    /// The TLS server name routing went by, if it did.
    pub(crate) server_name: Option<Arc<str>>,
    pub(crate) connect_time: Option<Duration>,
    pub(crate) retries: u32,
    pub(crate) traffic: Traffic,
    /// `None` until the connection ends on its own; a session dropped without an end was cut
    /// by shutdown, or by a drain's deadline if its task's cell says so.
    pub(crate) end: Option<Termination>,
    /// The connection task's cell (none for a connection refused before it had a task).
    pub(crate) cell: Option<&'a TaskCell>,
    counters: &'a ProxyCounters,
    format: AccessLogFormat,
}

/// How an access-log event carries its [`AccessLine`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One message, the line as [`AccessLine`]'s `Display` writes it (for text logs).
    #[default]
    Line,
    /// One field per part of the line, named as the line's documented fields (`client`,
    /// `accept_time`, `pool`, `backend`, `tc`, `tt`, `bytes_in`, `bytes_out`, `termination`,
    /// `retries`, `sni`; `pool` and `sni` only when the line has them), for structured logs
    /// such as JSON. The message is `connection closed`.
    Fields,
}

impl<'a> Session<'a> {
    pub(crate) fn new(
        client: Option<SocketAddr>,
        counters: &'a ProxyCounters,
        format: AccessLogFormat,
    ) -> Self {
        Session {
            client,
            accepted: Instant::now(),
            accepted_wall: SystemTime::now(),
            backend: None,
            pool: None,
            server_name: None,
            connect_time: None,
            retries: 0,
            traffic: Traffic::default(),
            end: None,
            cell: None,
            counters,
            format,
        }
    }
}

impl Session<'_> {
    /// The connection was given `lease` on a backend of the pool `pool`.
    pub(crate) fn picked(&mut self, pool: PoolKey, lease: &Lease) {
        self.backend = Some(lease.addr());
        if let Some(cell) = self.cell {
            cell.on_backend(pool, lease.id());
        }
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let end = self.end.unwrap_or_else(|| match self.cell {
            Some(cell) if cell.drained() => {
                self.counters.drained.fetch_add(1, Relaxed);
                Termination::Drained
            }
            _ => Termination::Shutdown,
        });
        let total = self.accepted.elapsed();
        self.counters.connection_duration.observe(total);
        let line = AccessLine {
            client: self.client,
            accepted: self.accepted_wall,
            backend: self.backend,
            pool: self.pool.take(),
            server_name: self.server_name.take(),
            connect_time: self.connect_time,
            total,
            bytes_in: self.traffic.bytes_in.load(Relaxed),
            bytes_out: self.traffic.bytes_out.load(Relaxed),
            end,
            retries: self.retries,
        };
        match self.format {
            AccessLogFormat::Line => tracing::info!(target: "lb::access", "{line}"),
            AccessLogFormat::Fields => line.log_fields(),
        }
    }
}

/// One access log line, modelled on HAProxy's `tcplog`:
///
/// ```text
/// <client> [<accept time>] [<pool>/]<backend> <Tc>/<Tt> <bytes_in> <bytes_out> <termination> <retries>[ sni=<name>]
/// 127.0.0.1:51514 [2026-11-25T22:38:16.709Z] 127.0.0.1:8001 0/3 79 108 normal 0
/// 127.0.0.1:51520 [2026-11-25T22:38:17.002Z] api/10.0.0.7:443 1/40 517 3120 normal 0 sni=api.example.com
/// ```
///
/// `Tc` is the time to connect to the backend and `Tt` the whole connection, in milliseconds;
/// `Tc` is `-1` when no backend connection was made and the backend is `-` when none was picked.
/// The backend is written after its pool's name and a `/`, except in the pool named `default`
/// (the one-pool setup), whose lines stay as they were before pools existed.
/// Bytes are from the client (`bytes_in`) and to the client (`bytes_out`). The termination is
/// one of the words of [`Termination`]. `sni=` ends the line when the listener routed by the
/// TLS server name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLine {
    /// The client's address.
    pub client: Option<SocketAddr>,
    /// When the connection was accepted.
    pub accepted: SystemTime,
    /// The backend last tried (the one used, if any).
    pub backend: Option<SocketAddr>,
    /// The backend's pool, unless it is the default pool.
    pub pool: Option<Arc<str>>,
    /// The TLS server name the listener routed by, if it did.
    pub server_name: Option<Arc<str>>,
    /// Time to connect to the backend used.
    pub connect_time: Option<Duration>,
    /// Time from accept to close.
    pub total: Duration,
    /// Bytes from the client.
    pub bytes_in: u64,
    /// Bytes to the client.
    pub bytes_out: u64,
    /// How it ended.
    pub end: Termination,
    /// Connect attempts beyond the first.
    pub retries: u32,
}

impl fmt::Display for AccessLine {
    // Written piece by piece rather than with `write!`: this runs once per connection, and the
    // formatting machinery (padding checks, `Display` of `SocketAddr` through a buffer) was
    // most of lb's user-space instructions per connection in the close test.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut number = itoa::Buffer::new();
        write_peer(f, self.client)?;
        f.write_str(" [")?;
        write_rfc3339(f, self.accepted, TimestampPrecision::Millis)?;
        f.write_str("] ")?;
        if let (Some(pool), Some(_)) = (&self.pool, self.backend) {
            f.write_str(pool)?;
            f.write_str("/")?;
        }
        write_peer(f, self.backend)?;
        f.write_str(" ")?;
        f.write_str(number.format(self.tc()))?;
        f.write_str("/")?;
        f.write_str(number.format(self.total.as_millis()))?;
        f.write_str(" ")?;
        f.write_str(number.format(self.bytes_in))?;
        f.write_str(" ")?;
        f.write_str(number.format(self.bytes_out))?;
        f.write_str(" ")?;
        f.write_str(self.end.as_str())?;
        f.write_str(" ")?;
        f.write_str(number.format(self.retries))?;
        if let Some(name) = &self.server_name {
            f.write_str(" sni=")?;
            f.write_str(name)?;
        }
        Ok(())
    }
}

impl AccessLine {
    /// `Tc`: milliseconds to connect, `-1` if no connection was made.
    fn tc(&self) -> i64 {
        self.connect_time.map_or(-1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    /// Logs the line as one field per part ([`AccessLogFormat::Fields`]).
    fn log_fields(&self) {
        tracing::info!(
            target: "lb::access",
            client = %DisplayPeer(self.client),
            accept_time = %Rfc3339(self.accepted, TimestampPrecision::Millis),
            pool = self.pool.as_deref().filter(|_| self.backend.is_some()),
            backend = %DisplayPeer(self.backend),
            tc = self.tc(),
            tt = u64::try_from(self.total.as_millis()).unwrap_or(u64::MAX),
            bytes_in = self.bytes_in,
            bytes_out = self.bytes_out,
            termination = self.end.as_str(),
            retries = self.retries,
            sni = self.server_name.as_deref(),
            "connection closed"
        );
    }
}

/// Formats an optional peer address as the address or `-`.
pub(crate) struct DisplayPeer(pub(crate) Option<SocketAddr>);

impl fmt::Display for DisplayPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_peer(f, self.0)
    }
}

/// Writes an optional address as [`DisplayPeer`] says, an IPv4 address (the common case, and
/// two per access-log line) a number at a time rather than through `SocketAddr`'s `Display`,
/// which formats into a buffer first to support padding.
fn write_peer(f: &mut fmt::Formatter<'_>, peer: Option<SocketAddr>) -> fmt::Result {
    match peer {
        Some(SocketAddr::V4(v4)) => {
            let mut number = itoa::Buffer::new();
            let [a, b, c, d] = v4.ip().octets();
            for (octet, after) in [(a, "."), (b, "."), (c, "."), (d, ":")] {
                f.write_str(number.format(octet))?;
                f.write_str(after)?;
            }
            f.write_str(number.format(v4.port()))
        }
        Some(other) => write!(f, "{other}"),
        None => f.write_str("-"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn line(client: &str, backend: Option<&str>) -> AccessLine {
        AccessLine {
            client: Some(client.parse().unwrap()),
            accepted: UNIX_EPOCH + Duration::from_millis(1_764_109_096_709),
            backend: backend.map(|b| b.parse().unwrap()),
            pool: None,
            server_name: None,
            connect_time: backend.map(|_| Duration::from_micros(1_500)),
            total: Duration::from_millis(40),
            bytes_in: 517,
            bytes_out: u64::MAX,
            end: Termination::Normal,
            retries: 2,
        }
    }

    #[test]
    fn lines_are_written_as_documented() {
        let plain = line("127.0.0.1:51514", Some("10.0.0.7:443"));
        assert_eq!(
            plain.to_string(),
            "127.0.0.1:51514 [2025-11-25T22:18:16.709Z] 10.0.0.7:443 1/40 517 18446744073709551615 normal 2"
        );
        let routed = AccessLine {
            pool: Some("api".into()),
            server_name: Some("api.example.com".into()),
            ..line("[2001:db8::1]:40000", Some("[::1]:8001"))
        };
        assert_eq!(
            routed.to_string(),
            "[2001:db8::1]:40000 [2025-11-25T22:18:16.709Z] api/[::1]:8001 1/40 517 18446744073709551615 normal 2 sni=api.example.com"
        );
        let unrouted = AccessLine {
            pool: Some("api".into()),
            end: Termination::NoBackend,
            ..line("255.255.255.255:65535", None)
        };
        assert_eq!(
            unrouted.to_string(),
            "255.255.255.255:65535 [2025-11-25T22:18:16.709Z] - -1/40 517 18446744073709551615 no-backend 2"
        );
        assert_eq!(DisplayPeer(None).to_string(), "-");
        assert_eq!(DisplayPeer(Some("0.0.0.0:0".parse().unwrap())).to_string(), "0.0.0.0:0");
    }
}
